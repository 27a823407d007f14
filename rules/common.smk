# What every stage shares: the checked config, the sample sheet, GPU slots and the input functions.
# The virnucflow package is installed in the environment that runs snakemake (`make setup`, envs/).
import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from virnucflow.devices import machine_gpus
from virnucflow.errors import VirnucflowError
from virnucflow.job_resources import rule_resources
from virnucflow.models.published_classifiers import classifier_file
from virnucflow.models.resolve import is_local_path, locate_model
from virnucflow.samples import read_sample_sheet
from virnucflow import snakemake_seams
from virnucflow.snakemake_seams import gpu_slots

validate(config, "../virnucflow/config_schema.yaml")

# `--sdm conda`: envs/virnucflow.post-deploy.sh installs the package from here, wherever snakemake runs.
os.environ.setdefault("VIRNUCFLOW_SOURCE", workflow.basedir)

try:
    SAMPLES = read_sample_sheet(config["samples"])
except VirnucflowError as error:
    raise WorkflowError(str(error)) from None

# The classifier file, an input of predict: `virnucpro` is the published one for chunk_length, an absolute
# path in the classifier cache (virnucflow/models/published_classifiers.py); None without a classifier.
# A chunk length without a published classifier leaves the name as it is: the checks say what to do.
try:
    CLASSIFIER = classifier_file(config["classifier"], config["chunk_length"])
except VirnucflowError:
    CLASSIFIER = config["classifier"]


wildcard_constraints:
    sample="[A-Za-z0-9][A-Za-z0-9._-]*",
    shard="[0-9]+",


# GPU slots. A cluster run (an executor with --jobs, e.g. the slurm/lsf profiles) has no global limit:
# every embed job is its own submission asking the scheduler for one GPU, up to `jobs:` at a time.
# A local run gets one slot per GPU of this machine (each job claims its own device), unless
# `--resources gpu=N` says otherwise; without a GPU, `device: auto` jobs run side by side on the CPU.
LOCAL_GPUS = gpu_slots(workflow, machine_gpus)  # None: a cluster run
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


# Job resources (mem_mb, runtime in minutes, disk_mb): declared by every rule, from what the job
# processes, growing with `attempt` (virnucflow/job_resources.py). Profiles add only site settings.
RESOURCES = rule_resources(config, on_gpu=EMBED_GPUS > 0)
STREAMING = RESOURCES["streaming"]  # a job that streams its input files once


def model_revision(spec, kind):
    """A job parameter: the Hugging Face snapshot a model id resolves to, so that a newer download
    reruns the model's jobs; None for a file or folder (its modification time does that, as an input).
    """
    try:
        return None if is_local_path(spec) else locate_model(spec, kind)[1]
    except VirnucflowError:  # not downloaded here: the checks say so
        return None


def made_by_rule(path):
    """A Product for a file that a rule of this workflow makes (finished or not), else None."""
    return snakemake_seams.made_by_rule(workflow, path)


def maybe_temp(path):
    return path if config["keep_shards"] else temp(path)


# keep_embeddings: null (the default) keeps embeddings.h5 only without a classifier: with one, the calls are
# the product, and they are made from predictions.tsv, never from the embeddings again.
KEEP_EMBEDDINGS = (
    config["keep_embeddings"]
    if config["keep_embeddings"] is not None
    else not config["classifier"]
)


def merge_setting(key):
    """A merge.* setting as a rule param (a change reruns the merge) when the embeddings are kept; None
    when they are not, and the job reads it from the config (a change reruns no finished sample).
    """
    return config["merge"][key] if KEEP_EMBEDDINGS else None


def maybe_temp_embeddings(path):
    """The merged embeddings.h5: temp() unless kept, so Snakemake deletes it once predict (its only reader)
    has written the frame scores; refused without a classifier (it is then the only result).
    """
    if KEEP_EMBEDDINGS:
        return path
    if not config["classifier"]:
        raise WorkflowError(
            "keep_embeddings: false deletes results/{sample}/embeddings.h5 once the frame scores are written, but "
            "classifier: is null (no calls): set classifier: virnucpro (run virnucflow download-models virnucpro) "
            "or keep_embeddings: true"
        )
    return temp(path)


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
        if KEEP_EMBEDDINGS:  # else temp: a target of `all` would be kept
            outputs.append(f"results/{sample}/embeddings.h5")
        outputs.append(f"results/{sample}/validation.json")
        if config["classifier"]:
            outputs.append(f"results/{sample}/read_calls.tsv")
            outputs.append(f"results/{sample}/virus_reads.fa.gz")
            if len(SAMPLES[sample]) == 2:  # paired-end: one call per pair too
                outputs.append(f"results/{sample}/pair_calls.tsv")
    if config["classifier"]:
        outputs.append("results/virus_reads.tsv")
    outputs.append("results/report/summary.tsv")
    return outputs
