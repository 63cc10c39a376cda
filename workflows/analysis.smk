rule embed:
    input:
        items_dir="results/{experiment}/items",
        model="results/{experiment}/model/model.pt",
    output:
        directory("results/{experiment}/embeddings"),
    log:
        "results/{experiment}/logs/embed.log",
    benchmark:
        "results/{experiment}/benchmarks/embed.tsv"
    conda:
        "../envs/scicontrast.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        # Also on the console, as training is (bash runs with pipefail).
        "scicontrast embed {input.items_dir} --model {input.model} --out {output} 2>&1 | tee {log}"


rule cluster:
    input:
        config="results/{experiment}/config.json",
        embeddings="results/{experiment}/embeddings",
    output:
        directory("results/{experiment}/clusters"),
    log:
        "results/{experiment}/logs/cluster.log",
    benchmark:
        "results/{experiment}/benchmarks/cluster.tsv"
    conda:
        "../envs/scicontrast.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "scicontrast cluster --config {input.config} --embeddings {input.embeddings}"
        " --out {output} > {log} 2>&1"


rule evaluate:
    input:
        config="results/{experiment}/config.json",
        model="results/{experiment}/model/model.pt",
        items_dir="results/{experiment}/items",
        pairs="results/{experiment}/pairs.parquet",
        embeddings="results/{experiment}/embeddings",
        clusters="results/{experiment}/clusters",
        diagnostics="results/{experiment}/diagnostics",
    output:
        evaluation="results/{experiment}/metrics/evaluation.json",
        summary="results/{experiment}/metrics/summary.txt",
    log:
        "results/{experiment}/logs/evaluate.log",
    benchmark:
        "results/{experiment}/benchmarks/evaluate.tsv"
    conda:
        "../envs/scicontrast.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.evaluation),
    shell:
        "scicontrast evaluate --config {input.config} --model {input.model}"
        " --items {input.items_dir} --pairs {input.pairs} --embeddings {input.embeddings}"
        " --clusters {input.clusters} --diagnostics {input.diagnostics}"
        " --out {params.out_dir} > {log} 2>&1"
