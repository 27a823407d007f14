# Snakemake entry point of rule `merge`: the logic lives in virnucflow.merge.
from virnucflow.jobs import rule_job
from virnucflow.merge import merge_sample

# None when the embeddings are not kept: then read from the config (rules/common.smk merge_setting)
setting = {key: snakemake.config["merge"][key] if getattr(snakemake.params, key) is None else getattr(snakemake.params, key)
           for key in ("allow_missing", "dtype")}

with rule_job(snakemake):
    merge_sample(
        snakemake.input.frames,
        list(snakemake.input.dna),
        list(snakemake.input.protein),
        snakemake.output.h5,
        validation_json=snakemake.output.validation,
        missing_ids_txt=snakemake.output.missing,
        buffer_rows=snakemake.config["merge"]["buffer_rows"],  # not a param: changes no byte
        allow_missing=setting["allow_missing"],
        chunk_length=snakemake.params.chunk_length,
        compat=snakemake.params.compat,
        dna_fasta=list(snakemake.input.dna_fasta),
        protein_fasta=list(snakemake.input.protein_fasta),
        dtype=setting["dtype"],
    )
