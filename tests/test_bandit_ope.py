"""Off-policy evaluation of a trained bandit policy against its known true value, and promotion on logs."""

from __future__ import annotations

import numpy as np
import pytest

from envs.loop import run_policy
from envs.vector import make_vector
from router.data.reduce import to_traffic_log
from router.data.splits import split_outcomes
from router.data.synthetic import generate
from router.ope import DR, SNIPS
from router.policies import LinUCB

LAM = 20.0


def _train_linucb(data, train_rows, seed):
    x = data.features[train_rows]
    o = data.outcomes.subset(train_rows)
    env = make_vector(x, o, num_envs=32, lam=LAM)
    policy = LinUCB(o.n_models, x.shape[1], alpha=0.5, seed=seed)
    for _ in run_policy(policy, env, 60 * 32, seed=seed):
        pass
    return policy


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ope_of_trained_policy_covers_its_true_value(seed):
    """Train LinUCB; log held-out traffic with a *different* (epsilon-greedy) policy; DR's interval covers
    the trained policy's true value, computed exactly from the generator's ground truth."""
    data = generate(4000, seed=seed)
    idx = np.arange(data.outcomes.n_prompts)
    train_rows, test_rows = idx[: 2000], idx[2000:]
    policy = _train_linucb(data, train_rows, seed)
    test = data.outcomes.subset(test_rows)
    x_test = data.features[test_rows].astype(np.float64)
    target = policy.select(x_test)  # (n, m), deterministic policy: one-hot rows

    # logging policy: epsilon-greedy over a noisy, cost-blind score -- not the trained policy
    rng = np.random.default_rng(100 + seed)
    score = data.true_quality[test_rows] + rng.normal(0, 0.2, target.shape)
    log, _ = to_traffic_log(test, policy="epsilon-greedy", scores=score, epsilon=0.4, seed=seed)
    action = np.array([test.models.index(m) for m in log["chosen_model"].to_list()])
    reward = log["quality"].to_numpy() - LAM * log["cost"].to_numpy()
    prop = log["propensity"].to_numpy()

    true_reward = data.true_quality[test_rows] - LAM * test.cost  # expected reward of every action
    truth = float((target * true_reward).sum(axis=1).mean())
    for est in (DR(), SNIPS()):
        e = est.estimate_interval(reward, action, prop, target, context=x_test if est.needs_q_hat else None,
                                  method="normal")
        assert e.low <= truth <= e.high, (type(est).__name__, e, truth)
        assert abs(e.value - truth) < 0.1


@pytest.mark.slow
def test_promotion_on_traffic_log(tmp_path):
    """compare_on_log: a router that learned the context beats a uniform one on logged feedback."""
    from router.encoders import HashingEncoder
    from router.predictors import LogisticPredictor
    from router.router import Router
    from training.promote import compare_on_log

    data = generate(3000, seed=5)
    train, test = split_outcomes(data.outcomes, seed=0)
    good = Router.fit(train, encoder=HashingEncoder(dim=256), predictor=LogisticPredictor())
    good.rule = good.rule.with_(lam=LAM)
    log, _ = to_traffic_log(test, policy="uniform", seed=0)
    ev = compare_on_log(good, None, log, n_boot=200, latency_budget_ms=1000.0)
    assert ev.promote, ev.reasons
    assert ev.candidate_value > ev.champion_value and ev.delta_ci[0] > 0

    # a candidate identical to the champion is not better beyond the interval
    ev = compare_on_log(good, good, log, n_boot=200, latency_budget_ms=1000.0)
    assert not ev.promote and ev.delta_ci == (0.0, 0.0)
