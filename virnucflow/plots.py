"""The report's four plots: counts per sample, embedding throughput per job, virus scores and read calls.
Each takes plain rows and writes a PNG; each stays readable from 1 to a few hundred samples and says so
in a note when it has no data."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import StrMethodFormatter  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from .atomic import atomic_path  # noqa: E402

MODELS = {"dna": ("DNABERT-S", "#1b9e77"), "protein": ("ESM-2", "#7570b3")}
CALLS = {"virus": "#d95f02", "others": "#7570b3", "ambiguous": "#e6ab02", "no_frames": "#bdbdbd",
         "not_scored": "#e7298a"}
COUNTS = [("reads", "reads", "#4c72b0"), ("chunks", "chunks", "#8da0cb"),
          ("chunks_with_frames", "chunks with a kept frame", "#66c2a5"), ("frames", "frames kept", "#1b9e77")]
MANY = 8  # more samples than this: the score histograms become one heat map
SCORE_BINS = np.linspace(0, 1, 21)
DPI = 110
THOUSANDS = StrMethodFormatter("{x:,.0f}")
WIDTH = 9.5  # inches


def _fmt(value):
    return f"{value:,}"


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
        _plot_memory(axes[0, 1], shards)
    _save(fig, path)


def _plot_memory(ax, shards):
    """Peak resident memory of every job against its size, from Snakemake's benchmark files."""
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


def _log_if_wide(ax, values):
    if values and max(values) > 50 * max(min(values), 1):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(THOUSANDS)


def plot_scores(samples, histograms, path, classifier=True):
    """The virus scores (score2) of every frame, `histograms` per sample over SCORE_BINS: one curve per
    sample, a heat map for many samples."""
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
            _note(ax, "no frame scored" if classifier else "no classifier run (set `classifier:` in the config)")
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
