from scicontrast.data_adapters.grains.folders import (
    segmentation_inputs,
    segmentation_options,
)

SEGMENTATIONS = config["segmentations"]


wildcard_constraints:
    segmentation="|".join(re.escape(name) for name in SEGMENTATIONS) or "(?!)",


rule segment:
    input:
        lambda wildcards: segmentation_inputs(SEGMENTATIONS[wildcards.segmentation]),
    output:
        directory("results/segmentations/{segmentation}"),
    log:
        "results/logs/segmentations/{segmentation}.log",
    benchmark:
        "results/benchmarks/segmentations/{segmentation}.tsv"
    conda:
        "../envs/scicontrast.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        images=lambda wildcards: SEGMENTATIONS[wildcards.segmentation]["paths"],
        options=lambda wildcards: segmentation_options(
            SEGMENTATIONS[wildcards.segmentation]
        ),
    shell:
        "scicontrast segment {params.images:q} --out {output} {params.options} > {log} 2>&1"
