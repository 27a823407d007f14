# Snakemake entry point of rules `embed_dna` and `embed_protein`: the logic lives in virnucflow.embed.
from virnucflow.embed import embed_shard
from virnucflow.jobs import job

with job(f"embed_{snakemake.params.kind}", snakemake.log[0]):
    embed_shard(
        snakemake.input.fasta,
        snakemake.output.h5,
        kind=snakemake.params.kind,
        model=snakemake.params.model,
        device=snakemake.params.device,
        precision=snakemake.params.precision,
        token_budget=snakemake.params.token_budget,
        on_error=snakemake.params.on_error,
        layer=snakemake.params.layer,
        threads=snakemake.threads,
        cpu_fallback=snakemake.params.cpu_fallback,
        stats_json=snakemake.output.stats,
    )
