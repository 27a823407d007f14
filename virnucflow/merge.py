"""The merge: every shard of a sample -> one HDF5, DNABERT-S block then ESM-2 block, joined by id
in frames.tsv order, validated on the way.

One streaming pass, shard by shard in frames.tsv order. Before any row is copied, every shard file
is opened and, when the shard FASTA files are given (the workflow gives them), matched to the FASTA it
was computed from (its `input_sha256` against the FASTA's sha256 now). For each shard the ids of both
files are read, checked (the ids the embed job wrote, no id twice, both models hold the same ids,
every expected id there) and joined to the expected ids by id; then its rows are copied `buffer_rows`
at a time into the output, and checked against the checksum written with them on the way (rows the
result does not need are read for the check too). Memory is one buffer of rows plus one shard's ids,
whatever the size of the sample. The checks are virnucflow.validation's (the rows' checksums:
virnucflow.checksums); the shard files are read and written by virnucflow.embeddings, their rows read by
virnucflow.rows.

Everything is written under temporary names and renamed only when the whole sample is valid, so
a failed merge leaves no embeddings.h5, validation.json or missing_ids.txt behind. A missing id
found early stops the copying; the ids of the remaining shards are still read so that the error
gives the full count.

Result attributes (besides those of every embedding file: dim, rows, package_version, complete):
- `dtype`: how `embeddings` is stored, "float32" (the default, the shards' values exactly) or "float16"
  (`merge.dtype: float16`: each value rounded to the nearest half-precision number, half the bytes;
  readers widen it back to float32, `EmbeddingFile.read_rows`).
- `dna_columns`, `protein_columns`: [start, stop) of each model's block.
- `dna_model`, `dna_model_revision`, `dna_pooling`, `dna_precision` and the same for `protein_`
  (plus `protein_layer`): copied from the shards, which must agree on model, revision, pooling and
  layer; a precision that differs between shards is kept as a comma-separated list, with a warning.
- `expected`, `missing`, `skipped`: counts, as in validation.json; `compat`, `chunk_length`: of the
  prepare run (a classifier trained on another chunk length is refused by predict).
- `dna_oom_split_rows`, `protein_oom_split_rows`: rows the embed jobs computed in smaller batches after
  running out of memory (they can differ from an unsplit run in the last bits).
- Checksums, as in every embedding file (virnucflow.checksums): `ids_sha256` = SHA-256 of the ids in
  row order, each followed by "\\n" (UTF-8); `embeddings_crc32` = CRC-32 (zlib) of the little-endian
  bytes of `embeddings` as stored (float32, or float16 with `dtype` float16) in row order. Check a copy with
  `zlib.crc32(f["embeddings"][:].tobytes())` (or chunk-wise, feeding each value into the next call);
  `embeddings_sum64`, which `virnucflow.embeddings.verify_checksums` checks. Where the sums add up
  (`checksums.sums_add_up`: float32, a DNA block of whole 8-byte words) the result's row sums are those
  of the shards' rows, which the merge computes anyway to check them; elsewhere the writer sums the rows.
"""

import contextlib
import logging
import time

import numpy as np

from .atomic import atomic_open
from .checksums import RowsVerifier, sums_add_up
from .embeddings import EmbeddingWriter, open_embeddings
from .rows import RowReader
from .validation import Tally, check_rows, inspect_shards, join, validation_report, write_validation_json
from .workfiles import frames_by_shard

log = logging.getLogger(__name__)
PROGRESS_SECONDS = 30


def merge_sample(frames_tsv, dna_shards, protein_shards, out_h5, *, validation_json, missing_ids_txt, buffer_rows,
                 allow_missing, chunk_length, compat, dna_fasta=None, protein_fasta=None, dtype="float32"):
    """Write the merged embeddings.h5, validation.json and missing_ids.txt of one sample; return the
    validation report. `dna_shards`, `protein_shards`: the shard files in shard order (the i-th of each
    is shard i of frames.tsv); `dna_fasta`, `protein_fasta`: the shard FASTA files they were computed
    from, in the same order (None: not checked); `dtype`: how the result stores its rows, "float32" or
    "float16" (config merge.dtype; the shards are read and checked as float32 either way). Raises
    ValidationError / InputError (and writes nothing) when the shards do not account for every expected
    id exactly once (missing ids are allowed with `allow_missing`), or a shard is stale or damaged."""
    started = time.monotonic()
    shards = inspect_shards(dna_shards, protein_shards, dna_fasta, protein_fasta)
    if dna_fasta is None or protein_fasta is None:
        log.info("no shard FASTA given for %s: the shards are not matched to the FASTA they were computed from",
                 ", ".join(kind for kind, given in (("dna", dna_fasta), ("protein", protein_fasta)) if given is None))
    dims = shards.dims
    width = dims["dna"] + dims["protein"]
    out_attrs = _result_attrs(shards, chunk_length, compat, dtype)
    # The result is about as large as its shards: what a full disk's message names.
    expected_rows = max(shards.rows.values())

    # One thread: a reader thread filling a second buffer while this one wrote did not make the
    # merge faster (1.37 GB in the page cache, 2 idle cores: 1.10 s median in one thread, 1.14 s
    # with the reader), and posix_fadvise already has the kernel read the shards ahead (see RowReader).
    buffer = np.empty((max(1, int(buffer_rows)), width), dtype=np.float32)  # one output block, reused
    with atomic_open(missing_ids_txt) as missing_out, \
            EmbeddingWriter(out_h5, width, out_attrs, expected_rows=expected_rows, dtype=dtype) as writer:
        tally = Tally(frames_tsv, shards.pairs, missing_out, allow_missing)
        last_report = time.monotonic()
        # closing(): on an error the shard files are closed before the outputs are removed.
        with contextlib.closing(_blocks(frames_tsv, shards, tally, buffer, dtype)) as blocks:
            for ids, rows, row_sums in blocks:
                writer.append(ids, rows, row_sums)  # ids: UTF-8 bytes, stored as they are
                if time.monotonic() - last_report > PROGRESS_SECONDS:
                    last_report = time.monotonic()
                    log.info("merge: %d rows written (%.0f MB/s)", writer.rows,
                             writer.rows * width * 4 / 1e6 / (last_report - started))
        tally.finish()
        for key in ("expected", "missing", "skipped"):
            writer.attrs[key] = getattr(tally, key)
        # the checksums of every row now written; the writer stores them at close
        report = validation_report(tally, writer.rows, shards, allow_missing, writer.checksums())
        # Inside the writer's block: a failure here leaves no embeddings.h5 either.
        write_validation_json(report, validation_json)
    seconds = time.monotonic() - started
    log.info("merged %d of %d expected ids (%d missing, %d skipped, %d extra) from %d shard pairs into %s: "
             "%d columns, %.1f s, %.0f MB/s", writer.rows, tally.expected, tally.missing, tally.skipped,
             tally.extra, len(shards.pairs), out_h5, width, seconds,
             writer.rows * width * np.dtype(dtype).itemsize / 1e6 / max(seconds, 1e-9))
    _warn_about_ids(tally, out_h5, validation_json, missing_ids_txt)
    return report


def _result_attrs(shards, chunk_length, compat, dtype):
    """The result's attributes: each block's columns, each model's provenance, the prepare settings."""
    dims = shards.dims
    attrs = {"dna_columns": [0, dims["dna"]], "protein_columns": [dims["dna"], dims["dna"] + dims["protein"]]}
    for kind in ("dna", "protein"):
        attrs.update({f"{kind}_{key}": value for key, value in shards.meta[kind].items()})
    attrs.update(chunk_length=int(chunk_length), compat=str(compat), dtype=str(dtype))
    return attrs


def _warn_about_ids(tally, out_h5, validation_json, missing_ids_txt):
    if tally.missing:
        log.warning("allow_missing: %d expected ids have no embedding and were left out (first: %s); "
                    "all are listed in %s", tally.missing, ", ".join(tally.missing_first), missing_ids_txt)
    if tally.extra:
        log.warning("%d ids in the shards are not in frames.tsv (left out), e.g. %s", tally.extra,
                    ", ".join(tally.extra_first))
    if tally.skipped:
        log.warning("%d ids were skipped by the embed jobs (on_error: skip) and are not in %s; reasons in %s",
                    tally.skipped, out_h5, validation_json)


@contextlib.contextmanager
def _open_pair(pair, rows=True):
    """Both files of a shard, and a RowReader of each when `rows`."""
    with open_embeddings(pair["dna"]) as dna, open_embeddings(pair["protein"]) as protein, \
            contextlib.ExitStack() as stack:
        yield dna, protein, [stack.enter_context(RowReader(shard)) for shard in (dna, protein)] if rows else []


def _shards_in_order(frames_tsv, pairs):
    """(shard index, expected ids) in frames.tsv order, then shards that frames.tsv does not name (all extra)."""
    named = set()
    for index, expected in frames_by_shard(frames_tsv):
        named.add(index)
        yield index, expected
    for index in sorted(set(pairs) - named):
        yield index, []


def _blocks(frames_tsv, shards, tally, buffer, dtype):
    """(ids, rows, their row_sums64 or None) blocks of the result in frames.tsv order, each filled into
    `buffer` (the caller writes a block before asking for the next). Each shard file's rows are checked
    against their checksum once the shard is done; the row sums of that check are the result's where
    they add up (`checksums.sums_add_up`: the result, stored as `dtype`, is not summed again)."""
    dims = shards.dims
    dna_columns, protein_columns = slice(0, dims["dna"]), slice(dims["dna"], dims["dna"] + dims["protein"])
    sums = np.zeros(len(buffer), dtype=np.uint64) if sums_add_up(dims["dna"], buffer.dtype, dtype) else None
    filled, ids = 0, []
    for index, expected in _shards_in_order(frames_tsv, shards.pairs):
        pair = shards.pairs.get(index)
        if pair is None:
            tally.add_unpaired(index, expected)
            continue
        with _open_pair(pair, rows=not tally.doomed) as (dna, protein, readers):
            own, dna_at, protein_at = join(index, expected, pair, dna, protein, shards.skipped.get(index, []),
                                           tally)
            if tally.doomed:  # the merge will fail: only count what else is missing
                continue
            dna_rows, protein_rows = readers
            checks = RowsVerifier(dna.attrs, len(dna)), RowsVerifier(protein.attrs, len(protein))
            done = 0
            while done < len(own):
                take = min(len(buffer) - filled, len(own) - done)
                part = slice(done, done + take)
                block = buffer[filled : filled + take]
                dna_rows.read(dna_at[part], block, dna_columns)
                protein_rows.read(protein_at[part], block, protein_columns)
                dna_sums = checks[0].add(dna_at[part], block[:, dna_columns])
                protein_sums = checks[1].add(protein_at[part], block[:, protein_columns])
                if sums is not None:
                    np.add(dna_sums, protein_sums, out=sums[filled : filled + take])
                ids += own[part].tolist()
                filled += take
                done += take
                if filled == len(buffer):
                    yield ids, buffer, sums
                    filled, ids = 0, []
            # Rows of this shard the result does not hold (extra or skipped ids): read for the check only.
            for check, reader, shard in zip(checks, readers, (dna, protein)):
                scratch = np.empty((min(len(buffer), max(len(shard), 1)), shard.dim), dtype=np.float32)
                check_rows(shard, check, reader, scratch)
    if filled and not tally.doomed:
        yield ids, buffer[:filled], None if sums is None else sums[:filled]
