"""ARCHITECTURE.md's layering, kept true: a module imports only from its own layer or below, and no
workflow stage imports another stage."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "virnucflow"
LAYERS = {
    "errors": 0, "atomic": 0, "scheduler": 0, "__init__": 0,
    "fasta": 1, "workfiles": 1, "embeddings": 1, "sidecar": 1, "samples": 1, "schema": 1, "embed_stats": 1,
    "provenance": 1, "snakemake_seams": 1, "checksums": 1, "rows": 1, "lease": 1,
    "frames": 1, "classifier": 1, "devices": 1, "batching": 1, "models": 1,
    "validation": 2, "virnucpro_pt": 2, "job_resources": 2, "estimate": 2, "plots": 2, "calls": 2,
    "sample_sheet": 2,
    "prepare": 3, "embed": 3, "merge": 3, "predict": 3, "report": 3, "preflight": 3, "virus_reads": 3,
    "cli": 4, "jobs": 4, "demo": 4, "parts": 4, "__main__": 4,
}
STAGES = {name for name, layer in LAYERS.items() if layer == 3}


def owner(path):
    """The layer key of a module file: its name, or 'models' for everything under models/."""
    relative = path.relative_to(PACKAGE)
    return "models" if relative.parts[0] == "models" else relative.stem


def imported(path):
    """Top-level package modules a module imports (relative or absolute), by layer key."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = list(path.relative_to(PACKAGE).parent.parts)[: len(path.relative_to(PACKAGE).parent.parts)
                                                                      - (node.level - 1)]
                parts = base + (node.module.split(".") if node.module else [])
                names.update([parts[0]] if parts else [alias.name for alias in node.names])
            elif node.module and node.module.startswith("virnucflow."):
                names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("virnucflow."))
    return names


def test_every_module_has_a_layer():
    modules = {owner(path) for path in PACKAGE.rglob("*.py")}
    assert modules <= set(LAYERS), f"add to ARCHITECTURE.md and LAYERS: {sorted(modules - set(LAYERS))}"


def test_imports_go_down_the_layers_and_stages_stay_apart():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = owner(path)
        for other in imported(path) - {me}:
            if other not in LAYERS:
                continue
            if LAYERS[other] > LAYERS[me]:
                wrong.append(f"{path.relative_to(PACKAGE)} (layer {LAYERS[me]}) imports {other} (layer {LAYERS[other]})")
            elif me in STAGES and other in STAGES:
                wrong.append(f"stage {me} imports stage {other}")
    assert not wrong, "\n".join(wrong)
