"""The protein encoder of the embed jobs: ESM-2 features the VirNucPro way, in token-budgeted batches
(`embed`, `prepare`, `embed_prepared`: see BatchedEncoder)."""

from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import ModelError
from .packing import BatchedEncoder, pack, pad, pinned
from .esm2 import Packing, flash_varlen_runs
from .esm2_alphabet import PAD, tokenize
from .esm2_pretrained import load_esm2_module

POOL_MAX_RESIDUES = 1024  # VirNucPro averages residues 1..min(L, 1024); the model still sees all of them
# Compiled at several token counts (the later ones reuse the dynamic graph); a batch of one is a graph of its own.
COMPILE_WARM_UP = (["MKTAYIAKQRQISFVK", "GAVL"], ["MKTAYIAKQRQISFVKSHFSRQ" * 3, "MW" * 9, "W"], ["MKV"])


def load_esm2(source, device="cpu", dtype=torch.float32, layer=None, attention="auto", name=None,
              compile_layers=False):
    """An Esm2Encoder for a fair-esm .pt file or a Hugging Face ESM-2 folder."""
    model = load_esm2_module(source, dtype=dtype)
    source = Path(source)
    name = name or (source.stem if source.is_file() else source.name)
    return Esm2Encoder(model, name, device=device, dtype=dtype, layer=layer, attention=attention,
                       compile_layers=compile_layers)


@dataclass
class PreparedBatch:
    """A batch's model input and pooling indices, made on the host (see `Esm2Encoder.prepare`)."""

    tokens: torch.Tensor  # int64: packed (total,) or padded (B, T)
    packing: Packing | None  # packed: where the sequences are; None when padded
    padded: bool  # padded: whether any row is shorter than the widest
    pool_rows: torch.Tensor  # (kept,) rows of the model output (flattened) that the pooling averages
    pool_cells: torch.Tensor  # (kept,) their cells in a (B * width) grid
    residues: torch.Tensor  # (B,) float32: residues averaged per sequence, min(L - 2, 1024)
    width: int  # the most residues averaged for one sequence

    def to(self, device):
        tensors = {name: getattr(self, name).to(device, non_blocking=True)
                   for name in ("tokens", "pool_rows", "pool_cells", "residues")}
        packing = None if self.packing is None else self.packing.to(device, non_blocking=True)
        return replace(self, packing=packing, **tensors)


class Esm2Encoder(BatchedEncoder):
    """Embeds proteins the VirNucPro way: the representation of one layer (default: the last,
    after the final LayerNorm), averaged over residues 1..min(L, 1024); BOS, EOS, padding excluded.
    compile_layers: torch.compile the layers (ESM2.compile_layers); without a working compiler the
    encoder says so in the log and runs them eagerly (`.compiled` tells which).
    attention: 'padded', 'packed', or 'auto' (packed where FlashAttention's variable-length kernel takes
    the work: CUDA, fp16/bf16, a head size that is a multiple of 8 up to 256). An explicit 'packed' stays:
    where that kernel does not run, its attention goes one sequence at a time (right, but slow)."""

    packed_when_auto = staticmethod(flash_varlen_runs)

    def __init__(self, model, name, device="cpu", dtype=torch.float32, layer=None, attention="auto",
                 compile_layers=False):
        self.name = str(name)
        self.revision = "unknown"  # set by models.resolve from the snapshot or the file digest
        self.dim = model.embed_dim
        self.layer = _resolve_layer(layer, model.config.layers)
        self.device = torch.device(device)
        self.dtype = dtype
        self.attention = self.choose_attention(attention, self.device, dtype, model.config.head_dim)
        for param in model.parameters():  # weights to `dtype`; the rotary buffers stay float32
            param.data = param.data.to(dtype)
        self.model = model.to(self.device).eval()
        self.pooling = f"mean of layer {self.layer} over residues 1..min(L,{POOL_MAX_RESIDUES})"
        if compile_layers:
            self.model.compile_layers()
            self.compiled = self.compile_or_fall_back("compiled layers (torch.compile)", COMPILE_WARM_UP,
                                                      self._eager_layers)

    def _eager_layers(self):
        self.model.compile_layers(False)
        return "running them eagerly"

    def tokenize(self, sequence):
        return tokenize(sequence)

    def prepare(self, batch):
        """A PreparedBatch for a list of token-id lists: host work only (page-locked for a GPU)."""
        lengths = [len(ids) for ids in batch]
        if min(lengths) < 3:
            raise ValueError("a protein needs at least one residue between <cls> and <eos>")
        residues = (torch.tensor(lengths) - 2).clamp(max=POOL_MAX_RESIDUES)
        if self.attention == "packed":
            tokens, _ = pack(batch)
            packing = Packing.of(lengths)
            offsets = torch.tensor(packing.bounds[:-1])
        else:
            tokens, _ = pad(batch, PAD)
            packing = None
            offsets = torch.arange(len(batch)) * tokens.shape[1]
        rows, cells, width = _pooling_indices(offsets, residues)
        if self.device.type == "cuda" and packing is not None:
            packing = packing.pin_memory()
        tokens, rows, cells, residues = (pinned(t, self.device) for t in (tokens, rows, cells, residues.float()))
        return PreparedBatch(tokens, packing, min(lengths) != max(lengths), rows, cells, residues, width)

    @torch.inference_mode()
    def pooled(self, prepared):
        """(B, dim) float32 on the model's device, queued without reading anything back from it."""
        inputs = prepared.to(self.device)
        if inputs.packing is not None:
            hidden = self.model.forward_packed(inputs.tokens, inputs.packing, self.layer)  # (total, dim)
        else:
            hidden = self.model(inputs.tokens, self.layer, padded=inputs.padded).flatten(0, 1)  # (B * T, dim)
        return _pool(hidden, inputs)


def _resolve_layer(layer, layers):
    """None -> the last layer; negative counts from the end as in fair-esm's extract.py (-1 = last)."""
    if layer is None:
        return layers
    resolved = layer + layers + 1 if layer < 0 else layer
    if not 0 <= resolved <= layers:
        raise ModelError(f"layer {layer} does not exist: this ESM-2 has layers 0..{layers}")
    return resolved


def _pooling_indices(offsets, residues):
    """For sequences whose rows start at `offsets` of the flattened output: the rows VirNucPro averages
    (offset + 1 .. offset + residues) and their cells in a (B, width) grid, width = the most residues."""
    sequence = torch.repeat_interleave(torch.arange(len(residues)), residues)  # (kept,)
    within = torch.arange(len(sequence)) - F.pad(residues.cumsum(0), (1, 0))[sequence]  # 0 .. residues - 1
    width = int(residues.max())
    return offsets[sequence] + 1 + within, sequence * width + within, width


def _pool(hidden, inputs):
    """VirNucPro's pooling: per sequence, the mean of its rows at positions 1..residues -> (B, dim) float32.

    The kept rows are laid out as (B, width, dim) and summed with torch's pairwise sum, as fair-esm's
    `.mean(0)`: a plain running sum over 1024 similar rows drifts by 1e-5. Batches are token-budgeted,
    so the grid is no larger than the batch itself.
    """
    sequences = len(inputs.residues)
    grid = torch.zeros((sequences * inputs.width, hidden.shape[-1]), device=hidden.device)
    grid.index_copy_(0, inputs.pool_cells, hidden.index_select(0, inputs.pool_rows).float())
    return grid.view(sequences, inputs.width, -1).sum(1) / inputs.residues[:, None]
