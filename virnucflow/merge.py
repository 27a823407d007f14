"""The merge: every shard of a sample -> one HDF5, DNABERT-S block then ESM-2 block, joined by id
in frames.tsv order, validated before a single row is written.

Two passes. The first reads only ids and checks them: every expected id once, both models agree,
dims consistent, shards complete. The second copies rows `chunk_rows` at a time, so memory depends
on the chunk size (and one shard's ids), not on the sample.
"""

import csv
import hashlib
import json
import re
from itertools import groupby, islice
from pathlib import Path

import numpy as np

from . import __version__
from .atomic import atomic_open
from .errors import InputError, ValidationError
from .shards import EmbeddingWriter, open_embeddings

SHOW = 10  # ids named in an error message


def _shard_index(path):
    match = re.match(r"(\d+)", Path(path).name)
    if not match:
        raise InputError(f"{path}: shard file names start with the shard number (00000.dna.h5)")
    return int(match.group(1))


def _iter_expected(frames_tsv):
    """(shard index, [frame ids]) per shard, streamed from frames.tsv (whose shards are contiguous)."""
    with open(frames_tsv, newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if not header or header[0] != "frame_id" or "shard" not in header:
            raise InputError(f"{frames_tsv}: not a frames.tsv written by prepare; rerun prepare for this sample")
        column = header.index("shard")
        for index, rows in groupby(reader, key=lambda row: int(row[column])):
            yield index, [row[0] for row in rows]


def _positions(ids):
    """{id: row}, and the first id that occurs twice (or None)."""
    positions = {}
    for row, sid in enumerate(ids):
        if sid in positions:
            return positions, sid
        positions[sid] = row
    return positions, None


def _read_rows_into(dataset, rows, out, columns):
    """out[:len(rows), columns] = dataset[rows], for rows in any order, without a second copy when the
    rows are contiguous (the usual case: embed jobs write in shard order)."""
    rows = np.asarray(rows)
    n = len(rows)
    if n == 0:
        return
    if rows[-1] - rows[0] == n - 1 and np.all(np.diff(rows) == 1):
        dataset.read_direct(out, np.s_[int(rows[0]) : int(rows[-1]) + 1], np.s_[0:n, columns])
        return
    order = np.argsort(rows)
    for start in range(0, n, 1024):  # h5py wants increasing indices; small blocks bound the copy
        part = order[start : start + 1024]
        out[part, columns] = dataset[rows[part].tolist()]


def merge_sample(frames_tsv, dna_shards, protein_shards, out_h5, *, validation_json, missing_ids_txt,
                 chunk_rows=10_000, threads=1, allow_missing=False, attrs=None, log=None):
    """Write the merged embeddings.h5, validation.json and missing_ids.txt of one sample."""
    files = {}
    for kind, paths in (("dna", dna_shards), ("protein", protein_shards)):
        for path in paths:
            files.setdefault(_shard_index(path), {})[kind] = Path(path)
    for index, pair in sorted(files.items()):
        if set(pair) != {"dna", "protein"}:
            have = next(iter(pair.values()))
            raise InputError(f"{have}: shard {index} has no {'protein' if 'dna' in pair else 'dna'} partner; "
                             "rerun the embed jobs of this shard")
    # 8 bytes per expected id: enough to tell an id in the wrong shard from an id nobody expects.
    expected_hashes = np.sort(np.fromiter((hash(i) for _, ids in _iter_expected(frames_tsv) for i in ids),
                                          dtype=np.int64))
    n_expected = len(expected_hashes)

    def shards_in_order():
        """(index, expected ids, file pair or None) for every shard named by frames.tsv or by a file."""
        seen = set()
        for index, own in _iter_expected(frames_tsv):
            seen.add(index)
            yield index, own, files.get(index)
        for index in sorted(set(files) - seen):
            yield index, [], files[index]

    def read_ids(pair):
        ids = {}
        for kind, path in pair.items():
            with open_embeddings(path) as shard:
                positions, twice = _positions(shard.read_ids())
                if twice is not None:
                    raise ValidationError(f"{path}: id {twice} occurs twice in this shard; rerun its embed job")
                ids[kind] = positions
        return ids

    # Pass 1: ids only, one shard at a time.
    misplaced = None  # (id, shard file) of an expected id found outside its own shard
    missing, extra, skipped, dims, meta = [], [], [], {}, {}
    for index, own, pair in shards_in_order():
        if pair is None:
            missing += own
            continue
        ids = read_ids(pair)
        skipped_here = set()
        for kind, path in pair.items():
            with open_embeddings(path) as shard:
                if dims.setdefault(kind, shard.dim) != shard.dim:
                    raise ValidationError(f"{path}: embeddings have {shard.dim} columns, other {kind} shards "
                                          f"{dims[kind]}; rerun all embed jobs with the same model")
                meta.setdefault(kind, {k: shard.attrs[k] for k in ("model", "model_revision", "pooling", "precision")
                                       if k in shard.attrs})
                for sid, why in shard.skipped():
                    skipped.append({"id": sid, "model": kind, "reason": why, "shard": str(path)})
                    skipped_here.add(sid)
        dna_ids = set(ids["dna"]) - skipped_here
        protein_ids = set(ids["protein"]) - skipped_here
        if dna_ids != protein_ids:
            odd = sorted(dna_ids ^ protein_ids)[:SHOW]
            raise ValidationError(f"{pair['dna']} and {pair['protein']} hold different ids (e.g. {', '.join(odd)}); "
                                  "rerun both embed jobs of this shard")
        own_set = set(own)
        for sid in dna_ids - own_set:
            position = np.searchsorted(expected_hashes, hash(sid))
            if position < n_expected and expected_hashes[position] == hash(sid):
                misplaced = misplaced or (sid, pair["dna"])
            else:
                extra.append(sid)
        missing += [sid for sid in own if sid not in dna_ids and sid not in skipped_here]
    if misplaced:
        sid, path = misplaced
        home = next(i for i, own in _iter_expected(frames_tsv) if sid in own)
        other = files.get(home, {}).get("dna")
        if other is not None and sid in read_ids(files[home])["dna"]:
            raise ValidationError(f"id {sid} occurs in two shards: {other} and {path}; rerun prepare and the embed jobs")
        raise ValidationError(f"id {sid} is in {path} but frames.tsv puts it in shard {home}; rerun prepare and the "
                              "embed jobs")
    if extra and log:
        log.warning("%d ids in the shards are not in frames.tsv (ignored), e.g. %s", len(extra), ", ".join(extra[:SHOW]))
    if missing and not allow_missing:
        raise ValidationError(f"{len(missing)} of {n_expected} expected ids have no embedding, first {min(SHOW, len(missing))}: "
                              f"{', '.join(missing[:SHOW])}; rerun the embed jobs of their shards "
                              "(or set allow_missing: true to merge what exists)")
    if "dna" not in dims:  # no shard at all: an empty sample still gets a file of the right width
        dims = {"dna": 0, "protein": 0}

    # Pass 2: rows, in frames.tsv order.
    width = dims["dna"] + dims["protein"]
    out_attrs = {
        "dna_columns": [0, dims["dna"]], "protein_columns": [dims["dna"], width],
        **{f"dna_{k}": v for k, v in meta.get("dna", {}).items()},
        **{f"protein_{k}": v for k, v in meta.get("protein", {}).items()},
        **(attrs or {}),
    }
    digest = hashlib.sha256()
    block_sums = np.zeros(2)
    absent = set(missing) | {entry["id"] for entry in skipped}
    buffer = np.empty((chunk_rows, width), dtype=np.float32)  # one output chunk, reused
    dna_cols, protein_cols = slice(0, dims["dna"]), slice(dims["dna"], width)
    with EmbeddingWriter(out_h5, width, out_attrs) as writer:
        for index, own, pair in shards_in_order():
            if pair is None:
                continue
            ids = read_ids(pair)
            with open_embeddings(pair["dna"]) as dna, open_embeddings(pair["protein"]) as protein:
                wanted = iter([sid for sid in own if sid not in absent])
                while chunk := list(islice(wanted, chunk_rows)):
                    rows = buffer[: len(chunk)]
                    _read_rows_into(dna.embeddings, [ids["dna"][sid] for sid in chunk], rows, dna_cols)
                    _read_rows_into(protein.embeddings, [ids["protein"][sid] for sid in chunk], rows, protein_cols)
                    writer.append(chunk, rows)
                    digest.update("\n".join(chunk).encode() + b"\n")
                    block_sums += [float(rows[:, dna_cols].sum(dtype=np.float64)),
                                   float(rows[:, protein_cols].sum(dtype=np.float64))]
        writer.attrs["ids_sha256"] = digest.hexdigest()
        writer.attrs["dna_block_sum"] = block_sums[0]
        writer.attrs["protein_block_sum"] = block_sums[1]
        present = writer.rows
        # Written inside the writer's block: a failure here leaves no embeddings.h5 either.
        report = {
            "expected": n_expected, "present": present, "missing": len(missing), "duplicates": 0,
            "extra": len(extra), "skipped": len(skipped), "skipped_ids": skipped,
            "missing_first": missing[:SHOW], "allow_missing": allow_missing, "ok": not missing and not skipped,
            "dna_dim": dims["dna"], "protein_dim": dims["protein"], "version": __version__,
        }
        with atomic_open(missing_ids_txt) as handle:
            handle.writelines(f"{sid}\n" for sid in missing)
        with atomic_open(validation_json) as handle:
            json.dump(report, handle, indent=2)
    if log:
        log.info("merged %d of %d expected ids (%d missing, %d skipped, %d extra) into %s: %d columns",
                 present, n_expected, len(missing), len(skipped), len(extra), out_h5, width)
        if missing:
            log.warning("allow_missing: %d ids left out, listed in %s", len(missing), missing_ids_txt)
    return report


def export_virnucpro_pt(embeddings_h5, out_pt):
    """VirNucPro's merged .pt ({'ids': [...], 'data': tensor(N, D)}) for users of the original tool.
    Holds the whole sample in memory: for samples that fit, as the original does."""
    import torch

    from .atomic import atomic_path

    with open_embeddings(embeddings_h5) as merged:
        data = {"ids": merged.read_ids(), "data": torch.from_numpy(merged.embeddings[:])}
    with atomic_path(out_pt) as tmp:
        torch.save(data, tmp)
