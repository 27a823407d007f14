#!/usr/bin/env bash
# A stand-in batch scheduler for Snakemake's cluster-generic executor (tests/test_cluster.py): an
# empty cluster that starts every job script at once, in the background, and records in LEDGER when
# each job started and ended, as a scheduler's accounting would.
# Usage (Snakemake appends the job script): submit.sh LEDGER JOBSCRIPT
ledger=$1
script=${*: -1}
rule=$(sed -n 's/^# properties = .*"rule": "\([A-Za-z_0-9]*\)".*/\1/p' "$script")
(
  echo "start $(date +%s.%N) $rule $BASHPID" >> "$ledger"
  bash "$script" > "$script.out" 2>&1
  echo "end $(date +%s.%N) $rule $BASHPID $?" >> "$ledger"
) > /dev/null 2>&1 &
echo $!
