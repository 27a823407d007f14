# virnucflow: VirNucPro viral identification at cluster scale.
# FASTA -> chunks and six-frame translation (checkpoint) -> DNABERT-S + ESM-2 shards (GPU jobs)
# -> one validated HDF5 per sample -> optional viral calls -> report.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


# `--sdm apptainer`: the tested Python set with a CUDA build of torch (Dockerfile, apptainer/).
container: "docker://ghcr.io/virnucflow/virnucflow:0.1.0"


include: "rules/common.smk"
include: "rules/prepare.smk"
include: "rules/embed.smk"
include: "rules/merge.smk"
include: "rules/predict.smk"
include: "rules/calls.smk"
include: "rules/virus_reads.smk"
include: "rules/report.smk"
include: "rules/demo.smk"
include: "rules/preflight.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
