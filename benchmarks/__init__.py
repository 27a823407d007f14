"""The project's benchmarks (`python -m benchmarks.NAME`, from the repository root) and the helpers the
tests share with them: seeded synthetic reads (`synthetic`), a copy of the workflow with its demo config
resized (`workflow`)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
