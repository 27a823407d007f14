"""The prepare stage: reads -> chunks -> surviving frames -> frames.tsv, reads.tsv, shards, summary.json.

Streams the input in batches of about 1 MiB of FASTA: memory is bounded by the batch, not the file
(about 50 MB peak RSS whatever the input size; a single read longer than a batch is held whole, a
few copies of it, so a 50 Mbp read peaks at about 240 MB). Everything is written into a temporary
folder beside `out_dir` and moved into place at the end, so a failure leaves nothing behind.
"""

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .fasta import BLOCK_BYTES, read_batches
from .frames import COMPAT_MODES, FRAME_NAMES, chunk_layout, find_frames

FRAMES_HEADER = "frame_id\tread_id\tchunk\tstrand\tframe\tstart\tend\tresidues\tshard\n"
READS_HEADER = "read_id\tlength\tchunks\tchunks_with_frames\tframes\n"
REPORT_SECONDS = 5
GROUP_BASES = 8 << 20  # a read longer than this is translated a few chunks at a time
_SUFFIX = [name.encode() for name in FRAME_NAMES]
_STRAND = [b"+", b"+", b"+", b"-", b"-", b"-"]
_PHASE = [1, 2, 3, 1, 2, 3]


def shard_name(index):
    return f"{index:05d}"


def _chunk_batches(batches, chunk_length, compat):
    """Per batch of reads: (batch, chunk table, frames). The chunk table has, per chunk: its read (index
    in the batch), its number in the read (1-based) and its start on the read; frames are find_frames
    lists with chunk indices into that table."""
    for batch in batches:
        read_of_chunk, starts = chunk_layout(batch.lengths, chunk_length, compat)
        read_offsets = np.cumsum(batch.lengths) - batch.lengths
        offsets = read_offsets[read_of_chunk] + starts
        lengths = np.minimum(batch.lengths[read_of_chunk] - starts, chunk_length)
        number = np.arange(len(starts)) - np.searchsorted(read_of_chunk, read_of_chunk) + 1
        frames = [[], [], [], [], [], []]
        # Usually one group; a very long read is translated in pieces so memory stays bounded.
        group = offsets // GROUP_BASES
        cuts = np.flatnonzero(np.diff(group)) + 1
        for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(offsets)]):
            base = int(offsets[lo])
            top = int((offsets[lo:hi] + lengths[lo:hi]).max())
            part = find_frames(batch.sequence[base:top], offsets[lo:hi] - base, lengths[lo:hi], compat)
            if lo:
                part = ([c + lo for c in part[0]], *part[1:])
            for column, values in zip(frames, part):
                column.extend(values)
        yield batch, (read_of_chunk, number, starts), frames


def chunk_records(fasta, chunk_length=500, compat="virnucpro"):
    """Yield VirNucPro's chunk records (chunk_id, sequence) as str: what its chunked<cs>.fa holds."""
    for batch in read_batches(fasta):
        read_of_chunk, starts = chunk_layout(batch.lengths, chunk_length, compat)
        read_offsets = (np.cumsum(batch.lengths) - batch.lengths).tolist()
        lengths = batch.lengths.tolist()
        previous, number = -1, 0
        for read, start in zip(read_of_chunk.tolist(), starts.tolist()):
            number = number + 1 if read == previous else 1
            previous = read
            offset = read_offsets[read] + start
            end = min(offset + chunk_length, read_offsets[read] + lengths[read])
            yield f"{batch.ids[read].decode()}_chunk_{number}", batch.sequence[offset:end].decode()


class _Shards:
    """Cuts the stream of frames into contiguous shards; a shard closes once it holds `limit` residues."""

    def __init__(self, folder, limit):
        self.folder = Path(folder)
        self.folder.mkdir()
        self.limit = limit
        self.index = 0
        self.residues = 0
        self._open()

    def _open(self):
        name = shard_name(self.index)
        self.files = (open(self.folder / f"{name}.fna", "wb"), open(self.folder / f"{name}.faa", "wb"))

    def write(self, frame_ids, nucleotides, proteins, residues):
        """Write a batch of frames; returns the shard index of each frame."""
        index_of, start = [], 0
        cuts = self._cuts(residues)
        for stop in cuts + [len(frame_ids)]:
            if stop > start:
                self._write(frame_ids[start:stop], nucleotides[start:stop], proteins[start:stop])
                index_of.extend([self.index] * (stop - start))
            if stop < len(frame_ids):
                self.close()
                self.index += 1
                self._open()
            start = stop
        return index_of

    def _cuts(self, residues):
        cuts, total, limit = [], self.residues, self.limit
        for i, count in enumerate(residues):
            if total >= limit:
                cuts.append(i)
                total = 0
            total += count
        self.residues = total
        return cuts

    def _write(self, frame_ids, nucleotides, proteins):
        for handle, sequences in zip(self.files, (nucleotides, proteins)):
            lines = [b""] * (2 * len(frame_ids))
            lines[0::2] = frame_ids
            lines[1::2] = sequences
            handle.write(b"\n".join(lines))
            handle.write(b"\n")

    def close(self):
        for handle in self.files:
            handle.close()  # closing twice is harmless

    @property
    def count(self):
        return self.index + 1


def prepare_sample(fasta, out_dir, *, sample, chunk_length=500, compat="virnucpro", shard_residues=10_000_000,
                   log=None, batch_bytes=BLOCK_BYTES):
    """Write frames.tsv, reads.tsv, shards/ and summary.json for one sample into `out_dir`; returns the summary.
    `batch_bytes`: FASTA text per batch, which bounds memory (a small multiple of
    this, plus the longest read)."""
    if compat not in COMPAT_MODES:
        raise ValueError(f"compat must be one of {COMPAT_MODES}, not {compat!r}")
    if int(chunk_length) != chunk_length or chunk_length < 1:
        raise ValueError(f"chunk_length must be a positive integer, not {chunk_length!r}")
    if shard_residues < 1:
        raise ValueError(f"shard_residues must be positive, not {shard_residues!r}")
    chunk_length = int(chunk_length)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.prepare.", dir=out_dir.parent))
    started = last_report = time.monotonic()
    totals = dict(reads=0, bases=0, chunks=0, chunks_with_frames=0, frames=0, residues=0, fasta_bytes=0)
    try:
        shards = _Shards(tmp / "shards", shard_residues)
        try:
            with open(tmp / "frames.tsv", "wb") as frames_out, open(tmp / "reads.tsv", "wb") as reads_out:
                frames_out.write(FRAMES_HEADER.encode())
                reads_out.write(READS_HEADER.encode())
                for batch, chunk_table, frames in _chunk_batches(read_batches(fasta, batch_bytes), chunk_length,
                                                                      compat):
                    _write_batch(batch, chunk_table, frames, chunk_length, shards, frames_out, reads_out, totals)
                    now = time.monotonic()
                    if log and now - last_report >= REPORT_SECONDS:
                        last_report = now
                        log.info("%s", _rates(totals, now - started))
        finally:
            shards.close()
        seconds = time.monotonic() - started
        summary = dict(sample=sample, chunk_length=chunk_length, compat=compat, **totals,
                       chunks_without_frames=totals["chunks"] - totals["chunks_with_frames"],
                       shards=shards.count, shard_residues=shard_residues, seconds=round(seconds, 3),
                       reads_per_second=round(totals["reads"] / max(seconds, 1e-9), 1),
                       mb_per_second=round(totals["fasta_bytes"] / max(seconds, 1e-9) / 1e6, 3),
                       mbp_per_second=round(totals["bases"] / max(seconds, 1e-9) / 1e6, 3))
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        _move_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if log:
        log.info("%s: %d reads, %d chunks (%d without a surviving frame), %d frames in %d shards; %s", sample,
                 summary["reads"], summary["chunks"], summary["chunks_without_frames"], summary["frames"],
                 summary["shards"], _rates(totals, seconds))
    return summary


def _rates(totals, seconds):
    seconds = max(seconds, 1e-9)
    return (f"{totals['reads']} reads, {totals['frames']} frames so far; {totals['reads'] / seconds:.0f} reads/s, "
            f"{totals['fasta_bytes'] / seconds / 1e6:.1f} MB/s of FASTA ({totals['bases'] / seconds / 1e6:.1f} Mbp/s)")


def _write_batch(batch, chunk_table, frames, chunk_length, shards, frames_out, reads_out, totals):
    read_of_chunk, number, starts = chunk_table
    chunk_of, frame_of, start_of, end_of, proteins, nucleotides = frames
    ids = batch.ids
    # Per chunk with frames: its id prefix b"read_chunk_n" and its start on the read.
    kept_chunks = sorted(set(chunk_of))
    read_of = dict(zip(kept_chunks, read_of_chunk[kept_chunks].tolist()))
    prefix = {c: b"%s_chunk_%d" % (ids[r], n)
              for c, r, n in zip(kept_chunks, read_of.values(), number[kept_chunks].tolist())}
    offset = dict(zip(kept_chunks, starts[kept_chunks].tolist()))
    frame_ids = [prefix[c] + _SUFFIX[f] for c, f in zip(chunk_of, frame_of)]
    residues = list(map(len, proteins))
    shard_of = shards.write([b">" + i for i in frame_ids], nucleotides, proteins, residues)
    numbers = number.tolist()
    frames_out.write(b"".join([
        b"%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\n" % (
            frame_id, ids[read_of[c]], numbers[c], _STRAND[f], _PHASE[f], offset[c] + s, offset[c] + e, r, shard)
        for frame_id, c, f, s, e, r, shard in zip(frame_ids, chunk_of, frame_of, start_of, end_of, residues, shard_of)
    ]))
    # reads.tsv: every read, with the chunks and frames it kept (zero included).
    n_reads = len(ids)
    reads_of_frames = np.array([read_of[c] for c in chunk_of], dtype=np.int64)
    frames_per_read = np.bincount(reads_of_frames, minlength=n_reads)
    chunks_with = np.bincount(np.array([read_of[c] for c in kept_chunks], dtype=np.int64), minlength=n_reads)
    chunks = -(-batch.lengths // chunk_length)
    reads_out.write(b"".join([
        b"%s\t%d\t%d\t%d\t%d\n" % row
        for row in zip(ids, batch.lengths.tolist(), chunks.tolist(), chunks_with.tolist(), frames_per_read.tolist())
    ]))
    totals["reads"] += n_reads
    totals["fasta_bytes"] += batch.size
    totals["bases"] += int(batch.lengths.sum())
    totals["chunks"] += int(chunks.sum())
    totals["chunks_with_frames"] += len(kept_chunks)
    totals["frames"] += len(frame_ids)
    totals["residues"] += sum(residues)


def _move_into_place(tmp, out_dir):
    """Rename the finished files into out_dir; summary.json goes last, so its presence means the rest is there."""
    out_dir.mkdir(exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(out_dir / "summary.json")
    if (out_dir / "shards").exists():
        os.replace(out_dir / "shards", tmp / "old_shards")  # a folder cannot replace a non-empty one
    os.replace(tmp / "shards", out_dir / "shards")
    for name in ("frames.tsv", "reads.tsv", "summary.json"):
        os.replace(tmp / name, out_dir / name)
