"""prepare vs a straightforward Biopython implementation of the same rules, same input, same run.

Both run in their own subprocess on one core (peak RSS from the OS); their outputs are compared
byte for byte. Two input sizes show whether peak memory grows with the input.

    .venv/bin/python benchmarks/prepare.py --reads 100000 200000
"""

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from virnucflow.synthetic import synthetic_reads, write_fasta  # noqa: E402

OURS = """
import sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from virnucflow.prepare import prepare_sample
prepare_sample(sys.argv[1], sys.argv[2], sample="bench", chunk_length=500, shard_residues=10**12)
"""


def timed(cmd):
    """Wall seconds and peak RSS (MB) of a command run alone in a subprocess, pinned to one core."""
    wrapper = (
        "import os, resource, subprocess, sys, time; os.sched_setaffinity(0, {0});"
        "t = time.perf_counter(); subprocess.run(sys.argv[1:], check=True);"
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], check=True, capture_output=True, text=True)
    seconds, rss_kb = out.stdout.split()
    return float(seconds), int(rss_kb) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, nargs="+", default=[100_000, 200_000])
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/prepare.md"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in args.reads:
            fasta = tmp / f"reads_{n}.fa"
            # Half "coding" reads (no stop in forward frame 1), so frames survive as in real genes.
            write_fasta(fasta, synthetic_reads(n, 150, 1500, coding_fraction=0.5, seed=n))
            mb = fasta.stat().st_size / 1e6
            ours_script = tmp / "ours.py"
            ours_script.write_text(OURS.format(repo=str(REPO)))
            ours_s, ours_rss = timed([sys.executable, str(ours_script), str(fasta), str(tmp / f"ours_{n}")])
            base_s, base_rss = timed([sys.executable, str(REPO / "benchmarks/baseline_biopython.py"), str(fasta),
                                      str(tmp / f"bio_{n}")])
            shards = tmp / f"ours_{n}" / "shards"
            identical = all(
                (shards / f"00000.{ext}").read_bytes() == (tmp / f"bio_{n}.{ext}").read_bytes()
                for ext in ("fna", "faa")
            )
            rows.append((n, mb, ours_s, ours_rss, base_s, base_rss, identical))
            print(f"{n} reads ({mb:.0f} MB): ours {mb / ours_s:.1f} MB/s, {ours_rss:.0f} MB; "
                  f"biopython {mb / base_s:.1f} MB/s, {base_rss:.0f} MB; x{base_s / ours_s:.1f}; "
                  f"identical={identical}", flush=True)
    lines = [
        f"# prepare vs Biopython ({time.strftime('%Y-%m-%d')}, {platform.machine()}, one core pinned)",
        "",
        f"Command: `.venv/bin/python benchmarks/prepare.py --reads {' '.join(map(str, args.reads))}`",
        "",
        "Input: seeded synthetic reads of 150-1500 bp, half of them coding (frames survive); chunk length 500,",
        "virnucpro mode. Both write the same frames; 'identical' compares their nucleotide and protein FASTA bytes.",
        "",
        "| reads | MB | virnucflow MB/s | peak RSS MB | Biopython MB/s | peak RSS MB | speed-up | identical |",
        "|---:|---:|---:|---:|---:|---:|---:|:--:|",
    ]
    lines += [
        f"| {n} | {mb:.0f} | {mb / o:.1f} | {orss:.0f} | {mb / b:.1f} | {brss:.0f} | {b / o:.1f}x | {'yes' if same else 'NO'} |"
        for n, mb, o, orss, b, brss, same in rows
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not all(row[-1] for row in rows):
        sys.exit("outputs differ")


if __name__ == "__main__":
    main()
