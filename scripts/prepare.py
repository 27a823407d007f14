# Snakemake entry point of checkpoint `prepare`: the logic lives in virnucflow.prepare.
from pathlib import Path

from virnucflow.jobs import rule_job
from virnucflow.prepare import prepare_sample

with rule_job(snakemake):
    prepare_sample(
        snakemake.input.reads,  # one file, or R1 and R2
        Path(snakemake.output.frames).parent,
        sample=snakemake.wildcards.sample,
        chunk_length=snakemake.params.chunk_length,
        compat=snakemake.params.compat,
        shard_residues=snakemake.params.shard_residues,
        # the embed rules' folder: what their jobs left for shards of an earlier plan is removed
        embed_dir=Path(snakemake.output.frames).parent / "embed",
    )
