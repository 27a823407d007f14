#!/usr/bin/env bash
# `make slurm-test`: the demo workflow on a real single-node Slurm (Debian's slurmctld, slurmd,
# munge), with a fake GPU, compared with a local run. Runs as root; safe to run twice.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
state=${SLURM_TEST_DIR:-/tmp/virnucflow-slurm}
host=$(hostname -s)
say() { printf '\n== %s\n' "$*"; }

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
unlink_config() {
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

say "configuring a single-node Slurm on $host with one fake GPU"
sed -e "s|@HOST@|$host|g" -e "s|@STATE@|$state|g" "$repo/tests/slurm/slurm.conf.in" > "$state/slurm.conf"
echo "NodeName=$host Name=gpu File=/dev/null" > "$state/gres.conf"
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

say "demo workflow through the slurm executor"
(cd "$work" && "$python" -m snakemake --profile profiles/slurm --configfile config/demo.yaml "$repo/tests/data/device_auto.yaml" \
   --slurm-init-seconds-before-status-checks 2 --latency-wait 5 2>&1 | tee snakemake.log) || {
  cat "$state/slurmctld.log" | tail -30; exit 1; }
say "sbatch submissions of the embed jobs"
grep -E "submitted with SLURM jobid|Job .* has been submitted" "$work/snakemake.log" | head -50 || true

say "GPU requests as Slurm recorded them (scontrol show job)"
scontrol show job -o > "$work/scontrol.txt"
grep -oE "Comment=rule_[a-z_]+|TresPerJob=[^ ]+|TresPerNode=[^ ]+" "$work/scontrol.txt" | paste -sd' ' \
  | sed 's/ Comment=/\nComment=/g' | sort | uniq -c

say "local run of the same workflow"
(cd "$local_run" && "$python" -m snakemake --workflow-profile none --cores 2 --resources gpu=1 \
   --configfile config/demo.yaml "$repo/tests/data/device_auto.yaml" --quiet >/dev/null 2>&1)

say "checks"
"$python" "$repo/tests/slurm/check.py" "$work" "$local_run"
rm -rf "$work" "$local_run"
