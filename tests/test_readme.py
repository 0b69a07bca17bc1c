"""The README's "Using it" commands for the demo data run exactly as printed.

The commands are read from the first ``bash`` block under ``## Using it`` (continuation lines joined),
in order, from a scratch directory (``datasets/`` linked to the checkout's, the project on
``PYTHONPATH``, MLflow in the test store). The only change is the interpreter: ``.venv/bin/python`` is
the one running the tests. The RouterBench block below it is not run here (minutes of encoding and
training on this machine); ``tests/test_knobs.py`` checks RouterBench's knobs with a fast router.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ".venv/bin/python"


def readme_commands(section: str = "## Using it") -> list[str]:
    """The commands of the first ``bash`` block after ``section`` in README.md, one string each."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(section)
    block = re.search(r"```bash\n(.*?)```", text[start:], flags=re.S)
    assert block is not None, f"no bash block under {section!r}"
    commands: list[str] = []
    pending = ""
    for line in block.group(1).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        commands.append(pending.strip())
        pending = ""
    return commands


def test_readme_commands_are_parsed():
    cmds = readme_commands()
    assert all(c.startswith(PYTHON + " -m ") for c in cmds), cmds
    assert not any("[" in c for c in cmds), "optional parts in brackets do not run as printed"
    assert not any("routerbench" in c for c in cmds)
    assert any(" route " in c and "--lambdas" not in c and "--sweep" not in c for c in cmds)


@pytest.mark.slow
def test_readme_demo_commands_run_as_printed(tmp_path):
    (tmp_path / "datasets").symlink_to(ROOT / "datasets", target_is_directory=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for cmd in readme_commands():
        argv = shlex.split(cmd)
        assert argv[0] == PYTHON
        r = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=1200)
        if argv[1:3] == ["-m", "training"] and argv[3] == "promote" and r.returncode == 1:
            # a refusal is a decision too (exit 1 by design); the latency check depends on the machine's load
            assert "refused:" in r.stdout + r.stderr, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
            continue
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    # what the commands wrote fits together: one decision per prompt at the operating point, scored
    import polars as pl

    decisions = pl.read_parquet(tmp_path / "out" / "decisions.parquet")
    assert decisions.height == 12 and decisions["operating_point"].all()
    assert (tmp_path / "out" / "sweep.csv").exists()
    metrics = json.loads((tmp_path / "out" / "demo-report" / "metrics.json").read_text())
    assert {"router", "demo-decisions"} <= set(metrics["routers"])
    op = metrics["routers"]["router"]["operating_point"]
    assert op["target"] == {"kind": "QualityTarget", "fraction": 0.95, "confidence": 0.9} and op["met"] is True
