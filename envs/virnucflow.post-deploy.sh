#!/usr/bin/env bash
# Installs this workflow's virnucflow package into the conda env of envs/virnucflow.yaml.
# Snakemake (--sdm conda) runs it once, right after `conda env create`, with the new env active, from a
# copy in .snakemake/conda/ and in Snakemake's working directory: so the workflow folder is found there,
# or in VIRNUCFLOW_SOURCE when snakemake runs elsewhere (--directory) or the workflow is used as a module.
# The install is editable: jobs import the code beside the Snakefile, as the main process does, and a
# change to that code needs no new env (a new env is made when this file or the yaml changes).
set -euo pipefail

source_dir="${VIRNUCFLOW_SOURCE:-$PWD}"
if ! grep -qs '^name = "virnucflow"' "$source_dir/pyproject.toml"; then
    echo "virnucflow post-deploy: '$source_dir' is not the virnucflow workflow folder (no pyproject.toml" \
        "of virnucflow there). Run snakemake from the workflow folder, or export" \
        "VIRNUCFLOW_SOURCE=/path/to/virnucflow before it creates the conda env." >&2
    exit 1
fi
python -m pip install --quiet --no-deps --no-build-isolation --editable "$source_dir"
python -c 'import virnucflow; print("virnucflow", virnucflow.__version__, "installed from", virnucflow.__file__)'
