"""The router in the MLflow model registry: logging, registration, model cards, loading.

:func:`log_router` logs a trained router as a ``pyfunc`` model (code from
:mod:`training.pyfunc_model`, the router directory as an artifact -- no pickles), with a signature,
an input example, the held-out evaluation and a model card; with ``register`` it becomes a new
version of that registered model. :func:`download_router` turns ``models:/NAME@alias`` (or
``models:/NAME/3``) back into a :class:`~router.router.Router`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from training.tracking import setup

__all__ = ["download_router", "log_router", "model_card", "resolve_version"]

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


def model_card(router: Any, summary: dict[str, Any], test: Any | None = None) -> str:
    """A Markdown model card: data, metrics, intended use, limits."""
    meta = router.metadata
    held = summary.get("heldout", {})
    routers = held.get("routers", {}) if isinstance(held, dict) else {}
    r = routers.get("router", {}) if isinstance(routers, dict) else {}
    lines = [
        f"# Router model card: {meta.get('router_kind', type(router.quality).__name__)}",
        "",
        "## Data",
        f"- trained on `{meta.get('trained_on')}` ({meta.get('n_train')} prompts), split seed {meta.get('split_seed')}",
        f"- held-out: {summary.get('test_rows', 'n/a')} prompts",
        f"- models: {', '.join(router.models)}",
        "",
        "## Metrics (held-out split)",
        f"- AIQ: {r.get('aiq', 'n/a')}  (95% CI {r.get('aiq_ci', 'n/a')})",
        f"- cost saving at best single model's quality: {r.get('saving_at_best', 'n/a')}",
        f"- cost saving at 95% of it: {r.get('saving_at_95', 'n/a')}",
        f"- operating point: {router.operating_point.describe()}",
        "",
        "## Intended use",
        "Choosing, per request, which of the listed models answers, trading predicted quality against",
        "predicted cost and latency. Probabilities of every choice are returned for propensity logging.",
        "",
        "## Limits",
        "- Quality predictions are learned from the training data's prompts and labels; prompts unlike",
        "  them (other languages, tasks or formats) get less reliable predictions.",
        "- Costs are predicted from prompt length and learned answer lengths at the prices of training time;",
        "  recalibrate lambda when prices change.",
        "- Only the listed models can be chosen; adding a model needs retraining.",
    ]
    return "\n".join(lines) + "\n"


def log_router(router: Any, summary: dict[str, Any], *, register: str | None = None, test: Any | None = None,
               name: str = "router") -> dict[str, Any]:
    """Log ``router`` as a pyfunc model in the active run; register it when ``register`` is given.

    Returns ``{"model_uri", "version"}`` (version None when not registered).
    """
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    setup()
    with tempfile.TemporaryDirectory() as tmp:
        rdir = router.save(Path(tmp) / "router")
        example = pd.DataFrame({"prompt": [str(test.prompts[0]) if test is not None else "What is 2 + 2?"]})
        from training.pyfunc_model import RouterModel

        model = RouterModel()
        model.router = router
        output = model.predict(None, example)
        signature = infer_signature(example, output, params={"lam": float(router.rule.lam), "mu": float(router.rule.mu)})
        card = model_card(router, summary, test)
        (Path(tmp) / "model_card.md").write_text(card)
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(PYFUNC_CODE),
            artifacts={"router": str(rdir)},
            signature=signature,
            input_example=example,
            pip_requirements=["llm-routing-toolkit"],
        )
        mlflow.log_artifact(str(Path(tmp) / "model_card.md"))
        mlflow.log_text(json.dumps(summary, indent=2, default=str), "heldout_metrics.json")
    version = None
    if register:
        mv = mlflow.register_model(info.model_uri, register)
        version = mv.version
        client = mlflow.MlflowClient()
        client.update_model_version(register, version, description=card)
        held = summary.get("heldout", {}).get("routers", {}).get("router", {})
        for key in ("aiq", "saving_at_best", "saving_at_95"):
            if key in held:
                client.set_model_version_tag(register, version, f"heldout.{key}", str(held[key]))
        client.set_model_version_tag(register, version, "dataset", str(router.metadata.get("dataset")))
    return {"model_uri": info.model_uri, "version": version}


def resolve_version(name: str, ref: str) -> Any:
    """The ModelVersion of ``name`` for a version number or an alias (``champion``, ``@champion``)."""
    import mlflow

    setup()
    client = mlflow.MlflowClient()
    ref = ref.lstrip("@")
    if ref.isdigit():
        return client.get_model_version(name, ref)
    return client.get_model_version_by_alias(name, ref)


def download_router(spec: str, dst: str | Path | None = None) -> Any:
    """A :class:`Router` from a directory or ``models:/NAME@alias`` / ``models:/NAME/VERSION``."""
    from router.registry_io import load_router

    setup()
    return load_router(spec, dst=dst)
