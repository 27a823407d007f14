"""The nucleotide encoder of the embed jobs: DNABERT-S features the VirNucPro way, in token-budgeted batches."""

import logging
from pathlib import Path

import torch

from ..errors import ModelError
from .batches import pack, pad
from .dnabert_s_pretrained import load_dnabert_s_module, load_tokenizer

log = logging.getLogger(__name__)


def load_dnabert_s(source_dir, device="cpu", dtype=torch.float32, attention="auto", name=None):
    """The DNABERT-S encoder of a folder in the published layout (zhihan1996/DNABERT-S)."""
    tokenizer = load_tokenizer(source_dir)
    model = load_dnabert_s_module(source_dir)
    if tokenizer.get_vocab_size() > model.embeddings.word_embeddings.num_embeddings:
        raise ModelError(f"{source_dir}: tokenizer.json has {tokenizer.get_vocab_size()} tokens, the model "
                         f"{model.embeddings.word_embeddings.num_embeddings}; tokenizer and weights do not match")
    return DnabertSEncoder(model, tokenizer, name or Path(source_dir).name, device, dtype, attention)


class DnabertSEncoder:
    """Embeds DNA the VirNucPro way: mean of the last hidden states over all tokens, [CLS] and
    [SEP] included, padding excluded. attention: 'padded', 'packed', or 'auto' (packed on CUDA)."""

    pooling = "mean of last hidden states over all tokens incl. [CLS]/[SEP]"

    def __init__(self, model, tokenizer, name, device="cpu", dtype=torch.float32, attention="auto"):
        if attention not in ("auto", "padded", "packed"):
            raise ModelError(f"attention {attention!r} is not one of auto, padded, packed")
        self.name = name
        self.dim = model.hidden
        # The published DNABERT-S tokenizer.json pads every sequence to 2000 tokens and cuts longer
        # ones; transformers switches both off for VirNucPro's plain tokenizer(seq) call, so do we.
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.dtype = dtype
        self.attention = ("packed" if self.device.type == "cuda" else "padded") if attention == "auto" else attention
        self.model = model.to(device=self.device, dtype=dtype)
        self.pad_id = tokenizer.token_to_id("[PAD]")
        if self.attention == "packed" and self.device.type == "cuda":
            self._check_packed()

    def _check_packed(self):
        """Compile the packed kernel now, so that a GPU or toolchain without it falls back to
        padded before any row is made (and the output's attributes say which one ran). Two token
        counts: the second call recompiles for dynamic shapes, which later batches then reuse."""
        try:
            self.embed([self.tokenize("ACGT" * 8), self.tokenize("GATTACA")])
            self.embed([self.tokenize("ACGT" * 40), self.tokenize("GATTACA" * 9), self.tokenize("CAT")])
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - any compiler failure
            log.warning("packed attention (compiled flex_attention) failed on %s: %s: %s; using padded attention",
                        self.device, type(exc).__name__, exc)
            self.attention = "padded"

    def tokenize(self, sequence):
        """VirNucPro's tokenizer(seq)["input_ids"]: [CLS] + BPE tokens + [SEP]."""
        return self.tokenizer.encode(sequence).ids

    @torch.inference_mode()
    def embed(self, batch):
        """batch: token-id lists -> (B, dim) float32 on CPU; a row does not depend on the others."""
        lengths = torch.tensor([len(ids) for ids in batch], device=self.device)
        if self.attention == "packed":
            tokens, cu_seqlens = pack(batch, self.device)
            hidden = self.model.forward_packed(tokens, cu_seqlens).float()  # (total tokens, dim)
            owner = torch.repeat_interleave(torch.arange(len(batch), device=self.device), lengths)
            sums = torch.zeros(len(batch), self.dim, device=self.device).index_add_(0, owner, hidden)
        else:
            tokens, mask = pad(batch, self.pad_id, self.device)
            hidden = self.model(tokens, mask).float()  # (B, tokens, dim)
            sums = (hidden * mask[:, :, None]).sum(1)
        return (sums / lengths[:, None]).cpu()
