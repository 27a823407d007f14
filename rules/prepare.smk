# Reads -> chunks -> six frames; a checkpoint because the number of shards depends on the data.


checkpoint prepare:
    input:
        reads=lambda wildcards: SAMPLES[wildcards.sample],
    output:
        frames="work/{sample}/frames.tsv",
        reads="work/{sample}/reads.tsv",
        summary="work/{sample}/summary.json",
        shards=directory("work/{sample}/shards"),
    log:
        "logs/{sample}/prepare.log",
    benchmark:
        "logs/{sample}/prepare.benchmark.tsv"
    priority: 10  # every sample's input is read and checked before GPU work is queued
    conda:
        "../envs/virnucflow.yaml"
    resources:
        mem_mb=RESOURCES["prepare"].mem_mb,
        runtime=RESOURCES["prepare"].runtime,
        disk_mb=RESOURCES["prepare"].disk_mb,
    params:
        chunk_length=config["chunk_length"],
        compat=config["compat"],
        shard_residues=config["shard_residues"],
    script:
        "../scripts/prepare.py"
