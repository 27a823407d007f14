"""Plots and a summary table for the Snakemake report: counts per sample, embedding throughput per
shard, virus scores and read calls. Every function takes paths and writes a PNG (or table); each
plot stays readable from 1 to a few hundred samples and says so in a note when it has no data."""

import csv
import heapq
import html
import json
import logging
import platform
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import StrMethodFormatter  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from .atomic import atomic_open, atomic_path  # noqa: E402
from .workfiles import read_summary  # noqa: E402

log = logging.getLogger(__name__)

MODELS = {"dna": ("DNABERT-S", "#1b9e77"), "protein": ("ESM-2", "#7570b3")}
CALLS = {"virus": "#d95f02", "others": "#7570b3", "ambiguous": "#e6ab02", "no_frames": "#bdbdbd",
         "not_scored": "#e7298a"}
COUNTS = [("reads", "reads", "#4c72b0"), ("chunks", "chunks", "#8da0cb"),
          ("chunks_with_frames", "chunks with a kept frame", "#66c2a5"), ("frames", "frames kept", "#1b9e77")]
MANY = 8  # more samples than this: the score histograms become one heat map
TOP_VIRUS_READS = 1000  # rows of the report's virus-read table, over all samples: the report's size is bounded
VIRUS_READ_COLUMNS = ["sample", "read_id", "length", "max_virus_score", "virus_chunks", "chunks_with_frames",
                      "ambiguous_fraction"]  # as results/virus_reads.tsv
SCORE_BINS = np.linspace(0, 1, 21)
DPI = 110
THOUSANDS = StrMethodFormatter("{x:,.0f}")
WIDTH = 9.5  # inches


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def _note(ax, text):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#555555")


def _legend_on_top(ax, columns):
    """A one-line legend between the title and the plot: it never covers bars, whatever the sample count."""
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=columns, fontsize="small", frameon=False,
              borderaxespad=0.2, handlelength=1.2, columnspacing=1.2)


def _rows_height(n, per_row):
    """Figure height for `n` horizontal groups: room for titles, then `per_row` inches each."""
    return max(2.6, 1.4 + per_row * n)


def _fmt(value):
    return f"{value:,}"


def _tsv_column(path, column):
    """Values of one column of a TSV, streamed (prediction and call files can have millions of rows)."""
    with open(path, newline="") as handle:
        header = handle.readline().rstrip("\r\n").split("\t")
        if column not in header:
            raise ValueError(f"{path}: no column {column!r}")
        index = header.index(column)
        for line in handle:
            yield line.rstrip("\r\n").split("\t")[index]


def call_counts(read_calls_tsv):
    """Reads per call in a read_calls.tsv."""
    counts = dict.fromkeys(CALLS, 0)
    for call in _tsv_column(read_calls_tsv, "call"):
        counts[call] = counts.get(call, 0) + 1
    return counts


def best_virus_reads(samples, read_calls, n=TOP_VIRUS_READS):
    """The `n` virus reads with the highest max_virus_score over all samples (ties: sample order, then input
    order), best first, as dicts of VIRUS_READ_COLUMNS; and the number of virus reads in all. Streamed, with
    at most `n` rows held, whatever the number of reads."""
    kept, total = [], 0  # min-heap of ((score, -sample, -row), row): the first to go is the worst, then the latest
    for s, (sample, path) in enumerate(zip(samples, read_calls, strict=True)):
        with open(path, newline="") as handle:
            header = handle.readline().rstrip("\r\n").split("\t")
            missing = [c for c in VIRUS_READ_COLUMNS[1:] + ["call"] if c not in header]
            if missing:
                raise ValueError(f"{path}: no column {', '.join(missing)}")
            index = {c: header.index(c) for c in VIRUS_READ_COLUMNS[1:] + ["call"]}
            for number, line in enumerate(handle):
                fields = line.rstrip("\r\n").split("\t")
                if fields[index["call"]] != "virus":
                    continue
                total += 1
                key = (float(fields[index["max_virus_score"]]), -s, -number)
                if len(kept) < n or key > kept[0][0]:
                    row = {"sample": sample, **{c: fields[index[c]] for c in VIRUS_READ_COLUMNS[1:]}}
                    (heapq.heappush if len(kept) < n else heapq.heapreplace)(kept, (key, row))
    return [row for _, row in sorted(kept, key=lambda item: item[0], reverse=True)], total


def write_virus_reads_html(rows, total, path, min_virus_score=None, classifier=True):
    """The report's table of the best virus reads (`rows` of best_virus_reads, `total` virus reads in all):
    one small page whatever the number of reads, pointing to the files that hold them all."""
    rule = ("a chunk called virus by VirNucPro's rule" if min_virus_score is None else
            f"max_virus_score >= {min_virus_score:g} (calls.min_virus_score)")
    if rows:
        note = (f"The {_fmt(len(rows))} best-scoring of {_fmt(total)} virus reads (virus: {html.escape(rule)}), by "
                "max_virus_score. " if len(rows) < total else
                f"All {_fmt(total)} virus reads (virus: {html.escape(rule)}), by max_virus_score. ")
    elif classifier:
        note = f"No read was called virus (virus: {html.escape(rule)}). "
    else:
        note = "No classifier run (set <code>classifier:</code> in the config): no read calls. "
    note += ("Every virus read: <code>results/virus_reads.tsv</code>; their sequences: "
             "<code>results/{sample}/virus_reads.fa.gz</code>; every read's call: "
             "<code>results/{sample}/read_calls.tsv</code>.")
    head = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in VIRUS_READ_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(row[c])}</td>" for c in VIRUS_READ_COLUMNS) + "</tr>\n"
                   for row in rows)
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>virnucflow virus reads</title><style>"
        "body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
        "th,td{border:1px solid #ccc;padding:2px 6px}th{background:#f0f0f0}td:nth-child(n+3){text-align:right}"
        "</style></head><body>\n"
        f"<p>{note}</p>\n" + (f"<table>\n<tr>{head}</tr>\n{body}</table>\n" if rows else "") + "</body></html>\n"
    )
    with atomic_open(path) as handle:
        handle.write(page)


def score_histogram(predictions_tsv, bins=SCORE_BINS, block=100_000):
    """Frames per virus-score bin (score2) of a predictions.tsv, read in blocks."""
    counts = np.zeros(len(bins) - 1, dtype=np.int64)
    values = []
    for value in _tsv_column(predictions_tsv, "score2"):
        values.append(value)
        if len(values) == block:
            counts += np.histogram(np.asarray(values, dtype=np.float64), bins)[0]
            values = []
    if values:
        counts += np.histogram(np.asarray(values, dtype=np.float64), bins)[0]
    return counts


def summary_rows(samples, summaries, validations, calls=None, embed_jobs=None):
    """One row per sample: prepare's counts, merge's validation, where the embeddings were computed
    (`embed_jobs`: the rows of each sample's embed_jobs.tsv) and, with a classifier, reads per call."""
    rows = []
    for i, (sample, summary_path, validation_path) in enumerate(zip(samples, summaries, validations, strict=True)):
        summary = read_summary(summary_path)
        validation = json.loads(Path(validation_path).read_text())
        row = {
            "sample": sample, "reads": summary["reads"], "bases": summary.get("bases", ""),
            "chunks": summary["chunks"], "chunks_with_frames": summary["chunks_with_frames"],
            "chunks_without_frames": summary["chunks_without_frames"], "frames": summary["frames"],
            "shards": summary.get("shards", ""), "ids_expected": validation["expected"],
            "ids_present": validation["present"], "ids_missing": validation["missing"],
            "ids_skipped": validation.get("skipped", 0),
            "validated": "yes" if validation["ok"] else "partial",
        }
        if embed_jobs is not None:
            row.update(_where_embedded(embed_jobs[i]))
        if calls:
            row.update({f"reads_{call}": calls[i].get(call, 0) for call in CALLS})
        rows.append(row)
    return rows


def _where_embedded(jobs):
    """Devices and precisions of a sample's embed jobs, and how many ran on the CPU although the
    job had been given a GPU (embed.cpu_fallback): the report's warning."""
    def tally(values):
        counts = {}
        for value in values:
            counts[value] = counts.get(value, 0) + 1
        return ", ".join(f"{value} x{n}" for value, n in sorted(counts.items())) or "-"

    return {
        "embed_devices": tally(j["device_name"] or j["device"] for j in jobs),
        "embed_precision": tally(j["precision"] for j in jobs if j["precision"]),
        "cpu_jobs_given_a_gpu": sum(1 for j in jobs if j["gpu_expected"] and j["device"] == "cpu"),
        "untrained_model_jobs": sum(1 for j in jobs if j.get("untrained") == "True"),
    }


WARNING_COLUMNS = {"cpu_jobs_given_a_gpu", "untrained_model_jobs"}  # red in the HTML table when not 0
EMBED_JOB_COLUMNS = ["kind", "shard", "sequences", "tokens", "padded_tokens", "skipped", "resumed", "oom_splits",
                     "device", "device_name", "gpu_expected", "precision", "model", "model_revision", "untrained", "load_seconds",
                     "embed_seconds", "seconds", "job_seconds", "max_rss_mb", "peak_gpu_memory_bytes"]
NUMBERS = {"sequences", "tokens", "padded_tokens", "skipped", "resumed", "oom_splits", "load_seconds",
           "embed_seconds", "seconds", "job_seconds", "max_rss_mb", "peak_gpu_memory_bytes"}


def write_embed_jobs(stats_paths, benchmarks, path):
    """A sample's embed jobs, one row each (EMBED_JOB_COLUMNS): what the report reads instead of
    every shard's files, so its cost grows with the samples, not with the shards."""
    jobs = shard_stats(stats_paths, benchmarks)
    with atomic_open(path) as handle:
        handle.write("\t".join(EMBED_JOB_COLUMNS) + "\n")
        for stats_path, job in zip(stats_paths, jobs):
            job["shard"] = Path(stats_path).name.split(".")[0]
            handle.write("\t".join("" if job.get(c) is None else str(job[c]) for c in EMBED_JOB_COLUMNS) + "\n")


def read_embed_jobs(path):
    """The rows of an embed_jobs.tsv, numbers as numbers and empty cells as None."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    for row in rows:
        for key, value in row.items():
            row[key] = None if value == "" else float(value) if key in NUMBERS else value
    return rows


def write_summary_tsv(rows, path):
    with atomic_open(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def software_versions():
    """Versions of what computed the results, read in the job that writes the report (the jobs' environment)."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in ("virnucflow", "torch", "numpy", "h5py", "tokenizers", "safetensors", "huggingface_hub",
                    "snakemake", "matplotlib"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    try:
        import torch

        versions["CUDA (torch build)"] = torch.version.cuda or "none (CPU-only build)"
    except ImportError:
        pass
    return versions


def model_rows(embed_jobs):
    """One row per model and revision the embed jobs used, with the devices and precisions they ran in."""
    models = {}
    for job in embed_jobs:
        key = (job["kind"], job["model"], job["model_revision"])
        entry = models.setdefault(key, {"jobs": 0, "devices": set(), "precisions": set()})
        entry["jobs"] += 1
        entry["devices"].add(job["device_name"] or job["device"])
        entry["precisions"].add(job["precision"])
    return [{"model": f"{MODELS.get(kind, (kind,))[0]}: {model}", "revision": revision, "embed jobs": entry["jobs"],
             "devices": ", ".join(sorted(d for d in entry["devices"] if d)),
             "precision": ", ".join(sorted(p for p in entry["precisions"] if p))}
            for (kind, model, revision), entry in sorted(models.items(), key=lambda item: [str(v) for v in item[0]])]


def _html_table(rows):
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = row[column]
            number = isinstance(value, int) and not isinstance(value, bool)
            bad = value == "partial" or (column in WARNING_COLUMNS and value)
            style = ' class="bad"' if bad else (' class="num"' if number else "")
            cells.append(f"<td{style}>{html.escape(_fmt(value) if number else str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>\n<tr>" + head + "</tr>\n" + "\n".join(body) + "\n</table>\n"


def write_summary_html(rows, path, models=None, versions=None):
    """The summary as a self-contained HTML page: warnings, the per-sample table, then the models and
    software that made the results (the Snakemake report shows HTML inline, a TSV only as a download)."""
    sections = [f'<p class="warning">{html.escape(warning)}</p>' for warning in warnings(rows)]
    sections.append(_html_table(rows))
    if models:
        sections.append("<h3>Models</h3>\n" + _html_table(models))
    if versions:
        sections.append("<h3>Software</h3>\n" + _html_table([{"package": k, "version": v} for k, v in versions.items()]))
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>virnucflow summary</title><style>"
        "body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse;margin-bottom:12px}"
        "th,td{border:1px solid #ccc;padding:3px 7px}th{background:#f0f0f0}td.num{text-align:right}"
        "td.bad,p.warning{color:#b30000;font-weight:bold}tr:nth-child(even){background:#fafafa}"
        "</style></head><body>\n" + "\n".join(sections) + "</body></html>\n"
    )
    with atomic_open(path) as handle:
        handle.write(page)


def plot_counts(rows, path):
    """Reads, chunks, chunks with a frame and frames per sample, with merge's validation beside each."""
    n = len(rows)
    fig, ax = plt.subplots(figsize=(WIDTH, _rows_height(n, 0.2 + 0.16 * len(COUNTS) if n <= MANY else 0.32)))
    y = np.arange(n)
    bar = 0.8 / len(COUNTS)
    for k, (key, label, color) in enumerate(COUNTS):
        values = np.array([r[key] for r in rows])
        bars = ax.barh(y - 0.4 + (k + 0.5) * bar, values, bar, label=label, color=color)
        if n <= MANY:
            ax.bar_label(bars, labels=[_fmt(v) for v in values], padding=2, fontsize=7, color="#333333")
    ax.set_yticks(y, [r["sample"] for r in rows])
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlim(0, max(1, max(r[key] for r in rows for key, _, _ in COUNTS)) * 1.12)
    ax.set_xlabel("count")
    ax.set_title("Reads, chunks and frames per sample (right: frame ids found by validation)", pad=24)
    # Validation beside each sample, in the figure margin.
    side = blended_transform_factory(ax.transAxes, ax.transData)
    for i, r in enumerate(rows):
        ok = r["validated"] == "yes"
        text = (f"all {_fmt(r['ids_expected'])} ids" if ok else
                f"{_fmt(r['ids_present'])}/{_fmt(r['ids_expected'])} ids, {_fmt(r['ids_missing'])} missing")
        if r.get("ids_skipped"):
            text += f", {_fmt(r['ids_skipped'])} skipped"
        ax.text(1.01, i, text, transform=side, va="center", fontsize=8, color="#1a7f37" if ok else "#b30000")
    _legend_on_top(ax, len(COUNTS))
    ax.grid(axis="x", color="#eeeeee")
    ax.set_axisbelow(True)
    _save(fig, path)


def _read_benchmark(path):
    """Wall-clock seconds and peak resident memory (MB) of a Snakemake benchmark TSV (mean over repeats)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))

    def mean(key):
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "", "NA", "-")]
        return float(np.mean(values)) if values else None

    return mean("s"), mean("max_rss")


def shard_stats(stats_paths, benchmarks=None):
    """One dict per embed job: its JSON (sequences, tokens, seconds ...) plus `job_seconds` and
    `max_rss_mb` from the matching Snakemake benchmark file (`benchmarks` parallel to `stats_paths`)."""
    if benchmarks and len(benchmarks) != len(stats_paths):
        raise ValueError(f"{len(benchmarks)} benchmark files for {len(stats_paths)} embed statistics; pass them "
                         "in the same order, one per job")
    shards = []
    for i, stats_path in enumerate(stats_paths):
        stats = json.loads(Path(stats_path).read_text())
        stats.setdefault("kind", "dna" if ".dna." in Path(stats_path).name else "protein")
        stats["job_seconds"], stats["max_rss_mb"] = _read_benchmark(benchmarks[i]) if benchmarks else (None, None)
        shards.append(stats)
    return shards


def plot_throughput(shards, path):
    """Tokens per second of every embed job (rows of embed_jobs.tsv) against its size, by model:
    dots = embedding only (model loaded), crosses = the whole job's wall clock (start-up and model
    loading included); and the jobs' peak memory when Snakemake's benchmark figures are there."""
    memory = any(s["max_rss_mb"] is not None for s in shards)
    fig, axes = plt.subplots(1, 2 if memory else 1, figsize=(WIDTH + (1.5 if memory else 0), 4.2), squeeze=False)
    ax = axes[0, 0]
    resumed = sum(1 for s in shards if s.get("resumed"))
    handles = []
    for kind, (label, color) in MODELS.items():
        mine = [s for s in shards if s["kind"] == kind and not s.get("resumed") and s["sequences"] > 0]
        if not mine:
            continue
        tokens = np.array([s["tokens"] for s in mine], dtype=float)
        embed = np.array([s.get("embed_seconds") or s["seconds"] for s in mine], dtype=float)
        rate = tokens / np.maximum(embed, 1e-9)
        ax.scatter(tokens, rate, color=color, alpha=0.8, s=24)
        seq_rate = np.median([s["sequences"] / max(e, 1e-9) for s, e in zip(mine, embed)])
        text = f"{label}: median {np.median(rate):,.0f} tokens/s, {seq_rate:,.1f} seq/s ({len(mine)} jobs)"
        handles.append(Line2D([], [], marker="o", linestyle="", color=color, label=text))
        whole = [(t, s["job_seconds"]) for t, s in zip(tokens, mine) if s["job_seconds"]]
        if whole:
            t, seconds = np.array(whole).T
            ax.scatter(t, t / np.maximum(seconds, 1e-9), marker="x", color=color, alpha=0.8, s=24)
            handles.append(Line2D([], [], marker="x", linestyle="", color=color,
                                  label=f"{label}: whole job, median {np.median(t / seconds):,.0f} tokens/s"))
    ax.set_xlabel("tokens in the shard")
    ax.set_ylabel("tokens per second")
    ax.yaxis.set_major_formatter(THOUSANDS)
    title = "Embedding throughput per job"
    if resumed:
        title += f" ({resumed} resumed jobs not shown)"
    ax.set_title(title)
    if handles:
        ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(0, -0.16), frameon=False)
        _log_if_wide(ax, [s["tokens"] for s in shards if s["tokens"]])
        # Start-up can dwarf a small job's compute: a log scale keeps both kinds of points readable.
        rates = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections])
        if rates.min() > 0 and rates.max() > 30 * rates.min():
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(THOUSANDS)
        else:
            ax.set_ylim(bottom=0)
    else:
        _note(ax, "no embed job computed anything")
    ax.grid(color="#eeeeee")
    ax.set_axisbelow(True)
    if memory:
        ax = axes[0, 1]
        for kind, (label, color) in MODELS.items():
            mine = [s for s in shards if s["kind"] == kind and s["max_rss_mb"] is not None]
            if mine:
                ax.scatter([s["tokens"] for s in mine], [s["max_rss_mb"] / 1024 for s in mine], color=color,
                           alpha=0.8, s=24, label=label)
        ax.set_xlabel("tokens in the shard")
        ax.set_ylabel("peak resident memory (GiB)")
        ax.set_title("Host memory per job (Snakemake benchmark)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize="small")
        _log_if_wide(ax, [s["tokens"] for s in shards if s["tokens"]])
        ax.grid(color="#eeeeee")
        ax.set_axisbelow(True)
    _save(fig, path)


def _log_if_wide(ax, values):
    if values and max(values) > 50 * max(min(values), 1):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(THOUSANDS)


def plot_scores(samples, predictions, path):
    """The virus score (score2) of every frame: one curve per sample, a heat map for many samples."""
    histograms = [score_histogram(p) for p in predictions]
    if len(histograms) > MANY:
        fig, ax = plt.subplots(figsize=(WIDTH, _rows_height(len(samples), 0.24)))
        shares = np.array([100 * h / max(h.sum(), 1) for h in histograms])
        top = max(float(np.percentile(shares, 99)), 1e-9)  # a sample of a few frames would set the scale alone
        image = ax.imshow(shares, aspect="auto", cmap="viridis", extent=(0, 1, len(samples) - 0.5, -0.5),
                          interpolation="nearest", vmin=0, vmax=top)
        ax.set_yticks(np.arange(len(samples)), [f"{s} ({_fmt(int(h.sum()))})" for s, h in zip(samples, histograms)])
        fig.colorbar(image, ax=ax, label="% of the sample's frames", pad=0.02, extendfrac=0.02,
                     extend="max" if shares.max() > top else "neither")
        ax.set_title("Virus scores of all frames, per sample (frames in brackets)")
        ax.axvline(0.5, color="white", linestyle="--", linewidth=1)
    else:
        fig, ax = plt.subplots(figsize=(WIDTH, 4.2))
        for sample, h in zip(samples, histograms):
            if h.sum():
                ax.stairs(100 * h / h.sum(), SCORE_BINS, linewidth=1.6, label=f"{sample} ({_fmt(int(h.sum()))} frames)")
        ax.set_ylabel("% of the sample's frames")
        ax.set_ylim(bottom=0)
        ax.set_title("Virus scores of all frames")
        if any(h.sum() for h in histograms):
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
        else:
            _note(ax, "no frame scored" if predictions else "no classifier run (set `classifier:` in the config)")
        ax.grid(axis="y", color="#eeeeee")
        ax.set_axisbelow(True)
        ax.axvline(0.5, color="#555555", linestyle=":", linewidth=1.2)
    ax.set_xlim(0, 1)
    ax.set_xlabel("virus score (score2 = P(virus)); a frame is called virus above 0.5 (line)")
    _save(fig, path)


def plot_calls(samples, calls, path, min_virus_score=None):
    """Reads per call and sample, stacked, with the virus share written beside each bar."""
    n = len(samples)
    fig, ax = plt.subplots(figsize=(WIDTH, _rows_height(n, 0.42 if n <= MANY else 0.26)))
    y = np.arange(n)
    if calls:
        left = np.zeros(n)
        for call, color in CALLS.items():
            counts = np.array([c.get(call, 0) for c in calls])
            if call in ("not_scored", "ambiguous") and not counts.any():
                continue  # only with merge.allow_missing, or reads mostly of N
            ax.barh(y, counts, left=left, color=color, label=call.replace("_", " "), height=0.7)
            left += counts
        side = blended_transform_factory(ax.transAxes, ax.transData)
        for i, c in enumerate(calls):
            total = sum(c.values())
            share = f"{100 * c['virus'] / total:.1f}%" if total else "-"
            ax.text(1.01, i, f"{_fmt(c['virus'])} virus ({share})", transform=side, va="center", fontsize=8,
                    color=CALLS["virus"])
        ax.set_xlim(0, max(1, left.max()) * 1.02)
        _legend_on_top(ax, len(CALLS))
    else:
        _note(ax, "no classifier run (set `classifier:` in the config)")
        ax.set_xticks([])
    ax.set_yticks(y, samples)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlabel("reads")
    rule = ("any of its chunks is" if min_virus_score is None else
            f"its best frame's virus score is >= {min_virus_score:g}")
    ax.set_title(f"Read-level calls per sample (a read is virus when {rule})", pad=24 if calls else 6)
    ax.grid(axis="x", color="#eeeeee")
    ax.set_axisbelow(True)
    _save(fig, path)


def write_report_plots(samples, summaries, validations, embed_jobs, predictions, read_calls, outputs,
                       min_virus_score=None):
    """Everything the report shows. `outputs`: paths for summary (TSV), counts, throughput, scores and
    calls (PNG), and optionally summary_html and virus_reads (HTML: the TOP_VIRUS_READS best virus reads;
    the report holds no per-read file). `embed_jobs`: each sample's embed_jobs.tsv; `predictions`,
    `read_calls`: one per sample, or empty without a classifier. `min_virus_score`: the read calls' threshold
    (calls.min_virus_score), named in the plots."""
    samples = list(samples)
    for name, paths in (("embed_jobs", embed_jobs), ("predictions", predictions), ("read_calls", read_calls)):
        if paths and len(paths) != len(samples):
            raise ValueError(f"{len(paths)} {name} files for {len(samples)} samples")
    calls = [call_counts(p) for p in read_calls] if read_calls else None
    jobs = [read_embed_jobs(p) for p in embed_jobs]
    rows = summary_rows(samples, summaries, validations, calls, jobs)
    write_summary_tsv(rows, outputs["summary"])
    if outputs.get("summary_html"):
        write_summary_html(rows, outputs["summary_html"], model_rows([j for sample_jobs in jobs for j in sample_jobs]),
                           software_versions())
    plot_counts(rows, outputs["counts"])
    plot_throughput([job for sample_jobs in jobs for job in sample_jobs], outputs["throughput"])
    plot_scores(samples, predictions or [], outputs["scores"])
    plot_calls(samples, calls, outputs["calls"], min_virus_score)
    if outputs.get("virus_reads"):
        best, total = best_virus_reads(samples, read_calls) if read_calls else ([], 0)
        write_virus_reads_html(best, total, outputs["virus_reads"], min_virus_score, classifier=bool(read_calls))
    log.info("report plots for %d samples written", len(samples))
    for warning in warnings(rows):
        log.warning("%s", warning)


def warnings(rows):
    """What the report says above everything else: results that must not be taken at face value."""
    found = []
    untrained = [row["sample"] for row in rows if row.get("untrained_model_jobs")]
    if untrained:
        found.append(f"UNTRAINED MODELS: the embeddings of {', '.join(untrained)} were computed with random-weight "
                     "models (the demo's): features, predictions and calls mean nothing. Set models: to the "
                     "published DNABERT-S and ESM-2 and classifier: to a trained VirNucPro model.")
    for row in rows:
        if row.get("cpu_jobs_given_a_gpu"):
            found.append(f"sample {row['sample']}: {row['cpu_jobs_given_a_gpu']} embed jobs ran on the CPU although "
                         "they had a GPU (embed.cpu_fallback: torch could not use it)")
    return found
