# Snakemake entry point of rule `calls`: the logic lives in virnucflow.calls.
from virnucflow.calls import call_sample
from virnucflow.jobs import rule_job

with rule_job(snakemake):
    call_sample(
        snakemake.input.predictions,
        snakemake.input.frames,
        snakemake.input.reads,
        chunk_calls_tsv=snakemake.output.chunk_calls,
        chunk_scores_tsv=snakemake.output.chunk_scores,
        read_calls_tsv=snakemake.output.read_calls,
        max_ambiguous_fraction=snakemake.params.max_ambiguous_fraction,
        min_virus_score=snakemake.params.min_virus_score,
    )
