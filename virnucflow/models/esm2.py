"""ESM-2 (Lin et al. 2022), the protein encoder, in plain PyTorch.

The module tree mirrors fair-esm's state-dict names (`embed_tokens`, `layers.N.self_attn.q_proj`,
`self_attn.rot_emb.inv_freq`, `self_attn_layer_norm`, `fc1`, `fc2`, `final_layer_norm`,
`emb_layer_norm_after`), so a fair-esm checkpoint loads with a plain `load_state_dict` once its
prefixes are stripped. Any size (8M .. 15B): the layer count, width and head count are arguments.

Two attention paths give the same numbers:
- padded: a (batch, tokens) matrix with a key-padding mask, through SDPA (CPU and GPU);
- packed: the batch as one row of tokens with sequence boundaries (cu_seqlens), no padding;
  rotary positions restart at every sequence. On CUDA in fp16/bf16 the attention is
  FlashAttention's variable-length kernel (torch >= 2.10; older torch chooses padded); everywhere
  else the same segments go through SDPA one sequence at a time, so packing, positions and
  boundaries are tested on CPU.
"""

import functools
import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

MASK_RATIO_TRAIN = 0.15 * 0.8  # BERT-style masking: 15% of tokens chosen, 80% of those set to <mask>


def gelu(x):
    """Exact (erf) GELU, as fair-esm."""
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def rotary_frequencies(head_dim, base=10000.0):
    """The inverse frequencies of the rotary embedding, (head_dim / 2,) float32."""
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def packed_positions(cu_seqlens):
    """(segment, position) of every packed token: which sequence it belongs to, and its index in it."""
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    segment = torch.repeat_interleave(torch.arange(len(lengths), device=cu_seqlens.device), lengths)
    position = torch.arange(int(cu_seqlens[-1]), device=cu_seqlens.device) - cu_seqlens[:-1].long()[segment]
    return segment, position


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al.) applied to queries and keys.

    `inv_freq` is a buffer because the checkpoints carry it; it is used as loaded, as fair-esm
    does. Angles are computed in float32 whatever the model dtype: in bf16, position x frequency
    would be off by whole radians past position ~256 (bf16 keeps 8 significant bits).
    """

    def __init__(self, head_dim, init=True):
        super().__init__()
        self.register_buffer("inv_freq", rotary_frequencies(head_dim) if init else torch.empty(head_dim // 2))

    def forward(self, q, k, positions):
        # q, k: (..., tokens, heads, head_dim); positions: (tokens,)
        angles = positions.float()[:, None] * self.inv_freq.float()[None, :]  # (tokens, head_dim / 2)
        angles = torch.cat((angles, angles), dim=-1)[:, None, :]  # (tokens, 1, head_dim)
        cos, sin = angles.cos().to(q.dtype), angles.sin().to(q.dtype)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


@functools.cache
def flash_varlen():
    """torch's FlashAttention variable-length kernel (torch >= 2.10; CUDA, fp16/bf16) as
    f(q, k, v, cu_seqlens, max_len) for a pre-scaled q, or None where torch has none."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    if "scale" in inspect.signature(varlen_attn).parameters:
        return lambda q, k, v, cu, max_len: varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=1.0)
    # torch 2.10's varlen_attn has no `scale` and applies head_dim ** -0.5, which q already carries
    return lambda q, k, v, cu, max_len: varlen_attn(q * q.shape[-1] ** 0.5, k, v, cu, cu, max_len, max_len)


def varlen_attention(q, k, v, cu_seqlens, max_len):
    """Attention within each packed sequence [cu[i], cu[i+1]). q, k, v: (tokens, heads, head_dim), q pre-scaled."""
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and flash_varlen():
        return flash_varlen()(q, k, v, cu_seqlens, max_len)
    # Reference path: the same segments through SDPA one sequence at a time.
    bounds = cu_seqlens.tolist()
    pieces = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        qs, ks, vs = (t[start:end].transpose(0, 1) for t in (q, k, v))  # (heads, length, head_dim)
        pieces.append(F.scaled_dot_product_attention(qs, ks, vs, scale=1.0).transpose(0, 1))
    return torch.cat(pieces, dim=0)


class MultiheadAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, init=True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.rot_emb = RotaryEmbedding(self.head_dim, init)

    def forward(self, x, positions, padding_mask=None, cu_seqlens=None, max_len=None):
        """Padded: x (batch, tokens, dim), positions (tokens,), padding_mask (batch, tokens) True at
        padding or None. Packed: x (tokens, dim), positions (tokens,), cu_seqlens (sequences + 1,)."""
        # fair-esm scales q before the rotation; the rotation is linear, so only the order is copied.
        q = self.q_proj(x) * self.scaling
        k, v = self.k_proj(x), self.v_proj(x)
        q, k, v = (t.unflatten(-1, (self.num_heads, self.head_dim)) for t in (q, k, v))  # (..., tokens, heads, head_dim)
        q, k = self.rot_emb(q, k, positions)
        if cu_seqlens is not None:
            out = varlen_attention(q, k, v, cu_seqlens, max_len)  # (tokens, heads, head_dim)
        else:
            mask = None if padding_mask is None else ~padding_mask[:, None, None, :]  # (batch, 1, 1, tokens), True = attend
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (batch, heads, tokens, head_dim)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0).transpose(1, 2)
        return self.out_proj(out.flatten(-2))


class TransformerLayer(nn.Module):
    """Pre-LayerNorm block: attention, then a GELU MLP of 4x width, each added to the residual."""

    def __init__(self, embed_dim, ffn_dim, num_heads, layer_norm_eps=1e-5, init=True):
        super().__init__()
        self.self_attn = MultiheadAttention(embed_dim, num_heads, init)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)

    def forward(self, x, **attention):
        x = x + self.self_attn(self.self_attn_layer_norm(x), **attention)
        return x + self.fc2(gelu(self.fc1(self.final_layer_norm(x))))


class ESM2(nn.Module):
    """init=False: no values in the embedding and the rotary buffers, for a checkpoint to fill (built
    on the meta device, then load_state_dict(assign=True)). On meta, nn.Embedding's normal_ and the
    frequencies' arange have no native kernel and would import torch's compiler stack: ~1 s per job."""

    def __init__(self, num_layers, embed_dim, attention_heads, alphabet_size=33, padding_idx=1, mask_idx=32,
                 token_dropout=True, layer_norm_eps=1e-5, init=True):
        super().__init__()
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.attention_heads = attention_heads
        self.padding_idx = padding_idx
        self.mask_idx = mask_idx
        self.token_dropout = token_dropout
        self.embed_tokens = nn.Embedding(alphabet_size, embed_dim, padding_idx=padding_idx,
                                         _weight=None if init else torch.empty(alphabet_size, embed_dim))
        self.layers = nn.ModuleList(
            [TransformerLayer(embed_dim, 4 * embed_dim, attention_heads, layer_norm_eps, init)
             for _ in range(num_layers)]
        )
        self.emb_layer_norm_after = nn.LayerNorm(embed_dim, eps=layer_norm_eps)

    def _embed(self, tokens, masked_fraction):
        """Token embeddings; masked_fraction: the share of <mask> among each token's sequence, broadcastable to tokens."""
        x = self.embed_tokens(tokens)
        if self.token_dropout:
            # Training zeroed <mask> embeddings on 12% of tokens; fair-esm zeroes them at inference too
            # and rescales the rest by (1 - 0.12) / (1 - observed share), i.e. by 0.88 without masks.
            x = x.masked_fill(tokens.eq(self.mask_idx).unsqueeze(-1), 0.0)
            x = x * ((1 - MASK_RATIO_TRAIN) / (1 - masked_fraction)).unsqueeze(-1).to(x.dtype)
        return x

    def _encode(self, x, repr_layer, **attention):
        repr_layer = self.num_layers if repr_layer is None else repr_layer
        for layer in self.layers[:repr_layer]:
            x = layer(x, **attention)
        # The last layer's representation is taken after the final LayerNorm; earlier ones are raw (as fair-esm's repr_layers).
        return self.emb_layer_norm_after(x) if repr_layer == self.num_layers else x

    def forward(self, tokens, repr_layer=None):
        """Hidden states of `repr_layer` (0 = embeddings; default: the last layer, after the final
        LayerNorm). tokens: (batch, tokens), padded with padding_idx -> (batch, tokens, dim)."""
        padding_mask = tokens.eq(self.padding_idx)  # (batch, tokens)
        masked = tokens.eq(self.mask_idx).sum(-1) / (~padding_mask).sum(-1)  # (batch,)
        x = self._embed(tokens, masked[:, None])
        x = x * (~padding_mask).unsqueeze(-1).to(x.dtype)  # padding embeddings are zero, as fair-esm
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self._encode(x, repr_layer, positions=positions, padding_mask=padding_mask if padding_mask.any() else None)

    def forward_packed(self, tokens, cu_seqlens, max_len, repr_layer=None):
        """The same for sequences packed back to back, no padding. tokens: (total,) -> (total, dim);
        cu_seqlens: (sequences + 1,) int32 boundaries; max_len: the longest sequence."""
        segment, positions = packed_positions(cu_seqlens)  # positions restart at 0 for every sequence
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
        masked_count = torch.zeros(len(lengths), device=tokens.device).index_add_(0, segment, tokens.eq(self.mask_idx).float())
        x = self._embed(tokens, (masked_count / lengths)[segment])
        return self._encode(x, repr_layer, positions=positions, cu_seqlens=cu_seqlens, max_len=max_len)
