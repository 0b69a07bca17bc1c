"""``python -m router route``: batch routing of a JSON-lines file of prompts.

Input: JSON lines with ``prompt_id`` and either ``prompt`` (text) or ``messages`` (a chat: a list of
``{"role", "content"}``). Output (Parquet, or CSV/JSONL by extension): one row per prompt per
setting with ``prompt_id``, ``setting``, ``chosen_model``, then for every candidate ``p:<model>``
(probability), ``q:<model>`` (predicted quality) and ``cost:<model>`` (predicted USD), then ``lam``
and ``propensity`` (the chosen model's probability). Without ``--lambdas`` it sweeps a grid wide enough to trace the whole cost-quality
curve, from the best model to the cheapest.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from router.errors import ConfigError, DataError, SourceNotFoundError

__all__ = ["add_parser", "read_prompts", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("route", help="route a JSONL file of prompts with a saved router",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="router directory (or models:/NAME@alias)")
    p.add_argument("--input", required=True, help="JSON lines with prompt_id and prompt or messages")
    p.add_argument("--output", required=True, help="decisions file (.parquet, .csv or .jsonl)")
    p.add_argument("--lambdas", default=None,
                   help="comma-separated lambdas (quality points per USD); default: a full sweep")
    p.add_argument("--models", default=None, help="comma-separated model names to restrict the pool to")
    p.set_defaults(func=run)


def read_prompts(path: str | Path) -> tuple[list[str], list[Any]]:
    """(prompt_ids, prompts) from a JSONL file; errors name the line."""
    p = Path(path)
    if not p.exists():
        raise SourceNotFoundError(f"{p}: no such input file.")
    ids: list[str] = []
    prompts: list[Any] = []
    seen: set[str] = set()
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}:{lineno}: not valid JSON ({exc.msg}).") from None
            if not isinstance(row, dict) or "prompt_id" not in row:
                raise DataError(f"{p}:{lineno}: each line needs a 'prompt_id' and a 'prompt' or 'messages'.")
            pid = str(row["prompt_id"])
            if pid in seen:
                raise DataError(f"{p}:{lineno}: duplicate prompt_id {pid!r}; ids must be unique.")
            seen.add(pid)
            if isinstance(row.get("prompt"), str) and row["prompt"].strip():
                prompts.append(row["prompt"])
            elif isinstance(row.get("messages"), list) and row["messages"]:
                prompts.append(row["messages"])
            else:
                raise DataError(f"{p}:{lineno}: prompt_id {pid!r} has neither a non-empty 'prompt' nor 'messages'.")
            ids.append(pid)
    if not ids:
        raise DataError(f"{p}: no prompts found.")
    return ids, prompts


def _parse_lambdas(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--lambdas must be comma-separated numbers, got {text!r}.") from None
    if not values or any(v < 0 or not np.isfinite(v) for v in values):
        raise ConfigError(f"--lambdas must be finite numbers >= 0, got {text!r}.")
    return values


def run(args: argparse.Namespace) -> int:
    from router.registry_io import load_router

    router = load_router(args.model)
    ids, prompts = read_prompts(args.input)
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    pool = list(models) if models is not None else list(router.models)
    emb, lengths = router.embed(prompts)
    lams, choices, probs, q = router.sweep(embeddings=emb, lengths=lengths, lambdas=_parse_lambdas(args.lambdas),
                                           models=models)
    _, c_all, _ = router.predict(embeddings=emb, lengths=lengths)
    cols = [router.models.index(m) for m in pool]
    c = c_all[:, cols]
    frames = []
    n = len(ids)
    for s, lam in enumerate(lams):
        data: dict[str, Any] = {
            "prompt_id": ids,
            "setting": [f"lam={lam:g}"] * n,
            "chosen_model": [pool[j] for j in choices[s]],
        }
        for j, name in enumerate(pool):
            data[f"p:{name}"] = probs[s, :, j]
        for j, name in enumerate(pool):
            data[f"q:{name}"] = q[:, j]
        for j, name in enumerate(pool):
            data[f"cost:{name}"] = c[:, j]
        data["lam"] = np.full(n, lam)
        data["propensity"] = probs[s, np.arange(n), choices[s]]
        frames.append(pl.DataFrame(data))
    out = pl.concat(frames)
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        out.write_csv(path)
    elif path.suffix in (".jsonl", ".ndjson"):
        out.write_ndjson(path)
    else:
        out.write_parquet(path)
    print(json.dumps({"output": str(path), "prompts": n, "settings": len(lams), "rows": out.height,
                      "models": pool}))
    return 0
