# Snakemake entry point of rule `pair_calls`: the logic lives in virnucflow.calls.
from virnucflow.calls import write_pair_calls
from virnucflow.jobs import rule_job

with rule_job(snakemake):
    write_pair_calls(snakemake.input.read_calls, snakemake.output.pair_calls)
