"""A stand-in Slurm and LSF for the real Snakemake executor plugins (tests/test_profiles.py): an empty
cluster that starts every submitted job at once, in the background, on this machine.

`install(bin_dir, state_dir)` writes sbatch, srun, squeue, sacct, sacctmgr, sshare, scancel, sinfo,
scontrol (Slurm) and bsub, bjobs, bkill, bhist, badmin, lsclusters (LSF) into bin_dir; put it first on
PATH. Every call is recorded in state_dir/calls.jsonl ({"command", "argv", "jobid"}); each job's start
and end go to state_dir/ledger in the format of tests/cluster/submit.sh (tests/cluster/ledger.py reads
both), and the status commands answer from there: PENDING/PEND before a job starts, RUNNING/RUN while
it runs, then COMPLETED/DONE or FAILED/EXIT by its exit status.

A job runs as the scheduler would run it: Slurm's `--wrap` command (or the script on stdin) in the
`-D` folder with SLURM_JOB_ID set, LSF's command (bsub's last argument) in the `-cwd` folder with
LSB_JOBID set; its output goes to the `--output` / `-o` file. The fake srun runs its command as it is
(the slurm-jobstep executor wraps every job in `srun -n1 ... <command>`).
"""

import fcntl
import fnmatch
import getpass
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

SLURM = ["sbatch", "srun", "squeue", "sacct", "sacctmgr", "sshare", "scancel", "sinfo", "scontrol"]
LSF = ["bsub", "bjobs", "bkill", "bhist", "badmin", "lsclusters"]
ACCOUNTS = ["proj"]  # what sacctmgr lists as this user's Slurm accounts
LSF_CLUSTER = "fakecluster"
LSF_DEFAULT_QUEUE = "normal"


def install(bin_dir, state_dir):
    """Write the fake commands into `bin_dir`, with their state (ledger, jobs, LSF config) in `state_dir`."""
    bin_dir, state = Path(bin_dir), Path(state_dir).resolve()
    bin_dir.mkdir(parents=True, exist_ok=True)
    (state / "jobs").mkdir(parents=True, exist_ok=True)
    params = state / "lsf/conf/lsbatch" / LSF_CLUSTER / "configdir/lsb.params"
    params.parent.mkdir(parents=True, exist_ok=True)
    params.write_text(f"Begin Parameters\nDEFAULT_QUEUE = {LSF_DEFAULT_QUEUE}  # default\nEnd Parameters\n")
    for name in SLURM + LSF:
        path = bin_dir / name
        path.write_text(
            "#!/bin/sh\n"
            f"FAKE_SCHEDULER_DIR={shlex.quote(str(state))} exec {shlex.quote(sys.executable)} "
            f"{shlex.quote(str(Path(__file__).resolve()))} {name} \"$@\"\n"
        )
        path.chmod(0o755)
    return bin_dir


def calls(state_dir, command=None):
    """The recorded calls ({"command", "argv", "jobid"}), of one command or all."""
    path = Path(state_dir, "calls.jsonl")
    lines = path.read_text().splitlines() if path.exists() else []
    return [call for call in map(json.loads, lines) if command in (None, call["command"])]


# --- the commands ---------------------------------------------------------------------------------

def _state():
    return Path(os.environ["FAKE_SCHEDULER_DIR"])


def _locked_append(path, text):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(text)


def _record(command, argv, jobid=None):
    entry = {"command": command, "argv": argv, "jobid": jobid}
    _locked_append(_state() / "calls.jsonl", json.dumps(entry) + "\n")


def _new_jobid():
    with open(_state() / "counter", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        jobid = int(handle.read() or 1000) + 1
        handle.seek(0)
        handle.truncate()
        handle.write(str(jobid))
    return str(jobid)


def _option(argv, *names):
    """The value of the first of `names` in argv (`--name value`, `--name=value` or `-n value`)."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg[len(name) + 1:]
    return None


def _submit(command, argv, name, rule, job_command, workdir, output, id_variables):
    jobid = _new_jobid()
    job = {"name": name, "rule": rule, "command": job_command, "workdir": workdir,
           "output": output.replace("%j", jobid).replace("%J", jobid),
           "env": {variable: jobid for variable in id_variables}}
    path = _state() / "jobs" / f"{jobid}.json"
    path.with_suffix(".tmp").write_text(json.dumps(job))
    os.replace(path.with_suffix(".tmp"), path)  # whole, for the status commands that read it meanwhile
    _record(command, argv, jobid)
    # Detached, with nothing of ours open: the plugin reads sbatch's output until every holder closes it.
    subprocess.Popen([sys.executable, __file__, "_run", jobid], start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
    return jobid


def _run(jobid):
    """The job itself, in the background: start and end in the ledger, as submit.sh writes them."""
    state = _state()
    job = json.loads((state / "jobs" / f"{jobid}.json").read_text())
    (state / "jobs" / f"{jobid}.pid").write_text(str(os.getpid()))
    ledger = state / "ledger"
    _locked_append(ledger, f"start {time.time():.6f} {job['rule']} {jobid}\n")
    env = dict(os.environ, **job["env"])
    env.pop("CUDA_VISIBLE_DEVICES", None)  # the fake cluster hands out no GPU: device auto computes on the CPU
    Path(job["output"]).parent.mkdir(parents=True, exist_ok=True)
    with open(job["output"], "w") as out:
        status = subprocess.run(["/bin/sh", "-c", job["command"]], cwd=job["workdir"], env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT).returncode
    _locked_append(ledger, f"end {time.time():.6f} {job['rule']} {jobid} {status}\n")


def _states(names):
    """{jobid: 'pending' | 'running' | 'done' | 'failed'} of the jobs whose name matches `names`."""
    state = _state()
    started, ended, lines = set(), {}, []
    if (state / "ledger").exists():
        with open(state / "ledger") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            lines = handle.read().splitlines()
    for line in lines:
        event, _, _, jobid, *status = line.split()
        if event == "start":
            started.add(jobid)
        else:
            ended[jobid] = int(status[0])
    found = {}
    for path in sorted((state / "jobs").glob("*.json")):
        jobid = path.stem
        if not names(json.loads(path.read_text())["name"]):
            continue
        if jobid in ended:
            found[jobid] = "done" if ended[jobid] == 0 else "failed"
        else:
            found[jobid] = "running" if jobid in started else "pending"
    return found


def _kill(jobids):
    for jobid in jobids:
        pid = _state() / "jobs" / f"{jobid}.pid"
        if pid.exists():
            try:
                os.killpg(int(pid.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass


SLURM_STATES = {"pending": "PENDING", "running": "RUNNING", "done": "COMPLETED", "failed": "FAILED"}
LSF_STATES = {"pending": "PEND", "running": "RUN", "done": "DONE", "failed": "EXIT"}


def sbatch(argv):
    comment = _option(argv, "--comment") or ""
    rule = re.sub(r"_wildcards_.*", "", comment.removeprefix("rule_")) or "unknown"
    wrap = _option(argv, "--wrap")
    job_command = wrap if wrap is not None else sys.stdin.read()  # `sbatch ... /dev/stdin`
    output = os.path.abspath(_option(argv, "--output", "-o") or "slurm-%j.out")
    jobid = _submit("sbatch", argv, _option(argv, "--job-name", "-J"), rule, job_command,
                    _option(argv, "-D", "--chdir") or os.getcwd(), output, ["SLURM_JOB_ID", "SLURM_JOBID"])
    print(jobid)  # --parsable


def srun(argv):
    _record("srun", argv, os.environ.get("SLURM_JOB_ID"))
    command = list(argv)
    while command and command[0].startswith("-"):
        command.pop(0)
    os.execvp(command[0], command)


def squeue(argv):
    _record("squeue", argv)
    name = _option(argv, "--name", "-n")
    for jobid, status in _states(lambda job: name is None or job == name).items():
        print(f"{jobid}|{SLURM_STATES[status]}")


def sacct(argv):
    _record("sacct", argv)
    if "-o" in argv and _option(argv, "-o").lower().startswith("account"):
        return  # the plugin's account guess (sacct -nu USER -o Account): no history here
    if "-j" in argv:  # the node of a failed job
        print("fakenode")
        return
    name = _option(argv, "--name")
    for jobid, status in _states(lambda job: name is None or job == name).items():
        print(f"{jobid}|{SLURM_STATES[status]}")


def sacctmgr(argv):
    _record("sacctmgr", argv)
    print("\n".join(ACCOUNTS))


def sshare(argv):
    _record("sshare", argv)
    print("\n".join(ACCOUNTS))


def scancel(argv):
    _record("scancel", argv)
    _kill(arg for arg in argv if arg.isdigit())


def sinfo(argv):
    _record("sinfo", argv)
    print("PARTITION\ndebug*\ngpu")


def scontrol(argv):
    _record("scontrol", argv)
    if argv[:2] == ["show", "config"]:
        print("MaxArraySize            = 1001\nMinJobAge               = 300 sec")


def bsub(argv):
    name = _option(argv, "-J") or ""
    match = re.match(r"Snakemake_(?:rule|group)_([A-Za-z0-9_]+?)(?::|___)", name)
    output = os.path.abspath(_option(argv, "-o") or "lsf-%J.out")
    jobid = _submit("bsub", argv, name, match.group(1) if match else "unknown", argv[-1],
                    _option(argv, "-cwd") or os.getcwd(), output, ["LSB_JOBID"])
    print(f"Job <{jobid}> is submitted to queue <{_option(argv, '-q') or LSF_DEFAULT_QUEUE}>.")


def bjobs(argv):
    _record("bjobs", argv)
    pattern = _option(argv, "-J") or _option(argv, "-aJ") or "*"
    for jobid, status in _states(lambda job: fnmatch.fnmatchcase(job, pattern)).items():
        print(f"{jobid} {LSF_STATES[status]}")


def bkill(argv):
    _record("bkill", argv)
    _kill(arg for arg in argv if arg.isdigit())


def bhist(argv):
    _record("bhist", argv)  # the plugin's project guess: no history here


def badmin(argv):
    _record("badmin", argv)
    state = _state()
    print("MBD configuration at Thu Jan  1 00:00:00 2026")
    for key, value in {"LSF_UNIT_FOR_LIMITS": os.environ.get("FAKE_LSF_UNIT_FOR_LIMITS", "MB"),
                       "LSB_SHAREDIR": state / "lsf/share", "LSF_CONFDIR": state / "lsf/conf"}.items():
        print(f"    {key} = {value}")


def lsclusters(argv):
    _record("lsclusters", argv)
    print("CLUSTER_NAME   STATUS   MASTER_HOST   ADMIN   HOSTS  SERVERS")
    print(f"{LSF_CLUSTER}   ok   fakehost   {getpass.getuser()}   1   1")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "_run":
        _run(args[0])
    else:
        globals()[command](args)
