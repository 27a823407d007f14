"""An embed job: one shard FASTA in, one HDF5 of pooled embeddings out, rows in input order.

Sequences are sorted by length into token-budget batches (little padding). A batch that runs out
of memory is split in two and retried, down to single sequences. Every finished batch is
appended to a sidecar folder (`{output}.partial/`, not a Snakemake output), so a killed job
resumes where it stopped; the final file is assembled from the sidecar in input order and the
sidecar is removed once the file is in place.
"""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_open
from .devices import claim_device, computes_on, dtype_for, gpu_expected, precision_name
from .errors import InputError, VirnucflowError
from .models.resolve import load_encoder
from .shards import EmbeddingWriter

SIDECAR_FORMAT = 1
WRITE_ROWS = 4096  # rows per write when the final file is assembled


def read_shard_fasta(path):
    """(ids, sequences) of a shard FASTA written by prepare."""
    ids, seqs, lines = [], [], None
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if line.startswith(">"):
                if lines is not None:
                    seqs.append("".join(lines))
                ids.append(line[1:])
                lines = []
            elif line:
                if lines is None:
                    raise InputError(f"{path}, line {number}: sequence before the first '>' header; "
                                     "the shard is damaged, rerun prepare")
                lines.append(line)
    if lines is not None:
        seqs.append("".join(lines))
    for record, (sid, seq) in enumerate(zip(ids, seqs), 1):
        if not sid or not seq:
            raise InputError(f"{path}, record {record} ({sid or 'no id'}): empty id or sequence; "
                             "the shard is damaged, rerun prepare")
    return ids, seqs


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


class Sidecar:
    """Finished batches of a job, kept beside its output until the output is in place.

    manifest.json  what the rows were computed from (input hash, model, precision ...): a
                   sidecar made from anything else is ignored and removed.
    rows.f32       the rows of every finished batch, back to back (float32, `dim` wide).
    batches.jsonl  one line per finished batch, written after its rows: input indices, row
                   count, CRC32 of the rows, skipped sequences. A line cut short by a kill, or
                   rows that do not match their CRC, end the valid part; the rest is cut off.
    Appending is two buffered writes per batch and no new file, which costs next to nothing on a
    network file system; the kernel keeps written data when the process is killed.
    """

    def __init__(self, folder, key, dim, log=None):
        self.folder = Path(folder)
        self.dim = dim
        self.row_bytes = 4 * dim
        self.positions = {}  # input index -> row in rows.f32
        self.skipped = {}  # input index -> reason
        self.rows = 0
        manifest = self.folder / "manifest.json"
        key = {"format": SIDECAR_FORMAT, "dim": dim, **key}
        if self.folder.exists():
            old = _read_json(manifest)
            if old != key:
                if log:
                    differs = sorted(k for k in set(key) | set(old or {}) if (old or {}).get(k) != key.get(k))
                    log.info("ignoring the sidecar %s: it was made for another input, model or precision "
                             "(%s differ); starting from the first batch", self.folder, ", ".join(differs))
                shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not manifest.exists():
            with atomic_open(manifest) as handle:
                json.dump(key, handle, sort_keys=True)
        self._load()
        self._rows_file = open(self.folder / "rows.f32", "ab")
        self._index_file = open(self.folder / "batches.jsonl", "a")

    def _load(self):
        rows_path, index_path = self.folder / "rows.f32", self.folder / "batches.jsonl"
        rows_path.touch()
        index_path.touch()
        valid_index_bytes = 0
        with open(rows_path, "rb") as rows, open(index_path, "rb") as index:
            for raw in index:
                entry = _parse_entry(raw)
                if entry is None:
                    break
                data = rows.read(entry["rows"] * self.row_bytes)
                if len(data) != entry["rows"] * self.row_bytes or zlib.crc32(data) != entry["crc32"]:
                    break
                for offset, input_index in enumerate(entry["indices"]):
                    self.positions[input_index] = self.rows + offset
                for offset, reason in entry["skipped"]:
                    self.skipped[entry["indices"][offset]] = reason
                self.rows += entry["rows"]
                valid_index_bytes += len(raw)
        # Cut off whatever a kill left half-written, so appends continue from a clean end.
        os.truncate(index_path, valid_index_bytes)
        os.truncate(rows_path, self.rows * self.row_bytes)

    def append(self, indices, vectors, skipped):
        """Record a finished batch: input `indices`, their rows, and (position, reason) of skips."""
        data = np.ascontiguousarray(vectors, dtype="<f4").tobytes()
        self._rows_file.write(data)
        self._rows_file.flush()  # the rows reach the kernel before the line that vouches for them
        entry = {"indices": [int(i) for i in indices], "rows": len(indices), "crc32": zlib.crc32(data),
                 "skipped": [[int(p), str(r)] for p, r in skipped]}
        self._index_file.write(json.dumps(entry) + "\n")
        self._index_file.flush()
        for offset, index in enumerate(indices):
            self.positions[int(index)] = self.rows + offset
        for offset, reason in skipped:
            self.skipped[int(indices[offset])] = reason
        self.rows += len(indices)

    def read_rows(self):
        """All rows written so far, (rows, dim), mapped from disk."""
        self._rows_file.flush()
        if self.rows == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.memmap(self.folder / "rows.f32", dtype="<f4", mode="r", shape=(self.rows, self.dim))

    def close(self):
        self._rows_file.close()
        self._index_file.close()

    def remove(self):
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _parse_entry(raw):
    if not raw.endswith(b"\n"):
        return None
    try:
        entry = json.loads(raw)
        if entry["rows"] != len(entry["indices"]):
            return None
        return entry
    except (ValueError, KeyError, TypeError):
        return None


def finished_batches(sidecar_folder):
    """Batches a running or killed job has finished in `sidecar_folder` (for tests and monitoring)."""
    try:
        with open(Path(sidecar_folder) / "batches.jsonl", "rb") as index:
            return sum(1 for raw in index if raw.endswith(b"\n"))
    except FileNotFoundError:  # not started, or finished and removed
        return 0


def _is_oom(error):
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


class BatchEmbedder:
    """Embeds a batch of sequences, halving it on out-of-memory down to single sequences.

    When a batch of P padded tokens runs out of memory, batches of more than P/2 are split before
    they are tried: a token budget too large for the device costs a failure or two, not one per
    batch. A single sequence that fails does not lower the cap (one outlier must not shrink every
    batch of the shard).
    """

    def __init__(self, encoder, tokens, ids, fasta, on_error, log=None):
        self.encoder, self.tokens, self.ids, self.fasta = encoder, tokens, ids, fasta
        self.on_error, self.log = on_error, log
        self.cap = None  # most padded tokens a batch of several sequences may have on this device
        self.splits = 0

    def __call__(self, batch):
        """(vectors (len(batch), dim) float32 with zero rows where skipped, [(position, reason)])."""
        vectors = np.zeros((len(batch), self.encoder.dim), dtype=np.float32)
        skipped = []
        self._embed(batch, 0, vectors, skipped)
        return vectors, skipped

    def _embed(self, batch, start, vectors, skipped):
        padded = max(len(self.tokens[i]) for i in batch) * len(batch)
        if len(batch) > 1 and self.cap is not None and padded > self.cap:
            return self._split(batch, start, vectors, skipped)
        result, message = self._attempt(batch)
        if result is not None:
            vectors[start : start + len(batch)] = result
            return None
        if len(batch) > 1:
            self.cap = padded // 2
            if self.log:
                self.log.warning("out of memory on %d sequences (%d padded tokens): batches of more than %d "
                                 "padded tokens are split from now on; a token budget of %d would avoid this",
                                 len(batch), padded, self.cap, self.cap)
            return self._split(batch, start, vectors, skipped)
        sid, length = self.ids[batch[0]], len(self.tokens[batch[0]])
        reason = f"out of memory even alone ({length} tokens): {message}"
        if self.on_error == "skip":
            if self.log:
                self.log.warning("skipping %s: %s", sid, reason)
            skipped.append((start, reason))
            return None
        raise InputError(f"{self.fasta}: sequence {sid} ({length} tokens) runs out of memory even alone; "
                         "use a GPU with more memory, or set embed.on_error: skip to record it and go on")

    def _split(self, batch, start, vectors, skipped):
        self.splits += 1
        half = len(batch) // 2
        self._embed(batch[:half], start, vectors, skipped)
        self._embed(batch[half:], start + half, vectors, skipped)

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

    def __init__(self, total, total_tokens, done, done_tokens, log, every_seconds):
        self.total, self.total_tokens = total, total_tokens
        self.done, self.done_tokens = done, done_tokens
        self.computed = self.tokens = self.padded = 0
        self.log, self.every = log, every_seconds
        self.started = self.last = time.monotonic()

    def update(self, sequences, tokens, padded):
        self.done += sequences
        self.done_tokens += tokens
        self.computed += sequences
        self.tokens += tokens
        self.padded += padded
        now = time.monotonic()
        if self.log and now - self.last >= self.every:
            self.last = now
            self.log.info("%s", self.line(now))

    def line(self, now=None):
        seconds = max((now or time.monotonic()) - self.started, 1e-9)
        token_rate = self.tokens / seconds
        left = (self.total_tokens - self.done_tokens) / token_rate if token_rate else float("nan")
        return (f"{self.done}/{self.total} sequences, {self.computed / seconds:.1f} sequences/s, "
                f"{token_rate:.0f} tokens/s, padding {100 * (1 - self.tokens / max(self.padded, 1)):.1f}%, "
                f"about {left:.0f} s left")


def embed_shard(fasta, out_h5, *, kind, model, device="auto", precision="auto", token_budget=65536,
                on_error="fail", layer=None, attention="auto", threads=None, cpu_fallback=False, sidecar_dir=None,
                stats_json=None, log=None, progress_seconds=5.0):
    """Embed every sequence of `fasta` with the `kind` model ('dna': DNABERT-S, 'protein': ESM-2)
    into `out_h5`; returns the job's statistics (also written to `stats_json`). `threads`: torch's
    CPU threads (default: torch's own choice, one per core of the machine). `cpu_fallback`: compute on
    the CPU when this job has a GPU that torch cannot use (an error otherwise)."""
    started = time.monotonic()
    if threads:
        torch.set_num_threads(int(threads))
    fasta, out_h5 = Path(fasta), Path(out_h5)
    if on_error not in ("fail", "skip"):
        raise VirnucflowError(f"on_error {on_error!r} is not one of fail, skip")
    if int(token_budget) < 1:
        raise VirnucflowError(f"token budget {token_budget} must be a positive number of tokens")
    ids, seqs = read_shard_fasta(fasta)
    input_sha256 = hashlib.sha256(fasta.read_bytes()).hexdigest()
    _remove_stale_temporaries(out_h5)
    kill_after = int(os.environ.get("VIRNUCFLOW_TEST_KILL_AFTER_BATCHES", "0"))  # the resume test's kill point

    with claim_device(device, log=log, cpu_fallback=cpu_fallback) as claimed:
        dev = computes_on(claimed)
        dtype = dtype_for(precision, dev)
        encoder = load_encoder(kind, model, device=dev, dtype=dtype, layer=layer, attention=attention)
        device_type = torch.device(dev).type
        on_gpu = device_type == "cuda" and torch.cuda.is_available()
        device_name = torch.cuda.get_device_name(torch.device(dev)) if on_gpu else device_type
        loaded = time.monotonic()
        tokens = [encoder.tokenize(s) for s in seqs]
        lengths = [len(t) for t in tokens]
        attrs = {
            "model": str(encoder.name), "model_revision": encoder.revision, "kind": kind,
            "pooling": encoder.pooling, "precision": precision_name(dtype), "device": device_type,
            "attention": encoder.attention, "tokens": sum(lengths), "token_budget": int(token_budget),
        }
        if kind == "protein":
            attrs["layer"] = int(encoder.layer)
        # Everything the numbers depend on; the batching is not in it (the encoders' rows do not
        # depend on batch composition), so a rerun with another token budget still resumes.
        key = {"input_sha256": input_sha256, "sequences": len(seqs),
               **{k: attrs[k] for k in ("model", "model_revision", "kind", "pooling", "precision", "device",
                                        "attention")}}
        sidecar = Sidecar(sidecar_dir or f"{out_h5}.partial", key, encoder.dim, log)
        resumed = len(sidecar.positions)
        todo = [i for i in range(len(seqs)) if i not in sidecar.positions]
        batches = make_batches(lengths, int(token_budget), todo)
        if log:
            log.info("%s: %d sequences, %d tokens, %d batches of at most %d padded tokens; model %s (%s) "
                     "on %s in %s, ready after %.1f s", fasta, len(seqs), sum(lengths), len(batches), token_budget,
                     encoder.name, encoder.revision, dev, attrs["precision"], loaded - started)
            if resumed:
                log.info("resuming: %d of %d sequences already embedded in %s", resumed, len(seqs), sidecar.folder)
        embedder = BatchEmbedder(encoder, tokens, ids, fasta, on_error, log)
        progress = Progress(len(seqs), sum(lengths), resumed, sum(lengths[i] for i in sidecar.positions), log,
                            progress_seconds)
        padded_tokens = 0
        try:
            for number, batch in enumerate(batches, 1):
                vectors, skipped = embedder(batch)
                sidecar.append(batch, vectors, skipped)
                padded = max(lengths[i] for i in batch) * len(batch)
                padded_tokens += padded
                progress.update(len(batch), sum(lengths[i] for i in batch), padded)
                if kill_after and number >= kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)
        except BaseException:
            sidecar.close()
            raise
        peak_memory = torch.cuda.max_memory_allocated() if on_gpu else None
        del encoder
        embedder.encoder = None  # the GPU memory goes before the device is handed back
    embedded = time.monotonic()

    # Input order, from the sidecar; sequences skipped with on_error: skip are recorded, not written.
    skipped = sorted(sidecar.skipped.items())
    keep = [i for i in range(len(ids)) if i not in sidecar.skipped]
    rows = sidecar.read_rows()
    with EmbeddingWriter(out_h5, sidecar.dim, attrs) as writer:
        for start in range(0, len(keep), WRITE_ROWS):
            chunk = keep[start : start + WRITE_ROWS]
            writer.append([ids[i] for i in chunk], rows[[sidecar.positions[i] for i in chunk]])
        for index, reason in skipped:
            writer.skip(ids[index], reason)
    del rows
    seconds = time.monotonic() - started
    stats = {
        # padded_tokens: of the batches this run embedded (resumed ones are not counted)
        "sequences": len(seqs), "tokens": sum(lengths), "padded_tokens": padded_tokens, "seconds": round(seconds, 3),
        "device": dev, "claimed_device": claimed, "gpu_expected": gpu_expected(), "precision": attrs["precision"],
        "model": attrs["model"], "model_revision": attrs["model_revision"], "resumed": resumed,
        "skipped": len(skipped), "kind": kind, "batches": len(batches),
        "oom_splits": embedder.splits, "load_seconds": round(loaded - started, 3),
        "embed_seconds": round(embedded - loaded, 3), "device_name": device_name,
        "peak_gpu_memory_bytes": peak_memory,
    }
    if stats_json:
        with atomic_open(stats_json) as handle:
            json.dump(stats, handle, indent=2)
    sidecar.remove()  # last: a kill before this point reruns from a complete sidecar
    if log:
        computed = len(seqs) - resumed
        log.info("wrote %s: %d rows, %d skipped, %d resumed from the sidecar; %d sequences embedded in %.1f s "
                 "(%.1f sequences/s, %.0f tokens/s, padding %.1f%%, %d out-of-memory splits)", out_h5, len(keep),
                 len(skipped), resumed, computed, embedded - loaded, computed / max(embedded - loaded, 1e-9),
                 progress.tokens / max(embedded - loaded, 1e-9), 100 * (1 - progress.tokens / max(padded_tokens, 1)),
                 embedder.splits)
    return stats


def _remove_stale_temporaries(out_h5):
    """Temporary files of killed earlier attempts at this output (atomic_path names them
    `.{name}.tmp.{pid}`); only one job writes an output at a time, so none is in use."""
    for stale in out_h5.parent.glob(f".{out_h5.name}.tmp.*"):
        with contextlib.suppress(OSError):
            stale.unlink()
