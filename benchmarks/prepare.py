"""prepare vs a straightforward Biopython implementation of the same rules, same input, same run.

Each side runs in its own subprocess pinned to one core; CPU seconds and peak RSS come from the
OS (getrusage of the child), and every output file (frames.tsv, reads.tsv, all shards) is compared
byte for byte. Two input sizes show whether peak memory grows with the input.

    .venv/bin/python -m benchmarks.prepare                      # 100k and 250k reads
    .venv/bin/python -m benchmarks.prepare --reads 20000 50000  # quicker
    .venv/bin/python -m benchmarks.prepare --reads 100000 --fastq --out benchmarks/results/prepare_fastq.md
                                                                # + the same reads as FASTQ

Input: seeded reads of 150-1500 bp; 35% coding on the forward strand and 15% on the reverse
strand (random sense codons, so frames survive as in real genes), the rest random DNA; 1% of the
reads carry a few N or other IUPAC codes, 2% are lower case; 60-column lines.
"""

import argparse
import filecmp
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from itertools import chain
from pathlib import Path

import numpy as np

from benchmarks import REPO
from benchmarks.command import python_env


RESULTS = REPO / "benchmarks" / "results" / "prepare.md"
OURS = (
    "import sys; from virnucflow.prepare import prepare_sample; "
    "prepare_sample(sys.argv[1], sys.argv[2], sample='bench', chunk_length=500, compat={compat!r}, "
    "shard_residues=10_000_000)"
)
SENSE = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT" if a + b + c not in ("TAA", "TAG", "TGA")]


def make_reads(path, n, seed):
    """Write n seeded reads to `path` (FASTA, 60-column lines); returns the file size in bytes."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(150, 1501, n)
    kind = rng.random(n)  # < 0.35 forward coding, < 0.50 reverse coding, else random
    bases = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, int(lengths.sum()))].tobytes()
    codons = np.frombuffer("".join(SENSE).encode(), np.uint8).reshape(61, 3)
    coding = codons[rng.integers(0, 61, int(lengths.sum()) // 3 + 1)].tobytes()
    complement = bytes.maketrans(b"ACGT", b"TGCA")
    with open(path, "w") as out:
        at = 0
        for i, (length, k) in enumerate(zip(lengths.tolist(), kind.tolist())):
            seq = (coding if k < 0.5 else bases)[at : at + length]
            at += length
            if 0.35 <= k < 0.5:
                seq = seq.translate(complement)[::-1]
            if i % 100 == 7:  # a few ambiguity codes
                seq = bytearray(seq)
                for pos in rng.integers(0, length, 4).tolist():
                    seq[pos] = b"NNNRYKMSWBDHV"[pos % 13]
                seq = bytes(seq)
            if i % 50 == 11:
                seq = seq.lower()
            text = seq.decode()
            out.write(f">read{i + 1} len={length}\n")
            out.write("\n".join(text[j : j + 60] for j in range(0, length, 60)) + "\n")
    return path.stat().st_size


def measured(cmd):
    """(CPU seconds, wall seconds, peak RSS MB) of `cmd` run alone in a child pinned to one core."""
    wrapper = (
        "import os, resource, subprocess, sys, time; os.sched_setaffinity(0, {0}); t = time.perf_counter();"
        "subprocess.run(sys.argv[1:], check=True); wall = time.perf_counter() - t;"
        "u = resource.getrusage(resource.RUSAGE_CHILDREN); print(u.ru_utime + u.ru_stime, wall, u.ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], check=True, capture_output=True, text=True,
                         env=python_env())
    cpu, wall, rss_kb = out.stdout.split()
    return float(cpu), float(wall), int(rss_kb) / 1024


READER = """
import sys, time
path, which = sys.argv[1], sys.argv[2]
if which == "pyfastx":
    import pyfastx
from virnucflow.fasta import read_batches
t = time.process_time()
if which == "pyfastx":
    legal = b"ACGTURYSWKMBDHVNacgturyswkmbdhvn"
    ids, seqs, count = [], [], 0
    for name, seq in pyfastx.Fastx(path, format="fasta"):
        ids.append(name)
        seqs.append(seq.encode())
        if len(seqs) == 1000:  # the same work as ours: batches of bytes, IUPAC-checked
            assert not b"".join(seqs).translate(None, legal)
            count += len(seqs)
            seqs = []
    count += len(seqs)
else:
    count = sum(len(batch.ids) for batch in read_batches(path))
print(time.process_time() - t, count)
"""


def reader_rows(fasta, mb):
    """CPU seconds to read and check the FASTA with pyfastx and with virnucflow's reader, plain and gzip,
    and what each does with a truncated .gz (pyfastx 2.3.1 stops early without an error)."""
    gz = fasta.with_suffix(".fa.gz")
    subprocess.run(f"gzip -1 -c {fasta} > {gz}", shell=True, check=True)
    truncated = fasta.with_suffix(".cut.fa.gz")
    truncated.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    rows = []
    for which in ("pyfastx", "virnucflow"):
        times = []
        for path in (fasta, gz):
            out = subprocess.run([sys.executable, "-c", READER, str(path), which], check=True,
                                 capture_output=True, text=True, env=python_env()).stdout.split()
            times.append((float(out[0]), int(out[1])))
        cut = subprocess.run([sys.executable, "-c", READER, str(truncated), which],
                             capture_output=True, text=True, env=python_env())
        if cut.returncode == 0:
            verdict = f"no error, {int(cut.stdout.split()[1])} of {times[0][1]} reads"
        else:
            last = cut.stderr.strip().splitlines()[-1]
            verdict = "InputError: damaged gzip data" if "damaged gzip data" in last else last
        rows.append((which, mb / times[0][0], mb / times[1][0], verdict))
    for path in (gz, truncated):
        path.unlink()
    return rows


def write_fastq(fasta, fastq):
    """The FASTQ of the reads of `fasta` (one sequence line per record, qualities 'F')."""
    with open(fasta) as src, open(fastq, "w") as out:
        head, seq = None, []
        for line in chain(src, [">"]):
            if line.startswith(">"):
                if head is not None:
                    bases = "".join(seq)
                    out.write(f"@{head}\n{bases}\n+\n{'F' * len(bases)}\n")
                head, seq = line[1:].rstrip("\n"), []
            else:
                seq.append(line.rstrip("\n"))
    return fastq.stat().st_size


def fastq_rows(fasta, mb, repeat):
    """prepare and the reader alone on the FASTA and on the FASTQ of the same reads: CPU seconds (the
    lowest of `repeat` alternating runs), peak RSS, and whether the work folders are byte-identical."""
    fastq = fasta.with_suffix(".fq")
    sizes = {fasta: mb, fastq: write_fastq(fasta, fastq) / 1e6}
    rows, folders = [], {}
    for path in (fasta, fastq):
        folders[path] = fasta.parent / f"fmt_{path.suffix[1:]}"
    runs = {path: [] for path in sizes}
    for _ in range(repeat):
        for path in sizes:
            subprocess.run(["rm", "-rf", str(folders[path])], check=True)
            runs[path].append(measured([sys.executable, "-c", OURS.format(compat="virnucpro"),
                                        str(path), str(folders[path])]))
    identical = same_outputs(folders[fasta], folders[fastq])
    mbp = json.loads((folders[fasta] / "summary.json").read_text())["bases"] / 1e6
    for path in sizes:
        gz = path.with_name(path.name + ".gz")
        subprocess.run(f"gzip -1 -c {path} > {gz}", shell=True, check=True)
        reader = []
        for source in (path, gz):
            command = [sys.executable, "-c", READER, str(source), "virnucflow"]
            seconds = [subprocess.run(command, check=True, capture_output=True, text=True, env=python_env()).stdout.split()[0]
                       for _ in range(repeat)]
            reader.append(min(map(float, seconds)))
        gz.unlink()
        cpu = min(run[0] for run in runs[path])
        rss = max(run[2] for run in runs[path])
        rows.append(("FASTQ" if path == fastq else "FASTA", sizes[path], mbp, cpu, rss, *reader))
    for folder in folders.values():
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    fastq.unlink()
    return rows, identical


def same_outputs(ours, theirs):
    """True when both folders hold the same frames.tsv, reads.tsv and shard files, byte for byte."""
    names = ["frames.tsv", "reads.tsv"] + sorted(f"shards/{p.name}" for p in (Path(ours) / "shards").iterdir())
    theirs_shards = sorted(f"shards/{p.name}" for p in (Path(theirs) / "shards").iterdir())
    if names[2:] != theirs_shards:
        return False
    return all(filecmp.cmp(Path(ours) / n, Path(theirs) / n, shallow=False) for n in names)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, nargs="+", default=[100_000, 250_000], help="input sizes")
    parser.add_argument("--compat", choices=["virnucpro", "fixed"], default="virnucpro")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--tmp", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--no-reader", action="store_true",
                        help="skip the reader comparison with pyfastx (skipped anyway when it is not installed)")
    parser.add_argument("--fastq", action="store_true",
                        help="also prepare the first size's reads as FASTQ, against the same reads as FASTA")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each format for --fastq (lowest CPU kept)")
    return parser.parse_args()


def measure_sizes(args):
    """prepare and Biopython on each --reads size: (rows, reader rows, FASTQ rows)."""
    rows, readers, formats = [], [], None
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        for n in args.reads:
            fasta = tmp / f"reads_{n}.fa"
            mb = make_reads(fasta, n, seed=n) / 1e6
            ours_dir, bio_dir = tmp / f"ours_{n}", tmp / f"bio_{n}"
            ours = measured([sys.executable, "-c", OURS.format(compat=args.compat), str(fasta),
                             str(ours_dir)])
            bio = measured([sys.executable, "-m", "benchmarks.baseline_biopython", str(fasta), str(bio_dir),
                            "--compat", args.compat])
            frames = sum(1 for _ in open(ours_dir / "frames.tsv")) - 1
            identical = same_outputs(ours_dir, bio_dir)
            rows.append((n, mb, frames, ours, bio, identical))
            print(f"{n} reads ({mb:.0f} MB, {frames} frames): virnucflow {mb / ours[0]:.1f} MB/s "
                  f"({ours[0]:.2f} s CPU, {ours[2]:.0f} MB RSS); Biopython {mb / bio[0]:.2f} MB/s "
                  f"({bio[0]:.1f} s CPU, {bio[2]:.0f} MB RSS); x{bio[0] / ours[0]:.1f}; identical={identical}",
                  file=sys.stderr, flush=True)
            for folder in (ours_dir, bio_dir):
                subprocess.run(["rm", "-rf", str(folder)], check=True)
            if not readers and not args.no_reader and importlib.util.find_spec("pyfastx"):
                readers = reader_rows(fasta, mb)
            if args.fastq and formats is None:
                formats = (n, *fastq_rows(fasta, mb, args.repeat))
            fasta.unlink()
    return rows, readers, formats


def prepare_lines(args, rows):
    """The table of prepare against Biopython, a row per size."""
    lines = [
        f"# prepare vs Biopython ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
        "each side pinned to one core)",
        "",
        f"Command: `.venv/bin/python -m benchmarks.prepare --reads {' '.join(map(str, args.reads))}"
        f"{' --compat ' + args.compat if args.compat != 'virnucpro' else ''}"
        f"{' --no-reader' if args.no_reader else ''}{f' --fastq --repeat {args.repeat}' if args.fastq else ''}`",
        "",
        "Input: seeded reads of 150-1500 bp, half of them coding (frames survive), 60-column FASTA; chunk length",
        f"500, {args.compat} mode. MB/s = MB of FASTA per CPU second of the process (user + sys, from getrusage):",
        "the machine is shared, so wall seconds are shown too but the ratio is taken on CPU time. 'identical':",
        "frames.tsv, reads.tsv and every shard file are byte-identical between the two.",
        "",
        "| reads | FASTA MB | frames | virnucflow MB/s | CPU s | wall s | peak RSS MB "
        "| Biopython MB/s | CPU s | wall s | peak RSS MB | speed-up | identical |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:--:|",
    ]
    for n, mb, frames, (oc, ow, orss), (bc, bw, brss), same in rows:
        lines.append(f"| {n} | {mb:.0f} | {frames} | {mb / oc:.1f} | {oc:.2f} | {ow:.2f} | {orss:.0f} | {mb / bc:.2f} "
                     f"| {bc:.1f} | {bw:.1f} | {brss:.0f} | {bc / oc:.1f}x | {'yes' if same else 'NO'} |")
    return lines


def reader_lines(args, readers):
    """The table of the readers alone (pyfastx, ours)."""
    lines = [
        "",
        f"Reading alone ({args.reads[0]} reads): MB of FASTA per CPU second to parse and IUPAC-check, and a .gz",
        "cut in half. The project reads FASTA itself because pyfastx returns a prefix of a damaged .gz silently.",
        "",
        "| reader | plain MB/s | gzip -1 MB/s | truncated .gz |",
        "|---|---:|---:|---|",
    ]
    lines += [f"| {which} | {plain:.0f} | {gz:.0f} | {verdict} |" for which, plain, gz, verdict in readers]
    return lines


def format_lines(args, formats):
    """The table of FASTQ against FASTA."""
    n, format_rows, identical = formats
    (_, fa_mb, _, fa_cpu, *_), (_, fq_mb, _, fq_cpu, *_) = format_rows
    lines = [
        "",
        f"FASTQ vs FASTA ({n} reads, the same reads in both; FASTQ with one sequence line and a quality line per",
        f"record, FASTA in 60-column lines; lowest CPU seconds of {args.repeat} alternating runs, each in its own",
        "process pinned to one core). MB/s = MB of the file's text per CPU second; Mbp/s = bases per CPU second,",
        "the same bases in both rows. Reader = read_batches alone (parse + checks), plain and gzip -1.",
        "",
        "| format | MB | prepare CPU s | prepare MB/s | prepare Mbp/s | peak RSS MB | reader MB/s "
        "| reader gzip MB/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for which, size, mbp, cpu, rss, plain, gz in format_rows:
        lines.append(f"| {which} | {size:.0f} | {cpu:.2f} | {size / cpu:.1f} | {mbp / cpu:.1f} | {rss:.0f} "
                     f"| {size / plain:.0f} | {size / gz:.0f} |")
    lines += [
        "",
        f"FASTQ / FASTA: {fa_cpu / fq_cpu:.2f}x the reads per CPU second, "
        f"{(fq_mb / fq_cpu) / (fa_mb / fa_cpu):.2f}x the MB/s of text; work folders (frames.tsv, reads.tsv, "
        f"shards) byte-identical: {'yes' if identical else 'NO'}.",
    ]
    return lines


def main():
    args = parse_args()
    rows, readers, formats = measure_sizes(args)
    lines = prepare_lines(args, rows)
    if readers:
        lines += reader_lines(args, readers)
    if formats:
        lines += format_lines(args, formats)
    table = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table)
    print(table)
    if not all(row[-1] for row in rows):
        sys.exit("outputs differ")
    if formats and not formats[2]:
        sys.exit("FASTQ and FASTA work folders differ")


if __name__ == "__main__":
    main()
