"""Every rule says what its jobs need (mem_mb, runtime, disk_mb where it writes big files), so that a
site profile, a plain `--executor slurm` or a `module` user submits each job with enough memory and
time; the figures grow with the attempt and with what the job processes."""

import re
import subprocess
import sys

from virnucflow.job_resources import (
    PUBLISHED_WEIGHT_BYTES,
    embed_disk_mb,
    embed_mem_mb,
    embed_runtime,
    merge_mem_mb,
    prepare_mem_mb,
    stream_runtime,
)


def test_the_published_models_get_what_they_load():
    esm2_3b, dnabert_s = PUBLISHED_WEIGHT_BYTES["protein"], PUBLISHED_WEIGHT_BYTES["dna"]
    assert 24_000 <= embed_mem_mb(esm2_3b) <= 40_000  # 11.4 GB of fp32 weights, read then built
    assert 2_000 <= embed_mem_mb(dnabert_s) <= 4_000
    # A default shard (10M residues, ~12 MB of protein FASTA) of ESM-2 3B on a GPU: minutes, not hours.
    assert 15 <= embed_runtime(esm2_3b, 12e6, on_gpu=True) <= 60
    assert embed_runtime(esm2_3b, 12e6, on_gpu=False, threads=4) > 24 * 60  # the CPU is no place for it


def test_every_figure_grows_with_the_attempt_and_the_input():
    for figure in (lambda a: embed_mem_mb(1e9, a), lambda a: embed_runtime(1e9, 1e7, True, 1, a),
                   lambda a: embed_disk_mb(1e7, 2560, a), lambda a: merge_mem_mb(10_000, 3328, a),
                   lambda a: prepare_mem_mb(1e10, a), lambda a: stream_runtime(1e10, a)):
        assert figure(1) < figure(2) < figure(3)
    assert embed_disk_mb(2e7, 2560) > embed_disk_mb(1e7, 2560) and prepare_mem_mb(2e10) > prepare_mem_mb(1e10)
    assert merge_mem_mb(20_000, 3328) > merge_mem_mb(10_000, 3328)


def dry_run_resources(workdir, *force):
    """{rule: [resources of each job]} that `snakemake -n` plans with no profile at all."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", *force, "--workflow-profile", "none",
                           "--configfile", "config/demo.yaml"], cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = {}
    for rule, resources in re.findall(r"(?:rule|checkpoint) (\w+):\n(?:    .*\n)*?    resources: (.*)\n",
                                      proc.stdout):
        jobs.setdefault(rule, []).append(dict(item.split("=", 1) for item in resources.split(", ")))
    return jobs


def test_every_submitted_job_declares_memory_and_runtime_without_a_profile(finished_demo_copy):
    prepared = finished_demo_copy  # past the prepare checkpoint, so a dry run shows every embed job
    jobs = {**dry_run_resources(prepared, "--forceall"),  # the checkpoint planned again: no embed job shown
            **dry_run_resources(prepared, "--forcerun", "embed_dna", "embed_protein")}
    assert len(jobs["embed_dna"]) == 7 and len(jobs["embed_protein"]) == 7
    for rule, each in jobs.items():
        for resources in each if rule != "all" else ():  # the target rule runs nothing
            assert int(resources.get("mem_mb", 0)) >= 1000 and int(resources.get("runtime", 0)) >= 10, (rule, resources)
    for rule in ("embed_dna", "embed_protein", "merge"):
        assert all(int(resources["disk_mb"]) >= 100 for resources in jobs[rule])


def test_local_jobs_are_not_submitted():
    """tabulate_embed_jobs and demo_models run beside the Snakemake process, not as cluster jobs."""
    from pathlib import Path

    rules = "".join(path.read_text() for path in (Path(__file__).parents[1] / "rules").glob("*.smk"))
    local = set(re.findall(r"localrules:\n((?:    \w+,\n)+)", rules))
    names = {name.strip(" ,\n") for block in local for name in block.splitlines()}
    assert {"tabulate_embed_jobs", "demo_models"} <= names


def test_every_rule_gets_ready_callables_that_snakemake_can_call():
    """The rules read their resources from one table (virnucflow.job_resources): each value a callable
    whose first parameter is the wildcards and whose others are what Snakemake passes by name."""
    import inspect

    from virnucflow.job_resources import rule_resources
    from virnucflow.schema import defaults

    table = rule_resources(defaults(), on_gpu=True)
    assert {"prepare", "embed_dna", "embed_protein", "merge", "streaming"} <= set(table)
    for rule, resources in table.items():
        for name in ("mem_mb", "runtime", "disk_mb"):
            value = getattr(resources, name)
            if value is None:
                continue
            params = list(inspect.signature(value).parameters)
            assert params[0] == "wildcards" and set(params[1:]) <= {"input", "threads", "attempt"}, (rule, name)
