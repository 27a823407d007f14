# Snakemake entry point of rule `report_plots`: the logic lives in virnucflow.report.
from virnucflow.jobs import rule_job
from virnucflow.report import write_report_plots

with rule_job(snakemake):
    write_report_plots(
        samples=snakemake.params.samples,
        summaries=list(snakemake.input.summaries),
        validations=list(snakemake.input.validations),
        embed_jobs=list(snakemake.input.embed_jobs),
        predictions=list(snakemake.input.get("predictions", [])),
        read_calls=list(snakemake.input.get("read_calls", [])),
        outputs=dict(snakemake.output.items()),
        min_virus_score=snakemake.params.min_virus_score,
    )
