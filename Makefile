# virnucflow: `make demo` runs the workflow on the bundled reads with tiny models; `make test` runs the tests.
PYTHON ?= python3
# CPU build by default; on a GPU machine: make setup TORCH="torch==2.13.0 --index-url <your CUDA wheel index>"
TORCH ?= torch==2.13.0
CORES ?= 2
VENV := .venv
BIN := $(VENV)/bin
SNAKEMAKE := $(BIN)/snakemake

.PHONY: help setup demo test test-slow lint bench slurm-test download-models clean

help:
	@echo "make demo             set up .venv and run the workflow on config/example with tiny models"
	@echo "make test             set up .venv and run the test suite (lint included)"
	@echo "make test-slow        kill-and-resume matrix, the GPU checks on the CPU, other long checks"
	@echo "make slurm-test       run the demo on a real single-node Slurm (installs Debian packages)"
	@echo "make bench            run the benchmarks (results in benchmarks/results/, summary in BENCHMARKS.md)"
	@echo "make download-models  fetch the published models into the local caches (login node, needs internet)"

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . || $(BIN)/pip install --quiet --no-deps -e .
	touch $@

demo: setup
	$(SNAKEMAKE) --configfile config/demo.yaml --cores $(CORES)
	$(SNAKEMAKE) --configfile config/demo.yaml --report results/report.html
	@echo "demo finished: results/*/embeddings.h5, results/*/read_calls.tsv, results/report.html"

lint: setup
	$(SNAKEMAKE) --lint --configfile config/demo.yaml
	$(BIN)/snakefmt --check Snakefile rules/

test: setup lint
	$(BIN)/pytest -m "not slow"

test-slow: setup
	$(BIN)/pytest -m slow
	VIRNUCFLOW_TEST_DEVICE=cpu $(BIN)/pytest tests/test_gpu.py  # the GPU checks through the CPU paths

bench: setup
	$(BIN)/python benchmarks/run_all.py

slurm-test: setup
	bash tests/slurm/run.sh

download-models: setup
	$(BIN)/python -m virnucflow download-models

clean:
	rm -rf work results logs resources .snakemake
