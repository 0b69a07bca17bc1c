"""RouteLLM's two-model metrics: PGR curve, APGR and CPT, as ``routellm/evals/evaluate.py`` computes them.

A two-model router gives each prompt a score (the strong model's win probability). RouteLLM
(``benchmarks.py``) takes thresholds at the score quantiles ``0, 1/T, ..., 1`` (``pd.qcut`` bin
edges) and sends a prompt to the strong model when ``score >= threshold`` (``>`` for the last
threshold, so the curve reaches 0 strong calls). Each threshold gives a point
(share of strong-model calls, quality) and

* ``PGR = (q - q_weak) / (q_strong - q_weak)`` (performance gap recovered);
* ``APGR`` = trapezoid area of PGR over the strong-call share (RouteLLM: ``(AUC - weak_auc) /
  (strong_auc - weak_auc)``, the same number);
* ``CPT(x%)`` = the share of strong-model calls needed to reach ``PGR >= x``. RouteLLM gets it with
  ``np.interp`` on the curve, which assumes quality rises with the share; we take the *first*
  crossing of the linearly interpolated curve, which equals RouteLLM's value on monotone curves and
  stays defined on noisy ones. Shares are fractions in [0, 1] (RouteLLM prints percent).

Random scores give PGR ≈ share at every threshold, so APGR ≈ 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from router.errors import ValidationError

__all__ = ["PGRCurve", "apgr", "cpt", "pgr_curve", "scores_from_choices"]


@dataclass(frozen=True)
class PGRCurve:
    """A RouteLLM curve.

    Attributes:
        share: (T+1,) share of strong-model calls, ascending.
        quality: (T+1,) mean quality at each threshold.
        pgr: (T+1,) performance gap recovered (NaN when both models have equal quality).
        quality_weak, quality_strong: the two single models' mean quality.
    """

    share: np.ndarray
    quality: np.ndarray
    pgr: np.ndarray
    quality_weak: float
    quality_strong: float


def _check(quality_weak: Any, quality_strong: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    qw = np.asarray(quality_weak, dtype=np.float64)
    qs = np.asarray(quality_strong, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)
    if qw.ndim != 1 or qw.shape != qs.shape or qw.shape != sc.shape:
        raise ValidationError(
            f"quality_weak, quality_strong and scores must all have shape (n,), got {qw.shape}, {qs.shape}, {sc.shape}."
        )
    if qw.size == 0:
        raise ValidationError("APGR needs at least one prompt.")
    if not (np.isfinite(qw).all() and np.isfinite(qs).all() and np.isfinite(sc).all()):
        raise ValidationError("quality and scores must be finite; drop prompts with missing values first.")
    return qw, qs, sc


def _curve(qw: np.ndarray, qs: np.ndarray, sc: np.ndarray, n_thresholds: int) -> PGRCurve:
    thresholds = np.quantile(sc, np.linspace(0.0, 1.0, n_thresholds + 1))
    strong = sc[None, :] >= thresholds[:, None]  # (T+1, n)
    strong[-1] = sc > thresholds[-1]
    share = strong.mean(axis=1)
    quality = np.where(strong, qs[None, :], qw[None, :]).mean(axis=1)
    w, s = float(qw.mean()), float(qs.mean())
    with np.errstate(divide="ignore", invalid="ignore"):
        pgr = (quality - w) / (s - w) if abs(s - w) > 1e-12 else np.full_like(quality, np.nan)
    order = np.argsort(share, kind="stable")
    return PGRCurve(share=share[order], quality=quality[order], pgr=pgr[order], quality_weak=w, quality_strong=s)


def pgr_curve(quality_weak: Any, quality_strong: Any, scores: Any, n_thresholds: int = 10) -> PGRCurve:
    """The RouteLLM curve at ``n_thresholds + 1`` score-quantile thresholds.

    Args:
        quality_weak: (n,) per-prompt quality of the weak model.
        quality_strong: (n,) per-prompt quality of the strong model.
        scores: (n,) router score per prompt; higher = more likely sent to the strong model.
        n_thresholds: number of quantile bins (RouteLLM's ``--num-results``, default 10).

    Example:
        >>> c = pgr_curve([0, 0, 1, 1], [1, 1, 1, 1], [0.9, 0.8, 0.1, 0.2], n_thresholds=4)
        >>> c.share.tolist(), c.pgr.tolist()
        ([0.0, 0.25, 0.5, 0.75, 1.0], [0.0, 0.5, 1.0, 1.0, 1.0])
    """
    qw, qs, sc = _check(quality_weak, quality_strong, scores)
    return _curve(qw, qs, sc, int(n_thresholds))


def _area(curve: PGRCurve) -> float:
    x, y = curve.share, curve.pgr
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def apgr(quality_weak: Any, quality_strong: Any, scores: Any, n_thresholds: int = 10) -> float:
    """Average performance gap recovered (RouteLLM): trapezoid area of PGR over the strong-call share.

    Args:
        quality_weak: (n,) per-prompt quality of the weak model.
        quality_strong: (n,) per-prompt quality of the strong model.
        scores: (n,) router score per prompt (strong-model win probability).
        n_thresholds: number of quantile bins.

    Example (a perfect router sends exactly the prompts the weak model fails to the strong one):
        >>> apgr([0, 0, 1, 1], [1, 1, 1, 1], [0.9, 0.8, 0.1, 0.2], n_thresholds=4)
        0.75
    """
    return _area(pgr_curve(quality_weak, quality_strong, scores, n_thresholds))


def _first_crossing(curve: PGRCurve, level: float) -> float:
    x, y = curve.share, curve.pgr
    ok = y >= level - 1e-12
    if not ok.any():
        return float("nan")
    k = int(np.argmax(ok))
    if k == 0:
        return float(x[0])
    return float(x[k - 1] + (level - y[k - 1]) * (x[k] - x[k - 1]) / (y[k] - y[k - 1]))


def cpt(quality_weak: Any, quality_strong: Any, scores: Any, level: float = 0.5, n_thresholds: int = 10) -> float:
    """Call-performance threshold: the least share of strong-model calls that reaches ``PGR >= level``.

    Args:
        quality_weak: (n,) per-prompt quality of the weak model.
        quality_strong: (n,) per-prompt quality of the strong model.
        scores: (n,) router score per prompt.
        level: the PGR to reach (0.5 for CPT(50%), 0.8 for CPT(80%)).
        n_thresholds: number of quantile bins.

    Returns:
        the share in [0, 1]; NaN when never reached or when the models have equal quality.

    Example:
        >>> cpt([0, 0, 1, 1], [1, 1, 1, 1], [0.9, 0.8, 0.1, 0.2], level=0.5, n_thresholds=4)
        0.25
    """
    return _first_crossing(pgr_curve(quality_weak, quality_strong, scores, n_thresholds), level)


def scores_from_choices(choices: Any, strong: int) -> np.ndarray:
    """(n,) score per prompt from a settings sweep: the share of settings that send it to ``strong``.

    For a threshold router swept over its knob, a prompt sent to the strong model at more settings
    has a higher strong-model win score, so this recovers the router's ranking.

    Args:
        choices: (S, n) int model indices.
        strong: index of the strong model.

    Example:
        >>> scores_from_choices([[1, 0, 0], [1, 1, 0]], strong=1).tolist()
        [1.0, 0.5, 0.0]
    """
    ch = np.asarray(choices)
    if ch.ndim == 1:
        ch = ch[None]
    return (ch == strong).mean(axis=0).astype(np.float64)
