# Snakemake entry point of rule `predict`: the logic lives in virnucflow.predict.
from virnucflow.jobs import rule_job
from virnucflow.predict import score_sample

with rule_job(snakemake):
    score_sample(
        snakemake.input.h5,
        snakemake.input.classifier,
        snakemake.output.predictions,
        chunk_length=snakemake.params.chunk_length,
    )
