"""The prepare stage: reads -> chunks -> surviving frames -> the sample's work folder (frames.tsv,
reads.tsv, shards, summary.json; formats in virnucflow.workfiles).

Reads FASTA or FASTQ, one file or a pair (virnucflow.fasta names the mates). Streams the input in
batches of about 1 MiB of text: memory is bounded by the batch, not the file
(about 50 MB peak RSS whatever the input size; a single read longer than a batch is held whole, a
few copies of it, so a 50 Mbp read peaks at about 240 MB). The work folder appears only when
complete, so a failure leaves nothing behind.
"""

import logging
import time

import numpy as np

from .fasta import BLOCK_BYTES, read_batches
from .frames import COMPAT_MODES, FRAME_NAMES, chunk_layout, find_frames
from .sidecar import remove_orphaned_sidecars
from .workfiles import WorkFolderWriter

log = logging.getLogger(__name__)
REPORT_SECONDS = 5
GROUP_BASES = 8 << 20  # a read longer than this is translated a few chunks at a time
_SUFFIX = [name.encode() for name in FRAME_NAMES]
_STRAND = [b"+", b"+", b"+", b"-", b"-", b"-"]
_PHASE = [1, 2, 3, 1, 2, 3]
# Bases that are not A, C, G, T or U (either case): N and the other IUPAC ambiguity codes. VirNucPro
# drops every codon that holds one, so a read made mostly of them shows the protein model little.
_AMBIGUOUS = bytes(0 if byte in b"ACGTUacgtu" else 1 for byte in range(256))  # a bytes.translate table


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


def prepare_sample(reads, out_dir, *, sample, chunk_length, compat, shard_residues, batch_bytes=BLOCK_BYTES,
                   embed_dir=None):
    """Write the work folder of one sample (frames.tsv, reads.tsv, shards/, summary.json) as `out_dir`;
    returns the summary. `reads`: one FASTA or FASTQ path, or a list of one or two (R1, R2).
    `batch_bytes`: input text per batch, which bounds memory (a small multiple of this, plus the
    longest read). `embed_dir`: where the sample's embed jobs write; what they left for shards that are
    no longer in the sample's plan (sidecars, temporaries) is removed."""
    if compat not in COMPAT_MODES:
        raise ValueError(f"compat must be one of {COMPAT_MODES}, not {compat!r}")
    if int(chunk_length) != chunk_length or chunk_length < 1:
        raise ValueError(f"chunk_length must be a positive integer, not {chunk_length!r}")
    if shard_residues < 1:
        raise ValueError(f"shard_residues must be positive, not {shard_residues!r}")
    chunk_length = int(chunk_length)
    started = last_report = time.monotonic()
    totals = dict(reads=0, bases=0, ambiguous_bases=0, chunks=0, chunks_with_frames=0, frames=0, residues=0,
                  fasta_bytes=0)
    with WorkFolderWriter(out_dir, shard_residues) as work:
        for batch, chunk_table, frames in _chunk_batches(read_batches(reads, batch_bytes), chunk_length, compat):
            _write_batch(batch, chunk_table, frames, chunk_length, work, totals)
            now = time.monotonic()
            if now - last_report >= REPORT_SECONDS:
                last_report = now
                log.info("%s", _rates(totals, now - started))
        seconds = time.monotonic() - started
        summary = dict(sample=sample, chunk_length=chunk_length, compat=compat, **totals,
                       chunks_without_frames=totals["chunks"] - totals["chunks_with_frames"],
                       shards=work.shards.count, shard_residues=shard_residues, seconds=round(seconds, 3),
                       reads_per_second=round(totals["reads"] / max(seconds, 1e-9), 1),
                       mb_per_second=round(totals["fasta_bytes"] / max(seconds, 1e-9) / 1e6, 3),
                       mbp_per_second=round(totals["bases"] / max(seconds, 1e-9) / 1e6, 3))
        work.finish(summary)
    if embed_dir is not None:
        for path in remove_orphaned_sidecars(embed_dir, range(summary["shards"])):
            log.info("removed %s, left by an embed job of a shard no longer in the plan", path)
    log.info("%s: %d reads, %d chunks (%d without a surviving frame), %d frames in %d shards; %s", sample,
             summary["reads"], summary["chunks"], summary["chunks_without_frames"], summary["frames"],
             summary["shards"], _rates(totals, seconds))
    return summary


def _rates(totals, seconds):
    seconds = max(seconds, 1e-9)
    return (f"{totals['reads']} reads, {totals['frames']} frames so far; {totals['reads'] / seconds:.0f} reads/s, "
            f"{totals['fasta_bytes'] / seconds / 1e6:.1f} MB/s of input text "
            f"({totals['bases'] / seconds / 1e6:.1f} Mbp/s)")


def _write_batch(batch, chunk_table, frames, chunk_length, work, totals):
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
    shard_of = work.shards.write(frame_ids, nucleotides, proteins, residues)
    numbers = number.tolist()
    work.write_frames(
        (frame_id, ids[read_of[c]], numbers[c], _STRAND[f], _PHASE[f], offset[c] + s, offset[c] + e, r, shard)
        for frame_id, c, f, s, e, r, shard in zip(frame_ids, chunk_of, frame_of, start_of, end_of, residues, shard_of)
    )
    # reads.tsv: every read, with the chunks and frames it kept (zero included).
    n_reads = len(ids)
    reads_of_frames = np.array([read_of[c] for c in chunk_of], dtype=np.int64)
    frames_per_read = np.bincount(reads_of_frames, minlength=n_reads)
    chunks_with = np.bincount(np.array([read_of[c] for c in kept_chunks], dtype=np.int64), minlength=n_reads)
    chunks = -(-batch.lengths // chunk_length)
    ambiguous = _ambiguous_bases(batch)
    work.write_reads(zip(ids, batch.lengths.tolist(), chunks.tolist(), chunks_with.tolist(), frames_per_read.tolist(),
                         ambiguous.tolist()))
    totals["reads"] += n_reads
    totals["fasta_bytes"] += batch.size
    totals["bases"] += int(batch.lengths.sum())
    totals["ambiguous_bases"] += int(ambiguous.sum())
    totals["chunks"] += int(chunks.sum())
    totals["chunks_with_frames"] += len(kept_chunks)
    totals["frames"] += len(frame_ids)
    totals["residues"] += sum(residues)


def _ambiguous_bases(batch):
    """Bases of each read of the batch that are not A, C, G, T or U (either case). Usually there are
    none or a few: then their positions are binned by read (half the cost of a sum over every read);
    otherwise a sum per read (memory: one byte per base whatever their number)."""
    reads = len(batch.lengths)
    flags = np.frombuffer(batch.sequence.translate(_AMBIGUOUS), dtype=bool)  # True per ambiguous base
    count = np.count_nonzero(flags)
    if not count:
        return np.zeros(reads, dtype=np.int64)
    ends = np.cumsum(batch.lengths)
    if count <= len(flags) >> 6:
        return np.bincount(np.searchsorted(ends, np.flatnonzero(flags), side="right"), minlength=reads)
    return np.add.reduceat(flags.view(np.uint8), ends - batch.lengths, dtype=np.int64)  # reads are never empty
