"""Tutorials in notebooks/ run top to bottom."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.py"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, capsys):
    runpy.run_path(str(path), run_name="__main__")
    assert "true value" in capsys.readouterr().out or path.stem != "quickstart"
