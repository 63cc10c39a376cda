DEMO_DNA = config["demo_data"]["dna"]


rule demo_dna:
    output:
        expand(
            "{out_dir}/source_{k}.fa",
            out_dir=DEMO_DNA["out_dir"],
            k=range(DEMO_DNA["sources"]),
        ),
    log:
        "results/logs/demo_data/dna.log",
    benchmark:
        "results/benchmarks/demo_data/dna.tsv"
    conda:
        "../envs/scicontrast.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
        sources=DEMO_DNA["sources"],
        per_source=DEMO_DNA["sequences_per_source"],
        length=DEMO_DNA["length"],
        seed=DEMO_DNA["seed"],
    shell:
        "scicontrast demo-data dna --out {params.out_dir} --sources {params.sources}"
        " --sequences-per-source {params.per_source} --length {params.length}"
        " --seed {params.seed} > {log} 2>&1"
