# One GPU job per shard and model. Rows come out in the shard's order; a killed job resumes
# from its sidecar (work/{sample}/embed/{shard}.{kind}.h5.partial/).


localrules:
    tabulate_embed_jobs,


rule embed_dna:
    input:
        fasta="work/{sample}/shards/{shard}.fna",
        model=model_file(config["models"]["dnabert_s"]),
    output:
        h5=maybe_temp("work/{sample}/embed/{shard}.dna.h5"),
        stats="work/{sample}/embed/{shard}.dna.json",
    log:
        "logs/{sample}/embed_dna/{shard}.log",
    benchmark:
        "logs/{sample}/embed_dna/{shard}.benchmark.tsv"
    conda:
        "../envs/virnucflow.yaml"
    threads: config["embed"]["threads"]
    resources:
        gpu=EMBED_GPUS,
        mem_mb=RESOURCES["embed_dna"].mem_mb,
        runtime=RESOURCES["embed_dna"].runtime,
        disk_mb=RESOURCES["embed_dna"].disk_mb,
    # Only what the rows depend on (a change reruns the job); device, token budget, on_error and
    # cpu_fallback are read from the config by the job (docs/resuming.md: what reruns what).
    params:
        kind="dna",
        model=model_to_load(config["models"]["dnabert_s"]),
        revision=model_revision(config["models"]["dnabert_s"], "dna"),
        precision=config["embed"]["precision"],
        layer=None,  # DNABERT-S is pooled from its last layer
    script:
        "../scripts/embed.py"


rule embed_protein:
    input:
        fasta="work/{sample}/shards/{shard}.faa",
        model=model_file(config["models"]["esm2"]),
    output:
        h5=maybe_temp("work/{sample}/embed/{shard}.protein.h5"),
        stats="work/{sample}/embed/{shard}.protein.json",
    log:
        "logs/{sample}/embed_protein/{shard}.log",
    benchmark:
        "logs/{sample}/embed_protein/{shard}.benchmark.tsv"
    conda:
        "../envs/virnucflow.yaml"
    threads: config["embed"]["threads"]
    resources:
        gpu=EMBED_GPUS,
        mem_mb=RESOURCES["embed_protein"].mem_mb,
        runtime=RESOURCES["embed_protein"].runtime,
        disk_mb=RESOURCES["embed_protein"].disk_mb,
    # Only what the rows depend on (a change reruns the job); device, token budget, on_error and
    # cpu_fallback are read from the config by the job (docs/resuming.md: what reruns what).
    params:
        kind="protein",
        model=model_to_load(config["models"]["esm2"]),
        revision=model_revision(config["models"]["esm2"], "protein"),
        precision=config["embed"]["precision"],
        layer=config["embed"]["esm_layer"],
    script:
        "../scripts/embed.py"


rule tabulate_embed_jobs:
    input:
        stats=shard_files(
            "work/{sample}/embed/{shard}.{kind}.json", kind=["dna", "protein"]
        ),
        # Snakemake's benchmark files of the same jobs, in the same order
        benchmarks=shard_files(
            "logs/{sample}/embed_{kind}/{shard}.benchmark.tsv", kind=["dna", "protein"]
        ),
    output:
        "results/{sample}/embed_jobs.tsv",
    log:
        "logs/{sample}/tabulate_embed_jobs.log",
    conda:
        "../envs/virnucflow.yaml"
    resources:
        mem_mb=STREAMING.mem_mb,
        runtime=STREAMING.runtime,
    script:
        "../scripts/tabulate_embed_jobs.py"
