"""Report plots and summary render for 1 and many samples, with and without a classifier."""

import csv
import json

import matplotlib.image
import numpy as np
import pytest

from virnucflow.embed_stats import read_embed_jobs, shard_stats, write_embed_jobs
from virnucflow.report import best_virus_reads, call_counts, score_histogram, write_report_plots

BENCHMARK_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
PLOTS = ("counts", "throughput", "scores", "calls")


def synthetic_run(folder, n_samples, seed=0, missing_in=(), resumed_shard=False):
    """Inputs of the report rule as the workflow writes them, with made-up numbers."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    run = {"samples": [], "summaries": [], "validations": [], "stats": [], "benchmarks": [], "predictions": [],
           "read_calls": []}
    for i in range(n_samples):
        sample = f"sample_{i:02d}" if n_samples > 1 else "only_sample"
        reads = int(rng.integers(5, 400))
        chunks = reads + int(rng.integers(0, reads))
        with_frames = int(chunks * rng.uniform(0.3, 0.9))
        frames = with_frames + int(rng.integers(0, with_frames + 1))
        missing = 3 if i in missing_in else 0
        (folder / f"{sample}.summary.json").write_text(json.dumps(
            {"reads": reads, "bases": reads * 700, "chunks": chunks, "chunks_with_frames": with_frames,
             "chunks_without_frames": chunks - with_frames, "frames": frames, "shards": 2}))
        (folder / f"{sample}.validation.json").write_text(json.dumps(
            {"expected": frames, "present": frames - missing, "missing": missing, "duplicates": 0, "extra": 0,
             "skipped": 0, "ok": not missing}))
        for shard in range(2):
            for kind in ("dna", "protein"):
                sequences = frames // 2
                tokens = sequences * (120 if kind == "dna" else 160)
                seconds = tokens / (9000 if kind == "dna" else 2500) * rng.uniform(0.8, 1.2)
                stats = folder / f"{sample}.{shard}.{kind}.json"
                stats.write_text(json.dumps({
                    "sequences": sequences, "tokens": tokens, "seconds": seconds + 3, "embed_seconds": seconds,
                    "kind": kind, "resumed": sequences // 2 if resumed_shard and i == shard == 0 else 0}))
                bench = folder / f"{sample}.{shard}.{kind}.benchmark.tsv"
                bench.write_text(BENCHMARK_HEADER + f"{seconds + 9:.2f}\t0:00:10\t{rng.uniform(900, 4000):.2f}\t"
                                 "9000.1\t800.0\t850.0\t1.0\t2.0\t95.0\t12.0\n")
                run["stats"].append(stats)
                run["benchmarks"].append(bench)
        virus_share = rng.uniform(0.05, 0.6)
        scores = np.where(rng.random(frames - missing) < virus_share, rng.beta(6, 1.5, frames - missing),
                          rng.beta(1.5, 6, frames - missing)).astype(np.float32)
        with open(folder / f"{sample}.predictions.tsv", "w") as handle:
            handle.write("Sequence_ID\tPrediction\tscore1\tscore2\n")
            handle.writelines(f"r{k}_chunk_1F1\t{'virus' if s > 0.5 else 'others'}\t{str(1 - s)}\t{str(s)}\n"
                              for k, s in enumerate(scores))
        calls = rng.choice(np.array(["virus", "others", "no_frames"], dtype=object), size=reads,
                           p=[virus_share, 0.95 - virus_share, 0.05])
        if missing:
            calls[:2] = "not_scored"
        best = rng.uniform(0, 1, reads).astype(np.float32)
        with open(folder / f"{sample}.read_calls.tsv", "w") as handle:
            handle.write("read_id\tlength\tambiguous_fraction\tchunks\tchunks_with_frames\tvirus_chunks\t"
                         "max_virus_score\tcall\n")
            handle.writelines(f"r{k}\t700\t0.0000\t2\t{0 if c == 'no_frames' else 1}\t{int(c == 'virus')}\t"
                              f"{'' if c in ('no_frames', 'not_scored') else str(s)}\t{c}\n"
                              for k, (c, s) in enumerate(zip(calls, best)))
        run["samples"].append(sample)
        run["summaries"].append(folder / f"{sample}.summary.json")
        run["validations"].append(folder / f"{sample}.validation.json")
        run["predictions"].append(folder / f"{sample}.predictions.tsv")
        run["read_calls"].append(folder / f"{sample}.read_calls.tsv")
    return run


def embed_jobs(run, out, benchmarks=True):
    """Each sample's embed_jobs.tsv, as rule tabulate_embed_jobs writes it."""
    tables = []
    for sample in run["samples"]:
        mine = [i for i, path in enumerate(run["stats"]) if path.name.startswith(f"{sample}.")]
        tables.append(out / f"{sample}.embed_jobs.tsv")
        write_embed_jobs([run["stats"][i] for i in mine], [run["benchmarks"][i] for i in mine] if benchmarks else None,
                         tables[-1])
    return tables


def render(run, out, classifier=True, benchmarks=True):
    out.mkdir(parents=True, exist_ok=True)
    outputs = {name: out / f"{name}.png" for name in PLOTS}
    outputs.update(summary=out / "summary.tsv", summary_html=out / "summary.html", virus_reads=out / "virus_reads.html")
    write_report_plots(run["samples"], run["summaries"], run["validations"], embed_jobs(run, out, benchmarks),
                       run["predictions"] if classifier else [], run["read_calls"] if classifier else [], outputs)
    return outputs


def assert_png(path, min_width=600):
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    image = matplotlib.image.imread(path)  # decodes: a whole, valid PNG
    assert image.shape[1] >= min_width and image.shape[0] >= 200


@pytest.mark.parametrize("n_samples", [1, 50])
def test_every_plot_and_the_summary_render(tmp_path, n_samples):
    run = synthetic_run(tmp_path / "in", n_samples, missing_in={0}, resumed_shard=True)
    outputs = render(run, tmp_path / "out")
    for name in PLOTS:
        assert_png(outputs[name])
    with open(outputs["summary"], newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [r["sample"] for r in rows] == run["samples"]
    first = rows[0]
    assert first["validated"] == "partial" and first["ids_missing"] == "3"
    expected = call_counts(run["read_calls"][0])
    assert {k: int(first[f"reads_{k}"]) for k in expected} == expected
    assert sum(expected.values()) == int(first["reads"])
    page = outputs["summary_html"].read_text()
    assert page.split("</table>")[0].count("<tr>") == n_samples + 1 and 'class="bad">partial' in page


def test_plots_render_without_a_classifier_and_without_benchmarks(tmp_path):
    run = synthetic_run(tmp_path / "in", 3)
    outputs = render(run, tmp_path / "out", classifier=False, benchmarks=False)
    for name in PLOTS:
        assert_png(outputs[name])
    with open(outputs["summary"]) as handle:
        assert "reads_virus" not in handle.readline()


def test_the_numbers_behind_the_plots(tmp_path):
    run = synthetic_run(tmp_path / "in", 1, resumed_shard=True)
    histogram = score_histogram(run["predictions"][0])
    with open(run["predictions"][0]) as handle:
        scores = [float(line.split("\t")[3]) for line in list(handle)[1:]]
    assert histogram.sum() == len(scores) and histogram[10:].sum() == sum(s >= 0.5 for s in scores)
    shards = shard_stats(run["stats"], run["benchmarks"])
    assert len(shards) == 4 and all(s["job_seconds"] > s["embed_seconds"] for s in shards)
    assert [s["kind"] for s in shards] == ["dna", "protein"] * 2 and shards[0]["resumed"]
    with pytest.raises(ValueError, match="3 benchmark files for 4 embed statistics"):
        shard_stats(run["stats"], run["benchmarks"][:3])
    table = tmp_path / "embed_jobs.tsv"
    write_embed_jobs(run["stats"], run["benchmarks"], table)
    rows = read_embed_jobs(table)
    assert [r["kind"] for r in rows] == ["dna", "protein"] * 2
    assert [r["tokens"] for r in rows] == [s["tokens"] for s in shards]
    assert [r["job_seconds"] for r in rows] == pytest.approx([s["job_seconds"] for s in shards])


def test_the_summary_warns_about_embed_jobs_that_ran_on_the_cpu_with_a_gpu(tmp_path):
    """embed.cpu_fallback: a job given a GPU that torch could not use is counted and shown in red."""
    run = synthetic_run(tmp_path / "in", 2)
    for i, stats in enumerate(run["stats"]):
        data = json.loads(stats.read_text())
        fallback = stats.name.startswith("sample_01.0.")
        data.update(device="cpu" if fallback else "cuda:0", device_name="cpu" if fallback else "NVIDIA H100",
                    precision="fp32" if fallback else "bf16", gpu_expected="CUDA_VISIBLE_DEVICES=0")
        stats.write_text(json.dumps(data))
    outputs = render(run, tmp_path / "out")
    with open(outputs["summary"], newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [r["cpu_jobs_given_a_gpu"] for r in rows] == ["0", "2"]
    assert rows[0]["embed_devices"] == "NVIDIA H100 x4" and rows[1]["embed_precision"] == "bf16 x2, fp32 x2"
    assert '<td class="bad">2</td>' in outputs["summary_html"].read_text()


def test_the_summary_warns_first_when_the_models_are_untrained(tmp_path):
    """The demo's random-weight models: a warning above the table, in the log, and a red count per sample."""
    run = synthetic_run(tmp_path / "in", 2)
    for stats in run["stats"]:
        data = json.loads(stats.read_text())
        data["untrained"] = stats.name.startswith("sample_01.")
        stats.write_text(json.dumps(data))
    outputs = render(run, tmp_path / "out")
    with open(outputs["summary"], newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [r["untrained_model_jobs"] for r in rows] == ["0", "4"]
    page = outputs["summary_html"].read_text()
    assert page.index("UNTRAINED MODELS: the embeddings of sample_01 were computed") < page.index("<table>")
    trained = synthetic_run(tmp_path / "in2", 1)
    assert "UNTRAINED" not in render(trained, tmp_path / "out2")["summary_html"].read_text()


def test_an_empty_sample_still_renders(tmp_path):
    run = synthetic_run(tmp_path / "in", 2)
    run["predictions"][1].write_text("Sequence_ID\tPrediction\tscore1\tscore2\n")
    for stats in run["stats"]:
        stats.write_text(json.dumps({"sequences": 0, "tokens": 0, "seconds": 0.1, "kind": "dna"}))
    outputs = render(run, tmp_path / "out", benchmarks=False)
    for name in PLOTS:
        assert_png(outputs[name])


def test_the_summary_page_names_the_models_and_the_software(tmp_path):
    run = synthetic_run(tmp_path / "in", 2)
    for stats in run["stats"]:
        data = json.loads(stats.read_text())
        data.update(model="zhihan1996/DNABERT-S" if data["kind"] == "dna" else "facebook/esm2_t36_3B_UR50D",
                    model_revision="abc123" if data["kind"] == "dna" else "def456", device="cuda:0",
                    device_name="NVIDIA H100", precision="bf16")
        stats.write_text(json.dumps(data))
    page = render(run, tmp_path / "out")["summary_html"].read_text()
    assert "<td>DNABERT-S: zhihan1996/DNABERT-S</td><td>abc123</td>" in page
    assert "<td>ESM-2: facebook/esm2_t36_3B_UR50D</td><td>def456</td>" in page
    import torch

    assert f"<td>torch</td><td>{torch.__version__.split('+')[0]}" in page and "<td>virnucflow</td>" in page


def virus_rows(read_calls):
    """(score, sample index, row) of every virus read of the samples' read_calls.tsv."""
    found = []
    for s, path in enumerate(read_calls):
        with open(path, newline="") as handle:
            for k, row in enumerate(csv.DictReader(handle, delimiter="\t")):
                if row["call"] == "virus":
                    found.append((float(row["max_virus_score"]), s, k, row))
    return found


def test_the_report_lists_the_best_virus_reads_over_all_samples_and_no_more(tmp_path):
    run = synthetic_run(tmp_path / "in", 12, seed=4)
    every = virus_rows(run["read_calls"])
    assert len(every) > 60
    rows, total = best_virus_reads(run["samples"], run["read_calls"], n=50)
    expected = sorted(every, key=lambda v: (-v[0], v[1], v[2]))[:50]
    assert total == len(every) and len(rows) == 50
    assert [(r["sample"], r["read_id"]) for r in rows] == [(run["samples"][s], row["read_id"]) for _, s, _, row in expected]
    assert list(rows[0]) == ["sample", "read_id", "length", "max_virus_score", "virus_chunks", "chunks_with_frames",
                             "ambiguous_fraction"]
    # Ties: the earlier sample, then the earlier read, first.
    header = run["read_calls"][0].read_text().split("\n")[0] + "\n"
    (tmp_path / "t1.tsv").write_text(header + "".join(f"x{k}\t9\t0.0000\t1\t1\t1\t0.75\tvirus\n" for k in range(4)))
    tied, _ = best_virus_reads(["b", "a"], [tmp_path / "t1.tsv", tmp_path / "t1.tsv"], n=5)
    assert [(r["sample"], r["read_id"]) for r in tied] == [("b", "x0"), ("b", "x1"), ("b", "x2"), ("b", "x3"),
                                                           ("a", "x0")]


def test_the_virus_reads_page_has_at_most_1000_rows_and_points_to_the_full_files(tmp_path):
    run = synthetic_run(tmp_path / "in", 2, seed=1)
    many = tmp_path / "many.read_calls.tsv"  # 5,000 virus reads in one sample
    with open(many, "w") as handle:
        handle.write(run["read_calls"][0].read_text().split("\n")[0] + "\n")
        handle.writelines(f"m{k}\t700\t0.0000\t2\t1\t1\t{(k % 997) / 997}\tvirus\n" for k in range(5000))
    run["read_calls"][1] = many
    outputs = render(run, tmp_path / "out")
    page = outputs["virus_reads"].read_text()
    assert page.count("<tr>") == 1 + 1000
    assert f"The 1,000 best-scoring of {len(virus_rows(run['read_calls'])):,} virus reads" in page
    assert "results/virus_reads.tsv" in page and "virus_reads.fa.gz" in page
    few = synthetic_run(tmp_path / "few", 1, seed=2)
    small = render(few, tmp_path / "few_out")["virus_reads"].read_text()
    assert "All " in small and small.count("<tr>") == 1 + len(virus_rows(few["read_calls"]))
    none = render(synthetic_run(tmp_path / "none", 1), tmp_path / "none_out", classifier=False)["virus_reads"]
    assert "No classifier run" in none.read_text() and "<table>" not in none.read_text()
