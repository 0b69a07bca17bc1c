"""Overlap diagnostics for importance weights ``w_i = pi(a_i | x_i) / p_i``.

* ``ess`` -- Kish effective sample size ``(sum w)^2 / sum w^2``; ``ess_ratio = ess / n``.
* ``max_weight`` -- the largest weight (one round can dominate IPS when it is large).
* ``share_zero_target`` -- share of logged actions the target policy would never take
  (``pi(a_i | x_i) = 0``): those rounds carry no information for IPS/SNIPS.
* ``warnings`` -- plain-language warnings:

  - *weak overlap* when ``ess_ratio < ess_warn_ratio`` (default 0.1, i.e. the log is worth fewer
    than a tenth of its rounds to IPS-type estimators; intervals are then unreliable, prefer DR/DM
    and collect more exploratory traffic);
  - *mean weight far from 1* when ``|mean(w) - 1| > 0.2``: with correct propensities and a
    logger that covers the target, mean(w) is 1 in expectation; a large deviation points to wrong
    propensities or actions the logger hardly explores;
  - *all logged actions unused* when ``share_zero_target == 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from router.ope._validate import check_inputs

__all__ = ["OverlapDiagnostics", "overlap_diagnostics", "ESS_WARN_RATIO"]

#: ESS / n below this raises the weak-overlap warning.
ESS_WARN_RATIO = 0.1


@dataclass(frozen=True)
class OverlapDiagnostics:
    """Importance-weight diagnostics of one logged batch against one target policy."""

    n: int
    ess: float
    ess_ratio: float
    max_weight: float
    mean_weight: float
    share_zero_target: float
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "ess": self.ess, "ess_ratio": self.ess_ratio, "max_weight": self.max_weight,
                "mean_weight": self.mean_weight, "share_zero_target": self.share_zero_target,
                "warnings": list(self.warnings)}


def overlap_diagnostics(
    action: Any, propensity: Any, action_dist: Any, ess_warn_ratio: float = ESS_WARN_RATIO
) -> OverlapDiagnostics:
    """Diagnostics for action (n,), propensity (n,) and the target's action_dist (n, m).

    Example:
        >>> d = overlap_diagnostics([0, 1, 0, 1], [0.5] * 4, [[1.0, 0.0]] * 4)
        >>> d.ess, d.share_zero_target, d.max_weight
        (2.0, 0.5, 2.0)
    """
    a = np.asarray(action)
    _, a, p, pi, _, _ = check_inputs(np.zeros(a.shape[0]), a, propensity, action_dist)
    n = a.shape[0]
    target = pi[np.arange(n), a]
    w = target / p
    sw, sw2 = float(w.sum()), float((w**2).sum())
    ess = sw * sw / sw2 if sw2 > 0 else 0.0
    mean_w = float(w.mean())
    share_zero = float((target == 0).mean())
    warns: list[str] = []
    if ess / n < ess_warn_ratio:
        warns.append(
            f"weak overlap: effective sample size {ess:.1f} is {ess / n:.1%} of {n} rounds (< {ess_warn_ratio:.0%}); "
            "IPS-type estimates and their intervals are unreliable -- prefer DR, or log more exploratory traffic."
        )
    if abs(mean_w - 1.0) > 0.2:
        warns.append(
            f"mean importance weight is {mean_w:.2f} (expected about 1): check the logged propensities, or the "
            "target policy favours actions the logging policy rarely took."
        )
    if share_zero == 1.0:
        warns.append("the target policy never takes any logged action: IPS/SNIPS have no data; only DM applies.")
    return OverlapDiagnostics(n, float(ess), float(ess / n), float(w.max()), mean_w, share_zero, warns)
