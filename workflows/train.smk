rule train:
    input:
        config="results/{experiment}/config.json",
        items_dir="results/{experiment}/items",
        pairs="results/{experiment}/pairs.parquet",
    output:
        # The checkpoint beside model.pt is not a declared output, so Snakemake keeps it
        # when a job fails or is killed, and the rerun resumes from it.
        model="results/{experiment}/model/model.pt",
        metrics="results/{experiment}/model/metrics.jsonl",
    log:
        "results/{experiment}/logs/train.log",
    benchmark:
        "results/{experiment}/benchmarks/train.tsv"
    conda:
        "../envs/scicontrast.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=training_gpus,
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
    shell:
        "scicontrast train --config {input.config} --items {input.items_dir}"
        " --pairs {input.pairs} --out {params.out_dir} --threads {threads}"
        " > {log} 2>&1"
