# Genome experiments (pair builder genome_reads): reads cut from the genomes training held
# out, their embeddings, and the genome-of-origin scores beside TNF, 5-mers and the
# untrained encoder (scicontrast.analysis.genome_eval). Ask for
# results/{experiment}/metrics/genome_eval.json; prepare, pairs and train are the usual rules.
DEMO_GENOMES = config["demo_data"]["genomes"]


rule demo_genomes:
    output:
        tsv=f"{DEMO_GENOMES['out_dir']}/genomes.tsv",
        fasta=expand(
            "{out_dir}/sp{s}_strain{r}.fa",
            out_dir=DEMO_GENOMES["out_dir"],
            s=range(DEMO_GENOMES["species"]),
            r=range(DEMO_GENOMES["strains"]),
        ),
    log:
        "results/logs/demo_data/genomes.log",
    benchmark:
        "results/benchmarks/demo_data/genomes.tsv"
    conda:
        "../envs/scicontrast.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.tsv),
        species=DEMO_GENOMES["species"],
        strains=DEMO_GENOMES["strains"],
        length=DEMO_GENOMES["length"],
        divergence=DEMO_GENOMES["divergence"],
        seed=DEMO_GENOMES["seed"],
    shell:
        "scicontrast demo-data genomes --out {params.out_dir} --species {params.species}"
        " --strains {params.strains} --length {params.length}"
        " --divergence {params.divergence} --seed {params.seed} > {log} 2>&1"


rule cut_reads:
    input:
        config="results/{experiment}/config.json",
        items_dir="results/{experiment}/items",
        pairs="results/{experiment}/pairs.parquet",
    output:
        directory("results/{experiment}/reads/{length}"),
    log:
        "results/{experiment}/logs/cut_reads_{length}.log",
    benchmark:
        "results/{experiment}/benchmarks/cut_reads_{length}.tsv"
    wildcard_constraints:
        length=r"\d+",
    conda:
        "../envs/scicontrast.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "scicontrast cut-reads --config {input.config} --items {input.items_dir}"
        " --pairs {input.pairs} --length {wildcards.length} --out {output} > {log} 2>&1"


rule embed_reads:
    input:
        reads="results/{experiment}/reads/{length}",
        model="results/{experiment}/model/model.pt",
    output:
        directory("results/{experiment}/reads_embeddings/{length}"),
    log:
        "results/{experiment}/logs/embed_reads_{length}.log",
    benchmark:
        "results/{experiment}/benchmarks/embed_reads_{length}.tsv"
    wildcard_constraints:
        length=r"\d+",
    conda:
        "../envs/scicontrast.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "scicontrast embed {input.reads} --model {input.model} --out {output} > {log} 2>&1"


rule genome_eval:
    input:
        model="results/{experiment}/model/model.pt",
        reads=genome_read_sets,
        # The embeddings of the reads, exported for users; the scores embed the reads again
        # beside the untrained control and the reverse-complemented reads.
        embeddings=genome_read_embeddings,
    output:
        "results/{experiment}/metrics/genome_eval.json",
    log:
        "results/{experiment}/logs/genome_eval.log",
    benchmark:
        "results/{experiment}/benchmarks/genome_eval.tsv"
    conda:
        "../envs/scicontrast.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "scicontrast genome-eval --model {input.model} --reads {input.reads}"
        " --out {output} > {log} 2>&1"
