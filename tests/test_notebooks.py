"""The tutorials in notebooks/ run top to bottom, and are committed without outputs.

Each notebook asserts its own key numbers in a cell, so a library change that breaks a tutorial fails
here. The kernel is this interpreter (the project's virtualenv), registered in a temporary kernelspec
whose environment puts this checkout first on the path, so the notebooks import the code under test
on a fresh clone where only ``make install`` ran, and gives BLAS / OpenMP one thread: on a small, busy
CI box two spinning BLAS threads make the tutorials' small matrix products several times slower.
How long each notebook takes is measured by ``bench/bench_notebooks.py`` (same kernel), not here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "routing-toolkit-test"
ONE_THREAD = {var: "1" for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def test_the_four_tutorials_are_there():
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart.ipynb", "02_bandit_policies.ipynb",
                                           "03_promote_and_serve.ipynb", "04_bring_your_own_logs.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [i for i, c in enumerate(nb["cells"])
             if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; strip them before committing (see README, Tutorials)."


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    """A kernelspec that runs this interpreter with this checkout first on sys.path."""
    jupyter = tmp_path_factory.mktemp("jupyter")
    spec = jupyter / "kernels" / KERNEL
    spec.mkdir(parents=True)
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           **ONE_THREAD}
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "routing toolkit (test)", "language": "python", "env": env,
    }))
    return jupyter


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_dir, monkeypatch, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=600, allow_errors=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError (with the cell and traceback) when a cell fails
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 1, f"{path.name}: no plot was rendered inline"
