rule embed:
    input:
        items_dir="results/{experiment}/items",
        model="results/{experiment}/model/model.pt",
        # analysis.embed_shards > 1: the shards' folders, which this rule only gathers.
        shards=embedding_shards,
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
    params:
        command=embed_command,
    shell:
        # Also on the console, as training is (bash runs with pipefail).
        "{params.command} --out {output} 2>&1 | tee {log}"


rule embed_shard:
    input:
        items_dir="results/{experiment}/items",
        model="results/{experiment}/model/model.pt",
    output:
        directory("results/{experiment}/embedding_shards/{shard}"),
    log:
        "results/{experiment}/logs/embed_shard_{shard}.log",
    benchmark:
        "results/{experiment}/benchmarks/embed_shard_{shard}.tsv"
    wildcard_constraints:
        shard=r"\d+",
    conda:
        "../envs/scicontrast.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        shards=embed_shard_count,
    shell:
        "scicontrast embed {input.items_dir} --model {input.model}"
        " --shard {wildcards.shard}/{params.shards} --out {output} > {log} 2>&1"


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
        summary=report(
            "results/{experiment}/metrics/summary.txt",
            caption="report/summary.rst",
            category="{experiment}",
            subcategory="summary",
            labels={"experiment": "{experiment}", "file": "summary.txt"},
        ),
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
