"""DNABERT-S (Zhou et al. 2024), the nucleotide encoder: DNABERT-2's MosaicBERT in plain PyTorch.

A BERT without position embeddings: attention gets ALiBi biases instead, Q, K and V come from one
fused `Wqkv` projection, the MLP is a gated GELU unit, and every block ends in a post-LayerNorm
with its residual. Module names mirror the published state dict (`embeddings.word_embeddings`,
`encoder.layer.N.attention.self.Wqkv`, `encoder.layer.N.mlp.gated_layers` ...).

Two attention paths give the same numbers: `padded` (SDPA with ALiBi + key-padding as an additive
bias) and `packed` (sequences concatenated without padding, attention per sequence: flex_attention
with a document mask and ALiBi as a score modification on CUDA, an SDPA loop elsewhere).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

PADDING_BIAS = -10000.0  # what the reference adds at padded keys; exp(-10000) is 0 in fp32


def alibi_slopes(num_heads):
    """ALiBi head slopes (Press et al.): a geometric series for 2^k heads; for other counts, the
    slopes of the nearest lower power of two plus every other slope of the next power of two."""

    def power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        return power_of_2(num_heads)
    closest = 2 ** math.floor(math.log2(num_heads))
    return power_of_2(closest) + alibi_slopes(2 * closest)[0::2][: num_heads - closest]


def alibi_bias(slopes, length, device=None):
    """(heads, length, length) bias: -slope * |i - j|."""
    position = torch.arange(length, device=device)
    distance = (position[None, :] - position[:, None]).abs()
    return -slopes.to(device)[:, None, None] * distance[None]


class BertEmbeddings(nn.Module):
    def __init__(self, vocab_size, hidden, type_vocab_size=2, eps=1e-12):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, input_ids):
        # No position embeddings (ALiBi); every token has token type 0.
        return self.LayerNorm(self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0])


class BertSelfAttention(nn.Module):
    def __init__(self, hidden, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden // num_heads
        self.Wqkv = nn.Linear(hidden, 3 * hidden)

    def forward(self, x, bias=None, cu_seqlens=None, slopes=None):
        """Padded: x (batch, tokens, hidden) with bias (batch, heads, tokens, tokens).
        Packed: x (tokens, hidden) with cu_seqlens and the ALiBi slopes."""
        qkv = self.Wqkv(x)
        if cu_seqlens is None:
            batch, tokens, _ = x.shape
            q, k, v = qkv.view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # (batch, heads, tokens, d)
            return out.transpose(1, 2).reshape(batch, tokens, -1)
        q, k, v = qkv.view(-1, 3, self.num_heads, self.head_dim).permute(1, 2, 0, 3)  # (heads, tokens, d)
        return packed_alibi_attention(q, k, v, cu_seqlens, slopes).transpose(0, 1).reshape(x.shape[0], -1)


def packed_alibi_attention(q, k, v, cu_seqlens, slopes):
    """Attention within each packed sequence with ALiBi. q, k, v: (heads, tokens, head_dim)."""
    if q.is_cuda:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        document = torch.repeat_interleave(torch.arange(len(cu_seqlens) - 1, device=q.device),
                                           cu_seqlens[1:] - cu_seqlens[:-1])

        def same_sequence(b, h, q_idx, kv_idx):
            return document[q_idx] == document[kv_idx]

        def alibi(score, b, h, q_idx, kv_idx):
            return score - slopes[h] * (q_idx - kv_idx).abs()

        tokens = q.shape[1]
        mask = create_block_mask(same_sequence, None, None, tokens, tokens, device=q.device)
        return flex_attention(q[None], k[None], v[None], score_mod=alibi, block_mask=mask)[0]
    bounds = cu_seqlens.tolist()
    pieces = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        bias = alibi_bias(slopes, b - a, q.device).to(q.dtype)
        pieces.append(F.scaled_dot_product_attention(q[:, a:b], k[:, a:b], v[:, a:b], attn_mask=bias))
    return torch.cat(pieces, dim=1)


class BertSelfOutput(nn.Module):
    def __init__(self, hidden, eps=1e-12):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)  # post-LayerNorm


class BertAttention(nn.Module):
    def __init__(self, hidden, num_heads, eps=1e-12):
        super().__init__()
        self.self = BertSelfAttention(hidden, num_heads)
        self.output = BertSelfOutput(hidden, eps)

    def forward(self, x, **attention):
        return self.output(self.self(x, **attention), x)


class BertGatedLinearUnitMLP(nn.Module):
    """GELU(x W_gate) * (x W_value) -> W_out, then post-LayerNorm with the residual."""

    def __init__(self, hidden, intermediate, eps=1e-12):
        super().__init__()
        self.intermediate = intermediate
        self.gated_layers = nn.Linear(hidden, 2 * intermediate, bias=False)
        self.wo = nn.Linear(intermediate, hidden)
        self.layernorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x):
        gated, value = self.gated_layers(x).split(self.intermediate, dim=-1)
        return self.layernorm(self.wo(F.gelu(gated) * value) + x)


class BertLayer(nn.Module):
    def __init__(self, hidden, num_heads, intermediate, eps=1e-12):
        super().__init__()
        self.attention = BertAttention(hidden, num_heads, eps)
        self.mlp = BertGatedLinearUnitMLP(hidden, intermediate, eps)

    def forward(self, x, **attention):
        return self.mlp(self.attention(x, **attention))


class BertEncoder(nn.Module):
    def __init__(self, hidden, layers, num_heads, intermediate, eps=1e-12):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(hidden, num_heads, intermediate, eps) for _ in range(layers)])


class DNABERTS(nn.Module):
    """The encoder of DNABERT-S; returns the last hidden states."""

    def __init__(self, vocab_size=4096, hidden=768, layers=12, num_heads=12, intermediate=3072,
                 type_vocab_size=2, eps=1e-12):
        super().__init__()
        self.hidden = hidden
        self.num_heads = num_heads
        self.embeddings = BertEmbeddings(vocab_size, hidden, type_vocab_size, eps)
        self.encoder = BertEncoder(hidden, layers, num_heads, intermediate, eps)
        self.register_buffer("slopes", torch.tensor(alibi_slopes(num_heads)), persistent=False)

    def forward(self, input_ids, attention_mask):
        """input_ids, attention_mask: (batch, tokens), mask 1 for real tokens -> (batch, tokens, hidden)."""
        tokens = input_ids.shape[1]
        padding = (1.0 - attention_mask[:, None, None, :].float()) * PADDING_BIAS  # (batch, 1, 1, tokens)
        bias = alibi_bias(self.slopes, tokens, input_ids.device)[None] + padding  # (batch, heads, tokens, tokens)
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, bias=bias)
        return x

    def forward_packed(self, input_ids, cu_seqlens):
        """input_ids: (total_tokens,) of concatenated sequences -> (total_tokens, hidden)."""
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, cu_seqlens=cu_seqlens, slopes=self.slopes)
        return x
