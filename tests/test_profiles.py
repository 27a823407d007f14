"""The cluster profiles through the real Snakemake executor plugins (slurm, lsf) on a stand-in cluster.

tests/cluster/fake_scheduler.py puts sbatch/srun/squeue/sacct/... and bsub/bjobs/badmin/... first on
PATH: each submission is recorded and its job started at once in the background, and the status
commands answer from the stand-in's ledger. The demo runs through `profiles/slurm` and `profiles/lsf`
as a user would run it; the tests check what every job asked the scheduler for against what the job
needs (its threads and resources as Snakemake printed them), and that the results equal a local run.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from cluster.fake_scheduler import calls, install
from conftest import copy_workflow

TESTS = Path(__file__).resolve().parent
DEVICE_AUTO = TESTS / "data/device_auto.yaml"
# Embed jobs on two threads (the demo has one: a profile that ignores threads would go unnoticed), in
# shards larger than the demo's, so the runs stay short: 2 samples, one shard each, 4 embed jobs.
OVERLAY = {"embed": {"threads": 2}, "shard_residues": 100_000}
# Snakemake caps threads at the cores of the machine it runs on (profiles/default: `cores: all`)
EMBED_THREADS = min(2, len(os.sched_getaffinity(0)))
# Status checks every second, not every minute (test settings, not the profiles')
FAST = ["--seconds-between-status-checks", "1", "--latency-wait", "5"]


def overlay(folder):
    path = Path(folder) / "overlay.yaml"
    path.write_text(yaml.safe_dump(OVERLAY))
    return path


def start(workdir, command, configfiles=(), env=None):
    """The demo in `workdir`, in the background, with Snakemake's log in workdir/snakemake.log."""
    with open(workdir / "snakemake.log", "w") as log:
        return subprocess.Popen([sys.executable, "-m", "snakemake", *command, "--configfile", "config/demo.yaml",
                                 *map(str, configfiles), str(overlay(workdir))], cwd=workdir, env=env, stdout=log,
                                stderr=subprocess.STDOUT)


def on_fake_cluster(folder, profile, *extra, env=()):
    """Start the demo through `profile` (a profile folder, or a list of plain options) on a stand-in
    cluster of its own (records in folder/cluster)."""
    bin_dir = install(folder / "bin", folder / "cluster")
    environment = {key: value for key, value in os.environ.items() if key != "CUDA_VISIBLE_DEVICES"}
    environment.update(env, PATH=f"{bin_dir}:{environment['PATH']}")
    options = ["--profile", profile] if isinstance(profile, str) else list(profile)
    return start(folder / "run", [*options, *FAST, *extra], [DEVICE_AUTO], environment)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_models_dir):
    """The demo run three ways at the same time (the cluster runs mostly wait for status checks):
    locally (the reference), and through each profile with its site settings on the command line, as
    the profiles' comments say. {name: (run folder, Snakemake's log, the stand-in's records)}."""
    folders = {}
    for name in ("local", "slurm", "lsf", "plain"):
        folders[name] = tmp_path_factory.mktemp(name)
        shutil.copytree(demo_models_dir, copy_workflow(folders[name] / "run") / "resources")
    memfmt, processes = documented_memfmt(), {}
    try:
        processes["local"] = start(folders["local"] / "run", ["--cores", "2"])
        processes["slurm"] = on_fake_cluster(folders["slurm"], "profiles/slurm", "--default-resources",
                                             "slurm_partition=gpu", "slurm_account=proj",
                                             "--slurm-init-seconds-before-status-checks", "1")
        processes["lsf"] = on_fake_cluster(folders["lsf"], "profiles/lsf", "--default-resources", "lsf_queue=gpu",
                                           "lsf_project=proj", env=memfmt)
        # No profile at all, not even profiles/default: what the rules declare is all a job gets.
        processes["plain"] = on_fake_cluster(folders["plain"], ["--executor", "slurm", "--jobs", "20",
                                                                "--workflow-profile", "none"],
                                             "--slurm-init-seconds-before-status-checks", "1")
        for process in processes.values():
            process.wait(timeout=900)
    finally:
        for process in processes.values():
            process.kill()  # only those still running: a run that hangs
    return {name: (folders[name] / "run", (folders[name] / "run/snakemake.log").read_text(), folders[name] / "cluster",
                   process.returncode) for name, process in processes.items()}


def finished(runs, name):
    workdir, log, state, status = runs[name]
    assert status == 0, f"{name} run failed:\n{log[-4000:]}"
    return workdir, log, state


def documented_memfmt():
    """The variable and value that profiles/lsf tells users to export for per-job memory."""
    text = (TESTS.parent / "profiles/lsf/config.v8+.yaml").read_text()
    name, value = re.search(r"(\w*MEMFMT)=(perjob)", text).groups()
    return {name: value}


def submitted_jobs(log, scheduler):
    """{scheduler job id: (rule, threads, resources)} from Snakemake's log: each job's block (rule,
    jobid, threads, resources) and the line that says which scheduler job it became."""
    jobs, submitted, rule, jobid = {}, {}, None, None
    for line in log.splitlines():
        if match := re.match(r"(?:local)?(?:rule|checkpoint) (\w+):$", line):
            rule, jobid = match.group(1), None
        elif (match := re.match(r"    jobid: (\d+)$", line)) and rule:
            jobid = match.group(1)
            jobs[jobid] = [rule, 1, {}]
        elif (match := re.match(r"    threads: (\d+)$", line)) and jobid:
            jobs[jobid][1] = int(match.group(1))
        elif (match := re.match(r"    resources: (.*)$", line)) and jobid:
            jobs[jobid][2] = dict(item.split("=", 1) for item in match.group(1).split(", "))
        elif match := re.match(rf"Job (\d+) has been submitted with {scheduler} jobid (\d+)", line):
            submitted[match.group(2)] = tuple(jobs[match.group(1)])
    return submitted


def value_after(argv, flag):
    return argv[argv.index(flag) + 1] if flag in argv else None


def assert_same_results(run, reference):
    samples = sorted(path.parent.name for path in reference.glob("results/*/embeddings.h5"))
    assert samples == ["coding", "mixed"]
    for sample in samples:
        with h5py.File(reference / f"results/{sample}/embeddings.h5") as a, \
                h5py.File(run / f"results/{sample}/embeddings.h5") as b:
            assert list(a["sequence_ids"].asstr()) == list(b["sequence_ids"].asstr())
            assert np.array_equal(a["embeddings"][:], b["embeddings"][:])
        assert (run / f"results/{sample}/read_calls.tsv").read_text() == \
            (reference / f"results/{sample}/read_calls.tsv").read_text()
    assert (run / "results/report/summary.tsv").is_file()


def submissions(runs, name, scheduler, submit):
    """(run folder, the stand-in's records, {job id: (rule, threads, resources)}, {job id: submit argv},
    embed job ids) of a finished cluster run, every job submitted once, one embed job per shard and model."""
    workdir, log, state = finished(runs, name)
    jobs = submitted_jobs(log, scheduler)
    argvs = {call["jobid"]: call["argv"] for call in calls(state, submit)}
    assert set(argvs) == set(jobs)
    embeds = [jobid for jobid, (rule, *_) in jobs.items() if rule.startswith("embed_")]
    assert len(embeds) == 2 * len(list(workdir.glob("work/*/shards/*.faa")))
    return workdir, state, jobs, argvs, embeds


@pytest.mark.workflow
def test_slurm_profile_asks_for_what_each_job_needs(runs):
    workdir, state, jobs, sbatch, embeds = submissions(runs, "slurm", "SLURM", "sbatch")
    for jobid, argv in sbatch.items():
        rule, threads, resources = jobs[jobid]
        assert f"--cpus-per-task={threads}" in argv, (rule, argv)  # cpus = threads, nothing overrides them
        assert value_after(argv, "--mem") == resources["mem_mb"], (rule, argv)  # MB, for the whole job
        assert value_after(argv, "-t") == resources["runtime"], (rule, argv)  # minutes
        assert value_after(argv, "-p") == "gpu" and value_after(argv, "-A") == "proj"
        gpus = [arg for arg in argv if arg.startswith(("--gpus", "--gres"))]
        assert gpus == (["--gpus=1"] if jobid in embeds else []), (rule, argv)
    assert {jobs[jobid][1] for jobid in embeds} == {EMBED_THREADS}
    # Inside each job the slurm-jobstep executor starts the job step with the same CPUs and GPU.
    for call in calls(state, "srun"):
        rule, threads, _ = jobs[call["jobid"]]
        assert f"--cpus-per-task={threads}" in call["argv"]
        assert ("--gpus=1" in call["argv"]) == rule.startswith("embed_")
    # Job status from sacct, as the plugin chooses where sacct exists (the profile does not force squeue).
    assert any("--name" in call["argv"] for call in calls(state, "sacct"))
    assert not calls(state, "squeue")
    assert_same_results(workdir, finished(runs, "local")[0])


@pytest.mark.workflow
def test_lsf_profile_asks_for_what_each_job_needs(runs):
    workdir, state, jobs, bsub, embeds = submissions(runs, "lsf", "LSF", "bsub")
    for jobid, argv in bsub.items():
        rule, threads, resources = jobs[jobid]
        assert value_after(argv, "-n") == str(threads), (rule, argv)
        # Per job, in the cluster's unit (LSF_UNIT_FOR_LIMITS = MB here), as the profile says to ask.
        memory = [re.fullmatch(r"rusage\[mem=([\d.]+)\]", arg) for arg in argv]
        assert [float(m.group(1)) for m in memory if m] == [float(resources["mem_mb"])], (rule, argv)
        assert value_after(argv, "-W") == resources["runtime"], (rule, argv)
        assert value_after(argv, "-q") == "gpu" and value_after(argv, "-P") == "proj"
        assert (value_after(argv, "-gpu") == "num=1") == (jobid in embeds), (rule, argv)
    assert {jobs[jobid][1] for jobid in embeds} == {EMBED_THREADS}
    assert_same_results(workdir, finished(runs, "local")[0])


@pytest.mark.workflow
def test_a_plain_slurm_executor_without_a_profile_submits_every_job_with_memory_and_runtime(runs):
    workdir, state, jobs, sbatch, embeds = submissions(runs, "plain", "SLURM", "sbatch")
    for jobid, argv in sbatch.items():
        rule, threads, resources = jobs[jobid]
        assert int(value_after(argv, "--mem")) == int(resources["mem_mb"]) >= 1000, (rule, argv)
        assert int(value_after(argv, "-t")) == int(resources["runtime"]) >= 10, (rule, argv)
    assert_same_results(workdir, finished(runs, "local")[0])


def test_profiles_keep_only_site_settings():
    """What a job needs comes from the rules: the profiles carry no memory, time or CPU counts that
    would override them, and no setting the plugins do not read."""
    for name in ("slurm", "lsf"):
        profile = yaml.safe_load((TESTS.parent / f"profiles/{name}/config.v8+.yaml").read_text())
        resources = [profile.get("default-resources") or {}, *(profile.get("set-resources") or {}).values()]
        assert not {key for each in resources for key in each} & {"mem_mb", "runtime", "disk_mb", "cpus_per_task",
                                                                  "threads", "mem_mb_per_cpu"}
        assert not {"slurm-no-account", "slurm-status-command", "groups", "group-components"} & set(profile)


def test_cpu_embed_jobs_ask_no_gpu(finished_demo_copy):
    """device: cpu (the demo's): embed jobs take no GPU slot, locally or from Slurm. (A finished run: past
    the prepare checkpoint, a dry run that reruns the embed jobs shows every one.)"""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile", "profiles/slurm", "--configfile",
                           "config/demo.yaml", "--forcerun", "embed_dna", "embed_protein"], cwd=finished_demo_copy,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = re.findall(r"rule (embed_\w+):\n(?:    .*\n)*?    resources: (.*)\n", proc.stdout)
    assert len(jobs) == 14 and all("gpu=1" not in resources.split(", ") for _, resources in jobs)
