"""Full-information routing metrics (numpy only): points, hulls, AIQ, APGR/CPT, savings, bootstrap.

* :mod:`router.metrics.curves` -- points, the non-decreasing hull, AIQ (ours and RouterBench's),
  savings at matched quality, the oracle and its gap, budget fidelity.
* :mod:`router.metrics.routellm` -- RouteLLM's PGR curve, APGR and CPT for two-model pools.
* :mod:`router.metrics.bootstrap` -- seeded vectorised bootstrap over prompts.
* :mod:`router.metrics.evaluate` -- :func:`evaluate_curves`, results as flat rows / ``metrics.json``.

Example:
    >>> from router.metrics import aiq, non_decreasing_hull
    >>> round(aiq(non_decreasing_hull([[1.0, 0.5], [3.0, 0.9]]), (1.0, 3.0)), 3)
    0.7
"""

from router.metrics.bootstrap import bootstrap_means, percentile_interval
from router.metrics.curves import (
    Hull,
    aiq,
    aiq_routerbench,
    budget_fidelity,
    cost_at_quality,
    model_points,
    non_decreasing_hull,
    oracle_gap_share,
    oracle_point,
    points,
    routing_shares,
    savings_at_quality,
    spend_per_1k,
)
from router.metrics.evaluate import METRICS_SCHEMA_VERSION, Curve, EvaluationResult, evaluate_curves
from router.metrics.routellm import PGRCurve, apgr, cpt, pgr_curve, scores_from_choices

__all__ = [
    "METRICS_SCHEMA_VERSION",
    "Curve",
    "EvaluationResult",
    "Hull",
    "PGRCurve",
    "aiq",
    "aiq_routerbench",
    "apgr",
    "bootstrap_means",
    "budget_fidelity",
    "cost_at_quality",
    "cpt",
    "evaluate_curves",
    "model_points",
    "non_decreasing_hull",
    "oracle_gap_share",
    "oracle_point",
    "percentile_interval",
    "pgr_curve",
    "points",
    "routing_shares",
    "savings_at_quality",
    "scores_from_choices",
    "spend_per_1k",
]
