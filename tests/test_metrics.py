"""Routing metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from router.data.schema import Outcomes
from router.errors import ConfigError, ValidationError
from router.metrics import (
    Curve,
    aiq,
    aiq_routerbench,
    apgr,
    budget_fidelity,
    cost_at_quality,
    cpt,
    evaluate_curves,
    non_decreasing_hull,
    oracle_gap_share,
    points,
    savings_at_quality,
)


def make_outcomes(q: np.ndarray, c: np.ndarray, tasks: list[str] | None = None, models: list[str] | None = None
                  ) -> Outcomes:
    n, m = q.shape
    return Outcomes(prompt_ids=[f"p{i}" for i in range(n)], prompts=["x"] * n,
                    models=models or [f"m{j}" for j in range(m)], quality=q, cost=c, tasks=tasks)


def test_three_point_hull_and_aiq_by_hand() -> None:
    # Points (1, .5), (2, .8), (3, .9), (4, .85):
    # - (2, .8) is above the chord (1,.5)-(3,.9) (0.7 at cost 2) -> kept;
    # - (4, .85) is lower than (3, .9) -> cut (hull is non-decreasing).
    # AIQ over [1, 3]: trapezoids (.5+.8)/2 + (.8+.9)/2 = .65 + .85 = 1.5, divided by the span 2 -> 0.75.
    # RouterBench (alone): the same area 1.5 divided by the max hull cost 3 -> 0.5.
    h = non_decreasing_hull([[2, 0.8], [1, 0.5], [4, 0.85], [3, 0.9]])
    assert h.cost.tolist() == [1.0, 2.0, 3.0]
    assert h.quality.tolist() == [0.5, 0.8, 0.9]
    assert aiq(h, (1.0, 3.0)) == pytest.approx(0.75)
    assert aiq_routerbench(h) == pytest.approx(0.5)
    # Span wider than the hull: zero before the first point, flat after the last.
    # [0, 4]: 0 on [0,1] + 1.5 on [1,3] + .9 on [3,4] = 2.4, / 4 = 0.6
    assert aiq(h, (0.0, 4.0)) == pytest.approx(0.6)


def test_hull_drops_points_below_chord() -> None:
    h = non_decreasing_hull([[1, 0.5], [2, 0.6], [3, 0.9]])
    assert h.cost.tolist() == [1.0, 3.0]


def test_zero_router_two_models_by_hand() -> None:
    # Two models at (1, .5) and (3, .9): random mixing gives the segment between them; AIQ = (.5 + .9) / 2.
    q = np.array([[0.5, 0.9]] * 4)
    c = np.array([[1.0, 3.0]] * 4)
    o = make_outcomes(q, c)
    res = evaluate_curves(o, {"cheap": ([0.0], np.zeros((1, 4), int))}, n_bootstrap=0)
    assert res.zero_aiq == pytest.approx(0.7)
    # A router that always picks the cheap model: hull = the point (1, .5), flat after it -> AIQ .5.
    assert res.routers["cheap"].aiq == pytest.approx(0.5)
    # If the dear model is worse, the zero router is flat at the cheap model's quality.
    o2 = make_outcomes(np.array([[0.8, 0.6]] * 4), c)
    assert evaluate_curves(o2, {"r": ([0.0], np.zeros((1, 4), int))}, n_bootstrap=0).zero_aiq == pytest.approx(0.8)


def test_a_router_made_of_the_single_models_scores_exactly_the_zero_router() -> None:
    """Fairness of the comparison: a "router" whose settings are "always model j" has the zero router's
    hull, so its AIQ, per-task AIQ and every bootstrap replicate equal the zero router's (gain 0 with a
    (0, 0) interval). Any difference between a router and the zero router is then the router's own."""
    rng = np.random.default_rng(3)
    n = 120
    q = rng.random((n, 4))
    c = np.tile([0.001, 0.003, 0.004, 0.02], (n, 1)) * rng.uniform(0.5, 1.5, (n, 1))
    o = make_outcomes(q, c, tasks=["a"] * 60 + ["b"] * 60)
    singles = np.repeat(np.arange(4)[:, None], n, axis=1)
    res = evaluate_curves(o, {"singles": (np.arange(4.0), singles)}, n_bootstrap=50, seed=1)
    r = res.routers["singles"]
    assert r.aiq == pytest.approx(res.zero_aiq, abs=1e-12) and r.aiq_ci == pytest.approx(res.zero_aiq_ci, abs=1e-12)
    for t in ("a", "b"):
        assert r.per_task[t]["aiq"] == pytest.approx(res.task_models[t]["zero_aiq"], abs=1e-12)
        assert r.per_task[t]["gain_vs_zero_ci"] == pytest.approx((0.0, 0.0), abs=1e-12)


def test_router_identical_to_one_model_sits_on_its_point() -> None:
    rng = np.random.default_rng(1)
    q = rng.random((50, 3))
    c = np.tile([0.001, 0.004, 0.02], (50, 1)) * rng.uniform(0.5, 1.5, (50, 1))
    o = make_outcomes(q, c)
    for j in range(3):
        p = points(o, np.full((1, 50), j))
        assert p[0, 0] == pytest.approx(c[:, j].mean())
        assert p[0, 1] == pytest.approx(q[:, j].mean())


def test_perfect_router_is_the_oracle() -> None:
    rng = np.random.default_rng(2)
    q = rng.integers(0, 2, (300, 3)).astype(float)
    c = np.tile([0.001, 0.003, 0.01], (300, 1))
    o = make_outcomes(q, c)
    # best model per prompt, cheapest among ties (costs increase with the index)
    oracle_choice = np.argmax(q - 1e-6 * np.arange(3), axis=1)
    res = evaluate_curves(o, {"oracle": ([0.0], oracle_choice[None])}, n_bootstrap=50)
    r = res.routers["oracle"]
    assert r.points[0, 1] == pytest.approx(o.oracle()["quality"])
    assert r.points[0, 0] == pytest.approx(o.oracle()["cost"])
    assert (res.oracle[0], res.oracle[1]) == pytest.approx((o.oracle()["cost"], o.oracle()["quality"]))
    assert r.oracle_gap_share == pytest.approx(1.0)
    assert r.saving_at_best > 0


def test_random_mixing_gives_apgr_one_half() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    qw = (rng.random(n) < 0.5).astype(float)
    qs = (rng.random(n) < 0.8).astype(float)
    scores = rng.random(n)
    assert apgr(qw, qs, scores, n_thresholds=10) == pytest.approx(0.5, abs=0.02)
    assert apgr(qw, qs, scores, n_thresholds=100) == pytest.approx(0.5, abs=0.02)


def test_apgr_and_cpt_hand_case() -> None:
    # Weak fails prompts 0,1; strong always right. Scores rank 0,1 first.
    # 4 bins: share 0, .25, .5, .75, 1 -> PGR 0, .5, 1, 1, 1
    # APGR = .25*(0+.5)/2 + .25*(.5+1)/2 + .25 + .25 = .0625 + .1875 + .5 = .75
    qw, qs, sc = [0, 0, 1, 1], [1, 1, 1, 1], [0.9, 0.8, 0.1, 0.2]
    assert apgr(qw, qs, sc, n_thresholds=4) == pytest.approx(0.75)
    assert cpt(qw, qs, sc, level=0.5, n_thresholds=4) == pytest.approx(0.25)
    # PGR .8 lies between (.25, .5) and (.5, 1): .25 + (.8-.5)/(.5) * .25 = .4
    assert cpt(qw, qs, sc, level=0.8, n_thresholds=4) == pytest.approx(0.4)
    # A router that ranks worst-first never recovers before the end.
    assert cpt(qw, qs, [0.1, 0.2, 0.9, 0.8], level=0.5, n_thresholds=4) == pytest.approx(0.75)


def test_savings_cost_at_quality_and_gap() -> None:
    h = non_decreasing_hull([[1, 0.5], [2, 0.8], [3, 0.85]])
    assert cost_at_quality(h, 0.8) == pytest.approx(2.0)
    assert cost_at_quality(h, 0.65) == pytest.approx(1.5)
    assert math.isnan(cost_at_quality(h, 0.9))
    # best single model costs 4 for quality .8 -> router reaches .8 at cost 2: 50% saved
    assert savings_at_quality(h, 0.8, 4.0) == pytest.approx(50.0)
    assert math.isnan(savings_at_quality(h, 0.95, 4.0))
    # at the best model's cost 3 the hull gives .85; gap to oracle .9 from best .8 -> half closed
    assert oracle_gap_share(h, 3.0, 0.8, 0.9) == pytest.approx(0.5)


def test_budget_fidelity_rows() -> None:
    rows = budget_fidelity([0.9, 2.2], [1.0, 2.0])
    assert [round(r["rel_error"], 6) for r in rows] == [0.1, 0.1]


def test_evaluate_rows_frames_json_and_ci() -> None:
    rng = np.random.default_rng(3)
    n = 400
    q = np.stack([(rng.random(n) < 0.5), (rng.random(n) < 0.8)], axis=1).astype(float)
    c = np.tile([0.001, 0.01], (n, 1))
    tasks = rng.choice(["math", "chat"], n).tolist()
    o = make_outcomes(q, c, tasks, models=["small", "big"])
    lams = np.linspace(0, 1, 11)
    good_score = q[:, 1] - q[:, 0] + 0.3 * rng.random(n)
    ch = (good_score[None, :] > np.quantile(good_score, lams)[:, None]).astype(int)
    pred = np.clip(q + rng.normal(0, 0.3, q.shape), 0, 1)
    res = evaluate_curves(o, {"good": Curve(lams, ch, predicted_quality=pred, targets=1000 * c[0, 1] * (1 - lams)),
                              "random": (lams, (rng.random(n)[None, :] > lams[:, None]).astype(int))},
                          n_bootstrap=200, seed=0)
    g, r = res.routers["good"], res.routers["random"]
    assert g.aiq > r.aiq
    assert g.aiq_ci[0] <= g.aiq <= g.aiq_ci[1]
    assert g.apgr is not None and g.apgr > 0.6
    assert r.apgr is not None and abs(r.apgr - 0.5) < 0.12
    assert set(g.per_task) == {"math", "chat"}
    assert len(g.budget) == 11
    summary = res.to_frame()
    assert set(summary["kind"].to_list()) == {"single", "zero", "oracle", "router"}
    assert res.to_frame("points").height == 22
    assert res.to_frame("tasks").height == 2 + 4
    doc = res.to_metrics_json(dataset="toy", split="test")
    assert doc["schema_version"] == 1 and doc["routers"]["good"]["apgr"] == pytest.approx(g.apgr)
    assert set(doc["routers"]["good"]["per_task_aiq"]) == {"math", "chat"}
    # same seed, same intervals
    curve = {"random": (lams, (rng.random(n)[None, :] > lams[:, None]).astype(int))}
    a1 = evaluate_curves(o, curve, n_bootstrap=50, seed=5)
    a2 = evaluate_curves(o, curve, n_bootstrap=50, seed=5)
    assert a1.routers["random"].aiq_ci == a2.routers["random"].aiq_ci
    assert all(math.isfinite(v) for v in res.scalar_metrics().values())
    assert "eval/good/aiq" in res.scalar_metrics()


def test_expected_values_from_probs() -> None:
    o = make_outcomes(np.array([[0.0, 1.0], [1.0, 1.0]]), np.array([[1.0, 3.0], [1.0, 3.0]]))
    p = points(o, probs=np.array([[[0.5, 0.5], [1.0, 0.0]]]))
    assert p.tolist() == [[1.5, 0.75]]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"choices": [[0, 5]]}, ValidationError, "outside"),
        ({"choices": [[0, 1, 1]]}, ValidationError, "shape"),
        ({"probs": [[[0.5, 0.2], [1.0, 0.0]]]}, ValidationError, "sum to 1"),
        ({}, ConfigError, "needs choices"),
    ],
)
def test_points_errors(kwargs: dict, exc: type, match: str) -> None:
    o = make_outcomes(np.array([[0.0, 1.0], [1.0, 1.0]]), np.array([[1.0, 3.0], [1.0, 3.0]]))
    with pytest.raises(exc, match=match):
        points(o, **kwargs)


def test_evaluate_errors() -> None:
    o = make_outcomes(np.array([[0.0, 1.0], [1.0, 1.0]]), np.array([[1.0, 3.0], [1.0, 3.0]]))
    with pytest.raises(ConfigError, match="at least one curve"):
        evaluate_curves(o, {})
    with pytest.raises(ValidationError, match="settings"):
        evaluate_curves(o, {"r": ([0.0, 1.0], [[0, 1]])})
