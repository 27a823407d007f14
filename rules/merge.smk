# All shards of a sample -> one HDF5, joined by id in frames.tsv order; fails the DAG on missing ids,
# and on a shard computed from another version of its shard FASTA (input_sha256) or damaged since.


rule merge:
    input:
        frames="work/{sample}/frames.tsv",
        summary="work/{sample}/summary.json",
        dna=shard_files("work/{sample}/embed/{shard}.dna.h5"),
        protein=shard_files("work/{sample}/embed/{shard}.protein.h5"),
        # the shard FASTA each shard was computed from, in the same order
        dna_fasta=shard_files("work/{sample}/shards/{shard}.fna"),
        protein_fasta=shard_files("work/{sample}/shards/{shard}.faa"),
    output:
        h5=maybe_temp_embeddings("results/{sample}/embeddings.h5"),
        validation="results/{sample}/validation.json",
        missing="results/{sample}/missing_ids.txt",
    log:
        "logs/{sample}/merge.log",
    benchmark:
        "logs/{sample}/merge.benchmark.tsv"
    conda:
        "../envs/virnucflow.yaml"
    threads: 1
    resources:
        mem_mb=RESOURCES["merge"].mem_mb,
        runtime=RESOURCES["merge"].runtime,
        disk_mb=RESOURCES["merge"].disk_mb,
    # merge.buffer_rows is read from the config by the job: it changes no byte of the result. With the
    # embeddings not kept, merge.* reruns no finished sample either (its shards may be gone): the job
    # reads them from the config then, and they apply to samples merged from now on.
    params:
        allow_missing=merge_setting("allow_missing"),
        chunk_length=config["chunk_length"],
        compat=config["compat"],
        dtype=merge_setting("dtype"),
    script:
        "../scripts/merge.py"
