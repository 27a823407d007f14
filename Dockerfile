# virnucflow image: the pinned Python set of the tests (requirements.txt, torch as TORCH in the Makefile)
# and the virnucflow package, on Python 3.11 (the tests' and envs/virnucflow.yaml's Python).
#
# No CUDA base image: PyPI's torch 2.13.0 for Linux x86_64 is the CUDA 13 build and brings its CUDA
# libraries as nvidia-* wheels; the one thing it needs from the host is the NVIDIA driver (R580 or
# newer), which `docker run --gpus all` and `apptainer exec --nv` mount into the container. A CUDA
# runtime image would add a second copy of those libraries and a Python other than the tests'.
# apptainer/virnucflow.def builds the same image with the same steps (tests/test_deploy.py checks both).
#
#   docker build -t ghcr.io/virnucflow/virnucflow:0.1.0 .      # from the repository root
#   docker run --rm --gpus all ghcr.io/virnucflow/virnucflow:0.1.0 python -c 'import torch; print(torch.cuda.device_count())'
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="virnucflow" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.description="VirNucPro viral identification (DNABERT-S + ESM-2) as a Snakemake workflow: the jobs' environment"

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

COPY requirements.txt requirements-jobs.txt pyproject.toml README.md LICENSE /opt/virnucflow/
COPY virnucflow /opt/virnucflow/virnucflow

RUN pip install torch==2.13.0 \
 && pip install -r /opt/virnucflow/requirements.txt \
 && pip install --no-deps /opt/virnucflow \
 && rm -rf /opt/virnucflow \
 && python -c 'import torch, virnucflow; print("virnucflow", virnucflow.__version__, "torch", torch.__version__, "CUDA", torch.version.cuda)'
