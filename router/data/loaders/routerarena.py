"""RouterArena (RouteWorks/RouterArena) cached model results: ``cached_results/<model>.jsonl``.

Each line is one prompt answered by one model: ``global_index`` (e.g. ``"AIME_112"``, the prompt id),
``question`` (the full prompt), ``token_usage`` {input_tokens, output_tokens} and ``evaluation_result``
{``score``, ``metric``, ``inference_cost``}. The shipped data is RouterArena's ``sub_10`` split (809
prompts) answered by ``claude-3-haiku-20240307`` and ``gemini-2.0-flash-001``.

Quality: RouterArena's task metric score in [0, 1] -- 0/1 for multiple choice, exact match, code and math
tasks, graded for e.g. METEOR on translation and NarrativeQA (``quality_kind="score"`` unless all are 0/1).

Cost: ``inference_cost``, the USD RouterArena computed from the logged tokens and its price table
(``cost_kind="logged"``); token counts are returned too. Task = ``global_index`` without its trailing
number (e.g. ``MMLUPro_history``).

Dropped prompts (recorded with reasons): calls that failed (``success`` false or an ``error``), prompts some
model did not answer, and prompts where some model's score lies outside [0, 1] (one NarrativeQA METEOR
score of -0.033 in the shipped data, so 808 prompts remain).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from router.data.loaders._common import dropped, quality_kind_of, read_jsonl, resolve_path
from router.data.schema import DroppedRows, Outcomes
from router.data.validate import check_columns
from router.errors import SchemaError, SourceNotFoundError

__all__ = ["load_routerarena"]

SOURCE = "routerarena"


def _num(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SchemaError(f"{where}: expected a number, got {value!r}.")
    return float(value)


def _tokens(value: Any, where: str) -> float:
    return np.nan if value is None else _num(value, where)


def load_routerarena(path: str | os.PathLike[str] | None = None) -> Outcomes:
    """Load RouterArena's cached results.

    Args:
        path: the RouterArena folder (holding ``cached_results/``), the ``cached_results`` folder itself,
            or one ``<model>.jsonl`` file; default ``$ROUTING_DATA_DIR/routerarena``.
    """
    root = resolve_path(path, "routerarena", source=SOURCE)
    if root.is_file():
        files = [root]
    else:
        folder = root / "cached_results" if (root / "cached_results").is_dir() else root
        files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise SourceNotFoundError(f"{SOURCE}: no cached_results/<model>.jsonl files under {root}.")

    models = [f.stem for f in files]
    per_model: list[dict[str, dict[str, Any]]] = []
    failed: dict[str, str] = {}
    order: list[str] = []
    prompts: dict[str, str] = {}
    for f in files:
        rows: dict[str, dict[str, Any]] = {}
        for i, rec in enumerate(read_jsonl(f)):
            where = f"{f}: line {i + 1}"
            check_columns(rec.keys(), ["global_index", "question", "evaluation_result"], source=where)
            pid = str(rec["global_index"])
            if pid in rows:
                raise SchemaError(f"{where}: duplicate global_index {pid!r}; each prompt must appear once per model.")
            if pid not in prompts:
                order.append(pid)
                prompts[pid] = str(rec["question"])
            if rec.get("success") is False or rec.get("error"):
                failed.setdefault(pid, str(f))
                continue
            ev = rec["evaluation_result"]
            if not isinstance(ev, dict):
                raise SchemaError(f"{where}: 'evaluation_result' must be an object, got {ev!r}.")
            check_columns(ev.keys(), ["score", "inference_cost"], source=f"{where}: evaluation_result")
            usage = rec.get("token_usage") or {}
            rows[pid] = {
                "score": _num(ev["score"], f"{where}: evaluation_result.score"),
                "cost": _num(ev["inference_cost"], f"{where}: evaluation_result.inference_cost"),
                "in": _tokens(usage.get("input_tokens"), f"{where}: token_usage.input_tokens"),
                "out": _tokens(usage.get("output_tokens"), f"{where}: token_usage.output_tokens"),
            }
        per_model.append(rows)

    drops: list[DroppedRows] = []
    fail_ids = [p for p in order if p in failed]
    if fail_ids:
        drops.append(dropped("the call failed for some model (success=false or error set)", fail_ids))
    missing = [p for p in order if p not in failed and not all(p in rows for rows in per_model)]
    if missing:
        drops.append(dropped("prompt not answered by every model", missing))
    missing_set = set(missing)
    keep = [p for p in order if p not in failed and p not in missing_set]
    out_of_range = [p for p in keep if any(not 0.0 <= rows[p]["score"] <= 1.0 for rows in per_model)]
    if out_of_range:
        drops.append(dropped("some model's score is outside [0, 1] (metric bug, e.g. a negative METEOR score)",
                             out_of_range))
    bad_set = set(out_of_range)
    keep = [p for p in keep if p not in bad_set]

    def matrix(key: str) -> np.ndarray:
        return np.array([[rows[p][key] for rows in per_model] for p in keep], dtype=np.float64).reshape(
            len(keep), len(models))

    quality = matrix("score")
    tin, tout = matrix("in"), matrix("out")
    has_tokens = bool(np.isfinite(tin).all() and np.isfinite(tout).all())
    return Outcomes(
        prompt_ids=keep,
        prompts=[prompts[p] for p in keep],
        models=models,
        quality=quality,
        cost=matrix("cost"),
        tasks=[p.rsplit("_", 1)[0] if "_" in p else p for p in keep],
        input_tokens=tin if has_tokens else None,
        output_tokens=tout if has_tokens else None,
        source=SOURCE,
        quality_kind=quality_kind_of(quality),
        cost_kind="logged",
        dropped=tuple(drops),
    )
