# Frame scores -> VirNucPro's chunk calls and a call per read. From the scores and the work files alone:
# a change of a `calls.*` setting reruns this, never merge or an embed job.


rule calls:
    input:
        predictions="results/{sample}/predictions.tsv",
        frames="work/{sample}/frames.tsv",
        reads="work/{sample}/reads.tsv",
    output:
        chunk_calls="results/{sample}/chunk_calls.tsv",
        chunk_scores="results/{sample}/chunk_scores.tsv",
        read_calls="results/{sample}/read_calls.tsv",  # not in the report: one row per read
    log:
        "logs/{sample}/calls.log",
    benchmark:
        "logs/{sample}/calls.benchmark.tsv"
    conda:
        "../envs/virnucflow.yaml"
    resources:
        mem_mb=STREAMING.mem_mb,
        runtime=STREAMING.runtime,
    params:
        max_ambiguous_fraction=config["calls"]["max_ambiguous_fraction"],
        min_virus_score=config["calls"]["min_virus_score"],
    script:
        "../scripts/calls.py"


rule pair_calls:
    input:
        read_calls="results/{sample}/read_calls.tsv",
    output:
        pair_calls="results/{sample}/pair_calls.tsv",  # paired-end samples only
    log:
        "logs/{sample}/pair_calls.log",
    conda:
        "../envs/virnucflow.yaml"
    resources:
        mem_mb=STREAMING.mem_mb,
        runtime=STREAMING.runtime,
    script:
        "../scripts/pair_calls.py"
