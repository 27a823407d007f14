# Merged features -> VirNucPro's calls per frame and chunk, and a call per read (only with `classifier:`).


rule predict:
    input:
        h5="results/{sample}/embeddings.h5",
        frames="work/{sample}/frames.tsv",
        reads="work/{sample}/reads.tsv",
        classifier=CLASSIFIER or [],
    output:
        predictions="results/{sample}/predictions.tsv",
        chunk_calls="results/{sample}/chunk_calls.tsv",
        chunk_scores="results/{sample}/chunk_scores.tsv",
        read_calls="results/{sample}/read_calls.tsv",  # not in the report: one row per read
    log:
        "logs/{sample}/predict.log",
    benchmark:
        "logs/{sample}/predict.benchmark.tsv"
    conda:
        "../envs/virnucflow.yaml"
    resources:
        mem_mb=streaming_resource("mem_mb"),
        runtime=streaming_resource("runtime"),
    params:
        chunk_length=config["chunk_length"],
        max_ambiguous_fraction=config["calls"]["max_ambiguous_fraction"],
        min_virus_score=config["calls"]["min_virus_score"],
    script:
        "../scripts/predict.py"
