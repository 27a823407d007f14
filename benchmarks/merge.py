"""merge vs `cp` of the same bytes, and the merge's peak memory at two sizes.

Writes N rows of DNABERT-S (768) and ESM-2 (2560) float32 features in 20+ shard pairs (seeded; the
rows come from a small random pool, so writing is disk-bound), then in the same run times
`cp` of all shard files and `merge_sample` on them, each in its own subprocess and each ending in
`sync`, and spot-checks the result (every row carries its frame number in its first column of
each block). Peak RSS is the merge subprocess's ru_maxrss; CPU is its user + system time, which,
unlike the wall time, does not change when other jobs share the machine.

    .venv/bin/python benchmarks/merge.py                          # 100k rows, 1.4 GB
    .venv/bin/python benchmarks/merge.py --rows 100000 1000000    # + 13.4 GB: needs ~30 GB free
    .venv/bin/python benchmarks/merge.py --shuffle                # rows in random order in each shard
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from virnucflow.embeddings import EmbeddingWriter, open_embeddings  # noqa: E402
from virnucflow.workfiles import FRAMES_HEADER  # noqa: E402

DIMS = {"dna": 768, "protein": 2560}
POOL = 4096  # distinct random rows per model; each written row also carries its frame number

MERGE = """
import glob, sys
sys.path.insert(0, {repo!r})
from virnucflow.merge import merge_sample
folder, out, buffer_rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
merge_sample(folder + "/frames.tsv", sorted(glob.glob(folder + "/*.dna.h5")),
             sorted(glob.glob(folder + "/*.protein.h5")), out + "/embeddings.h5",
             validation_json=out + "/validation.json", missing_ids_txt=out + "/missing_ids.txt",
             buffer_rows=buffer_rows, allow_missing=False, chunk_length=500, compat="virnucpro")
"""


def frame_id(number):
    return f"read{number}_chunk_1F1"


def make_shards(folder, rows, shards, shuffle, seed=1):
    """frames.tsv and shard pairs of `rows` frames; row k of the sample has value k in column 0 of each block."""
    rng = np.random.default_rng(seed)
    pools = {kind: rng.standard_normal((POOL, dim), dtype=np.float32) for kind, dim in DIMS.items()}
    per_shard = -(-rows // shards)
    with open(folder / "frames.tsv", "w") as frames:
        frames.write(FRAMES_HEADER)
        for index in range(shards):
            first, stop = index * per_shard, min(rows, (index + 1) * per_shard)
            numbers = np.arange(first, max(first, stop))
            frames.writelines(f"{frame_id(k)}\tread{k}\t1\t+\t1\t0\t3\t1\t{index}\n" for k in numbers.tolist())
            for kind, dim in DIMS.items():
                order = rng.permutation(numbers) if shuffle else numbers
                with EmbeddingWriter(folder / f"{index:05d}.{kind}.h5", dim, {"model": kind, "kind": kind}) as writer:
                    for start in range(0, len(order), 8192):
                        part = order[start : start + 8192]
                        block = pools[kind][part % POOL]
                        block[:, 0] = part
                        writer.append([frame_id(k) for k in part.tolist()], block)


def check_result(path, rows, seed=2):
    """Ids in frame order and, for 500 random rows, each block from the right frame."""
    with open_embeddings(path) as out:
        assert len(out) == rows, (len(out), rows)
        picks = np.unique(np.random.default_rng(seed).integers(0, rows, 500))
        ids = out.ids[picks.tolist()]
        assert list(ids) == [frame_id(k) for k in picks.tolist()], "ids out of order"
        got = out.embeddings[picks.tolist()]
        assert np.array_equal(got[:, 0], picks) and np.array_equal(got[:, DIMS["dna"]], picks), "rows misjoined"


def timed(cmd):
    """Wall seconds, peak RSS (MB) and CPU seconds of `cmd` and its children."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter();"
               "subprocess.run(sys.argv[1:], check=True);"
               "r = resource.getrusage(resource.RUSAGE_CHILDREN);"
               "print(time.perf_counter() - t, r.ru_maxrss, r.ru_utime + r.ru_stime)")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], check=True, capture_output=True, text=True)
    seconds, rss, cpu = out.stdout.split()
    return float(seconds), int(rss) / 1024, float(cpu)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000])
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--buffer-rows", type=int, default=10_000, help="merge.buffer_rows")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs of cp and merge; the best of each")
    parser.add_argument("--shuffle", action="store_true",
                        help="rows in random order within each shard (the embed jobs write shard order)")
    parser.add_argument("--dir", default=None, help="scratch folder (default: the system temp folder)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/merge.md"))
    args = parser.parse_args()
    results = []
    for rows in args.rows:
        need = rows * sum(DIMS.values()) * 4 * 2.2  # shards + their copy (deleted before the merge writes)
        free = shutil.disk_usage(args.dir or tempfile.gettempdir()).free
        if free < need:
            print(f"skipping {rows} rows: needs {need / 1e9:.0f} GB free, {free / 1e9:.0f} GB available", flush=True)
            continue
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            folder = Path(tmp)
            started = time.perf_counter()
            make_shards(folder, rows, args.shards, args.shuffle)
            size = sum(p.stat().st_size for p in folder.glob("*.h5"))
            print(f"{rows} rows: {size / 1e9:.2f} GB of shards written in {time.perf_counter() - started:.0f} s",
                  flush=True)
            (folder / "merge.py").write_text(MERGE.format(repo=str(REPO)))
            # Interleaved repeats, best of each: other jobs on the machine only ever slow a run down.
            cp_s, merge_s, rss, cpu = float("inf"), float("inf"), 0.0, float("inf")
            for _ in range(args.repeat):
                (folder / "copy").mkdir()
                subprocess.run(["sync"], check=True)
                cp_s = min(cp_s, timed(["sh", "-c", f"cp {folder}/*.h5 {folder}/copy/ && sync"])[0])
                shutil.rmtree(folder / "copy")
                out = folder / "out"
                out.mkdir()
                subprocess.run(["sync"], check=True)
                seconds, peak, cpu_s = timed(["sh", "-c", f"{sys.executable} {folder}/merge.py {folder} {out} "
                                              f"{args.buffer_rows} && sync"])
                check_result(out / "embeddings.h5", rows)
                shutil.rmtree(out)
                merge_s, rss, cpu = min(merge_s, seconds), max(rss, peak), min(cpu, cpu_s)
            results.append((rows, size / 1e6, cp_s, merge_s, cpu, rss))
            print(f"{rows} rows ({size / 1e9:.2f} GB): cp {size / 1e6 / cp_s:.0f} MB/s, merge "
                  f"{size / 1e6 / merge_s:.0f} MB/s = {cp_s / merge_s:.2f}x cp, {cpu:.1f} s CPU, "
                  f"peak RSS {rss:.0f} MB", flush=True)
    lines = [
        f"# merge vs cp ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores)", "",
        f"Command: `.venv/bin/python benchmarks/merge.py --rows {' '.join(map(str, args.rows))} "
        f"--repeat {args.repeat}"
        f"{' --shuffle' if args.shuffle else ''}`", "",
        f"{args.shards} shard pairs of 768 + 2560 float32 columns (rows "
        f"{'shuffled within each shard' if args.shuffle else 'in shard order, as the embed jobs write them'}); "
        f"merge.buffer_rows {args.buffer_rows}; both timings end in `sync`; MB/s are shard bytes per second; best of "
        f"{args.repeat} interleaved runs. CPU: the merge's user + system seconds (least); RSS: its peak (most).", "",
        "| rows | GB | cp MB/s | merge MB/s | merge / cp | merge CPU s | merge peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r} | {mb / 1e3:.2f} | {mb / c:.0f} | {mb / m:.0f} | {c / m:.2f}x | {cpu:.1f} | {rss:.0f} |"
              for r, mb, c, m, cpu, rss in results]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
