"""`virnucflow <stage>`: the commands take their defaults from the configuration schema and call the
stage functions as the workflow's scripts do."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from helpers import write_embeddings
from virnucflow.cli import build_parser
from virnucflow.embeddings import open_embeddings
from virnucflow.schema import defaults
from virnucflow.workfiles import FRAMES_HEADER


def test_option_defaults_are_the_schemas():
    config = defaults()
    parse = build_parser().parse_args
    prepare = parse(["prepare", "in.fa", "out"])
    assert (prepare.chunk_length, prepare.compat, prepare.shard_residues) == (
        config["chunk_length"], config["compat"], config["shard_residues"])
    embed = parse(["embed", "s.fna", "s.h5", "--kind", "dna", "--model", "m"])
    assert {key: getattr(embed, key) for key in ("device", "precision", "on_error", "threads", "cpu_fallback")} == {
        key: config["embed"][key] for key in ("device", "precision", "on_error", "threads", "cpu_fallback")}
    assert embed.layer == config["embed"]["esm_layer"]
    merge = parse(["merge", "frames.tsv", "out.h5", "--dna", "d.h5", "--protein", "p.h5", "--validation", "v.json",
                   "--missing", "m.txt", "--chunk-length", "300", "--compat", "fixed"])
    assert (merge.buffer_rows, merge.allow_missing) == (config["merge"]["buffer_rows"], config["merge"]["allow_missing"])
    assert parse(["download-models"]).models == list(config["models"].values())
    predict = parse(["predict", "e.h5", "frames.tsv", "reads.tsv", "c.pth", "--predictions", "p.tsv",
                     "--chunk-calls", "c.tsv", "--read-calls", "r.tsv"])
    assert predict.max_ambiguous_fraction == config["calls"]["max_ambiguous_fraction"] and predict.chunk_scores is None
    assert predict.min_virus_score is config["calls"]["min_virus_score"] is None
    assert parse(["predict", "e.h5", "f.tsv", "r.tsv", "c.pth", "--predictions", "p.tsv", "--chunk-calls", "c.tsv",
                  "--read-calls", "r.tsv", "--min-virus-score", "0.9"]).min_virus_score == 0.9


def test_merge_needs_the_chunk_length_and_compat_it_records(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["merge", "frames.tsv", "out.h5", "--dna", "d.h5", "--protein", "p.h5",
                                   "--validation", "v.json", "--missing", "m.txt"])
    assert "--chunk-length" in capsys.readouterr().err


def test_merge_pairs_shards_by_order_whatever_their_names(tmp_path):
    """`virnucflow merge --dna d.h5 --protein p.h5`: shard files need no shard number in their names."""
    ids = ["r1_chunk_1F1", "r2_chunk_1R3"]
    (tmp_path / "frames.tsv").write_text(FRAMES_HEADER + "".join(f"{i}\t{i[:2]}\t1\t+\t1\t0\t3\t1\t0\n" for i in ids))
    write_embeddings(tmp_path / "d.h5", ids, np.ones((2, 3)), {"kind": "dna", "model": "m"})
    write_embeddings(tmp_path / "p.h5", ids[::-1], np.zeros((2, 2)), {"kind": "protein", "model": "e"})
    out = tmp_path / "out.h5"
    subprocess.run([sys.executable, "-m", "virnucflow", "merge", str(tmp_path / "frames.tsv"), str(out),
                    "--dna", str(tmp_path / "d.h5"), "--protein", str(tmp_path / "p.h5"),
                    "--validation", str(tmp_path / "v.json"), "--missing", str(tmp_path / "m.txt"),
                    "--chunk-length", "300", "--compat", "virnucpro"], check=True, capture_output=True)
    with open_embeddings(out) as merged:
        assert merged.read_ids() == ids and merged.embeddings.shape == (2, 5)
        # what predict checks a classifier against: a 500 bp classifier is refused on these features
        assert merged.attrs["chunk_length"] == 300 and merged.attrs["compat"] == "virnucpro"


def test_an_error_is_one_line_naming_the_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "virnucflow", "prepare", str(tmp_path / "absent.fa"),
                           str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"virnucflow prepare: error: {tmp_path / 'absent.fa'}: file not found; "
                                        "check the path in the sample sheet"]


def test_merge_checks_the_shards_against_their_fasta_and_says_so_in_one_line(tmp_path):
    ids = ["r1_chunk_1F1"]
    (tmp_path / "frames.tsv").write_text(FRAMES_HEADER + "r1_chunk_1F1\tr1\t1\t+\t1\t0\t3\t1\t0\n")
    (tmp_path / "0.fna").write_text(">r1_chunk_1F1\nACGTAC\n")
    (tmp_path / "0.faa").write_text(">r1_chunk_1F1\nMK\n")
    sha = {ext: hashlib.sha256((tmp_path / f"0.{ext}").read_bytes()).hexdigest() for ext in ("fna", "faa")}
    write_embeddings(tmp_path / "d.h5", ids, np.ones((1, 3)), {"kind": "dna", "input_sha256": sha["fna"]})
    write_embeddings(tmp_path / "p.h5", ids, np.ones((1, 2)), {"kind": "protein", "input_sha256": sha["faa"]})
    command = [sys.executable, "-m", "virnucflow", "merge", str(tmp_path / "frames.tsv"), str(tmp_path / "out.h5"),
               "--dna", str(tmp_path / "d.h5"), "--protein", str(tmp_path / "p.h5"),
               "--dna-fasta", str(tmp_path / "0.fna"), "--protein-fasta", str(tmp_path / "0.faa"),
               "--validation", str(tmp_path / "v.json"), "--missing", str(tmp_path / "m.txt"),
               "--chunk-length", "500", "--compat", "virnucpro"]
    assert subprocess.run(command, capture_output=True).returncode == 0
    (tmp_path / "0.faa").write_text(">r1_chunk_1F1\nMR\n")  # prepare rewrote the shard FASTA since
    proc = subprocess.run(command, capture_output=True, text=True)
    now = hashlib.sha256(b">r1_chunk_1F1\nMR\n").hexdigest()
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"virnucflow merge: error: {tmp_path / 'p.h5'} was computed from another "
                                        f"{tmp_path / '0.faa'} (sha256 {sha['faa'][:12]}.. != {now[:12]}.. now): "
                                        "delete it and rerun"]


def test_version_is_the_package_version():
    import virnucflow

    proc = subprocess.run([sys.executable, "-m", "virnucflow", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == f"virnucflow {virnucflow.__version__}\n"


def _subparsers(parser):
    import argparse

    return [(name, sub) for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name, sub in action.choices.items()]


def test_every_option_has_help_and_states_its_default_once():
    import argparse

    parser = build_parser()
    missing, twice = [], []
    for name, sub in [("virnucflow", parser)] + _subparsers(parser):
        formatter = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not (action.help or "").strip():
                missing.append(label)
                continue
            shown = formatter._expand_help(action)  # the help as --help prints it
            if shown.lower().count("default") > 1:
                twice.append(f"{label}: {shown}")
    assert not missing, f"options without help: {missing}"
    assert not twice, f"default stated twice: {twice}"


def test_the_report_names_the_version_that_made_it(tmp_path):
    import virnucflow
    from virnucflow.report import write_summary_html

    write_summary_html([{"sample": "s1", "reads": 3}], tmp_path / "summary.html")
    assert f"<p>Made by virnucflow {virnucflow.__version__}.</p>" in (tmp_path / "summary.html").read_text()



def _makefile():
    """The Makefile's rules as {target: (prerequisites, recipe lines)}."""
    import re
    from pathlib import Path

    rules, target = {}, None
    for line in (Path(__file__).resolve().parents[1] / "Makefile").read_text().splitlines():
        rule = re.match(r"^([^\s#:=]+):(?!=)(.*)$", line)
        if rule:
            target = rule[1]
            rules[target] = (rule[2].split(), [])
        elif line.startswith("\t") and target:
            rules[target][1].append(line.strip())
        elif line.strip() and not line.startswith("#"):
            target = None
    return rules


def test_make_help_lists_every_target_and_clean_keeps_the_results():
    rules = _makefile()
    phony = set(rules.pop(".PHONY")[0])
    listed = {line.split()[2] for line in rules["help"][1] if line.startswith('@echo "make ')}
    assert phony - {"help"} == listed, "every .PHONY target in `make help`, and nothing else"
    assert {target for target in rules if not target.startswith("$")} == phony, "every target in .PHONY"
    assert not any("results" in line for line in rules["clean"][1]), "make clean must keep results/"
    assert any("results" in line for line in rules["clean-results"][1])
