# Snakemake entry point of rule `virus_reads`: the logic lives in virnucflow.virus_reads.
from virnucflow.jobs import job
from virnucflow.virus_reads import write_virus_reads

with job("virus_reads", snakemake.log[0]):
    write_virus_reads(
        snakemake.input.read_calls,
        snakemake.input.reads,  # the sample sheet's 1 or 2 paths
        snakemake.output.fasta,
    )
