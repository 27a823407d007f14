"""What an embed job did (`EmbedStats`): its stats JSON, written by the job, and a sample's
embed_jobs.tsv, one row per job, which the report reads instead of every shard's files."""

import csv
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .atomic import atomic_open

JSON_ONLY = {"column": False}  # not a column of embed_jobs.tsv
TABLE_ONLY = {"json": False}  # not in the job's JSON: from the file name or Snakemake's benchmark file


@dataclass
class EmbedStats:
    """One embed job; the fields' order is embed_jobs.tsv's column order. None: not known."""

    kind: str | None = None  # 'dna' or 'protein'
    shard: str | None = field(default=None, metadata=TABLE_ONLY)
    sequences: int | None = None
    tokens: int | None = None
    padded_tokens: int | None = None  # of the batches this run embedded (resumed ones are not counted)
    skipped: int | None = None
    resumed: int | None = None  # sequences the sidecar already held
    oom_splits: int | None = None
    device: str | None = None
    device_name: str | None = None
    gpu_expected: str | None = None  # why the job should have had a GPU (devices.gpu_expected)
    precision: str | None = None
    model: str | None = None
    model_revision: str | None = None
    untrained: bool | None = None  # a random-weight demo model
    load_seconds: float | None = None
    embed_seconds: float | None = None
    seconds: float | None = None
    job_seconds: float | None = field(default=None, metadata=TABLE_ONLY)
    max_rss_mb: float | None = field(default=None, metadata=TABLE_ONLY)
    peak_gpu_memory_bytes: int | None = None
    claimed_device: str | None = field(default=None, metadata=JSON_ONLY)
    batches: int | None = field(default=None, metadata=JSON_ONLY)
    input_sha256: str | None = field(default=None, metadata=JSON_ONLY)
    waited_seconds: float | None = field(default=None, metadata=JSON_ONLY)
    reused: bool = field(default=False, metadata=JSON_ONLY)  # the output was an earlier job's; in the JSON when true

    def as_json(self):
        """The job's stats JSON as a dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name in JSON_KEYS and (f.name != "reused" or self.reused)}


JSON_KEYS = tuple(f.name for f in fields(EmbedStats) if f.metadata.get("json", True))
COLUMNS = tuple(f.name for f in fields(EmbedStats) if f.metadata.get("column", True))
NUMBERS = frozenset(f.name for f in fields(EmbedStats) if f.name in COLUMNS and f.type in (int | None, float | None))


def write_stats_json(stats, path):
    with atomic_open(path) as handle:
        json.dump(stats.as_json(), handle, indent=2)


def read_stats_json(path):
    """The `EmbedStats` of a job's JSON; keys it does not know are ignored, missing ones are None."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not an embed job's stats")
    return EmbedStats(**{key: value for key, value in data.items() if key in JSON_KEYS})


def _read_benchmark(path):
    """Wall-clock seconds and peak resident memory (MB) of a Snakemake benchmark TSV (mean over repeats)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))

    def mean(key):
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "", "NA", "-")]
        return float(np.mean(values)) if values else None

    return mean("s"), mean("max_rss")


def shard_stats(stats_paths, benchmarks=None):
    """One dict per embed job (EmbedStats' fields): its JSON plus `shard` (from the file name), `job_seconds`
    and `max_rss_mb` from the matching Snakemake benchmark file (`benchmarks` parallel to `stats_paths`)."""
    if benchmarks and len(benchmarks) != len(stats_paths):
        raise ValueError(f"{len(benchmarks)} benchmark files for {len(stats_paths)} embed statistics; pass them "
                         "in the same order, one per job")
    shards = []
    for i, stats_path in enumerate(stats_paths):
        stats, name = read_stats_json(stats_path), Path(stats_path).name
        if stats.kind is None:
            stats.kind = "dna" if ".dna." in name else "protein"
        stats.shard = name.split(".")[0]
        stats.job_seconds, stats.max_rss_mb = _read_benchmark(benchmarks[i]) if benchmarks else (None, None)
        shards.append(asdict(stats))
    return shards


def write_embed_jobs(stats_paths, benchmarks, path):
    """A sample's embed_jobs.tsv: one row (COLUMNS) per job's stats JSON, with its benchmark's figures."""
    with atomic_open(path) as handle:
        handle.write("\t".join(COLUMNS) + "\n")
        for job in shard_stats(stats_paths, benchmarks):
            handle.write("\t".join("" if job[c] is None else str(job[c]) for c in COLUMNS) + "\n")


def read_embed_jobs(path):
    """The rows of an embed_jobs.tsv as dicts, numbers as floats and empty cells as None."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    for row in rows:
        for key, value in row.items():
            row[key] = None if value == "" else float(value) if key in NUMBERS else value
    return rows
