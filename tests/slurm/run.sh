#!/usr/bin/env bash
# `make slurm-test`: the demo workflow on a real single-node Slurm (Debian's slurmctld, slurmd,
# munge) whose node declares four fake GPUs, compared with a local run. A poller records what
# Slurm shows RUNNING every 0.3 s, so check.py can see embed jobs running at the same time on
# distinct GPUs. Then a job that Slurm gives a GPU but whose torch is CPU-only must fail unless
# --cpu-fallback. Runs as root; safe to run twice.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
state=${SLURM_TEST_DIR:-/tmp/virnucflow-slurm}
host=$(hostname -s)
say() { printf '\n== [%d s] %s\n' "$SECONDS" "$*"; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurmctld slurmd slurm-client munge (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

stop_daemons() {
  for name in slurmd slurmctld munged; do
    pidfile="$state/$name.pid"
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      pid=$(cat "$pidfile"); kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
}
# Our slurm.conf must not outlive the daemons: with a configuration and no controller, every
# snakemake start waits 10 s (snakemake-executor-plugin-slurm runs `scontrol show config` on import).
poller= local_pid=
unlink_config() {
  for pid in $poller $local_pid; do kill "$pid" 2>/dev/null || true; done
  stop_daemons
  for name in slurm.conf gres.conf; do
    [ "$(readlink "/etc/slurm/$name" 2>/dev/null)" = "$state/$name" ] && rm -f "/etc/slurm/$name"
  done
  return 0
}
trap unlink_config EXIT
stop_daemons  # a previous run's daemons, if it was killed
rm -rf "$state/ctld" "$state/spool" "$state/run"
mkdir -p "$state/ctld" "$state/spool" "$state/run" /etc/slurm /run/munge /var/log/munge /var/lib/munge

say "configuring a single-node Slurm on $host with four fake GPUs"
sed -e "s|@HOST@|$host|g" -e "s|@STATE@|$state|g" "$repo/tests/slurm/slurm.conf.in" > "$state/slurm.conf"
# Slurm wants one character (or block) device per GPU and refuses the same file twice ("duplicate
# device file name", slurmd exits); plain files are rejected too. Four distinct devices that every
# Linux has stand in: Slurm numbers them 0-3 in this order and exports the index it hands a job
# as CUDA_VISIBLE_DEVICES (no cgroups here, so indices are not renumbered per job).
for dev in null zero full urandom; do echo "NodeName=$host Name=gpu File=/dev/$dev"; done > "$state/gres.conf"
ln -sf "$state/slurm.conf" /etc/slurm/slurm.conf   # job steps (srun) read the default path
ln -sf "$state/gres.conf" /etc/slurm/gres.conf
[ -s /etc/munge/munge.key ] || { mkdir -p /etc/munge; dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; }
chown -R root:root /etc/munge /run/munge /var/log/munge /var/lib/munge; chmod 400 /etc/munge/munge.key
chmod 700 /etc/munge /var/lib/munge /var/log/munge; chmod 755 /run/munge

munged --force --pid-file "$state/munged.pid"
slurmctld -f "$state/slurm.conf"
slurmd -f "$state/slurm.conf"
for _ in $(seq 60); do
  sinfo -h -o %T 2>/dev/null | grep -qE '^idle' && break
  sleep 1
done
say "sinfo"; sinfo
sinfo -h -o %T | grep -qE '^idle' || { echo "Slurm node did not become idle"; cat "$state/slurmd.log" | tail -20; exit 1; }

work=$(mktemp -d /tmp/virnucflow-slurm-run.XXXX)
local_run=$(mktemp -d /tmp/virnucflow-local-run.XXXX)
for dir in "$work" "$local_run"; do
  cp -r "$repo"/{Snakefile,rules,scripts,config,envs,profiles,report,virnucflow} "$dir"/
done

# The local run (the reference) runs meanwhile: the Slurm run spends much of its time waiting.
say "local run of the same workflow, in the background (log: $local_run/snakemake.log)"
(cd "$local_run" && exec "$python" -m snakemake --workflow-profile none --cores 2 \
   --configfile config/demo.yaml "$repo/tests/slurm/config.yaml" > snakemake.log 2>&1) &
local_pid=$!

say "demo workflow through the slurm executor (Slurm's RUNNING jobs polled every 0.3 s)"
# One line per poll: "<epoch seconds> <job id>:<comment> ..." (the plugin puts the rule in the comment).
(while :; do
   printf '%s %s\n' "$(date +%s.%N)" "$(squeue -h -t R -o '%i:%k' 2>/dev/null | paste -sd' ' || echo squeue-failed)"
   sleep 0.3
 done) > "$work/squeue_running.txt" &
poller=$!
# This Slurm has no accounting database, so `sacct` cannot answer: status from squeue (the profile
# leaves the choice to the plugin, which takes sacct where it exists, as it does here).
(cd "$work" && "$python" -m snakemake --profile profiles/slurm --configfile config/demo.yaml "$repo/tests/slurm/config.yaml" \
   --slurm-status-command squeue \
   --slurm-init-seconds-before-status-checks 2 --seconds-between-status-checks 2 --latency-wait 5 2>&1 | tee snakemake.log) || {
  tail -30 "$state/slurmctld.log"; exit 1; }
kill "$poller"; poller=
say "sbatch submissions of the embed jobs"
grep -E "submitted with SLURM jobid|Job .* has been submitted" "$work/snakemake.log" | head -50 || true

say "GPU requests as Slurm recorded them (scontrol show job)"
scontrol show job -o > "$work/scontrol.txt"
grep -oE "Comment=rule_[a-z_]+|TresPerJob=[^ ]+|TresPerNode=[^ ]+" "$work/scontrol.txt" | paste -sd' ' \
  | sed 's/ Comment=/\nComment=/g' | sort | uniq -c

say "a job that Slurm gives a GPU, with a CPU-only torch: fails without --cpu-fallback, runs with it"
shard=$(ls "$work"/work/*/shards/*.fna | head -1)
for mode in strict fallback; do
  flag=; [ "$mode" = fallback ] && flag=--cpu-fallback
  (cd "$work" && srun --gpus=1 --cpus-per-task=1 --mem=2000 "$python" -m virnucflow embed "$shard" "$work/$mode.h5" \
     --kind dna --model resources/demo_models/dnabert_s_tiny --device auto --threads 1 $flag) \
     > /dev/null 2> "$work/$mode.stderr" && echo 0 > "$work/$mode.rc" || echo $? > "$work/$mode.rc"
  echo "$mode (${flag:-no flag}): exit status $(cat "$work/$mode.rc")"
  grep -E "error|WARNING" "$work/$mode.stderr" || true
done

say "waiting for the local run"
wait "$local_pid" || { tail -30 "$local_run/snakemake.log"; exit 1; }
local_pid=

say "checks"
"$python" "$repo/tests/slurm/check.py" "$work" "$local_run"
rm -rf "$work" "$local_run"
say "done"
