"""Where a model comes from: a local folder or file, a Hugging Face id, or a fair-esm name.

Compute nodes rarely reach the internet, so nothing here downloads at run time: a Hugging Face
id is looked up in the local cache only, where huggingface_hub puts it (`huggingface_hub.constants`:
HF_HUB_CACHE, HF_HOME, read when it is imported), a fair-esm name in torch hub's (`torch.hub.get_dir()`:
TORCH_HOME). `download_models`, run by `make download-models` on a login node, is the one place that
downloads. Importing this module does not import torch (the workflow imports it when it loads).
"""

import hashlib
import logging
import os
import re
import socket
from pathlib import Path

from huggingface_hub import constants

from ..atomic import atomic_open
from ..errors import ModelError
from ..provenance import file_sha256

log = logging.getLogger(__name__)

KINDS = ("dna", "protein")
# Each kind's config key (models.<key>) and the published model's features per sequence.
CONFIG_KEYS = {"dna": "dnabert_s", "protein": "esm2"}
PUBLISHED_WIDTHS = {"dna": 768, "protein": 2560}
HF_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
FAIR_ESM_URL = "https://dl.fbaipublicfiles.com/fair-esm/models/{name}.pt"


def torch_hub_checkpoints():
    """torch.hub's checkpoint folder ($TORCH_HOME/hub/checkpoints), where fair-esm keeps its .pt files."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_model(spec, kind=None):
    """(local path, revision) of a model spec; a ModelError naming the download command on a miss.

    The revision goes into the output attributes: the snapshot commit of a Hugging Face cache
    entry, else `sha256:` and the first 12 hex digits of the weights' digest.
    """
    path, commit = locate_model(spec, kind)
    return path, commit or _local_revision(path)


def locate_model(spec, kind=None):
    """(local path, snapshot commit or None) of a model spec, without reading the weights: what the
    checks at workflow start use. A ModelError naming the download command on a miss."""
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.exists():
        return path, _cache_commit(path)
    if is_local_path(spec):
        raise ModelError(f"model {spec!r}: no such file or folder; fix the path")
    if HF_ID.match(spec):
        found = _hf_snapshot(spec)
        if found:
            return found
        raise ModelError(_miss_message(spec, f"the local Hugging Face cache ({constants.HF_HUB_CACHE})"))
    if kind != "dna":
        hub = torch_hub_checkpoints() / f"{spec}.pt"
        if hub.is_file():
            return hub, None
        found = _hf_snapshot(f"facebook/{spec}") if spec.startswith("esm") else None
        if found:
            return found
        raise ModelError(_miss_message(spec, f"the torch hub cache ({hub})"))
    raise ModelError(f"model {spec!r}: no such folder and not a Hugging Face id (org/name); give the DNABERT-S "
                     "folder or zhihan1996/DNABERT-S")


def is_local_path(spec):
    """True when a model spec can only mean a file or folder (an absolute or ./ path, a checkpoint file
    name, or more than the two parts of a Hugging Face id), so the workflow treats it as an input file."""
    spec = str(spec)
    return (Path(spec).expanduser().exists() or spec.startswith(("/", "./", "../", "~"))
            or spec.endswith((".pt", ".pth")) or spec.count("/") >= 2)


def model_width(kind, spec):
    """Features per sequence of the model a spec names (DNABERT-S 768, ESM-2 3B 2560), read from its
    config or checkpoint table of contents, not its weights."""
    path, _ = locate_model(spec, kind)
    if kind == "dna":
        from .dnabert_s_pretrained import dnabert_s_width

        return dnabert_s_width(path)
    from .esm2_pretrained import esm2_width

    return esm2_width(path)


def _cache_commit(path):
    """The commit a folder inside a Hugging Face cache is named after, else None."""
    if path.is_dir() and path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.name
    return None


def _hf_snapshot(repo_id):
    """(snapshot folder, commit) of a cached Hugging Face repo, or None: the snapshot refs/main names,
    as huggingface_hub finds it offline; without one (a cache copied without refs/), the newest."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.file_download import repo_folder_name

    config = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(config, str):
        folder = Path(config).parent
    else:
        snapshots = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots"
        candidates = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime) if snapshots.is_dir() else []
        if not candidates:
            return None
        folder = candidates[-1]
    # A download cut short leaves a snapshot without weights, or links to blobs that never came.
    if not (folder / "config.json").is_file() or not _weight_files(folder):
        raise ModelError(f"model {repo_id!r}: the cached snapshot {folder} has no config.json or weights "
                         f"(an interrupted download?); run `make download-models` again on a login node")
    return folder, folder.name


def _weight_files(folder):
    """Weight files of a folder in the Hugging Face layout (single or sharded), [] when incomplete."""
    from .checkpoints import weight_files

    try:
        return weight_files(folder)
    except ModelError:
        return []


def _local_revision(path):
    if path.is_file():
        files = [path]
    else:
        files = [path / name for name in ("config.json", "tokenizer.json") if (path / name).is_file()]
        files += _weight_files(path)
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0" + _file_sha256(file).encode() + b"\n")
    return "sha256:" + digest.hexdigest()[:12] if files else "unknown"


_DIGESTS = {}


def digest_cache():
    """Where file digests are kept between jobs: hashing ESM-2 3B costs seconds in every embed job."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "virnucflow" / "sha256"


def _file_sha256(path):
    """sha256 of a file, computed once per path, size and mtime (BENCHMARKS.md: its cost) and remembered in
    the process and in `digest_cache()` (best effort: a read-only home only costs the time)."""
    stat = path.stat()
    key = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    if key in _DIGESTS:
        return _DIGESTS[key]
    cached = digest_cache() / hashlib.sha256(key.encode()).hexdigest()
    try:
        value = cached.read_text().strip()
    except OSError:
        value = ""
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        value = file_sha256(path, block=1 << 24)
        try:
            with atomic_open(cached) as handle:  # concurrent jobs never read half a digest
                handle.write(value + "\n")
        except OSError:
            pass
    _DIGESTS[key] = value
    return value


def _miss_message(spec, where):
    if "/" in spec:
        manual = (f"`python -m virnucflow download-models {spec}` (one weight format) or `hf download {spec}` "
                  "(every format)")
    else:
        url = FAIR_ESM_URL.format(name=spec)
        manual = (f"`python -c \"import torch; torch.hub.download_url_to_file('{url}', "
                  f"'{torch_hub_checkpoints() / (spec + '.pt')}')\"`")
    return (f"model {spec!r} is not a local path and not in {where}; on a machine with internet run "
            f"`make download-models` or {manual}, then share the cache (HF_HOME / TORCH_HOME) with the "
            "compute nodes or point the config at the downloaded folder")


def load_encoder(kind, spec, device="cpu", dtype=None, layer=None, attention="auto", compile_layers=False):
    """The encoder of `kind` ('dna' = DNABERT-S, 'protein' = ESM-2) for a model spec, with
    `.revision` set (see resolve_model) and `.name` the spec as the user wrote it. compile_layers:
    torch.compile the layers (opt-in; eager where compiling fails, as `.compiled` says)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    import torch

    dtype = dtype or torch.float32
    path, revision = resolve_model(spec, kind)
    if kind == "dna":
        if not path.is_dir():
            raise ModelError(f"{path}: DNABERT-S is a folder (config.json, weights, tokenizer.json), not a file")
        from .dnabert_s_encoder import load_dnabert_s

        encoder = load_dnabert_s(path, device=device, dtype=dtype, attention=attention, name=str(spec),
                                 compile_layers=compile_layers)
    else:
        from .esm2_encoder import load_esm2

        encoder = load_esm2(path, device=device, dtype=dtype, layer=layer, attention=attention, name=str(spec),
                            compile_layers=compile_layers)
    encoder.revision = revision
    from .checkpoints import is_untrained

    encoder.untrained = is_untrained(path)  # the demo's random weights: the report says so
    return encoder


def download_models(specs, classifier_url=None):
    """Download models into the local caches (needs internet: a login node): Hugging Face ids
    into the hub cache, fair-esm names into the torch hub cache, `virnucpro` (a reserved name) the
    published classifiers into theirs (from `classifier_url`, a mirror, instead of VirNucPro's
    repository). Every spec is tried; a ModelError at the end has one line per failed file (without a
    connection: the host, the cache it would have filled and how to bring a cache over)."""
    from .published_classifiers import BASE_URL, NAME, download_classifiers

    problems = []
    for spec in specs:
        if spec == NAME:
            problems += download_classifiers(classifier_url or BASE_URL)
            continue
        try:
            log.info("%s -> %s", spec, _download_model(spec))
        except ModelError as error:
            problems.append(f"{spec}: {error}")
    if problems:
        raise ModelError("\n".join(problems))


def _download_model(spec):
    """Download one model (see download_models); its local path."""
    if "/" not in spec:
        target = torch_hub_checkpoints() / f"{spec}.pt"
        if not target.exists():
            import torch

            url = FAIR_ESM_URL.format(name=spec)
            _check_reachable(url, target.parent)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(url, str(target))
            except Exception as exc:  # noqa: BLE001 - URL, HTTP and socket errors alike
                raise _download_failed(url, target.parent, exc) from None
        return target
    from huggingface_hub import list_repo_files, snapshot_download

    _check_reachable(constants.ENDPOINT, constants.HF_HUB_CACHE)
    try:
        files = list_repo_files(spec)
        # One copy of the weights: safetensors when the repo has them (ESM-2 3B is 11 GB per format).
        weights = "*.safetensors" if any(f.endswith(".safetensors") for f in files) else "*.bin"
        return snapshot_download(spec, allow_patterns=["*.json", "*.txt", weights])
    except Exception as exc:  # noqa: BLE001 - HTTP, network and hub errors alike
        raise _download_failed(f"{constants.ENDPOINT}/{spec}", constants.HF_HUB_CACHE, exc) from None


def _check_reachable(url, cache, timeout=10, variables="HF_HOME / TORCH_HOME"):
    """Fail at once, in one line, when the host of `url` cannot be reached (no proxy configured):
    the libraries would retry for half a minute and end in a long traceback."""
    from urllib.parse import urlsplit

    if any(os.environ.get(key) for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return  # through a proxy: the download itself tells
    parts = urlsplit(url)
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise _download_failed(url, cache, exc, host=parts.hostname, variables=variables) from None


def _download_failed(url, cache, exc, host=None, variables="HF_HOME / TORCH_HOME"):
    """The one line of a download that could not connect; `variables`: what moves the cache."""
    from urllib.parse import urlsplit

    host = host or urlsplit(url).hostname
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return ModelError(f"cannot reach {host} ({reason}): this command downloads into {cache} and needs internet; "
                      f"run it on a machine that has it (a login node), then copy that folder here (rsync -a "
                      f"LOGIN-NODE:{cache}/ {cache}/) or point {variables} at a shared copy")
