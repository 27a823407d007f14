"""The sidecar of an embed job: its finished batches, kept beside its output (`{output}.partial/`, not
a Snakemake output) until the output is in place, so a killed job resumes where it stopped.

    manifest.json  what the rows were computed from (input hash, model, precision ...): a sidecar
                   made from anything else is ignored and removed.
    rows.f32       the rows of every finished batch, back to back (float32, `dim` wide).
    batches.jsonl  one line per finished batch, written after its rows: input indices, row count,
                   CRC32 of the rows, skipped sequences (position in the batch, reason). A line cut
                   short by a kill, or rows that do not match their CRC, end the valid part; the rest
                   is cut off.
"""

import json
import logging
import os
import shutil
import zlib
from pathlib import Path

import numpy as np

from .atomic import atomic_open

log = logging.getLogger(__name__)
SIDECAR_FORMAT = 1


class Sidecar:
    """Finished batches of a job in `folder`, for rows computed as `key` says, `dim` columns wide.

    `positions` {input index: row in rows.f32} and `skipped` {input index: reason} say what is done.
    Appending is two buffered writes per batch and no new file, which costs next to nothing on a
    network file system; the kernel keeps written data when the process is killed.
    """

    def __init__(self, folder, key, dim):
        self.folder = Path(folder)
        self.dim = dim
        self.row_bytes = 4 * dim
        self.positions = {}  # input index -> row in rows.f32
        self.skipped = {}  # input index -> reason
        self.rows = 0
        manifest = self.folder / "manifest.json"
        key = {"format": SIDECAR_FORMAT, "dim": dim, **key}
        if self.folder.exists():
            old = _read_json(manifest)
            if old != key:
                differs = sorted(k for k in set(key) | set(old or {}) if (old or {}).get(k) != key.get(k))
                log.info("ignoring the sidecar %s: it was made for another input, model or precision "
                         "(%s differ); starting from the first batch", self.folder, ", ".join(differs))
                shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not manifest.exists():
            with atomic_open(manifest) as handle:
                json.dump(key, handle, sort_keys=True)
        self._load()
        self._rows_file = open(self.folder / "rows.f32", "ab")
        self._index_file = open(self.folder / "batches.jsonl", "a")

    def _load(self):
        rows_path, index_path = self.folder / "rows.f32", self.folder / "batches.jsonl"
        rows_path.touch()
        index_path.touch()
        valid_index_bytes = 0
        with open(rows_path, "rb") as rows, open(index_path, "rb") as index:
            for raw in index:
                entry = _parse_entry(raw)
                if entry is None:
                    break
                data = rows.read(entry["rows"] * self.row_bytes)
                if len(data) != entry["rows"] * self.row_bytes or zlib.crc32(data) != entry["crc32"]:
                    break
                for offset, input_index in enumerate(entry["indices"]):
                    self.positions[input_index] = self.rows + offset
                for offset, reason in entry["skipped"]:
                    self.skipped[entry["indices"][offset]] = reason
                self.rows += entry["rows"]
                valid_index_bytes += len(raw)
        # Cut off whatever a kill left half-written, so appends continue from a clean end.
        os.truncate(index_path, valid_index_bytes)
        os.truncate(rows_path, self.rows * self.row_bytes)

    def append(self, indices, vectors, skipped):
        """Record a finished batch: input `indices`, their rows, and (position, reason) of skips."""
        data = np.ascontiguousarray(vectors, dtype="<f4").tobytes()
        self._rows_file.write(data)
        self._rows_file.flush()  # the rows reach the kernel before the line that vouches for them
        entry = {"indices": [int(i) for i in indices], "rows": len(indices), "crc32": zlib.crc32(data),
                 "skipped": [[int(p), str(r)] for p, r in skipped]}
        self._index_file.write(json.dumps(entry) + "\n")
        self._index_file.flush()
        for offset, index in enumerate(indices):
            self.positions[int(index)] = self.rows + offset
        for offset, reason in skipped:
            self.skipped[int(indices[offset])] = reason
        self.rows += len(indices)

    def read_rows(self):
        """All rows written so far, (rows, dim), mapped from disk."""
        self._rows_file.flush()
        if self.rows == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.memmap(self.folder / "rows.f32", dtype="<f4", mode="r", shape=(self.rows, self.dim))

    def close(self):
        self._rows_file.close()
        self._index_file.close()

    def remove(self):
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _parse_entry(raw):
    if not raw.endswith(b"\n"):
        return None
    try:
        entry = json.loads(raw)
        if entry["rows"] != len(entry["indices"]):
            return None
        return entry
    except (ValueError, KeyError, TypeError):
        return None
