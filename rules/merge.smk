# All shards of a sample -> one HDF5, joined by id in frames.tsv order; fails the DAG on missing ids,
# and on a shard computed from another version of its shard FASTA (input_sha256) or damaged since.


rule merge:
    input:
        frames="work/{sample}/frames.tsv",
        summary="work/{sample}/summary.json",
        dna=dna_shards,
        protein=protein_shards,
        # the shard FASTA each shard was computed from, in the same order (shard_ids)
        dna_fasta=lambda wildcards: expand(
            "work/{sample}/shards/{shard}.fna",
            sample=wildcards.sample,
            shard=shard_ids(wildcards.sample),
        ),
        protein_fasta=lambda wildcards: expand(
            "work/{sample}/shards/{shard}.faa",
            sample=wildcards.sample,
            shard=shard_ids(wildcards.sample),
        ),
    output:
        h5="results/{sample}/embeddings.h5",
        validation="results/{sample}/validation.json",
        missing="results/{sample}/missing_ids.txt",
    log:
        "logs/{sample}/merge.log",
    benchmark:
        "logs/{sample}/merge.benchmark.tsv"
    conda:
        "../envs/virnucflow.yaml"
    threads: 1
    params:
        buffer_rows=config["merge"]["buffer_rows"],
        allow_missing=config["merge"]["allow_missing"],
        chunk_length=config["chunk_length"],
        compat=config["compat"],
    script:
        "../scripts/merge.py"
