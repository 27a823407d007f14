"""What each job asks its scheduler for (mem_mb, runtime in minutes, disk_mb), from what it processes.

The rules declare these, so that a site profile, a plain `--executor slurm` or a `module` user submits
every job with enough memory and time; each grows with Snakemake's `attempt` (1, 2, 3 with `retries`).
Estimates are upper bounds from sizes known when the job is planned (the job's input files, the
model's weight files) and the rates in BENCHMARKS.md ("Job resources"), with a margin: a job asking
a little too much waits a little longer in the queue, one asking too little is killed.
"""

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

MB = 1e6
# Weight bytes of the published models, for a model not resolvable where the workflow is planned.
PUBLISHED_WEIGHT_BYTES = {"dna": 470e6, "protein": 11.4e9}  # DNABERT-S (fp32), ESM-2 3B (fp32 safetensors)
PYTHON_AND_TORCH_MB = 1500  # RSS of a job's interpreter with torch and h5py imported
# Peak host memory per weight byte while a model loads (measured 1.6: ESM-2 650M 4.2 GB, DNABERT-S
# 0.9 GB; BENCHMARKS.md "model loading"), with a margin.
LOAD_PEAK_PER_WEIGHT_BYTE = 2.0
# Embedding rates with margin, tokens x parameters per second: a GPU computes about 2 FLOP per
# parameter and token; 1e14 FLOP/s is a third of an H100's bf16 rate, 5e9 a CPU thread's.
FLOPS = {"gpu": 1e14, "cpu_thread": 5e9}
STREAM_BYTES_PER_S = 50 * MB  # prepare, merge and predict stream their files at this rate or faster
SAFETY = 3  # times the estimated compute time, for slow nodes and shared file systems
GZIP_RATIO = 4  # decompressed bytes per gzip byte of sequence text (typical of reads; low-complexity text compresses more)


def weight_bytes(spec, kind):
    """Bytes of the model's weight files where the workflow runs, else the published model's."""
    from .errors import VirnucflowError

    try:
        return _found_weight_bytes(str(spec), kind)
    except (VirnucflowError, OSError):  # not resolvable here (not built yet, or no cache): the checks say so
        return PUBLISHED_WEIGHT_BYTES[kind]


@functools.lru_cache(maxsize=None)  # once per model and process, not per job; a miss is not cached
def _found_weight_bytes(spec, kind):
    from .models.checkpoints import weight_files
    from .models.resolve import locate_model

    path, _ = locate_model(spec, kind)
    files = [path] if path.is_file() else weight_files(path)
    return sum(Path(file).stat().st_size for file in files)


def _grow(value, attempt):
    return int(math.ceil(value * attempt))


def file_bytes(paths):
    """Bytes of the existing files among `paths` (a path or a list); a gzip file counts decompressed."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    total = 0
    for path in paths:
        if os.path.isfile(path):
            size = os.path.getsize(path)
            total += size * GZIP_RATIO if str(path).endswith(".gz") else size
    return total


def embed_mem_mb(model_bytes, attempt=1):
    """Host memory of an embed job: the model's load peak; batches live on the GPU and rows go to disk."""
    return _grow(PYTHON_AND_TORCH_MB + LOAD_PEAK_PER_WEIGHT_BYTE * model_bytes / MB, attempt)


def embed_runtime(model_bytes, fasta_bytes, on_gpu, threads=1, attempt=1):
    """Minutes: a fixed start (interpreter, model load) plus every residue or base of the shard FASTA
    as one token (an upper bound: DNABERT-S's tokens hold several bases) through the model."""
    parameters = model_bytes / 4  # fp32 weights; a half-precision checkpoint only makes this larger
    rate = FLOPS["gpu"] if on_gpu else FLOPS["cpu_thread"] * threads
    seconds = 2 * parameters * fasta_bytes / rate
    return _grow(10 + SAFETY * seconds / 60, attempt)


def embed_disk_mb(fasta_bytes, dim, attempt=1):
    """The shard's rows twice (the sidecar's batches and the assembled file) at 4 bytes a number,
    with every 50 bytes of shard FASTA taken as a row (a frame is at least ~16 residues of a short read
    and its id: 166 residues or 500 bases for 500-bp chunks)."""
    rows = fasta_bytes / 50
    return _grow(100 + 2 * rows * dim * 4 / MB, attempt)


def stream_mem_mb(buffer_mb=0, attempt=1):
    """A job that streams its files (prepare, merge, predict): the interpreter and its buffers."""
    return _grow(PYTHON_AND_TORCH_MB + 3 * buffer_mb, attempt)


def stream_runtime(input_bytes, attempt=1):
    """Minutes for a job that reads `input_bytes` (decompressed) once at the streaming rate."""
    return _grow(10 + SAFETY * input_bytes / STREAM_BYTES_PER_S / 60, attempt)


def prepare_mem_mb(reads_bytes, attempt=1):
    """Prepare streams the reads; the duplicate-id check keeps 8 bytes per read and sorts them (about 32
    bytes per read at its peak; a read is at least 100 bytes of FASTA/FASTQ text here)."""
    return _grow(PYTHON_AND_TORCH_MB + 32 * reads_bytes / 100 / MB, attempt)


def prepare_disk_mb(reads_bytes, attempt=1):
    """The work folder: frames.tsv, reads.tsv and the shard FASTA hold about 2.3x the reads' text
    (BENCHMARKS.md "Disk use": 755 B per frame + 21 B per read, at 0.5-1.5 frames per 500-bp read)."""
    return _grow(100 + 3 * reads_bytes / MB, attempt)


def merge_mem_mb(buffer_rows, dim, attempt=1):
    """Merge holds `buffer_rows` rows of every block, read and written: about three buffers."""
    return stream_mem_mb(buffer_rows * dim * 4 / MB, attempt)


def copy_disk_mb(input_bytes, attempt=1):
    """A job whose output is about as large as its input (merge: the shards into one file)."""
    return _grow(100 + input_bytes / MB, attempt)


# --- what the rules declare: ready callables per rule, as Snakemake calls them --------------------------

@dataclass(frozen=True)
class RuleResources:
    """A rule's `resources:` values: callables of (wildcards, input, threads, attempt) as Snakemake passes
    them (it hands a callable only the arguments it names)."""

    mem_mb: Callable
    runtime: Callable
    disk_mb: Optional[Callable] = None


def rule_resources(config, on_gpu):
    """{rule: RuleResources} for a validated config; `on_gpu`: the embed jobs compute on a GPU. A rule
    not named here streams its input files once (`streaming`)."""
    from .models.resolve import CONFIG_KEYS

    def embed(kind):
        spec = config["models"][CONFIG_KEYS[kind]]

        def model(input):  # the model file or folder when it is an input (a rule may build it), else the id
            return weight_bytes(input.get("model") or spec, kind)

        return RuleResources(
            mem_mb=lambda wildcards, input, attempt: embed_mem_mb(model(input), attempt),
            runtime=lambda wildcards, input, threads, attempt: embed_runtime(
                model(input), file_bytes(input.fasta), on_gpu, threads, attempt),
            disk_mb=lambda wildcards, input, attempt: embed_disk_mb(
                file_bytes(input.fasta), _width(kind, spec), attempt))

    def shards(input):
        return file_bytes(list(input.dna) + list(input.protein))

    def merge_width():
        return sum(_width(kind, config["models"][key]) for kind, key in CONFIG_KEYS.items())

    reads = _whole_input
    return {
        "prepare": RuleResources(
            mem_mb=lambda wildcards, input, attempt: prepare_mem_mb(reads(input), attempt),
            runtime=lambda wildcards, input, attempt: stream_runtime(reads(input), attempt),
            disk_mb=lambda wildcards, input, attempt: prepare_disk_mb(reads(input), attempt)),
        "embed_dna": embed("dna"),
        "embed_protein": embed("protein"),
        "merge": RuleResources(
            mem_mb=lambda wildcards, input, attempt: merge_mem_mb(config["merge"]["buffer_rows"], merge_width(), attempt),
            runtime=lambda wildcards, input, attempt: stream_runtime(shards(input), attempt),
            disk_mb=lambda wildcards, input, attempt: copy_disk_mb(shards(input), attempt)),
        "streaming": RuleResources(
            mem_mb=lambda wildcards, input, attempt: stream_mem_mb(0, attempt),
            runtime=lambda wildcards, input, attempt: stream_runtime(_whole_input(input), attempt)),
    }


def _whole_input(input):
    return file_bytes(list(input))


def _width(kind, spec):
    """The model's embedding width where it resolves, else the published model's (not built or downloaded
    yet: the load-time checks and the job say so)."""
    from .errors import VirnucflowError
    from .models.resolve import PUBLISHED_WIDTHS, model_width

    try:
        return model_width(kind, spec)
    except (VirnucflowError, OSError):
        return PUBLISHED_WIDTHS[kind]
