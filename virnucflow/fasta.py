"""Reads from FASTA (plain or gzip), streamed in batches and checked as they are read.

Every problem is an `InputError` naming the file, the record number (1-based) and the fix.
A hand-written block reader rather than pyfastx: pyfastx 2.3.1 returns part of a truncated or
corrupt .gz without an error and cuts a sequence at a NUL byte; here both are errors (gzip's own
length and CRC checks). Records are parsed as Biopython's 'fasta' format does (VirNucPro reads its
input with SeqIO): id = first whitespace-separated word of the header, whitespace inside sequence
lines dropped, case kept.
"""

import gzip
import os
import stat
import zlib
from array import array
from dataclasses import dataclass

import numpy as np

from .errors import InputError

BLOCK_BYTES = 1 << 20  # decompressed bytes per read() and, roughly, per batch: ~20x this in RSS
IUPAC = b"ACGTURYSWKMBDHVN"  # nucleotide codes, legal in either case
_LEGAL = IUPAC + IUPAC.lower()
_WHITESPACE = b" \t\r\x0b\x0c"  # dropped from sequence lines, as Biopython drops them


@dataclass
class ReadBatch:
    """Consecutive records: ids[i] is record number first + i; sequence holds the reads back to back."""

    first: int
    ids: list  # bytes, UTF-8
    sequence: bytes  # newlines and whitespace removed, case kept
    lengths: np.ndarray  # int64, one per read
    size: int  # bytes of FASTA text (decompressed) the batch was parsed from


def _open(path):
    """A binary stream of the file's (decompressed) bytes."""
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder, not a FASTA file; point the sample sheet at the reads file")
    try:
        with open(path, "rb") as probe:
            magic = probe.read(2)
        return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found; check the path in the sample sheet") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied; make the file readable") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc}); check the file") from None


def _blocks(path, block_bytes):
    handle = _open(path)
    try:
        with handle:
            while True:
                block = handle.read(block_bytes)
                if not block:
                    return
                yield block
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(f"{path}: damaged gzip data ({exc}); the file is truncated or corrupt, "
                         "download or compress it again (gzip -t checks it)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc}); check the file") from None


def _record_texts(path, block_bytes):
    """Yield texts of whole records (each starts with '>'), about block_bytes each."""
    parts, started = [], False
    for block in _blocks(path, block_bytes):
        if not started:
            block = block.lstrip()
            if not block:
                continue
            started = True
            _check_start(path, block)
        cut = block.rfind(b"\n>")
        if cut < 0:
            if block[:1] == b">" and parts and parts[-1].endswith(b"\n"):
                yield b"".join(parts)
                parts = [block]
            else:
                parts.append(block)  # a record longer than a block: keep collecting
            continue
        parts.append(block[: cut + 1])
        yield b"".join(parts)
        parts = [block[cut + 1 :]]
    if parts:
        yield b"".join(parts)
    elif not started:
        raise InputError(f"{path}: file is empty; remove the sample or provide its reads")


def _check_start(path, text):
    """The first bytes of a file's content, leading whitespace removed, must open a FASTA record."""
    if text.startswith(b"\xef\xbb\xbf"):
        raise InputError(f"{path}: starts with a UTF-8 byte order mark (BOM) before the first '>' (Biopython, "
                         "VirNucPro's reader, rejects it too); remove it, e.g. sed -i '1s/^\\xEF\\xBB\\xBF//' FILE (gunzip a .gz first)")
    if text[:1] == b"@":
        raise InputError(f"{path}: looks like FASTQ (starts with '@'); convert it to FASTA first, e.g. seqkit fq2fa")
    if text[:1] != b">":
        what = "binary content" if b"\0" in text[:4096] else "text"
        raise InputError(f"{path}: not FASTA ({what} before the first '>' header); give a FASTA file "
                         "(plain or .gz) whose first line starts with '>'")


def check_fasta_start(path, probe_bytes=1 << 16):
    """Check what can be checked cheaply before a run: the file exists, is a readable regular file,
    and its (decompressed) content starts like FASTA. Reads at most `probe_bytes` of content, so it
    costs the same at 1 MB and at 100 GB; the full record checks happen when prepare reads the file."""
    if os.path.exists(path) and not os.path.isdir(path) and not stat.S_ISREG(os.stat(path).st_mode):
        raise InputError(f"{path}: not a regular file (a device, pipe or socket); give the reads file itself")
    for block in _blocks(str(path), probe_bytes):
        text = block.lstrip()
        if text:
            _check_start(path, text)
            return
    raise InputError(f"{path}: file is empty; remove the sample or provide its reads")


def read_batches(path, block_bytes=BLOCK_BYTES, check_unique=True):
    """Yield ReadBatch after ReadBatch of the checked records of a FASTA file (plain or gzip).

    Memory: one block of text (or the longest record, if longer) plus 8 bytes per read for the
    duplicate check, which runs once the last batch has been read.
    """
    path = str(path)
    number = 0
    hashes = array("q")
    for text in _record_texts(path, block_bytes):
        batch = _parse(path, text, number + 1)
        number += len(batch.ids)
        hashes.extend(map(hash, batch.ids))
        yield batch
    if check_unique:
        _check_unique(path, hashes, block_bytes)


def _parse(path, text, first):
    """Split a text of whole records into ids and sequences, checking each record.

    Newlines are found with numpy and each record costs a few slices, so parsing runs at a few
    hundred MB/s; whitespace other than newlines (CRLF files) takes a slower path.
    """
    if b"\0" in text:
        number = first + text[: text.index(b"\0")].count(b"\n>")
        raise InputError(f"{path}: record {number} contains NUL bytes: the file is binary or damaged; "
                         "give an intact FASTA file")
    data = np.frombuffer(text, dtype=np.uint8)
    newlines = np.flatnonzero(data == 10)
    after = newlines[newlines + 1 < len(data)]
    heads_at = np.concatenate(([0], after[data[after + 1] == 62] + 1))  # '>' at the start of a line
    head_ends = np.append(newlines, len(data))[np.searchsorted(newlines, heads_at)]
    body_ends = np.append(heads_at[1:] - 1, len(data))  # the newline before the next '>', or the end
    body_starts = np.minimum(head_ends + 1, body_ends)
    heads = [text[a + 1 : b] for a, b in zip(heads_at.tolist(), head_ends.tolist())]
    bodies = [text[a:b] for a, b in zip(body_starts.tolist(), body_ends.tolist())]
    sequence = b"".join(bodies).replace(b"\n", b"")
    inside = np.searchsorted(newlines, body_ends) - np.searchsorted(newlines, body_starts)  # newlines in each body
    lengths = body_ends - body_starts - inside
    odd = sequence.translate(None, b"ACGTacgt")
    if odd and odd.translate(None, _LEGAL):
        bodies = [body.translate(None, b"\n" + _WHITESPACE) for body in bodies]
        if odd.translate(None, _LEGAL + _WHITESPACE):
            _raise_illegal(path, heads, bodies, first)
        sequence = b"".join(bodies)
        lengths = np.fromiter(map(len, bodies), dtype=np.int64, count=len(bodies))
    ids = [head.split(None, 1)[0] if head.strip() else b"" for head in heads]
    if not lengths.all() or not all(ids):
        for number, (read_id, length) in enumerate(zip(ids, lengths.tolist()), start=first):
            if not read_id:
                raise InputError(f"{path}: record {number} has no id (nothing after '>'); give every record "
                                 "an id right after '>'")
            if not length:
                raise InputError(f"{path}: record {number} ({_show(read_id)}) has no sequence; remove the record "
                                 "or add its sequence")
    try:
        b"\n".join(ids).decode("utf-8")
    except UnicodeDecodeError:
        for number, read_id in enumerate(ids, start=first):
            try:
                read_id.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{path}: record {number}: the id {_show(read_id)} is not UTF-8 text; "
                                 "the file is binary or damaged") from None
    return ReadBatch(first, ids, sequence, lengths, len(text))


def _show(read_id):
    return repr(read_id.decode("utf-8", "replace"))


def _raise_illegal(path, heads, bodies, first):
    for number, (head, body) in enumerate(zip(heads, bodies), start=first):
        bad = body.translate(None, _LEGAL)
        if bad:
            position = body.index(bad[:1])
            read_id = head.split(None, 1)[0] if head.strip() else b""
            char = f"character {chr(bad[0])!r}" if 32 < bad[0] < 127 else f"byte 0x{bad[0]:02x}"
            raise InputError(f"{path}: record {number} ({_show(read_id)}): {char} at position "
                             f"{position + 1} is not an IUPAC nucleotide code ({IUPAC.decode()}, either case); "
                             "fix or remove the record")
    raise AssertionError("no illegal character found")


def _check_unique(path, hashes, block_bytes):
    """Duplicate read ids would give duplicate frame ids: find them by sorting 64-bit hashes, then read
    the ids of the colliding records again to tell a duplicate from a hash collision."""
    values = np.frombuffer(hashes, dtype=np.int64) if len(hashes) else np.zeros(0, np.int64)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    repeated = np.flatnonzero(ordered[1:] == ordered[:-1])
    if not len(repeated):
        return
    wanted = set((order[repeated] + 1).tolist()) | set((order[repeated + 1] + 1).tolist())  # record numbers
    ids = {}
    for batch in read_batches(path, block_bytes, check_unique=False):
        for number, read_id in enumerate(batch.ids, start=batch.first):
            if number in wanted:
                ids[number] = read_id
    seen, duplicates = {}, []
    for number in sorted(ids):
        if ids[number] in seen:
            duplicates.append((seen[ids[number]], number))
        else:
            seen[ids[number]] = number
    if duplicates:
        first, second = duplicates[0]
        raise InputError(f"{path}: records {first} and {second} have the same id {_show(ids[first])}; "
                         "read ids must be unique, rename one of them")
