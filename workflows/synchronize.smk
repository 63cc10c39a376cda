from scicontrast.data_adapters.audio_image.synchronization import (
    synchronization_options,
)

SYNCHRONIZATIONS = config["synchronizations"]


wildcard_constraints:
    synchronization="|".join(re.escape(name) for name in SYNCHRONIZATIONS) or "(?!)",


rule synchronize:
    input:
        lambda wildcards: SYNCHRONIZATIONS[wildcards.synchronization]["manifests"],
    output:
        directory("results/synchronizations/{synchronization}"),
    log:
        "results/logs/synchronizations/{synchronization}.log",
    benchmark:
        "results/benchmarks/synchronizations/{synchronization}.tsv"
    conda:
        "../envs/scicontrast.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        manifests=lambda wildcards: SYNCHRONIZATIONS[wildcards.synchronization][
            "manifests"
        ],
        options=lambda wildcards: synchronization_options(
            SYNCHRONIZATIONS[wildcards.synchronization]
        ),
    shell:
        "scicontrast synchronize {params.manifests:q} --out {output} {params.options}"
        " > {log} 2>&1"
