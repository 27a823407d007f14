# Snakemake entry point of rule `demo_models`: tiny UNTRAINED models in the published layouts.
from virnucflow.demo import write_demo_models
from virnucflow.jobs import rule_job

with rule_job(snakemake):
    write_demo_models(
        dnabert_s_dir=snakemake.output.dnabert_s,
        esm2_path=snakemake.output.esm2,
        classifier_path=snakemake.output.classifier,
    )
