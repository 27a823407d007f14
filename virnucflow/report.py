"""Plots and a summary table for the Snakemake report: counts per sample, embedding throughput per
shard, virus scores and read calls."""

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .atomic import atomic_open, atomic_path  # noqa: E402

COLORS = {"dna": "#1b9e77", "protein": "#7570b3", "virus": "#d95f02", "others": "#7570b3", "no_frames": "#bbbbbb"}


def _save(fig, path):
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _legend_or_note(ax, drawn, note):
    """A legend when something was drawn, else a note in the middle saying why the plot is empty."""
    if drawn:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, note, ha="center", transform=ax.transAxes)


def _height(samples):
    return max(3.0, 0.45 * len(samples) + 1.5)


def _read_tsv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def summary_rows(samples, summaries, validations):
    rows = []
    for sample, summary_path, validation_path in zip(samples, summaries, validations):
        summary = json.loads(Path(summary_path).read_text())
        validation = json.loads(Path(validation_path).read_text())
        rows.append({
            "sample": sample, "reads": summary["reads"], "bases": summary["bases"], "chunks": summary["chunks"],
            "chunks_with_frames": summary["chunks_with_frames"],
            "chunks_without_frames": summary["chunks_without_frames"], "frames": summary["frames"],
            "shards": summary["shards"], "ids_expected": validation["expected"], "ids_present": validation["present"],
            "ids_missing": validation["missing"], "ids_skipped": validation["skipped"],
            "validated": "yes" if validation["ok"] else "partial",
        })
    return rows


def plot_counts(rows, path):
    samples = [r["sample"] for r in rows]
    keys = [("reads", "reads"), ("chunks", "chunks"), ("chunks_with_frames", "chunks with a frame"),
            ("frames", "frames kept"), ("ids_present", "ids validated")]
    fig, ax = plt.subplots(figsize=(9, _height(samples)))
    y = np.arange(len(samples))
    height = 0.8 / len(keys)
    for k, (key, label) in enumerate(keys):
        values = [r[key] for r in rows]
        ax.barh(y + k * height, values, height, label=label)
    ax.set_yticks(y + 0.4 - height / 2, samples)
    ax.invert_yaxis()
    ax.set_xlabel("count")
    ax.set_title("Reads, chunks and frames per sample")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    _save(fig, path)


def plot_throughput(stats_paths, path):
    """Sequences per second of every embed job, by model."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for kind, label in (("dna", "DNABERT-S"), ("protein", "ESM-2")):
        rates, sizes = [], []
        for stats_path in stats_paths:
            stats = json.loads(Path(stats_path).read_text())
            if stats.get("kind", "dna" if ".dna." in str(stats_path) else "protein") != kind:
                continue
            computed = stats["sequences"] - stats.get("resumed", 0)
            if computed > 0 and stats["seconds"] > 0:
                rates.append(computed / stats["seconds"])
                sizes.append(stats["sequences"])
        if rates:
            ax.scatter(sizes, rates, label=f"{label} ({len(rates)} shards, median {np.median(rates):.0f} seq/s)",
                       color=COLORS[kind], alpha=0.7)
    ax.set_xlabel("sequences in the shard")
    ax.set_ylabel("sequences per second")
    ax.set_title("Embedding throughput per shard (whole job, model loading included)")
    _legend_or_note(ax, ax.has_data(), "no embed job computed anything")
    _save(fig, path)


def plot_scores(samples, predictions, path):
    fig, ax = plt.subplots(figsize=(8, 4))
    bins = np.linspace(0, 1, 41)
    drawn = False
    for sample, prediction_path in zip(samples, predictions):
        scores = np.array([float(r["score2"]) for r in _read_tsv(prediction_path)])
        if len(scores):
            drawn = True
            ax.hist(scores, bins=bins, histtype="step", linewidth=1.5, label=f"{sample} ({len(scores)} frames)")
    ax.axvline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("virus score (score2 = P(virus))")
    ax.set_ylabel("frames")
    ax.set_title("Virus scores of all frames")
    _legend_or_note(ax, drawn, "no classifier run (set `classifier:` in the config)")
    _save(fig, path)


def plot_calls(samples, read_calls, path):
    fig, ax = plt.subplots(figsize=(8, _height(samples)))
    y = np.arange(len(samples))
    left = np.zeros(len(samples))
    for call in ("virus", "others", "no_frames"):
        counts = np.array([sum(r["call"] == call for r in _read_tsv(p)) for p in read_calls]) if read_calls else np.zeros(len(samples))
        ax.barh(y, counts, left=left, color=COLORS[call], label=call.replace("_", " "))
        left += counts
    ax.set_yticks(y, samples)
    ax.invert_yaxis()
    ax.set_xlabel("reads")
    ax.set_title("Read-level calls per sample")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    if not read_calls:
        ax.text(0.5, 0.5, "no classifier run (set `classifier:` in the config)", ha="center", transform=ax.transAxes)
    _save(fig, path)


def write_report_plots(samples, summaries, validations, stats, predictions, read_calls, outputs, log=None):
    rows = summary_rows(samples, summaries, validations)
    with atomic_open(outputs["summary"]) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    plot_counts(rows, outputs["counts"])
    plot_throughput(stats, outputs["throughput"])
    plot_scores(samples, predictions, outputs["scores"])
    plot_calls(samples, read_calls, outputs["calls"])
    if log:
        log.info("report plots for %d samples written", len(samples))
