# virnucflow: `make demo` runs the workflow on the bundled reads with tiny models; `make test` runs the tests.
PYTHON ?= python3
# The torch release of the tests (requirements.txt pins the rest; the container and envs/ use the same).
TORCH ?= torch==2.13.0
# `make setup-gpu` reinstalls TORCH as a CUDA build from this index. PyPI's Linux x86_64 wheel is the
# CUDA 13 build (NVIDIA driver R580 or newer); for an older driver use the PyTorch index of a CUDA
# version it supports, e.g. TORCH_INDEX=https://download.pytorch.org/whl/cu126 (if it has this release).
TORCH_INDEX ?= https://pypi.org/simple
CORES ?= 2
VENV := .venv
BIN := $(VENV)/bin
SNAKEMAKE := $(BIN)/snakemake

.PHONY: help setup setup-gpu check-gpu demo test test-all test-slow lint bench gpu-wheels slurm-test download-models clean clean-results

help:
	@echo "make setup            create .venv with the pinned dependencies (every other target does this first)"
	@echo "make demo             set up .venv and run the workflow on config/example with tiny models"
	@echo "make test             the gate: lint, unit tests, the demo workflow once (a few minutes)"
	@echo "make test-all         the gate, then the whole-workflow checks (profiles, concurrency...), then test-slow"
	@echo "make lint             snakemake --lint and snakefmt --check on the Snakefile and rules/"
	@echo "make setup-gpu        .venv with torch as a CUDA build (TORCH_INDEX=...), then check-gpu"
	@echo "make check-gpu        print torch's version, its CUDA version and the GPUs it sees"
	@echo "make test-slow        kill-and-resume matrix, the GPU checks on the CPU, other long checks"
	@echo "make slurm-test       run the demo on a real single-node Slurm (installs Debian packages)"
	@echo "make bench            run the benchmarks (results in benchmarks/results/, summary in BENCHMARKS.md)"
	@echo "make gpu-wheels       snakemake and its needs as wheels in .whl/ for the project's GPU machine"
	@echo "make download-models  fetch the published models into the local caches (login node, needs internet)"
	@echo "make clean            remove work/, logs/ and .snakemake/; keeps results/ and resources/"
	@echo "make clean-results    make clean, then also remove results/ and resources/ (the demo models)"

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-jobs.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . || $(BIN)/pip install --quiet --no-deps -e .
	touch $@

# An installed 2.13.0+cpu satisfies torch==2.13.0, so torch is uninstalled first; its dependencies
# stay, and pip adds the CUDA ones (nvidia-*, several GB from PyPI).
setup-gpu: setup
	$(BIN)/pip uninstall --quiet --yes torch
	$(BIN)/pip install --quiet --index-url $(TORCH_INDEX) "$(TORCH)"
	$(MAKE) --no-print-directory check-gpu

check-gpu: setup
	$(BIN)/python -c 'import sys, torch; n = torch.cuda.device_count(); \
	print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPUs visible:", n); \
	[print(f"  cuda:{i}", torch.cuda.get_device_name(i)) for i in range(n)]; \
	n or print("  none here: fine on a login node; run make check-gpu on a GPU node"); \
	torch.version.cuda or sys.exit("this torch is a CPU-only build: run make setup-gpu")'

demo: setup
	$(SNAKEMAKE) --configfile config/demo.yaml --cores $(CORES)
	$(SNAKEMAKE) --configfile config/demo.yaml --report results/report.html
	@echo "demo finished: results/*/embeddings.h5, results/*/read_calls.tsv, results/*/virus_reads.fa.gz, results/virus_reads.tsv, results/report.html"

lint: setup
	$(SNAKEMAKE) --lint --configfile config/demo.yaml
	$(BIN)/snakefmt --check Snakefile rules/

# The gate: every unit test and one run of the demo workflow (tests marked workflow or slow are left to test-all).
test: setup lint
	$(BIN)/pytest -m "not slow and not workflow" --durations=15

test-all: test
	$(BIN)/pytest -m "workflow and not slow"
	$(MAKE) --no-print-directory test-slow

test-slow: setup
	$(BIN)/pytest -m slow
	VIRNUCFLOW_TEST_DEVICE=cpu $(BIN)/pytest tests/test_gpu.py  # the GPU checks through the CPU paths

bench: setup
	$(BIN)/python -m benchmarks.run_all

# For the project's GPU machine (no package index there): see benchmarks/gpu_workflow.sh.
gpu-wheels: setup
	$(BIN)/python tools/gpu_wheels.py

slurm-test: setup
	bash tests/slurm/run.sh

# What config/config.yaml names (CONFIG=my.yaml: that config on top of it), classifiers included.
download-models: setup
	$(BIN)/python -m virnucflow download-models $(if $(CONFIG),--configfile $(CONFIG))

# results/ (the calls) and resources/ go only when asked for by name.
clean:
	rm -rf work logs .snakemake

clean-results: clean
	rm -rf results resources
