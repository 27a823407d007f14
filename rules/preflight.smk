# Checks when the workflow loads (so `snakemake -n` reports them too), before any job: every
# sample's reads files, the models (resolvable offline) and the classifier (safe, matching width
# and chunk length); then, on a dry run, what the run will cost. Included last, so that files a
# rule builds are known as such.
import sys

from snakemake.logging import logger

from virnucflow.estimate import estimate_run
from virnucflow.preflight import is_dry_run, preflight, runs_no_job, snakemake_command

COMMAND = snakemake_command(
    sys.argv
)  # None through the Python API: the checks always run there

# Not for commands that run no job (--unlock, --cleanup-metadata, --list-*, --report, ...).
if workflow.is_main_process and not runs_no_job(COMMAND):
    try:
        preflight(config, SAMPLES, local_gpus=LOCAL_GPUS, made_by_rule=made_by_rule)
    except VirnucflowError as error:
        raise WorkflowError(str(error)) from None
    if is_dry_run(COMMAND):
        for line in estimate_run(config, SAMPLES, made_by_rule):
            logger.info(line)
