"""An embed job: one shard FASTA in, one HDF5 of pooled embeddings out, rows in input order.

Lock, plan, run, assemble. The job first takes the lock of its sidecar (virnucflow.sidecar): one job
owns an output at a time; a second job on the same shard (an orphan of a killed Snakemake still
running, a `--rerun-incomplete` beside it) waits, saying who holds the lock, and when it gets the lock
reuses the output the first one wrote if that output's provenance is its own. Sequences are sorted by
length into token-budget batches (little padding); the plan is stored in the sidecar when it is made
and a resumed job follows it, whatever the current token budget, so that its rows are bitwise those
of an uninterrupted run (on the CPU, rows depend on the batch they were computed in, in the last bits).
Each batch is embedded, split in two and retried when it runs out of memory (down to single
sequences; recorded in the output's attributes), and appended to the sidecar. The final file is
assembled from the sidecar in input order after every batch's CRC is checked again, and the sidecar
is removed once the file is in place.

Output attributes besides the embedding file's own (virnucflow.embeddings): `model`,
`model_revision`, `untrained` (the model is one of the demo's random-weight ones), `kind`, `pooling`,
`precision`, `device`, `attention`, `layer` (ESM-2),
`input_sha256` (of the shard FASTA, which the merge checks), `tokens`, `token_budget` and `batches`
(of the plan the rows were computed in), `oom_split_batches` / `oom_split_rows` (planned batches,
and their rows, that ran out of memory and were computed in smaller pieces; their ids are in the
dataset `oom_split_ids`).
"""

import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_open
from .devices import claim_device, computes_on, dtype_for, gpu_expected, precision_name
from .embeddings import EmbeddingWriter, open_embeddings, verify_checksums
from .errors import InputError, VirnucflowError
from .models.resolve import load_encoder
from .sidecar import Sidecar, SidecarLock, remove_sidecar
from .workfiles import read_shard_fasta

log = logging.getLogger(__name__)
WRITE_ROWS = 4096  # rows per write when the final file is assembled
# What the rows depend on, besides the input: a sidecar or an output made otherwise is not reused. The
# batching is not in it: the plan stored in the sidecar is followed whatever the current token budget.
SIDECAR_KEY = ("model", "model_revision", "kind", "pooling", "precision", "device", "attention")
PROVENANCE = ("input_sha256", *SIDECAR_KEY, "layer")  # attributes an output must share to be reused


def embed_shard(fasta, out_h5, *, kind, model, device, precision, token_budget, on_error, layer, threads,
                cpu_fallback, attention="auto", sidecar_dir=None, stats_json=None, progress_seconds=5.0):
    """Embed every sequence of `fasta` with the `kind` model ('dna': DNABERT-S, 'protein': ESM-2)
    into `out_h5`; returns the job's statistics (also written to `stats_json`). `layer`: the ESM-2
    layer to pool (None: the last). `threads`: torch's CPU threads (None: torch's own choice, one per
    core). `cpu_fallback`: compute on the CPU when this job has a GPU that torch cannot use (an error
    otherwise). `sidecar_dir`: where the lock and finished batches are kept (default `{out_h5}.partial`)."""
    started = time.monotonic()
    if on_error not in ("fail", "skip"):
        raise VirnucflowError(f"on_error {on_error!r} is not one of fail, skip")
    if int(token_budget) < 1:
        raise VirnucflowError(f"token budget {token_budget} must be a positive number of tokens")
    if threads:
        torch.set_num_threads(int(threads))
    fasta, out_h5 = Path(fasta), Path(out_h5)
    ids, seqs = read_shard_fasta(fasta)
    input_sha256 = hashlib.sha256(fasta.read_bytes()).hexdigest()

    # Waits while another job owns this output; held until the sidecar is removed (or the job dies).
    with SidecarLock(sidecar_dir or f"{out_h5}.partial") as lock:
        _remove_stale_temporaries(out_h5)  # under the lock: no other job is writing this output
        with claim_device(device, log=log, cpu_fallback=cpu_fallback) as claimed:
            plan = _plan(seqs, input_sha256, kind=kind, model=model, device=computes_on(claimed),
                         precision=precision, token_budget=int(token_budget), layer=layer, attention=attention)
            earlier = _reusable(out_h5, plan.attrs, ids)
            if earlier is not None:
                plan.encoder = None
                return _reuse(out_h5, earlier, plan, lock, stats_json, started, fasta)
            _open_sidecar(plan, lock.folder, int(token_budget))
            loaded = plan.loaded_at
            log.info("%s: %d sequences, %d tokens, %d batches of at most %d padded tokens; model %s (%s) on %s in "
                     "%s, ready after %.1f s", fasta, len(seqs), sum(plan.lengths), len(plan.sidecar.plan["batches"]),
                     plan.attrs["token_budget"], plan.encoder.name, plan.encoder.revision, plan.device,
                     plan.attrs["precision"], loaded - started)
            if plan.resumed:
                log.info("resuming: %d of %d sequences already embedded in %s", plan.resumed, len(seqs),
                         plan.sidecar.folder)
            run = _run(plan, ids, fasta, on_error, progress_seconds)
        embedded = time.monotonic()

        kept, skipped = _assemble(plan.sidecar, ids, plan.attrs, out_h5)
        stats = {
            # padded_tokens: of the batches this run embedded (resumed ones are not counted)
            "sequences": len(seqs), "tokens": sum(plan.lengths), "padded_tokens": run.padded_tokens,
            "seconds": round(time.monotonic() - started, 3), "device": plan.device, "claimed_device": claimed,
            "gpu_expected": gpu_expected(), "precision": plan.attrs["precision"], "model": plan.attrs["model"],
            "model_revision": plan.attrs["model_revision"], "untrained": plan.attrs["untrained"],
            "resumed": plan.resumed, "skipped": skipped,
            "kind": kind, "batches": plan.attrs["batches"], "oom_splits": run.splits,
            "load_seconds": round(loaded - started, 3), "embed_seconds": round(embedded - loaded, 3),
            "device_name": plan.device_name, "peak_gpu_memory_bytes": run.peak_memory,
            "input_sha256": input_sha256, "waited_seconds": round(lock.waited, 3),
        }
        if stats_json:
            with atomic_open(stats_json) as handle:
                json.dump(stats, handle, indent=2)
        plan.sidecar.remove(lock)  # last: a kill before this point reruns from a complete sidecar
    computed, seconds = len(seqs) - plan.resumed, max(embedded - loaded, 1e-9)
    log.info("wrote %s: %d rows, %d skipped, %d resumed from the sidecar; %d sequences embedded in %.1f s "
             "(%.1f sequences/s, %.0f tokens/s, padding %.1f%%, %d out-of-memory splits)", out_h5, kept, skipped,
             plan.resumed, computed, embedded - loaded, computed / seconds, run.tokens / seconds,
             100 * (1 - run.tokens / max(run.padded_tokens, 1)), run.splits)
    return stats


@dataclass
class _Plan:
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


def _plan(seqs, input_sha256, *, kind, model, device, precision, token_budget, layer, attention):
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
    return _Plan(encoder=encoder, device=device, device_name=device_name, loaded_at=loaded_at, tokens=tokens,
                 lengths=lengths, attrs=attrs, key=key)


def _open_sidecar(plan, folder, token_budget):
    """Open the sidecar (or make it, with a new batch plan) and list the planned batches still to do."""
    lengths = plan.lengths

    def new_plan():
        return {"token_budget": token_budget, "batches": make_batches(lengths, token_budget)}

    plan.sidecar = sidecar = Sidecar(folder, plan.key, plan.encoder.dim, new_plan)
    stored = int(sidecar.plan["token_budget"])
    if stored != token_budget:
        log.info("following the batch plan stored in %s (token budget %d, not the current %d): the rows are then "
                 "bitwise those of an uninterrupted run", folder, stored, token_budget)
    plan.attrs.update(token_budget=stored, batches=len(sidecar.plan["batches"]))
    plan.resumed = len(sidecar.positions)
    plan.batches = [batch for batch in sidecar.plan["batches"] if not all(i in sidecar.positions for i in batch)]


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


def _reuse(out_h5, attrs, plan, lock, stats_json, started, fasta):
    """Stats of a job that found its output written by the job it waited for: that job's own stats
    when they are there (they say how the rows were computed), else what the file's attributes tell."""
    waited = f" (this job waited {lock.waited:.0f} s for it)" if lock.waited else ""
    log.info("reusing %s, written by the earlier job%s: same input (sha256 %s), model %s (%s), %s on %s", out_h5,
             waited, attrs["input_sha256"][:12], attrs["model"], attrs["model_revision"], attrs["precision"],
             attrs["device"])
    stats = None
    with contextlib.suppress(OSError, ValueError, TypeError):
        stats = json.loads(Path(stats_json).read_text()) if stats_json else None
    if not (isinstance(stats, dict) and all(stats.get(k) == attrs.get(k) for k in
                                            ("input_sha256", "model_revision", "precision", "kind"))):
        sequences = attrs["rows"] + attrs["skipped"]
        stats = {"sequences": sequences, "tokens": attrs.get("tokens"), "padded_tokens": None,
                 "device": attrs.get("device"), "claimed_device": None, "gpu_expected": gpu_expected(),
                 "precision": attrs["precision"], "model": attrs["model"], "model_revision": attrs["model_revision"],
                 "untrained": bool(attrs.get("untrained", False)), "resumed": sequences, "skipped": attrs["skipped"], "kind": attrs["kind"],
                 "batches": attrs.get("batches"), "oom_splits": None, "load_seconds": None, "embed_seconds": None,
                 "device_name": None, "peak_gpu_memory_bytes": None, "input_sha256": attrs["input_sha256"]}
    stats.update(reused=True, waited_seconds=round(lock.waited, 3), seconds=round(time.monotonic() - started, 3))
    if stats_json:
        with atomic_open(stats_json) as handle:
            json.dump(stats, handle, indent=2)
    remove_sidecar(lock.folder, lock)  # what an even earlier attempt may have left: the output is final
    log.info("%s: nothing to compute, %s is in place", fasta, out_h5)
    return stats


@dataclass
class _Run:
    padded_tokens: int  # padded tokens of the batches this run embedded
    tokens: int  # their tokens
    splits: int  # out-of-memory splits
    peak_memory: int | None  # bytes of GPU memory at most, None on the CPU


def _run(plan, ids, fasta, on_error, progress_seconds):
    """Embed the planned batches into the sidecar, with a progress line every `progress_seconds`."""
    lengths = plan.lengths
    embedder = BatchEmbedder(plan.encoder, plan.tokens, ids, fasta, on_error)
    progress = Progress(len(ids), sum(lengths), plan.resumed, sum(lengths[i] for i in plan.sidecar.positions),
                        progress_seconds)
    try:
        for batch in plan.batches:
            vectors, skipped, pieces = embedder(batch)
            plan.sidecar.append(batch, vectors, skipped, pieces)
            progress.update(len(batch), sum(lengths[i] for i in batch), max(lengths[i] for i in batch) * len(batch))
    except BaseException:
        plan.sidecar.close()
        raise
    on_gpu = plan.attrs["device"] == "cuda" and torch.cuda.is_available()
    peak_memory = torch.cuda.max_memory_allocated() if on_gpu else None
    plan.encoder = embedder.encoder = None  # the GPU memory goes before the device is handed back
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
    del rows
    if split:
        log.warning("%d of %d batches ran out of memory and were computed in smaller pieces: the %d rows of %s "
                    "can differ from an unsplit run in the last bits (attributes oom_split_batches, oom_split_rows; "
                    "ids in oom_split_ids)", len(split), len(sidecar.entries), len(in_pieces), out_h5)
    return len(keep), len(skipped)


def make_batches(lengths, token_budget, indices=None):
    """`indices` (default: all) grouped into batches, longest first, each with
    max_len * size <= token_budget; a sequence longer than the budget goes alone."""
    indices = range(len(lengths)) if indices is None else indices
    order = sorted(indices, key=lambda i: (-lengths[i], i))
    batches, current = [], []
    for index in order:
        # Sorted longest first, so the batch's first sequence sets its padded width.
        width = lengths[current[0]] if current else lengths[index]
        if current and width * (len(current) + 1) > token_budget:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def _is_oom(error):
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


class BatchEmbedder:
    """Embeds a batch of sequences, halving it on out-of-memory down to single sequences.

    When a batch of P padded tokens runs out of memory, batches of more than P/2 are split before
    they are tried: a token budget too large for the device costs a failure or two, not one per
    batch. A single sequence that fails does not lower the cap (one outlier must not shrink every
    batch of the shard).
    """

    def __init__(self, encoder, tokens, ids, fasta, on_error):
        self.encoder, self.tokens, self.ids, self.fasta = encoder, tokens, ids, fasta
        self.on_error = on_error
        self.cap = None  # most padded tokens a batch of several sequences may have on this device
        self.splits = 0

    def __call__(self, batch):
        """(vectors (len(batch), dim) float32 with zero rows where skipped, [(position, reason)], the sizes
        of the pieces the batch was computed in if it was split, else None)."""
        vectors = np.zeros((len(batch), self.encoder.dim), dtype=np.float32)
        skipped, pieces = [], []
        self._embed(batch, 0, vectors, skipped, pieces)
        return vectors, skipped, pieces if len(pieces) > 1 else None

    def _embed(self, batch, start, vectors, skipped, pieces):
        padded = max(len(self.tokens[i]) for i in batch) * len(batch)
        if len(batch) > 1 and self.cap is not None and padded > self.cap:
            return self._split(batch, start, vectors, skipped, pieces)
        result, message = self._attempt(batch)
        if result is not None:
            vectors[start : start + len(batch)] = result
            pieces.append(len(batch))
            return None
        if len(batch) > 1:
            self.cap = padded // 2
            log.warning("out of memory on %d sequences (%d padded tokens): batches of more than %d padded tokens "
                        "are split from now on; a token budget of %d would avoid this", len(batch), padded, self.cap,
                        self.cap)
            return self._split(batch, start, vectors, skipped, pieces)
        sid, length = self.ids[batch[0]], len(self.tokens[batch[0]])
        reason = f"out of memory even alone ({length} tokens): {message}"
        if self.on_error == "skip":
            log.warning("skipping %s: %s", sid, reason)
            skipped.append((start, reason))
            pieces.append(1)
            return None
        raise InputError(f"{self.fasta}: sequence {sid} ({length} tokens) runs out of memory even alone; "
                         "use a GPU with more memory, or set embed.on_error: skip to record it and go on")

    def _split(self, batch, start, vectors, skipped, pieces):
        self.splits += 1
        half = len(batch) // 2
        self._embed(batch[:half], start, vectors, skipped, pieces)
        self._embed(batch[half:], start + half, vectors, skipped, pieces)

    def _attempt(self, batch):
        """(vectors, None) or (None, the out-of-memory message)."""
        try:
            return self.encoder.embed([self.tokens[i] for i in batch]).numpy(), None
        except RuntimeError as error:  # torch.OutOfMemoryError is one
            if not _is_oom(error):
                raise
            message = str(error).strip().splitlines()[0][:200]
        # Outside the except block: the failed attempt's tensors, held by the traceback, are free now.
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return None, message


class Progress:
    """A log line every few seconds: sequences done, rates of this run, padding share, time left."""

    def __init__(self, total, total_tokens, done, done_tokens, every_seconds):
        self.total, self.total_tokens = total, total_tokens
        self.done, self.done_tokens = done, done_tokens
        self.computed = self.tokens = self.padded = 0
        self.every = every_seconds
        self.started = self.last = time.monotonic()

    def update(self, sequences, tokens, padded):
        self.done += sequences
        self.done_tokens += tokens
        self.computed += sequences
        self.tokens += tokens
        self.padded += padded
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            log.info("%s", self.line(now))

    def line(self, now=None):
        seconds = max((now or time.monotonic()) - self.started, 1e-9)
        token_rate = self.tokens / seconds
        left = (self.total_tokens - self.done_tokens) / token_rate if token_rate else float("nan")
        return (f"{self.done}/{self.total} sequences, {self.computed / seconds:.1f} sequences/s, "
                f"{token_rate:.0f} tokens/s, padding {100 * (1 - self.tokens / max(self.padded, 1)):.1f}%, "
                f"about {left:.0f} s left")


def _remove_stale_temporaries(out_h5):
    """Temporary files of killed earlier attempts at this output (atomic_path names them
    `.{name}.tmp.{pid}`); only the job that holds the sidecar's lock writes the output, so none is in use."""
    for stale in out_h5.parent.glob(f".{out_h5.name}.tmp.*"):
        with contextlib.suppress(OSError):
            stale.unlink()
