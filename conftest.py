"""Test-wide settings: tests never write to the project's own MLflow store, and nothing reaches a hub."""

from __future__ import annotations

import os
import sys

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


@pytest.fixture(autouse=True)
def _mlflow_uris_do_not_leak() -> object:
    """``mlflow.set_tracking_uri`` / ``set_registry_uri`` also export MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI:
    a test that calls them (directly, or through ``load_router``) would point every later test -- and every
    process they start, notebook kernels included -- at its own store. Restore both after each test."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {name: os.environ.get(name) for name in names}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if "mlflow" in sys.modules:  # the module-level URIs mlflow keeps beside the environment
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        tracking_utils._tracking_uri = saved["MLFLOW_TRACKING_URI"]
        registry_utils._registry_uri = saved["MLFLOW_REGISTRY_URI"]
