"""The router as an MLflow ``pyfunc`` model, logged as *code* (MLflow's models-from-code), not a pickle.

Input: a DataFrame with a ``prompt`` column (text) and optionally ``messages`` (a JSON list of chat
messages, used when ``prompt`` is empty). Params (optional): ``lam``, ``mu`` (their defaults in the
signature are the router's operating point, which decides when they are left as they are), ``max_cost``,
``max_latency``. Output: one row per prompt with ``chosen_model``, ``propensity``,
``probabilities`` (JSON object model -> probability), ``predicted_cost`` (USD of the chosen model),
``predicted_quality`` and ``reason``.

The router directory travels as the artifact ``router``; ``load_context`` rebuilds it with
:meth:`router.router.Router.load`.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import numpy as np
import pandas as pd


class RouterModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
    """pyfunc wrapper around :class:`router.router.Router`."""

    def load_context(self, context: Any) -> None:
        from router.router import Router

        self.router = Router.load(context.artifacts["router"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "prompt" not in frame.columns and "messages" not in frame.columns:
            raise ValueError("input needs a 'prompt' column (text) or a 'messages' column (JSON chat messages).")
        prompts: list[Any] = []
        for i in range(len(frame)):
            text = frame["prompt"].iloc[i] if "prompt" in frame.columns else None
            if isinstance(text, str) and text.strip():
                prompts.append(text)
            elif "messages" in frame.columns and isinstance(frame["messages"].iloc[i], str):
                prompts.append(json.loads(frame["messages"].iloc[i]))
            else:
                raise ValueError(f"row {i}: give a non-empty 'prompt' or 'messages'.")
        rule = self.router.rule
        # the signature's defaults are the router's operating point: those values mean "as saved"
        p = {k: v for k, v in (params or {}).items()
             if v is not None and not (k in ("lam", "mu") and float(v) == float(getattr(rule, k)))}
        d = self.router.route(prompts, lam=p.get("lam"), mu=p.get("mu"), max_cost=p.get("max_cost"),
                              max_latency=p.get("max_latency"))
        rows = np.arange(len(d))
        return pd.DataFrame({
            "chosen_model": d.chosen,
            "propensity": d.propensity,
            "probabilities": [json.dumps(dict(zip(d.models, map(float, pr), strict=True))) for pr in d.probabilities],
            "predicted_cost": d.cost[rows, d.chosen_index],
            "predicted_quality": d.quality[rows, d.chosen_index],
            "reason": d.reasons,
        })


mlflow.models.set_model(RouterModel())
