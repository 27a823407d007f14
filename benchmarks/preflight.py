"""What the checks at workflow start cost (virnucflow.preflight: each sample's FASTA by its first
64 KiB, the models by config and table of contents, the classifier by loading it).

Two questions: does a sample's check grow with its size (it must not: 100 GB of input is checked
while snakemake starts), and what does the whole check cost per sample at 10 to 1,000 samples?
Baseline in the same run: reading the first 64 KiB of the same files (what the check reads).

    .venv/bin/python -m benchmarks.preflight --sizes-mb 1 1000 20000 --samples 10 100 1000
"""

import argparse
import gzip
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import REPO
from virnucflow.demo import write_demo_models
from virnucflow.preflight import preflight
from virnucflow.snakemake_seams import Product


RECORD = b">read_%d some description\n" + b"ACGTTGCAAGGCTTACGATCGATCGGATCCATGACGTAGCTAGCTAGGCTAGCATCGACTGAC" * 8 + b"\n"


def write_reads(path, megabytes, gz=False):
    """A FASTA of `megabytes` MB: real records for the first 4 MB (what any check could read), then
    holes (a sparse file: the size of a large input without writing it; .gz files are written whole)."""
    block = b"".join(RECORD.replace(b"%d", str(i).encode()) for i in range(2000))
    if gz:
        with gzip.open(path, "wb", compresslevel=1) as handle:
            for _ in range(max(1, megabytes * 1_000_000 // len(block))):
                handle.write(block)
        return
    with open(path, "wb") as handle:
        while handle.tell() < min(megabytes, 4) * 1_000_000:
            handle.write(block)
        handle.truncate(megabytes * 1_000_000)


def read_start(path, size=1 << 16):
    """The baseline: read the bytes the check reads, nothing else."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        return handle.read(size)


def best_of(repeats, call):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[1, 1000, 20000])
    parser.add_argument("--gz-mb", type=int, default=200, help="size of the gzip file checked beside them")
    parser.add_argument("--samples", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/preflight.md"))
    args = parser.parse_args()
    lines = [f"# Checks at workflow start ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores)",
             "", f"Command: `.venv/bin/python -m benchmarks.preflight --sizes-mb {' '.join(map(str, args.sizes_mb))} "
             f"--gz-mb {args.gz_mb} --samples {' '.join(map(str, args.samples))}`", ""]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = root / "models"
        write_demo_models(models / "dnabert_s", models / "esm2.pt", models / "classifier.pth")
        config = {"chunk_length": 500, "embed": {"device": "auto"}, "classifier": str(models / "classifier.pth"),
                  "models": {"dnabert_s": str(models / "dnabert_s"), "esm2": str(models / "esm2.pt")}}
        # Once per run: the first model check imports torch. A fresh process, against `python -c pass`.
        code = f"from virnucflow.preflight import preflight; preflight({config!r}, {{}})"
        first = best_of(3, lambda: subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)) - best_of(
            3, lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))

        lines += ["## One sample, by input size (FASTA check only; best of 5)", "",
                  "| input | check (ms) | reading its first 64 KiB (ms) |", "|---|---:|---:|"]
        files = [(f"{mb:,} MB FASTA", root / f"reads_{mb}.fa", mb, False) for mb in args.sizes_mb]
        files.append((f"{args.gz_mb:,} MB FASTA, gzipped", root / "reads.fa.gz", args.gz_mb, True))
        for label, path, mb, gz in files:
            write_reads(path, mb, gz)
            fasta_only = {**config, "classifier": None}  # and the models skipped, as if a rule built them
            check = best_of(5, lambda: preflight(fasta_only, {"s": str(path)}, made_by_rule=lambda p: Product("r", finished=False)))
            head = best_of(5, lambda: read_start(path))
            lines.append(f"| {label} (on disk {path.stat().st_blocks * 512 / 1e6:,.0f} MB) | {1000 * check:.2f} | "
                         f"{1000 * head:.2f} |")
            print(lines[-1], flush=True)

        lines += ["", "## The whole check (models, classifier, every sample's FASTA of 1 MB), by sample count", "",
                  "| samples | seconds | ms per sample |", "|---:|---:|---:|"]
        for count in args.samples:
            samples = {}
            for i in range(count):
                path = root / f"sample_{i}.fa"
                if not path.exists():
                    write_reads(path, 1)
                samples[f"s{i}"] = str(path)
            seconds = best_of(3, lambda: preflight(config, samples))
            lines.append(f"| {count:,} | {seconds:.3f} | {1000 * seconds / count:.2f} |")
            print(lines[-1], flush=True)
    lines += ["", f"Once per run, the checks of the models and the classifier in a fresh process (importing torch "
              f"included): {first:.2f} s more than `python -c pass` (the tables above come after it). The check reads the first 64 KiB of each file (decompressed "
              "for .gz), so its cost does not grow with the input."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
