# Snakemake entry point of rule `tabulate_embed_jobs`: one row per embed job of a sample (device, precision,
# model revision, rates), which the report reads instead of every shard's files.
from virnucflow.embed_stats import write_embed_jobs
from virnucflow.jobs import job

with job("tabulate_embed_jobs", snakemake.log[0]):
    write_embed_jobs(list(snakemake.input.stats), list(snakemake.input.benchmarks), snakemake.output[0])
