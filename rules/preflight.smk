# Checks when the workflow loads (so `snakemake -n` reports them too), before any job: every
# sample's FASTA, the models (resolvable offline) and the classifier (safe, matching width and
# chunk length). Included last, so that model files a rule builds are known as such.
from virnucflow.preflight import preflight

if workflow.is_main_process:
    try:
        preflight(
            config, SAMPLES, local_gpus=LOCAL_GPUS, built_by_workflow=built_by_a_rule
        )
    except VirnucflowError as error:
        raise WorkflowError(str(error)) from None
