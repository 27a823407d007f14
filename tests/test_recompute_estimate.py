"""With the embeddings not kept (the default with a classifier): a calls or merge setting redoes no
finished sample, and a dry run says what another classifier would cost before it costs it: the samples
whose merge and embed jobs Snakemake re-plans, and their GPU time."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import copy_workflow, run_snakemake

pytestmark = pytest.mark.workflow


def dry_run(workdir, settings):
    config = {**yaml.safe_load((workdir / "config/demo.yaml").read_text()), **settings}
    (workdir / "config/changed.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "config/changed.yaml"],
                          cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    said = proc.stdout + proc.stderr
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", said.split("Job stats:", 1)[-1].split("total", 1)[0], re.M))
    return said, {rule: int(n) for rule, n in jobs.items() if rule != "all"}


@pytest.mark.parametrize("keep_shards", [False, True])
def test_a_newer_classifier_is_named_with_the_embed_jobs_it_reruns(tmp_path, demo_models_dir, keep_shards):
    workdir = copy_workflow(tmp_path / "run")
    shutil.copytree(demo_models_dir, workdir / "resources")
    settings = {"keep_embeddings": None, "keep_shards": keep_shards}
    run_snakemake(workdir, config=settings)
    # the default with a classifier: embeddings.h5 deleted once scored, the calls kept
    assert not list(workdir.glob("results/*/embeddings.h5")) and len(list(workdir.glob("results/*/read_calls.tsv"))) == 2
    said, jobs = dry_run(workdir, settings)
    assert "what this run recomputes" not in said and not jobs  # nothing changed: nothing said
    demo = yaml.safe_load((workdir / "config/demo.yaml").read_text())
    for merge in ({"dtype": "float16"}, {"allow_missing": True}):  # merge.* redoes no finished sample
        assert dry_run(workdir, {**settings, "merge": {**demo["merge"], **merge}})[1] == {}
    # a calls setting reruns the calls alone: they are made from predictions.tsv, not the embeddings
    assert dry_run(workdir, {**settings, "calls": {**demo["calls"], "min_virus_score": 0.9}})[1] == {
        "calls": 2, "virus_reads": 2, "virus_reads_table": 1, "report_plots": 1}

    # the same classifier again, newer (as a download gives): Snakemake re-plans nothing (its input,
    # embeddings.h5, is a deleted temporary file), and nothing is said
    os.utime(workdir / "resources/demo_models/classifier_tiny.pth")
    said, jobs = dry_run(workdir, settings)
    assert "what this run recomputes" not in said and not jobs
    shutil.copy(workdir / "resources/demo_models/classifier_tiny.pth", workdir / "resources/retrained.pth")
    said, jobs = dry_run(workdir, {**settings, "classifier": "resources/retrained.pth"})
    lines = [line for line in said.splitlines() if "was made with another classifier" in line]
    assert len(lines) == 2  # both samples
    if keep_shards:
        assert all("from the kept shards (no GPU work)" in line for line in lines)
        assert "embed_dna" not in jobs and jobs["merge"] == 2
    else:
        named = sum(int(re.search(r"and (\d+) embed jobs before it: about .+ of GPU", line).group(1)) for line in lines)
        assert named == jobs["embed_dna"] + jobs["embed_protein"] == 14  # what Snakemake plans, named beforehand
