"""The sweep's lambda grid traces every operating point of a router (so its AIQ is not under-reported
against the zero router), with known answers worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from router.decision import DecisionRule
from router.errors import ConfigError
from router.lambdas import default_lambda_grid, switch_points
from router.metrics import evaluate_curves


def _choices(q, c, lams):
    return np.stack([DecisionRule(lam=float(v)).probabilities(q, c).probabilities.argmax(axis=1) for v in lams])


def test_switch_points_by_hand():
    # prompt 0: best (0.9, $0.3) -> middle (0.8, $0.2) at 0.1 / 0.1 = 1 -> cheapest (0.5, $0) at 0.3 / 0.2 = 1.5
    # prompt 1: the middle model lies under the line from cheapest to best, so one switch at 0.4 / 0.3
    q = np.array([[0.5, 0.8, 0.9], [0.5, 0.6, 0.9]])
    c = np.array([[0.0, 0.2, 0.3], [0.0, 0.2, 0.3]])
    assert np.allclose(np.sort(switch_points(q, c)), [1.0, 0.4 / 0.3, 1.5])
    grid = default_lambda_grid(q, c)
    assert np.allclose(grid, [0.0, (1.0 + 0.4 / 0.3) / 2, (0.4 / 0.3 + 1.5) / 2, (1.5 + 3.0) / 2])
    assert _choices(q, c, grid).tolist() == [[2, 2], [1, 2], [1, 0], [0, 0]]
    # a model the prompt may not use is no stop on its way down
    feasible = np.array([[True, False, True], [True, True, True]])
    assert np.allclose(np.sort(switch_points(q, c, feasible)), [0.4 / 0.3, 0.4 / 0.3])


def test_grid_finds_every_operating_point_a_dense_sweep_finds():
    rng = np.random.default_rng(0)
    q = rng.random((40, 5))
    c = rng.random((40, 5)) * np.array([1, 2, 4, 8, 16]) * 1e-3
    dense = np.concatenate([[0.0], np.geomspace(1e-3, 1e6, 4000)])
    seen = {tuple(row) for row in _choices(q, c, dense)}
    grid = default_lambda_grid(q, c, n=1000)
    ours = {tuple(row) for row in _choices(q, c, grid)}
    assert seen <= ours and len(ours) == len(grid)  # each lambda a different operating point, none missed
    # a coarse grid keeps its size, spans best to cheapest, and sits between switch points
    coarse = default_lambda_grid(q, c, n=11)
    assert len(coarse) <= 11 and coarse[0] == 0.0
    ch = _choices(q, c, coarse)
    assert (ch[-1] == c.argmin(axis=1)).all()
    assert len({tuple(row) for row in ch}) == len(coarse)


def test_known_means_trace_the_zero_router_exactly():
    """A router that knows each model's mean quality and cost routes every prompt alike: its sweep
    visits each vertex of the zero router's hull, so its AIQ equals the zero router's (no penalty
    from the grid)."""
    from router.data.synthetic import generate

    o = generate(300, seed=1).outcomes
    q = np.tile(o.quality.mean(axis=0), (o.n_prompts, 1))
    c = np.tile(o.cost.mean(axis=0), (o.n_prompts, 1))
    lams = default_lambda_grid(q, c)
    res = evaluate_curves(o, {"means": (lams, _choices(q, c, lams))}, n_bootstrap=0, per_task=False)
    assert res.routers["means"].aiq == pytest.approx(res.zero_aiq, abs=1e-12)


@pytest.mark.parametrize("n", [1, 0, 2.5])
def test_grid_size_is_checked(n):
    with pytest.raises(ConfigError, match="n=...\\) must be an int >= 2"):
        default_lambda_grid(np.ones((2, 2)), np.ones((2, 2)), n=n)


def test_shapes_are_checked():
    with pytest.raises(ConfigError, match="must both be \\(n, m\\)"):
        switch_points(np.ones((2, 3)), np.ones((2, 2)))
