"""Token-id lists -> model inputs on the host, packed (no padding) or padded, and the rows of a batch
on their way back from the device. Shared by both encoders.

An encoder's `prepare(batch)` builds everything that depends on the lengths here, on the host (in
page-locked memory when the model is on a GPU), so that `embed_prepared` copies it asynchronously
and the forward never waits for a value from the device; `PendingRows.result()` is the one wait.
"""

import itertools
import logging

import numpy as np
import torch

from ..errors import ModelError

log = logging.getLogger(__name__)


def pack(batch):
    """(tokens (total,) int64, lengths (B,) int64) on the host: the sequences back to back."""
    lengths = np.fromiter(map(len, batch), dtype=np.int64, count=len(batch))
    tokens = np.fromiter(itertools.chain.from_iterable(batch), dtype=np.int64, count=int(lengths.sum()))
    return torch.from_numpy(tokens), torch.from_numpy(lengths)


def pad(batch, pad_id):
    """(tokens (B, T) int64, mask (B, T) int64 with 1 at real tokens) on the host, T the longest sequence."""
    flat, lengths = pack(batch)
    real = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]  # (B, T)
    tokens = torch.full(real.shape, pad_id, dtype=torch.int64)
    tokens[real] = flat  # row by row, as the sequences follow each other in `flat`
    return tokens, real.long()


def pinned(tensor, device):
    """`tensor` in page-locked memory when it is bound for a GPU: its copy there is then asynchronous."""
    return tensor.pin_memory() if torch.device(device).type == "cuda" else tensor


class PendingRows:
    """A batch's pooled rows, (B, dim) float32, being computed on the device. On a GPU they are copied
    to page-locked host memory behind the batch's work; `result()` waits for this batch only."""

    def __init__(self, rows):
        if rows.is_cuda:
            self._rows = torch.empty(rows.shape, dtype=rows.dtype, pin_memory=True)
            self._rows.copy_(rows, non_blocking=True)
            self._done = torch.cuda.Event()
            self._done.record()
        else:
            self._rows, self._done = rows.cpu(), None

    def result(self):
        """The rows, (B, dim) float32 on the CPU."""
        if self._done is not None:
            self._done.synchronize()
        return self._rows


class BatchedEncoder:
    """What both encoders share: `embed` for a batch at once, `embed_prepared` to queue a batch made by
    the encoder's `prepare` (host work) behind the previous one; `pooled` (the device work) is theirs;
    the attention choice and the compile-or-fall-back check, each with the encoder's own rule."""

    ATTENTIONS = ("auto", "padded", "packed")
    compiled = False

    @staticmethod
    def packed_when_auto(device, dtype, head_dim):
        """The encoder's rule: whether 'auto' attention is 'packed' for this work (else 'padded')."""
        return False

    @classmethod
    def choose_attention(cls, attention, device, dtype, head_dim):
        """'auto' -> 'packed' where the encoder's `packed_when_auto` says so, else 'padded'; an explicit
        'padded' or 'packed' stays."""
        if attention not in cls.ATTENTIONS:
            raise ModelError(f"attention {attention!r} is not one of {', '.join(cls.ATTENTIONS)}")
        if attention != "auto":
            return attention
        return "packed" if cls.packed_when_auto(device, dtype, head_dim) else "padded"

    def compile_or_fall_back(self, what, warm_up, fall_back):
        """Embed the `warm_up` sequences (batches of strings) now, so that a toolchain or GPU that cannot run
        the compiled parts fails here, before any row is made; then `fall_back()` undoes them and returns
        what runs instead, for the log. Whether the compiled parts run."""
        try:
            for batch in warm_up:
                self.embed([self.tokenize(sequence) for sequence in batch])
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - any compiler failure
            reason = (str(exc).strip().splitlines() or [""])[0][:300]
            log.warning("%s failed on %s: %s: %s; %s", what, self.device, type(exc).__name__, reason, fall_back())
            return False
        return True

    def embed(self, batch):
        """(B, dim) float32 on the CPU for a list of token-id lists (from `tokenize`); a row does not
        depend on the others."""
        return self.embed_prepared(self.prepare(batch)).result()

    @torch.inference_mode()
    def embed_prepared(self, prepared):
        """Queue a prepared batch: its copy to the device, the model and the pooling -> PendingRows."""
        return PendingRows(self.pooled(prepared))
