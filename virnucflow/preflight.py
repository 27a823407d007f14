"""What is checked when the workflow loads, before any job runs (so `snakemake -n` reports it too).

Each problem is one line naming the config key or sample and the fix. Cheap by design: a FASTA file
is checked by its first 64 KiB (the full record checks are prepare's), a model by its folder, config
and table of contents (not its weights), the classifier by loading it (a few MB).
"""

from .errors import VirnucflowError
from .fasta import check_fasta_start

MODELS = (("dnabert_s", "dna"), ("esm2", "protein"))


class PreflightError(VirnucflowError):
    """The run cannot succeed as configured; the message has one line per problem."""


def preflight(config, samples, local_gpus=None, built_by_workflow=lambda path: False):
    """Raise a PreflightError listing every problem of `config` (validated against the schema) and
    `samples` ({name: FASTA path}). `local_gpus`: GPU slots of a local run (None on a cluster).
    `built_by_workflow(path)`: True for model files a rule of the workflow makes (they do not exist
    yet and are checked when they are used)."""
    problems = [f"sample {name}: {error}" for name, error in _fasta_problems(samples)]
    device = config["embed"]["device"]
    if device.startswith("cuda") and local_gpus is not None:
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= local_gpus:
            problems.append(f"embed.device: {device} asks for GPU {index} but this local run has {local_gpus} GPU "
                            "slot(s) (NVIDIA devices or --resources gpu=N); set embed.device: auto or cpu, or run "
                            "on a GPU node or with a cluster profile")
    widths = {}
    for key, kind in MODELS:
        spec = config["models"][key]
        if built_by_workflow(spec):
            continue
        try:
            widths[key] = _model_width(kind, spec)
        except VirnucflowError as error:
            problems.append(f"models.{key}: {error}")
    classifier = config.get("classifier")
    if classifier and not built_by_workflow(classifier):
        features = sum(widths.values()) if len(widths) == len(MODELS) else None
        try:
            _check_classifier(classifier, features, config["chunk_length"])
        except VirnucflowError as error:
            problems.append(f"classifier: {error}")
    if problems:
        raise PreflightError("\n".join(problems))


def _fasta_problems(samples):
    for name, path in samples.items():
        try:
            check_fasta_start(path)
        except VirnucflowError as error:
            yield name, error


def _model_width(kind, spec):
    from .models.resolve import model_width  # imports torch: only when a model is to be checked

    return model_width(kind, spec)


def _check_classifier(path, features, chunk_length):
    from .classifier import load_classifier

    load_classifier(path, input_dim=features, chunk_length=chunk_length)
