"""Known-answer and persistence tests for :class:`EnsemblePredictor` on easy synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from router.errors import ConfigError
from router.predictors import EnsemblePredictor, predictor_from_config

FAST = [("knn", {"k": 5}), ("logistic", {"C": 10.0}), ("mlp", {"hidden": (16,), "epochs": 40, "lr": 0.02})]


def clusters(n_per: int = 40, seed: int = 0):
    """Three clusters; model j is right exactly on cluster j."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3) * 3.0
    x = np.concatenate([c + rng.normal(scale=0.3, size=(n_per, 3)) for c in centres])
    q = np.repeat(np.eye(3), n_per, axis=0)
    return x, q


def test_known_answer_picks_the_right_model_per_cluster():
    x, q = clusters()
    xt, _ = clusters(seed=1)
    pred = EnsemblePredictor(members=FAST, seed=0).fit(x, q).predict(xt)
    assert (pred.argmax(axis=1) == np.repeat(np.arange(3), 40)).mean() > 0.95
    assert pred.shape == (120, 3) and pred.min() >= 0 and pred.max() <= 1


def test_prediction_is_weighted_mean_of_members():
    x, q = clusters()
    ens = EnsemblePredictor(members=FAST[:2], weights=[3.0, 1.0]).fit(x, q)
    each = ens.member_predictions(x)
    np.testing.assert_allclose(ens.predict(x), 0.75 * each[0] + 0.25 * each[1], atol=1e-12)


def test_state_roundtrip_is_numeric_and_identical():
    x, q = clusters()
    ens = EnsemblePredictor(members=FAST, seed=3).fit(x, q)
    state = ens.get_state()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in state.values())
    again = predictor_from_config("ensemble", ens.get_config(), state)
    np.testing.assert_allclose(again.predict(x), ens.predict(x))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"members": []}, "at least one member"),
        ({"members": [("nope", {})]}, "unknown member kind"),
        ({"members": "knn"}, "pairs"),
        ({"members": FAST[:2], "weights": [1.0]}, "weights must be 2"),
        ({"members": FAST[:2], "weights": [-1.0, 1.0]}, "non-negative"),
        ({"seed": 1.5}, "seed must be an int"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        EnsemblePredictor(**kwargs)
