# Snakemake entry point of rule `virus_reads`: the logic lives in virnucflow.virus_reads.
from virnucflow.jobs import rule_job
from virnucflow.virus_reads import write_virus_reads

with rule_job(snakemake):
    write_virus_reads(
        snakemake.input.read_calls,
        snakemake.input.reads,  # the sample sheet's 1 or 2 paths
        snakemake.output.fasta,
    )
