"""Where a model comes from: a Hugging Face id (local cache only), a local folder, or a file.

Compute nodes rarely reach the internet, so nothing here downloads; `download_models` (run by
`make download-models` on a login node) is the one place that does.
"""

import os
from pathlib import Path

import torch

from ..errors import ModelError

KINDS = ("dna", "protein")


def _torch_hub_checkpoints():
    home = os.environ.get("TORCH_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "torch")
    return Path(home) / "hub" / "checkpoints"


def resolve_model(spec):
    """(local path, revision) for a model spec; ModelError with the download command on a miss."""
    path = Path(spec).expanduser()
    if path.exists():
        return path, "local"
    if "/" not in spec:  # a fair-esm name such as esm2_t36_3B_UR50D
        hub = _torch_hub_checkpoints() / f"{spec}.pt"
        if hub.exists():
            return hub, "fair-esm"
        raise ModelError(
            f"model {spec!r} is neither a path nor in the torch hub cache ({hub}); download it on a machine "
            f"with internet (`make download-models` or `virnucflow download-models facebook/{spec}`) "
            "or give a local path"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(spec, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
        raise ModelError(
            f"model {spec!r} is not in the local Hugging Face cache ({cache}); on a machine with internet run "
            f"`make download-models` (or `virnucflow download-models {spec}`) and share the cache via HF_HOME"
        ) from None
    return Path(folder), Path(folder).name


def load_encoder(kind, spec, device="cpu", dtype=torch.float32, layer=None, attention="auto"):
    """The encoder of `kind` ('dna' = DNABERT-S, 'protein' = ESM-2) for `spec`, with .revision set."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    path, revision = resolve_model(spec)
    if kind == "dna":
        from .dnabert_s_checkpoint import load_dnabert_s

        encoder = load_dnabert_s(path, device=device, dtype=dtype, attention=attention, name=spec)
    else:
        from .esm2_checkpoint import load_esm2

        encoder = load_esm2(path, device=device, dtype=dtype, layer=layer, attention=attention, name=spec)
    encoder.revision = revision
    return encoder


def download_models(specs, log=None):
    """Download Hugging Face models into the local cache (needs internet: a login node)."""
    from huggingface_hub import list_repo_files, snapshot_download

    for spec in specs:
        files = list_repo_files(spec)
        # One copy of the weights: safetensors when the repo has them (ESM-2 3B is 11 GB per format).
        weights = "*.safetensors" if any(f.endswith(".safetensors") for f in files) else "*.bin"
        folder = snapshot_download(spec, allow_patterns=["*.json", "*.txt", weights])
        if log:
            log.info("%s -> %s", spec, folder)
