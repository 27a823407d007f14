# All shards of a sample -> one HDF5, joined by id in frames.tsv order; fails the DAG on missing ids.


rule merge:
    input:
        frames="work/{sample}/frames.tsv",
        summary="work/{sample}/summary.json",
        dna=dna_shards,
        protein=protein_shards,
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
