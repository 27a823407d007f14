#!/usr/bin/env bash
# The GPU checks and figures in one device run (a few minutes on one H100/H200). Needs python3 with
# torch (CUDA), numpy, h5py, tokenizers, safetensors and pytest, as the GPU image has; no snakemake.
# Results go to $OUT (the device tool's folder) or ./gpu_results; copy the table into BENCHMARKS.md.
#
#   bash benchmarks/gpu_check.sh            # PEAK_TFLOPS=989 (H100/H200 SXM dense bf16), SEQUENCES=20000
set -uo pipefail
out=${OUT:-gpu_results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } | tee "$out/gpu.txt"
echo "== packed bf16 against padded and fp32, embed jobs on the device"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/test_gpu.log"
echo "== throughput: DNABERT-S 117M, ESM-2 650M and 3B (random weights), bf16 packed vs fp32 padded"
timeout 420 python3 benchmarks/embed.py --gpu --sequences "${SEQUENCES:-20000}" --peak-tflops "${PEAK_TFLOPS:-989}" \
  --out "$out/embed_gpu.md" 2>&1 | tee "$out/embed_gpu.log"
echo "== per-job fixed cost on the GPU: model load, copy, DNABERT-S's packed-kernel compile"
timeout 120 python3 benchmarks/load.py --device cuda --repeat 1 --out "$out/load_gpu.md" 2>&1 | tee "$out/load_gpu.log"
