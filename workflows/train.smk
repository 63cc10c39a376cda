rule train:
    input:
        config="results/{experiment}/config.json",
        items_dir="results/{experiment}/items",
        pairs="results/{experiment}/pairs.parquet",
    output:
        # checkpoint.pt and metrics.jsonl beside model.pt are not declared outputs, so
        # Snakemake keeps them when a job fails, is preempted or is killed, and the rerun
        # resumes from the checkpoint and appends to the metrics.
        model="results/{experiment}/model/model.pt",
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
        gpu_model=training_gpu_model,
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
        launcher=training_launcher,
    shell:
        "{params.launcher} train --config {input.config} --items {input.items_dir}"
        " --pairs {input.pairs} --out {params.out_dir} --threads {threads}"
        # Also on the console: an epoch can take minutes (bash runs with pipefail).
        " 2>&1 | tee {log}"
