# Checks when the workflow loads (so `snakemake -n` reports them too), before any job: every
# sample's FASTA, the models (resolvable offline) and the classifier (safe, matching width and
# chunk length). Included last, so that model files a rule builds are known as such.
import sys

from snakemake.logging import logger

from virnucflow.estimate import estimate_run
from virnucflow.preflight import is_dry_run, preflight, runs_no_job

# Not for commands that run no job (--unlock, --cleanup-metadata, --list-*, --report, ...).
if workflow.is_main_process and not runs_no_job(sys.argv):
    try:
        preflight(config, SAMPLES, local_gpus=LOCAL_GPUS, made_by_rule=made_by_rule)
    except VirnucflowError as error:
        raise WorkflowError(str(error)) from None
    if is_dry_run(sys.argv):  # what the run will cost, before it runs
        for line in estimate_run(config, SAMPLES):
            logger.info(line)
