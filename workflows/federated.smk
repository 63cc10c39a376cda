# Federated experiments (an experiment with a `federated` section): the model comes from
# Flower rounds across the experiment's sites instead of central training; every later
# step (embed, evaluate, export) reads the same model/model.pt. The Snakefile includes this
# file only when some experiment declares `federated`.
FEDERATED = [name for name, exp in config["experiments"].items() if "federated" in exp]


ruleorder: federate > train


rule federate:
    input:
        config="results/{experiment}/config.json",
        items_dir="results/{experiment}/items",
        pairs="results/{experiment}/pairs.parquet",
    output:
        # server_state.pt, rounds.jsonl and sites/ beside model.pt are not declared outputs,
        # so a rerun after a failure resumes after the last completed round.
        model="results/{experiment}/model/model.pt",
    log:
        "results/{experiment}/logs/federate.log",
    benchmark:
        "results/{experiment}/benchmarks/federate.tsv"
    wildcard_constraints:
        experiment="|".join(re.escape(name) for name in FEDERATED),
    conda:
        "../envs/scicontrast.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
    shell:
        "scicontrast federate --config {input.config} --items {input.items_dir}"
        " --pairs {input.pairs} --out {params.out_dir} 2>&1 | tee {log}"
