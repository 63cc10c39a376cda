# What the workflow hands back beyond the embeddings: diagnostics, exports and figures.
# Outputs flagged with report() appear in `snakemake --report report.html`, under one
# category per experiment; a domain adds its own pictures the same way (see docs/report.md,
# "Visual report").


rule diagnostics:
    input:
        config="results/{experiment}/config.json",
        model="results/{experiment}/model/model.pt",
        items_dir="results/{experiment}/items",
        pairs="results/{experiment}/pairs.parquet",
    output:
        directory("results/{experiment}/diagnostics"),
    log:
        "results/{experiment}/logs/diagnostics.log",
    benchmark:
        "results/{experiment}/benchmarks/diagnostics.tsv"
    conda:
        "../envs/scicontrast.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "scicontrast diagnostics --config {input.config} --model {input.model}"
        " --items {input.items_dir} --pairs {input.pairs} --out {output} > {log} 2>&1"


rule export:
    input:
        model="results/{experiment}/model/model.pt",
        items_dir="results/{experiment}/items",
        embeddings="results/{experiment}/embeddings",
        clusters="results/{experiment}/clusters",
    output:
        report(
            directory("results/{experiment}/export"),
            patterns=["{name}.json"],
            caption="report/export.rst",
            category="{experiment}",
            subcategory="export",
            labels={"experiment": "{experiment}", "file": "{name}"},
        ),
    log:
        "results/{experiment}/logs/export.log",
    benchmark:
        "results/{experiment}/benchmarks/export.tsv"
    conda:
        "../envs/scicontrast.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "scicontrast export --model {input.model} --items {input.items_dir}"
        " --embeddings {input.embeddings} --clusters {input.clusters} --out {output}"
        " > {log} 2>&1"


rule plots:
    input:
        config="results/{experiment}/config.json",
        embeddings="results/{experiment}/embeddings",
        clusters="results/{experiment}/clusters",
        model="results/{experiment}/model/model.pt",
        diagnostics="results/{experiment}/diagnostics",
    output:
        report(
            directory("results/{experiment}/plots"),
            patterns=["{name}.png", "{name}.html"],
            caption="report/plots.rst",
            category="{experiment}",
            subcategory="figures",
            labels={"experiment": "{experiment}", "figure": "{name}"},
        ),
    log:
        "results/{experiment}/logs/plots.log",
    benchmark:
        "results/{experiment}/benchmarks/plots.tsv"
    conda:
        "../envs/scicontrast.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        training_metrics=lambda wildcards, input: os.path.join(
            os.path.dirname(input.model), "metrics.jsonl"
        ),
    shell:
        "scicontrast plots --config {input.config} --embeddings {input.embeddings}"
        " --clusters {input.clusters} --training-metrics {params.training_metrics}"
        " --diagnostics {input.diagnostics} --out {output} --threads {threads} > {log} 2>&1"
