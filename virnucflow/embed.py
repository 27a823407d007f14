"""An embed job: one shard FASTA in, one HDF5 of pooled embeddings out, rows in input order.

Lock, prepare, run, assemble: under its sidecar's lock (virnucflow.sidecar) a job reuses an earlier
job's output when its provenance is this job's; else it follows the batch plan stored in the sidecar
(virnucflow.batching), so that a resumed job's rows are bitwise an uninterrupted run's, appends each
batch there, and assembles the output in input order (its attributes: `_prepare`, `_assemble`).
"""

import contextlib
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .atomic import remove_stale_temporaries
from .batching import BatchEmbedder, Progress, make_batches
from .devices import claim_device, computes_on, dtype_for, gpu_expected, precision_name
from .embed_stats import EmbedStats, read_stats_json, write_stats_json
from .embeddings import EmbeddingWriter, open_embeddings, verify_checksums
from .errors import InputError, VirnucflowError
from .models.resolve import load_encoder
from .provenance import file_sha256
from .sidecar import Sidecar, SidecarLock, remove_sidecar
from .workfiles import read_shard_fasta

log = logging.getLogger(__name__)
WRITE_ROWS = 4096  # rows per write when the final file is assembled
# What the rows depend on, besides the input: a sidecar or an output made otherwise is not reused. The
# batching is not in it: the plan stored in the sidecar is followed whatever the current token budget.
SIDECAR_KEY = ("model", "model_revision", "kind", "pooling", "precision", "device", "attention")
PROVENANCE = ("input_sha256", *SIDECAR_KEY, "layer")  # attributes an output must share to be reused


def embed_shard(fasta, out_h5, *, kind, model, device, precision, token_budget, on_error, layer, threads,
                cpu_fallback, attention="auto", sidecar_dir=None, stats_json=None, progress_seconds=5.0,
                lease_seconds=None):
    """Embed every sequence of `fasta` with the `kind` model ('dna': DNABERT-S, 'protein': ESM-2)
    into `out_h5`; returns the job's statistics (also written to `stats_json`). `layer`: the ESM-2
    layer to pool (None: the last). `threads`: torch's CPU threads (None: torch's own choice, one per
    core). `cpu_fallback`: compute on the CPU when this job has a GPU that torch cannot use (an error
    otherwise). `sidecar_dir`: where the lock and finished batches are kept (default `{out_h5}.partial`).
    `lease_seconds`: how often the lease on it is renewed (None: 10; VIRNUCFLOW_LOCK_LEASE_SECONDS wins)."""
    started = time.monotonic()
    if on_error not in ("fail", "skip"):
        raise VirnucflowError(f"on_error {on_error!r} is not one of fail, skip")
    if int(token_budget) < 1:
        raise VirnucflowError(f"token budget {token_budget} must be a positive number of tokens")
    if threads:
        torch.set_num_threads(int(threads))
    fasta, out_h5 = Path(fasta), Path(out_h5)
    ids, seqs = read_shard_fasta(fasta)
    input_sha256 = file_sha256(fasta)

    # Waits while another job owns this output; held until the sidecar is removed (or the job dies, or
    # another job takes the lease over: this job then stops with LeaseLost).
    with SidecarLock(sidecar_dir or f"{out_h5}.partial", lease_seconds) as lock:
        remove_stale_temporaries(out_h5, every=True)  # under the lock: no other job writes this output
        with claim_device(device, log=log, cpu_fallback=cpu_fallback) as claimed:
            job = _prepare(seqs, input_sha256, kind=kind, model=model, device=computes_on(claimed),
                           precision=precision, token_budget=int(token_budget), layer=layer, attention=attention)
            earlier = _reusable(out_h5, job.attrs, ids)
            if earlier is not None:
                job.encoder = None
                return _reuse(out_h5, earlier, lock, stats_json, started, fasta)
            _open_sidecar(job, lock, int(token_budget))
            _log_start(job, fasta, started)
            run = _run(job, ids, fasta, on_error, progress_seconds)
        embedded = time.monotonic()

        kept, skipped = _assemble(job.sidecar, ids, job.attrs, out_h5)
        stats = _stats(job, run, claimed, skipped, lock.waited, started, embedded)
        if stats_json:
            write_stats_json(stats, stats_json)
        job.sidecar.remove(lock)  # last: a kill before this point reruns from a complete sidecar
    computed, seconds = len(seqs) - job.resumed, max(embedded - job.loaded_at, 1e-9)
    log.info("wrote %s: %d rows, %d skipped, %d resumed from the sidecar; %d sequences embedded in %.1f s "
             "(%.1f sequences/s, %.0f tokens/s, padding %.1f%%, %d out-of-memory splits)", out_h5, kept, skipped,
             job.resumed, computed, embedded - job.loaded_at, computed / seconds, run.tokens / seconds,
             100 * (1 - run.tokens / max(run.padded_tokens, 1)), run.splits)
    return stats.as_json()


def _log_start(job, fasta, started):
    log.info("%s: %d sequences, %d tokens, %d batches of at most %d padded tokens; model %s (%s) on %s in "
             "%s, ready after %.1f s", fasta, len(job.tokens), sum(job.lengths), len(job.sidecar.plan["batches"]),
             job.attrs["token_budget"], job.encoder.name, job.encoder.revision, job.device,
             job.attrs["precision"], job.loaded_at - started)
    if job.resumed:
        log.info("resuming: %d of %d sequences already embedded in %s", job.resumed, len(job.tokens),
                 job.sidecar.folder)


def _stats(job, run, claimed, skipped, waited, started, embedded):
    """The stats of a job that computed its output (`run`: what `_run` did; times from time.monotonic())."""
    attrs, loaded = job.attrs, job.loaded_at
    return EmbedStats(
        sequences=len(job.tokens), tokens=sum(job.lengths), padded_tokens=run.padded_tokens,
        seconds=round(time.monotonic() - started, 3), device=job.device, claimed_device=claimed,
        gpu_expected=gpu_expected(), precision=attrs["precision"], model=attrs["model"],
        model_revision=attrs["model_revision"], untrained=attrs["untrained"], resumed=job.resumed, skipped=skipped,
        kind=attrs["kind"], batches=attrs["batches"], oom_splits=run.splits, load_seconds=round(loaded - started, 3),
        embed_seconds=round(embedded - loaded, 3), device_name=job.device_name, peak_gpu_memory_bytes=run.peak_memory,
        input_sha256=attrs["input_sha256"], waited_seconds=round(waited, 3))


@dataclass
class _Job:
    """What a job will do: the loaded encoder, the tokens, the batches still to compute, the sidecar."""

    encoder: object
    device: str
    device_name: str
    loaded_at: float  # time.monotonic() once the model was loaded
    tokens: list
    lengths: list
    attrs: dict  # of the output file
    key: dict  # what the rows depend on: the sidecar's manifest
    sidecar: Sidecar = None
    resumed: int = 0  # sequences the sidecar already holds
    batches: list = None  # of input indices, the planned batches the sidecar does not hold


def _prepare(seqs, input_sha256, *, kind, model, device, precision, token_budget, layer, attention):
    """Load the model and tokenize; what the output's attributes will be."""
    dtype = dtype_for(precision, device)
    encoder = load_encoder(kind, model, device=device, dtype=dtype, layer=layer, attention=attention)
    loaded_at = time.monotonic()
    device_type = torch.device(device).type
    on_gpu = device_type == "cuda" and torch.cuda.is_available()
    tokens = [encoder.tokenize(s) for s in seqs]
    lengths = [len(t) for t in tokens]
    attrs = {
        "model": str(encoder.name), "model_revision": encoder.revision, "kind": kind,
        "pooling": encoder.pooling, "precision": precision_name(dtype), "device": device_type,
        "attention": encoder.attention, "tokens": sum(lengths), "token_budget": token_budget,
        "input_sha256": input_sha256, "untrained": bool(encoder.untrained),
    }
    key = {"input_sha256": input_sha256, "sequences": len(seqs), **{k: attrs[k] for k in SIDECAR_KEY}}
    if kind == "protein":
        attrs["layer"] = key["layer"] = int(encoder.layer)
    device_name = torch.cuda.get_device_name(torch.device(device)) if on_gpu else device_type
    return _Job(encoder=encoder, device=device, device_name=device_name, loaded_at=loaded_at, tokens=tokens,
                 lengths=lengths, attrs=attrs, key=key)


def _open_sidecar(job, lock, token_budget):
    """Open the sidecar (or make it, with a new batch plan) and list the planned batches still to do."""
    folder, lengths = lock.folder, job.lengths

    def new_plan():
        return {"token_budget": token_budget, "batches": make_batches(lengths, token_budget)}

    job.sidecar = sidecar = Sidecar(folder, job.key, job.encoder.dim, new_plan, lock=lock)
    stored = int(sidecar.plan["token_budget"])
    if stored != token_budget:
        log.info("following the batch plan stored in %s (token budget %d, not the current %d): the rows are then "
                 "bitwise those of an uninterrupted run", folder, stored, token_budget)
    job.attrs.update(token_budget=stored, batches=len(sidecar.plan["batches"]))
    job.resumed = len(sidecar.positions)
    job.batches = [batch for batch in sidecar.plan["batches"] if not all(i in sidecar.positions for i in batch)]


def _reusable(out_h5, attrs, ids):
    """The attributes of `out_h5` when an earlier job wrote it complete, intact and from the same input,
    model, revision, precision ... as this job would (else None: this job computes it)."""
    if not out_h5.exists():
        return None
    try:
        with open_embeddings(out_h5) as earlier:
            theirs = {key: _plain(earlier.attrs.get(key)) for key in PROVENANCE}
            ours = {key: attrs.get(key) for key in PROVENANCE}
            if theirs != ours:
                differs = ", ".join(k for k in PROVENANCE if theirs[k] != ours[k])
                log.info("%s exists but was made otherwise (%s differ): computing it again", out_h5, differs)
                return None
            listed = earlier.read_ids() + [sid for sid, _ in earlier.skipped()]
            problems = verify_checksums(earlier)
            if sorted(listed) != sorted(ids) or problems:
                log.info("%s exists but %s: computing it again", out_h5,
                         "; ".join(problems) or "its ids are not this shard's")
                return None
            return {key: _plain(value) for key, value in earlier.attrs.items()} | {
                "rows": len(earlier), "skipped": len(earlier.skipped())}
    except InputError as error:
        log.info("%s exists but is not a finished file (%s): computing it again", out_h5, error)
        return None


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _reuse(out_h5, attrs, lock, stats_json, started, fasta):
    """Stats of a job that found its output written by the job it waited for: that job's own stats
    when they are there (they say how the rows were computed), else what the file's attributes tell."""
    waited = f" (this job waited {lock.waited:.0f} s for it)" if lock.waited else ""
    log.info("reusing %s, written by the earlier job%s: same input (sha256 %s), model %s (%s), %s on %s", out_h5,
             waited, attrs["input_sha256"][:12], attrs["model"], attrs["model_revision"], attrs["precision"],
             attrs["device"])
    stats = None
    with contextlib.suppress(OSError, ValueError, TypeError):
        stats = read_stats_json(stats_json) if stats_json else None
    if stats is None or any(getattr(stats, k) != attrs.get(k) for k in
                            ("input_sha256", "model_revision", "precision", "kind")):
        sequences = attrs["rows"] + attrs["skipped"]
        stats = EmbedStats(sequences=sequences, tokens=attrs.get("tokens"), device=attrs.get("device"),
                           gpu_expected=gpu_expected(), precision=attrs["precision"], model=attrs["model"],
                           model_revision=attrs["model_revision"], untrained=bool(attrs.get("untrained", False)),
                           resumed=sequences, skipped=attrs["skipped"], kind=attrs["kind"],
                           batches=attrs.get("batches"), input_sha256=attrs["input_sha256"])
    stats = replace(stats, reused=True, waited_seconds=round(lock.waited, 3),
                    seconds=round(time.monotonic() - started, 3))
    if stats_json:
        write_stats_json(stats, stats_json)
    remove_sidecar(lock.folder, lock)  # what an even earlier attempt may have left: the output is final
    log.info("%s: nothing to compute, %s is in place", fasta, out_h5)
    return stats.as_json()


@dataclass
class _Run:
    padded_tokens: int  # padded tokens of the batches this run embedded
    tokens: int  # their tokens
    splits: int  # out-of-memory splits
    peak_memory: int | None  # bytes of GPU memory at most, None on the CPU


def _run(job, ids, fasta, on_error, progress_seconds):
    """Embed the planned batches into the sidecar, with a progress line every `progress_seconds`."""
    lengths = job.lengths
    embedder = BatchEmbedder(job.encoder, job.tokens, ids, fasta, on_error)
    progress = Progress(len(ids), sum(lengths), job.resumed, sum(lengths[i] for i in job.sidecar.positions),
                        progress_seconds)
    try:
        for batch in job.batches:
            vectors, skipped, pieces = embedder(batch)
            job.sidecar.append(batch, vectors, skipped, pieces)
            progress.update(len(batch), sum(lengths[i] for i in batch), max(lengths[i] for i in batch) * len(batch))
    except BaseException:
        job.sidecar.close()
        raise
    on_gpu = job.attrs["device"] == "cuda" and torch.cuda.is_available()
    peak_memory = torch.cuda.max_memory_allocated() if on_gpu else None
    job.encoder = embedder.encoder = None  # the GPU memory goes before the device is handed back
    return _Run(padded_tokens=progress.padded, tokens=progress.tokens, splits=embedder.splits,
                peak_memory=peak_memory)


def _assemble(sidecar, ids, attrs, out_h5):
    """Write `out_h5` from the sidecar in input order, after checking every batch's row count and CRC again;
    sequences skipped with on_error: skip are recorded, not written. Returns (rows written, sequences skipped)."""
    sidecar.verify()
    skipped = sorted(sidecar.skipped.items())
    keep = [i for i in range(len(ids)) if i not in sidecar.skipped]
    split = sidecar.split_batches()
    in_pieces = sorted({i for entry in split for i in entry["indices"]} - set(sidecar.skipped))
    attrs = {**attrs, "oom_split_batches": len(split), "oom_split_rows": len(in_pieces)}
    rows = sidecar.read_rows()
    with EmbeddingWriter(out_h5, sidecar.dim, attrs, expected_rows=len(keep)) as writer:
        for start in range(0, len(keep), WRITE_ROWS):
            part = keep[start : start + WRITE_ROWS]
            writer.append([ids[i] for i in part], rows[[sidecar.positions[i] for i in part]])
        for index, reason in skipped:
            writer.skip(ids[index], reason)
        writer.add_ids("oom_split_ids", [ids[i] for i in in_pieces])
        sidecar.check()  # last: a job that lost its lease never puts its file in place
    del rows
    if split:
        log.warning("%d of %d batches ran out of memory and were computed in smaller pieces: the %d rows of %s "
                    "can differ from an unsplit run in the last bits (attributes oom_split_batches, oom_split_rows; "
                    "ids in oom_split_ids)", len(split), len(sidecar.entries), len(in_pieces), out_h5)
    return len(keep), len(skipped)
