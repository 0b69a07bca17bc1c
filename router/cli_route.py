"""``python -m router route``: batch routing of a JSON-lines file of prompts.

Input: JSON lines with ``prompt_id`` and either ``prompt`` (text) or ``messages`` (a chat: a list of
``{"role", "content"}``); ``datasets/samples/prompts.jsonl`` is an example.

Output (Parquet, or CSV / JSONL by extension): by default one row per prompt, decided at the router's
saved operating point (the lambda ``training fit`` calibrated or was given), with the columns of
:meth:`router.router.Decisions.to_frame`: ``prompt_id``, ``chosen_model``, ``propensity`` (the chosen
model's probability), ``quality`` and ``cost`` (the chosen model's predictions), ``latency``,
``reason``, ``lam`` and ``mu`` (numbers), ``operating_point`` (true), then for every candidate
``p:<model>``, ``q:<model>``, ``cost:<model>`` and ``latency:<model>``. ``training evaluate
--decisions`` reads this file as it is.

Sweeps only when asked: ``--lambdas 0,50,500`` decides at each listed lambda, ``--sweep`` at a grid
from the best model to the cheapest plus the operating point; one row per prompt per lambda, with
``operating_point`` true on the rows of the saved operating point.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from router.errors import ConfigError, DataError, SourceNotFoundError

__all__ = ["add_parser", "add_prompts_parser", "read_prompts", "run", "write_prompts"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("route", help="route a JSONL file of prompts with a saved router",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="router directory (or models:/NAME@alias)")
    p.add_argument("--input", required=True, help="JSON lines with prompt_id and prompt or messages")
    p.add_argument("--output", required=True, help="decisions file (.parquet, .csv or .jsonl)")
    p.add_argument("--lambdas", default=None,
                   help="comma-separated lambdas (quality points per USD) to decide at, one row per prompt per "
                        "lambda; default: only the router's saved operating point")
    p.add_argument("--sweep", action="store_true",
                   help="decide along a lambda grid from the best model to the cheapest (plus the operating point)")
    p.add_argument("--models", default=None, help="comma-separated model names to restrict the pool to")
    p.set_defaults(func=run)


def add_prompts_parser(commands: Any) -> None:
    """``data prompts``: a data source's prompts as the JSON lines ``route`` reads."""
    p = commands.add_parser(
        "prompts", help="write a data source's prompts as JSON lines for `route`",
        description="Write prompt_id and prompt of a data source's split as JSON lines (the input of "
                    "`python -m router route`), so that its decisions can be scored with "
                    "`python -m training evaluate --decisions` on the same split.")
    p.add_argument("source", metavar="SOURCE", help="a registered source name or a path to an outcomes file")
    p.add_argument("--split", default="test", choices=["test", "train", "all"],
                   help="which prompts: the held-out split (default), the training split or all")
    p.add_argument("--split-seed", type=int, default=0,
                   help="seed of the grouped split for sources without their own split (as `training fit` uses)")
    p.add_argument("--output", required=True, help="JSON-lines file to write")
    p.set_defaults(func=_run_prompts)


def write_prompts(source: str, output: str | Path, split: str = "test", split_seed: int = 0) -> int:
    """Write ``{"prompt_id", "prompt"}`` lines of ``source``'s split to ``output``; returns the count."""
    from router.data.registry import load_source
    from router.data.splits import split_outcomes

    outcomes = load_source(source)
    if split != "all":
        train, test = split_outcomes(outcomes, seed=split_seed)
        outcomes = test if split == "test" else train
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for pid, prompt in zip(outcomes.prompt_ids, outcomes.prompts, strict=True):
            key = "prompt" if isinstance(prompt, str) else "messages"
            fh.write(json.dumps({"prompt_id": str(pid), key: prompt if key == "prompt" else list(prompt)}) + "\n")
    return int(outcomes.n_prompts)


def _run_prompts(args: argparse.Namespace) -> int:
    n = write_prompts(args.source, args.output, args.split, args.split_seed)
    print(json.dumps({"output": args.output, "prompts": n, "split": args.split}))
    return 0


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
    from router.router import default_lambda_grid

    lambdas = _parse_lambdas(args.lambdas)
    if lambdas is not None and args.sweep:
        raise ConfigError("give --lambdas or --sweep, not both.")
    router = load_router(args.model)
    ids, prompts = read_prompts(args.input)
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    pool = list(models) if models is not None else list(router.models)
    router.allowed_mask(pool)  # unknown names: a clear error before any encoding
    emb, lengths = router.embed(prompts)
    op_lam = router.rule.lam
    if args.sweep:
        q, c, _ = router.predict(embeddings=emb, lengths=lengths)
        cols = [router.models.index(m) for m in pool]
        lambdas = sorted(set(default_lambda_grid(q[:, cols], c[:, cols]).tolist()) | {op_lam})
    frames = []
    for lam in (lambdas if lambdas is not None else [None]):
        at_op = lam is None or lam == op_lam
        d = router.route(prompts, lam=None if at_op else lam, allowed=models, embedded=(emb, lengths))
        frame = d.to_frame(ids, models=pool).with_columns(pl.lit(at_op).alias("operating_point"))
        frames.append(frame)
    out = pl.concat(frames)
    first = ["prompt_id", "chosen_model", "propensity", "quality", "cost", "latency", "reason", "lam", "mu",
             "operating_point"]
    out = out.select(first + [c for c in out.columns if c not in first])
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        out.write_csv(path)
    elif path.suffix in (".jsonl", ".ndjson"):
        out.write_ndjson(path)
    else:
        out.write_parquet(path)
    print(json.dumps({"output": str(path), "prompts": len(ids), "settings": len(frames), "rows": out.height,
                      "models": pool, "operating_point": router.operating_point.describe()}))
    return 0
