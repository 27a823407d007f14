"""`virnucflow run-in-parts`: a large sample sheet run in parts, then once whole (README, "Running on a
cluster"): the part sheets, the order of the runs, stopping at a failure and resuming after it."""

import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from virnucflow.errors import InputError, VirnucflowError
from virnucflow.parts import part_paths, run_in_parts, split_sheet, with_samples, write_parts

SHEET = "# my samples\nsample\treads\treads2\na\ta.fq\ta2.fq\n\nb\tb.fa\n# c\tc.fa (left out)\nc\tc.fa\n"


def test_each_part_has_the_header_and_the_next_rows_in_order():
    assert split_sheet(SHEET, 2) == ["# my samples\nsample\treads\treads2\na\ta.fq\ta2.fq\nb\tb.fa\n",
                                     "# my samples\nsample\treads\treads2\nc\tc.fa\n"]
    assert split_sheet(SHEET, 50) == ["# my samples\nsample\treads\treads2\na\ta.fq\ta2.fq\nb\tb.fa\nc\tc.fa\n"]
    assert len(split_sheet(SHEET, 1)) == 3
    with pytest.raises(VirnucflowError, match="at least 1"):
        split_sheet(SHEET, 0)


def test_part_sheets_are_written_once_and_shrink_with_the_sheet(tmp_path):
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(SHEET)
    parts = write_parts(sheet, 1, tmp_path / "parts")
    assert parts == part_paths(sheet, 3, tmp_path / "parts")
    assert [p.name for p in parts] == ["samples.part001.tsv", "samples.part002.tsv", "samples.part003.tsv"]
    written = [p.stat().st_mtime_ns for p in parts]
    assert [p.stat().st_mtime_ns for p in write_parts(sheet, 1, tmp_path / "parts")] == written  # unchanged: kept
    sheet.write_text("sample\treads\na\ta.fq\n")
    assert write_parts(sheet, 1, tmp_path / "parts") == parts[:1]
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == ["samples.part001.tsv"]
    sheet.write_text("sample\tsomething\n")
    with pytest.raises(InputError):  # the workflow's own check of the sheet
        write_parts(sheet, 1, tmp_path / "parts")


def test_the_part_goes_into_the_snakemake_config():
    assert with_samples(["--profile", "p"], "x.tsv") == ["--profile", "p", "--config", "samples=x.tsv"]
    assert with_samples(["--config", "a=1", "-n"], "x.tsv") == ["--config", "samples=x.tsv", "a=1", "-n"]
    # the attached forms too: Snakemake keeps only the last --config, so the user's values stay in it
    assert with_samples(["--config=a=1", "-n"], "x.tsv") == ["--config", "samples=x.tsv", "a=1", "-n"]
    assert with_samples(["-Ca=1"], "x.tsv") == ["--config", "samples=x.tsv", "a=1"]
    with pytest.raises(VirnucflowError, match="--samples"):
        with_samples(["--config", "samples=y.tsv"], "x.tsv")


def fake_snakemake(fail=()):
    """A `run` that records the sample sheet of every call and fails for the sheets in `fail`."""
    seen = []

    def run(command):
        sheet = command[command.index("--config") + 1].removeprefix("samples=")
        seen.append(sheet.rsplit("/", 1)[-1])
        return SimpleNamespace(returncode=1 if seen[-1] in fail else 0)

    return run, seen


def test_stops_at_the_first_failing_part_and_resumes_where_it_stopped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "samples.tsv").write_text(SHEET)
    run, seen = fake_snakemake(fail={"samples.part002.tsv"})
    with pytest.raises(VirnucflowError) as error:
        run_in_parts("samples.tsv", 1, ["--profile", "p"], run=run)
    assert seen == ["samples.part001.tsv", "samples.part002.tsv"]
    assert re.search(r"part 2 of 3 \(parts/samples.part002.tsv, samples b \.\. b\) failed: snakemake exit status 1; "
                     r"fix the cause and run the same command again: parts that finished are skipped", str(error.value))
    run, seen = fake_snakemake()
    run_in_parts("samples.tsv", 1, ["--profile", "p"], run=run)
    assert seen == ["samples.part002.tsv", "samples.part003.tsv", "samples.tsv"]  # then the whole sheet
    run, seen = fake_snakemake()
    run_in_parts("samples.tsv", 1, ["--profile", "p", "-n"], run=run)  # other arguments: every part again
    assert seen == ["samples.part001.tsv", "samples.part002.tsv", "samples.part003.tsv", "samples.tsv"]


def virnucflow(workdir, *args):
    """The command, with its output and Snakemake's in one stream (in order) as stdout."""
    return subprocess.run([sys.executable, "-m", "virnucflow", "run-in-parts", *args], cwd=workdir,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def jobs_run(output):
    """(rule, sample) of every job a Snakemake run started, from its output."""
    blocks = re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:\n)", output)
    return [(re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block).group(1),
             (re.search(r"\n    wildcards: .*?sample=([^,\n]+)", block) or [None, None])[1])
            for block in blocks if re.match(r"(?:local)?(?:rule|checkpoint) \w+:\n", block)]


@pytest.mark.workflow
def test_the_demo_in_two_parts_then_the_report_and_again_for_nothing(demo_workdir):
    args = ["--samples", "config/demo_samples.tsv", "--part-size", "1", "--", "--cores", "2", "--configfile",
            "config/demo.yaml"]
    proc = virnucflow(demo_workdir, *args)
    assert proc.returncode == 0, proc.stdout[-4000:]
    output = proc.stdout
    parts, whole = output.split("every part done: snakemake on the whole sheet")
    assert [sample for rule, sample in jobs_run(parts) if rule == "prepare"] == ["coding", "mixed"]  # in order
    assert [sample for _, sample in jobs_run(whole) if sample] == []  # the whole sheet: nothing per sample left
    for sample in ("coding", "mixed"):
        assert (demo_workdir / f"results/{sample}/embeddings.h5").is_file()
        assert (demo_workdir / f"results/{sample}/read_calls.tsv").is_file()
    summary = (demo_workdir / "results/report/summary.tsv").read_text()
    assert "coding" in summary and "mixed" in summary
    results = {path: path.stat().st_mtime_ns for path in demo_workdir.glob("results/**/*") if path.is_file()}

    again = virnucflow(demo_workdir, *args)
    assert again.returncode == 0, again.stdout[-4000:]
    output = again.stdout
    assert output.count("finished before, skipped") == 2
    assert jobs_run(output) == []
    assert {path: path.stat().st_mtime_ns for path in results} == results


def test_a_failing_run_says_which_part_and_how_to_resume(demo_workdir):
    proc = virnucflow(demo_workdir, "--samples", "config/demo_samples.tsv", "--part-size", "1", "--",
                      "--configfile", "no_such_config.yaml")
    assert proc.returncode == 1
    error = proc.stdout.strip().splitlines()[-1]
    assert error.startswith("virnucflow run-in-parts: error: part 1 of 2 (parts/demo_samples.part001.tsv, "
                            "samples coding .. coding) failed: snakemake exit status 1; fix the cause and run the "
                            "same command again")
    assert not list((demo_workdir / "parts").glob("*.done"))
