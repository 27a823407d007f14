"""The prepare stage: reads -> chunks -> surviving frames -> frames.tsv, reads.tsv and shards.

Streams the input in batches (memory bounded by the batch, not the file). Everything is written
into a temporary folder and moved into place at the end, so a failure leaves nothing behind.
"""

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

from .fasta import read_fasta
import numpy as np

from .frames import COMPAT_MODES, chunk_layout, translate_chunks

BATCH_BASES = 4_000_000  # bases per translation batch: large enough to vectorise, small in memory
FRAMES_HEADER = "frame_id\tread_id\tchunk\tstrand\tframe\tstart\tend\tresidues\tshard\n"
READS_HEADER = "read_id\tlength\tchunks\tchunks_with_frames\tframes\n"


def shard_name(index):
    return f"{index:05d}"


class ShardWriter:
    """Cuts the stream of frames into contiguous shards of about `shard_residues` residues."""

    def __init__(self, folder, shard_residues):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True)
        self.shard_residues = shard_residues
        self.index = -1
        self.residues = 0
        self.handles = None
        self._open_next()

    def _open_next(self):
        self.close()
        self.index += 1
        self.residues = 0
        name = shard_name(self.index)
        self.handles = (open(self.folder / f"{name}.fna", "wb"), open(self.folder / f"{name}.faa", "wb"))

    def write(self, frame_id, nucleotide, protein):
        """Write one frame; returns its shard index."""
        if self.residues >= self.shard_residues:
            self._open_next()
        header = b">" + frame_id.encode() + b"\n"
        self.handles[0].write(header + nucleotide + b"\n")
        self.handles[1].write(header + protein + b"\n")
        self.residues += len(protein)
        return self.index

    def close(self):
        if self.handles:
            for handle in self.handles:
                handle.close()
            self.handles = None

    @property
    def count(self):
        return self.index + 1


def _batches(reads, batch_bases):
    batch, bases = [], 0
    for read_id, sequence in reads:
        batch.append((read_id, sequence))
        bases += len(sequence)
        if bases >= batch_bases:
            yield batch
            batch, bases = [], 0
    if batch:
        yield batch


def iter_batches(reads, chunk_length=500, compat="virnucpro", batch_bases=BATCH_BASES):
    """Per batch of reads: (read ids, read lengths, chunks per read, frames), frames as
    (read index, chunk number, chunk start, Frame) in VirNucPro's output order."""
    if compat not in COMPAT_MODES:
        raise ValueError(f"compat must be one of {COMPAT_MODES}, not {compat!r}")
    for batch in _batches(reads, batch_bases):
        ids = [read_id for read_id, _ in batch]
        joined = "".join([sequence for _, sequence in batch]).encode("ascii")
        lengths = np.fromiter((len(sequence) for _, sequence in batch), dtype=np.int64, count=len(batch))
        read_of_chunk, starts = chunk_layout(lengths, chunk_length, compat)
        offsets = (np.cumsum(lengths) - lengths)[read_of_chunk] + starts
        ends = np.minimum(offsets + chunk_length, (np.cumsum(lengths))[read_of_chunk])
        chunk_number = np.arange(len(starts)) - np.searchsorted(read_of_chunk, read_of_chunk) + 1
        chunks = [joined[a:b] for a, b in zip(offsets.tolist(), ends.tolist())]
        read_of_chunk, starts, chunk_number = read_of_chunk.tolist(), starts.tolist(), chunk_number.tolist()
        frames = [(read_of_chunk[f.chunk_index], chunk_number[f.chunk_index], starts[f.chunk_index], f)
                  for f in translate_chunks(chunks, compat)]
        yield ids, lengths, -(-lengths // chunk_length), frames


def iter_frames(reads, chunk_length=500, compat="virnucpro", batch_bases=BATCH_BASES):
    """Per read: (read_id, length, chunks, [(chunk_number, chunk_start, Frame), ...])."""
    for ids, lengths, chunks, frames in iter_batches(reads, chunk_length, compat, batch_bases):
        per_read = [[] for _ in ids]
        for read_index, number, start, frame in frames:
            per_read[read_index].append((number, start, frame))
        yield from zip(ids, lengths.tolist(), chunks.tolist(), per_read)


def prepare_sample(fasta, out_dir, *, sample, chunk_length=500, compat="virnucpro", shard_residues=10_000_000,
                   log=None):
    """Write frames.tsv, reads.tsv, shards/ and summary.json for one sample into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".prepare.tmp.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    started = last_report = time.monotonic()
    totals = dict(reads=0, bases=0, chunks=0, chunks_with_frames=0, frames=0, residues=0)
    try:
        shards = ShardWriter(tmp / "shards", shard_residues)
        with open(tmp / "frames.tsv", "w") as frames_out, open(tmp / "reads.tsv", "w") as reads_out:
            frames_out.write(FRAMES_HEADER)
            reads_out.write(READS_HEADER)
            for ids, lengths, chunks, frames in iter_batches(read_fasta(fasta), chunk_length, compat):
                rows = []
                frame_reads, frame_chunks = [], []
                for read_index, number, chunk_start, frame in frames:
                    read_id = ids[read_index]
                    frame_id = f"{read_id}_chunk_{number}{frame.name}"
                    shard = shards.write(frame_id, frame.nucleotide, frame.protein)
                    rows.append(
                        f"{frame_id}\t{read_id}\t{number}\t{frame.strand}\t{frame.frame % 3 + 1}\t"
                        f"{chunk_start + frame.start}\t{chunk_start + frame.end}\t{len(frame.protein)}\t{shard}\n"
                    )
                    totals["residues"] += len(frame.protein)
                    frame_reads.append(read_index)
                    frame_chunks.append(read_index * (1 << 32) + number)
                frames_out.write("".join(rows))
                frames_per_read = np.bincount(np.array(frame_reads, dtype=np.int64), minlength=len(ids))
                chunk_keys = np.unique(np.array(frame_chunks, dtype=np.int64))
                with_frames = np.bincount(chunk_keys >> 32, minlength=len(ids))
                reads_out.write("".join(
                    f"{read_id}\t{length}\t{n}\t{w}\t{f}\n" for read_id, length, n, w, f in
                    zip(ids, lengths.tolist(), chunks.tolist(), with_frames.tolist(), frames_per_read.tolist())
                ))
                totals["reads"] += len(ids)
                totals["bases"] += int(lengths.sum())
                totals["chunks"] += int(chunks.sum())
                totals["chunks_with_frames"] += len(chunk_keys)
                totals["frames"] += len(frames)
                now = time.monotonic()
                if log and now - last_report > 5:
                    last_report = now
                    rate = totals["bases"] / (now - started) / 1e6
                    log.info("%d reads, %d frames kept, %.1f Mbp/s, %.0f reads/s", totals["reads"],
                             totals["frames"], rate, totals["reads"] / (now - started))
        shards.close()
        seconds = time.monotonic() - started
        summary = dict(sample=sample, chunk_length=chunk_length, compat=compat, **totals,
                       chunks_without_frames=totals["chunks"] - totals["chunks_with_frames"],
                       shards=shards.count, shard_residues=shard_residues, seconds=round(seconds, 3),
                       mbp_per_second=round(totals["bases"] / max(seconds, 1e-9) / 1e6, 3))
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        # Move into place; summary.json last, so its presence means the rest is there.
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(out_dir / "shards")
        for name in ["shards", "frames.tsv", "reads.tsv", "summary.json"]:
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if log:
        log.info("%s: %d reads, %d chunks (%d without a surviving frame), %d frames in %d shards; %.1f Mbp/s",
                 sample, summary["reads"], summary["chunks"], summary["chunks_without_frames"],
                 summary["frames"], summary["shards"], summary["mbp_per_second"])
    return summary
