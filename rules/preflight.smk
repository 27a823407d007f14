# Checks when the workflow loads (so `snakemake -n` reports them too), before any job: on a dry run
# first what the run will cost, then every sample's reads files, the models (resolvable offline) and
# the classifier (safe, matching width and chunk length). Included last, so that files a rule builds
# are known as such.
import sys

from snakemake.logging import logger

from virnucflow.estimate import estimate_run
from virnucflow.preflight import load_warnings, preflight
from virnucflow.snakemake_seams import is_dry_run, runs_no_job, snakemake_command

COMMAND = snakemake_command(
    sys.argv
)  # None through the Python API: the checks always run there

# Not for commands that run no job (--unlock, --cleanup-metadata, --list-*, --report, ...). A dry run
# prints the estimate before the checks' problems: it needs no model, so the cost shows before the
# checks ask for the downloads (a sample whose reads the checks name is left to them).
if workflow.is_main_process and not runs_no_job(COMMAND):
    try:
        preflight(config, SAMPLES, local_gpus=LOCAL_GPUS, made_by_rule=made_by_rule)
        PROBLEMS = None
    except VirnucflowError as error:
        PROBLEMS = error
    if is_dry_run(COMMAND):
        named = getattr(PROBLEMS, "samples", ())
        for line in estimate_run(
            config,
            SAMPLES,
            made_by_rule,
            checked=named,
            classifier=CLASSIFIER,
            keep_embeddings=KEEP_EMBEDDINGS,
            recorded_inputs=snakemake_seams.recorded_inputs,
        ):
            logger.info(line)
    if PROBLEMS:
        raise WorkflowError(str(PROBLEMS)) from None
    for line in load_warnings(config, SAMPLES, made_by_rule):
        logger.warning(line)
