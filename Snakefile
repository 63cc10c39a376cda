"""scicontrast: positive pairs from domain knowledge -> InfoNCE -> invariant embeddings.

Run the default demo with `snakemake --cores 2`; every step is also a `scicontrast`
subcommand (see README). Outputs: results/{experiment}/{config.json,items,pairs.parquet,
model,embeddings,clusters,diagnostics,metrics,export,plots}; `snakemake --report report.html`
builds the visual report.
"""

from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "config.yaml"


validate(config, schema="scicontrast/schemas/config.schema.yaml")


report: "workflows/report/workflow.rst"


include: "workflows/common.smk"
include: "workflows/demo_data.smk"
include: "workflows/segment.smk"
include: "workflows/synchronize.smk"
include: "workflows/prepare.smk"
include: "workflows/train.smk"
include: "workflows/analysis.smk"
include: "workflows/genomes.smk"
include: "workflows/report.smk"


if any("federated" in experiment for experiment in config["experiments"].values()):

    include: "workflows/federated.smk"


rule all:
    default_target: True
    input:
        expand(
            "results/{experiment}/{output}",
            experiment=EXPERIMENTS,
            output=["metrics/summary.txt", "export", "plots"],
        ),


onsuccess:
    print_summaries(EXPERIMENTS)
