#!/usr/bin/env bash
# The GPU checks and figures of issue 12 in ONE device run of at most 9.5 minutes (the device tool
# allows 10 per command): each step has its own timeout, and the timeouts (with their kill grace)
# add up to 566 s. Needs python3 with torch (CUDA), numpy, h5py, tokenizers, safetensors and
# pytest, as the GPU image has (transformers for the Hugging Face row: optional; no snakemake).
# Results go to $OUT (the device tool's folder) or ./gpu_results: at most 8 files (the tool's limit).
# benchmarks/GPU_RUN.md says what each must show.
#
#   bash benchmarks/gpu_check.sh            # PEAK_TFLOPS=989 (H100/H200 SXM dense bf16), SEQUENCES=8000
#   SMOKE=1 bash benchmarks/gpu_check.sh    # on a CPU: every step at toy sizes (--device cpu, 1 layer)
set -uo pipefail
out=${OUT:-gpu_results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
log="$out/gpu_check.log"
sequences=${SEQUENCES:-8000}
peak=${PEAK_TFLOPS:-989}
if [ -n "${SMOKE:-}" ]; then  # the same steps on a CPU, tiny: checks this script, not a figure
  device=(--device cpu --layers 1); profile=(--device cpu --layers 1 --budget 2048 --no-compile)
  load=(--device cpu --layouts hf); tests=(env VIRNUCFLOW_TEST_DEVICE=cpu); sequences=40
  tests_only=(-k "queued or refuses")  # the CPU reference paths of the others take minutes here
  baseline=500
else
  device=(--device cuda); profile=(--device cuda); load=(--device cuda --layouts hf --compiled); tests=(env)
  tests_only=()
  baseline=50000
fi
# step NAME SECONDS COMMAND...: the command under its own timeout (SIGTERM, SIGKILL 1 s later), logged
step() {
  local name=$1 seconds=$2; shift 2
  local start=$SECONDS
  echo "== $name (timeout ${seconds} s)" | tee -a "$log"
  timeout --kill-after=1 "$seconds" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - start)) s$([ "$rc" = 124 ] && echo ' (TIMED OUT)')" | tee -a "$log"
}
# step NAME TIMEOUT: 10 + 140 + 140 + 55 + 120 + 95 = 560 s, + 6 x 1 s of kill grace = 566 s < 570 s
step "machine" 10 sh -c 'nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "
import torch
print(\"torch\", torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else \"no CUDA\")
try:
    import transformers
    print(\"transformers\", transformers.__version__)
except ImportError as exc:
    print(\"no transformers: no Hugging Face rows\", exc)"'
step "tests/test_gpu.py: bf16 paths against fp32, compiled layers, no host sync, head size 12, embed jobs" 140 \
  "${tests[@]}" python3 -m pytest -q -p no:cacheprovider --durations=12 "${tests_only[@]}" tests/test_gpu.py
step "throughput: ESM-2 3B, every path, HF transformers in the same run" 140 \
  python3 -m benchmarks.embed --gpu --all --models esm2-3b "${device[@]}" --sequences "$sequences" \
  --baseline-tokens "$baseline" --peak-tflops "$peak" --out "$out/embed_esm2_3b.md"
step "profile: one ESM-2 3B batch, eager and compiled" 55 \
  python3 -m benchmarks.gpu_profile "${profile[@]}" --out "$out/profile_esm2_3b.md" --trace "$out/trace_esm2_3b.json.gz"
step "throughput: DNABERT-S 117M and ESM-2 650M, every path" 120 \
  python3 -m benchmarks.embed --gpu --all --models dnabert-s esm2-650m "${device[@]}" --sequences "$sequences" \
  --baseline-tokens "$baseline" --peak-tflops "$peak" --out "$out/embed_dnabert_s_esm2_650m.md"
step "fixed cost per job: load, copy, compile (cold and warm compiler cache)" 95 \
  python3 -m benchmarks.load "${load[@]}" --repeat 1 --out "$out/load.md"
echo "== done in $SECONDS s; files in $out: $(ls "$out" | tr '\n' ' ')" | tee -a "$log"
