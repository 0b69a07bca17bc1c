"""Load outcomes by source name or path; read and write our own long outcomes format.

Registered names (see :data:`SOURCES`): ``routerbench``, ``routellm-mmlu``, ``routellm-gsm8k``,
``routellm-mt-bench``, ``routerarena``, ``llmrouter``, ``routerdc``, ``synthetic`` and ``demo``. Anything
else is taken as a path to our own format: a Parquet, JSON-lines or CSV file (or a directory of such files)
with one row per (prompt, model):

=================  ========  =========================================
column             type      meaning
=================  ========  =========================================
``prompt_id``      string    stable id of the prompt
``prompt``         string    prompt text
``task``           string    task label
``model``          string    model name
``quality``        float     in [0, 1]
``cost``           float     USD per call, >= 0
``latency``        float     optional, seconds
``input_tokens``   int       optional
``output_tokens``  int       optional
``split``          string    optional
=================  ========  =========================================

:func:`save_outcomes` writes this format (Parquet, with the source name, ``quality_kind``, ``cost_kind``
and dropped-row records kept in the file's metadata), so ``load_source(save_outcomes(o, path))`` gives
back the same outcomes. Prompts lacking some model's row are dropped and recorded.

Example:
    >>> import tempfile
    >>> from router.data.schema import Outcomes
    >>> o = Outcomes(prompt_ids=["a", "b"], prompts=["hi", "2+2?"], models=["small", "big"],
    ...              quality=[[0, 1], [1, 1]], cost=[[0.001, 0.01], [0.001, 0.01]], source="mine")
    >>> path = save_outcomes(o, tempfile.mkdtemp() + "/o.parquet")
    >>> back = load_source(str(path))
    >>> back.content_hash() == o.content_hash(), back.source
    (True, 'mine')
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from router.data.loaders._common import dropped, quality_kind_of
from router.data.schema import DroppedRows, Outcomes
from router.data.validate import Problems
from router.errors import ConfigError, SchemaError, SourceNotFoundError, ValidationError

__all__ = ["OUTCOMES_COLUMNS", "SOURCES", "Source", "load_source", "read_outcomes", "save_outcomes"]

#: Required columns of the long outcomes format, with the kind of value each holds.
OUTCOMES_COLUMNS: dict[str, str] = {
    "prompt_id": "string",
    "prompt": "string",
    "task": "string",
    "model": "string",
    "quality": "number",
    "cost": "number",
}
_OPTIONAL_NUMERIC = ("latency", "input_tokens", "output_tokens")
_META_KEY = b"router.outcomes"


@dataclass(frozen=True)
class Source:
    """A registered data source: its loader and a one-line description."""

    name: str
    load: Callable[..., Outcomes]
    description: str


def _routerbench(**kw: Any) -> Outcomes:
    from router.data.loaders.routerbench import load_routerbench

    return load_routerbench(**kw)


def _routellm(part: str) -> Callable[..., Outcomes]:
    def load(**kw: Any) -> Outcomes:
        from router.data.loaders import routellm

        fn: Callable[..., Outcomes] = getattr(routellm, f"load_routellm_{part}")
        return fn(**kw)

    return load


def _routerarena(**kw: Any) -> Outcomes:
    from router.data.loaders.routerarena import load_routerarena

    return load_routerarena(**kw)


def _llmrouter(**kw: Any) -> Outcomes:
    from router.data.loaders.llmrouter import load_llmrouter

    return load_llmrouter(**kw)


def _routerdc(**kw: Any) -> Outcomes:
    from router.data.loaders.routerdc import load_routerdc

    return load_routerdc(**kw)


def _synthetic(**kw: Any) -> Outcomes:
    from router.data.synthetic import generate

    return generate(**kw).outcomes


def _demo(path: str | os.PathLike[str] | None = None) -> Outcomes:
    from router.data.paths import project_root

    p = Path(path) if path is not None else project_root() / "datasets" / "demo"
    if not p.exists():
        raise SourceNotFoundError(f"demo: {p} does not exist; the demo data ships in datasets/demo/.")
    return read_outcomes(p)


#: Registered source names.
SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("routerbench", _routerbench, "RouterBench 0-shot rows (11 models, logged cost)"),
        Source("routellm-mmlu", _routellm("mmlu"), "RouteLLM MMLU, gpt-4-1106-preview vs Mixtral-8x7B"),
        Source("routellm-gsm8k", _routellm("gsm8k"), "RouteLLM GSM8K, gpt-4-1106-preview vs Mixtral-8x7B"),
        Source("routellm-mt-bench", _routellm("mt_bench"), "RouteLLM MT-Bench with GPT-4 grades"),
        Source("routerarena", _routerarena, "RouterArena cached results (logged cost and tokens)"),
        Source("llmrouter", _llmrouter, "LLMRouter DC-router data (9 NVIDIA-NIM models)"),
        Source("routerdc", _routerdc, "RouterDC 7 open ~7B models"),
        Source("synthetic", _synthetic, "synthetic traffic with known ground truth (router.data.synthetic)"),
        Source("demo", _demo, "the small demo data in datasets/demo/"),
    )
}


def load_source(name_or_path: str, **kw: Any) -> Outcomes:
    """Outcomes of a registered source (keyword arguments go to its loader) or of a file in our format.

    Raises:
        SourceNotFoundError: neither a registered name nor an existing path.
    """
    if name_or_path in SOURCES:
        return SOURCES[name_or_path].load(**kw)
    p = Path(name_or_path).expanduser()
    if p.exists():
        if kw:
            raise ConfigError(f"{p}: options {sorted(kw)} apply to registered sources only, not to outcomes files.")
        return read_outcomes(p)
    raise SourceNotFoundError(
        f"Unknown data source {name_or_path!r}: not a registered name and no such file or directory. "
        f"Registered names: {', '.join(SOURCES)}."
    )


# --------------------------------------------------------------------------- our long format
def _read_csv(path: Path) -> pl.DataFrame:
    """A CSV outcomes file; ids, prompts, tasks, models and splits are read as text, never as numbers."""
    text = {c: pl.String for c in ("prompt_id", "prompt", "task", "model", "split")}
    return pl.read_csv(path, schema_overrides=text, infer_schema_length=None)


def _read_frame(path: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    meta: dict[str, Any] = {}
    try:
        if path.is_dir():
            parts = sorted(path.glob("*.parquet"))
            jsonl = sorted([*path.glob("*.jsonl"), *path.glob("*.ndjson")])
            csv = sorted(path.glob("*.csv"))
            if parts:
                meta = _parquet_meta(parts[0])
                return pl.read_parquet(parts), meta
            if jsonl:
                return pl.concat([pl.read_ndjson(f, infer_schema_length=None) for f in jsonl],
                                 how="diagonal_relaxed"), meta
            if csv:
                return pl.concat([_read_csv(f) for f in csv], how="diagonal_relaxed"), meta
            raise SourceNotFoundError(f"{path}: the directory holds no .parquet, .jsonl or .csv outcomes files.")
        if path.suffix == ".parquet":
            return pl.read_parquet(path), _parquet_meta(path)
        if path.suffix in (".jsonl", ".ndjson", ".json"):
            return pl.read_ndjson(path, infer_schema_length=None), meta
        if path.suffix == ".csv":
            return _read_csv(path), meta
    except pl.exceptions.PolarsError as exc:
        raise SchemaError(f"{path}: cannot read outcomes ({exc}).") from exc
    raise SchemaError(f"{path}: unknown outcomes format; use .parquet, .jsonl, .csv or a directory of such files.")


def _parquet_meta(path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    kv = pq.read_schema(path).metadata or {}
    raw = kv.get(_META_KEY)
    return json.loads(raw) if raw else {}


def _check_long(df: pl.DataFrame, where: str) -> pl.DataFrame:
    """Check columns, types and values of a long outcomes frame; returns it with clean dtypes.

    Every bad row and column is reported in one error (see :class:`router.data.validate.Problems`).
    """
    missing = [c for c in OUTCOMES_COLUMNS if c not in df.columns]
    if missing:
        raise SchemaError(
            f"{where}: missing column(s) {missing}; an outcomes file needs {list(OUTCOMES_COLUMNS)} "
            f"(optional: {[*_OPTIONAL_NUMERIC, 'split']})."
        )
    indexed = df.with_row_index("__row")
    problems = Problems(where)

    def rows(mask: pl.Expr, col: str, what: str, show_value: bool = True) -> None:
        hits = indexed.filter(mask)
        if hits.height:
            problems.add_rows(hits.head(problems.cap).select("__row", col), col, what, show_value=show_value,
                              total=hits.height)

    numeric = ["quality", "cost", *[c for c in _OPTIONAL_NUMERIC if c in df.columns]]
    typed = []
    for col in numeric:
        dtype = df.schema[col]
        if dtype.is_numeric() or dtype == pl.Null:
            typed.append(col)
            continue
        hit = indexed.filter(pl.col(col).is_not_null()).head(1)
        at = f"row {hit['__row'][0]}, " if hit.height else ""
        val = f" (value {hit[col][0]!r})" if hit.height else ""
        problems.add(f"{at}column {col!r} has type {dtype}{val}; expected a number.",
                     row=int(hit["__row"][0]) if hit.height else None, column=col, schema=True)
    for col in ("prompt_id", "model"):
        rows(pl.col(col).is_null(), col, "is empty", show_value=False)
    for col in ("quality", "cost"):
        if col in typed:
            rows(pl.col(col).is_null() | pl.col(col).cast(pl.Float64).is_nan(), col, "is empty or NaN",
                 show_value=False)
    if "quality" in typed:
        q = pl.col("quality").cast(pl.Float64)
        rows(q.is_not_nan() & ((q < 0) | (q > 1)), "quality", "must be in [0, 1]")
    if "cost" in typed:
        rows(pl.col("cost") < 0, "cost", "must be >= 0 (USD)")
    for col in _OPTIONAL_NUMERIC:
        if col in typed:
            rows(pl.col(col) < 0, col, "must be >= 0")
    if problems.schema:  # values cannot be compared further until the types are right
        problems.raise_if_any()
    casts = [pl.col(c).cast(pl.String) for c in ("prompt_id", "prompt", "task", "model")]
    if "split" in df.columns:
        casts.append(pl.col("split").cast(pl.String))
    out = indexed.with_columns(*casts, *[pl.col(c).cast(pl.Float64) for c in numeric])
    dup = out.filter(pl.struct("prompt_id", "model").is_duplicated())
    if dup.height:
        pairs = dup.group_by("prompt_id", "model", maintain_order=True).agg(pl.col("__row"))
        for pid, model, at in pairs.head(problems.cap).iter_rows():
            problems.add(f"duplicate (prompt_id, model) = ({pid!r}, {model!r}) at rows {at}; each model's outcome "
                         "on a prompt must appear once. Drop or merge the duplicates.", row=at[0], column="prompt_id")
    for col in ("prompt", "task", "split"):
        if col not in out.columns:
            continue
        bad = out.group_by("prompt_id", maintain_order=True).agg(
            pl.col(col).n_unique().alias("n"), pl.col("__row").first()).filter(pl.col("n") > 1)
        for pid, _, row in bad.head(problems.cap).iter_rows():
            problems.add(f"prompt_id {pid!r} has different {col!r} values in different rows; "
                         "a prompt's text, task and split must be the same for every model.", row=row, column=col)
    problems.raise_if_any()
    return out


def read_outcomes(path: str | os.PathLike[str]) -> Outcomes:
    """Read our long outcomes format (Parquet, JSON lines or CSV; a file or a directory) into :class:`Outcomes`."""
    p = Path(path)
    if not p.exists():
        raise SourceNotFoundError(f"{p}: no such outcomes file or directory.")
    raw, meta = _read_frame(p)
    where = str(p)
    df = _check_long(raw, where)
    models = df["model"].unique(maintain_order=True).to_list()
    counts = df.group_by("prompt_id", maintain_order=True).agg(pl.col("model").n_unique().alias("n"))
    partial = counts.filter(pl.col("n") < len(models))["prompt_id"].to_list()
    drops = [DroppedRows(str(d["reason"]), int(d["count"]), tuple(str(i) for i in d.get("ids", [])), d.get("file"))
             for d in meta.get("dropped", [])]
    if partial:
        drops.append(dropped(f"prompt lacks outcomes for some of the {len(models)} models", partial, where))
        df = df.filter(~pl.col("prompt_id").is_in(partial))
    if df.height == 0:
        raise ValidationError(f"{where}: no prompt has an outcome for every model {models}.")
    prompts = df.group_by("prompt_id", maintain_order=True).agg(pl.all().first())
    ids = prompts["prompt_id"].to_list()
    pos_p = {pid: i for i, pid in enumerate(ids)}
    pos_m = {m: j for j, m in enumerate(models)}
    r = np.array([pos_p[x] for x in df["prompt_id"].to_list()])
    c = np.array([pos_m[x] for x in df["model"].to_list()])

    def matrix(col: str) -> np.ndarray | None:
        if col not in df.columns or df[col].null_count() == df.height:
            return None
        out = np.full((len(ids), len(models)), np.nan)
        out[r, c] = df[col].cast(pl.Float64).to_numpy()
        return out

    quality = matrix("quality")
    assert quality is not None
    split = prompts["split"].to_list() if "split" in prompts.columns else None
    return Outcomes(
        prompt_ids=ids,
        prompts=prompts["prompt"].to_list(),
        models=models,
        quality=quality,
        cost=matrix("cost"),
        tasks=prompts["task"].to_list(),
        latency=matrix("latency"),
        input_tokens=matrix("input_tokens"),
        output_tokens=matrix("output_tokens"),
        split=split if split is not None and all(s is not None for s in split) else None,
        source=str(meta.get("source", p.stem)),
        quality_kind=str(meta.get("quality_kind", quality_kind_of(quality))),
        cost_kind=str(meta.get("cost_kind", "logged")),
        dropped=tuple(drops),
    )


def save_outcomes(outcomes: Outcomes, path: str | os.PathLike[str]) -> Path:
    """Write ``outcomes`` in the long format as one Parquet file; returns the path written.

    ``path`` ending in ``.parquet`` is the file; any other path is a directory that gets
    ``outcomes.parquet``. The file is written to a temporary name and renamed.
    """
    import pyarrow.parquet as pq

    p = Path(path)
    if p.suffix != ".parquet":
        p.mkdir(parents=True, exist_ok=True)
        p = p / "outcomes.parquet"
    else:
        p.parent.mkdir(parents=True, exist_ok=True)
    n, m = outcomes.quality.shape
    data: dict[str, Any] = {
        "prompt_id": np.repeat(outcomes.prompt_ids, m).astype(str),
        "prompt": np.repeat(outcomes.prompts, m).astype(str),
        "task": np.repeat(outcomes.tasks, m).astype(str),
        "model": np.tile(np.asarray(outcomes.models, dtype=object), n).astype(str),
        "quality": outcomes.quality.reshape(-1),
        "cost": outcomes.cost.reshape(-1),
    }
    for col in _OPTIONAL_NUMERIC:
        arr = getattr(outcomes, col)
        if arr is not None:
            data[col] = arr.reshape(-1)
    if outcomes.split is not None:
        data["split"] = np.repeat(outcomes.split, m).astype(str)
    table = pl.DataFrame(data).to_arrow()
    meta = {
        "source": outcomes.source,
        "quality_kind": outcomes.quality_kind,
        "cost_kind": outcomes.cost_kind,
        "dropped": [d.as_dict() for d in outcomes.dropped],
    }
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()})
    tmp = p.with_name(f".{p.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, p)
    return p
