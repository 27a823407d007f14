"""`virnucflow sample-sheet`: a sheet the workflow reads, from a folder of reads named as sequencers and
archives name them."""

import gzip
import logging
import os
import subprocess
import sys

import pytest

from virnucflow.errors import InputError
from virnucflow.sample_sheet import build_rows, mate_of, sample_name, write_sample_sheet
from virnucflow.samples import read_sample_sheet

FASTQ = b"@r1\nACGTACGT\n+\nIIIIIIII\n"
FASTA = b">r1\nACGTACGT\n"


def reads(folder, *names, data=FASTQ):
    """Write reads files (gzip where the name ends in .gz) under `folder`; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return folder


@pytest.mark.parametrize("r1, r2, sample", [
    ("gut7_R1.fastq.gz", "gut7_R2.fastq.gz", "gut7"),
    ("SRR1234_1.fastq", "SRR1234_2.fastq", "SRR1234"),
    ("gut7_S3_L001_R1_001.fastq.gz", "gut7_S3_L001_R2_001.fastq.gz", "gut7"),  # bcl2fastq
    ("gut7_S3_R1_001.fastq.gz", "gut7_S3_R2_001.fastq.gz", "gut7"),  # lanes merged by the sequencer
    ("gut7.R1.fq.gz", "gut7.R2.fq.gz", "gut7"),
    ("gut7_r1.fq", "gut7_r2.fq", "gut7"),
])
def test_r1_and_r2_are_paired_by_the_usual_names(tmp_path, r1, r2, sample):
    folder = reads(tmp_path / "data", r2, r1)
    assert build_rows([str(folder)])["rows"] == [(sample, str(folder / r1), str(folder / r2))]


def test_the_written_sheet_is_read_back_by_the_workflow_with_paths_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reads(tmp_path / "data", "gut_7_R1.fq.gz", "gut_7_R2.fq.gz", "soil-2.fa", data=FASTQ)
    reads(tmp_path / "data" / "more", "lake.fna.gz", data=FASTA)
    write_sample_sheet(["data"], "samples.tsv")
    assert read_sample_sheet("samples.tsv") == {
        "gut_7": ["data/gut_7_R1.fq.gz", "data/gut_7_R2.fq.gz"], "lake": ["data/more/lake.fna.gz"],
        "soil-2": ["data/soil-2.fa"]}


def test_reads_are_told_by_content_not_by_name_and_other_files_are_counted_in_one_line(tmp_path, caplog):
    folder = reads(tmp_path / "d", "sample_a.txt")  # FASTQ, whatever its name says
    reads(folder, "sample_b.dat.gz", data=b"\n\n" + FASTA)  # gzip, found by its magic, blank lines first
    reads(folder, "notes.fastq", data=b"not reads\n")
    reads(folder, "md5sums.txt", data=b"abc  sample_a.txt\n")
    reads(folder, "old.fq.bz2", data=b"BZh91AY&SY")
    reads(folder, ".hidden.fq")
    os.mkfifo(folder / "pipe")  # never opened: reading it would block
    with caplog.at_level(logging.INFO, logger="virnucflow"):
        rows = write_sample_sheet([str(folder)], str(tmp_path / "s.tsv"))
    assert rows == [("sample_a", str(folder / "sample_a.txt"), ""), ("sample_b", str(folder / "sample_b.dat.gz"), "")]
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert ignored == ["4 other files ignored (not FASTA or FASTQ by their first character: md5sums.txt, notes.fastq, "
                       "old.fq.bz2, ...); 1 of them compressed with bzip2, which the workflow does not read: recompress "
                       "those with gzip"]


@pytest.mark.parametrize("name, sample", [
    ("my sample (2).fq", "my_sample_2_"), ("_tmp.fq", "tmp"), ("Report.fq", "Report_1"),
    ("virus_reads.tsv.fq", "virus_reads.tsv_1"), ("ünï.fq", "n_"),
])
def test_sample_names_are_made_valid_for_the_workflow(tmp_path, name, sample):
    folder = reads(tmp_path / "d", name)
    rows = build_rows([str(folder)])["rows"]
    assert [row[0] for row in rows] == [sample]
    (tmp_path / "s.tsv").write_text(f"sample\treads\n{sample}\tx.fq\n")
    assert read_sample_sheet(tmp_path / "s.tsv") == {sample: ["x.fq"]}


def test_several_lanes_of_one_sample_are_refused_in_one_line_with_the_command_that_joins_them(tmp_path, caplog):
    folder = reads(tmp_path / "d", *(f"a_S1_L00{lane}_R{mate}_001.fastq.gz" for lane in (1, 2) for mate in (1, 2)))
    with pytest.raises(InputError) as error:
        write_sample_sheet([str(folder)], str(tmp_path / "s.tsv"))
    assert str(error.value) == (
        f"{folder}/a_S1_L001_R1_001.fastq.gz: sample 'a' has 2 lanes (L001, L002); concatenate each mate's files "
        f"into one first: mkdir -p joined && cat {folder}/a_S1_L001_R1_001.fastq.gz {folder}/a_S1_L002_R1_001.fastq.gz "
        "> joined/a_R1.fastq.gz (and the same for R2), then give joined/ in place of those files; nothing written")
    assert not (tmp_path / "s.tsv").exists()


def test_what_cannot_be_paired_or_named_uniquely_is_one_line_each_and_nothing_is_written(tmp_path, caplog):
    folder = reads(tmp_path / "d", "a_R1.fq", "a_R2.fq", "b_R2.fq", "c_R1.fq", "x y.fq", "x_y.fq")
    with caplog.at_level(logging.WARNING, logger="virnucflow"), pytest.raises(InputError) as error:
        write_sample_sheet([str(folder)])
    lines = [str(error.value)] + [r.getMessage() for r in caplog.records]
    assert all("\n" not in line for line in lines) and len(lines) == 3
    assert lines[0].startswith(f"{folder}/b_R2.fq: an R2 file without its R1") and lines[0].endswith(
        " (2 more above); nothing written")
    assert lines[1].startswith(f"{folder}/c_R1.fq: an R1 file without its R2 (the same name with 2 for 1); add the R2 "
                               "file, or rename this one without its R1 tag to make it a single-end sample")
    assert lines[2] == (f"{folder}/x y.fq: 2 files give the sample name 'x_y' ({folder}/x y.fq, {folder}/x_y.fq); "
                        "rename them, or concatenate them first if they are one sample's reads")


def test_a_lone_file_with_a_weak_tag_is_a_single_end_sample_of_its_own_name(tmp_path):
    folder = reads(tmp_path / "d", "soil_1.fa", "soil_2.fa", "lake_2.fa", data=FASTA)
    assert build_rows([str(folder)])["rows"] == [("lake_2", f"{folder}/lake_2.fa", ""),
                                                 ("soil", f"{folder}/soil_1.fa", f"{folder}/soil_2.fa")]
    assert mate_of("lake_2.fa") == ("lake", 2, None, False) and sample_name("lake_2") == "lake_2"


def test_single_end_illumina_files_are_samples_when_nothing_is_paired(tmp_path):
    folder = reads(tmp_path / "d", "gut_S1_L001_R1_001.fastq.gz", "lake_S2_L001_R1_001.fastq.gz")
    assert [row[0] for row in build_rows([str(folder)])["rows"]] == ["gut", "lake"]


def test_the_command_writes_stdout_and_never_overwrites_a_file_without_force(tmp_path):
    reads(tmp_path / "data", "s_R1.fq", "s_R2.fq")
    command = [sys.executable, "-m", "virnucflow", "sample-sheet", "data"]
    run = dict(cwd=tmp_path, capture_output=True, text=True)
    proc = subprocess.run(command, **run)
    assert proc.returncode == 0 and proc.stdout == "sample\treads\treads2\ns\tdata/s_R1.fq\tdata/s_R2.fq\n"
    (tmp_path / "samples.tsv").write_text("mine\n")
    proc = subprocess.run(command + ["-o", "samples.tsv"], **run)
    assert proc.returncode == 1 and proc.stderr.splitlines()[-1] == (
        "virnucflow sample-sheet: error: samples.tsv: exists; add --force to overwrite it, or give another -o")
    assert (tmp_path / "samples.tsv").read_text() == "mine\n"
    assert subprocess.run(command + ["-o", "samples.tsv", "--force"], **run).returncode == 0
    assert read_sample_sheet(tmp_path / "samples.tsv") == {"s": ["data/s_R1.fq", "data/s_R2.fq"]}


def test_a_path_that_does_not_exist_or_holds_no_reads_is_one_line(tmp_path):
    with pytest.raises(InputError, match=r"^missing: not found; give reads files or folders that hold them$"):
        build_rows(["missing"])
    reads(tmp_path / "d", "notes.txt", data=b"hello\n")
    with pytest.raises(InputError, match=r": no FASTA or FASTQ files found \(1 other files\)"):
        write_sample_sheet([str(tmp_path / "d")])
