# What every stage shares: the checked config, the sample sheet and the input functions.
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(
    0, workflow.basedir
)  # the virnucflow package lives beside the Snakefile

from virnucflow.devices import machine_gpus
from virnucflow.errors import VirnucflowError
from virnucflow.samples import read_sample_sheet

validate(config, "../config/schema.yaml")

try:
    SAMPLES = read_sample_sheet(config["samples"])
except VirnucflowError as error:
    raise WorkflowError(str(error)) from None

# Demo models are built by a rule; any other model spec is resolved at run time (cache, folder, file).
DEMO_MODELS = {
    "dnabert_s": "resources/demo_models/dnabert_s_tiny",
    "esm2": "resources/demo_models/esm2_t2_tiny.pt",
    "classifier": "resources/demo_models/classifier_tiny.pth",
}

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


wildcard_constraints:
    sample="[A-Za-z0-9][A-Za-z0-9._-]*",
    shard="[0-9]+",


def model_input(key):
    """The demo model file when the config names one (so the rule that builds it runs first)."""
    spec = config["models"][key] if key != "classifier" else config["classifier"]
    return spec if spec == DEMO_MODELS[key] else []


def model_param(key):
    """The model a job loads: the demo file when the workflow builds it, else the spec as configured."""
    spec = config["models"][key] if key != "classifier" else config["classifier"]
    return lambda wildcards, input: input.get("model", []) or spec


def maybe_temp(path):
    return path if config["keep_shards"] else temp(path)


def shard_ids(sample):
    """Shard indices of a sample, known once its prepare checkpoint has run."""
    shards = checkpoints.prepare.get(sample=sample).output.shards
    return sorted(glob_wildcards(os.path.join(shards, "{shard}.faa")).shard)


def dna_shards(wildcards):
    return expand(
        "work/{sample}/embed/{shard}.dna.h5",
        sample=wildcards.sample,
        shard=shard_ids(wildcards.sample),
    )


def protein_shards(wildcards):
    return expand(
        "work/{sample}/embed/{shard}.protein.h5",
        sample=wildcards.sample,
        shard=shard_ids(wildcards.sample),
    )


def embed_stats(sample):
    return expand(
        "work/{sample}/embed/{shard}.{kind}.json",
        sample=sample,
        shard=shard_ids(sample),
        kind=["dna", "protein"],
    )


def embed_benchmarks(sample):
    """Snakemake benchmark files of the embed jobs, in the order of embed_stats."""
    return expand(
        "logs/{sample}/embed_{kind}/{shard}.benchmark.tsv",
        sample=sample,
        shard=shard_ids(sample),
        kind=["dna", "protein"],
    )


def report_inputs(wildcards):
    inputs = {
        "summaries": expand("work/{sample}/summary.json", sample=SAMPLES),
        "validations": expand("results/{sample}/validation.json", sample=SAMPLES),
        "stats": [path for sample in SAMPLES for path in embed_stats(sample)],
        "benchmarks": [path for sample in SAMPLES for path in embed_benchmarks(sample)],
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
