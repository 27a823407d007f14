# Snakemake entry point of rules `embed_dna` and `embed_protein`: the logic lives in virnucflow.embed.
from virnucflow.embed import embed_shard
from virnucflow.jobs import rule_job

# Settings that cannot change a row come from the config, not params: changing them reruns nothing.
settings = snakemake.config["embed"]
kind = snakemake.params.kind

with rule_job(snakemake):
    embed_shard(
        snakemake.input.fasta,
        snakemake.output.h5,
        kind=kind,
        model=snakemake.params.model,
        device=settings["device"],
        precision=snakemake.params.precision,
        token_budget=settings[f"{kind}_token_budget"],
        on_error=settings["on_error"],
        layer=snakemake.params.layer,
        threads=snakemake.threads,
        cpu_fallback=settings["cpu_fallback"],
        lease_seconds=settings["lock_lease_seconds"],
        stats_json=snakemake.output.stats,
    )
