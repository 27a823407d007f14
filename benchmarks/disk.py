"""Disk use of a run, per frame and per read, measured on the real workflow; and what `merge.dtype:
float16` changes: bytes, merge and predict time, classifier scores and calls.

1. The workflow (config/demo.yaml: the tiny untrained models, 48 + 64 features) runs on --reads
   synthetic reads of 500 bp (half "coding", benchmarks/synthetic.py) with keep_shards: true, while a
   thread samples the allocated bytes (st_blocks: what a quota counts) of every file under work/ and
   results/ every --interval seconds. Afterwards each finished file is measured (apparent size); each
   HDF5 file's overhead (its bytes beyond the row storage it allocated: ids, HDF5's structures) per row
   gives the published-width figures: that overhead + 768, 2560 or 3328 values x 4 bytes (x 2 for
   float16). With keep_shards: false (the default) the shards are deleted only after the merge has
   finished, so the peak during the merge is the same.
2. One DNA and one protein shard of that run are embedded again in this process (embed_shard, the
   job's own code) to measure an embed job's peak: its sidecar (the finished batches) plus its output
   while that is written (reserved whole when it is made).
3. merge.dtype float16 against float32, in the same run: (a) on the shards of part 1, scored by the
   demo classifier (every real code path, tiny widths) and (b) at the published width on --rows rows
   of 768 + 2560 features drawn column by column like real ones (each column's mean and spread over
   the 8 real frames in VirNucPro's test data, ../shared/reference/virnucpro; a generic spread where
   that is absent), scored by VirNucPro's MLP at 3328 inputs from virnucflow.demo.write_demo_classifier
   with its BatchNorm statistics set from these features (as training sets them), so that its scores
   spread over [0, 1] as a trained model's do. Each: merge (ending in sync) and predict timed
   alternately (--repeat, medians), bytes of embeddings.h5, and the change of every frame's score2
   (P(virus)) and of the frame, chunk and read calls.

    .venv/bin/python -m benchmarks.disk                                     # 20,000 reads; 100,000 rows
    .venv/bin/python -m benchmarks.disk --reads 400 --rows 2000 --repeat 1  # a smoke run
"""

import argparse
import collections
import csv
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks import REPO
from benchmarks.command import command_line, write_results
from benchmarks.synthetic import synthetic_reads, write_fasta
from benchmarks.workflow import copy_workflow
from virnucflow.embeddings import ROWS_PER_CHUNK, EmbeddingWriter, open_embeddings
from virnucflow.workfiles import FRAMES_HEADER, READS_HEADER


READ_LENGTH = 500
PUBLISHED = {"dna": 768, "protein": 2560}
REFERENCE = REPO.parent / "shared" / "reference" / "virnucpro"
SAMPLE = "bench"
CALLS = ("predictions.tsv", "chunk_calls.tsv", "chunk_scores.tsv", "read_calls.tsv", "virus_reads.fa.gz",
         "validation.json", "missing_ids.txt", "embed_jobs.tsv")

# Where a file belongs, from its path under the run folder (first match).
CATEGORIES = [
    ("sidecars", re.compile(r"work/[^/]+/embed/[^/]+\.h5\.partial/")),
    ("shards being written", re.compile(r"work/[^/]+/embed/\.[^/]+\.h5\.tmp\.")),
    ("shards", re.compile(r"work/[^/]+/embed/[^/]+\.h5$")),
    ("embeddings.h5", re.compile(r"results/[^/]+/\.?embeddings\.h5")),
    ("report", re.compile(r"results/report/")),
    ("results, other", re.compile(r"results/")),
    ("work, other", re.compile(r"work/")),
]
WRITING_RESULT = re.compile(r"results/[^/]+/\.embeddings\.h5\.tmp\.")


def category(relative):
    return next(name for name, pattern in CATEGORIES if pattern.match(relative))


class DiskWatch(threading.Thread):
    """Samples the allocated bytes of every file under work/ and results/ of `root` every `interval` s:
    the most of each category, of all together, and of all together while a merge writes its result."""

    def __init__(self, root, interval):
        super().__init__(daemon=True)
        self.root, self.interval = Path(root), interval
        self.done = threading.Event()
        self.most = collections.Counter()
        self.peak, self.merge_peak = (0, {}), (0, {})
        self.samples = self.merge_samples = 0

    def run(self):
        while not self.done.wait(self.interval):
            self.sample()
        self.sample()

    def sample(self):
        parts, merging = collections.Counter(), False
        for top in ("work", "results"):
            for folder, _, names in os.walk(self.root / top):
                for name in names:
                    path = os.path.join(folder, name)
                    relative = os.path.relpath(path, self.root)
                    try:
                        parts[category(relative)] += os.stat(path).st_blocks * 512
                    except FileNotFoundError:  # renamed or deleted meanwhile
                        continue
                    merging = merging or bool(WRITING_RESULT.match(relative))
        total = sum(parts.values())
        self.samples += 1
        for key, value in parts.items():
            self.most[key] = max(self.most[key], value)
        if total > self.peak[0]:
            self.peak = (total, dict(parts))
        if merging:
            self.merge_samples += 1
            if total > self.merge_peak[0]:
                self.merge_peak = (total, dict(parts))


def workflow_copy(root, reads, shard_residues, seed):
    """The workflow in `root` with `reads` synthetic 500 bp reads as sample `bench`, and bench.yaml: the demo
    config with larger shards and batches, the shards kept."""
    copy_workflow(root, {"samples": "samples.tsv", "shard_residues": shard_residues, "keep_shards": True,
                         "embed": {"dna_token_budget": 16384, "protein_token_budget": 16384},
                         "merge": {"buffer_rows": 10000}}, configfile="bench.yaml")
    write_fasta(root / "reads.fa", synthetic_reads(reads, READ_LENGTH, READ_LENGTH, coding_fraction=0.5, seed=seed))
    (root / "samples.tsv").write_text(f"sample\tfasta\n{SAMPLE}\treads.fa\n")


def lines_of(path):
    with open(path, "rb") as handle:
        return sum(1 for _ in handle) - 1  # less the header


def row_storage(rows, dim, itemsize):
    """Bytes EmbeddingWriter allocates for the rows themselves: whole HDF5 chunks of whole rows."""
    if rows == 0 or dim == 0:
        return 0
    per_chunk = max(1, min(ROWS_PER_CHUNK, (1 << 20) // (itemsize * dim)))
    return -(-rows // per_chunk) * per_chunk * itemsize * dim


def h5_files(paths):
    """[(bytes, rows, dim, bytes per value)] of embedding files."""
    files = []
    for path in paths:
        with open_embeddings(path) as f:
            files.append((os.path.getsize(path), len(f), f.dim, f.embeddings.dtype.itemsize))
    return files


def overhead_fit(files):
    """(bytes per file, bytes per row) beyond the row values' own storage (whole chunks of rows), fitted by
    least squares over `files` of h5_files: the ids (text and references) and HDF5's structures."""
    rows = np.array([n for _, n, _, _ in files], dtype=float)
    beyond = np.array([b - row_storage(n, d, i) for b, n, d, i in files], dtype=float)
    (per_file, per_row), *_ = np.linalg.lstsq(np.stack([np.ones_like(rows), rows], axis=1), beyond, rcond=None)
    return float(per_file), float(per_row)


def tree_bytes(folder):
    """Allocated bytes of every file under `folder` (a link counts as itself, not as what it points to)."""
    return sum(os.lstat(os.path.join(d, n)).st_blocks * 512 for d, _, names in os.walk(folder) for n in names)


def embed_job_peak(root, kind, shard, scratch):
    """An embed job's most bytes on disk, run in this process on one shard of the run: its sidecar plus its
    output being written, measured as the output is closed. Returns (rows, sidecar bytes, output bytes)."""
    from virnucflow.embed import embed_shard

    models = {"dna": root / "resources/demo_models/dnabert_s_tiny",
              "protein": root / "resources/demo_models/esm2_t2_tiny.pt"}
    fasta = root / f"work/{SAMPLE}/shards/{shard}.{'fna' if kind == 'dna' else 'faa'}"
    out = scratch / f"{shard}.{kind}.h5"
    seen = []
    close = EmbeddingWriter.close

    def measuring_close(writer):
        seen.append((writer.rows, tree_bytes(f"{writer.path}.partial"), os.stat(writer._file.filename).st_blocks * 512))
        return close(writer)

    EmbeddingWriter.close = measuring_close
    try:
        embed_shard(fasta, out, kind=kind, model=str(models[kind]), device="cpu", precision="fp32", token_budget=16384,
                    on_error="fail", layer=None, threads=1, cpu_fallback=False)
    finally:
        EmbeddingWriter.close = close
    (rows, sidecar, output), = seen
    return rows, sidecar, output


# --- float16 against float32 --------------------------------------------------------------------------


def merge_and_predict(sample, classifier, out, dtype):
    """merge_sample (ending in sync) then predict_sample into `out`; returns (merge s, predict s)."""
    from virnucflow.merge import merge_sample
    from virnucflow.predict import predict_sample

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    merge_sample(sample["frames"], sample["dna"], sample["protein"], out / "embeddings.h5",
                 validation_json=out / "validation.json", missing_ids_txt=out / "missing_ids.txt", buffer_rows=10000,
                 allow_missing=False, chunk_length=500, compat="virnucpro", dna_fasta=sample.get("dna_fasta"),
                 protein_fasta=sample.get("protein_fasta"), dtype=dtype)
    os.sync()
    merged = time.perf_counter()
    predict_sample(out / "embeddings.h5", sample["frames"], sample["reads"], classifier, out, chunk_length=500)
    return merged - started, time.perf_counter() - merged


def table(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle, delimiter="\t"))[1:]


def compare_calls(single, half):
    """How the calls of a float16 result differ from a float32 one's (folders of merge_and_predict)."""
    p32, p16 = table(single / "predictions.tsv"), table(half / "predictions.tsv")
    assert [r[0] for r in p32] == [r[0] for r in p16], "frames differ"
    s32 = np.array([float(r[3]) for r in p32])
    s16 = np.array([float(r[3]) for r in p16])
    change = np.abs(s16 - s32)
    c32, c16 = table(single / "chunk_calls.tsv"), table(half / "chunk_calls.tsv")
    r32, r16 = table(single / "read_calls.tsv"), table(half / "read_calls.tsv")
    assert [r[0] for r in c32] == [r[0] for r in c16] and [r[0] for r in r32] == [r[0] for r in r16]
    largest = float(change.max()) if len(change) else 0.0
    return {
        "frames": len(s32), "chunks": len(c32), "reads": len(r32),
        "max": largest, "median": float(np.median(change)) if len(change) else 0.0,
        "p99": float(np.percentile(change, 99)) if len(change) else 0.0,
        "unchanged": float(np.mean(change == 0)) if len(change) else 1.0,
        "frame_flips": sum(a[1] != b[1] for a, b in zip(p32, p16)),
        "chunk_flips": sum(a[1] != b[1] for a, b in zip(c32, c16)),
        "read_flips": sum(a[-1] != b[-1] for a, b in zip(r32, r16)),
        # A frame's call can only flip when its score2 is within the largest change of 0.5.
        "near_half": int(np.sum(np.abs(s32 - 0.5) <= largest)),
        "spread": float(np.mean((s32 > 0.1) & (s32 < 0.9))) if len(s32) else 0.0,
    }


def float16_against_float32(sample, classifier, scratch, repeat):
    """Bytes and medians of merge and predict time for both dtypes, alternating, and compare_calls."""
    times = {dtype: {"merge": [], "predict": []} for dtype in ("float32", "float16")}
    for dtype in times:  # once each untimed: imports, the classifier's first load, the page cache
        merge_and_predict(sample, classifier, scratch / dtype, dtype)
        shutil.rmtree(scratch / dtype)
    for turn in range(repeat):
        for dtype in (("float32", "float16") if turn % 2 == 0 else ("float16", "float32")):
            out = scratch / dtype
            shutil.rmtree(out, ignore_errors=True)
            merge_s, predict_s = merge_and_predict(sample, classifier, out, dtype)
            times[dtype]["merge"].append(merge_s)
            times[dtype]["predict"].append(predict_s)
    result = {dtype: {"bytes": os.path.getsize(scratch / dtype / "embeddings.h5"),
                      **{step: statistics.median(values) for step, values in steps.items()}}
              for dtype, steps in times.items()}
    with open_embeddings(scratch / "float16/embeddings.h5") as half:
        from virnucflow.embeddings import verify_checksums

        assert half.embeddings.dtype == np.float16 and half.attrs["dtype"] == "float16" and not verify_checksums(half)
    return result, compare_calls(scratch / "float32", scratch / "float16")


def real_like_columns():
    """(mean, spread) of each of the 3328 features, and where they come from."""
    import torch

    rows = [torch.load(REFERENCE / folder / "output_1_merged.pt", weights_only=True)["data"].numpy()
            for folder in ("with_orfs", "fixed_500bp") if (REFERENCE / folder / "output_1_merged.pt").is_file()]
    if rows:
        real = np.concatenate(rows).astype(np.float64)
        return (real.mean(axis=0), np.maximum(real.std(axis=0, ddof=1), 1e-3),
                f"the {len(real)} real frames of VirNucPro's test data (DNABERT-S and ESM-2 3B)")
    spread = np.full(3328, 0.1)
    spread[::64] = 2.0  # a few large features, as ESM-2 has
    return np.zeros(3328), spread, "a generic spread (0.1, every 64th feature 2.0): the reference data is absent"


def published_width_sample(folder, rows, shards, seed):
    """frames.tsv, reads.tsv and shard pairs at 768 + 2560 features: reads of one 500 bp chunk with one frame
    (70%) or two, features drawn around real features' column means and spreads."""
    rng = np.random.default_rng(seed)
    mean, spread, source = real_like_columns()
    frames_per_read = []
    while sum(frames_per_read) < rows:
        frames_per_read.append(1 if rng.random() < 0.7 else 2)
    frames_per_read[-1] -= sum(frames_per_read) - rows
    names = ("F1", "R2")
    ids = [f"read{r}_chunk_1{names[k]}" for r, n in enumerate(frames_per_read, 1) for k in range(n)]
    bounds = np.linspace(0, rows, shards + 1).astype(int)
    shard_of = np.searchsorted(bounds, np.arange(rows), side="right") - 1
    with open(folder / "frames.tsv", "w") as handle:
        handle.write(FRAMES_HEADER)
        handle.writelines(f"{sid}\t{sid.split('_chunk_')[0]}\t1\t{'+' if sid[-2] == 'F' else '-'}\t{sid[-1]}\t0\t"
                          f"500\t166\t{shard}\n" for sid, shard in zip(ids, shard_of.tolist()))
    with open(folder / "reads.tsv", "w") as handle:
        handle.write(READS_HEADER)
        handle.writelines(f"read{r}\t500\t1\t1\t{n}\t0\n" for r, n in enumerate(frames_per_read, 1))
    sample = {"frames": folder / "frames.tsv", "reads": folder / "reads.tsv", "dna": [], "protein": [],
              "id_chars": statistics.mean(map(len, ids))}
    columns = {"dna": slice(0, 768), "protein": slice(768, 3328)}
    for index in range(shards):
        first, stop = int(bounds[index]), int(bounds[index + 1])
        for kind, block in columns.items():
            path = folder / f"{index:05d}.{kind}.h5"
            with EmbeddingWriter(path, block.stop - block.start, {"model": kind, "kind": kind}) as writer:
                for start in range(first, stop, 8192):
                    end = min(stop, start + 8192)
                    z = rng.standard_normal((end - start, block.stop - block.start), dtype=np.float32)
                    writer.append(ids[start:end], (mean[block] + spread[block] * z).astype(np.float32))
            sample[kind].append(path)
    return sample, source


def calibrated_classifier(folder, sample):
    """VirNucPro's MLP at 3328 inputs (write_demo_classifier), its BatchNorm statistics those of its hidden
    layer on the sample's first rows (as training sets them), saved as a state_dict."""
    import torch

    from virnucflow.classifier import load_classifier
    from virnucflow.demo import write_demo_classifier

    write_demo_classifier(folder / "random.pth", input_dim=3328)
    model = load_classifier(folder / "random.pth", input_dim=3328)
    with open_embeddings(sample["dna"][0]) as dna, open_embeddings(sample["protein"][0]) as protein:
        n = min(len(dna), 8192)
        rows = np.concatenate([dna.read_rows(0, n), protein.read_rows(0, n)], axis=1)
    with torch.no_grad():
        hidden = model.hidden_layer(torch.from_numpy(rows))
        model.bn1.running_mean.copy_(hidden.mean(dim=0))
        model.bn1.running_var.copy_(hidden.var(dim=0))
    torch.save(model.state_dict(), folder / "classifier.pth")
    return folder / "classifier.pth"


# --- the report -------------------------------------------------------------------------------------


def human(n):
    for scale, suffix in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n >= scale:
            return f"{n / scale:.2f} {suffix}"
    return f"{n:.0f} B"


def float16_lines(title, result, calls):
    f32, f16 = result["float32"], result["float16"]
    share = lambda k, n: f"{calls[k]} of {calls[n]} ({100 * calls[k] / max(calls[n], 1):.3f}%)"  # noqa: E731
    return [
        f"### {title}", "",
        "| | float32 | float16 | float16 / float32 |", "|---|---:|---:|---:|",
        f"| embeddings.h5 bytes | {f32['bytes']:,} | {f16['bytes']:,} | {f16['bytes'] / f32['bytes']:.3f} |",
        f"| merge s (median, ends in sync) | {f32['merge']:.2f} | {f16['merge']:.2f} | "
        f"{f16['merge'] / f32['merge']:.2f} |",
        f"| predict s (median) | {f32['predict']:.2f} | {f16['predict']:.2f} | "
        f"{f16['predict'] / f32['predict']:.2f} |", "",
        f"Change of score2 = P(virus) per frame, float16 against float32: largest {calls['max']:.3g}, median "
        f"{calls['median']:.3g}, 99th percentile {calls['p99']:.3g}; unchanged (same float32 digits) "
        f"{100 * calls['unchanged']:.1f}% of frames. Calls that flip: frames {share('frame_flips', 'frames')}, "
        f"chunks {share('chunk_flips', 'chunks')}, reads {share('read_flips', 'reads')}. Frames whose float32 score2 "
        f"is within the largest change of 0.5 (only those can flip): {calls['near_half']}. Scores spread: "
        f"{100 * calls['spread']:.1f}% of frames have score2 between 0.1 and 0.9.", "",
    ]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, default=20_000, help="synthetic 500 bp reads through the workflow")
    parser.add_argument("--shard-residues", type=int, default=500_000)
    parser.add_argument("--rows", type=int, default=100_000, help="rows at the published width (part 3b); 0: skip")
    parser.add_argument("--shards", type=int, default=20, help="shard pairs of the part 3b sample")
    parser.add_argument("--repeat", type=int, default=3, help="alternating merge + predict runs per dtype")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between disk samples")
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", default=None, help="scratch folder (default: the system temp folder)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/disk.md"))
    return parser.parse_args()


def run_workflow(root, args):
    """The workflow on --reads reads in `root`, its disk use sampled: (wall s, the DiskWatch)."""
    workflow_copy(root, args.reads, args.shard_residues, args.seed)
    watch = DiskWatch(root, args.interval)
    watch.start()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "--configfile", "bench.yaml", "--cores", str(args.cores),
                    "--workflow-profile", "none", "--resources", "gpu=1", "--quiet"], cwd=root, check=True)
    wall = time.perf_counter() - started
    watch.done.set()
    watch.join()
    print(f"workflow: {wall:.0f} s, {watch.samples} disk samples ({watch.merge_samples} during the merge)", flush=True)
    return wall, watch


def run_files(root):
    """What the finished run in `root` wrote: its counts, file sizes and HDF5 files."""
    work, results = root / "work" / SAMPLE, root / "results" / SAMPLE
    shards = {kind: sorted((work / "embed").glob(f"*.{kind}.h5")) for kind in PUBLISHED}
    h5 = {kind: h5_files(paths) for kind, paths in shards.items()}
    h5["result"] = h5_files([results / "embeddings.h5"])
    size = {name: os.path.getsize(work / name) for name in ("frames.tsv", "reads.tsv", "summary.json")}
    size["fasta"] = sum(os.path.getsize(p) for p in [*(work / "shards").glob("*.f?a")])
    size.update({name: os.path.getsize(results / name) for name in CALLS if (results / name).exists()})
    run = dict(reads=lines_of(work / "reads.tsv"), frames=lines_of(work / "frames.tsv"),
               chunks=lines_of(results / "chunk_calls.tsv"),
               virus_reads=sum(1 for row in table(results / "read_calls.tsv") if row[-1] == "virus"),
               id_chars=statistics.mean(len(row[0]) for row in table(work / "frames.tsv")),
               shards=shards, h5=h5, size=size)
    print(f"{run['reads']} reads, {run['frames']} frames, {run['chunks']} chunks", flush=True)
    return run


def measure(args, tmp):
    """Parts 1 and 3a on the workflow's run, 3b on a sample at the published width (--rows): a dict."""
    root = Path(tmp) / "run"
    root.mkdir()
    wall, watch = run_workflow(root, args)
    run = run_files(root)
    work, shards = root / "work" / SAMPLE, run["shards"]
    scratch = Path(tmp) / "scratch"
    scratch.mkdir()
    job = {kind: embed_job_peak(root, kind, shards[kind][0].name.split(".")[0], scratch) for kind in PUBLISHED}
    demo_sample = {"frames": work / "frames.tsv", "reads": work / "reads.tsv", "dna": shards["dna"],
                   "protein": shards["protein"], "dna_fasta": sorted((work / "shards").glob("*.fna")),
                   "protein_fasta": sorted((work / "shards").glob("*.faa"))}
    demo = float16_against_float32(demo_sample, root / "resources/demo_models/classifier_tiny.pth",
                                   scratch / "demo", args.repeat)
    print("float16, demo pipeline:", demo, flush=True)
    run.update(wall=wall, watch=watch, job=job, demo=demo, published=None)
    if args.rows:
        folder = Path(tmp) / "published"
        folder.mkdir()
        sample, source = published_width_sample(folder, args.rows, args.shards, args.seed)
        published_h5 = {kind: h5_files(sample[kind]) for kind in PUBLISHED}
        classifier = calibrated_classifier(folder, sample)
        published = float16_against_float32(sample, classifier, folder / "out", args.repeat)
        published_h5.update({dtype: h5_files([folder / "out" / dtype / "embeddings.h5"])
                             for dtype in ("float32", "float16")})
        print("float16, published width:", published, flush=True)
        run.update(published=published, published_h5=published_h5, sample=sample, source=source)
    return run


def total(files):
    return sum(f[0] for f in files)


def measured_lines(args, run, per_file, per_row, dims):
    """Part 1: the bytes of each file of the run, per frame and per read, and one embed job's peak."""
    h5, size, watch, reads, frames = run["h5"], run["size"], run["watch"], run["reads"], run["frames"]
    measured = [
        ("work/: frames.tsv", size["frames.tsv"]), ("work/: reads.tsv", size["reads.tsv"]),
        ("work/: shard FASTA (.fna + .faa)", size["fasta"]), ("work/: summary.json", size["summary.json"]),
        (f"shards, DNA ({dims['dna']} float32, {len(h5['dna'])} files)", total(h5["dna"])),
        (f"shards, protein ({dims['protein']} float32, {len(h5['protein'])} files)", total(h5["protein"])),
        (f"results/: embeddings.h5 ({dims['result']} float32)", total(h5["result"])),
        *((f"results/: {name}", size[name]) for name in CALLS if name in size),
        ("peak while the merge wrote its result, sampled (allocated: work/ + shards + result reserved whole)",
         watch.merge_peak[0]),
        ("peak of the run, sampled (allocated; the shards kept)", watch.peak[0]),
    ]
    lines = [
        "## 1. Measured: the workflow on the demo models", "",
        f"{reads:,} synthetic reads of {READ_LENGTH} bp (half coding), {frames:,} frames ({frames / reads:.3f} per "
        f"read), {run['chunks']:,} chunks with a frame, {run['virus_reads']:,} reads called virus (untrained "
        f"classifier); frame ids of {run['id_chars']:.1f} characters on average; the demo models (DNABERT-S "
        f"{dims['dna']} and ESM-2 {dims['protein']} features, float32); shard_residues {args.shard_residues:,}; "
        f"keep_shards: true; workflow wall {run['wall']:.0f} s; {watch.samples} disk samples every {args.interval} s "
        f"({watch.merge_samples} while the merge wrote its result).", "",
        "| file | bytes | per frame | per read |", "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {n:,} | {n / frames:,.1f} | {n / reads:,.1f} |" for name, n in measured]
    lines += [
        "", "Parts of the sampled merge peak (allocated bytes): "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(watch.merge_peak[1].items())) + ".", "",
        "One embed job's peak, measured in this process on shard 0 (its sidecar of finished batches, plus its output "
        "as it is closed; the output is reserved whole when made, and the sidecar is deleted after the output is in "
        "place):", "",
        "| job | rows | sidecar bytes | per row | output bytes | peak per row | peak / output |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, (n, sidecar, output) in run["job"].items():
        lines.append(f"| {kind} | {n:,} | {sidecar:,} | {sidecar / n:.1f} | {output:,} | {(sidecar + output) / n:.1f} "
                     f"| {(sidecar + output) / output:.2f} |")
    lines += [
        "", f"HDF5 bytes beyond the row values (fitted over the {sum(map(len, h5.values()))} files above, as "
        f"per file + per row x rows, after the rows' own storage in whole chunks): {per_file:,.0f} B per file + "
        f"{per_row:.1f} B per row (the id's text and reference, HDF5's index).", "",
    ]
    return lines


def projected_rows(run, per_row):
    """(file, (bytes per frame, bytes per read)) at the published widths, and the float32 bytes per row of each
    HDF5 file (chunk files count per read: one chunk per 500 bp read)."""
    size, frames, reads = run["size"], run["frames"], run["reads"]
    f32 = {kind: per_row + width * 4 for kind, width in (("dna", 768), ("protein", 2560), ("result", 3328))}
    f16 = per_row + 3328 * 2
    work = ((size["frames.tsv"] + size["fasta"]) / frames, (size["reads.tsv"] + size["summary.json"]) / reads)
    calls = (size.get("predictions.tsv", 0) / frames,
             sum(size.get(name, 0) for name in CALLS if name not in ("predictions.tsv",)) / reads)
    return [
        ("shards, DNA (768 float32)", (f32["dna"], 0)), ("shards, protein (2560 float32)", (f32["protein"], 0)),
        ("shards, both", (f32["dna"] + f32["protein"], 0)),
        ("embeddings.h5, float32 (3328)", (f32["result"], 0)), ("embeddings.h5, merge.dtype: float16", (f16, 0)),
        ("work/ but the shards: frames.tsv + shard FASTA per frame, reads.tsv per read (as measured)", work),
        ("results/ but embeddings.h5: calls and tables (as measured)", calls),
        ("peak during the merge: work/ + shards + embeddings.h5",
         (work[0] + f32["dna"] + f32["protein"] + f32["result"], work[1])),
        ("the same, merge.dtype: float16", (work[0] + f32["dna"] + f32["protein"] + f16, work[1])),
        ("left after the run, keep_shards: false (work/ + embeddings.h5 + calls)",
         (work[0] + f32["result"] + calls[0], work[1] + calls[1])),
        ("the same, merge.dtype: float16", (work[0] + f16 + calls[0], work[1] + calls[1])),
        ("the same, keep_embeddings: false (work/ + calls)", (work[0] + calls[0], work[1] + calls[1])),
    ], f32


def projected_lines(args, run, per_file, per_row, dims):
    """Part 2: bytes per frame and per read at the published widths, checked on part 3b's files."""
    projected, f32 = projected_rows(run, per_row)
    lines = [
        "## 2. Published widths (768 + 2560), projected: the per-row bytes above + width x 4 (float16: x 2)", "",
        "Bytes per frame and per read (a read's own rows: reads.tsv, read_calls.tsv, chunk files), then per read and "
        "for 100M reads of 500 bp at 0.5 / 1.0 / 1.5 frames per read. Besides: per HDF5 file about "
        f"{per_file / 1e3:,.0f} kB and up to one partly filled chunk of rows (at most 1 MiB); ids longer than "
        f"{run['id_chars']:.0f} characters add the extra characters (rounded up to 8) per row to each HDF5 file and "
        "to frames.tsv, the shard FASTA and the calls.", "",
        "| file | per frame | + per read | per read, 0.5 / 1.0 / 1.5 frames | 100M reads, 0.5 / 1.0 / 1.5 frames |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (frame_part, read_part) in projected:
        at = [frame_part * f + read_part for f in (0.5, 1.0, 1.5)]
        lines.append(f"| {name} | {frame_part:,.0f} | {read_part:,.0f} | {' / '.join(f'{b:,.0f}' for b in at)} | "
                     f"{' / '.join(human(b * 1e8) for b in at)} |")
    beyond = {kind: (sidecar - n * dims[kind] * 4) / n for kind, (n, sidecar, _) in run["job"].items()}
    lines += ["", "While an embed job runs, its sidecar holds its rows once more (rows x width x 4 bytes, + "
              + ", ".join(f"{b:.0f} B per row of batch records ({kind})" for kind, b in beyond.items())
              + "), so each running job needs about twice its output until the output is in place: at the published "
              f"widths and the default 10M residues per shard (~60,000 frames), about "
              f"{human(2 * 60_000 * f32['protein'])} for ESM-2 and {human(2 * 60_000 * f32['dna'])} for DNABERT-S, "
              "per job running at once."]
    if run["published"] is not None:
        check = []
        for name, files in run["published_h5"].items():
            predicted = sum(per_file + per_row * n + row_storage(n, d, i) for _, n, d, i in files)
            check.append(f"{name} {total(files) / sum(f[1] for f in files):,.1f} B per frame written, "
                         f"{total(files) / predicted - 1:+.2%} against the projection")
        lines += ["", f"Checked on files written at the published widths by the same code (part 3b: {args.rows:,} "
                  f"rows in {args.shards} shard pairs, ids of {run['sample']['id_chars']:.1f} characters): "
                  + "; ".join(check) + "."]
    return lines


def main():
    args = parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        run = measure(args, tmp)
    h5 = run["h5"]
    per_file, per_row = overhead_fit([f for files in h5.values() for f in files])
    dims = {kind: h5[kind][0][2] for kind in h5}
    lines = [f"# Disk use ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores)", "",
             f"Command: `{command_line()}`", ""]
    lines += measured_lines(args, run, per_file, per_row, dims)
    lines += projected_lines(args, run, per_file, per_row, dims)
    lines += ["", "## 3. merge.dtype: float16 against float32 (same run, alternating)", ""]
    lines += float16_lines(f"(a) the demo pipeline: {run['frames']:,} frames of part 1, demo classifier (untrained, "
                           f"{dims['result']} inputs)", *run["demo"])
    if run["published"] is not None:
        lines += float16_lines(f"(b) published width: {args.rows:,} frames x 3328, features like real ones "
                               f"({run['source']}), VirNucPro's MLP (random weights, BatchNorm set from the features)",
                               *run["published"])
    write_results(args.out, lines)


if __name__ == "__main__":
    main()
