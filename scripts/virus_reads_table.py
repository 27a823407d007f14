# Snakemake entry point of rule `virus_reads_table`: the logic lives in virnucflow.virus_reads.
from virnucflow.jobs import rule_job
from virnucflow.virus_reads import write_virus_table

with rule_job(snakemake):
    write_virus_table(
        snakemake.params.samples,
        list(snakemake.input.read_calls),
        snakemake.output.table,
    )
