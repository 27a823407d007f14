"""Report plots render for a run with and without a classifier."""

import json

from virnucflow.report import write_report_plots


def test_plots_and_summary_are_written_with_and_without_calls(tmp_path):
    summary = {"reads": 3, "bases": 900, "chunks": 4, "chunks_with_frames": 2, "chunks_without_frames": 2,
               "frames": 3, "shards": 1}
    validation = {"expected": 3, "present": 3, "missing": 0, "skipped": 0, "ok": True}
    (tmp_path / "s.json").write_text(json.dumps(summary))
    (tmp_path / "v.json").write_text(json.dumps(validation))
    (tmp_path / "st.dna.json").write_text(json.dumps({"sequences": 3, "seconds": 0.5, "kind": "dna"}))
    (tmp_path / "p.tsv").write_text("Sequence_ID\tPrediction\tscore1\tscore2\na_chunk_1F1\tvirus\t0.2\t0.8\n")
    (tmp_path / "r.tsv").write_text("read_id\tlength\tchunks\tchunks_with_frames\tvirus_chunks\tmax_virus_score\tcall\n"
                                    "a\t300\t1\t1\t1\t0.8\tvirus\nb\t300\t1\t0\t0\t\tno_frames\n")
    for calls in (True, False):
        out = {name: tmp_path / f"{calls}_{name}.{'tsv' if name == 'summary' else 'png'}"
               for name in ("summary", "counts", "throughput", "scores", "calls")}
        write_report_plots(["s1"], [tmp_path / "s.json"], [tmp_path / "v.json"], [tmp_path / "st.dna.json"],
                           [tmp_path / "p.tsv"] if calls else [], [tmp_path / "r.tsv"] if calls else [], out)
        for name, path in out.items():
            data = path.read_bytes()
            assert data.startswith(b"\x89PNG") if name != "summary" else data.startswith(b"sample\treads")
