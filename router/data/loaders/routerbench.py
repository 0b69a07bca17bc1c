"""RouterBench (Martian, ``withmartian/routerbench``): a wide table of 11 models on benchmark prompts.

Two layouts are read:

* RouterDC's copy of RouterBench 0-shot rows, ``routerdc/datasets/routerbench_zs/<task>_{train,test}.csv``
  (the default; the split is taken from the file name);
* RouterBench's own pickle (``routerbench_0shot.pkl``: a pandas DataFrame with the same columns). **A pickle
  can run arbitrary code when it is loaded**; only load files you downloaded from the official source, and
  say so with ``trust_pickle=True``.

Columns used: ``sample_id`` (the prompt id), ``prompt`` (a python-list string such as ``"['...']"``,
parsed with :func:`ast.literal_eval` and joined with newlines), ``eval_name`` (the task), one column per
model holding its score, and ``<model>|total_cost``.

Quality: the per-sample score RouterBench computed, here 0/1 correctness (ARC-Challenge and Winogrande:
exact-match multiple choice; MBPP: unit tests pass). ``quality_kind="binary"`` when every score is 0 or 1.

Cost: ``<model>|total_cost``, the USD RouterBench computed for that call from the logged token counts and
the provider's price at the time (``cost_kind="logged"``).

Dropped rows (each recorded with its reason): every row of a ``sample_id`` that occurs more than once with
differing content (in the shipped CSVs: 14 ids / 28 rows of ARC-Challenge, each pair made of one row whose
prompt is the question twice at double cost and one with the other half of the models' scores, so neither
row can be trusted); exact duplicate rows beyond the first; rows lacking some models' score or cost.

Known answer for the shipped CSVs: 3,178 rows read, 28 dropped, 2,205 train + 945 test rows, 11 models.
Two MBPP task descriptions ("Write a function to sort a list of elements." and one other) occur in both
splits under different sample ids (different MBPP tasks with identical text); they are kept and reported
by :func:`router.data.loaders.prompts_in_several_splits`.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from router.data.loaders._common import dropped, quality_kind_of, resolve_path
from router.data.schema import DroppedRows, Outcomes
from router.data.validate import check_columns
from router.errors import ConfigError, SchemaError, SourceNotFoundError

__all__ = ["load_routerbench", "parse_prompt"]

SOURCE = "routerbench"
DEFAULT_PARTS = ("routerdc", "datasets", "routerbench_zs")
_META = {"", "Unnamed: 0", "sample_id", "prompt", "eval_name", "oracle_model_to_route_to"}
_SPLIT_RE = re.compile(r"[_-](train|test|val|validation)$")


def parse_prompt(value: Any) -> str:
    """RouterBench's prompt cell as text: a python-list string is parsed and its items joined.

    >>> parse_prompt("['What is 2+2?\\\\nAnswer:']")
    'What is 2+2?\\nAnswer:'
    >>> parse_prompt("plain text")
    'plain text'
    """
    if isinstance(value, list | tuple):
        return "\n".join(str(v) for v in value)
    text = "" if value is None else str(value)
    if text.startswith("[") and text.endswith("]"):
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        if isinstance(parsed, list | tuple):
            return "\n".join(str(v) for v in parsed)
    return text


def _models_of(columns: list[str], source: str) -> list[str]:
    models = [c for c in columns if c not in _META and "|" not in c and not c.startswith("__")]
    if not models:
        raise SchemaError(f"{source}: no model score columns found; expected columns named after models.")
    check_columns(columns, [f"{m}|total_cost" for m in models], source=source)
    return models


def _standardise(df: pl.DataFrame, file: Path, split: str | None) -> pl.DataFrame:
    src = str(file)
    check_columns(df.columns, ["sample_id", "prompt", "eval_name"], source=src)
    models = _models_of(df.columns, src)
    num_cols = [*models, *(f"{m}|total_cost" for m in models)]
    exprs = []
    for col in num_cols:
        dtype = df.schema[col]
        if dtype.is_numeric():
            exprs.append(pl.col(col).cast(pl.Float64))
            continue
        cast = pl.col(col).cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
        bad = df.with_row_index("__r").filter(
            pl.col(col).is_not_null() & (pl.col(col).cast(pl.String).str.strip_chars() != "") & cast.is_null()
        )
        if bad.height:
            r, v = bad["__r"][0], bad[col][0]
            raise SchemaError(f"{src}: row {r}, column {col!r} = {v!r}: expected a number.")
        exprs.append(cast.alias(col))
    return df.select(
        pl.col("sample_id").cast(pl.String),
        pl.col("prompt").cast(pl.String),
        pl.col("eval_name").cast(pl.String),
        *exprs,
        pl.lit(src).alias("__file"),
        pl.int_range(pl.len()).alias("__row"),
        pl.lit(split, dtype=pl.String).alias("__split"),
    )


def _read_file(file: Path, trust_pickle: bool) -> pl.DataFrame:
    if file.suffix in (".pkl", ".pickle"):
        if not trust_pickle:
            raise ConfigError(
                f"{file}: a pickle can run arbitrary code when loaded. Load it only if it comes from a source "
                "you trust (RouterBench's official routerbench_0shot.pkl) and pass trust_pickle=True."
            )
        import pandas as pd

        pdf = pd.read_pickle(file)  # noqa: S301 - guarded by trust_pickle
        if not isinstance(pdf, pd.DataFrame):
            raise SchemaError(f"{file}: expected a pickled pandas DataFrame, got {type(pdf).__name__}.")
        keep = [c for c in pdf.columns if not str(c).endswith("|model_response")]
        pdf = pdf[keep].reset_index(drop=True)
        pdf.columns = [str(c) for c in pdf.columns]
        for col in ("sample_id", "prompt", "eval_name"):
            if col in pdf.columns:
                pdf[col] = pdf[col].map(lambda v: v if isinstance(v, str) else repr(list(v)) if
                                        isinstance(v, list | tuple) else str(v))
        return _standardise(pl.from_pandas(pdf), file, None)
    if file.suffix != ".csv":
        raise SchemaError(f"{file}: RouterBench data must be .csv files or a .pkl DataFrame pickle.")
    try:
        df = pl.read_csv(file, infer_schema_length=0)
    except pl.exceptions.PolarsError as exc:
        raise SchemaError(f"{file}: cannot read as CSV ({exc}).") from exc
    df = df.drop([c for c in df.columns if c.endswith("|model_response")])
    m = _SPLIT_RE.search(file.stem)
    return _standardise(df, file, m.group(1) if m else None)


def load_routerbench(path: str | os.PathLike[str] | None = None, *, trust_pickle: bool = False) -> Outcomes:
    """Load RouterBench as :class:`~router.data.schema.Outcomes`.

    Args:
        path: a directory of ``*.csv`` files, one ``.csv`` file, or RouterBench's ``.pkl``;
            default ``$ROUTING_DATA_DIR/routerdc/datasets/routerbench_zs``.
        trust_pickle: required to read a ``.pkl`` (unpickling runs code from the file).
    """
    root = resolve_path(path, *DEFAULT_PARTS, source=SOURCE)
    files = sorted([*root.glob("*.csv"), *root.glob("*.pkl")]) if root.is_dir() else [root]
    if not files:
        raise SourceNotFoundError(f"{SOURCE}: no .csv or .pkl files in {root}.")
    frames = [_read_file(f, trust_pickle) for f in files]
    model_sets = [tuple(c for c in f.columns if c not in _META and "|" not in c and not c.startswith("__"))
                  for f in frames]
    models = list(model_sets[0])
    for f, ms in zip(files, model_sets):
        if set(ms) != set(models):
            raise SchemaError(f"{f}: has models {sorted(ms)} but {files[0]} has {sorted(models)}; "
                              "all files must cover the same models.")
    cost_cols = [f"{m}|total_cost" for m in models]
    df = pl.concat([f.select(["sample_id", "prompt", "eval_name", *models, *cost_cols,
                              "__file", "__row", "__split"]) for f in frames], how="vertical")
    return _to_outcomes(df, models, cost_cols)


def _to_outcomes(df: pl.DataFrame, models: list[str], cost_cols: list[str]) -> Outcomes:
    drops: list[DroppedRows] = []

    def record(reason: str, mask: pl.Expr) -> pl.DataFrame:
        gone = df.filter(mask)
        for (file,), grp in gone.group_by(["__file"], maintain_order=True):
            drops.append(dropped(reason, grp["sample_id"].to_list(), str(file)))
        return df.filter(mask.not_())

    content = ["prompt", "eval_name", *models, *cost_cols]
    incomplete = pl.any_horizontal([pl.col(c).is_null() | pl.col(c).is_nan() for c in [*models, *cost_cols]])
    conflict = pl.col("sample_id").is_duplicated() & (pl.struct(content).n_unique().over("sample_id") > 1)
    all_incomplete = df.filter(conflict).select(incomplete.all()).item()
    reason = "sample_id occurs in several rows that disagree (prompt, scores or cost differ)"
    if all_incomplete:
        reason += " and each of them lacks some models' scores"
    df = record(reason + "; no row can be trusted", conflict)
    df = record("exact duplicate of an earlier row (same sample_id and content)",
                pl.struct(["sample_id", *content]).is_first_distinct().not_())
    df = record("score or cost missing for some models", incomplete)

    prompts = [parse_prompt(p) for p in df["prompt"].to_list()]
    quality = df.select(models).to_numpy().astype(np.float64)
    raw_splits = df["__split"].to_list()
    splits = None if all(s is None for s in raw_splits) else ["all" if s is None else s for s in raw_splits]
    return Outcomes(
        prompt_ids=df["sample_id"].to_list(),
        prompts=prompts,
        models=models,
        quality=quality,
        cost=df.select(cost_cols).to_numpy().astype(np.float64),
        tasks=df["eval_name"].to_list(),
        split=splits,
        source=SOURCE,
        quality_kind=quality_kind_of(quality),
        cost_kind="logged",
        dropped=tuple(drops),
    )
