"""ESM-2 (Lin et al. 2022), the protein encoder, in plain PyTorch.

The module tree mirrors fair-esm's state-dict names (`embed_tokens`, `layers.N.self_attn.q_proj`,
`self_attn_layer_norm`, `fc1`, `fc2`, `final_layer_norm`, `emb_layer_norm_after`), so a fair-esm
checkpoint loads with a plain `load_state_dict` once its prefixes are stripped. Any size: the layer
count, width and head count come from the checkpoint.

Two attention paths give the same numbers: `padded` (a (batch, tokens) matrix with a key-padding
mask, through SDPA) and `packed` (the batch as one row of tokens with sequence boundaries, no
padding: FlashAttention's variable-length kernel on CUDA, a per-sequence SDPA loop elsewhere).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def gelu(x):
    """Exact (erf) GELU, as fair-esm."""
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding on query and key (Su et al.); positions restart at every sequence."""

    def __init__(self, dim):
        super().__init__()
        inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq)

    def forward(self, q, k, positions):
        # q, k: (..., tokens, head_dim); positions: (tokens,) or broadcastable to q's token axis
        freqs = positions.to(self.inv_freq.dtype)[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(q.dtype), emb.sin().to(q.dtype)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class MultiheadAttention(nn.Module):
    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.rot_emb = RotaryEmbedding(self.head_dim)

    def forward(self, x, padding_mask=None, cu_seqlens=None, max_len=None, positions=None):
        """x: (batch, tokens, dim) with padding_mask (batch, tokens), True at padding; or, packed,
        x: (tokens, dim) with cu_seqlens (sequences + 1,) and per-token positions."""
        packed = cu_seqlens is not None
        heads, head_dim = self.num_heads, self.head_dim
        # fair-esm scales q before the rotary embedding; rotation is linear, so this is only the order.
        q = self.q_proj(x) * self.scaling
        k, v = self.k_proj(x), self.v_proj(x)
        if packed:
            q, k, v = (t.view(-1, heads, head_dim).transpose(0, 1) for t in (q, k, v))  # (heads, tokens, head_dim)
            q, k = self.rot_emb(q, k, positions)
            out = varlen_attention(q, k, v, cu_seqlens, max_len)  # (heads, tokens, head_dim)
            out = out.transpose(0, 1).reshape(-1, heads * head_dim)
        else:
            batch, tokens, _ = x.shape
            q, k, v = (t.view(batch, tokens, heads, head_dim).transpose(1, 2) for t in (q, k, v))
            q, k = self.rot_emb(q, k, torch.arange(tokens, device=x.device))
            mask = None if padding_mask is None else ~padding_mask[:, None, None, :]  # True = attend
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
            out = out.transpose(1, 2).reshape(batch, tokens, heads * head_dim)
        return self.out_proj(out)


def varlen_attention(q, k, v, cu_seqlens, max_len):
    """Attention within each packed sequence. q, k, v: (heads, tokens, head_dim), q pre-scaled."""
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        from torch.nn.attention.varlen import varlen_attn

        out = varlen_attn(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), cu_seqlens, cu_seqlens,
                          max_len, max_len, scale=1.0)
        return out.transpose(0, 1)
    # Reference path (CPU, fp32): the same segments through SDPA one sequence at a time.
    bounds = cu_seqlens.tolist()
    pieces = [
        F.scaled_dot_product_attention(q[:, a:b], k[:, a:b], v[:, a:b], scale=1.0)
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    return torch.cat(pieces, dim=1)


class TransformerLayer(nn.Module):
    """Pre-LayerNorm block: attention then a GELU MLP of 4x width, each with a residual."""

    def __init__(self, embed_dim, ffn_dim, num_heads):
        super().__init__()
        self.self_attn = MultiheadAttention(embed_dim, num_heads)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim)

    def forward(self, x, **attention):
        x = x + self.self_attn(self.self_attn_layer_norm(x), **attention)
        return x + self.fc2(gelu(self.fc1(self.final_layer_norm(x))))


class ESM2(nn.Module):
    def __init__(self, num_layers, embed_dim, attention_heads, alphabet_size=33, padding_idx=1, mask_idx=32,
                 token_dropout=True):
        super().__init__()
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.attention_heads = attention_heads
        self.padding_idx = padding_idx
        self.mask_idx = mask_idx
        self.token_dropout = token_dropout
        self.embed_tokens = nn.Embedding(alphabet_size, embed_dim, padding_idx=padding_idx)
        self.layers = nn.ModuleList(
            [TransformerLayer(embed_dim, 4 * embed_dim, attention_heads) for _ in range(num_layers)]
        )
        self.emb_layer_norm_after = nn.LayerNorm(embed_dim)

    def _embed(self, tokens):
        x = self.embed_tokens(tokens)
        if self.token_dropout:
            # Trained with 15% x 80% of tokens masked to zero; at inference (no <mask> tokens) fair-esm
            # rescales every embedding by (1 - 0.12) / (1 - 0) = 0.88 to match that training statistic.
            x = x.masked_fill((tokens == self.mask_idx).unsqueeze(-1), 0.0)
            mask_ratio_train = 0.15 * 0.8
            not_pad = (tokens != self.padding_idx).sum(-1, keepdim=True).clamp(min=1)
            observed = (tokens == self.mask_idx).sum(-1, keepdim=True).to(x.dtype) / not_pad
            x = x * (1 - mask_ratio_train) / (1 - observed).unsqueeze(-1)
        return x

    def forward(self, tokens, repr_layer=None):
        """Hidden states of `repr_layer` (default: the last, after the final LayerNorm).
        tokens: (batch, tokens) -> (batch, tokens, dim)."""
        repr_layer = self.num_layers if repr_layer is None else repr_layer
        padding_mask = tokens.eq(self.padding_idx)  # (batch, tokens)
        x = self._embed(tokens.view(tokens.shape[0], -1))
        x = x * (~padding_mask).unsqueeze(-1).to(x.dtype)  # fair-esm zeroes padding embeddings
        mask = padding_mask if padding_mask.any() else None
        for index, layer in enumerate(self.layers[:repr_layer]):
            x = layer(x, padding_mask=mask)
        return self.emb_layer_norm_after(x) if repr_layer == self.num_layers else x

    def forward_packed(self, tokens, cu_seqlens, max_len, repr_layer=None):
        """Packed sequences, no padding. tokens: (total_tokens,) -> (total_tokens, dim)."""
        repr_layer = self.num_layers if repr_layer is None else repr_layer
        lengths = cu_seqlens[1:] - cu_seqlens[:-1]
        starts = torch.repeat_interleave(cu_seqlens[:-1], lengths)
        positions = torch.arange(tokens.shape[0], device=tokens.device) - starts  # restart per sequence
        x = self._embed(tokens.unsqueeze(0)).squeeze(0)
        for layer in self.layers[:repr_layer]:
            x = layer(x, cu_seqlens=cu_seqlens, max_len=max_len, positions=positions)
        return self.emb_layer_norm_after(x) if repr_layer == self.num_layers else x
