# What every stage shares: the checked config, the sample sheet, GPU slots and the input functions.
# The virnucflow package is installed in the environment that runs snakemake (`make setup`, envs/).
import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from virnucflow.devices import machine_gpus
from virnucflow.errors import VirnucflowError
from virnucflow.models.resolve import is_local_path
from virnucflow.samples import read_sample_sheet

validate(config, "../virnucflow/config_schema.yaml")

# `--sdm conda`: envs/virnucflow.post-deploy.sh installs the package from here, wherever snakemake runs.
os.environ.setdefault("VIRNUCFLOW_SOURCE", workflow.basedir)

try:
    SAMPLES = read_sample_sheet(config["samples"])
except VirnucflowError as error:
    raise WorkflowError(str(error)) from None


wildcard_constraints:
    sample="[A-Za-z0-9][A-Za-z0-9._-]*",
    shard="[0-9]+",


# GPU slots. A cluster run (an executor with --jobs, e.g. the slurm/lsf profiles) has no global limit:
# every embed job is its own submission asking the scheduler for one GPU, up to `jobs:` at a time.
# A local run gets one slot per GPU of this machine (each job claims its own device), unless
# `--resources gpu=N` says otherwise; without a GPU, `device: auto` jobs run side by side on the CPU.
LOCAL_RUN = workflow.global_resources["_nodes"].value is None
if LOCAL_RUN and workflow.is_main_process and "gpu" not in workflow.global_resources:
    workflow.register_resource("gpu", machine_gpus())
LOCAL_GPUS = workflow.global_resources.get("gpu").value if LOCAL_RUN else None
EMBED_GPUS = (
    0
    if config["embed"]["device"] == "cpu"
    or (config["embed"]["device"] == "auto" and LOCAL_GPUS == 0)
    else 1
)


def model_file(spec):
    """A model given as a file or folder is an input of the jobs that load it (a rule may build it);
    a Hugging Face id or a fair-esm name is looked up in the local caches by the job itself.
    """
    return spec if spec and is_local_path(spec) else []


def model_to_load(spec):
    """A job's model: its input file when the model is a file or folder, else the id as configured."""
    return lambda wildcards, input: input.get("model", []) or spec


def built_by_a_rule(path):
    """True for a file that does not exist yet and that a rule of this workflow makes."""
    return not os.path.exists(path) and any(
        each.is_producer(path) for each in workflow.rules
    )


def maybe_temp(path):
    return path if config["keep_shards"] else temp(path)


def shard_ids(sample):
    """Shard indices of a sample, known once its prepare checkpoint has run."""
    shards = checkpoints.prepare.get(sample=sample).output.shards
    return sorted(glob_wildcards(os.path.join(shards, "{shard}.faa")).shard)


def shard_files(template, **more):
    """Input function: `template` expanded for every shard of the wildcards' sample, shard by shard
    (and over `more`, e.g. kind, within a shard), in shard_ids order."""
    return lambda wildcards: expand(
        template,
        sample=wildcards.sample,
        shard=shard_ids(wildcards.sample),
        **more,
    )


def report_inputs(wildcards):
    """One file per sample and kind: the report never looks into a sample's shards."""
    inputs = {
        "summaries": expand("work/{sample}/summary.json", sample=SAMPLES),
        "validations": expand("results/{sample}/validation.json", sample=SAMPLES),
        "embed_jobs": expand("results/{sample}/embed_jobs.tsv", sample=SAMPLES),
    }
    if config["classifier"]:
        inputs["predictions"] = expand(
            "results/{sample}/predictions.tsv", sample=SAMPLES
        )
        inputs["read_calls"] = expand("results/{sample}/read_calls.tsv", sample=SAMPLES)
    return inputs


def get_final_output():
    outputs = []
    for sample in SAMPLES:
        outputs.append(f"results/{sample}/embeddings.h5")
        outputs.append(f"results/{sample}/validation.json")
        if config["classifier"]:
            outputs.append(f"results/{sample}/read_calls.tsv")
    outputs.append("results/report/summary.tsv")
    return outputs
