rule resolve_config:
    output:
        "results/{experiment}/config.json",
    log:
        "results/{experiment}/logs/resolve_config.log",
    benchmark:
        "results/{experiment}/benchmarks/resolve_config.tsv"
    conda:
        "../envs/scicontrast.yaml"
    resources:
        mem_mb=500,
        runtime=5,
    params:
        config=experiment_config,
    shell:
        "scicontrast resolve-config --json {params.config:q} --experiment {wildcards.experiment}"
        " --out {output} > {log} 2>&1"


rule prepare:
    input:
        config="results/{experiment}/config.json",
        raw=prepare_inputs,
    output:
        directory("results/{experiment}/items"),
    log:
        "results/{experiment}/logs/prepare.log",
    benchmark:
        "results/{experiment}/benchmarks/prepare.tsv"
    conda:
        "../envs/scicontrast.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "scicontrast prepare --config {input.config} --out {output} > {log} 2>&1"


rule pairs:
    input:
        config="results/{experiment}/config.json",
        items_dir="results/{experiment}/items",
    output:
        "results/{experiment}/pairs.parquet",
    log:
        "results/{experiment}/logs/pairs.log",
    benchmark:
        "results/{experiment}/benchmarks/pairs.tsv"
    conda:
        "../envs/scicontrast.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "scicontrast pairs --config {input.config} --items {input.items_dir}"
        " --out {output} > {log} 2>&1"
