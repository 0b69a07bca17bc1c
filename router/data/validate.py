"""Checks for outcomes tables and traffic logs.

Every error names where the problem is (file, row, column) and what to do. A check reports every
bad row and column of a file in one error -- up to :data:`MAX_PROBLEMS` lines, then a count per
column -- so a file is fixed in one pass rather than one error per run (see :class:`Problems`).
Validation never changes data; loaders that must drop rows do so themselves and record a
:class:`~router.data.schema.DroppedRows`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from router.errors import DataError, SchemaError, ValidationError

if TYPE_CHECKING:
    from router.data.schema import Outcomes

__all__ = ["MAX_PROBLEMS", "Problems", "validate_outcomes", "validate_traffic_log"]

#: Lines one validation error lists; the rest are counted per column.
MAX_PROBLEMS = 20


class Problems:
    """The problems found in one file, raised together as one error.

    Each problem is one line naming its row and column. With one problem the message is
    ``"<where>: <problem>"``; with several it is a header with the total, one line per problem
    (sorted by row, at most ``cap``) and, when some are not shown, the count per column.

    Example:
        >>> p = Problems("data.csv")
        >>> p.add("row 3, column 'cost' = -1.0: must be >= 0.", row=3, column="cost")
        >>> p.add("row 1, column 'quality' = 2.0: must be in [0, 1].", row=1, column="quality")
        >>> print(p.message())
        data.csv: 2 problems:
          row 1, column 'quality' = 2.0: must be in [0, 1].
          row 3, column 'cost' = -1.0: must be >= 0.
    """

    def __init__(self, where: str | None, cap: int = MAX_PROBLEMS) -> None:
        self.where = f"{where}: " if where else ""
        self.cap = cap
        self.items: list[tuple[int, int, str]] = []
        self.per_column: Counter[str] = Counter()
        self.total = 0
        self.schema = False

    def add(self, message: str, *, row: int | None = None, column: str | None = None, count: int = 1,
            schema: bool = False) -> None:
        """Record a problem (``count``: how many rows it stands for; only the first is described)."""
        self.items.append((-1 if row is None else row, len(self.items), message))
        self.per_column[column or "(file)"] += count
        self.total += count
        self.schema = self.schema or schema

    def add_rows(self, frame: pl.DataFrame, column: str, what: str, *, row_offset: int = 0, show_value: bool = True,
                 total: int | None = None) -> None:
        """One problem per row of ``frame`` (columns ``__row`` and ``column``): ``row R, column 'C' = V: what.``

        ``total`` is the number of bad rows when ``frame`` holds only the first few of them.
        """
        for r in frame.iter_rows(named=True):
            row = int(r["__row"]) + row_offset
            said = f" = {r[column]!r}: " if show_value else " "
            self.add(f"row {row}, column {column!r}{said}{what}.", row=row, column=column)
        extra = (total or frame.height) - frame.height
        if extra > 0:
            self.per_column[column] += extra
            self.total += extra

    def __bool__(self) -> bool:
        return self.total > 0

    def message(self) -> str:
        """The error message (see the class docstring)."""
        lines = [m for _, _, m in sorted(self.items)[: self.cap]]
        if self.total == 1 and len(lines) == 1:
            return self.where + lines[0]
        head = f"{self.where}{self.total} problems:"
        body = [f"  {line}" for line in lines]
        if self.total > len(lines):
            counts = ", ".join(f"{c!r}: {n}" for c, n in self.per_column.most_common())
            body.append(f"  ... {self.total - len(lines)} more not shown; problems per column: {counts}.")
        return "\n".join([head, *body])

    def raise_if_any(self, error: type[DataError] | None = None) -> None:
        """Raise one error holding every problem (SchemaError when any is a type problem)."""
        if self:
            cls = error or (SchemaError if self.schema else ValidationError)
            raise cls(self.message())


def _cells(problems: Problems, o: Outcomes, name: str, bad: np.ndarray, describe: str) -> None:
    """One problem per bad cell of an (n, m) matrix; ``describe`` is formatted with r, pid, model, value."""
    arr = getattr(o, name)
    hits = np.argwhere(bad)
    for r, c in hits[: problems.cap]:
        problems.add(describe.format(name=name, r=int(r), pid=str(o.prompt_ids[r]), model=str(o.models[c]),
                                     value=arr[r, c]), row=int(r), column=name)
    extra = hits.shape[0] - min(hits.shape[0], problems.cap)
    if extra:
        problems.per_column[name] += extra
        problems.total += extra


def validate_outcomes(o: Outcomes) -> None:
    """Raise :class:`ValidationError` listing every cell of an :class:`Outcomes` that breaks a rule.

    Rules: quality finite and in [0, 1]; cost finite and >= 0; latency and token counts, when
    present, finite and >= 0; prompt ids unique.
    """
    problems = Problems(o.source)
    where = "row {r} (prompt_id {pid!r}), column {model!r}"
    for name, lo, hi in (("quality", 0.0, 1.0), ("cost", 0.0, np.inf)):
        arr = getattr(o, name)
        finite = np.isfinite(arr)
        _cells(problems, o, name, ~finite,
               "{name} is missing or not finite at " + where + "; drop or fill these rows before building Outcomes.")
        rng, fix = ("[0, 1]", "rescale quality to [0, 1]") if name == "quality" else (">= 0", "fix negative costs")
        with np.errstate(invalid="ignore"):
            out_of_range = finite & ((arr < lo) | (arr > hi))
        _cells(problems, o, name, out_of_range, "{name} must be " + rng + "; " + where + " has {value!r}; " + fix + ".")
    for name in ("latency", "input_tokens", "output_tokens"):
        arr = getattr(o, name)
        if arr is None:
            continue
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(arr) | (arr < 0)
        _cells(problems, o, name, bad, "{name} must be finite and >= 0; " + where + " has {value!r}.")
    ids = o.prompt_ids.astype(str)
    uniq, counts = np.unique(ids, return_counts=True)
    for dup in uniq[counts > 1][: problems.cap].tolist():
        first = int(np.flatnonzero(ids == dup)[1])
        problems.add(f"duplicate prompt_id [{dup!r}] (first repeat at row {first}); prompt ids must be unique. "
                     "Drop or rename the duplicates.", row=first, column="prompt_id")
    problems.raise_if_any(ValidationError)


def validate_traffic_log(
    df: pl.DataFrame,
    *,
    source: str | None = None,
    known_models: Iterable[str] | None = None,
    row_offset: int = 0,
) -> None:
    """Raise one clear error listing every row and column of a traffic-log frame that breaks the schema.

    Args:
        df: the frame, already cast to :data:`~router.data.schema.TRAFFIC_LOG_SCHEMA` types where present.
        source: file name for messages.
        known_models: when given, every ``chosen_model`` must be one of them.
        row_offset: added to row numbers in messages (for chunked reads).
    """
    from router.data.schema import TRAFFIC_LOG_REQUIRED

    where = f"{source}: " if source else ""
    missing = [c for c in TRAFFIC_LOG_REQUIRED if c not in df.columns]
    if missing:
        raise SchemaError(
            f"{where}missing required column(s) {missing}; a traffic log needs {list(TRAFFIC_LOG_REQUIRED)} "
            "(see router.data.schema.TRAFFIC_LOG_SCHEMA)."
        )
    if "prompt" not in df.columns and "messages" not in df.columns:
        raise SchemaError(f"{where}a traffic log needs a 'prompt' or a 'messages' column.")
    problems = Problems(source)
    indexed = df.with_row_index("__row")

    def rows(expr: pl.Expr, column: str, what: str, show_value: bool = True) -> None:
        hits = indexed.filter(expr)
        if hits.height:
            problems.add_rows(hits.head(problems.cap).select("__row", column), column, what, row_offset=row_offset,
                              show_value=show_value, total=hits.height)

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
                pl.col("quality").is_not_null() & ((pl.col("quality") < 0) | (pl.col("quality") > 1)
                                                   | pl.col("quality").is_nan()),
                "must be in [0, 1] (or null while feedback is pending)",
            )
        )
    for col in ("latency_s", "input_tokens", "output_tokens"):
        if col in df.columns:
            bad = (pl.col(col) < 0) | (~pl.col(col).is_finite() if df.schema[col].is_float() else pl.lit(False))
            checks.append((col, pl.col(col).is_not_null() & bad, "must be finite and >= 0"))
    for col, expr, what in checks:
        rows(expr, col, what)
    if "prompt" in df.columns and "messages" in df.columns:
        hits = indexed.filter(pl.col("prompt").is_null() & pl.col("messages").is_null())
        for r in hits.head(problems.cap)["__row"].to_list():
            problems.add(f"row {r + row_offset}: both 'prompt' and 'messages' are empty; log the request text.",
                         row=r + row_offset, column="prompt")
    dup = df.filter(pl.col("request_id").is_not_null()).group_by("request_id", maintain_order=True).len().filter(
        pl.col("len") > 1)
    if dup.height:
        for rid in dup["request_id"].head(problems.cap).to_list():
            first = int(indexed.filter(pl.col("request_id") == rid)["__row"][0]) + row_offset
            problems.add(f"duplicate request_id {rid!r} (first at row {first}, {dup.height} duplicated id(s)); "
                         "request ids must be unique.", row=first, column="request_id")
    if known_models is not None:
        known = sorted(set(known_models))
        rows(pl.col("chosen_model").is_not_null() & ~pl.col("chosen_model").is_in(known), "chosen_model",
             f"unknown model; known models are {known}. Add it to the pool or filter these rows out")
    problems.raise_if_any(ValidationError)


def check_columns(columns: Iterable[str], required: Iterable[str], *, source: str) -> None:
    """Raise :class:`SchemaError` naming the missing columns of a raw source file."""
    have = set(columns)
    missing = [c for c in required if c not in have]
    if missing:
        raise SchemaError(f"{source}: missing column(s) {missing}; found {sorted(have)[:20]}.")
