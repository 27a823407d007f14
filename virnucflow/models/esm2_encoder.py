"""The protein encoder of the embed jobs: ESM-2 features the VirNucPro way, in token-budgeted batches."""

from pathlib import Path

import torch

from ..errors import ModelError
from .batches import pack, pad
from .esm2 import flash_varlen, packed_positions
from .esm2_alphabet import PAD, tokenize
from .esm2_pretrained import load_esm2_module

POOL_MAX_RESIDUES = 1024  # VirNucPro averages residues 1..min(L, 1024); the model still sees all of them


def load_esm2(source, device="cpu", dtype=torch.float32, layer=None, attention="auto", name=None):
    """An Esm2Encoder for a fair-esm .pt file or a Hugging Face ESM-2 folder."""
    model = load_esm2_module(source, dtype=dtype)
    source = Path(source)
    name = name or (source.stem if source.is_file() else source.name)
    return Esm2Encoder(model, name, device=device, dtype=dtype, layer=layer, attention=attention)


class Esm2Encoder:
    """Embeds proteins the VirNucPro way: the representation of one layer (default: the last,
    after the final LayerNorm), averaged over residues 1..min(L, 1024); BOS, EOS, padding excluded."""

    def __init__(self, model, name, device="cpu", dtype=torch.float32, layer=None, attention="auto"):
        self.name = str(name)
        self.revision = "unknown"  # set by models.resolve from the snapshot or the file digest
        self.dim = model.embed_dim
        self.layer = _resolve_layer(layer, model.num_layers)
        self.device = torch.device(device)
        self.dtype = dtype
        if attention == "auto":
            flash = self.device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and flash_varlen()
            attention = "packed" if flash else "padded"
        if attention not in ("padded", "packed"):
            raise ValueError(f"attention must be 'auto', 'padded' or 'packed', not {attention!r}")
        self.attention = attention
        for param in model.parameters():  # weights to `dtype`; the rotary buffers stay float32
            param.data = param.data.to(dtype)
        self.model = model.to(self.device).eval()
        self.pooling = f"mean of layer {self.layer} over residues 1..min(L,{POOL_MAX_RESIDUES})"

    def tokenize(self, sequence):
        return tokenize(sequence)

    @torch.inference_mode()
    def embed(self, batch):
        """(B, dim) float32 on CPU for a list of token-id lists (from `tokenize`)."""
        lengths = torch.tensor([len(ids) for ids in batch], device=self.device)
        if bool((lengths < 3).any()):
            raise ValueError("a protein needs at least one residue between <cls> and <eos>")
        residues = (lengths - 2).clamp(max=POOL_MAX_RESIDUES)
        if self.attention == "packed":
            tokens, cu_seqlens = pack(batch, self.device)
            hidden = self.model.forward_packed(tokens, cu_seqlens, max(len(ids) for ids in batch), self.layer)
            segment, position = packed_positions(cu_seqlens)  # (total,) each
        else:
            tokens, _ = pad(batch, PAD, self.device)
            batch_size, width = tokens.shape
            hidden = self.model(tokens, self.layer).flatten(0, 1)  # (batch * width, dim), row by row
            segment = torch.arange(batch_size, device=self.device).repeat_interleave(width)
            position = torch.arange(width, device=self.device).repeat(batch_size)
        return _pool(hidden, segment, position, residues).cpu()


def _resolve_layer(layer, num_layers):
    """None -> the last layer; negative counts from the end as in fair-esm's extract.py (-1 = last)."""
    if layer is None:
        return num_layers
    resolved = layer + num_layers + 1 if layer < 0 else layer
    if not 0 <= resolved <= num_layers:
        raise ModelError(f"layer {layer} does not exist: this ESM-2 has layers 0..{num_layers}")
    return resolved


def _pool(hidden, segment, position, residues):
    """VirNucPro's pooling: per sequence, the mean of its rows at positions 1..residues.

    hidden (rows, dim); segment, position (rows,): the sequence of each row and its index in it;
    residues (B,): min(L, 1024) per sequence -> (B, dim) float32. The kept rows are laid out as
    (B, max residues, dim) and summed with torch's pairwise sum, as fair-esm's `.mean(0)`: a plain
    running sum over 1024 similar rows drifts by 1e-5. Batches are token-budgeted, so the grid is
    no larger than the batch itself.
    """
    keep = (position >= 1) & (position <= residues[segment])
    grid = torch.zeros((len(residues), int(residues.max()), hidden.shape[-1]), device=hidden.device)
    grid[segment[keep], position[keep] - 1] = hidden[keep].float()
    return grid.sum(1) / residues[:, None]
