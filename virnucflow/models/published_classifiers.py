"""VirNucPro's published classifiers (500_model.pth, 300_model.pth): where they come from, how a copy is
verified, and the cache folder that `classifier: virnucpro` resolves in.

They are fetched from VirNucPro's repository at a pinned commit and verified by their git blob ids (the
sha1 of b"blob <size>\\0" followed by the bytes: what `git hash-object FILE` prints), so a site mirror or
a shared copy is held to the same table. The cache is $VIRNUCFLOW_CLASSIFIER_CACHE (a shared folder the
compute nodes read), else $XDG_CACHE_HOME/virnucflow/classifiers (~/.cache/...). Only
`download_classifiers`, run by `virnucflow download-models` on a login node, touches the network.
"""

import hashlib
import http.client
import logging
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from ..atomic import atomic_path, reporting_disk_full
from ..errors import ModelError, VirnucflowError

log = logging.getLogger(__name__)

NAME = "virnucpro"  # the config value and download-models name of the published classifiers
REPOSITORY = "Li-Jing-1997/VirNucPro"
COMMIT = "0f93f2755a7ea1acd3ff1bcf182892f960ef3326"
BASE_URL = f"https://raw.githubusercontent.com/{REPOSITORY}/{COMMIT}/"
# The git blob id of each file at COMMIT; the number is the chunk length it was trained on.
BLOB_IDS = {
    "500_model.pth": "fc35d5ef9f1f4564eea7036f34f4f8ec6000d33d",
    "300_model.pth": "a0b5b85e7c1e44f00cde146d091beb82b2c8e855",
}
CACHE_VARIABLE = "VIRNUCFLOW_CLASSIFIER_CACHE"
DOWNLOAD_COMMAND = "virnucflow download-models virnucpro"


def cache_folder():
    """The absolute folder the published classifiers are downloaded to and loaded from."""
    folder = os.environ.get(CACHE_VARIABLE) or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "virnucflow" / "classifiers"
    return Path(folder).expanduser().absolute()


def blob_id(path):
    """The git blob id of a file: sha1 of b"blob <size>\\0" and its bytes."""
    digest = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_name(chunk_length):
    """The published classifier's file name for a chunk length; a ModelError for a length without one."""
    name = f"{chunk_length}_model.pth"
    if name not in BLOB_IDS:
        lengths = " and ".join(each.split("_")[0] for each in BLOB_IDS)
        raise ModelError(f"{NAME}: VirNucPro publishes classifiers for chunk_length {lengths}, not {chunk_length}; "
                         f"set chunk_length: to one of them, or classifier: to a classifier file of your own")
    return name


def classifier_file(spec, chunk_length):
    """The classifier file a config's `classifier:` names: for `virnucpro` the published one for
    `chunk_length` in `cache_folder()` (an absolute path, there or not), else `spec` as given."""
    return str(cache_folder() / file_name(chunk_length)) if spec == NAME else spec


def locate_classifier(spec, chunk_length):
    """classifier_file, checked for `virnucpro`: the file is in the cache and is the published one
    (its blob id); a ModelError naming the command that downloads it otherwise."""
    path = classifier_file(spec, chunk_length)
    if spec != NAME:
        return path
    name = file_name(chunk_length)
    if not Path(path).is_file():
        raise ModelError(f"{NAME}: {name} is not in the classifier cache {cache_folder()}; on a machine with internet "
                         f"run `{DOWNLOAD_COMMAND}` (or `make download-models`), with {CACHE_VARIABLE} set to a "
                         "folder the compute nodes read, and set it here too")
    found = blob_id(path)
    if found != BLOB_IDS[name]:
        raise ModelError(f"{NAME}: {path} is not the published {name} (git blob {found}, expected "
                         f"{BLOB_IDS[name]}); run `{DOWNLOAD_COMMAND}` to replace it")
    return path


def download_classifiers(base_url=BASE_URL, blob_ids=BLOB_IDS, folder=None, timeout=60):
    """Fetch every file of `blob_ids` from `base_url` + its name into `folder` (default cache_folder()),
    each verified by its blob id before it is renamed into place; a file that already verifies is left
    as it is (its mtime reruns predict). Returns one line per file that failed (the others are still
    tried); nothing of a failed file is left."""
    from .resolve import _check_reachable

    folder = Path(folder) if folder else cache_folder()
    base_url = base_url if base_url.endswith("/") else base_url + "/"
    todo = {}
    for name, expected in blob_ids.items():
        target = folder / name
        if target.is_file() and blob_id(target) == expected:
            log.info("%s: already in %s and verified (git blob %s)", name, folder, expected)
        else:
            todo[name] = expected
    if not todo:
        return []
    try:
        _check_reachable(base_url, folder, variables=CACHE_VARIABLE)
    except ModelError as error:
        return [f"{name}: {error}" for name in todo]
    problems = []
    for name, expected in todo.items():
        try:
            _fetch(base_url + name, folder / name, expected, timeout)
        except VirnucflowError as error:
            problems.append(f"{name}: {error}")
    return problems


def _fetch(url, target, expected, timeout):
    """Download `url` to a temporary beside `target`, rename it into place if its blob id is `expected`."""
    from .resolve import _download_failed

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, \
                reporting_disk_full(target, 8 << 20), atomic_path(target) as temporary:
            with open(temporary, "wb") as handle:
                shutil.copyfileobj(response, handle, 1 << 20)
            found = blob_id(temporary)
            if found != expected:
                raise ModelError(f"{url}: refused: git blob {found}, expected {expected} (the published "
                                 f"{target.name} of {REPOSITORY} at {COMMIT[:12]}); nothing was written: check the "
                                 "mirror (--classifier-url)")
    except urllib.error.HTTPError as error:
        raise ModelError(f"{url}: HTTP {error.code} {error.reason}; check the address (--classifier-url: the "
                         "folder that holds the files)") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        raise _download_failed(url, target.parent, getattr(error, "reason", error),
                               variables=CACHE_VARIABLE) from None
    log.info("%s -> %s (git blob %s verified)", url, target, expected)
