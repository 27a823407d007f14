"""The merge: every shard of a sample -> one HDF5, DNABERT-S block then ESM-2 block, joined by id
in frames.tsv order, validated on the way.

One streaming pass, shard by shard in frames.tsv order. For each shard the ids of both files are
read, checked (no id twice, both models hold the same ids, every expected id there) and joined
to the expected ids by id; then its rows are copied `chunk_rows` at a time into the output. Memory
is one output chunk plus one shard's ids, whatever the size of the sample.

Everything is written under temporary names and renamed only when the whole sample is valid, so
a failed merge leaves no embeddings.h5, validation.json or missing_ids.txt behind. A missing id
found early stops the copying; the ids of the remaining shards are still read so that the error
gives the full count.

Result attributes (besides those of every embedding file: dim, rows, package_version, complete):
- `dna_columns`, `protein_columns`: [start, stop) of each model's block.
- `dna_model`, `dna_model_revision`, `dna_pooling`, `dna_precision` and the same for `protein_`
  (plus `protein_layer`): copied from the shards, which must agree on model, revision, pooling and
  layer; a precision that differs between shards is kept as a comma-separated list, with a warning.
- `expected`, `missing`, `skipped`: counts, as in validation.json; plus the caller's attrs (compat,
  chunk_length).
- Checksums: `ids_sha256` = SHA-256 of the ids in row order, each followed by "\\n" (UTF-8);
  `embeddings_crc32` = CRC-32 (zlib) of the float32 little-endian bytes of `embeddings` in row
  order. Check a copy with `zlib.crc32(f["embeddings"][:].tobytes())` (or chunk-wise, feeding each
  value into the next call). CRC-32 runs at several GB/s; a SHA-256 of 13 GB would add seconds.
"""

import contextlib
import hashlib
import json
import logging
import os
import re
import time
import zlib
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .atomic import atomic_open, atomic_path
from .errors import InputError, ValidationError
from .shards import EmbeddingWriter, open_embeddings

SHOW = 10  # ids named in a message
STRAY_BATCH = 100_000  # ids found outside their shard, held before frames.tsv is scanned to place them
MUST_AGREE = ("model", "model_revision", "pooling", "layer")  # shard attributes that change the numbers
COPIED = ("model", "model_revision", "pooling", "precision", "layer")
IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


def merge_sample(frames_tsv, dna_shards, protein_shards, out_h5, *, validation_json, missing_ids_txt,
                 chunk_rows=10_000, allow_missing=False, attrs=None, log=None):
    """Write the merged embeddings.h5, validation.json and missing_ids.txt of one sample; return the
    validation report. Raises ValidationError / InputError (and writes nothing) when the shards do not
    account for every expected id exactly once (missing ids are allowed with `allow_missing`)."""
    log = log or logging.getLogger(__name__)
    started = time.monotonic()
    pairs = _pair_shards(dna_shards, protein_shards)
    dims, meta, skipped_by_shard = _inspect_shards(pairs, log)
    width = dims["dna"] + dims["protein"]
    out_attrs = {"dna_columns": [0, dims["dna"]], "protein_columns": [dims["dna"], width]}
    for kind in ("dna", "protein"):
        out_attrs.update({f"{kind}_{key}": value for key, value in meta[kind].items()})
    out_attrs.update(attrs or {})

    tally = _Tally(frames_tsv, pairs, missing_limit=None if allow_missing else 0)
    # One thread: a reader thread filling a second buffer while this one wrote did not make the
    # merge faster (1.37 GB in the page cache, 2 idle cores: 1.10 s median in one thread, 1.14 s
    # with the reader), and posix_fadvise already has the kernel read the shards ahead (see _Rows).
    buffer = np.empty((max(1, int(chunk_rows)), width), dtype=np.float32)  # one output chunk, reused
    with atomic_open(missing_ids_txt) as missing_out, EmbeddingWriter(out_h5, width, out_attrs) as writer:
        tally.missing_out = missing_out
        last_report = time.monotonic()
        # closing(): on an error the shard files are closed before the outputs are removed.
        with contextlib.closing(_blocks(frames_tsv, pairs, dims, skipped_by_shard, tally, buffer)) as blocks:
            for ids, rows in blocks:
                writer.append(ids, rows)  # UTF-8 bytes, stored as they are
                if time.monotonic() - last_report > 30:
                    last_report = time.monotonic()
                    log.info("merge: %d rows written (%.0f MB/s)", writer.rows,
                             writer.rows * width * 4 / 1e6 / (last_report - started))
        tally.place_strays()  # an id outside its shard: in two shards, or in the wrong one
        tally.check_missing()
        writer.attrs["ids_sha256"] = tally.ids_sha256.hexdigest()
        writer.attrs["embeddings_crc32"] = tally.crc32
        for key in ("expected", "missing", "skipped"):
            writer.attrs[key] = getattr(tally, key)
        report = {
            "expected": tally.expected, "present": writer.rows, "missing": tally.missing, "duplicates": 0,
            "extra": tally.extra, "skipped": tally.skipped, "allow_missing": bool(allow_missing),
            "ok": writer.rows == tally.expected,
            "missing_first": tally.missing_first, "extra_first": tally.extra_first,
            "skipped_ids": tally.skipped_entries,
            "shards": len(pairs), "dna_dim": dims["dna"], "protein_dim": dims["protein"],
            "ids_sha256": tally.ids_sha256.hexdigest(), "embeddings_crc32": tally.crc32, "version": __version__,
        }
        # Inside the writer's block: a failure here leaves no embeddings.h5 either.
        with atomic_open(validation_json) as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")
    seconds = time.monotonic() - started
    log.info("merged %d of %d expected ids (%d missing, %d skipped, %d extra) from %d shard pairs into %s: "
             "%d columns, %.1f s, %.0f MB/s", writer.rows, tally.expected, tally.missing, tally.skipped,
             tally.extra, len(pairs), out_h5, width, seconds, writer.rows * width * 4 / 1e6 / max(seconds, 1e-9))
    if tally.missing:
        log.warning("allow_missing: %d expected ids have no embedding and were left out (first: %s); "
                    "all are listed in %s", tally.missing, ", ".join(tally.missing_first), missing_ids_txt)
    if tally.extra:
        log.warning("%d ids in the shards are not in frames.tsv (left out), e.g. %s", tally.extra,
                    ", ".join(tally.extra_first))
    if tally.skipped:
        log.warning("%d ids were skipped by the embed jobs (on_error: skip) and are not in %s; reasons in %s",
                    tally.skipped, out_h5, validation_json)
    return report


# --- the shard files ---------------------------------------------------------------------------

def _shard_index(path):
    match = re.match(r"(\d+)", Path(path).name)
    if not match:
        raise InputError(f"{path}: shard file names start with the shard number (00000.dna.h5)")
    return int(match.group(1))


def _pair_shards(dna_shards, protein_shards):
    """{shard index: {"dna": path, "protein": path}}; every shard needs both files."""
    pairs = {}
    for kind, paths in (("dna", dna_shards), ("protein", protein_shards)):
        for path in paths:
            pair = pairs.setdefault(_shard_index(path), {})
            if kind in pair:
                raise InputError(f"{pair[kind]} and {path} are both {kind} shard {_shard_index(path)}; "
                                 "pass each shard file once")
            pair[kind] = Path(path)
    for index, pair in sorted(pairs.items()):
        if set(pair) != {"dna", "protein"}:
            have, lacking = (pair["dna"], "protein") if "dna" in pair else (pair["protein"], "dna")
            raise InputError(f"{have}: shard {index} has no {lacking} file; rerun the {lacking} embed job "
                             "of this shard")
    return pairs


def _inspect_shards(pairs, log):
    """Open every shard once before any work: complete files, one width and one model per kind.

    Returns dims {kind: columns}, meta {kind: attributes for the result} and
    {index: [(id, model kind, reason, path)]} of the ids the embed jobs skipped.
    """
    dims, meta, first, seen, skipped = {}, {"dna": {}, "protein": {}}, {}, {}, {}
    for index, pair in sorted(pairs.items()):
        for kind in ("dna", "protein"):
            path = pair[kind]
            with open_embeddings(path) as shard:
                if shard.attrs.get("kind", kind) != kind:
                    raise InputError(f"{path}: holds {shard.attrs['kind']} embeddings but was passed as a {kind} "
                                     "shard; check the file names")
                # A shard with no rows proves nothing about the width: (0, 0) from an idle worker is fine.
                if len(shard) or shard.dim:
                    if dims.setdefault(kind, shard.dim) != shard.dim:
                        raise ValidationError(
                            f"{path}: embeddings have {shard.dim} columns where {first[kind]} has {dims[kind]}; "
                            f"the {kind} shards were made with different models: delete the odd ones and rerun "
                            "their embed jobs")
                    first.setdefault(kind, path)
                for key in COPIED:
                    if key not in shard.attrs:
                        continue
                    value = shard.attrs[key]
                    value = value.item() if hasattr(value, "item") else value
                    before = seen.setdefault((kind, key), {value: path})
                    if value not in before:
                        if key in MUST_AGREE:
                            other_value, other = next(iter(before.items()))
                            raise ValidationError(
                                f"{path}: {key} {value!r} but {other} has {other_value!r}; all {kind} shards "
                                "must come from one model: rerun the embed jobs of the odd ones")
                        before[value] = path
                for sid, reason in shard.skipped():
                    skipped.setdefault(index, []).append((sid, kind, reason, str(path)))
    for (kind, key), values in seen.items():
        meta[kind][key] = ",".join(map(str, values)) if len(values) > 1 else next(iter(values))
        if len(values) > 1:
            log.warning("%s shards differ in %s: %s", kind, key, ", ".join(f"{v} ({p})" for v, p in values.items()))
    for kind in ("dna", "protein"):
        dims.setdefault(kind, 0)  # no rows anywhere: an empty result still has a width, 0 if unknown
        meta[kind]["dim"] = dims[kind]
    return dims, meta, skipped


def _ids(shard):
    """The ids of a shard as a fixed-width bytes array (compact, sortable)."""
    raw = shard.file["sequence_ids"][()]
    return raw.astype("S") if len(raw) else np.empty(0, dtype="S1")


def _sorted_unique(ids, path):
    """(order, ids[order]); an id twice in one file is an error."""
    order = np.argsort(ids, kind="stable")
    ordered = ids[order]
    twice = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(twice):
        sid = ordered[twice[0]].decode()
        raise ValidationError(f"{path}: id {sid} occurs twice in this shard; delete it and rerun its embed job")
    return order, ordered


def _lookup(ordered, wanted):
    """Index into `ordered` (sorted) of each wanted id, and whether it is there."""
    if len(ordered) == 0:
        return np.zeros(len(wanted), dtype=np.int64), np.zeros(len(wanted), dtype=bool)
    at = np.minimum(np.searchsorted(ordered, wanted), len(ordered) - 1)
    return at, ordered[at] == wanted


class _Rows:
    """Copies rows of one shard's `embeddings` into columns of the output buffer.

    Files written by virnucflow.shards are plain float32 in whole-row chunks, so a row is
    `dim * 4` bytes at a known file offset: those are read with preadv straight into the buffer
    (any row order, GIL released, ~30x faster than h5py's point selections for shuffled rows).
    Any other layout (compressed, foreign) goes through h5py.
    """

    def __init__(self, shard):
        self.path, self.dataset = shard.path, shard.embeddings
        self.row_bytes = 4 * shard.dim
        self.fd, self.chunk_offsets, self.chunk_rows = None, None, None
        layout = self._layout()
        if layout is not None:
            self.chunk_rows, self.chunk_offsets = layout
            self.fd = os.open(self.path, os.O_RDONLY)
            if hasattr(os, "posix_fadvise"):  # the kernel reads the file ahead, so rows in any order come from memory
                os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_WILLNEED)
            if not self._layout_reads_like_h5py():
                self.close()

    def _layout(self):
        ds = self.dataset
        n = ds.shape[0]
        if n == 0 or ds.dtype != np.dtype("<f4") or self.row_bytes == 0:
            return None
        plist = ds.id.get_create_plist()
        if plist.get_nfilters() or plist.get_external_count():
            return None
        if plist.get_layout() == h5py.h5d.CONTIGUOUS:
            offset = ds.id.get_offset()
            return None if offset is None else (n, np.array([offset], dtype=np.int64))
        if plist.get_layout() != h5py.h5d.CHUNKED or ds.chunks[1] != ds.shape[1]:
            return None
        rows = ds.chunks[0]
        offsets = np.full(-(-n // rows), -1, dtype=np.int64)
        whole = rows * self.row_bytes

        def visit(info):
            if info.size == whole and info.filter_mask == 0:
                offsets[info.chunk_offset[0] // rows] = info.byte_offset

        try:
            ds.id.chunk_iter(visit)
        except (AttributeError, RuntimeError, NotImplementedError):  # older HDF5: one call per chunk
            for i in range(ds.id.get_num_chunks()):
                visit(ds.id.get_chunk_info(i))
        return None if (offsets < 0).any() else (rows, offsets)

    def _layout_reads_like_h5py(self):
        """The offsets are only trusted when they give the same bytes as h5py (first and last row)."""
        n = self.dataset.shape[0]
        rows = [0, n - 1] if n > 1 else [0]
        probe = np.empty((len(rows), self.row_bytes // 4), dtype=np.float32)
        try:
            self._preadv(np.array(rows), probe, slice(None))
        except (InputError, OSError):
            return False
        return np.array_equal(probe.view(np.uint32), self.dataset[rows].view(np.uint32))

    def _preadv(self, rows, out, columns):
        offsets = self.chunk_offsets[rows // self.chunk_rows] + (rows % self.chunk_rows) * self.row_bytes
        order = np.argsort(offsets, kind="stable")
        offsets = offsets[order]
        order = order.tolist()
        # Runs of rows that lie end to end in the file: one preadv each, scattered into the buffer.
        breaks = [0, *(np.flatnonzero(np.diff(offsets) != self.row_bytes) + 1).tolist(), len(order)]
        for start, stop in zip(breaks[:-1], breaks[1:]):
            for part in range(start, stop, IOV_MAX):
                targets = [out[row, columns] for row in order[part : min(stop, part + IOV_MAX)]]
                got = os.preadv(self.fd, targets, int(offsets[part]))
                if got != len(targets) * self.row_bytes:
                    raise InputError(f"{self.path}: file ends inside its embeddings (truncated); delete it and "
                                     "rerun its embed job")

    def read(self, rows, out, columns):
        """out[i, columns] = embeddings[rows[i]] for every i."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return
        if self.fd is not None:
            return self._preadv(rows, out, columns)
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        breaks = [0, *(np.flatnonzero(np.diff(ordered) != 1) + 1).tolist(), len(rows)]
        for start, stop in zip(breaks[:-1], breaks[1:]):
            for part in range(start, stop, 1024):  # bounded temporary per h5py read
                end = min(stop, part + 1024)
                out[order[part:end], columns] = self.dataset[int(ordered[part]) : int(ordered[end - 1]) + 1]

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@contextlib.contextmanager
def _open_pair(pair, rows=True):
    with open_embeddings(pair["dna"]) as dna, open_embeddings(pair["protein"]) as protein:
        readers = (_Rows(dna), _Rows(protein)) if rows else ()
        try:
            yield dna, protein, readers
        finally:
            for reader in readers:
                reader.close()


# --- the expected ids and the bookkeeping --------------------------------------------------------

def _expected_by_shard(frames_tsv):
    """(shard index, ids as bytes) per shard, streamed from frames.tsv, whose shards are contiguous runs."""
    with open(frames_tsv, "rb") as handle:
        header = handle.readline().rstrip(b"\r\n").split(b"\t")
        if header[0] != b"frame_id" or b"shard" not in header:
            raise InputError(f"{frames_tsv}: not a frames.tsv written by prepare (header {header[:3]}...); "
                             "rerun prepare for this sample")
        column = header.index(b"shard")
        current, ids, done = None, [], set()
        for number, line in enumerate(handle, 2):
            fields = line.rstrip(b"\r\n").split(b"\t")
            if fields == [b""]:
                continue
            try:
                index = int(fields[column])
            except (IndexError, ValueError):
                raise InputError(f"{frames_tsv}, line {number}: no shard number in column {column + 1}; "
                                 "rerun prepare for this sample") from None
            if index != current:
                if current is not None:
                    yield current, ids
                if index in done:
                    raise InputError(f"{frames_tsv}, line {number}: shard {index} is split into runs that are "
                                     "not contiguous; rerun prepare for this sample")
                done.add(index)
                current, ids = index, []
            ids.append(fields[0])
        if current is not None:
            yield current, ids


class _Tally:
    """Counts, the missing ids (streamed to missing_ids.txt) and ids found outside their shard."""

    def __init__(self, frames_tsv, pairs, missing_limit):
        self.frames_tsv, self.pairs = frames_tsv, pairs
        self.missing_limit = missing_limit  # 0: the first missing id dooms the merge; None: allowed
        self.missing_out = None
        self.expected = self.missing = self.extra = self.skipped = 0
        self.missing_first, self.extra_first, self.skipped_entries = [], [], []
        self.missing_shards = set()
        self.strays = {}  # id -> shard file, for ids not expected in the shard that holds them
        self.ids_sha256, self.crc32 = hashlib.sha256(), 0  # of the result, block by block

    def checksum(self, ids, rows):
        self.ids_sha256.update(b"\n".join(ids) + b"\n")
        self.crc32 = zlib.crc32(rows, self.crc32)

    @property
    def doomed(self):
        return self.missing_limit is not None and self.missing > self.missing_limit

    def add_missing(self, index, ids):
        if not len(ids):
            return
        self.missing += len(ids)
        self.missing_shards.add(index)
        self.missing_first += [sid.decode() for sid in ids[: SHOW - len(self.missing_first)]]
        self.missing_out.write(b"".join(sid + b"\n" for sid in ids.tolist()).decode())

    def add_strays(self, ids, path):
        for sid in ids.tolist():
            other = self.strays.setdefault(sid, path)
            if other != path:
                raise ValidationError(f"id {sid.decode()} occurs in two shards: {other} and {path}; "
                                      "rerun prepare and the embed jobs of this sample")
        if len(self.strays) >= STRAY_BATCH:
            self.place_strays()

    def place_strays(self):
        """Scan frames.tsv for the stray ids: expected elsewhere is an error, expected nowhere is extra."""
        if not self.strays:
            return
        for index, ids in _expected_by_shard(self.frames_tsv):
            for sid in ids:
                if sid in self.strays:
                    self._misplaced(sid, self.strays[sid], index)
        self.extra += len(self.strays)
        self.extra_first += [sid.decode() for sid in list(self.strays)[: SHOW - len(self.extra_first)]]
        self.strays = {}

    def _misplaced(self, sid, path, home):
        pair = self.pairs.get(home)
        if pair is not None:
            with open_embeddings(pair["dna"]) as shard:
                if sid in set(_ids(shard).tolist()):
                    raise ValidationError(f"id {sid.decode()} occurs in two shards: {pair['dna']} and {path}; "
                                          "rerun prepare and the embed jobs of this sample")
        raise ValidationError(f"id {sid.decode()} is in {path} but frames.tsv puts it in shard {home}; "
                              "rerun prepare and the embed jobs of this sample")

    def check_missing(self):
        if self.doomed:
            shards = ", ".join(f"{i:05d}" for i in sorted(self.missing_shards)[:SHOW])
            raise ValidationError(
                f"{self.missing} of {self.expected} expected ids have no embedding, first "
                f"{len(self.missing_first)}: {', '.join(self.missing_first)}; rerun the embed jobs of shard(s) "
                f"{shards} (or set allow_missing: true to merge what exists)")


def _join(index, expected, pair, dna, protein, skipped, tally):
    """Check one shard pair's ids and join them to the shard's expected ids (in frames.tsv order).

    Returns (ids, dna rows, protein rows) of the expected ids that both files hold.
    """
    dna_order, dna_sorted = _sorted_unique(_ids(dna), pair["dna"])
    protein_order, protein_sorted = _sorted_unique(_ids(protein), pair["protein"])
    skipped_ids = np.array(sorted({sid.encode() for sid, *_ in skipped}), dtype="S") if skipped else None
    dna_kept, protein_kept = dna_sorted, protein_sorted
    if skipped_ids is not None:  # an id one model skipped may be in the other file: not a disagreement
        dna_kept = dna_sorted[~np.isin(dna_sorted, skipped_ids)]
        protein_kept = protein_sorted[~np.isin(protein_sorted, skipped_ids)]
    if len(dna_kept) != len(protein_kept) or not np.array_equal(dna_kept, protein_kept):
        odd = [sid.decode() for sid in np.setxor1d(dna_kept, protein_kept)[:SHOW]]
        raise ValidationError(f"{pair['dna']} and {pair['protein']} hold different ids (e.g. {', '.join(odd)}); "
                              "rerun both embed jobs of this shard")

    expected = np.array(expected, dtype="S") if expected else np.empty(0, dtype="S1")
    tally.expected += len(expected)
    if len(np.unique(expected)) != len(expected):
        values, counts = np.unique(expected, return_counts=True)
        raise InputError(f"{tally.frames_tsv}: frame id {values[counts > 1][0].decode()} is listed twice; "
                         "rerun prepare for this sample")
    at_dna, in_dna = _lookup(dna_sorted, expected)
    at_protein, in_protein = _lookup(protein_sorted, expected)
    present = in_dna & in_protein
    absent = ~present
    if skipped_ids is not None:
        was_skipped = absent & np.isin(expected, skipped_ids)
        absent &= ~was_skipped
        wanted = set(expected[was_skipped].tolist())
        tally.skipped += int(was_skipped.sum())
        tally.skipped_entries += [{"id": sid, "model": kind, "reason": why, "shard": path}
                                  for sid, kind, why, path in skipped if sid.encode() in wanted]
    tally.add_missing(index, expected[absent])

    hit = np.zeros(len(dna_sorted), dtype=bool)
    hit[at_dna[in_dna]] = True
    tally.add_strays(dna_sorted[~hit], pair["dna"])
    return expected[present], dna_order[at_dna[present]], protein_order[at_protein[present]]


def _blocks(frames_tsv, pairs, dims, skipped, tally, buffer):
    """(ids, rows) blocks of the result in frames.tsv order, each filled into `buffer` (the caller
    writes a block before asking for the next)."""
    dna_columns, protein_columns = slice(0, dims["dna"]), slice(dims["dna"], dims["dna"] + dims["protein"])
    filled, ids = 0, []

    def shards():
        named = set()
        for index, expected in _expected_by_shard(frames_tsv):
            named.add(index)
            yield index, expected
        for index in sorted(set(pairs) - named):  # files for a shard frames.tsv does not name: all extra
            yield index, []

    for index, expected in shards():
        pair = pairs.get(index)
        if pair is None:
            tally.expected += len(expected)
            tally.add_missing(index, np.array(expected, dtype="S"))
            continue
        with _open_pair(pair, rows=not tally.doomed) as (dna, protein, readers):
            own, dna_at, protein_at = _join(index, expected, pair, dna, protein, skipped.get(index, []), tally)
            if tally.doomed:  # the merge will fail: only count what else is missing
                continue
            dna_rows, protein_rows = readers
            done = 0
            while done < len(own):
                take = min(len(buffer) - filled, len(own) - done)
                part = slice(done, done + take)
                dna_rows.read(dna_at[part], buffer[filled : filled + take], dna_columns)
                protein_rows.read(protein_at[part], buffer[filled : filled + take], protein_columns)
                ids += own[part].tolist()
                filled += take
                done += take
                if filled == len(buffer):
                    tally.checksum(ids, buffer)
                    yield ids, buffer
                    filled, ids = 0, []
    if filled and not tally.doomed:
        tally.checksum(ids, buffer[:filled])
        yield ids, buffer[:filled]


# --- for users of the original tool --------------------------------------------------------------

def export_virnucpro_pt(embeddings_h5, out_pt):
    """VirNucPro's merged .pt ({'ids': [...], 'data': tensor(N, D)}) for users of the original tool.
    Holds the whole sample in memory, as the original does."""
    import torch

    with open_embeddings(embeddings_h5) as merged:
        data = {"ids": merged.read_ids(), "data": torch.from_numpy(merged.embeddings[:])}
    with atomic_path(out_pt) as tmp:
        torch.save(data, tmp)
