"""Checks for outcomes tables and traffic logs.

Every error names where the problem is (file, row, column) and what to do. Validation never
changes data; loaders that must drop rows do so themselves and record a
:class:`~router.data.schema.DroppedRows`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from router.errors import SchemaError, ValidationError

if TYPE_CHECKING:
    from router.data.schema import Outcomes

__all__ = ["validate_outcomes", "validate_traffic_log"]


def _where(source: str | None) -> str:
    return f"{source}: " if source else ""


def _first_bad(mask: np.ndarray) -> tuple[int, int]:
    r, c = np.argwhere(mask)[0]
    return int(r), int(c)


def validate_outcomes(o: Outcomes) -> None:
    """Raise :class:`ValidationError` when an :class:`Outcomes` breaks a rule.

    Rules: quality finite and in [0, 1]; cost finite and >= 0; latency and token counts, when
    present, finite and >= 0; prompt ids unique.
    """
    where = _where(o.source)
    for name, lo, hi in (("quality", 0.0, 1.0), ("cost", 0.0, np.inf)):
        arr = getattr(o, name)
        bad = ~np.isfinite(arr)
        if bad.any():
            r, c = _first_bad(bad)
            raise ValidationError(
                f"{where}{name} is missing or not finite at row {r} (prompt_id {o.prompt_ids[r]!r}), "
                f"column {o.models[c]!r}: {bad.sum()} cell(s) in all. Drop or fill these rows before building Outcomes."
            )
        bad = (arr < lo) | (arr > hi)
        if bad.any():
            r, c = _first_bad(bad)
            rng = "[0, 1]" if name == "quality" else ">= 0"
            raise ValidationError(
                f"{where}{name} must be {rng}; row {r} (prompt_id {o.prompt_ids[r]!r}), column {o.models[c]!r} "
                f"has {arr[r, c]!r} ({bad.sum()} such cell(s)). Rescale quality to [0, 1] / fix negative costs."
            )
    for name in ("latency", "input_tokens", "output_tokens"):
        arr = getattr(o, name)
        if arr is None:
            continue
        bad = ~np.isfinite(arr) | (arr < 0)
        if bad.any():
            r, c = _first_bad(bad)
            raise ValidationError(
                f"{where}{name} must be finite and >= 0; row {r} (prompt_id {o.prompt_ids[r]!r}), "
                f"column {o.models[c]!r} has {arr[r, c]!r}."
            )
    ids = o.prompt_ids
    uniq, counts = np.unique(ids.astype(str), return_counts=True)
    if (counts > 1).any():
        dups = uniq[counts > 1][:5].tolist()
        first = int(np.flatnonzero(ids == dups[0])[1])
        raise ValidationError(
            f"{where}duplicate prompt_id {dups} (first repeat at row {first}); prompt ids must be unique. "
            "Drop or rename the duplicates."
        )


def validate_traffic_log(
    df: pl.DataFrame,
    *,
    source: str | None = None,
    known_models: Iterable[str] | None = None,
    row_offset: int = 0,
) -> None:
    """Raise a clear error when a traffic-log frame breaks the schema.

    Args:
        df: the frame, already cast to :data:`~router.data.schema.TRAFFIC_LOG_SCHEMA` types where present.
        source: file name for messages.
        known_models: when given, every ``chosen_model`` must be one of them.
        row_offset: added to row numbers in messages (for chunked reads).
    """
    from router.data.schema import TRAFFIC_LOG_REQUIRED

    where = _where(source)
    missing = [c for c in TRAFFIC_LOG_REQUIRED if c not in df.columns]
    if missing:
        raise SchemaError(
            f"{where}missing required column(s) {missing}; a traffic log needs {list(TRAFFIC_LOG_REQUIRED)} "
            "(see router.data.schema.TRAFFIC_LOG_SCHEMA)."
        )
    if "prompt" not in df.columns and "messages" not in df.columns:
        raise SchemaError(f"{where}a traffic log needs a 'prompt' or a 'messages' column.")

    def first_row(expr: pl.Expr) -> int | None:
        hit = df.with_row_index("__row").filter(expr).select("__row").head(1)
        return None if hit.height == 0 else int(hit.item()) + row_offset

    checks: list[tuple[str, pl.Expr, str]] = [
        ("request_id", pl.col("request_id").is_null(), "is empty; every request needs an id"),
        ("timestamp", pl.col("timestamp").is_null(), "is empty; log when the request arrived (ISO-8601, UTC)"),
        ("chosen_model", pl.col("chosen_model").is_null(), "is empty; log the model that answered"),
        (
            "propensity",
            pl.col("propensity").is_null() | ~pl.col("propensity").is_finite() | (pl.col("propensity") <= 0)
            | (pl.col("propensity") > 1),
            "must be in (0, 1]: it is the probability the logging policy gave the chosen model",
        ),
        (
            "cost",
            pl.col("cost").is_null() | ~pl.col("cost").is_finite() | (pl.col("cost") < 0),
            "must be present and >= 0 (USD), and finite",
        ),
    ]
    if "quality" in df.columns:
        checks.append(
            (
                "quality",
                pl.col("quality").is_not_null() & ((pl.col("quality") < 0) | (pl.col("quality") > 1)),
                "must be in [0, 1] (or null while feedback is pending)",
            )
        )
    for col in ("latency_s", "input_tokens", "output_tokens"):
        if col in df.columns:
            bad = (pl.col(col) < 0) | (~pl.col(col).is_finite() if df.schema[col].is_float() else pl.lit(False))
            checks.append((col, pl.col(col).is_not_null() & bad, "must be finite and >= 0"))
    for col, expr, what in checks:
        row = first_row(expr)
        if row is not None:
            value = df.row(row - row_offset, named=True)[col]
            raise ValidationError(f"{where}row {row}, column {col!r} = {value!r}: {what}.")
    if "prompt" in df.columns and "messages" in df.columns:
        row = first_row(pl.col("prompt").is_null() & pl.col("messages").is_null())
        if row is not None:
            raise ValidationError(f"{where}row {row}: both 'prompt' and 'messages' are empty; log the request text.")
    dup = df.group_by("request_id").len().filter(pl.col("len") > 1)
    if dup.height:
        rid = dup["request_id"][0]
        row = first_row(pl.col("request_id") == rid)
        raise ValidationError(
            f"{where}duplicate request_id {rid!r} (first at row {row}, {dup.height} duplicated id(s)); "
            "request ids must be unique."
        )
    if known_models is not None:
        known = set(known_models)
        unknown_rows = df.filter(~pl.col("chosen_model").is_in(sorted(known)))
        if unknown_rows.height:
            name = unknown_rows["chosen_model"][0]
            row = first_row(pl.col("chosen_model") == name)
            raise ValidationError(
                f"{where}row {row}, column 'chosen_model' = {name!r}: unknown model; known models are "
                f"{sorted(known)}. Add it to the pool or filter these rows out."
            )


def check_columns(columns: Iterable[str], required: Iterable[str], *, source: str) -> None:
    """Raise :class:`SchemaError` naming the missing columns of a raw source file."""
    have = set(columns)
    missing = [c for c in required if c not in have]
    if missing:
        raise SchemaError(f"{source}: missing column(s) {missing}; found {sorted(have)[:20]}.")
