"""What a run will cost, before it runs: reads, frames, tokens per model, GPU-hours and disk, per sample
and in total, from each input's size and its first records (printed by `snakemake -n`).

A sample of the first `SAMPLE_BYTES` of text of each input is chunked and translated as prepare does;
its reads, frames and residues per byte of text scale to the whole file (a .gz file's text is its
size times the sample's own gzip ratio). Rates are the tokens/s measured for the published models
on one H200 in bf16 (BENCHMARKS.md), scaled by weight bytes for another model; no H100 figure has
been measured yet. An estimate, good to within the input's heterogeneity: a file whose first
records are not like the rest (sorted by length, say) is estimated from its first records.
"""

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .fasta import read_batches
from .frames import chunk_layout, find_frames

SAMPLE_BYTES = 256 << 10
# Measured on one H200, bf16 (BENCHMARKS.md, issue 12): ESM-2 3B packed, DNABERT-S padded batches.
MEASURED = {"protein": ("ESM-2 3B", 11.4e9, 75_024), "dna": ("DNABERT-S", 470e6, 959_000)}
GPU = "H200"
ROW_OVERHEAD_BYTES = 53  # an id and its HDF5 bookkeeping per row, beside the floats (BENCHMARKS.md "Disk use")
DNA_BASES_PER_TOKEN = 4.0  # without a tokenizer at hand (DNABERT-S's BPE, measured on its own sample when it is)


@dataclass
class Estimate:
    sample: str
    text_bytes: float
    reads: float
    frames: float
    residues: float
    bases: float  # nucleotides of the frames (what DNABERT-S reads)
    protein_tokens: float = 0.0
    dna_tokens: float = 0.0
    median_length: float = 0.0  # of the first records read (not summed: 0 in a total)

    def __add__(self, other):
        return Estimate("total", *(getattr(self, field) + getattr(other, field) for field in FIELDS))


FIELDS = ("text_bytes", "reads", "frames", "residues", "bases", "protein_tokens", "dna_tokens")


def _is_gzip(path):
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _text_bytes(path, sample_bytes):
    """The file's text size: its size, or for gzip its size times the first text's compression ratio."""
    size = os.path.getsize(path)
    if not _is_gzip(path):
        return size
    with gzip.open(path, "rb") as handle:
        text = handle.read(sample_bytes)
    return size * len(text) / max(len(zlib.compress(text, 6)), 1)


def _batch_estimate(batch, chunk_length, compat, dna_tokenizer):
    """The counts of one batch of reads, chunked and translated as prepare does."""
    read_of_chunk, starts = chunk_layout(batch.lengths, chunk_length, compat)
    offsets = (np.cumsum(batch.lengths) - batch.lengths)[read_of_chunk] + starts
    lengths = np.minimum(batch.lengths[read_of_chunk] - starts, chunk_length)
    _, _, _, _, proteins, nucleotides = find_frames(batch.sequence, offsets, lengths, compat)
    residues, bases = sum(map(len, proteins)), sum(map(len, nucleotides))
    if dna_tokenizer is not None and nucleotides:
        dna_tokens = sum(len(e.ids) for e in dna_tokenizer.encode_batch([n.decode() for n in nucleotides]))
    else:
        dna_tokens = bases / DNA_BASES_PER_TOKEN + 2 * len(proteins)
    return Estimate("", batch.size, len(batch.ids), len(proteins), residues, bases,
                    residues + 2 * len(proteins), dna_tokens)


def estimate_sample(sample, paths, chunk_length, compat, sample_bytes=SAMPLE_BYTES, dna_tokenizer=None):
    """An Estimate of one sample (one reads file, or R1 and R2) from the first records of each file."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    total, lengths = None, []
    for path in paths:
        seen = Estimate(sample, 0, 0, 0, 0, 0)
        for batch in _first_batches(path, sample_bytes):
            seen = seen + _batch_estimate(batch, chunk_length, compat, dna_tokenizer)
            lengths.append(batch.lengths)
        scale = _text_bytes(path, int(seen.text_bytes)) / max(seen.text_bytes, 1)
        part = Estimate(sample, *(getattr(seen, field) * scale for field in FIELDS))
        total = part if total is None else total + part
    total.sample = sample
    total.median_length = float(np.median(np.concatenate(lengths))) if lengths else 0.0
    return total


def _first_batches(path, sample_bytes):
    """The batches of the first `sample_bytes` of text of a reads file, in whole records (a small file whole)."""
    batches = read_batches(path, block_bytes=sample_bytes, check_unique=False)
    seen = 0
    try:
        for batch in batches:
            yield batch
            seen += batch.size
            if seen >= sample_bytes:
                break
    finally:
        batches.close()


def median_read_length(paths, sample_bytes=SAMPLE_BYTES):
    """The median length of the first records of a sample's reads file(s), the ones the estimate reads."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    lengths = [batch.lengths for path in paths for batch in _first_batches(path, sample_bytes)]
    return float(np.median(np.concatenate(lengths))) if lengths else 0.0


def gpu_hours(tokens, kind, weight_bytes=None):
    """Hours on one GPU at the measured rate of the published model, scaled by weight bytes for another."""
    _, published_bytes, rate = MEASURED[kind]
    rate *= published_bytes / (weight_bytes or published_bytes)
    return tokens / rate / 3600


def disk_bytes(frames, widths, result_dtype="float32"):
    """(shards, embeddings.h5, peak during the merge) for `frames` rows: float32 shards, the result in
    `result_dtype` (merge.dtype)."""
    shards = frames * (sum(widths) * 4 + ROW_OVERHEAD_BYTES)
    result = frames * (sum(widths) * (2 if result_dtype == "float16" else 4) + ROW_OVERHEAD_BYTES)
    return shards, result, shards + result


def _human(n, unit=""):
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {suffix}{unit}".rstrip()
    return f"{n:.3g} {unit}".rstrip()


def _duration(hours):
    seconds = hours * 3600
    if seconds < 60:
        return f"{seconds:.2g} s"
    return f"{seconds / 60:.2g} min" if seconds < 3600 else f"{hours:,.3g} h"


def report_lines(estimates, widths, weight_bytes, result_dtype="float32"):
    """The lines `snakemake -n` prints: one per sample and a total."""
    lines = [f"estimate (first {SAMPLE_BYTES >> 10} KiB of each input; GPU-hours on one {GPU} at the "
             "measured bf16 rates; see docs/disk-and-cost.md):"]
    rows = list(estimates) + ([sum(estimates[1:], estimates[0])] if len(estimates) > 1 else [])
    for each in rows:
        hours = {kind: gpu_hours(getattr(each, f"{kind}_tokens"), kind, weight_bytes.get(kind))
                 for kind in ("protein", "dna")}
        shards, result, peak = disk_bytes(each.frames, widths, result_dtype)
        lines.append(f"  {each.sample}: {_human(each.reads)} reads, {_human(each.frames)} frames, "
                     f"{_human(each.protein_tokens)} ESM-2 tokens ({_duration(hours['protein'])} of GPU), "
                     f"{_human(each.dna_tokens)} DNABERT-S tokens ({_duration(hours['dna'])})"
                     f"{f', median read {each.median_length:.0f} bp' if each.median_length else ''}; disk: shards "
                     f"{_human(shards, 'B')}, embeddings.h5 {_human(result, 'B')}, {_human(peak, 'B')} during the merge")
    return lines


# The workflow's files that say whether a sample's embeddings are still at hand (rules/*.smk).
PREDICTIONS, EMBEDDINGS = "results/{sample}/predictions.tsv", "results/{sample}/embeddings.h5"
SHARDS, SHARD = "work/{sample}/shards", "work/{sample}/embed/{shard}.{kind}.h5"


def recompute_lines(estimates, weight_bytes, classifier, recorded_inputs):
    """What a dry run re-plans that costs GPU time without saying so: a sample whose predictions.tsv was
    made with another classifier file (`recorded_inputs(path)`: the inputs Snakemake recorded for the job
    that made it; predict reruns) while its embeddings.h5 is gone (not kept) needs its merge again, and
    its embed jobs where the shards are gone too. One line per such sample, with the embed jobs and their
    GPU time (at the estimate's rates)."""
    lines = []
    for each in estimates:
        predictions, embeddings = (Path(t.format(sample=each.sample)) for t in (PREDICTIONS, EMBEDDINGS))
        recorded = recorded_inputs(str(predictions)) if predictions.is_file() and not embeddings.exists() else None
        if not classifier or recorded is None or os.path.normpath(classifier) in map(os.path.normpath, recorded):
            continue
        shards = sorted(path.stem for path in Path(SHARDS.format(sample=each.sample)).glob("*.faa"))
        if not shards:
            continue
        missing = [kind for shard in shards for kind in ("dna", "protein")
                   if not Path(SHARD.format(sample=each.sample, shard=shard, kind=kind)).is_file()]
        start = (f"  {each.sample}: predictions.tsv was made with another classifier, so predict reruns; "
                 "embeddings.h5 was not kept, so merge reruns")
        if not missing:
            lines.append(start + " from the kept shards (no GPU work)")
            continue
        hours = sum(gpu_hours(getattr(each, f"{kind}_tokens"), kind, weight_bytes.get(kind))
                    * missing.count(kind) / len(shards) for kind in ("protein", "dna"))
        lines.append(start + f", and {len(missing)} embed jobs before it: about {_duration(hours)} of GPU "
                     "(keep_embeddings: true keeps the embeddings for the next classifier)")
    return (["what this run recomputes because the embeddings were not kept:"] + lines) if lines else []


def estimate_run(config, samples, made_by_rule=lambda path: None, checked=(), classifier=None,
                 keep_embeddings=True, recorded_inputs=lambda path: None):
    """report_lines for a validated config and {sample: reads path(s)}, before the load-time checks: the
    models' widths, weight bytes and DNABERT-S tokenizer are read where they resolve (the published figures
    where they do not: the estimate needs no download). A sample whose reads a rule has not made yet, or
    whose first records prepare would refuse, gets a line saying so (prepare names the record); one in
    `checked`, whose reads files the load-time checks name, a line pointing there (said once). Without
    `keep_embeddings`, the GPU work another `classifier` re-plans (`recompute_lines`)."""
    from .errors import VirnucflowError
    from .job_resources import weight_bytes
    from .models.resolve import CONFIG_KEYS, PUBLISHED_WIDTHS, locate_model, model_width

    widths, weights = [], {}
    for kind, key in CONFIG_KEYS.items():
        spec = config["models"][key]
        try:
            widths.append(model_width(kind, spec))
        except (VirnucflowError, OSError):  # not built or downloaded yet: the published width
            widths.append(PUBLISHED_WIDTHS[kind])
        weights[kind] = weight_bytes(spec, kind)
    tokenizer = _dna_tokenizer(locate_model, config["models"]["dnabert_s"])
    estimates, problems = [], []
    for name, paths in samples.items():
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        try:
            if name in checked:
                raise VirnucflowError("its reads are named by the checks below")
            if any(made_by_rule(path) is not None and not made_by_rule(path).finished for path in paths):
                raise VirnucflowError("its reads are made by a rule of the workflow that has not run yet")
            estimates.append(estimate_sample(name, paths, config["chunk_length"], config["compat"],
                                             dna_tokenizer=tokenizer))
        except (VirnucflowError, OSError) as error:  # it runs before the checks, which then name the file
            problems.append(f"  {name}: no estimate ({error})")
    lines = report_lines(estimates, widths, weights, config["merge"]["dtype"]) if estimates else []
    recomputed = [] if keep_embeddings else recompute_lines(estimates, weights, classifier, recorded_inputs)
    return lines + problems + recomputed


def _dna_tokenizer(locate_model, spec):
    """DNABERT-S's tokenizer set up as the encoder uses it, or None where the model does not resolve."""
    from .errors import VirnucflowError
    from .models.dnabert_s_pretrained import load_tokenizer

    try:
        tokenizer = load_tokenizer(locate_model(spec, "dna")[0])
    except (VirnucflowError, OSError):
        return None
    tokenizer.no_padding()  # as the encoder: the published file pads to 2,000 tokens
    tokenizer.no_truncation()
    return tokenizer
