"""Token-id lists -> model inputs on the host, packed (no padding) or padded, and the rows of a batch
on their way back from the device. Shared by both encoders.

An encoder's `prepare(batch)` builds everything that depends on the lengths here, on the host (in
page-locked memory when the model is on a GPU), so that `embed_prepared` copies it asynchronously
and the forward never waits for a value from the device; `PendingRows.result()` is the one wait.
"""

import itertools

import numpy as np
import torch


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
    the encoder's `prepare` (host work) behind the previous one; `pooled` (the device work) is theirs."""

    def embed(self, batch):
        """(B, dim) float32 on the CPU for a list of token-id lists (from `tokenize`); a row does not
        depend on the others."""
        return self.embed_prepared(self.prepare(batch)).result()

    @torch.inference_mode()
    def embed_prepared(self, prepared):
        """Queue a prepared batch: its copy to the device, the model and the pooling -> PendingRows."""
        return PendingRows(self.pooled(prepared))
