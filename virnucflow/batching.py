"""Batching an embed job: the batch plan (`make_batches`: sorted by length, little padding), the
halving of a batch that runs out of memory (`BatchEmbedder`) and the progress line (`Progress`)."""

import logging
import time

import numpy as np
import torch

from .errors import InputError

log = logging.getLogger(__name__)


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
