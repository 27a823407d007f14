"""DNABERT-S (Zhou et al. 2024), the nucleotide encoder: DNABERT-2's MosaicBERT in plain PyTorch.

A BERT without position embeddings: attention gets ALiBi biases instead, Q, K and V come from one
fused `Wqkv` projection, the MLP is a gated GELU unit, and every block ends in a post-LayerNorm
with its residual. Module names mirror the published state dict (`embeddings.word_embeddings`,
`encoder.layer.N.attention.self.Wqkv`, `encoder.layer.N.mlp.gated_layers` ...), so the published
weights load with a plain `load_state_dict` once a "bert." prefix and the heads are dropped.

Two attention paths give the same numbers:
- `padded`: a (batch, tokens) matrix through SDPA with one additive bias = ALiBi + key padding.
- `packed`: the batch as one row of tokens without padding, through flex_attention with a
  per-sequence block mask and ALiBi as a score modification: the compiled kernel on CUDA, the
  same functions run unfused elsewhere (memory grows with tokens^2: for tests, not for CPU work).
Neither reads a value back from the device. `compile_layers()` compiles the work after each
attention kernel (projection, residuals, LayerNorms, the gated GELU unit) into fused kernels.
"""

import functools
import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, flex_attention

PADDING_BIAS = -10000.0  # what the reference adds at padded keys; exp(-10000) is 0 in fp32
FLEX_BLOCK = 128  # flex_attention's tile size


@dataclass(frozen=True)
class DnabertSConfig:
    """DNABERT-S's size (the published one by default); config.json spells them hidden_size,
    num_hidden_layers, num_attention_heads, intermediate_size, vocab_size."""

    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    vocab_size: int = 4096
    type_vocab_size: int = 2
    eps: float = 1e-12


def alibi_slopes(heads):
    """ALiBi head slopes (Press et al.): the geometric series 2^(-8i/n), i = 1..n, for n = 2^k heads.
    Other counts (DNABERT-S has 12) take the 2^k slopes of the nearest lower power of two plus
    every other slope of the next power of two, so slopes still span the same range."""

    def power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(heads).is_integer():
        return power_of_2(heads)
    closest = 2 ** math.floor(math.log2(heads))
    return power_of_2(closest) + alibi_slopes(2 * closest)[0::2][: heads - closest]


def alibi_bias(slopes, length, device=None):
    """(heads, length, length) bias -slope * |i - j|: symmetric, since the encoder is not causal."""
    position = torch.arange(length, device=device)
    distance = (position[None, :] - position[:, None]).abs()
    return -slopes.to(device)[:, None, None] * distance[None]


def document_block_mask(cu_seqlens, block=FLEX_BLOCK, tokens=None):
    """flex_attention BlockMask that keeps every token inside its own sequence, built from the
    sequence boundaries in O(tokens) (create_block_mask would evaluate all tokens x tokens pairs).
    cu_seqlens: (sequences + 1,) int offsets of the sequences in the packed row; tokens: their
    total where the caller knows it (None: read from the device)."""
    device = cu_seqlens.device
    cu = cu_seqlens.long()
    tokens = int(cu[-1]) if tokens is None else tokens
    document = torch.repeat_interleave(torch.arange(len(cu) - 1, device=device), cu.diff(),
                                       output_size=tokens)  # (tokens,)
    blocks = -(-tokens // block)
    first_row = torch.arange(blocks, device=device) * block
    last_row = (first_row + block).clamp(max=tokens) - 1
    # A tile of queries sees the keys from the start of its first sequence to the end of its last.
    first_key_block = cu[document[first_row]] // block
    last_key_block = (cu[document[last_row] + 1] - 1) // block
    key_blocks = (last_key_block - first_key_block + 1).int()  # (blocks,)
    key_indices = (first_key_block[:, None] + torch.arange(blocks, device=device)).clamp(max=blocks - 1).int()

    def same_sequence(b, h, q_idx, kv_idx):  # within those tiles, token by token
        return document[q_idx] == document[kv_idx]

    return BlockMask.from_kv_blocks(key_blocks[None, None], key_indices[None, None], BLOCK_SIZE=block,
                                    mask_mod=same_sequence, seq_lengths=(tokens, tokens))


@functools.cache
def _compiled_flex_attention():
    # Uncompiled flex_attention materialises the scores; compiled it is a fused kernel.
    return torch.compile(flex_attention)


def packed_alibi_attention(q, k, v, block_mask, slopes):
    """Attention within each packed sequence, with ALiBi. q, k, v: (heads, tokens, head_dim)."""

    def alibi(score, b, h, q_idx, kv_idx):  # positions differ by the same amount inside a sequence
        return score - slopes[h] * (q_idx - kv_idx).abs()

    if q.is_cuda:
        return _compiled_flex_attention()(q[None], k[None], v[None], score_mod=alibi, block_mask=block_mask)[0]
    with warnings.catch_warnings():  # the unfused path is the intended one off CUDA
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(q[None], k[None], v[None], score_mod=alibi, block_mask=block_mask)[0]


class BertEmbeddings(nn.Module):
    def __init__(self, vocab_size, hidden, type_vocab_size=2, eps=1e-12, init=True):
        super().__init__()
        # init=False: no random values (see DNABERTS)
        self.word_embeddings = nn.Embedding(vocab_size, hidden,
                                            _weight=None if init else torch.empty(vocab_size, hidden))
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden,
                                                  _weight=None if init else torch.empty(type_vocab_size, hidden))
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, input_ids):
        # No position embeddings (ALiBi); every token has token type 0.
        return self.LayerNorm(self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0])


class BertSelfAttention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.heads = heads
        self.head_dim = hidden // heads
        self.Wqkv = nn.Linear(hidden, 3 * hidden)  # fused: [Q | K | V], each (heads, head_dim)

    def forward(self, x, bias=None, block_mask=None, slopes=None):
        """Padded: x (batch, tokens, hidden) with bias (batch, heads, tokens, tokens).
        Packed: x (tokens, hidden) with the block mask of its sequences and the ALiBi slopes."""
        qkv = self.Wqkv(x)
        if block_mask is None:
            batch, tokens, _ = x.shape
            q, k, v = qkv.view(batch, tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (batch, heads, tokens, d)
            return out.transpose(1, 2).reshape(batch, tokens, -1)
        q, k, v = qkv.view(-1, 3, self.heads, self.head_dim).permute(1, 2, 0, 3)  # (heads, tokens, d)
        out = packed_alibi_attention(q, k, v, block_mask, slopes)  # (heads, tokens, d)
        return out.transpose(0, 1).reshape(x.shape[0], -1)


class BertSelfOutput(nn.Module):
    def __init__(self, hidden, eps=1e-12):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)  # post-LayerNorm


class BertAttention(nn.Module):
    def __init__(self, hidden, heads, eps=1e-12):
        super().__init__()
        self.self = BertSelfAttention(hidden, heads)
        self.output = BertSelfOutput(hidden, eps)

    def forward(self, x, **attention):
        return self.output(self.self(x, **attention), x)


class BertGatedLinearUnitMLP(nn.Module):
    """GELU(x W_gate) * (x W_value) -> W_out, then post-LayerNorm with the residual."""

    def __init__(self, hidden, intermediate, eps=1e-12):
        super().__init__()
        self.intermediate = intermediate
        self.gated_layers = nn.Linear(hidden, 2 * intermediate, bias=False)  # [gate | value]
        self.wo = nn.Linear(intermediate, hidden)
        self.layernorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x):
        gated, value = self.gated_layers(x).split(self.intermediate, dim=-1)
        return self.layernorm(self.wo(F.gelu(gated) * value) + x)  # exact (erf) GELU


class BertLayer(nn.Module):
    def __init__(self, hidden, heads, intermediate, eps=1e-12):
        super().__init__()
        self.attention = BertAttention(hidden, heads, eps)
        self.mlp = BertGatedLinearUnitMLP(hidden, intermediate, eps)

    def forward(self, x, **attention):
        return self.after_attention(x, self.attention.self(x, **attention))

    def after_attention(self, x, attended):
        """The layer after its attention kernel (the step DNABERTS.compile_layers() can compile)."""
        return self.mlp(self.attention.output(attended, x))


class BertEncoder(nn.Module):
    def __init__(self, hidden, layers, heads, intermediate, eps=1e-12):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(hidden, heads, intermediate, eps) for _ in range(layers)])


class DNABERTS(nn.Module):
    """The encoder of DNABERT-S; returns the last hidden states.

    init=False: no values in the embeddings, for a checkpoint to fill (built on the meta device, then
    load_state_dict(assign=True)). On meta, nn.Embedding's normal_ has no native kernel and would
    import torch's compiler stack: ~1 s per job."""

    def __init__(self, config=DnabertSConfig(), init=True):
        super().__init__()
        self.config = config
        self.hidden = config.hidden
        self.heads = config.heads
        self.embeddings = BertEmbeddings(config.vocab_size, config.hidden, config.type_vocab_size, config.eps, init)
        self.encoder = BertEncoder(config.hidden, config.layers, config.heads, config.intermediate, config.eps)
        self.layer_step = BertLayer.after_attention
        self._slope_tensors = {}

    def compile_layers(self, enable=True):
        """Every layer's step after attention through torch.compile with dynamic shapes (one graph, shared by
        all layers: the layer is an argument), or back to eager with enable=False. Compiling happens at the
        first forward; a toolchain that cannot compile fails there."""
        self.layer_step = torch.compile(BertLayer.after_attention, dynamic=True) if enable else BertLayer.after_attention

    def _encode(self, x, **attention):
        for layer in self.encoder.layer:
            x = self.layer_step(layer, x, layer.attention.self(x, **attention))
        return x

    def _slopes(self, device):
        # fp32, not kept as a buffer: model.to(bfloat16) would round a buffer. Made once per device: a
        # copy from the host to a GPU waits for the GPU's queue. A plain tensor even in inference mode.
        if device not in self._slope_tensors:
            with torch.inference_mode(False):
                self._slope_tensors[device] = torch.tensor(alibi_slopes(self.heads), dtype=torch.float32,
                                                           device=device)
        return self._slope_tensors[device]

    def forward(self, input_ids, attention_mask):
        """input_ids, attention_mask: (batch, tokens), mask 1 at real tokens -> (batch, tokens, hidden).
        Padded keys get -10000 (as the reference), so no padding reaches a real token."""
        x = self.embeddings(input_ids)
        tokens = input_ids.shape[1]
        # The bias in the compute dtype, made once for all layers: ALiBi rounded as before, plus 0 at real keys.
        alibi = alibi_bias(self._slopes(input_ids.device), tokens, input_ids.device).to(x.dtype)  # (heads, tokens, tokens)
        padding = ((1.0 - attention_mask[:, None, None, :].float()) * PADDING_BIAS).to(x.dtype)  # (batch, 1, 1, tokens)
        return self._encode(x, bias=alibi[None] + padding)  # bias (batch, heads, tokens, tokens)

    def forward_packed(self, input_ids, cu_seqlens):
        """input_ids: (total_tokens,) of sequences back to back, cu_seqlens (sequences + 1,) their
        offsets -> (total_tokens, hidden)."""
        block_mask = document_block_mask(cu_seqlens, tokens=input_ids.shape[0])
        return self._encode(self.embeddings(input_ids), block_mask=block_mask, slopes=self._slopes(input_ids.device))
