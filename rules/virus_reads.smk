# The reads called virus, out of the workflow: each sample's as FASTA, and one table over all samples
# (only with `classifier:`; they follow read_calls.tsv, calls.min_virus_score included).


rule virus_reads:
    input:
        read_calls="results/{sample}/read_calls.tsv",
        reads=lambda wildcards: SAMPLES[wildcards.sample],
    output:
        fasta="results/{sample}/virus_reads.fa.gz",
    log:
        "logs/{sample}/virus_reads.log",
    benchmark:
        "logs/{sample}/virus_reads.benchmark.tsv"
    conda:
        "../envs/virnucflow.yaml"
    resources:
        mem_mb=STREAMING.mem_mb,
        runtime=STREAMING.runtime,
    script:
        "../scripts/virus_reads.py"


rule virus_reads_table:
    input:
        read_calls=expand("results/{sample}/read_calls.tsv", sample=SAMPLES),
    output:
        table="results/virus_reads.tsv",
    log:
        "logs/virus_reads_table.log",
    conda:
        "../envs/virnucflow.yaml"
    resources:
        mem_mb=STREAMING.mem_mb,
        runtime=STREAMING.runtime,
    params:
        samples=list(SAMPLES),
    script:
        "../scripts/virus_reads_table.py"
