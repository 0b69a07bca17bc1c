"""Reading and writing our own traffic logs (Parquet or JSON lines; CSV is read too).

Logs are read *lazily* with polars (:func:`scan_log`), so a log larger than memory can be filtered
and sampled before anything is loaded. Writing only ever appends:

* a ``.jsonl`` file gets whole lines appended in one write followed by ``fsync``;
* a Parquet log is a *directory* of part files; each append adds a new part
  (``part-<time>-<n>.parquet``), written to a temporary name and renamed, so a crash never
  leaves a half-written part behind and earlier parts are never rewritten.

Example:
    >>> import tempfile, datetime as dt
    >>> rows = [{"request_id": "r1", "timestamp": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    ...          "prompt": "hi", "chosen_model": "small", "propensity": 0.5, "cost": 0.001}]
    >>> d = tempfile.mkdtemp()
    >>> append_log(rows, d + "/log.jsonl")
    1
    >>> read_log(d + "/log.jsonl")["chosen_model"].to_list()
    ['small']
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from router.data.schema import TRAFFIC_LOG_SCHEMA
from router.data.validate import validate_traffic_log
from router.errors import SchemaError, SourceNotFoundError

__all__ = ["append_log", "conform_log", "read_log", "scan_log"]


def _kind(path: Path) -> str:
    if path.is_dir() or path.suffix == ".parquet" or path.name.endswith(".parquet.d"):
        return "parquet"
    if path.suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if path.suffix == ".csv":
        return "csv"
    raise SchemaError(
        f"{path}: unknown log format; use a .jsonl or .csv file or a Parquet directory/file (.parquet)."
    )


def _scan_raw(path: Path) -> pl.LazyFrame:
    """The log as stored, before casting to the log schema (text columns of a CSV stay text)."""
    from router.data.servicelog import is_service_log, read_service_log

    if is_service_log(path):  # the service's directory of JSON-lines parts, feedback joined
        return read_service_log(path)[0].lazy()
    kind = _kind(path)
    if kind == "parquet":
        return pl.scan_parquet(str(path / "*.parquet") if path.is_dir() else str(path))
    if kind == "csv":
        text = {k: v for k, v in TRAFFIC_LOG_SCHEMA.items() if v == pl.String()}
        return pl.scan_csv(path, schema_overrides=text, infer_schema_length=10_000)
    return pl.scan_ndjson(path, infer_schema_length=10_000)


def conform_log(df: pl.DataFrame | pl.LazyFrame) -> Any:
    """Cast known columns to the log schema and add missing optional columns as nulls."""
    lf = df.lazy() if isinstance(df, pl.DataFrame) else df
    cols = lf.collect_schema().names()
    exprs = []
    for name, dtype in TRAFFIC_LOG_SCHEMA.items():
        if name in cols:
            if name == "timestamp":
                exprs.append(_timestamp_expr(lf.collect_schema()[name]))
            else:
                exprs.append(pl.col(name).cast(dtype, strict=True))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    extra = [c for c in cols if c not in TRAFFIC_LOG_SCHEMA]
    return lf.select([*exprs, *[pl.col(c) for c in extra]])


def _timestamp_expr(dtype: pl.DataType) -> pl.Expr:
    col = pl.col("timestamp")
    if dtype == pl.Null:  # every row lacks a timestamp: keep the nulls, validation names the row
        return col.cast(pl.Datetime("us", "UTC")).alias("timestamp")
    if dtype == pl.String:
        return col.str.to_datetime(time_unit="us", time_zone="UTC").alias("timestamp")
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            return col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias("timestamp")
        return col.cast(pl.Datetime("us", "UTC")).alias("timestamp")
    raise SchemaError(f"column 'timestamp' has type {dtype}; use ISO-8601 strings or datetimes.")


def _cast_error(lf: pl.DataFrame | pl.LazyFrame, where: str, exc: Exception) -> SchemaError:
    """A :class:`SchemaError` naming the first row and column that cannot be cast to the log schema."""
    lf = lf.lazy() if isinstance(lf, pl.DataFrame) else lf
    try:
        schema = lf.collect_schema()
        indexed = lf.with_row_index("__row")
        for name, dtype in TRAFFIC_LOG_SCHEMA.items():
            if name not in schema:
                continue
            col = pl.col(name)
            if name == "timestamp" and schema[name] == pl.String:
                cast = col.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
            elif name == "timestamp":
                continue
            else:
                cast = col.cast(dtype, strict=False)
            hit = indexed.filter(col.is_not_null() & cast.is_null()).head(1).collect()
            if hit.height:
                return SchemaError(
                    f"{where}row {hit['__row'][0]}, column {name!r} has type {schema[name]} "
                    f"(value {hit[name][0]!r}); expected {dtype}."
                )
    except pl.exceptions.PolarsError:
        pass
    return SchemaError(f"{where}cannot read the log as the traffic-log schema: {exc}")


def scan_log(path: str | os.PathLike[str]) -> pl.LazyFrame:
    """A lazy view of a traffic log, cast to :data:`TRAFFIC_LOG_SCHEMA` (no rows are read yet)."""
    p = Path(path)
    if not p.exists():
        raise SourceNotFoundError(f"{p}: no such log file or directory.")
    if _kind(p) == "parquet" and p.is_dir() and not any(p.glob("*.parquet")) and not any(p.glob("traffic-*.jsonl")):
        raise SourceNotFoundError(f"{p}: the log directory has no .parquet parts yet.")
    return conform_log(_scan_raw(p))


def read_log(
    path: str | os.PathLike[str],
    *,
    known_models: Iterable[str] | None = None,
    where: pl.Expr | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> pl.DataFrame:
    """Read (part of) a traffic log and validate it.

    Args:
        path: a ``.jsonl`` or ``.csv`` file, or a Parquet file / directory of parts.
        known_models: when given, unknown ``chosen_model`` values are an error.
        where: an optional polars filter applied before loading.
        sample: keep this many rows chosen uniformly at random (seeded), after filtering.
        seed: the sampling seed.
    """
    try:
        lf = scan_log(path)
        if where is not None:
            lf = lf.filter(where)
        df = lf.collect()
    except pl.exceptions.PolarsError as exc:
        raise _cast_error(_scan_raw(Path(path)), f"{path}: ", exc) from exc
    if sample is not None and sample < df.height:
        df = df.sample(n=sample, seed=seed, shuffle=False)
    validate_traffic_log(df, source=str(path), known_models=known_models)
    return df


def _jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if hasattr(v, "isoformat"):
            v = v.isoformat()
        out[k] = v
    return out


def append_log(rows: pl.DataFrame | Iterable[Mapping[str, Any]], path: str | os.PathLike[str]) -> int:
    """Append validated rows to a log, never rewriting what is there; returns rows written.

    The whole batch is validated first, so a bad row writes nothing.
    """
    df = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(list(rows))
    if df.height == 0:
        return 0
    try:
        df = conform_log(df).collect()
    except pl.exceptions.PolarsError as exc:
        raise _cast_error(df, f"{path}: ", exc) from exc
    validate_traffic_log(df, source=str(path))
    p = Path(path)
    kind = _kind(p) if p.exists() else ("jsonl" if p.suffix in (".jsonl", ".ndjson") else
                                        "csv" if p.suffix == ".csv" else "parquet")
    if kind == "csv":
        raise SchemaError(f"{p}: CSV logs are read, not appended to; append to a .jsonl file or a Parquet directory.")
    if kind == "jsonl":
        p.parent.mkdir(parents=True, exist_ok=True)
        payload = "".join(json.dumps(_jsonable(r), ensure_ascii=False) + "\n" for r in df.iter_rows(named=True))
        with open(p, "a", encoding="utf-8") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
    else:
        if p.exists() and p.is_file():
            raise SchemaError(f"{p}: Parquet logs are appended as directories of parts; give a directory path.")
        p.mkdir(parents=True, exist_ok=True)
        stem = f"part-{time.time_ns()}-{os.getpid()}"
        tmp = p / f".{stem}.tmp"
        df.write_parquet(tmp)
        os.replace(tmp, p / f"{stem}.parquet")
    return df.height
