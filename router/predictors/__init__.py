"""Quality predictors: ``fit(embeddings (n, d), quality (n, m))`` -> ``predict(embeddings) -> (n, m)``.

One predictor per module, each behind :class:`router.base.QualityPredictor`:

==========================  ===================================================  ============
kind                        class                                                 outputs
==========================  ===================================================  ============
``"knn"``                   :class:`KNNPredictor` (FAISS exact search)            neighbour mean
``"logistic"``              :class:`LogisticPredictor` (fractional logit)         probabilities
``"mlp"``                   :class:`MLPPredictor` (torch, soft-target BCE)        probabilities
``"matrix_factorization"``  :class:`MatrixFactorizationPredictor` (RouteLLM MF)   probabilities
``"ensemble"``              :class:`EnsemblePredictor` (kNN + logistic + MLP)    mean
==========================  ===================================================  ============

torch and faiss are imported inside methods, never at import time.

Example:
    >>> import numpy as np
    >>> x = np.eye(3); q = np.eye(3)
    >>> p = predictor_from_config("knn", {"k": 1}).fit(x, q)
    >>> again = predictor_from_config("knn", p.get_config(), p.get_state())
    >>> again.predict(x).argmax(axis=1).tolist()
    [0, 1, 2]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from router.base import QualityPredictor
from router.errors import ConfigError
from router.predictors.calibration import (
    IsotonicCalibrator,
    PlattCalibrator,
    expected_calibration_error,
    out_of_fold_scores,
)
from router.predictors.ensemble import EnsemblePredictor
from router.predictors.knn import KNNPredictor
from router.predictors.logistic import LogisticPredictor
from router.predictors.matrix_factorization import MatrixFactorizationPredictor
from router.predictors.mlp import MLPPredictor

__all__ = [
    "PREDICTORS",
    "IsotonicCalibrator",
    "KNNPredictor",
    "LogisticPredictor",
    "MLPPredictor",
    "MatrixFactorizationPredictor",
    "PlattCalibrator",
    "EnsemblePredictor",
    "expected_calibration_error",
    "out_of_fold_scores",
    "predictor_from_config",
]

#: kind -> predictor class, used for loading.
PREDICTORS: dict[str, type[QualityPredictor]] = {
    cls.kind: cls for cls in (KNNPredictor, LogisticPredictor, MLPPredictor, MatrixFactorizationPredictor, EnsemblePredictor)
}


def predictor_from_config(
    kind: str, config: dict[str, Any] | None = None, state: dict[str, np.ndarray] | None = None
) -> QualityPredictor:
    """Rebuild a predictor from its ``kind``, ``get_config()`` and (optionally) ``get_state()``."""
    if kind not in PREDICTORS:
        raise ConfigError(f"Unknown predictor kind {kind!r}; known kinds: {sorted(PREDICTORS)}.")
    cls = PREDICTORS[kind]
    try:
        obj = cls(**(config or {}))
    except TypeError as exc:
        raise ConfigError(f"Bad arguments for predictor kind {kind!r}: {exc}.") from exc
    if state:
        obj.set_state(state)
    return obj
