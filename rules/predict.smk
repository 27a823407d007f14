# Merged features -> VirNucPro's frame scores (only with `classifier:`); the calls are made from them.


rule predict:
    input:
        h5="results/{sample}/embeddings.h5",
        classifier=CLASSIFIER or [],
    output:
        predictions="results/{sample}/predictions.tsv",
    log:
        "logs/{sample}/predict.log",
    benchmark:
        "logs/{sample}/predict.benchmark.tsv"
    conda:
        "../envs/virnucflow.yaml"
    resources:
        mem_mb=STREAMING.mem_mb,
        runtime=STREAMING.runtime,
    params:
        chunk_length=config["chunk_length"],
    script:
        "../scripts/predict.py"
