"""What is checked when the workflow loads, before any job runs (so `snakemake -n` reports it too).

Each problem is one line naming the config key or sample and the fix. Cheap by design: a reads file
(FASTA or FASTQ) is checked by its first 64 KiB (the full record checks are prepare's), a model by its
folder, config and table of contents (not its weights), the classifier by loading it (a few MB; the
published one, `virnucpro`, also by its git blob id). Files a rule of the workflow makes are checked
once that rule has finished them (`snakemake_seams.Product`), and commands that run no job
(`snakemake_seams.runs_no_job`) are not checked at all.
"""

from pathlib import Path

from .errors import VirnucflowError
from .fasta import check_reads_start

MODELS = (("dnabert_s", "dna"), ("esm2", "protein"))


class PreflightError(VirnucflowError):
    """The run cannot succeed as configured; the message has one line per problem. `samples`: those
    whose reads files it names (the dry run's estimate leaves them to these lines)."""

    def __init__(self, message, samples=()):
        super().__init__(message)
        self.samples = frozenset(samples)


def preflight(config, samples, local_gpus=None, made_by_rule=lambda path: None):
    """Raise a PreflightError listing every problem of `config` (validated against the schema) and
    `samples` ({name: [reads path, or R1 and R2]}). `local_gpus`: GPU slots of a local run (None on a cluster).
    `made_by_rule(path)`: a `Product` for a file a rule of the workflow makes, else None. An unfinished
    product (the rule will build it again) is not checked here but by the job that loads it: a leftover
    of a killed run must never stand between Snakemake and its own recovery."""
    bad_reads = list(_reads_problems(samples, made_by_rule))
    problems = [f"sample {name}: {error}" for name, error in bad_reads]
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
        if _unfinished(made_by_rule(spec)):
            continue
        try:
            widths[key] = _model_width(kind, spec)
        except VirnucflowError as error:
            problems.append(f"models.{key}: {error}{_leftover_hint(spec, made_by_rule(spec))}")
    problems += _classifier_problems(config, widths, made_by_rule)
    if problems:
        raise PreflightError("\n".join(problems), samples=[name for name, _ in bad_reads])


SHORT_READS = 0.6  # a sample whose first reads' median is under this share of chunk_length is warned about
PUBLISHED_CLASSIFIER_NAMES = ("virnucpro", "500_model.pth", "300_model.pth")


def load_warnings(config, samples, made_by_rule=lambda path: None):
    """Lines worth a warning when the workflow loads, for a run that can go ahead: samples of short reads
    (the median of the first records the estimate reads, under SHORT_READS x chunk_length), and
    `compat: fixed` with a published classifier. Files the checks refuse are left to them."""
    chunk_length, short = config["chunk_length"], []
    for name, paths in samples.items():
        paths = [paths] if isinstance(paths, str) else list(paths)
        if any(made_by_rule(path) is not None for path in paths):
            continue  # a rule makes them: prepare reads them
        try:
            median = _median_read_length(paths)
        except (VirnucflowError, OSError):
            continue
        if 0 < median < SHORT_READS * chunk_length:
            short.append(f"{name} {median:.0f} bp")
    lines = []
    if short:
        named = ", ".join(short[:5]) + (f" and {len(short) - 5} more" if len(short) > 5 else "")
        lines.append(
            f"short reads: the median length of the first reads of {len(short)} sample(s) ({named}) is under "
            f"{SHORT_READS:.0%} of chunk_length {chunk_length}; a read shorter than a chunk is one chunk of its own "
            f"length, shorter than the {chunk_length}-bp chunks a published classifier was trained on. For short "
            "reads use chunk_length: 300 with classifier: virnucpro (the 300-bp classifier), or merge overlapping "
            "pairs into longer reads first (e.g. fastp --merge, bbmerge.sh) and give them as single-end samples")
    classifier = str(config.get("classifier") or "")
    if config["compat"] == "fixed" and classifier and Path(classifier).name in PUBLISHED_CLASSIFIER_NAMES:
        lines.append(f"compat: fixed with the published classifier ({classifier}), which was trained on VirNucPro's "
                     "own chunking (compat: virnucpro): its calls on these chunks are not the original's; use "
                     "compat: virnucpro with it")
    return lines


def _median_read_length(paths):
    from .estimate import median_read_length

    return median_read_length(paths)


def _unfinished(product):
    return product is not None and not product.finished


def _leftover_hint(path, product):
    if product is None:
        return ""
    return (f" (rule {product.rule} made it: if a run was interrupted while it wrote, this is its leftover; "
            f"delete {path} and run again)")


def _reads_problems(samples, made_by_rule):
    """(sample, error) for each reads file (FASTA or FASTQ; one, or R1 and R2) that starts wrong; a file
    that a rule of the workflow has not finished (a `module` user's own rule) is checked by prepare."""
    for name, paths in samples.items():
        for path in [paths] if isinstance(paths, str) else paths:
            if _unfinished(made_by_rule(path)):
                continue
            try:
                check_reads_start(path)
            except VirnucflowError as error:
                yield name, f"{error}{_leftover_hint(path, made_by_rule(path))}"


def _model_width(kind, spec):
    from .models.resolve import model_width  # imports torch: only when a model is to be checked

    return model_width(kind, spec)


def _classifier_problems(config, widths, made_by_rule):
    """The classifier's problem, as a list of at most one line: `virnucpro` is the published classifier
    for chunk_length, downloaded and verified; a file must load safely and fit the models' widths."""
    from .models.published_classifiers import locate_classifier

    classifier = config.get("classifier")
    try:
        classifier = classifier and locate_classifier(classifier, config["chunk_length"])
    except VirnucflowError as error:
        return [f"classifier: {error}"]
    if not classifier or _unfinished(made_by_rule(classifier)):
        return []
    features = sum(widths.values()) if len(widths) == len(MODELS) else None
    try:
        _check_classifier(classifier, features, config["chunk_length"])
    except VirnucflowError as error:
        return [f"classifier: {error}{_leftover_hint(classifier, made_by_rule(classifier))}"]
    return []


def _check_classifier(path, features, chunk_length):
    from .classifier import load_classifier

    load_classifier(path, input_dim=features, chunk_length=chunk_length)
