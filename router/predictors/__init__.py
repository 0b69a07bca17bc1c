"""Quality predictors: ``fit(embeddings (n, d), quality (n, m))`` -> ``predict(embeddings) -> (n, m)``.

One predictor per module, each behind :class:`router.base.QualityPredictor`, registered by its
``kind`` in :mod:`router.registry` (``PREDICTORS`` is a live view of that table):

==========================  ===================================================  ============
kind                        class                                                 outputs
==========================  ===================================================  ============
``"knn"``                   :class:`KNNPredictor` (FAISS exact search)            neighbour mean
``"logistic"``              :class:`LogisticPredictor` (fractional logit)         probabilities
``"mlp"``                   :class:`MLPPredictor` (torch, soft-target BCE)        probabilities
``"matrix_factorization"``  :class:`MatrixFactorizationPredictor` (RouteLLM MF)   probabilities
                            (alias ``"mf"``)
``"ensemble"``              :class:`EnsemblePredictor` (kNN + logistic + MLP)    mean
==========================  ===================================================  ============

torch and faiss are imported inside methods, never at import time.

**Adding a predictor is one file**: a module in this package with a subclass of
:class:`router.predictors._common.BasePredictor` that sets ``kind`` and implements ``_fit``,
``_predict``, ``get_state`` and ``set_state`` (see :mod:`router.registry` for a complete example).
``training fit --predictor KIND``, saving and loading routers, the ensemble's ``members`` and the
conformance suite (``tests/conformance.py``) pick it up without further edits.

Example:
    >>> import numpy as np
    >>> x = np.eye(3); q = np.eye(3)
    >>> p = predictor_from_config("knn", {"k": 1}).fit(x, q)
    >>> again = predictor_from_config("knn", p.get_config(), p.get_state())
    >>> again.predict(x).argmax(axis=1).tolist()
    [0, 1, 2]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from router import registry
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

#: kind -> predictor class: a live view of the predictor registry.
PREDICTORS: Mapping[str, type[QualityPredictor]] = registry.table("predictor")


def predictor_from_config(
    kind: str, config: dict[str, Any] | None = None, state: dict[str, np.ndarray] | None = None
) -> QualityPredictor:
    """Rebuild a predictor from its ``kind`` (or alias), ``get_config()`` and (optionally) ``get_state()``."""
    if kind not in registry.names("predictor"):
        raise ConfigError(f"Unknown predictor kind {kind!r}; known kinds: {registry.kinds('predictor')}.")
    obj: QualityPredictor = registry.create("predictor", kind, **(config or {}))
    if state:
        obj.set_state(state)
    return obj
