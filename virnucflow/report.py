"""The report job: a summary table and page per sample, the best virus reads, and the plots
(virnucflow.plots), from each sample's summaries; every input is read streamed or bounded, so the
report's cost grows with the samples, not with the reads or shards."""

import csv
import heapq
import html
import logging
import platform

import numpy as np

from . import __version__
from .atomic import atomic_open
from .embed_stats import read_embed_jobs
from .plots import CALLS, MODELS, SCORE_BINS, plot_calls, plot_counts, plot_scores, plot_throughput
from .validation import read_validation_json
from .workfiles import read_summary

log = logging.getLogger(__name__)

TOP_VIRUS_READS = 1000  # rows of the report's virus-read table, over all samples: the report's size is bounded
VIRUS_READ_COLUMNS = ["sample", "read_id", "length", "max_virus_score", "virus_chunks", "chunks_with_frames",
                      "ambiguous_fraction"]  # as results/virus_reads.tsv


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
        validation = read_validation_json(validation_path)
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
    sections = [f'<p class="warning">{html.escape(warning)}</p>' for warning in run_warnings(rows)]
    sections.append(f"<p>Made by virnucflow {html.escape(__version__)}.</p>")
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
    plot_scores(samples, [score_histogram(p) for p in predictions or []], outputs["scores"],
                classifier=bool(predictions))
    plot_calls(samples, calls, outputs["calls"], min_virus_score)
    if outputs.get("virus_reads"):
        best, total = best_virus_reads(samples, read_calls) if read_calls else ([], 0)
        write_virus_reads_html(best, total, outputs["virus_reads"], min_virus_score, classifier=bool(read_calls))
    log.info("report plots for %d samples written", len(samples))
    for warning in run_warnings(rows):
        log.warning("%s", warning)


def run_warnings(rows):
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
