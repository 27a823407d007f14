"""An embed job: one shard FASTA in, one HDF5 of pooled embeddings out, rows in input order.

Sequences are sorted by length into token-budget batches (little padding), a batch that runs out
of memory is split in two and retried, and every finished batch is kept in a sidecar folder
(`{output}.partial/`) so that a killed job resumes where it stopped. The sidecar is not a
Snakemake output; it is removed once the shard is in place.
"""

import hashlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_open, atomic_path
from .devices import claim_device, dtype_for
from .errors import ValidationError
from .models.resolve import load_encoder
from .shards import EmbeddingWriter


def read_shard_fasta(path):
    """(ids, sequences) of a shard FASTA written by prepare (one sequence line per record)."""
    ids, seqs = [], []
    with open(path) as handle:
        for line in handle:
            line = line.rstrip("\n")
            if line.startswith(">"):
                ids.append(line[1:])
                seqs.append("")
            elif line:
                seqs[-1] += line
    return ids, seqs


def make_batches(lengths, token_budget):
    """Indices grouped into batches, longest first, each with max_len * size <= token_budget
    (a sequence longer than the budget goes alone)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches, current, width = [], [], 0
    for index in order:
        longest = max(width, lengths[index])
        if current and longest * (len(current) + 1) > token_budget:
            batches.append(current)
            current, longest = [], lengths[index]
        current.append(index)
        width = longest
    if current:
        batches.append(current)
    return batches


def _is_oom(error):
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


class Sidecar:
    """Finished batches of an interrupted job, valid only for the same input, model and batching."""

    def __init__(self, folder, key, log=None):
        self.folder = Path(folder)
        manifest = self.folder / "manifest.json"
        if self.folder.exists():
            old = json.loads(manifest.read_text()) if manifest.exists() else None
            if old != key:
                if log:
                    log.info("ignoring sidecar %s: made for another input, model or batching", self.folder)
                shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not manifest.exists():
            with atomic_open(manifest) as handle:
                json.dump(key, handle)

    def load(self, batch_number):
        """(rows, skipped) of a finished batch, or None."""
        path = self.folder / f"batch-{batch_number:06d}.npy"
        if not path.exists():
            return None
        skipped = self.folder / f"batch-{batch_number:06d}.skipped.json"
        return np.load(path), (json.loads(skipped.read_text()) if skipped.exists() else [])

    def save(self, batch_number, rows, skipped):
        if skipped:  # written first: the .npy is what marks the batch finished
            with atomic_open(self.folder / f"batch-{batch_number:06d}.skipped.json") as handle:
                json.dump(skipped, handle)
        with atomic_path(self.folder / f"batch-{batch_number:06d}.npy") as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, rows)

    def remove(self):
        shutil.rmtree(self.folder, ignore_errors=True)


def embed_shard(fasta, out_h5, *, kind, model, device="auto", precision="auto", token_budget=65536,
                on_error="fail", layer=None, stats_json=None, log=None, sidecar_dir=None, attention="auto"):
    """Embed every sequence of `fasta` with the `kind` model ('dna' or 'protein') into `out_h5`."""
    started = time.monotonic()
    ids, seqs = read_shard_fasta(fasta)
    with claim_device(device, log=log) as dev:
        dtype = dtype_for(precision, dev)
        encoder = load_encoder(kind, model, device=dev, dtype=dtype, layer=layer, attention=attention)
        tokens = [encoder.tokenize(s) for s in seqs]
        lengths = [len(t) for t in tokens]
        batches = make_batches(lengths, token_budget)
        key = {
            "input_sha256": hashlib.sha256(Path(fasta).read_bytes()).hexdigest(), "model": str(model),
            "revision": encoder.revision, "kind": kind, "precision": str(dtype), "device": dev.split(":")[0],
            "token_budget": token_budget, "layer": layer, "attention": encoder.attention,
        }
        sidecar = Sidecar(sidecar_dir or f"{out_h5}.partial", key, log)
        rows = np.zeros((len(seqs), encoder.dim), dtype=np.float32)
        done = np.zeros(len(seqs), dtype=bool)
        skipped = []
        resumed = padded = 0
        kill_after = int(os.environ.get("VIRNUCFLOW_TEST_KILL_AFTER_BATCHES", "0"))  # for the resume test
        last_report = time.monotonic()
        if log:
            log.info("%s: %d sequences, %d tokens, %d batches (budget %d tokens), model %s on %s in %s",
                     Path(fasta).name, len(seqs), sum(lengths), len(batches), token_budget, model, dev, dtype)
        for number, batch in enumerate(batches):
            padded += max((lengths[i] for i in batch), default=0) * len(batch)
            saved = sidecar.load(number)
            if saved is not None and len(saved[0]) == len(batch):
                rows[batch] = saved[0]
                skipped += [tuple(pair) for pair in saved[1]]
                done[batch] = True
                resumed += len(batch)
                continue
            batch_skipped = []
            result = _embed_with_split(encoder, tokens, batch, ids, fasta, on_error, batch_skipped)
            for index, vector in result.items():
                rows[index] = vector
            done[batch] = True
            skipped += batch_skipped
            sidecar.save(number, rows[batch], batch_skipped)
            if kill_after and number + 1 >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            now = time.monotonic()
            if log and now - last_report > 5:
                last_report = now
                finished = int(done.sum())
                log.info("%d/%d sequences, %.1f seq/s, %.0f tokens/s", finished, len(seqs),
                         (finished - resumed) / (now - started), sum(lengths[i] for i in np.flatnonzero(done)) / (now - started))
        attrs = {
            "model": str(model), "model_revision": encoder.revision, "kind": kind, "pooling": encoder.pooling,
            "precision": str(dtype).removeprefix("torch."), "token_budget": token_budget,
        }
        skipped_ids = {sid for sid, _ in skipped}
        with EmbeddingWriter(out_h5, encoder.dim, attrs) as writer:
            keep = [i for i in range(len(ids)) if ids[i] not in skipped_ids]
            writer.append([ids[i] for i in keep], rows[keep])
            for sid, reason in skipped:
                writer.skip(sid, reason)
    sidecar.remove()
    seconds = time.monotonic() - started
    stats = {"sequences": len(seqs), "tokens": sum(lengths), "padded_tokens": padded, "seconds": round(seconds, 3),
             "device": dev, "resumed": resumed, "skipped": len(skipped), "kind": kind}
    if stats_json:
        with atomic_open(stats_json) as handle:
            json.dump(stats, handle, indent=2)
    if log:
        log.info("embedded %d sequences (%d resumed from the sidecar, %d skipped) in %.1f s: %.1f seq/s, "
                 "%.0f tokens/s, padding %.1f%%", len(seqs), resumed, len(skipped), seconds,
                 (len(seqs) - resumed) / max(seconds, 1e-9), sum(lengths) / max(seconds, 1e-9),
                 100 * (1 - sum(lengths) / max(padded, 1)))
    return stats


def _embed_with_split(encoder, tokens, batch, ids, fasta, on_error, skipped):
    """{index: vector} for a batch; halves it on out-of-memory, down to single sequences."""
    try:
        vectors = encoder.embed([tokens[i] for i in batch]).numpy()
        return dict(zip(batch, vectors))
    except (torch.OutOfMemoryError, RuntimeError) as error:
        if not _is_oom(error):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(batch) > 1:
            half = len(batch) // 2
            result = _embed_with_split(encoder, tokens, batch[:half], ids, fasta, on_error, skipped)
            result.update(_embed_with_split(encoder, tokens, batch[half:], ids, fasta, on_error, skipped))
            return result
        sid = ids[batch[0]]
        reason = f"out of memory alone ({len(tokens[batch[0]])} tokens)"
        if on_error == "skip":
            skipped.append((sid, reason))
            return {}
        raise ValidationError(
            f"{fasta}: sequence {sid} runs {reason}; lower the token budget, use a larger GPU, "
            "or set embed.on_error: skip to record it and go on"
        ) from None
