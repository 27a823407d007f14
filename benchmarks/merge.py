"""merge vs `cp` of the same bytes, and the merge's peak memory at two sizes.

Writes N rows of DNABERT-S (768) and ESM-2 (2560) float32 features in 20+ shard pairs (seeded; the
rows come from a small random pool, so writing is disk-bound) with their shard FASTA (500 bp and
166 aa per frame, as prepare writes them; each shard records their sha256 as an embed job does),
then in the same run times `cp` of all shard files and `merge_sample` on them as the workflow runs
it (shard FASTA given: their sha256 checked, and every shard's ids and rows checked against their
checksums), each in its own subprocess and each ending in `sync`, and spot-checks the result (every
row carries its frame number in its first column of each block). Peak RSS is the merge subprocess's
ru_maxrss; CPU is its user + system time, which, unlike the wall time, does not change when other
jobs share the machine. Runs are interleaved (cp, merge, [merge of --against], cp, ...) and the
medians reported.

    .venv/bin/python -m benchmarks.merge                          # 100k rows, 1.4 GB
    .venv/bin/python -m benchmarks.merge --rows 100000 1000000    # + 13.4 GB: needs ~30 GB free
    .venv/bin/python -m benchmarks.merge --shuffle                # rows in random order in each shard
    git worktree add /tmp/old <rev> && .venv/bin/python -m benchmarks.merge --against /tmp/old
                                                                  # + the merge of another revision
"""

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import REPO
from benchmarks.command import python_env, write_results
from virnucflow.embeddings import EmbeddingWriter, open_embeddings
from virnucflow.workfiles import FRAMES_HEADER


DIMS = {"dna": 768, "protein": 2560}
POOL = 4096  # distinct random rows per model; each written row also carries its frame number

MERGE = """
import glob, inspect, sys
from virnucflow.merge import merge_sample
folder, out, buffer_rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
fasta = {}
if "dna_fasta" in inspect.signature(merge_sample).parameters:  # revisions before issue 13 do not check them
    fasta = dict(dna_fasta=sorted(glob.glob(folder + "/*.fna")), protein_fasta=sorted(glob.glob(folder + "/*.faa")))
merge_sample(folder + "/frames.tsv", sorted(glob.glob(folder + "/*.dna.h5")),
             sorted(glob.glob(folder + "/*.protein.h5")), out + "/embeddings.h5",
             validation_json=out + "/validation.json", missing_ids_txt=out + "/missing_ids.txt",
             buffer_rows=buffer_rows, allow_missing=False, chunk_length=500, compat="virnucpro", **fasta)
"""
FASTA = {"dna": ("fna", 500, b"ACGT"), "protein": ("faa", 166, b"ACDEFGHIKLMNPQRSTVWY")}


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
                ext, length, letters = FASTA[kind]
                residues = np.frombuffer(letters, dtype=np.uint8)[rng.integers(0, len(letters), length)].tobytes()
                fasta = folder / f"{index:05d}.{ext}"
                with open(fasta, "wb") as handle:
                    handle.writelines(b">%s\n%s\n" % (frame_id(k).encode(), residues) for k in numbers.tolist())
                attrs = {"model": kind, "kind": kind, "input_sha256": hashlib.sha256(fasta.read_bytes()).hexdigest()}
                order = rng.permutation(numbers) if shuffle else numbers
                with EmbeddingWriter(folder / f"{index:05d}.{kind}.h5", dim, attrs) as writer:
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


def timed(cmd, env=None):
    """Wall seconds, peak RSS (MB) and CPU seconds of `cmd` and its children."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter();"
               "subprocess.run(sys.argv[1:], check=True);"
               "r = resource.getrusage(resource.RUSAGE_CHILDREN);"
               "print(time.perf_counter() - t, r.ru_maxrss, r.ru_utime + r.ru_stime)")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], check=True, capture_output=True, text=True, env=env)
    seconds, rss, cpu = out.stdout.split()
    return float(seconds), int(rss) / 1024, float(cpu)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000])
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--buffer-rows", type=int, default=10_000, help="merge.buffer_rows")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs of cp and merge; the median of each")
    parser.add_argument("--shuffle", action="store_true",
                        help="rows in random order within each shard (the embed jobs write shard order)")
    parser.add_argument("--against", default=None,
                        help="a checkout of another revision (git worktree): its merge is timed too, interleaved")
    parser.add_argument("--dir", default=None, help="scratch folder (default: the system temp folder)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/merge.md"))
    return parser.parse_args()


def measure_rows(args, rows, sources):
    """cp and each source's merge on `rows` rows, interleaved: (rows, MB, median s, median CPU s, peak RSS MB)."""
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        make_shards(folder, rows, args.shards, args.shuffle)
        size = sum(p.stat().st_size for p in folder.glob("*.h5"))
        print(f"{rows} rows: {size / 1e9:.2f} GB of shards written in {time.perf_counter() - started:.0f} s",
              flush=True)
        (folder / "merge.py").write_text(MERGE)
        # Interleaved repeats: other jobs on the machine slow every kind of run alike.
        times = {"cp": [], **{name: [] for name in sources}}
        cpu = {name: [] for name in sources}
        rss = 0.0
        for _ in range(args.repeat):
            (folder / "copy").mkdir()
            subprocess.run(["sync"], check=True)
            times["cp"].append(timed(["sh", "-c", f"cp {folder}/*.h5 {folder}/copy/ && sync"])[0])
            shutil.rmtree(folder / "copy")
            for name, source in sources.items():
                out = folder / "out"
                out.mkdir()
                subprocess.run(["sync"], check=True)
                seconds, peak, cpu_s = timed(["sh", "-c", f"{sys.executable} {folder}/merge.py {folder} {out} "
                                              f"{args.buffer_rows} && sync"], env=python_env(source))
                check_result(out / "embeddings.h5", rows)
                shutil.rmtree(out)
                times[name].append(seconds)
                cpu[name].append(cpu_s)
                if name == "merge":
                    rss = max(rss, peak)
        median = {name: statistics.median(values) for name, values in times.items()}
        cpu_median = {name: statistics.median(values) for name, values in cpu.items()}
        result = (rows, size / 1e6, median, cpu_median, rss)
        line = (f"{rows} rows ({size / 1e9:.2f} GB): cp {size / 1e6 / median['cp']:.0f} MB/s, merge "
                f"{size / 1e6 / median['merge']:.0f} MB/s = {median['cp'] / median['merge']:.2f}x cp, "
                f"{cpu_median['merge']:.1f} s CPU, peak RSS {rss:.0f} MB")
        if args.against:
            line += (f"; --against: {median['cp'] / median['against']:.2f}x cp, {cpu_median['against']:.1f} s CPU; "
                     f"new/old wall {median['merge'] / median['against']:.2f}, CPU "
                     f"{cpu_median['merge'] / cpu_median['against']:.2f}")
        print(line, flush=True)
    return result


def table_lines(args, results):
    """The results table, a row per size."""
    against = f" --against {args.against}" if args.against else ""
    lines = [
        f"# merge vs cp ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores)", "",
        f"Command: `.venv/bin/python -m benchmarks.merge --rows {' '.join(map(str, args.rows))} "
        f"--repeat {args.repeat}{' --shuffle' if args.shuffle else ''}{against}`", "",
        f"{args.shards} shard pairs of 768 + 2560 float32 columns (rows "
        f"{'shuffled within each shard' if args.shuffle else 'in shard order, as the embed jobs write them'}), "
        f"with their shard FASTA (checked by sha256), every shard's ids and rows checked against their checksums; "
        f"merge.buffer_rows {args.buffer_rows}; both timings end in `sync`; MB/s are shard bytes per second; "
        f"medians of {args.repeat} interleaved runs. CPU: the merge's user + system seconds (median); RSS: its "
        f"peak (most).", "",
        "| rows | GB | cp MB/s | merge MB/s | merge / cp | merge CPU s | merge peak RSS MB |"
        + (" against: merge / cp | against: CPU s | new / old wall | new / old CPU |" if args.against else ""),
        "|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|---:|" if args.against else ""),
    ]
    for r, mb, m, c, peak in results:
        row = (f"| {r} | {mb / 1e3:.2f} | {mb / m['cp']:.0f} | {mb / m['merge']:.0f} | {m['cp'] / m['merge']:.2f}x | "
               f"{c['merge']:.1f} | {peak:.0f} |")
        if args.against:
            row += (f" {m['cp'] / m['against']:.2f}x | {c['against']:.1f} | {m['merge'] / m['against']:.2f} | "
                    f"{c['merge'] / c['against']:.2f} |")
        lines.append(row)
    return lines


def main():
    args = parse_args()
    sources = {"merge": str(REPO)} | ({"against": str(Path(args.against).resolve())} if args.against else {})
    results = []
    for rows in args.rows:
        need = rows * sum(DIMS.values()) * 4 * 2.2  # shards + their copy (deleted before the merge writes)
        free = shutil.disk_usage(args.dir or tempfile.gettempdir()).free
        if free < need:
            print(f"skipping {rows} rows: needs {need / 1e9:.0f} GB free, {free / 1e9:.0f} GB available", flush=True)
            continue
        results.append(measure_rows(args, rows, sources))
    lines = table_lines(args, results)
    write_results(args.out, lines)


if __name__ == "__main__":
    main()
