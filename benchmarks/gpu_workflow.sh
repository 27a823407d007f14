#!/usr/bin/env bash
# Issue 12, item 3: the whole workflow on the GPU machine, as ONE device call after `make gpu-wheels` here:
#   run(command="bash benchmarks/gpu_workflow.sh", carry=[".whl"], timeout_s=600)
# Snakemake and its dependencies travel as wheels in .whl/ (the GPU image has torch, h5py, matplotlib ...
# but no snakemake and no package index). What the run must show: benchmarks/GPU_RUN.md.
# Arguments go on to benchmarks/gpu_workflow.py (a smoke run here: PY=.venv/bin/python bash benchmarks/gpu_workflow.sh
# --device cpu --esm2 650m --layers 1 --reads 100 --timeout 120).
set -uo pipefail
PY=${PY:-python3}
OUT=${OUT:-/tmp/gpu_workflow_out}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing .whl failed"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1   # the jobs import virnucflow from here
{ nvidia-smi; $PY -c "import torch, snakemake; print('torch', torch.__version__, 'snakemake', snakemake.__version__)"; } \
  > "$OUT/machine.txt" 2>&1
# 50k reads of 500 bp with ESM-2 3B: ~1 min to write the models, ~3-5 min of workflow; the timeouts leave
# the call's last 40 s for the files to come back.
timeout 555 $PY -m benchmarks.gpu_workflow --reads 50000 --timeout 450 --dir /tmp --out "$OUT/gpu_workflow.md" \
  "$@" 2>&1 | tee "$OUT/gpu_workflow.log"
echo "== benchmarks.gpu_workflow: exit ${PIPESTATUS[0]}" | tee -a "$OUT/gpu_workflow.log"
