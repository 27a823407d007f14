"""A sample sheet from files and folders (`virnucflow sample-sheet`): reads told by their content, R1 and
R2 paired by their names, sample names made valid; written in the format `samples` reads."""

import gzip
import logging
import os
import re
import sys
import zlib
from pathlib import Path

from .atomic import atomic_open
from .errors import InputError
from .samples import RESERVED, SAFE_NAME

log = logging.getLogger(__name__)

# A mate tag at the end of a file name's stem, strongest first: Illumina's `_R1_001`, `_R1` or `.R1`, then
# the SRA's `_1` (weak: `soil_1` may as well be a replicate). Before it, an optional lane `_L001`, and
# Illumina's sample number `_S1` before a lane or an `_R1_001`.
TAGS = ((True, re.compile(r"^(?P<name>.+?)_[Rr](?P<mate>[12])_\d{3}$")),
        (True, re.compile(r"^(?P<name>.+)[._][Rr](?P<mate>[12])$")),
        (False, re.compile(r"^(?P<name>.+)_(?P<mate>[12])$")))
LANE = re.compile(r"^(?P<name>.+?)_L(?P<lane>\d{3})$")
SAMPLE_NUMBER = re.compile(r"_S\d+$")
OTHER_COMPRESSION = {b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
PROBE_BYTES = 1 << 16
EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,7}$")


def reads_format(path):
    """'fasta' or 'fastq' by the first non-blank character of the (gunzipped) content, else None; or the
    name of a compression the workflow does not read ('bzip2', 'xz', 'zstd')."""
    if not os.path.isfile(path):  # a pipe, a device or a broken link: never opened (a pipe would block)
        return None
    try:
        with open(path, "rb") as raw:
            magic = raw.read(6)
            for mark, name in OTHER_COMPRESSION.items():
                if magic.startswith(mark):
                    return name
            raw.seek(0)
            handle = gzip.GzipFile(fileobj=raw) if magic[:2] == b"\x1f\x8b" else raw
            for _ in range(16):
                block = handle.read(PROBE_BYTES)
                if not block:
                    return None
                text = block.lstrip()
                if text:
                    return {b">": "fasta", b"@": "fastq"}.get(text[:1])
    except (OSError, EOFError, zlib.error):
        return None
    return None


def _stem(filename):
    """The file name without `.gz` and one more extension of letters and digits (`a_R1.fastq.gz` -> `a_R1`)."""
    stem = filename[:-3] if filename.endswith(".gz") else filename
    return EXTENSION.sub("", stem) or stem


def mate_of(filename):
    """(name, mate, lane, strong) of a reads file name: mate 1, 2 or None (no tag); lane like '001' or None;
    strong: a tag that surely means R1/R2."""
    stem = _stem(filename)
    for illumina, (strong, pattern) in zip((True, False, False), TAGS):
        match = pattern.match(stem)
        if match:
            name, lane = match["name"], None
            if LANE.match(name):
                name, lane = LANE.match(name)["name"], LANE.match(name)["lane"]
            if illumina or lane:
                name = SAMPLE_NUMBER.sub("", name) or name
            return name, int(match["mate"]), lane, strong
    return stem, None, None, False


def sample_name(text):
    """`text` as a valid sample name: other characters become `_`, a leading `.`, `_` or `-` goes, a
    reserved name gets `_1` (as the sheet's own error suggests); '' when nothing is left."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).lstrip("._-")
    name = f"{name}_1" if name.lower() in RESERVED else name
    return name if SAFE_NAME.match(name) else ""


def _files(paths):
    """Every file under `paths` (files as given, folders walked in name order, hidden entries skipped),
    each joined to its argument as given, so relative stays relative."""
    for given in paths:
        if os.path.isdir(given):
            for folder, folders, names in os.walk(given):
                folders[:] = sorted(f for f in folders if not f.startswith("."))
                yield from (os.path.join(folder, n) for n in sorted(names) if not n.startswith("."))
        elif os.path.exists(given):
            yield given
        else:
            raise InputError(f"{given}: not found; give reads files or folders that hold them")


def _cat_hint(files, mate):
    """The command that joins one mate's files into one, in a folder of its own (beside the parts, the
    joined file would be listed with them again)."""
    base = os.path.basename(files[0])
    extension = base[len(_stem(base)):]  # `.fastq.gz`
    return f"mkdir -p joined && cat {' '.join(files)} > joined/{mate_of(base)[0]}_R{mate}{extension}"


def build_rows(paths):
    """Sample sheet rows (sample, R1 or single file, R2 or '') for the reads under `paths`, and how many
    other files were skipped: {'rows': [...], 'ignored': [path, ...], 'compressed': {path: compression}}.
    Raises InputError, naming the first problem (each other one logged), when a file cannot be paired or
    two files give one sample name."""
    groups, ignored, compressed = {}, [], {}
    for path in _files(paths):
        kind = reads_format(path)
        if kind in ("fasta", "fastq"):
            name, mate, lane, strong = mate_of(os.path.basename(path))
            groups.setdefault((os.path.dirname(path), name), []).append((mate, lane, strong, path))
        else:
            ignored.append(path)
            if kind:
                compressed[path] = kind
    paired = any({mate for mate, *_ in files} == {1, 2} for files in groups.values())
    rows, problems = [], []
    for (folder, name), files in sorted(groups.items()):
        rows_or_problem = _sample_rows(name, sorted(files, key=lambda f: (f[0] or 0, f[1] or "", f[3])), paired)
        if isinstance(rows_or_problem, str):
            problems.append(rows_or_problem)
        else:
            rows.extend(rows_or_problem)
    problems.extend(_name_clashes(rows))
    if problems:
        for problem in problems[1:]:
            log.warning("%s", problem)
        more = f" ({len(problems) - 1} more above)" if len(problems) > 1 else ""
        raise InputError(problems[0] + more + "; nothing written")
    return {"rows": sorted(rows), "ignored": ignored, "compressed": compressed}


def _sample_rows(name, files, paired):
    """The rows of the files that share a name stem (a pair, one file, or files with no tag), or a
    one-line problem: several lanes or parts of one mate, a lone R2, a lone R1 among paired samples."""
    mates = {}
    for mate, lane, strong, path in files:
        mates.setdefault(mate, []).append(path)
    several = {mate: paths for mate, paths in mates.items() if mate and len(paths) > 1}
    if several:
        mate, parts = sorted(several.items())[0]
        lanes = sorted({lane for _, lane, _, _ in files if lane})
        other = f" (and the same for R{3 - mate})" if 3 - mate in mates else ""
        what = f"{len(lanes)} lanes (L{', L'.join(lanes)})" if len(lanes) > 1 else f"{len(parts)} R{mate} files"
        return (f"{parts[0]}: sample {name!r} has {what}; concatenate each mate's files into one first: "
                f"{_cat_hint(parts, mate)}{other}, then give joined/ in place of those files")
    rows = [(sample_name(_stem(os.path.basename(path))), path, "") for path in mates.get(None, [])]
    if 1 in mates and 2 in mates:
        return rows + [(sample_name(name), mates[1][0], mates[2][0])]
    for mate in (1, 2):
        if mate in mates:
            strong = next(f[2] for f in files if f[0] == mate)
            if strong and (mate == 2 or paired):
                return (f"{mates[mate][0]}: an R{mate} file without its R{3 - mate} (the same name with {3 - mate} "
                        f"for {mate}); add the R{3 - mate} file, or rename this one without its R{mate} tag to make "
                        "it a single-end sample")
            rows.append((sample_name(name if strong else _stem(os.path.basename(mates[mate][0]))), mates[mate][0], ""))
    return rows


def _name_clashes(rows):
    """One problem per sample name that several rows give (case ignored: case-insensitive file systems),
    or that is empty."""
    problems, seen = [], {}
    for name, reads, _ in rows:
        if not name:
            problems.append(f"{reads}: no valid sample name in this file name; rename the file to start with a "
                            "letter or digit")
            continue
        seen.setdefault(name.lower(), []).append(reads)
    for name, files in seen.items():
        if len(files) > 1:
            problems.append(f"{files[0]}: {len(files)} files give the sample name {name!r} ({', '.join(files)}); "
                            "rename them, or concatenate them first if they are one sample's reads")
    for name, reads, reads2 in rows:
        bad = next((p for p in (reads, reads2) if any(c in p for c in "\t\n\r\"")), None)
        if bad:
            problems.append(f"{bad}: a tab, line break or double quote in the path cannot be written in the "
                            "sheet; rename the file")
    return problems


def sheet_text(rows):
    """The sheet `samples.read_sample_sheet` reads: `sample reads`, and `reads2` when a sample is paired."""
    paired = any(reads2 for _, _, reads2 in rows)
    header = ["sample", "reads"] + (["reads2"] if paired else [])
    return "".join("\t".join(row[:len(header)]) + "\n" for row in [header, *rows])


def write_sample_sheet(paths, out=None, force=False):
    """Build the sheet of the reads under `paths` and write it to `out` (stdout when None); an existing
    `out` only with `force`. Logs the samples written and the files ignored, in one line each."""
    if out and os.path.exists(out) and not force:
        raise InputError(f"{out}: exists; add --force to overwrite it, or give another -o")
    found = build_rows(paths)
    rows = found["rows"]
    if not rows:
        raise InputError(f"{', '.join(map(str, paths))}: no FASTA or FASTQ files found ({len(found['ignored'])} other "
                         "files); give the folders or files that hold the reads")
    text = sheet_text(rows)
    if out:
        with atomic_open(Path(out)) as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    paired = sum(1 for row in rows if row[2])
    log.info("%d samples (%d paired-end, %d single-end)%s", len(rows), paired, len(rows) - paired,
             f" written to {out}" if out else "")
    if found["ignored"]:
        compressed = found["compressed"]
        kinds = sorted(set(compressed.values()))
        note = (f"; {len(compressed)} of them compressed with {'/'.join(kinds)}, which the workflow does not read: "
                "recompress those with gzip" if compressed else "")
        examples = ", ".join(os.path.basename(p) for p in found["ignored"][:3])
        log.info("%d other files ignored (not FASTA or FASTQ by their first character: %s%s)%s",
                 len(found["ignored"]), examples, ", ..." if len(found["ignored"]) > 3 else "", note)
    return rows
