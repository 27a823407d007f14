# One GPU job per shard and model. Rows come out in the shard's order; a killed job resumes
# from its sidecar (work/{sample}/embed/{shard}.{kind}.h5.partial/).


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
    params:
        kind="dna",
        model=model_to_load(config["models"]["dnabert_s"]),
        device=config["embed"]["device"],
        precision=config["embed"]["precision"],
        token_budget=config["embed"]["dna_token_budget"],
        on_error=config["embed"]["on_error"],
        cpu_fallback=config["embed"]["cpu_fallback"],
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
    params:
        kind="protein",
        model=model_to_load(config["models"]["esm2"]),
        device=config["embed"]["device"],
        precision=config["embed"]["precision"],
        token_budget=config["embed"]["protein_token_budget"],
        on_error=config["embed"]["on_error"],
        cpu_fallback=config["embed"]["cpu_fallback"],
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
    script:
        "../scripts/tabulate_embed_jobs.py"
