"""Token cost model and latency model."""

from __future__ import annotations

import numpy as np
import pytest

from router.costs import LatencyModel, TokenCostModel
from router.errors import ConfigError, NotFittedError


def _data(seed=0, n=200):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    lengths = rng.integers(10, 500, size=n).astype(float)
    out = np.c_[50 + 20 * x[:, 0], 300 + 100 * x[:, 1]].clip(0)
    return x, lengths, out


def test_token_cost_recovers_linear_tokens_and_prices():
    x, lengths, out = _data()
    cm = TokenCostModel(alpha=1e-3).fit(x, lengths, output_tokens=out)
    np.testing.assert_allclose(cm.predict_output_tokens(x, lengths), out, atol=8)
    p_in, p_out = np.array([1e-6, 2e-6]), np.array([3e-6, 4e-6])
    cost = cm.predict(x, lengths, p_in, p_out)
    np.testing.assert_allclose(cost, lengths[:, None] * p_in + cm.predict_output_tokens(x, lengths) * p_out)
    assert cost.shape == (200, 2) and (cost >= 0).all()


def test_token_cost_falls_back_to_cost_and_handles_missing():
    x, lengths, out = _data(1)
    cost = out * 1e-6
    cost[::7, 1] = np.nan
    cm = TokenCostModel().fit(x, lengths, cost=cost)
    assert cm.mode_ == "cost"
    pred = cm.predict(x, lengths)
    assert pred.shape == (200, 2) and (pred >= 0).all()
    with pytest.raises(ConfigError, match="cost only"):
        cm.predict_output_tokens(x, lengths)
    again = TokenCostModel.from_config(cm.get_config(), cm.get_state())
    np.testing.assert_array_equal(again.predict(x, lengths), pred)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda cm, x, ln, o: cm.fit(x, ln), "output_tokens"),
        (lambda cm, x, ln, o: cm.fit(x, ln[:-1], output_tokens=o), "prompt_lengths"),
        (lambda cm, x, ln, o: cm.fit(x, ln, output_tokens=-o), ">= 0"),
        (lambda cm, x, ln, o: cm.fit(x[:0], ln[:0], output_tokens=o[:0]), "empty"),
    ],
)
def test_token_cost_errors(call, match):
    x, lengths, out = _data()
    with pytest.raises(ConfigError, match=match):
        call(TokenCostModel(), x, lengths, out)


def test_token_cost_needs_prices_and_fit():
    x, lengths, out = _data()
    with pytest.raises(NotFittedError):
        TokenCostModel().predict(x, lengths, [0, 0], [0, 0])
    cm = TokenCostModel().fit(x, lengths, output_tokens=out)
    with pytest.raises(ConfigError, match="prices"):
        cm.predict(x, lengths)
    with pytest.raises(ConfigError, match="width"):
        cm.predict(x[:, :2], lengths, [0, 0], [0, 0])


def test_latency_model_learns_ttft_and_throughput():
    rng = np.random.default_rng(0)
    tok = rng.integers(10, 1000, size=(300, 2)).astype(float)
    lat = np.array([0.3, 1.0]) + tok / np.array([100.0, 25.0]) + rng.normal(0, 0.01, size=tok.shape)
    lm = LatencyModel().fit(lat, tok)
    np.testing.assert_allclose(lm.ttft_, [0.3, 1.0], atol=0.05)
    np.testing.assert_allclose(lm.throughput_, [100, 25], rtol=0.05)
    ttft = np.broadcast_to([0.3, 1.0], tok.shape)
    lm2 = LatencyModel().fit(lat, tok, ttft=ttft)
    np.testing.assert_allclose(lm2.throughput_, [100, 25], rtol=0.05)
    again = LatencyModel.from_config(lm.get_config(), lm.get_state())
    np.testing.assert_array_equal(again.predict(tok), lm.predict(tok))


def test_latency_model_defaults_and_errors():
    lm = LatencyModel(default_ttft=[0.1, 0.2], default_throughput=[10.0, 20.0]).fit(n_models=2)
    np.testing.assert_allclose(lm.predict(np.array([[10.0, 20.0]])), [[1.1, 1.2]])
    with pytest.raises(ConfigError, match="3 models"):
        LatencyModel(default_ttft=[0.1, 0.2]).fit(n_models=3)
    with pytest.raises(ConfigError, match="default_throughput"):
        LatencyModel(default_throughput=0.0)
    with pytest.raises(ConfigError, match="n_models"):
        LatencyModel().fit()
    lat = np.full((10, 2), np.nan)
    lat[:, 0] = 2.0
    lm = LatencyModel().fit(lat, np.full((10, 2), 50.0))
    assert lm.throughput_[1] == 50.0, "a model without logs keeps the default"


def test_predictions_stay_in_the_training_range_off_distribution():
    """A prompt unlike every training prompt must not get zero (or absurd) predicted answer tokens."""
    from router.cost_predictor import CostPredictor
    from router.data.synthetic import generate

    o = generate(400, seed=1).outcomes
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    lengths = np.array([len(p) for p in o.prompts], dtype=float)
    cm = TokenCostModel(alpha=1e-3).fit(x, lengths, output_tokens=o.output_tokens)
    far = 50.0 * rng.normal(size=(5, 16)).astype(np.float32)
    pred = cm.predict_target(far, np.full(5, 10.0))
    lo, hi = o.output_tokens.min(axis=0), o.output_tokens.max(axis=0)
    assert (pred >= lo - 1e-9).all() and (pred <= hi + 1e-9).all()
    cp = CostPredictor().fit(x, lengths, o)
    assert (cp.predict(far, np.full(5, 10.0)) > 0).all()
    fresh = TokenCostModel(alpha=1e-3)
    fresh.set_state(cm.get_state())
    assert np.array_equal(fresh.predict_target(far, np.full(5, 10.0)), pred)


def test_predict_both_equals_the_two_predictions_it_replaces():
    """The router asks a cost model for USD and seconds in one call; the answers must be exactly the
    separate calls' (the predicted answer length is computed once instead of twice)."""
    from router.base import CostModel
    from router.cost_predictor import CostPredictor
    from router.data.synthetic import generate

    o = generate(300, seed=2).outcomes
    x = np.random.default_rng(1).normal(size=(300, 16)).astype(np.float32)
    lengths = np.array([len(p) for p in o.prompts], dtype=float)
    cp = CostPredictor().fit(x, lengths, o)
    cost, lat = cp.predict_both(x[:37], lengths[:37])
    assert np.array_equal(cost, cp.predict(x[:37], lengths[:37]))
    expected_lat = cp.predict_latency(x[:37], lengths[:37])
    assert expected_lat is not None and lat is not None and np.array_equal(lat, expected_lat)
    # the default of any cost model: the two calls as they are
    both = CostModel.predict_both(cp, x[:5], lengths[:5])
    assert np.array_equal(both[0], cost[:5]) and np.array_equal(both[1], lat[:5])
