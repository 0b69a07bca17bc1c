"""The two typed forms every other part of the toolkit reads.

* :class:`Outcomes` -- full information, as in RouterBench: every model's outcome on every prompt.
* Traffic logs -- bandit feedback, as production writes it: one chosen model per request, with the
  probability the policy gave that choice. Logs are polars frames that follow
  :data:`TRAFFIC_LOG_SCHEMA`; see :mod:`router.data.logs` for reading and writing them.

Rows a loader had to drop are never lost silently: each loader returns them as
:class:`DroppedRows` records attached to the :class:`Outcomes` it built.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import polars as pl

from router.errors import SchemaError, UnknownModelError, ValidationError

__all__ = [
    "TRAFFIC_LOG_SCHEMA",
    "TRAFFIC_LOG_REQUIRED",
    "DroppedRows",
    "Outcomes",
]


@dataclass(frozen=True)
class DroppedRows:
    """Rows a loader removed, with the reason and where they came from.

    Attributes:
        reason: why the rows were dropped, in words.
        count: how many rows.
        ids: the dropped rows' identifiers (sample ids or row numbers as strings), at most a few hundred.
        file: the file they came from, when known.
    """

    reason: str
    count: int
    ids: tuple[str, ...] = ()
    file: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "count": self.count, "ids": list(self.ids), "file": self.file}


def _as_float_matrix(name: str, value: Any, n: int, m: int, models: Sequence[str] = ()) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        cells = np.asarray(value, dtype=object)
        for (r, c), v in (np.ndenumerate(cells) if cells.ndim == 2 else ()):
            try:
                float(v)
            except (TypeError, ValueError):
                col = repr(models[c]) if c < len(models) else str(c)
                raise SchemaError(
                    f"Outcomes.{name}: row {r}, column {col} has {v!r}; expected a number."
                ) from exc
        raise SchemaError(f"Outcomes.{name} must be a numeric (n_prompts, n_models) array: {exc}") from exc
    if arr.shape != (n, m):
        raise SchemaError(f"Outcomes.{name} must have shape (n_prompts, n_models) = ({n}, {m}), got {arr.shape}.")
    return arr


@dataclass(frozen=True, eq=False)
class Outcomes:
    """Full-information outcomes: every model's quality and cost on every prompt.

    Arrays are read-only numpy arrays; build a changed copy with :meth:`subset` or
    :func:`dataclasses.replace`.

    Attributes:
        prompt_ids: (n,) stable string id of each prompt, unique.
        prompts: (n,) prompt text (for chat data: the rendered conversation, see ``messages``).
        models: (m,) model names, unique.
        quality: (n, m) quality in [0, 1]; what it means is given by ``quality_kind`` and the loader's docs.
        cost: (n, m) USD per call, >= 0.
        tasks: (n,) task label of each prompt (``"unknown"`` when the source has none).
        latency: (n, m) seconds per call, or None.
        input_tokens: (n, m) prompt tokens, or None.
        output_tokens: (n, m) completion tokens, or None.
        split: (n,) split name given by the source (e.g. ``"train"``/``"test"``), or None.
        timestamps: (n,) ``datetime64[us]`` time of each prompt, or None.
        messages: (n,) JSON string of chat messages per prompt (or None entries), or None.
        source: name of the data source.
        quality_kind: ``"binary"`` (0/1 correctness) or ``"score"`` (graded, in [0, 1]).
        cost_kind: ``"logged"`` (measured per call), ``"tokens"`` (tokens times prices) or ``"estimated"``.
        dropped: rows the loader removed, with reasons.

    Example:
        >>> import numpy as np
        >>> o = Outcomes(prompt_ids=["a", "b"], prompts=["hi", "2+2?"], models=["small", "big"],
        ...              quality=[[0, 1], [1, 1]], cost=[[0.001, 0.01], [0.001, 0.01]], tasks=["chat", "math"])
        >>> o.n_prompts, o.n_models, o.best_single_model()
        (2, 2, 'big')
    """

    prompt_ids: Any
    prompts: Any
    models: Any
    quality: Any
    cost: Any
    tasks: Any = None
    latency: Any = None
    input_tokens: Any = None
    output_tokens: Any = None
    split: Any = None
    timestamps: Any = None
    messages: Any = None
    source: str = "unnamed"
    quality_kind: str = "binary"
    cost_kind: str = "logged"
    dropped: tuple[DroppedRows, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        ids = np.asarray(self.prompt_ids, dtype=object).astype(str).astype(object)
        n = ids.shape[0]
        if ids.ndim != 1:
            raise SchemaError(f"Outcomes.prompt_ids must be one-dimensional, got shape {ids.shape}.")
        prompts = np.asarray(self.prompts, dtype=object)
        if prompts.shape != (n,):
            raise SchemaError(f"Outcomes.prompts must have shape ({n},) like prompt_ids, got {prompts.shape}.")
        models = tuple(str(x) for x in self.models)
        m = len(models)
        if m == 0:
            raise SchemaError("Outcomes.models is empty: give at least one model name.")
        if len(set(models)) != m:
            dup = sorted({x for x in models if models.count(x) > 1})
            raise ValidationError(f"Outcomes.models has duplicate names {dup}; model names must be unique.")
        quality = _as_float_matrix("quality", self.quality, n, m, models)
        cost = _as_float_matrix("cost", self.cost, n, m, models)
        tasks = (
            np.full(n, "unknown", dtype=object)
            if self.tasks is None
            else np.asarray(self.tasks, dtype=object).astype(str).astype(object)
        )
        if tasks.shape != (n,):
            raise SchemaError(f"Outcomes.tasks must have shape ({n},), got {tasks.shape}.")
        optional: dict[str, np.ndarray | None] = {}
        for name in ("latency", "input_tokens", "output_tokens"):
            value = getattr(self, name)
            optional[name] = None if value is None else _as_float_matrix(name, value, n, m, models)
        split = None if self.split is None else np.asarray(self.split, dtype=object).astype(str).astype(object)
        if split is not None and split.shape != (n,):
            raise SchemaError(f"Outcomes.split must have shape ({n},), got {split.shape}.")
        ts = None if self.timestamps is None else np.asarray(self.timestamps, dtype="datetime64[us]")
        if ts is not None and ts.shape != (n,):
            raise SchemaError(f"Outcomes.timestamps must have shape ({n},), got {ts.shape}.")
        msgs = None if self.messages is None else np.asarray(self.messages, dtype=object)
        if msgs is not None and msgs.shape != (n,):
            raise SchemaError(f"Outcomes.messages must have shape ({n},), got {msgs.shape}.")
        if self.quality_kind not in ("binary", "score"):
            raise SchemaError(f"Outcomes.quality_kind must be 'binary' or 'score', got {self.quality_kind!r}.")
        if self.cost_kind not in ("logged", "tokens", "estimated"):
            raise SchemaError(
                f"Outcomes.cost_kind must be 'logged', 'tokens' or 'estimated', got {self.cost_kind!r}."
            )
        arrays: dict[str, Any] = {
            "prompt_ids": ids,
            "prompts": prompts,
            "models": models,
            "quality": quality,
            "cost": cost,
            "tasks": tasks,
            "split": split,
            "timestamps": ts,
            "messages": msgs,
            **optional,
        }
        for name, value in arrays.items():
            if isinstance(value, np.ndarray):
                value = value.copy()
                value.setflags(write=False)
            object.__setattr__(self, name, value)
        object.__setattr__(self, "dropped", tuple(self.dropped))
        from router.data.validate import validate_outcomes

        validate_outcomes(self)

    # ------------------------------------------------------------------ basic views
    @property
    def n_prompts(self) -> int:
        return int(self.quality.shape[0])

    @property
    def n_models(self) -> int:
        return len(self.models)

    def __len__(self) -> int:
        return self.n_prompts

    def __repr__(self) -> str:
        return (
            f"Outcomes(source={self.source!r}, prompts={self.n_prompts}, models={self.n_models}, "
            f"quality_kind={self.quality_kind!r}, cost_kind={self.cost_kind!r}, dropped={self.n_dropped})"
        )

    @property
    def n_dropped(self) -> int:
        return int(sum(d.count for d in self.dropped))

    def model_index(self, names: str | Sequence[str]) -> np.ndarray:
        """Column indices of the named models; raises :class:`UnknownModelError` for others."""
        wanted = [names] if isinstance(names, str) else list(names)
        pos = {name: i for i, name in enumerate(self.models)}
        unknown = [w for w in wanted if w not in pos]
        if unknown:
            raise UnknownModelError(
                f"Unknown model(s) {unknown}; this data has models {list(self.models)}."
            )
        return np.array([pos[w] for w in wanted], dtype=np.int64)

    def best_single_model(self) -> str:
        """The model with the highest mean quality (ties: the cheaper one)."""
        mean_q = self.quality.mean(axis=0)
        mean_c = self.cost.mean(axis=0)
        order = np.lexsort((mean_c, -mean_q))
        return str(self.models[int(order[0])])

    # ------------------------------------------------------------------ subsetting
    def subset(self, rows: Any = None, models: Sequence[str] | None = None) -> Outcomes:
        """A copy restricted to ``rows`` (indices or boolean mask) and/or the named ``models``."""
        idx = np.arange(self.n_prompts) if rows is None else np.asarray(rows)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        cols = np.arange(self.n_models) if models is None else self.model_index(models)

        def rows_of(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        def cells_of(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[np.ix_(idx, cols)]

        return replace(
            self,
            prompt_ids=self.prompt_ids[idx],
            prompts=self.prompts[idx],
            models=[self.models[i] for i in cols],
            quality=cells_of(self.quality),
            cost=cells_of(self.cost),
            tasks=self.tasks[idx],
            latency=cells_of(self.latency),
            input_tokens=cells_of(self.input_tokens),
            output_tokens=cells_of(self.output_tokens),
            split=rows_of(self.split),
            timestamps=rows_of(self.timestamps),
            messages=rows_of(self.messages),
        )

    def where_split(self, name: str) -> Outcomes:
        """Rows of the source-given split ``name`` (e.g. ``"test"``)."""
        if self.split is None:
            raise SchemaError(
                f"{self.source}: this data has no source-given split; make one with router.data.splits.grouped_split."
            )
        mask = self.split == name
        if not mask.any():
            raise SchemaError(f"{self.source}: no rows in split {name!r}; splits present: {sorted(set(self.split))}.")
        return self.subset(mask)

    # ------------------------------------------------------------------ summaries
    def content_hash(self) -> str:
        """A stable SHA-256 of ids, models, quality and cost (for lineage)."""
        h = hashlib.sha256()
        h.update("\x1f".join(self.prompt_ids).encode())
        h.update("\x1f".join(self.models).encode())
        h.update(np.ascontiguousarray(self.quality).tobytes())
        h.update(np.ascontiguousarray(self.cost).tobytes())
        return h.hexdigest()

    def oracle(self) -> dict[str, float]:
        """Quality and cost of the oracle: the best model per prompt, cheapest among ties."""
        q, c = self.quality, self.cost
        best = q.max(axis=1, keepdims=True)
        cand = np.where(np.isclose(q, best), c, np.inf)
        pick = cand.argmin(axis=1)
        rows = np.arange(self.n_prompts)
        return {"quality": float(q[rows, pick].mean()), "cost": float(c[rows, pick].mean())}

    def per_model_frame(self) -> pl.DataFrame:
        """One row per model: mean quality and mean cost (USD per call)."""
        return pl.DataFrame(
            {
                "model": list(self.models),
                "mean_quality": self.quality.mean(axis=0),
                "mean_cost": self.cost.mean(axis=0),
            }
        )

    def to_long_frame(self) -> pl.DataFrame:
        """Long format: one row per (prompt, model)."""
        n, m = self.quality.shape
        data: dict[str, Any] = {
            "prompt_id": np.repeat(self.prompt_ids, m).astype(str),
            "task": np.repeat(self.tasks, m).astype(str),
            "model": np.tile(np.asarray(self.models, dtype=object), n).astype(str),
            "quality": self.quality.reshape(-1),
            "cost": self.cost.reshape(-1),
        }
        for name in ("latency", "input_tokens", "output_tokens"):
            arr = getattr(self, name)
            if arr is not None:
                data[name] = arr.reshape(-1)
        return pl.DataFrame(data)


# --------------------------------------------------------------------------- traffic logs
#: Column -> polars dtype of a traffic log. ``quality`` may be null until feedback arrives;
#: exactly one of ``prompt`` / ``messages`` (a JSON list of {role, content}) is set per row.
TRAFFIC_LOG_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "timestamp": pl.Datetime("us", "UTC"),
    "tenant": pl.String(),
    "prompt": pl.String(),
    "messages": pl.String(),
    "chosen_model": pl.String(),
    "propensity": pl.Float64(),
    "quality": pl.Float64(),
    "cost": pl.Float64(),
    "latency_s": pl.Float64(),
    "input_tokens": pl.Int64(),
    "output_tokens": pl.Int64(),
    "policy_version": pl.String(),
    "task": pl.String(),
    "prompt_id": pl.String(),
}

#: Columns a traffic log must have; the others are filled with nulls when absent.
TRAFFIC_LOG_REQUIRED: tuple[str, ...] = (
    "request_id",
    "timestamp",
    "chosen_model",
    "propensity",
    "cost",
)
