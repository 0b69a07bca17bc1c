"""Evaluate router curves on full-information outcomes; results come out as flat rows.

Example:
    >>> import numpy as np
    >>> from router.data.schema import Outcomes
    >>> rng = np.random.default_rng(0)
    >>> q = rng.integers(0, 2, size=(200, 2)).astype(float)
    >>> o = Outcomes(prompt_ids=[str(i) for i in range(200)], prompts=["p"] * 200, models=["small", "big"],
    ...              quality=q, cost=np.tile([0.001, 0.01], (200, 1)))
    >>> oracle = np.argmax(q - 1e-3 * np.arange(2), axis=1)  # best model per prompt, cheaper on ties
    >>> res = evaluate_curves(o, {"oracle-like": ([0.0], oracle[None, :])}, n_bootstrap=50)
    >>> res.to_frame().filter(kind="router")["router"].to_list()
    ['oracle-like']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from router.errors import ConfigError, ValidationError
from router.metrics.bootstrap import bootstrap_indices, percentile_interval
from router.metrics.curves import (
    Hull,
    _check_probs,
    _oracle_per_prompt,
    aiq,
    aiq_routerbench,
    check_choices,
    non_decreasing_hull,
    oracle_gap_share,
    routing_shares,
    savings_at_quality,
)
from router.metrics.routellm import _area as _pgr_area
from router.metrics.routellm import _curve as _pgr_curve
from router.metrics.routellm import _first_crossing, scores_from_choices

if TYPE_CHECKING:
    import polars as pl

    from router.data.schema import Outcomes

__all__ = ["Curve", "EvaluationResult", "RouterEvaluation", "evaluate_curves", "METRICS_SCHEMA_VERSION"]

#: Version of the ``metrics.json`` layout (see ``docs/metrics_schema.md``).
METRICS_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Curve:
    """One router's decisions over a sweep of settings.

    Attributes:
        settings: (S,) the knob value of each setting (e.g. lambda).
        choices: (S, n) int model index per prompt per setting (into ``outcomes.models``).
        probs: (S, n, m) routing probabilities, or None.
        predicted_quality: (n, m) the router's predicted quality, or None (used for calibration and
            as the two-model APGR score).
        scores: (n,) strong-model score for APGR, or None (then derived, see :func:`evaluate_curves`).
        targets: (S,) what each setting asked for (spend per 1,000 requests in USD), or None.
        operating_index: index of the setting at which the router decides by default (its operating
            point), or None.
        operating_info: what to report about that point beside its cost and quality (e.g.
            :meth:`router.calibration.OperatingPoint.to_dict`), or None.
    """

    settings: Any
    choices: Any
    probs: Any = None
    predicted_quality: Any = None
    scores: Any = None
    targets: Any = None
    operating_index: Any = None
    operating_info: Any = None


@dataclass
class RouterEvaluation:
    """Everything measured for one router (intervals are (low, high) percentile bootstrap intervals)."""

    name: str
    settings: np.ndarray
    points: np.ndarray
    points_ci: np.ndarray
    shares: np.ndarray
    hull: Hull
    aiq: float
    aiq_ci: tuple[float, float]
    aiq_routerbench: float
    max_quality: float
    saving_at_best: float
    saving_at_best_ci: tuple[float, float]
    saving_at_95: float
    saving_at_95_ci: tuple[float, float]
    oracle_gap_share: float
    oracle_gap_share_ci: tuple[float, float]
    apgr: float | None = None
    apgr_ci: tuple[float, float] | None = None
    cpt50: float | None = None
    cpt80: float | None = None
    per_task: dict[str, dict[str, Any]] = field(default_factory=dict)
    budget: list[dict[str, float]] = field(default_factory=list)
    operating_point: dict[str, Any] | None = None
    predicted_quality: np.ndarray | None = None
    realised_quality: np.ndarray | None = None


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, tuple | list):
        return [_nan_to_none(v) for v in x]
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    return x


@dataclass
class EvaluationResult:
    """Results of :func:`evaluate_curves`; ``rows()`` / ``to_frame()`` for notebooks, ``to_metrics_json()`` for files."""

    models: tuple[str, ...]
    n_prompts: int
    model_points: np.ndarray
    model_points_ci: np.ndarray
    cost_span: tuple[float, float]
    best_model: str
    zero_hull: Hull
    zero_aiq: float
    zero_aiq_ci: tuple[float, float]
    oracle: tuple[float, float]
    oracle_ci: np.ndarray
    routers: dict[str, RouterEvaluation]
    task_models: dict[str, dict[str, Any]]
    confidence: float
    n_bootstrap: int
    seed: int

    # ------------------------------------------------------------------ rows
    def rows(self) -> list[dict[str, Any]]:
        """One flat row per router, per single model, for the zero router and the oracle."""
        out: list[dict[str, Any]] = []
        for j, name in enumerate(self.models):
            c, q = self.model_points[j]
            out.append({"router": name, "kind": "single", "cost": float(c), "quality": float(q)})
        out.append({"router": "zero-router", "kind": "zero", "aiq": self.zero_aiq,
                    "aiq_lo": self.zero_aiq_ci[0], "aiq_hi": self.zero_aiq_ci[1]})
        out.append({"router": "oracle", "kind": "oracle", "cost": self.oracle[0], "quality": self.oracle[1]})
        for r in self.routers.values():
            row: dict[str, Any] = {
                "router": r.name, "kind": "router", "aiq": r.aiq, "aiq_lo": r.aiq_ci[0], "aiq_hi": r.aiq_ci[1],
                "aiq_routerbench": r.aiq_routerbench, "max_quality": r.max_quality,
                "saving_at_best": r.saving_at_best, "saving_at_best_lo": r.saving_at_best_ci[0],
                "saving_at_best_hi": r.saving_at_best_ci[1], "saving_at_95": r.saving_at_95,
                "saving_at_95_lo": r.saving_at_95_ci[0], "saving_at_95_hi": r.saving_at_95_ci[1],
                "oracle_gap_share": r.oracle_gap_share, "oracle_gap_share_lo": r.oracle_gap_share_ci[0],
                "oracle_gap_share_hi": r.oracle_gap_share_ci[1],
            }
            if r.apgr is not None and r.apgr_ci is not None:
                row.update(apgr=r.apgr, apgr_lo=r.apgr_ci[0], apgr_hi=r.apgr_ci[1], cpt50=r.cpt50, cpt80=r.cpt80)
            out.append(row)
        return out

    def point_rows(self) -> list[dict[str, Any]]:
        """One row per (router, setting): cost, quality with intervals, and routing share per model."""
        out: list[dict[str, Any]] = []
        for r in self.routers.values():
            for s in range(r.points.shape[0]):
                row: dict[str, Any] = {
                    "router": r.name, "setting": float(r.settings[s]),
                    "cost": float(r.points[s, 0]), "cost_lo": float(r.points_ci[s, 0, 0]),
                    "cost_hi": float(r.points_ci[s, 0, 1]), "quality": float(r.points[s, 1]),
                    "quality_lo": float(r.points_ci[s, 1, 0]), "quality_hi": float(r.points_ci[s, 1, 1]),
                    "spend_per_1k": 1000.0 * float(r.points[s, 0]),
                }
                for j, m in enumerate(self.models):
                    row[f"share:{m}"] = float(r.shares[s, j])
                out.append(row)
        return out

    def task_rows(self) -> list[dict[str, Any]]:
        """One row per (router, task) plus the zero router per task: AIQ and best quality."""
        out: list[dict[str, Any]] = []
        nan = (float("nan"), float("nan"))
        for task, info in self.task_models.items():
            lo, hi = info.get("zero_aiq_ci", nan)
            out.append({"router": "zero-router", "task": task, "n_prompts": info["n_prompts"],
                        "aiq": info["zero_aiq"], "aiq_lo": lo, "aiq_hi": hi, "max_quality": info["best_quality"]})
        for r in self.routers.values():
            for task, vals in r.per_task.items():
                row: dict[str, Any] = {"router": r.name, "task": task}
                for key, v in vals.items():
                    if isinstance(v, tuple | list):
                        row[f"{key.removesuffix('_ci')}_lo"], row[f"{key.removesuffix('_ci')}_hi"] = v
                    else:
                        row[key] = v
                out.append(row)
        return out

    def to_frame(self, which: str = "summary") -> pl.DataFrame:
        """A polars DataFrame of ``rows()`` (``which="summary"``), ``point_rows()`` or ``task_rows()``."""
        import polars as pl

        table = {"summary": self.rows, "points": self.point_rows, "tasks": self.task_rows}
        if which not in table:
            raise ConfigError(f"to_frame(which=...) must be one of {sorted(table)}, got {which!r}.")
        return pl.DataFrame(table[which](), infer_schema_length=None)

    # ------------------------------------------------------------------ metrics.json
    def to_metrics_json(self, dataset: str = "unnamed", split: str | None = None) -> dict[str, Any]:
        """The ``metrics.json`` document (schema in ``docs/metrics_schema.md``); NaN becomes null."""
        doc: dict[str, Any] = {
            "schema_version": METRICS_SCHEMA_VERSION,
            "dataset": dataset,
            "split": split,
            "n_prompts": self.n_prompts,
            "models": list(self.models),
            "confidence": self.confidence,
            "n_bootstrap": self.n_bootstrap,
            "seed": self.seed,
            "cost_span": list(self.cost_span),
            "best_single_model": self.best_model,
            "single_models": {
                m: {"cost": float(self.model_points[j, 0]), "quality": float(self.model_points[j, 1]),
                    "quality_ci": [float(v) for v in self.model_points_ci[j, 1]]}
                for j, m in enumerate(self.models)
            },
            "zero_router": {"aiq": self.zero_aiq, "aiq_ci": list(self.zero_aiq_ci)},
            "oracle": {"cost": self.oracle[0], "quality": self.oracle[1],
                       "quality_ci": [float(v) for v in self.oracle_ci[1]]},
            "tasks": {t: {"n_prompts": i["n_prompts"], "zero_aiq": i["zero_aiq"],
                          "zero_aiq_ci": list(i.get("zero_aiq_ci", (float("nan"), float("nan"))))}
                      for t, i in self.task_models.items()},
            "routers": {},
        }
        for r in self.routers.values():
            entry: dict[str, Any] = {
                "aiq": r.aiq, "aiq_ci": list(r.aiq_ci), "aiq_routerbench": r.aiq_routerbench,
                "max_quality": r.max_quality,
                "saving_at_best_pct": r.saving_at_best, "saving_at_best_pct_ci": list(r.saving_at_best_ci),
                "saving_at_95_pct": r.saving_at_95, "saving_at_95_pct_ci": list(r.saving_at_95_ci),
                "oracle_gap_share": r.oracle_gap_share, "oracle_gap_share_ci": list(r.oracle_gap_share_ci),
                "per_task_aiq": {t: v["aiq"] for t, v in r.per_task.items()},
                "per_task": {t: {"aiq": v["aiq"], "aiq_ci": list(v.get("aiq_ci", ())),
                                 "gain_vs_zero": v.get("gain_vs_zero"),
                                 "gain_vs_zero_ci": list(v.get("gain_vs_zero_ci", ()))}
                             for t, v in r.per_task.items()},
                "points": [{"setting": float(s), "cost": float(p[0]), "quality": float(p[1])}
                           for s, p in zip(r.settings, r.points)],
            }
            if r.apgr is not None and r.apgr_ci is not None:
                entry.update(apgr=r.apgr, apgr_ci=list(r.apgr_ci), cpt50=r.cpt50, cpt80=r.cpt80)
            if r.budget:
                entry["budget"] = r.budget
            if r.operating_point is not None:
                entry["operating_point"] = r.operating_point
            doc["routers"][r.name] = entry
        return dict(_nan_to_none(doc))

    def scalar_metrics(self, prefix: str = "eval") -> dict[str, float]:
        """Flat ``{"eval/<router>/<metric>": value}`` of finite scalars (for MLflow)."""
        out: dict[str, float] = {f"{prefix}/zero_router/aiq": self.zero_aiq,
                                 f"{prefix}/oracle/quality": self.oracle[1], f"{prefix}/oracle/cost": self.oracle[0]}
        for r in self.routers.values():
            vals = {"aiq": r.aiq, "aiq_routerbench": r.aiq_routerbench, "max_quality": r.max_quality,
                    "saving_at_best_pct": r.saving_at_best, "saving_at_95_pct": r.saving_at_95,
                    "oracle_gap_share": r.oracle_gap_share}
            if r.apgr is not None:
                vals.update(apgr=r.apgr, cpt50=r.cpt50 if r.cpt50 is not None else float("nan"),
                            cpt80=r.cpt80 if r.cpt80 is not None else float("nan"))
            for k, v in vals.items():
                out[f"{prefix}/{_metric_key(r.name)}/{k}"] = v
        return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def _metric_key(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in name)


# --------------------------------------------------------------------------- core
def _as_curve(value: Any) -> Curve:
    if isinstance(value, Curve):
        return value
    if isinstance(value, tuple | list) and 2 <= len(value) <= 4:
        return Curve(*value)
    raise ConfigError(
        "each curve must be a Curve or a tuple (settings, choices[, probs[, predicted_quality]])."
    )


def _summaries(hull: Hull, span: tuple[float, float], best_c: float, best_q: float, oracle_q: float) -> np.ndarray:
    return np.array([
        aiq(hull, span),
        savings_at_quality(hull, best_q, best_c),
        savings_at_quality(hull, 0.95 * best_q, best_c),
        oracle_gap_share(hull, best_c, best_q, oracle_q),
    ])


def _best_index(mean_q: np.ndarray, mean_c: np.ndarray) -> int:
    return int(np.lexsort((mean_c, -mean_q))[0])


def evaluate_curves(
    outcomes: Outcomes,
    curves: Mapping[str, Curve | Sequence[Any]],
    *,
    n_bootstrap: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
    n_thresholds: int = 10,
    use_probs: bool = False,
    per_task: bool = True,
) -> EvaluationResult:
    """Measure every router curve against the single models, the zero router and the oracle.

    Args:
        outcomes: full-information outcomes (n prompts, m models).
        curves: router name -> :class:`Curve` or ``(settings (S,), choices (S, n)[, probs (S, n, m)
            [, predicted_quality (n, m)]])``.
        n_bootstrap: bootstrap replicates over prompts for intervals (0 disables them).
        confidence: interval level.
        seed: bootstrap seed.
        n_thresholds: RouteLLM quantile bins for APGR / CPT (two-model pools only).
        use_probs: use expected values under ``probs`` instead of the realised ``choices``.
        per_task: also compute AIQ per task label.

    APGR score, in order of preference: ``Curve.scores``; predicted strong minus weak quality; the
    share of settings that send the prompt to the strong model (:func:`scores_from_choices`).
    The strong model is the best single model, the weak one the other.

    Example: see the module docstring.
    """
    if not curves:
        raise ConfigError("evaluate_curves needs at least one curve.")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}.")
    Q, C = outcomes.quality, outcomes.cost
    n, m = Q.shape
    rows = np.arange(n)

    parsed: dict[str, Curve] = {}
    per_prompt_q: dict[str, np.ndarray] = {}
    per_prompt_c: dict[str, np.ndarray] = {}
    for name, raw in curves.items():
        cv = _as_curve(raw)
        ch = check_choices(cv.choices, n, m)
        settings = np.asarray(cv.settings, dtype=np.float64).reshape(-1)
        if settings.shape[0] != ch.shape[0]:
            raise ValidationError(f"router {name!r}: {settings.shape[0]} settings but choices has {ch.shape[0]} rows.")
        probs = None if cv.probs is None else _check_probs(cv.probs, n, m)
        if probs is not None and probs.shape[0] != ch.shape[0]:
            raise ValidationError(f"router {name!r}: probs has {probs.shape[0]} settings, choices {ch.shape[0]}.")
        pq = None if cv.predicted_quality is None else np.asarray(cv.predicted_quality, dtype=np.float64)
        if pq is not None and pq.shape != (n, m):
            raise ValidationError(f"router {name!r}: predicted_quality must have shape ({n}, {m}), got {pq.shape}.")
        if use_probs and probs is not None:
            per_prompt_q[name] = np.einsum("snm,nm->sn", probs, Q)
            per_prompt_c[name] = np.einsum("snm,nm->sn", probs, C)
        else:
            per_prompt_q[name] = Q[rows, ch]
            per_prompt_c[name] = C[rows, ch]
        if cv.operating_index is not None and not 0 <= int(cv.operating_index) < settings.shape[0]:
            raise ValidationError(f"router {name!r}: operating_index {cv.operating_index} is not one of its "
                                  f"{settings.shape[0]} settings.")
        parsed[name] = Curve(settings, ch, probs, pq, cv.scores, cv.targets, cv.operating_index, cv.operating_info)

    oc, oq = _oracle_per_prompt(Q, C)
    mp = np.stack([C.mean(axis=0), Q.mean(axis=0)], axis=1)
    best = _best_index(mp[:, 1], mp[:, 0])
    span = (float(mp[:, 0].min()), float(mp[:, 0].max()))
    zero_hull = non_decreasing_hull(mp)
    zero_aiq = aiq(zero_hull, span)
    oracle = (float(oc.mean()), float(oq.mean()))

    # ---- layout of per-prompt values whose bootstrap means we need
    names = list(parsed)
    blocks = [Q, C, oq[:, None], oc[:, None]] + [per_prompt_q[k].T for k in names] + [per_prompt_c[k].T for k in names]
    values = np.concatenate(blocks, axis=1)
    S = {k: parsed[k].choices.shape[0] for k in names}
    offs_q, offs_c = {}, {}
    pos = 2 * m + 2
    for k in names:
        offs_q[k] = pos
        pos += S[k]
    for k in names:
        offs_c[k] = pos
        pos += S[k]

    two = m == 2
    weak = 1 - best if two else -1
    apgr_scores: dict[str, np.ndarray] = {}
    if two:
        for k in names:
            cv = parsed[k]
            if cv.scores is not None:
                sc = np.asarray(cv.scores, dtype=np.float64).reshape(-1)
                if sc.shape != (n,):
                    raise ValidationError(f"router {k!r}: scores must have shape ({n},), got {sc.shape}.")
            elif cv.predicted_quality is not None:
                sc = cv.predicted_quality[:, best] - cv.predicted_quality[:, weak]
            else:
                sc = scores_from_choices(cv.choices, best)
            apgr_scores[k] = sc

    # ---- per task
    tasks = sorted(set(outcomes.tasks.tolist())) if per_task else []
    task_models: dict[str, dict[str, Any]] = {}
    task_info: dict[str, tuple[np.ndarray, tuple[float, float], float, float, float]] = {}
    for t in tasks:
        mask = outcomes.tasks == t
        tq, tc = Q[mask].mean(axis=0), C[mask].mean(axis=0)
        tb = _best_index(tq, tc)
        tspan = (float(tc.min()), float(tc.max()))
        _, toq = _oracle_per_prompt(Q[mask], C[mask])
        task_models[t] = {
            "n_prompts": int(mask.sum()),
            "zero_aiq": aiq(non_decreasing_hull(np.stack([tc, tq], axis=1)), tspan),
            "best_model": outcomes.models[tb], "best_quality": float(tq[tb]),
            "oracle_quality": float(toq.mean()),
        }
        task_info[t] = (mask, tspan, float(tc[tb]), float(tq[tb]), float(toq.mean()))

    # ---- bootstrap
    B = int(n_bootstrap)
    reps_model = np.full((max(B, 0), m, 2), np.nan)
    reps_oracle = np.full((max(B, 0), 2), np.nan)
    reps_zero = np.full(max(B, 0), np.nan)
    reps_pts = {k: np.full((max(B, 0), S[k], 2), np.nan) for k in names}
    reps_sum = {k: np.full((max(B, 0), 4), np.nan) for k in names}
    reps_apgr = {k: np.full(max(B, 0), np.nan) for k in apgr_scores}
    reps_task_zero = {t: np.full(max(B, 0), np.nan) for t in task_info}
    reps_task = {k: {t: np.full(max(B, 0), np.nan) for t in task_info} for k in names}
    if B > 0:
        start = 0
        for idx in bootstrap_indices(n, B, seed):
            b = idx.shape[0]
            flat = (idx + (np.arange(b) * n)[:, None]).ravel()
            counts = np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
            means = counts @ values / n  # (b, k)
            for i in range(b):
                r = start + i
                mq, mc = means[i, :m], means[i, m:2 * m]
                reps_model[r, :, 0], reps_model[r, :, 1] = mc, mq
                o_q, o_c = means[i, 2 * m], means[i, 2 * m + 1]
                reps_oracle[r] = (o_c, o_q)
                bi = _best_index(mq, mc)
                sp = (float(mc.min()), float(mc.max()))
                reps_zero[r] = aiq(non_decreasing_hull(np.stack([mc, mq], axis=1)), sp)
                for k in names:
                    pq_ = means[i, offs_q[k]:offs_q[k] + S[k]]
                    pc_ = means[i, offs_c[k]:offs_c[k] + S[k]]
                    reps_pts[k][r, :, 0], reps_pts[k][r, :, 1] = pc_, pq_
                    h = non_decreasing_hull(np.stack([pc_, pq_], axis=1))
                    reps_sum[k][r] = _summaries(h, sp, float(mc[bi]), float(mq[bi]), float(o_q))
                for k, sc in apgr_scores.items():
                    ix = idx[i]
                    reps_apgr[k][r] = _pgr_area(_pgr_curve(Q[ix, weak], Q[ix, best], sc[ix], n_thresholds))
            for t, (mask, *_rest) in task_info.items():  # per-task AIQ on the same resamples (paired)
                weight = counts[:, mask].sum(axis=1)
                tmeans = counts[:, mask] @ values[mask] / np.maximum(weight, 1.0)[:, None]
                for i in np.flatnonzero(weight > 0).tolist():
                    r = start + i
                    tq_, tc_ = tmeans[i, :m], tmeans[i, m:2 * m]
                    tsp = (float(tc_.min()), float(tc_.max()))
                    reps_task_zero[t][r] = aiq(non_decreasing_hull(np.stack([tc_, tq_], axis=1)), tsp)
                    for k in names:
                        pq_ = tmeans[i, offs_q[k]:offs_q[k] + S[k]]
                        pc_ = tmeans[i, offs_c[k]:offs_c[k] + S[k]]
                        reps_task[k][t][r] = aiq(non_decreasing_hull(np.stack([pc_, pq_], axis=1)), tsp)
            start += b

    def ci(x: np.ndarray) -> tuple[float, float]:
        return percentile_interval(x, confidence) if B > 0 else (float("nan"), float("nan"))

    def ci_pairs(x: np.ndarray) -> np.ndarray:  # (B, k, 2) -> (k, 2, 2)
        out = np.full((x.shape[1], 2, 2), np.nan)
        if B > 0:
            for j in range(x.shape[1]):
                for d in range(2):
                    out[j, d] = ci(x[:, j, d])
        return out

    for t in task_info:
        task_models[t]["zero_aiq_ci"] = ci(reps_task_zero[t])
    routers: dict[str, RouterEvaluation] = {}
    for k in names:
        cv = parsed[k]
        pts = np.stack([per_prompt_c[k].mean(axis=1), per_prompt_q[k].mean(axis=1)], axis=1)
        h = non_decreasing_hull(pts)
        summ = _summaries(h, span, float(mp[best, 0]), float(mp[best, 1]), oracle[1])
        ev = RouterEvaluation(
            name=k, settings=cv.settings, points=pts, points_ci=ci_pairs(reps_pts[k]),
            shares=routing_shares(cv.choices, m), hull=h, aiq=float(summ[0]), aiq_ci=ci(reps_sum[k][:, 0]),
            aiq_routerbench=aiq_routerbench(h), max_quality=h.max_quality,
            saving_at_best=float(summ[1]), saving_at_best_ci=ci(reps_sum[k][:, 1]),
            saving_at_95=float(summ[2]), saving_at_95_ci=ci(reps_sum[k][:, 2]),
            oracle_gap_share=float(summ[3]), oracle_gap_share_ci=ci(reps_sum[k][:, 3]),
        )
        if k in apgr_scores:
            crv = _pgr_curve(Q[:, weak], Q[:, best], apgr_scores[k], n_thresholds)
            ev.apgr, ev.apgr_ci = _pgr_area(crv), ci(reps_apgr[k])
            ev.cpt50, ev.cpt80 = _first_crossing(crv, 0.5), _first_crossing(crv, 0.8)
        for t, (mask, tspan, bc, bq, t_oq) in task_info.items():
            tp = np.stack([per_prompt_c[k][:, mask].mean(axis=1), per_prompt_q[k][:, mask].mean(axis=1)], axis=1)
            th = non_decreasing_hull(tp)
            ts = _summaries(th, tspan, bc, bq, t_oq)
            zero_t = float(task_models[t]["zero_aiq"])
            ev.per_task[t] = {"n_prompts": int(mask.sum()), "aiq": float(ts[0]), "max_quality": th.max_quality,
                              "saving_at_best": float(ts[1]), "oracle_gap_share": float(ts[3]),
                              "aiq_ci": ci(reps_task[k][t]), "gain_vs_zero": float(ts[0]) - zero_t,
                              "gain_vs_zero_ci": ci(reps_task[k][t] - reps_task_zero[t])}
        if cv.targets is not None:
            tg = np.asarray(cv.targets, dtype=np.float64).reshape(-1)
            if tg.shape[0] != pts.shape[0]:
                raise ValidationError(f"router {k!r}: targets must have shape ({pts.shape[0]},), got {tg.shape}.")
            from router.metrics.curves import budget_fidelity

            ev.budget = budget_fidelity(1000.0 * pts[:, 0], tg)
        if cv.operating_index is not None:
            i = int(cv.operating_index)
            ev.operating_point = {
                "setting": float(cv.settings[i]), "cost": float(pts[i, 0]), "quality": float(pts[i, 1]),
                "cost_ci": [float(v) for v in ev.points_ci[i, 0]], "quality_ci": [float(v) for v in ev.points_ci[i, 1]],
                "shares": {outcomes.models[j]: float(ev.shares[i, j]) for j in range(m)},
                **dict(cv.operating_info or {}),
            }
        if cv.predicted_quality is not None:
            ev.predicted_quality = cv.predicted_quality
            ev.realised_quality = Q
        routers[k] = ev

    return EvaluationResult(
        models=tuple(outcomes.models), n_prompts=n, model_points=mp, model_points_ci=ci_pairs(reps_model),
        cost_span=span, best_model=str(outcomes.models[best]), zero_hull=zero_hull, zero_aiq=zero_aiq,
        zero_aiq_ci=ci(reps_zero), oracle=oracle, oracle_ci=ci_pairs(reps_oracle[:, None, :])[0],
        routers=routers, task_models=task_models, confidence=confidence, n_bootstrap=B, seed=seed,
    )
