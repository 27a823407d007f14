"""Temporaries: named after their writer, and removed by a later job only once that writer is gone."""

import logging
import os
import subprocess
import sys
import time

import pytest

from virnucflow import atomic
from virnucflow.atomic import atomic_open, remove_stale_temporaries, temporary_path, writer_gone
from virnucflow.jobs import job
from virnucflow.workfiles import WorkFolderWriter


def dead_pid():
    """The pid of a process of this host that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def temporary_of(path, host, pid, token="0123abcd", folder=False, age=0.0):
    stale = path.with_name(f".{path.name}.tmp.{host}.{pid}.{token}")
    if folder:
        (stale / "shards").mkdir(parents=True)
        (stale / "shards" / "0.faa").write_text(">a\nM\n")
    else:
        stale.write_text("half")
    if age:
        past = time.time() - age
        for each in [stale, *stale.rglob("*")]:
            os.utime(each, (past, past))
    return stale


def test_a_temporary_names_its_host_and_process_and_is_new_each_time(tmp_path):
    first, second = temporary_path(tmp_path / "out.tsv"), temporary_path(tmp_path / "out.tsv")
    assert first.parent == tmp_path and first != second
    assert first.name.startswith(f".out.tsv.tmp.{atomic.HOST}.{os.getpid()}.")


def test_a_writer_on_this_host_is_gone_exactly_when_its_process_is(tmp_path):
    out = tmp_path / "out.tsv"
    assert writer_gone(temporary_of(out, atomic.HOST, dead_pid()))
    # alive: never removed, however old (a local run has no scheduler that ends long jobs)
    assert not writer_gone(temporary_of(out, atomic.HOST, os.getpid(), token="ffff0000", age=1e6), 60)


def test_a_writer_on_another_host_is_gone_once_older_than_the_rules_runtime(tmp_path):
    out = tmp_path / "out.h5"
    young = temporary_of(out, "node7.cluster", 12, token="00000001", age=30)
    old = temporary_of(out, "node7.cluster", 13, token="00000002", age=3600)
    assert not writer_gone(young, max_age_seconds=600) and writer_gone(old, max_age_seconds=600)
    assert not writer_gone(old)  # no runtime given: never judged by age
    # a folder is as young as the newest file in it
    busy = temporary_of(out, "node7.cluster", 14, token="00000003", folder=True, age=3600)
    os.utime(busy / "shards" / "0.faa")
    assert not writer_gone(busy, max_age_seconds=600)


def test_an_older_releases_temporary_is_judged_by_age(tmp_path):
    """Before host and token were in the name, a temporary was `.{name}.tmp.{pid}`."""
    stale = tmp_path / ".out.tsv.tmp.4242"
    stale.write_text("half")
    assert not writer_gone(stale, 600)
    past = time.time() - 3600
    os.utime(stale, (past, past))
    assert writer_gone(stale, 600)


def test_only_the_stale_temporaries_of_the_given_output_are_removed(tmp_path):
    out = tmp_path / "calls.tsv"
    stale_file = temporary_of(out, atomic.HOST, dead_pid(), token="0000000a")
    stale_folder = temporary_of(out, atomic.HOST, dead_pid(), token="0000000b", folder=True)
    live = temporary_of(out, atomic.HOST, os.getpid(), token="0000000c")
    other_output = temporary_of(tmp_path / "calls.tsv.gz", atomic.HOST, dead_pid())
    assert sorted(remove_stale_temporaries(out)) == sorted([stale_file, stale_folder])
    assert not stale_file.exists() and not stale_folder.exists()
    assert live.exists() and other_output.exists()
    assert remove_stale_temporaries(out, every=True) == [live]  # under the output's lock: all of them


def test_a_job_removes_what_killed_jobs_left_of_its_outputs_before_it_writes(tmp_path, caplog):
    out = tmp_path / "results" / "predictions.tsv"
    out.parent.mkdir()
    stale = temporary_of(out, atomic.HOST, dead_pid())
    elsewhere = temporary_of(out, "node3", 99, age=7200)
    with caplog.at_level(logging.INFO, logger="virnucflow"), job("predict", tmp_path / "log", outputs=[out],
                                                                 max_age_seconds=3600):
        assert not stale.exists() and not elsewhere.exists()
        with atomic_open(out) as handle:
            handle.write("x\n")
    assert out.read_text() == "x\n" and [p.name for p in out.parent.iterdir()] == ["predictions.tsv"]
    assert f"removed {stale}, left by a killed job" in (tmp_path / "log").read_text()


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_open(tmp_path / "out.tsv") as handle:
        handle.write("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_prepare_writes_in_a_temporary_of_its_shards_folder(tmp_path):
    """So the next prepare of the sample finds what a killed one left (job outputs include the shards)."""
    with WorkFolderWriter(tmp_path / "work" / "s1", shard_residues=100) as work:
        assert work.tmp.parent == tmp_path / "work" / "s1" and work.tmp.name.startswith(".shards.tmp.")
        assert remove_stale_temporaries(tmp_path / "work" / "s1" / "shards") == []  # its writer is alive
    assert not (tmp_path / "work" / "s1").exists()  # left without finish: nothing behind
