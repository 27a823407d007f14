# Plots and a summary table for `snakemake --report`.


rule report_plots:
    input:
        unpack(report_inputs),
    output:
        summary=report(
            "results/report/summary.tsv",
            caption="../report/summary.rst",
            category="Summary",
        ),
        summary_html=report(
            "results/report/summary.html",
            caption="../report/summary.rst",
            category="Summary",
        ),
        counts=report(
            "results/report/counts.png",
            caption="../report/counts.rst",
            category="Summary",
        ),
        throughput=report(
            "results/report/throughput.png",
            caption="../report/throughput.rst",
            category="Performance",
        ),
        scores=report(
            "results/report/scores.png",
            caption="../report/scores.rst",
            category="Calls",
        ),
        calls=report(
            "results/report/calls.png", caption="../report/calls.rst", category="Calls"
        ),
        virus_reads=report(
            "results/report/virus_reads.html",
            caption="../report/virus_reads.rst",
            category="Calls",
        ),
    log:
        "logs/report_plots.log",
    conda:
        "../envs/virnucflow.yaml"
    resources:
        mem_mb=STREAMING.mem_mb,
        runtime=STREAMING.runtime,
    params:
        samples=list(SAMPLES),
        min_virus_score=config["calls"]["min_virus_score"],
    script:
        "../scripts/report_plots.py"
