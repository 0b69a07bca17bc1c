"""Test-wide settings: tests never write to the project's own MLflow store, and nothing reaches a hub."""

from __future__ import annotations

import os

import pytest

# the pyfunc entry module calls mlflow.models.set_model at import (MLflow's models-from-code); it is
# exercised by tests/test_lifecycle.py through MLflow, not imported for doctests
collect_ignore = ["training/pyfunc_model.py"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="session")
def _isolated_mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> None:
    store = tmp_path_factory.mktemp("mlruns")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
