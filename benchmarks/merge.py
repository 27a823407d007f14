"""merge vs `cp` of the same bytes, and the merge's peak memory at two sizes.

Writes N rows of DNABERT-S (768) and ESM-2 (2560) float32 features in 20+ shard pairs (the protein
rows of each shard shuffled, as a length-sorted ESM output would be), then in the same run times
`cp` of all shard files and `merge_sample` on them, each in its own subprocess.

    .venv/bin/python benchmarks/merge.py --rows 100000 1000000
"""

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from virnucflow.prepare import FRAMES_HEADER  # noqa: E402
from virnucflow.shards import EmbeddingWriter  # noqa: E402

MERGE = """
import sys
sys.path.insert(0, {repo!r})
from virnucflow.merge import merge_sample
folder = sys.argv[1]
import glob
merge_sample(folder + "/frames.tsv", sorted(glob.glob(folder + "/*.dna.h5")), sorted(glob.glob(folder + "/*.protein.h5")),
             folder + "/out/embeddings.h5", validation_json=folder + "/out/validation.json",
             missing_ids_txt=folder + "/out/missing.txt", chunk_rows=10000)
"""


def make_shards(folder, rows, shards, shuffle):
    rng = np.random.default_rng(rows)
    per_shard = -(-rows // shards)
    with open(folder / "frames.tsv", "w") as frames:
        frames.write(FRAMES_HEADER)
        for index in range(shards):
            ids = [f"read{i}_chunk_1F1" for i in range(index * per_shard, min(rows, (index + 1) * per_shard))]
            frames.writelines(f"{sid}\tread\t1\t+\t1\t0\t3\t1\t{index}\n" for sid in ids)
            order = rng.permutation(len(ids)) if shuffle else np.arange(len(ids))
            for kind, dim, rows_order in (("dna", 768, np.arange(len(ids))), ("protein", 2560, order)):
                with EmbeddingWriter(folder / f"{index:05d}.{kind}.h5", dim) as writer:
                    for start in range(0, len(ids), 20000):
                        part = rows_order[start : start + 20000]
                        writer.append([ids[i] for i in part], rng.standard_normal((len(part), dim), dtype=np.float32))


def timed(cmd):
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); subprocess.run(sys.argv[1:], check=True);"
               "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], check=True, capture_output=True, text=True)
    seconds, rss = out.stdout.split()
    return float(seconds), int(rss) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000])
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--shuffle", action="store_true",
                        help="protein rows in random order within each shard (embed jobs write shard order)")
    parser.add_argument("--dir", default=None, help="scratch folder (needs ~3x the data size free)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/merge.md"))
    args = parser.parse_args()
    results = []
    for rows in args.rows:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            folder = Path(tmp)
            make_shards(folder, rows, args.shards, args.shuffle)
            size = sum(p.stat().st_size for p in folder.glob("*.h5"))
            script = folder / "merge.py"
            script.write_text(MERGE.format(repo=str(REPO)))
            (folder / "copy").mkdir()
            subprocess.run("sync", shell=True)
            cp_s, _ = timed(["sh", "-c", f"cp {folder}/*.h5 {folder}/copy/ && sync"])
            shutil.rmtree(folder / "copy")
            merge_s, merge_rss = timed(["sh", "-c", f"{sys.executable} {script} {folder} && sync"])
            results.append((rows, size / 1e6, cp_s, merge_s, merge_rss))
            print(f"{rows} rows ({size / 1e9:.2f} GB): cp {size / 1e6 / cp_s:.0f} MB/s, merge {size / 1e6 / merge_s:.0f} MB/s "
                  f"({cp_s / merge_s:.2f}x cp), merge peak RSS {merge_rss:.0f} MB", flush=True)
    lines = [
        f"# merge vs cp ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores)", "",
        f"Command: `.venv/bin/python benchmarks/merge.py --rows {' '.join(map(str, args.rows))}"
        f"{' --shuffle' if args.shuffle else ''}`", "",
        f"{args.shards} shard pairs of 768 + 2560 float32 columns (protein rows "
        f"{'shuffled within each shard' if args.shuffle else 'in shard order, as the embed jobs write them'}); "
        "chunk_rows 10000; both timings include a final `sync`.", "",
        "| rows | GB | cp MB/s | merge MB/s | merge / cp | merge peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r} | {mb / 1e3:.2f} | {mb / c:.0f} | {mb / m:.0f} | {c / m:.2f}x | {rss:.0f} |"
              for r, mb, c, m, rss in results]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
