"""Reads from FASTA or FASTQ (plain or gzip), streamed in batches and checked as they are read.

The format is told by content (first non-blank byte '>' or '@'), never by the file name. A sample is
one file, or two (R1, R2) for paired-end reads: see `read_batches` for the mates' ids.
Every problem is an `InputError` naming the file, the record number (1-based) and the fix.
A hand-written block reader rather than pyfastx: pyfastx 2.3.1 returns part of a truncated or
corrupt .gz without an error and cuts a sequence at a NUL byte; here both are errors (gzip's own
length and CRC checks). Records are parsed as Biopython's 'fasta' format does (VirNucPro reads its
input with SeqIO): id = first whitespace-separated word of the header, whitespace inside sequence
lines dropped, case kept. FASTQ records are the usual four lines (@header, sequence, '+', qualities;
CRLF accepted, blank lines only at the end); qualities are checked for length and otherwise ignored.
"""

import gzip
import os
import stat
import zlib
from array import array
from dataclasses import dataclass
from itertools import chain

import numpy as np

from .errors import InputError

BLOCK_BYTES = 1 << 20  # decompressed bytes per read() and, roughly, per batch: ~20x this in RSS
IUPAC = b"ACGTURYSWKMBDHVN"  # nucleotide codes, legal in either case
_LEGAL = IUPAC + IUPAC.lower()
_WHITESPACE = b" \t\r\x0b\x0c"  # dropped from sequence lines, as Biopython drops them


@dataclass
class ReadBatch:
    """Consecutive records of one file: ids[i] is its record number first + i; sequence holds the reads
    back to back."""

    first: int
    ids: list  # bytes, UTF-8 (the mates' ids for paired-end input, see read_batches)
    sequence: bytes  # newlines and whitespace removed, case kept
    lengths: np.ndarray  # int64, one per read
    size: int  # bytes of FASTA or FASTQ text (decompressed) the batch was parsed from


def _open(path):
    """A binary stream of the file's (decompressed) bytes."""
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder, not a reads file; point the sample sheet at the reads file")
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
    """Yield (parser, text of whole records), about block_bytes of text each; the parser is _parse_fasta
    or _parse_fastq, chosen by the first non-blank byte."""
    blocks = _blocks(path, block_bytes)
    for block in blocks:
        block = block.lstrip()
        if block:
            break
    else:
        raise InputError(f"{path}: file is empty; remove the sample or provide its reads")
    _check_start(path, block)
    if block[:1] == b"@":
        for text in _fastq_texts(chain([block], blocks)):
            yield _parse_fastq, text
    else:
        for text in _fasta_texts(chain([block], blocks)):
            yield _parse_fasta, text


def _fasta_texts(blocks):
    """Cut FASTA blocks before a '>' that starts a line."""
    parts = []
    for block in blocks:
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


def _fastq_texts(blocks):
    """Cut FASTQ blocks after every fourth line ('@' also starts quality lines, so lines are counted).
    Blank lines are dropped only at the end of the file: the last text is held back until the file ends,
    and so is a run of blank texts (elsewhere they reach the parser, which names the record)."""
    parts, lines, held = [], 0, None  # lines: newlines in parts, always < 4
    for block in blocks:
        newlines = int(np.count_nonzero(np.frombuffer(block, dtype=np.uint8) == 10))  # 7x faster than bytes.count
        whole = (lines + newlines) // 4 * 4 - lines  # newlines of this block that end whole records
        if whole <= 0:
            parts.append(block)
            lines += newlines
            continue
        cut = len(block)
        for _ in range(newlines - whole + 1):  # back to the last newline that ends a record (< 4 steps)
            cut = block.rfind(b"\n", 0, cut)
        cut += 1
        text = b"".join([*parts, memoryview(block)[:cut]])
        parts, lines = [block[cut:]], newlines - whole
        if held is not None:
            if _blank(held) and _blank(text):
                held += text
                continue
            yield held
        held = text
    tail = (held or b"") + b"".join(parts)
    end = len(tail.rstrip())  # blank lines at the end of the file are dropped, as Biopython does
    if end:
        newline = tail.find(b"\n", end)
        yield tail[: newline + 1] if newline >= 0 else tail


def _blank(text):
    return not text or text.isspace()


def _check_start(path, text):
    """The first bytes of a file's content, leading whitespace removed, must open a FASTA or FASTQ record."""
    if text.startswith(b"\xef\xbb\xbf"):
        raise InputError(f"{path}: starts with a UTF-8 byte order mark (BOM) before the first '>' or '@' (Biopython, "
                         "VirNucPro's reader, rejects it too); remove it, e.g. sed -i '1s/^\\xEF\\xBB\\xBF//' FILE "
                         "(gunzip a .gz first)")
    if text[:1] not in (b">", b"@"):
        what = "binary content" if b"\0" in text[:4096] else "text"
        raise InputError(f"{path}: not FASTA or FASTQ ({what} before the first '>' or '@' header); give a FASTA or "
                         "FASTQ file (plain or .gz) whose first line starts with '>' or '@'")


def check_reads_start(path, probe_bytes=1 << 16):
    """Check what can be checked cheaply before a run: the file exists, is a readable regular file,
    and its (decompressed) content starts like FASTA or FASTQ. Reads at most `probe_bytes` of content,
    so it costs the same at 1 MB and at 100 GB; the full record checks happen when prepare reads the file."""
    if os.path.exists(path) and not os.path.isdir(path) and not stat.S_ISREG(os.stat(path).st_mode):
        raise InputError(f"{path}: not a regular file (a device, pipe or socket); give the reads file itself")
    for block in _blocks(str(path), probe_bytes):
        text = block.lstrip()
        if text:
            _check_start(path, text)
            return
    raise InputError(f"{path}: file is empty; remove the sample or provide its reads")



def _paths(paths):
    """One path, or a list of one or two (R1, R2), as a list of str."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if len(paths) not in (1, 2):
        raise InputError(f"{len(paths)} reads files given for one sample: a sample has one, or two (R1 then R2)")
    return [os.fspath(path) for path in paths]


def read_batches(paths, block_bytes=BLOCK_BYTES, check_unique=True):
    """Yield ReadBatch after ReadBatch of the checked records of a sample: one FASTA or FASTQ file (plain
    or gzip), or two (R1, R2) for paired-end reads.

    A FASTQ gives the same ids, sequences and lengths as the FASTA of the same reads. Paired-end: all of
    R1, then all of R2 (each file streamed once, as a single file is); record n of R2 must be the mate
    of record n of R1, and the mates' ids become ID/1 and ID/2, where ID is the id with a trailing /1
    (in R1) or /2 (in R2) removed: equal ids ('x', 'x'), Casava 1.8 ids ('x 1:N:..', 'x 2:N:..') and
    old Illumina ids ('x/1', 'x/2') all give x/1 and x/2. Memory: one block of text (or the longest
    record, if longer) plus 8 bytes per read for the duplicate and mate checks, which need R1's ids.
    """
    for batch, _ in _sample_batches(_paths(paths), block_bytes, check_unique):
        yield batch


def read_records(paths, block_bytes=BLOCK_BYTES, check=False):
    """Yield (read_id, header, sequence) as bytes for every record of a sample's file(s), in the order of
    reads.tsv: read_id is the id prepare writes (ID/1, ID/2 for paired-end), header the whole header
    line without '>' or '@' and the line end (its first word replaced by read_id where a mate suffix was
    added), sequence unwrapped. Memory is flat in the number of reads: the duplicate and mate checks
    (8 bytes per read) run only with check=True, as prepare has run them on the same files."""
    paired = len(_paths(paths)) == 2
    for batch, heads in _sample_batches(_paths(paths), block_bytes, check):
        sequence, start = batch.sequence, 0
        for read_id, head, end in zip(batch.ids, heads, np.cumsum(batch.lengths).tolist()):
            if head.endswith(b"\r"):
                head = head[:-1]
            if paired:
                word = head.split(None, 1)[0]
                if word != read_id:
                    at = head.index(word)
                    head = head[:at] + read_id + head[at + len(word) :]
            yield read_id, head, sequence[start:end]
            start = end


def _sample_batches(paths, block_bytes, check):
    """(batch, headers) for every text of the sample's file(s); headers as in the file (a CR may end them)."""
    if len(paths) == 1:
        hashes = array("q") if check else None
        yield from _file_batches(paths[0], block_bytes, None, hashes)
        if check:
            _check_unique(paths[0], hashes, block_bytes, None)
        return
    r1, r2 = paths
    hashes = array("q") if check else None
    count = 0
    for batch, heads in _file_batches(r1, block_bytes, 1, hashes):
        count += len(batch.ids)
        yield batch, heads
    if check:
        _check_unique(r1, hashes, block_bytes, 1)
        hashes = np.frombuffer(hashes, dtype=np.int64) if count else np.zeros(0, np.int64)
    seen = 0
    for batch, heads in _file_batches(r2, block_bytes, 2, None):
        if seen + len(batch.ids) > count:
            raise InputError(f"{r2}: record {count + 1} has no mate: {r1} ends after {count} records; R1 and R2 "
                             "must hold the same reads in the same order, pair them again (e.g. seqkit pair)")
        if check:
            mates = np.fromiter((hash(read_id[:-1] + b"1") for read_id in batch.ids), np.int64, len(batch.ids))
            wrong = np.flatnonzero(mates != hashes[seen : seen + len(batch.ids)])
            if len(wrong):
                at = int(wrong[0])
                raise InputError(f"{r2}: record {batch.first + at} ({_show(batch.ids[at])}) is not the mate of record "
                                 f"{batch.first + at} of {r1}: R1 and R2 must hold the same reads in the same order "
                                 "(the same ids, or ids ending in /1 and /2); pair them again (e.g. seqkit pair)")
        seen += len(batch.ids)
        yield batch, heads
    if seen < count:
        raise InputError(f"{r2}: ends after {seen} records but {r1} has {count}: R1 and R2 must hold the same reads "
                         "in the same order; the file is truncated or the files are not mates (seqkit pair)")


def _file_batches(path, block_bytes, mate, hashes):
    """(batch, headers) per text of one file; ids are made mate ids when `mate` is 1 or 2; the hash of
    every id is appended to `hashes` unless it is None."""
    number = 0
    for parse, text in _record_texts(path, block_bytes):
        batch, heads = parse(path, text, number + 1)
        number += len(batch.ids)
        if mate:
            suffix = b"/%d" % mate
            batch.ids = [(read_id[:-2] if read_id.endswith(suffix) else read_id) + suffix for read_id in batch.ids]
        if hashes is not None:
            hashes.extend(map(hash, batch.ids))
        yield batch, heads


def _parse_fasta(path, text, first):
    """Split a text of whole FASTA records into ids and sequences, checking each record.

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
    return _batch(path, text, first, heads, sequence, lengths, b">"), heads


_FASTQ_LINES = ("header", "sequence line", "'+' line")  # what a record that stops early ends after


def _parse_fastq(path, text, first):
    """Split a text of whole four-line FASTQ records into ids and sequences, checking each record: the
    header starts with '@', the third line with '+', as many qualities as bases. Vectorised as FASTA is."""
    if b"\0" in text:
        number = first + text[: text.index(b"\0")].count(b"\n") // 4
        raise InputError(f"{path}: record {number} contains NUL bytes: the file is binary or damaged; "
                         "give an intact FASTQ file")
    if not text.endswith(b"\n"):
        text += b"\n"  # the last line of the file
    data = np.frombuffer(text, dtype=np.uint8)
    ends = np.flatnonzero(data == 10)
    if len(ends) % 4:
        _raise_incomplete(path, text, ends, first)
    starts = np.concatenate(([0], ends[:-1] + 1))
    ends = ends - (data[ends - 1] == 13)  # CRLF: the CR is not part of the line (data[-1] is a newline)
    starts, ends = starts.reshape(-1, 4), ends.reshape(-1, 4)
    lengths = (ends[:, 1] - starts[:, 1]).astype(np.int64)
    bad = (data[starts[:, 0]] != 64) | (data[starts[:, 2]] != 43) | (ends[:, 3] - starts[:, 3] != lengths)
    heads = [text[a + 1 : b] for a, b in zip(starts[:, 0].tolist(), ends[:, 0].tolist())]
    if bad.any():
        _raise_fastq(path, text, first + int(np.flatnonzero(bad)[0]), first, starts, ends, heads)
    bodies = [text[a:b] for a, b in zip(starts[:, 1].tolist(), ends[:, 1].tolist())]
    sequence = b"".join(bodies)
    odd = sequence.translate(None, b"ACGTacgt")
    if odd and odd.translate(None, _LEGAL):
        _raise_illegal(path, heads, bodies, first)
    return _batch(path, text, first, heads, sequence, lengths, b"@"), heads


def _raise_incomplete(path, text, ends, first):
    """The text (the end of the file) stops inside a record: name a damaged record before it, or a record
    whose lines are wrong, or else the truncation."""
    whole = len(ends) // 4 * 4
    if whole:
        _parse_fastq(path, text[: ends[whole - 1] + 1], first)
    number, rest = first + whole // 4, len(ends) - whole  # rest: 1 to 3 lines of the last record
    starts = np.concatenate(([0], ends[:-1] + 1))[whole:]
    cut = np.full((1, 4), len(text))  # lines the record lacks: empty, after the text
    line_starts, line_ends = cut.copy(), cut.copy()
    line_starts[0, :rest], line_ends[0, :rest] = starts, ends[whole:]
    head = text[starts[0] + 1 : ends[whole]]
    if text[starts[0] : starts[0] + 1] != b"@" or (rest == 3 and text[starts[2] : starts[2] + 1] != b"+"):
        _raise_fastq(path, text, number, number, line_starts, line_ends, [head.rstrip(b"\r")])
    raise InputError(f"{path}: record {number} is incomplete: the file ends after its {_FASTQ_LINES[rest - 1]}; "
                     "the file is truncated, download or copy it again")


def _raise_fastq(path, text, number, first, starts, ends, heads):
    i = number - first
    four = "; a FASTQ record is four lines (@header, sequence, '+', qualities)"
    if text[starts[i, 0] : starts[i, 0] + 1] != b"@":
        line = text[starts[i, 0] : ends[i, 0]]
        shown = "is blank" if not line.strip() else f"starts with {line[:20].decode('utf-8', 'replace')!r}"
        raise InputError(f"{path}: record {number}: its first line {shown} instead of '@'{four}: a line of it or of "
                         "the record before is missing or wrapped; repair the file or unwrap it (seqkit seq -w 0)")
    read_id = _show(heads[i].split(None, 1)[0] if heads[i].strip() else b"")
    if text[starts[i, 2] : starts[i, 2] + 1] != b"+":
        raise InputError(f"{path}: record {number} ({read_id}): its third line does not start with '+'{four}: a "
                         "line is missing or the sequence is wrapped; repair the file or unwrap it (seqkit seq -w 0)")
    raise InputError(f"{path}: record {number} ({read_id}): {ends[i, 3] - starts[i, 3]} quality values for "
                     f"{ends[i, 1] - starts[i, 1]} bases; the record is damaged, fix or remove it")


def _batch(path, text, first, heads, sequence, lengths, marker):
    """The ReadBatch of checked sequences, once every record has an id, a sequence and a UTF-8 id."""
    ids = [head.split(None, 1)[0] if head.strip() else b"" for head in heads]
    if not lengths.all() or not all(ids):
        for number, (read_id, length) in enumerate(zip(ids, lengths.tolist()), start=first):
            if not read_id:
                raise InputError(f"{path}: record {number} has no id (nothing after '{marker.decode()}'); give every "
                                 f"record an id right after '{marker.decode()}'")
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


def _check_unique(path, hashes, block_bytes, mate):
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
    for batch, _ in _file_batches(path, block_bytes, mate, None):
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
