# Snakemake entry point of rule `report_plots`: the logic lives in virnucflow.report.
from virnucflow.jobs import job
from virnucflow.report import write_report_plots

with job("report_plots", snakemake.log[0]):
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
