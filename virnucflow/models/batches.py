"""Token-id lists -> model input tensors, packed (no padding) or padded. Shared by both encoders."""

import torch


def pack(batch, device):
    """(tokens (total,), cu_seqlens (B + 1,) int32): sequences back to back, with their boundaries."""
    lengths = [len(ids) for ids in batch]
    tokens = torch.tensor([t for ids in batch for t in ids], device=device)
    cu_seqlens = torch.tensor([0] + lengths, device=device).cumsum(0).to(torch.int32)
    return tokens, cu_seqlens


def pad(batch, pad_id, device):
    """(tokens (B, T) long, mask (B, T) long with 1 at real tokens), T the longest sequence."""
    width = max(len(ids) for ids in batch)
    tokens = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        tokens[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
    return tokens.to(device), mask.to(device)
