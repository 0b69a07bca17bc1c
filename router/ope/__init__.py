"""Off-policy evaluation on traffic logs with propensities: IPS, clipped IPS, SNIPS, DM, DR, Switch-DR.

Example:
    >>> import numpy as np
    >>> from router.ope import DR
    >>> n = 1000; a = np.arange(n) % 2; r = np.where(a == 1, 0.9, 0.2); p = np.full(n, 0.5)
    >>> round(DR().estimate_policy_value(r, a, p, np.tile([0.0, 1.0], (n, 1))), 3)
    0.9
"""

from router.ope.diagnostics import ESS_WARN_RATIO, OverlapDiagnostics, overlap_diagnostics
from router.ope.estimators import (
    DM,
    DR,
    IPS,
    SNIPS,
    ClippedIPS,
    DirectMethod,
    DoublyRobust,
    Estimate,
    InverseProbabilityWeighting,
    OffPolicyEstimator,
    OPEResult,
    SelfNormalizedInverseProbabilityWeighting,
    SwitchDoublyRobust,
    SwitchDR,
    evaluate_policy,
    on_policy_mean,
)
from router.ope.reward_model import CrossFitRewardModel

__all__ = [
    "DM",
    "DR",
    "ESS_WARN_RATIO",
    "IPS",
    "SNIPS",
    "ClippedIPS",
    "CrossFitRewardModel",
    "DirectMethod",
    "DoublyRobust",
    "InverseProbabilityWeighting",
    "SelfNormalizedInverseProbabilityWeighting",
    "SwitchDoublyRobust",
    "Estimate",
    "OPEResult",
    "OffPolicyEstimator",
    "OverlapDiagnostics",
    "SwitchDR",
    "evaluate_policy",
    "on_policy_mean",
    "overlap_diagnostics",
]
