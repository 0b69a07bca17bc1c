"""MLflow tracking shared by every ``python -m training`` command.

* Default store: SQLite at ``<project>/mlruns/mlflow.db`` (absolute path) with artifacts under
  ``<project>/mlruns/artifacts/<experiment>``; any ``MLFLOW_TRACKING_URI`` (e.g. a remote tracking
  server) is honoured instead.
* Every run logs its ``Args`` (``vars(args)``) as parameters, the git commit and package versions as
  tags, the dataset lineage (source, content hash, row counts, split seed) and namespaced metrics in
  batches (one ``log_batch`` call per group, never one call per step).

mlflow is imported only inside these functions: importing :mod:`training` stays cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import subprocess
import time
from collections.abc import Iterator, Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

__all__ = [
    "PROJECT_ROOT",
    "default_tracking_uri",
    "ensure_experiment",
    "git_commit",
    "log_lineage",
    "log_metrics",
    "package_versions",
    "run",
    "run_label",
    "setup",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_PACKAGES = ("numpy", "polars", "torch", "sentence-transformers", "faiss-cpu", "mlflow", "optuna", "gymnasium",
             "litellm", "model2vec", "llm-routing-toolkit")


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else SQLite under the project's ``mlruns/``
    (:func:`router.registry_io.tracking_uri`, the one resolver)."""
    from router.registry_io import tracking_uri

    return tracking_uri()


def _artifact_root() -> Path:
    uri = default_tracking_uri()
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).parent / "artifacts"
    return PROJECT_ROOT / "mlruns" / "artifacts"


def setup() -> str:
    """Point mlflow at the tracking store; returns the URI."""
    import mlflow

    from router.registry_io import quiet_local_store

    uri = default_tracking_uri()
    quiet_local_store(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    """The experiment id of ``name``, created with an explicit artifact location when missing."""
    import mlflow

    setup()
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = (_artifact_root() / name).resolve()
    location.mkdir(parents=True, exist_ok=True)
    return str(mlflow.create_experiment(name, artifact_location=location.as_uri()))


def dataset_label(dataset: str) -> str:
    """A short name for a data set: a registered name as is, a path by its file (or folder) name."""
    p = Path(dataset)
    if len(p.parts) <= 1 and not p.suffix:
        return dataset
    stem = p.stem if p.suffix else p.name
    return p.parent.name if stem in ("outcomes", "data", "") and p.parent.name else stem


def run_label(command: str, dataset: str, **parts: Any) -> tuple[str, dict[str, str]]:
    """The run name and tags that say what ran: the command, the data and the parts (predictor, encoder, ...).

    Example:
        >>> name, tags = run_label("fit", "datasets/demo/outcomes.parquet", predictor="knn", encoder="static")
        >>> name, tags["predictor"]
        ('fit-demo-knn-static', 'knn')
    """
    shown = [str(v) for v in parts.values() if v not in (None, "")]
    label = dataset_label(dataset)
    name = "-".join([command, *([label] if label != command else []), *shown])
    tags = {"command": command, "dataset": dataset, **{k: str(v) for k, v in parts.items() if v not in (None, "")}}
    return name, tags


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=5, check=False)
        commit = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def _params_of(args: Any) -> dict[str, str]:
    raw = dataclasses.asdict(args) if dataclasses.is_dataclass(args) and not isinstance(args, type) else dict(vars(args))
    return {k: str(v)[:6000] for k, v in raw.items()}


@contextlib.contextmanager
def run(
    args: Any,
    *,
    experiment: str,
    run_name: str | None = None,
    nested: bool = False,
    tags: Mapping[str, str] | None = None,
) -> Iterator[Any]:
    """Start an MLflow run that logs ``vars(args)``, the git commit and package versions.

    A nested run lands in its parent's experiment (``experiment`` is used only without a parent).
    Yields the active ``mlflow.ActiveRun``.
    """
    import mlflow

    parent = mlflow.active_run() if nested else None
    exp_id = parent.info.experiment_id if parent is not None else ensure_experiment(experiment)
    all_tags = {"git_commit": git_commit(), "host": platform.node(), "cpu_count": str(os.cpu_count()),
                **{f"version.{k}": v for k, v in package_versions().items()}, **(tags or {})}
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, nested=nested, tags=all_tags) as active:
        if args is not None:
            mlflow.log_params(_params_of(args))
        yield active


def log_metrics(metrics: Mapping[str, float], *, step: int | None = None, prefix: str = "") -> None:
    """Log finite scalar metrics in one batch call (names namespaced with ``prefix``)."""
    import math

    import mlflow
    from mlflow.entities import Metric

    active = mlflow.active_run()
    if active is None:
        return
    now = int(time.time() * 1000)
    items = [
        Metric(f"{prefix}{k}", float(v), now, step or 0)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    ]
    client = mlflow.MlflowClient()
    for i in range(0, len(items), 900):
        client.log_batch(active.info.run_id, metrics=items[i : i + 900])


def log_series(name: str, values: Any, *, every: int = 1) -> None:
    """Log a curve (e.g. cumulative regret) as one metric with steps, in batches."""
    import mlflow
    from mlflow.entities import Metric

    active = mlflow.active_run()
    if active is None:
        return
    now = int(time.time() * 1000)
    items = [Metric(name, float(v), now, i) for i, v in enumerate(values) if i % every == 0]
    client = mlflow.MlflowClient()
    for i in range(0, len(items), 900):
        client.log_batch(active.info.run_id, metrics=items[i : i + 900])


def log_lineage(outcomes: Any, *, role: str, split_seed: int | None = None, split: str | None = None) -> dict[str, Any]:
    """Log where the data came from: source, content hash, rows, models, split; returns the dict."""
    import mlflow

    info = {
        f"data.{role}.source": outcomes.source,
        f"data.{role}.sha256": outcomes.content_hash(),
        f"data.{role}.rows": outcomes.n_prompts,
        f"data.{role}.models": ",".join(outcomes.models),
        f"data.{role}.dropped": outcomes.n_dropped,
        f"data.{role}.split": split or "",
        f"data.{role}.split_seed": "" if split_seed is None else split_seed,
    }
    if mlflow.active_run() is not None:
        mlflow.set_tags({k: str(v) for k, v in info.items()})
    return info
