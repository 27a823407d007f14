# Snakemake entry point of rule `tabulate_embed_jobs`: one row per embed job of a sample (device, precision,
# model revision, rates), which the report reads instead of every shard's files.
from virnucflow.embed_stats import write_embed_jobs
from virnucflow.jobs import rule_job

with rule_job(snakemake):
    write_embed_jobs(list(snakemake.input.stats), list(snakemake.input.benchmarks), snakemake.output[0])
