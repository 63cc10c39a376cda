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


DEMO_GRAPH = config["demo_data"]["graph"]


rule demo_graph:
    output:
        expand(
            "{out_dir}/{name}.csv",
            out_dir=DEMO_GRAPH["out_dir"],
            name=["nodes", "edges"],
        ),
    log:
        "results/logs/demo_data/graph.log",
    benchmark:
        "results/benchmarks/demo_data/graph.tsv"
    conda:
        "../envs/scicontrast.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
        blocks=DEMO_GRAPH["blocks"],
        nodes_per_block=DEMO_GRAPH["nodes_per_block"],
        p_in=DEMO_GRAPH["p_in"],
        p_out=DEMO_GRAPH["p_out"],
        features=DEMO_GRAPH["features"],
        seed=DEMO_GRAPH["seed"],
    shell:
        "scicontrast demo-data graph --out {params.out_dir} --blocks {params.blocks}"
        " --nodes-per-block {params.nodes_per_block} --p-in {params.p_in}"
        " --p-out {params.p_out} --features {params.features} --seed {params.seed}"
        " > {log} 2>&1"


DEMO_GRAINS = config["demo_data"]["grains"]
DEMO_GRAIN_IMAGES = [f"micrograph_{i:02d}" for i in range(DEMO_GRAINS["images"])]


rule demo_grains:
    output:
        expand(
            "{out_dir}/{kind}/{image}.png",
            out_dir=DEMO_GRAINS["out_dir"],
            kind=["micrographs", "truth", "classes"],
            image=DEMO_GRAIN_IMAGES,
        ),
        table=os.path.join(DEMO_GRAINS["out_dir"], "grains.csv"),
    log:
        "results/logs/demo_data/grains.log",
    benchmark:
        "results/benchmarks/demo_data/grains.tsv"
    conda:
        "../envs/scicontrast.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.table),
        images=DEMO_GRAINS["images"],
        size=DEMO_GRAINS["size"],
        grains_per_image=DEMO_GRAINS["grains_per_image"],
        classes=DEMO_GRAINS["classes"],
        noise=DEMO_GRAINS["noise"],
        blur=DEMO_GRAINS["blur"],
        seed=DEMO_GRAINS["seed"],
    shell:
        "scicontrast demo-data grains --out {params.out_dir} --images {params.images}"
        " --size {params.size} --grains-per-image {params.grains_per_image}"
        " --classes {params.classes} --noise {params.noise} --blur {params.blur}"
        " --seed {params.seed} > {log} 2>&1"


DEMO_AUDIO_IMAGE = config["demo_data"]["audio_image"]


rule demo_audio_image:
    output:
        os.path.join(DEMO_AUDIO_IMAGE["out_dir"], "manifest.csv"),
    log:
        "results/logs/demo_data/audio_image.log",
    benchmark:
        "results/benchmarks/demo_data/audio_image.tsv"
    conda:
        "../envs/scicontrast.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
        events=DEMO_AUDIO_IMAGE["events"],
        classes=DEMO_AUDIO_IMAGE["classes"],
        clock_offset_s=DEMO_AUDIO_IMAGE["clock_offset_s"],
        jitter_s=DEMO_AUDIO_IMAGE["jitter_s"],
        dropout=DEMO_AUDIO_IMAGE["dropout"],
        image_size=DEMO_AUDIO_IMAGE["image_size"],
        seed=DEMO_AUDIO_IMAGE["seed"],
        clip_seconds=DEMO_AUDIO_IMAGE["clip_seconds"],
    shell:
        "scicontrast demo-data audio-image --out {params.out_dir} --events {params.events}"
        " --classes {params.classes} --clock-offset-s {params.clock_offset_s}"
        " --jitter-s {params.jitter_s} --dropout {params.dropout}"
        " --image-size {params.image_size} --seed {params.seed}"
        " --clip-seconds {params.clip_seconds} > {log} 2>&1"
