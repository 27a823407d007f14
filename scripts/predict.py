# Snakemake entry point of rule `predict`: the logic lives in virnucflow.predict.
from virnucflow.jobs import rule_job
from virnucflow.predict import predict_sample

with rule_job(snakemake):
    predict_sample(
        snakemake.input.h5,
        snakemake.input.frames,
        snakemake.input.reads,
        snakemake.input.classifier,
        predictions_tsv=snakemake.output.predictions,
        chunk_calls_tsv=snakemake.output.chunk_calls,
        read_calls_tsv=snakemake.output.read_calls,
        chunk_scores_tsv=snakemake.output.chunk_scores,
        chunk_length=snakemake.params.chunk_length,
        max_ambiguous_fraction=snakemake.params.max_ambiguous_fraction,
        min_virus_score=snakemake.params.min_virus_score,
    )
