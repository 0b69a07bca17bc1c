"""Load a saved router from a directory or from the MLflow model registry.

``load_router("out/my-router")`` reads a directory written by :meth:`Router.save`;
``load_router("models:/NAME@champion")`` (or ``models:/NAME/3``, ``runs:/ID/router``) downloads the
router that ``python -m training fit --register`` logged and loads it the same way. mlflow is
imported only for registry URIs, so the library stays free of it otherwise; serving uses this
function too.

The registry is ``MLFLOW_TRACKING_URI`` when set, else the project's default SQLite store
(``<project>/mlruns/mlflow.db``): :func:`tracking_uri` is the one place that decides, for the
library, the training commands (:mod:`training.tracking`) and serving alike.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from router.errors import PersistenceError

__all__ = ["load_router", "quiet_local_store", "registry_uri", "tracking_uri"]


def tracking_uri() -> str:
    """The MLflow tracking and registry store: ``MLFLOW_TRACKING_URI`` when set, else SQLite at
    ``<project>/mlruns/mlflow.db`` (the folder is created on first use)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    from router.data.paths import project_root

    store = project_root() / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(store / 'mlflow.db').resolve()}"


#: The registry is the tracking store (kept under this name for existing callers).
registry_uri = tracking_uri


def quiet_local_store(uri: str) -> None:
    """Turn off mlflow's artifact progress bars for a local store (SQLite or files), where copies are instant.

    A value of ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` set by the user is kept.
    """
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def load_router(spec: str | os.PathLike[str], *, dst: str | os.PathLike[str] | None = None) -> Any:
    """A :class:`~router.router.Router` from a directory or a ``models:/`` / ``runs:/`` URI."""
    from router.router import Router

    text = str(spec)
    if not text.startswith(("models:/", "runs:/")):
        return Router.load(text)
    import mlflow

    uri = tracking_uri()
    quiet_local_store(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    target = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="router-"))
    artifact = text.rstrip("/") if text.startswith("runs:/") else text.rstrip("/") + "/artifacts/router"
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=artifact, dst_path=str(target))
    except mlflow.exceptions.MlflowException as exc:
        raise PersistenceError(f"cannot load {text} from the registry at {uri}: {exc}") from exc
    return Router.load(local)
