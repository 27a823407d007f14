"""VirNucPro's merged .pt format ({'ids': [...], 'data': tensor(N, D)}), written from a merged
embeddings.h5 for users of the original tool."""

from .atomic import atomic_path
from .embeddings import open_embeddings


def export_virnucpro_pt(embeddings_h5, out_pt):
    """Write `out_pt` from `embeddings_h5`. Holds the whole sample in memory, as the original does."""
    import torch

    with open_embeddings(embeddings_h5) as merged:
        data = {"ids": merged.read_ids(), "data": torch.from_numpy(merged.read_rows())}  # float32, as VirNucPro's
    with atomic_path(out_pt) as tmp, open(tmp, "wb") as handle:
        torch.save(data, handle)  # a handle: the same bytes whatever the temporary's name
