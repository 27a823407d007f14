"""Reads from FASTA (plain or gzip), streamed and checked record by record.

Every problem is an `InputError` naming the file, the record number (1-based) and the fix.
"""

import gzip
import os
from array import array

import numpy as np
import pyfastx

from .errors import InputError

# IUPAC nucleotide codes, either case; VirNucPro upper-cases before translating.
IUPAC = b"ACGTURYSWKMBDHVN"
_LEGAL = IUPAC + IUPAC.lower()


def _first_bytes(path, n=4096):
    """The first bytes of the (decompressed) file; InputError when it is not readable."""
    try:
        with open(path, "rb") as raw:
            magic = raw.read(2)
        opener = gzip.open if magic == b"\x1f\x8b" else open
        with opener(path, "rb") as handle:
            return handle.read(n)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found; check the path in the sample sheet") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied; make the file readable") from None
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot be read ({exc}); check the file is intact (gzip -t)") from None


def check_fasta_head(path):
    """Refuse what is plainly not FASTA before parsing: empty, binary, FASTQ, no '>'."""
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder, not a FASTA file; point the sample sheet at the reads file")
    head = _first_bytes(path)
    text = head.lstrip()
    if not text:
        raise InputError(f"{path}: file is empty; remove the sample or provide its reads")
    if b"\x00" in head or any(b > 127 for b in head[:512]):
        raise InputError(f"{path}: binary content, not FASTA text; give a FASTA file (plain or .gz)")
    if text.startswith(b"@"):
        raise InputError(f"{path}: looks like FASTQ (starts with '@'); convert it to FASTA first, e.g. seqkit fq2fa")
    if not text.startswith(b">"):
        raise InputError(f"{path}: not FASTA (the first record must start with '>'); give a FASTA file")


def read_fasta(path):
    """Yield (read_id, sequence) for every record, checked: non-empty, IUPAC only, ids unique.

    read_id is the first whitespace-separated word of the header, as in Biopython's record.id.
    Memory: 8 bytes per read for the duplicate check; the sequences are streamed.
    """
    path = str(path)
    check_fasta_head(path)
    seen = array("Q")
    try:
        for number, (read_id, sequence) in enumerate(pyfastx.Fastx(path, format="fasta"), start=1):
            if not read_id:
                raise InputError(f"{path}: record {number} has an empty header; give every record an id after '>'")
            if not sequence:
                raise InputError(
                    f"{path}: record {number} ({read_id}) has no sequence; remove it or add its sequence"
                )
            # bytes.translate deletes every legal code in C: anything left over is illegal.
            if sequence.encode("latin-1", "replace").translate(None, _LEGAL):
                pos = next(i for i, c in enumerate(sequence) if c.encode("latin-1", "replace") not in _LEGAL)
                raise InputError(
                    f"{path}: record {number} ({read_id}): character {sequence[pos]!r} at position {pos + 1} "
                    "is not an IUPAC nucleotide code; fix or remove the record"
                )
            seen.append(hash(read_id) & 0xFFFFFFFFFFFFFFFF)  # salted per process; only compared within it
            yield read_id, sequence
    except (RuntimeError, OSError, UnicodeDecodeError, EOFError) as exc:
        raise InputError(f"{path}: cannot be parsed as FASTA ({exc}); check the file is intact") from None
    _check_unique(path, seen)


def _check_unique(path, hashes):
    """Duplicate read ids would give duplicate frame ids: find them by sorting 64-bit hashes."""
    values = np.frombuffer(hashes, dtype=np.uint64) if len(hashes) else np.zeros(0, np.uint64)
    order = np.argsort(values, kind="stable")
    same = np.flatnonzero(values[order][1:] == values[order][:-1])
    if len(same):
        first, second = sorted((int(order[same[0]]) + 1, int(order[same[0] + 1]) + 1))
        ids = {first: None, second: None}
        for number, (read_id, _) in enumerate(pyfastx.Fastx(path, format="fasta"), start=1):
            if number in ids:
                ids[number] = read_id
            if number >= second:
                break
        if ids[first] == ids[second]:
            raise InputError(
                f"{path}: records {first} and {second} have the same id {ids[first]!r}; read ids must be unique"
            )
