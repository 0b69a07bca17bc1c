"""The module boundaries of ARCHITECTURE.md hold, and importing the packages does no heavy work."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "router": {"training", "envs", "serve"},
    "envs": {"training", "serve"},
    "serve": {"training", "envs"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_arrows_point_one_way(package):
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN[package])
        for p in (ROOT / package).rglob("*.py")
        if _imports(p) & FORBIDDEN[package]
    }
    assert not offenders, f"{package} must not import {sorted(FORBIDDEN[package])}: {offenders}"


def test_importing_the_library_loads_nothing_heavy():
    code = (
        "import sys, json\n"
        "import router, router.router, router.data, router.data.registry, router.encoders, router.predictors,"
        " router.policies, router.metrics, router.ope, router.decision, router.calibration, router.registry_io, envs\n"
        "from router import registry\n"
        "_ = [registry.kinds(f) for f in registry.FAMILIES]  # discovery imports every component module\n"
        "heavy = ['torch', 'sentence_transformers', 'litellm', 'mlflow', 'faiss', 'model2vec', 'optuna']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
