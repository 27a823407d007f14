"""The nucleotide encoder of the embed jobs: DNABERT-S features the VirNucPro way, in token-budgeted batches
(`embed`, `prepare`, `embed_prepared`: see BatchedEncoder)."""

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..errors import ModelError
from .packing import BatchedEncoder, pack, pad, pinned
from .dnabert_s_pretrained import load_dnabert_s_module, load_tokenizer

# Two token counts: the second one compiles for dynamic shapes, which later batches then reuse.
COMPILE_WARM_UP = (["ACGT" * 8, "GATTACA"], ["ACGT" * 40, "GATTACA" * 9, "CAT"])


def load_dnabert_s(source_dir, device="cpu", dtype=torch.float32, attention="auto", name=None, compile_layers=False):
    """The DNABERT-S encoder of a folder in the published layout (zhihan1996/DNABERT-S)."""
    tokenizer = load_tokenizer(source_dir)
    model = load_dnabert_s_module(source_dir)
    if tokenizer.get_vocab_size() > model.embeddings.word_embeddings.num_embeddings:
        raise ModelError(f"{source_dir}: tokenizer.json has {tokenizer.get_vocab_size()} tokens, the model "
                         f"{model.embeddings.word_embeddings.num_embeddings}; tokenizer and weights do not match")
    return DnabertSEncoder(model, tokenizer, name or Path(source_dir).name, device, dtype, attention, compile_layers)


@dataclass
class PreparedBatch:
    """A batch's model input, made on the host (see `DnabertSEncoder.prepare`)."""

    tokens: torch.Tensor  # int64: padded (B, T) or packed (total,)
    mask: torch.Tensor | None  # padded: (B, T) int64, 1 at real tokens
    cu_seqlens: torch.Tensor | None  # packed: (B + 1,) int32 offsets
    owner: torch.Tensor | None  # packed: (total,) int64, the sequence of each token
    lengths: torch.Tensor  # (B,) float32 tokens per sequence

    def to(self, device):
        return replace(self, **{name: None if value is None else value.to(device, non_blocking=True)
                                for name, value in vars(self).items()})


class DnabertSEncoder(BatchedEncoder):
    """Embeds DNA the VirNucPro way: mean of the last hidden states over all tokens, [CLS] and
    [SEP] included, padding excluded. attention: 'padded', 'packed', or 'auto' (padded on every device:
    SDPA with the ALiBi bias needs no compiler and was the faster one, BENCHMARKS.md). compile_layers:
    torch.compile the layers (DNABERTS.compile_layers); without a working compiler the encoder says so
    in the log and runs them eagerly (`.compiled` tells which)."""

    pooling = "mean of last hidden states over all tokens incl. [CLS]/[SEP]"
    packed_when_auto = staticmethod(lambda device, dtype, head_dim: False)

    def __init__(self, model, tokenizer, name, device="cpu", dtype=torch.float32, attention="auto",
                 compile_layers=False):
        self.name = name
        self.dim = model.hidden
        # The published DNABERT-S tokenizer.json pads every sequence to 2000 tokens and cuts longer
        # ones; transformers switches both off for VirNucPro's plain tokenizer(seq) call, so do we.
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.dtype = dtype
        self.attention = self.choose_attention(attention, self.device, dtype, model.config.hidden // model.config.heads)
        self.model = model.to(device=self.device, dtype=dtype)
        self.pad_id = tokenizer.token_to_id("[PAD]")
        if compile_layers:
            self.model.compile_layers()
        if compile_layers or (self.attention == "packed" and self.device.type == "cuda"):
            # Compiled now (the packed kernel on CUDA, the layers where asked): without them, padded
            # attention and eager layers run instead, and the output's attributes say which ran.
            compiles = self.compile_or_fall_back("compiling", COMPILE_WARM_UP, lambda: self._uncompiled(compile_layers))
            self.compiled = compile_layers and compiles

    def _uncompiled(self, compile_layers):
        instead = []
        if self.attention == "packed" and self.device.type == "cuda":
            self.attention = "padded"
            instead.append("padded attention (not packed: compiled flex_attention)")
        if compile_layers:
            self.model.compile_layers(False)
            instead.append("eager layers (not compiled)")
        return "using " + " and ".join(instead)

    def tokenize(self, sequence):
        """VirNucPro's tokenizer(seq)["input_ids"]: [CLS] + BPE tokens + [SEP]."""
        return self.tokenizer.encode(sequence).ids

    def prepare(self, batch):
        """A PreparedBatch for a list of token-id lists: host work only (page-locked for a GPU)."""
        if self.attention == "packed":
            tokens, lengths = pack(batch)
            mask = None
            cu_seqlens = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
            owner = torch.repeat_interleave(torch.arange(len(batch)), lengths)
        else:
            tokens, mask = pad(batch, self.pad_id)
            lengths, cu_seqlens, owner = mask.sum(1), None, None
        tensors = [None if t is None else pinned(t, self.device) for t in (tokens, mask, cu_seqlens, owner)]
        return PreparedBatch(*tensors, lengths=pinned(lengths.float(), self.device))

    @torch.inference_mode()
    def pooled(self, prepared):
        """(B, dim) float32 on the model's device, queued without reading anything back from it."""
        inputs = prepared.to(self.device)
        if inputs.cu_seqlens is not None:
            hidden = self.model.forward_packed(inputs.tokens, inputs.cu_seqlens).float()  # (total tokens, dim)
            sums = torch.zeros(len(inputs.lengths), self.dim, device=hidden.device).index_add_(0, inputs.owner, hidden)
        else:
            hidden = self.model(inputs.tokens, inputs.mask).float()  # (B, tokens, dim)
            sums = (hidden * inputs.mask[:, :, None]).sum(1)
        return sums / inputs.lengths[:, None]
