"""The cluster profiles as Snakemake reads them: resources per rule, GPU requests for embed jobs only."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_snakemake

DEVICE_AUTO = Path(__file__).parent / "data/device_auto.yaml"


def dry_run(workdir, profile, device_auto=True):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--profile", profile, "--configfile", "config/demo.yaml",
         *([str(DEVICE_AUTO)] if device_auto else [])],
        cwd=workdir, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = re.findall(r"(?:rule|checkpoint) (\w+):\n(?:    .*\n)*?    resources: (.*)\n", proc.stdout)
    return [(rule, dict(item.split("=", 1) for item in resources.split(", "))) for rule, resources in jobs]


@pytest.fixture
def prepared(demo_workdir):
    """The demo with its prepare checkpoint done, so a dry run shows every embed job."""
    run_snakemake(demo_workdir, targets=["work/coding/frames.tsv", "work/mixed/frames.tsv"])
    return demo_workdir


def test_lsf_profile_renders_gpu_requests_for_embed_jobs(prepared):
    jobs = dry_run(prepared, "profiles/lsf")
    embeds = [(rule, res) for rule, res in jobs if rule.startswith("embed_")]
    assert len(embeds) == 14  # 7 shards, 2 models
    for rule, resources in embeds:
        assert resources["lsf_extra"] == "-gpu num=1" and resources["gpu"] == "1"
        assert int(resources["mem_mb"]) >= 24000 and int(resources["runtime"]) >= 120
    others = [res for rule, res in jobs if not rule.startswith("embed_") and rule != "all"]
    assert others and all("lsf_extra" not in res for res in others)


def test_slurm_profile_scales_resources_and_asks_gpus_for_embed_jobs_only(prepared):
    jobs = dry_run(prepared, "profiles/slurm")
    by_rule = {}
    for rule, resources in jobs:
        by_rule.setdefault(rule, resources)
    assert by_rule["embed_protein"]["gpu"] == "1" and by_rule["embed_protein"]["mem_mb"] == "48000"
    assert by_rule["embed_dna"]["cpus_per_task"] == "4"
    assert "gpu" not in by_rule["merge"] and by_rule["merge"]["mem_mb"] == "2000"


def test_cpu_embed_jobs_ask_no_gpu(prepared):
    """device: cpu (the demo's): embed jobs take no GPU slot, locally or from Slurm."""
    jobs = dry_run(prepared, "profiles/slurm", device_auto=False)
    embeds = [res for rule, res in jobs if rule.startswith("embed_")]
    assert len(embeds) == 14 and all(res.get("gpu", "0") == "0" for res in embeds)
