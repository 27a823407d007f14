"""Validation of a sample's embedding shards against its frames.tsv: every expected id embedded by
both models exactly once, in the shard prepare put it in, by one model per kind, from the shard FASTA
that is there now, and intact since its embed job wrote it.

- `inspect_shards`: pairs the files (the i-th DNA and the i-th protein file are shard i of frames.tsv)
  and opens each once before any work: complete files, one width and one model per kind, and (when
  the shard FASTA files are given) each computed from its FASTA as it is now: the `input_sha256` the
  embed job recorded against the file's sha256 (a stale shard of an earlier run fails here, before
  any row is copied).
- `join`: one shard pair's ids checked (no id twice, both models hold the same ids, the ids those the
  embed job wrote: `ids_sha256`) and joined to the shard's expected ids by id.
- `check_rows`: the rows of one shard file checked against the `embeddings_sum64` written with them
  (a `checksums.RowsVerifier` fed the rows the merge reads anyway, in any order), plus any it does not need.
- `Tally`: the counts of validation.json, the missing ids (streamed to missing_ids.txt) and the ids
  found outside their shard, placed once frames.tsv has been read.
- validation.json, a sample's counts and checksums: `validation_report` makes its content (every key),
  `write_validation_json` writes it, `read_validation_json` reads it.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .atomic import atomic_open
from .checksums import VERIFIED, RowsVerifier, ids_mismatch
from .embeddings import open_embeddings
from .errors import InputError, ValidationError
from .provenance import file_sha256
from .workfiles import frames_by_shard

log = logging.getLogger(__name__)
SHOW = 10  # ids named in a message
STRAY_BATCH = 100_000  # ids found outside their shard, held before frames.tsv is scanned to place them
MUST_AGREE = ("model", "model_revision", "pooling", "layer")  # shard attributes that change the numbers
COPIED = ("model", "model_revision", "pooling", "precision", "layer")
KINDS = ("dna", "protein")


@dataclass
class ShardSet:
    """A sample's shard files, checked: `pairs` {shard index: {"dna": path, "protein": path}}, `dims`
    {kind: columns}, `meta` {kind: attributes for the result}, `skipped` {shard index: [(id, kind,
    reason, path)]} of the ids the embed jobs skipped, `unverified` the files without checksums, `rows`
    {kind: rows in all its files}."""

    pairs: dict
    dims: dict
    meta: dict
    skipped: dict
    unverified: set
    rows: dict


def validation_report(tally, present, shards, allow_missing, checksums):
    """validation.json's content: `tally`'s counts and first ids, the `present` rows of the result, the
    `ShardSet`, and the result's `checksums` (no duplicates count: an id twice fails the merge, which writes none)."""
    return {
        "expected": tally.expected, "present": present, "missing": tally.missing,
        "extra": tally.extra, "skipped": tally.skipped, "allow_missing": bool(allow_missing),
        "ok": present == tally.expected,
        "missing_first": tally.missing_first, "extra_first": tally.extra_first,
        "skipped_ids": tally.skipped_entries,
        "shards": len(shards.pairs), "dna_dim": shards.dims["dna"], "protein_dim": shards.dims["protein"],
        "ids_sha256": checksums["ids_sha256"], "embeddings_crc32": checksums["embeddings_crc32"],
        "version": __version__,
    }


def write_validation_json(report, path):
    """A sample's validation.json: merge's `report` (counts, first missing ids, checksums), indented."""
    with atomic_open(path) as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")


def read_validation_json(path):
    """A sample's validation.json, as `validation_report` made it."""
    return json.loads(Path(path).read_text())


def check_input(path, recorded, fasta, actual):
    """A shard file computed from another version of its FASTA (or with no record of it) is an error."""
    if recorded is None:
        raise ValidationError(f"{path} does not record the sha256 of the FASTA it was computed from (written by an "
                              f"older virnucflow or another tool), so it cannot be matched to {fasta}: delete it and "
                              "rerun")
    if recorded != actual:
        raise ValidationError(f"{path} was computed from another {fasta} (sha256 {recorded[:12]}.. != "
                              f"{actual[:12]}.. now): delete it and rerun")


def pair_shards(dna_shards, protein_shards):
    """{shard index: {"dna": path, "protein": path}}: the i-th file of each list is shard i (the order
    in which prepare numbered the shards); every shard needs both files."""
    dna, protein = [Path(p) for p in dna_shards], [Path(p) for p in protein_shards]
    for kind, paths in (("dna", dna), ("protein", protein)):
        seen = set()
        for path in paths:
            if path in seen:
                raise InputError(f"{path} is passed twice as a {kind} shard; pass each shard file once")
            seen.add(path)
    for index in range(min(len(dna), len(protein)), max(len(dna), len(protein))):
        have, lacking = (dna[index], "protein") if index < len(dna) else (protein[index], "dna")
        raise InputError(f"{have}: shard {index} has no {lacking} file; rerun the {lacking} embed job of this "
                         "shard")
    return {index: {"dna": d, "protein": p} for index, (d, p) in enumerate(zip(dna, protein))}


def _shard_fastas(shards, **given):
    """{kind: [shard FASTA paths]} of the kinds whose FASTA files are given (one per shard, in order)."""
    fastas = {}
    for kind, paths in given.items():
        if paths is not None:
            if len(paths) != shards:
                raise InputError(f"{len(paths)} {kind} shard FASTA files for {shards} shards; pass one per "
                                 "shard, in the same order")
            fastas[kind] = [Path(f) for f in paths]
    return fastas


def _check_fasta(shard, fasta):
    """The shard file was computed from `fasta` as it is now (the sha256 its embed job recorded)."""
    if not fasta.is_file():
        raise InputError(f"{fasta}: shard FASTA not found; rerun prepare for this sample")
    recorded = shard.attrs.get("input_sha256")
    check_input(shard.path, None if recorded is None else str(recorded), fasta, file_sha256(fasta))


def _note_copied(shard, kind, seen):
    """Record the shard's COPIED attributes in `seen` {(kind, key): {value: first path}}; a MUST_AGREE
    attribute that differs from another shard's of the same kind is an error."""
    path = shard.path
    for key in COPIED:
        if key not in shard.attrs:
            continue
        value = shard.attrs[key]
        value = value.item() if hasattr(value, "item") else value
        before = seen.setdefault((kind, key), {value: path})
        if value not in before:
            if key in MUST_AGREE:
                other_value, other = next(iter(before.items()))
                raise ValidationError(f"{path}: {key} {value!r} but {other} has {other_value!r}; all {kind} shards "
                                      "must come from one model: rerun the embed jobs of the odd ones")
            before[value] = path


def inspect_shards(dna_shards, protein_shards, dna_fasta=None, protein_fasta=None):
    """The checked `ShardSet` of the given files; a file of the wrong kind, width or model, or computed
    from another version of its shard FASTA (`dna_fasta`, `protein_fasta`: in the same order, when
    given), is an error."""
    pairs = pair_shards(dna_shards, protein_shards)
    fastas = _shard_fastas(len(pairs), dna=dna_fasta, protein=protein_fasta)
    dims, meta, first, seen, skipped, unverified = {}, {kind: {} for kind in KINDS}, {}, {}, {}, set()
    rows, in_pieces = dict.fromkeys(KINDS, 0), dict.fromkeys(KINDS, 0)
    for index, pair in pairs.items():
        for kind in KINDS:
            path = pair[kind]
            with open_embeddings(path) as shard:
                if shard.attrs.get("kind", kind) != kind:
                    raise InputError(f"{path}: holds {shard.attrs['kind']} embeddings but was passed as a {kind} "
                                     "shard; check the file names")
                if kind in fastas:
                    _check_fasta(shard, fastas[kind][index])
                if any(key not in shard.attrs for key in VERIFIED):
                    unverified.add(str(path))
                rows[kind] += len(shard)
                in_pieces[kind] += int(shard.attrs.get("oom_split_rows", 0))
                # A shard with no rows proves nothing about the width: (0, 0) from an idle worker is fine.
                if len(shard) or shard.dim:
                    if dims.setdefault(kind, shard.dim) != shard.dim:
                        raise ValidationError(
                            f"{path}: embeddings have {shard.dim} columns where {first[kind]} has {dims[kind]}; "
                            f"the {kind} shards were made with different models: delete the odd ones and rerun "
                            "their embed jobs")
                    first.setdefault(kind, path)
                _note_copied(shard, kind, seen)
                for sid, reason in shard.skipped():
                    skipped.setdefault(index, []).append((sid, kind, reason, str(path)))
    for (kind, key), values in seen.items():
        meta[kind][key] = ",".join(map(str, values)) if len(values) > 1 else next(iter(values))
        if len(values) > 1:
            log.warning("%s shards differ in %s: %s", kind, key, ", ".join(f"{v} ({p})" for v, p in values.items()))
    for kind in KINDS:
        dims.setdefault(kind, 0)  # no rows anywhere: an empty result still has a width, 0 if unknown
        meta[kind]["dim"] = dims[kind]
        meta[kind]["oom_split_rows"] = in_pieces[kind]
        if in_pieces[kind]:
            log.warning("%d %s rows were computed in smaller batches after running out of memory (shard attribute "
                        "oom_split_rows, ids in oom_split_ids): they can differ from an unsplit run in the last bits",
                        in_pieces[kind], kind)
    if unverified:
        log.warning("%d shard files have no checksums (written by another tool or an older virnucflow): their ids "
                    "and rows cannot be verified, e.g. %s", len(unverified), sorted(unverified)[0])
    return ShardSet(pairs, dims, meta, skipped, unverified, rows)


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


class Tally:
    """Counts, the missing ids (streamed to `missing_out`) and ids found outside their shard."""

    def __init__(self, frames_tsv, pairs, missing_out, allow_missing):
        self.frames_tsv, self.pairs, self.missing_out = frames_tsv, pairs, missing_out
        self.missing_limit = None if allow_missing else 0  # 0: the first missing id dooms the merge
        self.expected = self.missing = self.extra = self.skipped = 0
        self.missing_first, self.extra_first, self.skipped_entries = [], [], []
        self.missing_shards = set()
        self.strays = {}  # id -> shard file, for ids not expected in the shard that holds them

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

    def add_unpaired(self, index, expected):
        """A shard that frames.tsv names but no file holds: all its ids are missing."""
        self.expected += len(expected)
        self.add_missing(index, np.array(expected, dtype="S"))

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
        for index, ids in frames_by_shard(self.frames_tsv):
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
                if sid in set(shard.id_bytes().tolist()):
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
                f"{shards} (or set merge.allow_missing: true to merge what exists)")

    def finish(self):
        """Place the remaining strays and fail on missing ids (unless allowed)."""
        self.place_strays()  # an id outside its shard: in two shards, or in the wrong one
        self.check_missing()


def check_ids(shard, ids):
    """The ids of a shard file (in file order) are those its embed job wrote (`ids_sha256`)."""
    mismatch = ids_mismatch(ids.tolist(), shard.attrs.get("ids_sha256"))
    if mismatch:
        raise ValidationError(f"{shard.path}: its sequence_ids do not match the ids_sha256 written with them "
                              f"{mismatch}: the file was changed after its embed job wrote it; delete it and rerun")


def check_rows(shard, verifier, reader, scratch):
    """Read the rows of `shard` that `verifier` has not seen (with `reader`, a `rows.RowReader`, through
    `scratch` (k, dim) float32) and fail when its rows do not match their `embeddings_sum64`."""

    def read(positions):
        reader.read(positions, scratch[: len(positions)], slice(None))
        return scratch[: len(positions)]

    if verifier.intact(read, len(scratch)) is False:
        raise ValidationError(f"{shard.path}: its embeddings do not match the embeddings_sum64 written with "
                              "them: the file was damaged after its embed job wrote it; delete it and rerun")


def join(index, expected, pair, dna, protein, skipped, tally):
    """Check one shard pair's ids and join them to the shard's expected ids (in frames.tsv order).

    Returns (ids, dna rows, protein rows) of the expected ids that both files hold.
    """
    dna_ids, protein_ids = dna.id_bytes(), protein.id_bytes()
    for shard, ids in ((dna, dna_ids), (protein, protein_ids)):
        check_ids(shard, ids)
    dna_order, dna_sorted = _sorted_unique(dna_ids, pair["dna"])
    protein_order, protein_sorted = _sorted_unique(protein_ids, pair["protein"])
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
