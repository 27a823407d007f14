"""Write-then-rename, so that a killed job never leaves a file that looks finished.

Snakemake does not notice half-written outputs of jobs downstream of a checkpoint after a kill,
so every output of this package goes through `atomic_path`.
"""

import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` on success, delete it on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path, mode="w", **kwargs):
    """Open a temporary file for writing that becomes `path` only if the block completes."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle
