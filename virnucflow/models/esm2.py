"""ESM-2 (Lin et al. 2022), the protein encoder, in plain PyTorch.

The module tree mirrors fair-esm's state-dict names (`embed_tokens`, `layers.N.self_attn.out_proj`,
`self_attn.rot_emb.inv_freq`, `self_attn_layer_norm`, `fc1`, `fc2`, `final_layer_norm`,
`emb_layer_norm_after`) with one exception: fair-esm's `q_proj`, `k_proj` and `v_proj` are one
Linear of 3x width here, `self_attn.qkv_proj` (rows [q | k | v]: one GEMM instead of three);
esm2_pretrained concatenates them when it loads a checkpoint. Any size (8M .. 15B): the layer
count, width and head count are an `Esm2Config`.

Two attention paths give the same numbers:
- padded: a (batch, tokens) matrix with a key-padding mask, through SDPA (CPU and GPU);
- packed: the batch as one row of tokens with sequence boundaries (a `Packing`), no padding;
  rotary positions restart at every sequence. On CUDA in fp16/bf16 the attention is
  FlashAttention's variable-length kernel (torch >= 2.10, head sizes it takes); everywhere else
  the same segments go through SDPA one sequence at a time, so packing, positions and boundaries
  are tested on CPU.
Neither reads a value back from the device: what depends on the lengths is built on the host.
`compile_layers()` compiles the work around the attention kernel (LayerNorms, projections,
rotary, GELU, residuals) into fused kernels, one graph shared by every layer and token count.
"""

import functools
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

MASK_RATIO_TRAIN = 0.15 * 0.8  # BERT-style masking: 15% of tokens chosen, 80% of those set to <mask>


@dataclass(frozen=True)
class Esm2Config:
    """ESM-2's size: 6 layers, 320 wide, 20 heads (8M) .. 48, 5120, 40 (15B); fair-esm's cfg spells them
    encoder_layers, encoder_embed_dim, encoder_attention_heads, Hugging Face's num_hidden_layers,
    hidden_size, num_attention_heads."""

    layers: int
    embed_dim: int
    heads: int
    token_dropout: bool = True
    layer_norm_eps: float = 1e-5

    @property
    def head_dim(self):
        return self.embed_dim // self.heads


def gelu(x):
    """Exact (erf) GELU, fair-esm's x * 0.5 * (1 + erf(x / sqrt(2))), in one kernel instead of five."""
    return F.gelu(x)


def rotary_frequencies(head_dim, base=10000.0):
    """The inverse frequencies of the rotary embedding, (head_dim / 2,) float32."""
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def apply_rotary(x, cos, sin):
    """fair-esm's x * cos + rotate_half(x) * sin, written per half: [x1 | x2] -> [x1 cos - x2 sin | x2 cos + x1 sin].
    x: (..., tokens, heads, head_dim); cos, sin: (tokens, 1, head_dim / 2). Eagerly two passes over x
    instead of five; in a compiled graph the plain formula, which the compiler fuses into one."""
    x1, x2 = x.chunk(2, dim=-1)
    if torch.compiler.is_compiling():
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    out1, out2 = out.chunk(2, dim=-1)
    torch.mul(x1, cos, out=out1).addcmul_(x2, sin, value=-1)
    torch.mul(x2, cos, out=out2).addcmul_(x1, sin)
    return out


@dataclass
class Packing:
    """Sequences back to back in one row: their boundaries, and each token's sequence and position.
    Built on the host from the lengths (`of`), then copied to the device (`to`)."""

    cu_seqlens: torch.Tensor  # (sequences + 1,) int32 offsets of the sequences
    segment: torch.Tensor  # (tokens,) int64: the sequence of each token
    positions: torch.Tensor  # (tokens,) int64: each token's index in its sequence (rotary restarts at 0)
    max_len: int  # the longest sequence
    bounds: tuple  # cu_seqlens as Python ints: attention one sequence at a time reads no device value

    @classmethod
    def of(cls, lengths):
        lengths = torch.as_tensor(lengths, dtype=torch.int64)
        cu = F.pad(lengths.cumsum(0), (1, 0))
        segment = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        positions = torch.arange(len(segment)) - cu[:-1][segment]
        return cls(cu.to(torch.int32), segment, positions, int(lengths.max()), tuple(cu.tolist()))

    def to(self, device, non_blocking=False):
        return replace(self, **{name: getattr(self, name).to(device, non_blocking=non_blocking)
                                for name in ("cu_seqlens", "segment", "positions")})

    def pin_memory(self):
        return replace(self, **{name: getattr(self, name).pin_memory() for name in ("cu_seqlens", "segment", "positions")})


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al.) applied to queries and keys.

    `inv_freq` is a buffer because the checkpoints carry it; it is used as loaded, as fair-esm
    does. Angles are computed in float32 whatever the model dtype: in bf16, position x frequency
    would be off by whole radians past position ~256 (bf16 keeps 8 significant bits). Their cos
    and sin are then rounded to the model dtype, in which the rotation itself runs.
    """

    def __init__(self, head_dim, init=True):
        super().__init__()
        self.register_buffer("inv_freq", rotary_frequencies(head_dim) if init else torch.empty(head_dim // 2))

    def forward(self, q, k, positions):
        # q, k: (..., tokens, heads, head_dim); positions: (tokens,)
        angles = positions.float()[:, None] * self.inv_freq.float()[None, :]  # (tokens, head_dim / 2)
        cos, sin = angles.cos().to(q.dtype)[:, None], angles.sin().to(q.dtype)[:, None]  # (tokens, 1, head_dim / 2)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)


@functools.cache
def flash_varlen():
    """torch's FlashAttention variable-length kernel (torch >= 2.10; CUDA, fp16/bf16) as
    f(q, k, v, cu_seqlens, max_len), scaled by head_dim ** -0.5, or None where torch has none."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return lambda q, k, v, cu, max_len: varlen_attn(q, k, v, cu, cu, max_len, max_len)


def flash_varlen_runs(device, dtype, head_dim):
    """Whether FlashAttention's variable-length kernel takes this work: CUDA, fp16/bf16, a torch that has
    it, and a head size that is a multiple of 8 of at most 256 (it fails on others)."""
    return (torch.device(device).type == "cuda" and dtype in (torch.float16, torch.bfloat16)
            and head_dim % 8 == 0 and head_dim <= 256 and flash_varlen() is not None)


def varlen_attention(q, k, v, packing):
    """Attention within each packed sequence. q, k, v: (tokens, heads, head_dim) -> (tokens, heads, head_dim)."""
    if flash_varlen_runs(q.device, q.dtype, q.shape[-1]):
        return flash_varlen()(q, k, v, packing.cu_seqlens, packing.max_len)
    # Reference path: the same segments through SDPA one sequence at a time.
    bounds = packing.bounds
    pieces = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        qs, ks, vs = (t[start:end].transpose(0, 1) for t in (q, k, v))  # (heads, length, head_dim)
        pieces.append(F.scaled_dot_product_attention(qs, ks, vs).transpose(0, 1))
    return torch.cat(pieces, dim=0)


def padded_attention(q, k, v, attend=None):
    """q, k, v: (batch, tokens, heads, head_dim); attend: (batch, 1, 1, tokens) True at real keys, or None."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (batch, heads, tokens, head_dim)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attend).transpose(1, 2)


class MultiheadAttention(nn.Module):
    def __init__(self, embed_dim, heads, init=True):
        super().__init__()
        self.heads = heads
        self.head_dim = embed_dim // heads
        self.qkv_proj = nn.Linear(embed_dim, 3 * embed_dim)  # fair-esm's q_proj, k_proj, v_proj stacked
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.rot_emb = RotaryEmbedding(self.head_dim, init)

    def qkv(self, x, positions):
        """Rotated queries and keys, and values, each (..., tokens, heads, head_dim), for x (..., tokens, dim).
        fair-esm scales q by head_dim ** -0.5 before the rotation; the rotation is linear, so the attention
        kernels' own default scale, the same factor, stands for it."""
        q, k, v = self.qkv_proj(x).unflatten(-1, (3, self.heads, self.head_dim)).unbind(-3)
        q, k = self.rot_emb(q, k, positions)
        return q, k, v

    def forward(self, x, positions, attention):
        """attention: f(q, k, v) -> (..., tokens, heads, head_dim), padded or packed (see ESM2)."""
        return self.out_proj(attention(*self.qkv(x, positions)).flatten(-2))


class TransformerLayer(nn.Module):
    """Pre-LayerNorm block: attention, then a GELU MLP of 4x width, each added to the residual."""

    def __init__(self, embed_dim, ffn_dim, heads, layer_norm_eps=1e-5, init=True):
        super().__init__()
        self.self_attn = MultiheadAttention(embed_dim, heads, init)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)

    def forward(self, x, positions, attention):
        return self.attention_output(x, attention(*self.attention_inputs(x, positions)))

    # The layer around its attention kernel, in two steps that ESM2.compile_layers() can compile.
    def attention_inputs(self, x, positions):
        return self.self_attn.qkv(self.self_attn_layer_norm(x), positions)

    def attention_output(self, x, attended):
        x = x + self.self_attn.out_proj(attended.flatten(-2))
        return x + self.fc2(gelu(self.fc1(self.final_layer_norm(x))))


class ESM2(nn.Module):
    """init=False: no values in the embedding and the rotary buffers, for a checkpoint to fill (built
    on the meta device, then load_state_dict(assign=True)). On meta, nn.Embedding's normal_ and the
    frequencies' arange have no native kernel and would import torch's compiler stack: ~1 s per job."""

    def __init__(self, config, alphabet_size=33, padding_idx=1, mask_idx=32, init=True):
        super().__init__()
        self.config = config
        self.embed_dim = config.embed_dim
        self.padding_idx = padding_idx
        self.mask_idx = mask_idx
        self.token_dropout = config.token_dropout
        self.embed_tokens = nn.Embedding(alphabet_size, config.embed_dim, padding_idx=padding_idx,
                                         _weight=None if init else torch.empty(alphabet_size, config.embed_dim))
        self.layers = nn.ModuleList(
            [TransformerLayer(config.embed_dim, 4 * config.embed_dim, config.heads, config.layer_norm_eps, init)
             for _ in range(config.layers)]
        )
        self.emb_layer_norm_after = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.layer_steps = (TransformerLayer.attention_inputs, TransformerLayer.attention_output)

    def compile_layers(self, enable=True):
        """The two steps of every layer through torch.compile with dynamic token counts (one graph each,
        shared by all layers: the layer is an argument), or back to eager with enable=False. Compiling
        happens at the first forward; a toolchain that cannot compile fails there."""
        steps = (TransformerLayer.attention_inputs, TransformerLayer.attention_output)
        self.layer_steps = tuple(torch.compile(step, dynamic=True) for step in steps) if enable else steps

    def _embed(self, tokens, masked_fraction):
        """Token embeddings; masked_fraction: the share of <mask> among each token's sequence, broadcastable to tokens."""
        x = self.embed_tokens(tokens)
        if self.token_dropout:
            # Training zeroed <mask> embeddings on 12% of tokens; fair-esm zeroes them at inference too
            # and rescales the rest by (1 - 0.12) / (1 - observed share), i.e. by 0.88 without masks.
            x = x.masked_fill(tokens.eq(self.mask_idx).unsqueeze(-1), 0.0)
            x = x * ((1 - MASK_RATIO_TRAIN) / (1 - masked_fraction)).unsqueeze(-1).to(x.dtype)
        return x

    def _encode(self, x, repr_layer, positions, attention):
        repr_layer = self.config.layers if repr_layer is None else repr_layer
        attention_inputs, attention_output = self.layer_steps
        for layer in self.layers[:repr_layer]:
            x = attention_output(layer, x, attention(*attention_inputs(layer, x, positions)))
        # The last layer's representation is taken after the final LayerNorm; earlier ones are raw (as fair-esm's repr_layers).
        return self.emb_layer_norm_after(x) if repr_layer == self.config.layers else x

    def forward(self, tokens, repr_layer=None, padded=None):
        """Hidden states of `repr_layer` (0 = embeddings; default: the last layer, after the final
        LayerNorm). tokens: (batch, tokens), padded with padding_idx -> (batch, tokens, dim).
        padded: whether any row has padding, where the caller knows (None: read from the device)."""
        padding_mask = tokens.eq(self.padding_idx)  # (batch, tokens)
        if padded is None:
            padded = bool(padding_mask.any())
        masked = tokens.eq(self.mask_idx).sum(-1) / (~padding_mask).sum(-1)  # (batch,)
        x = self._embed(tokens, masked[:, None])
        x = x * (~padding_mask).unsqueeze(-1).to(x.dtype)  # padding embeddings are zero, as fair-esm
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        attend = ~padding_mask[:, None, None, :] if padded else None  # (batch, 1, 1, tokens), True = attend
        return self._encode(x, repr_layer, positions, functools.partial(padded_attention, attend=attend))

    def forward_packed(self, tokens, packing, repr_layer=None):
        """The same for sequences packed back to back, no padding. tokens: (total,) -> (total, dim);
        packing: where the sequences are (a Packing on the tokens' device)."""
        lengths = (packing.cu_seqlens[1:] - packing.cu_seqlens[:-1]).float()
        masked_count = torch.zeros(len(lengths), device=tokens.device).index_add_(
            0, packing.segment, tokens.eq(self.mask_idx).float())
        x = self._embed(tokens, (masked_count / lengths)[packing.segment])
        return self._encode(x, repr_layer, packing.positions, functools.partial(varlen_attention, packing=packing))
