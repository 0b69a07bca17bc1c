"""Policy conformance suite (every policy in POLICIES) and known-answer learning tests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from envs.loop import run_policy
from envs.vector import make_vector
from router.data.schema import Outcomes
from router.errors import ConfigError, PersistenceError
from router.policies import (
    POLICIES,
    EpsilonGreedy,
    LinearThompson,
    LinUCB,
    load_policy,
    policy_from_config,
    save_policy,
)
from router.policies._common import rng_from_state, rng_to_state

pytest.importorskip("torch")  # imported at collection so no single test pays for it (NeuralLinear)

M, D = 3, 4

#: small, fast settings per kind (neural kept tiny so the suite stays CPU-fast)
SETTINGS: dict[str, dict] = {
    "egreedy": {"epsilon": 0.2},
    "linucb": {"alpha": 0.5},
    "linucb_softmax": {"alpha": 0.5, "softmax_temperature": 0.1},
    "linucb_reduced": {"alpha": 0.5, "context_rank": 2},
    "thompson": {"v": 0.5, "n_samples": 32},
    "thompson_reduced": {"v": 0.5, "n_samples": 32, "context_rank": 2},
    "neural": {"hidden": 8, "train_every": 16, "train_steps": 5, "batch_size": 8},
}


def _make(name: str, seed: int = 0):
    kind = name.split("_")[0]
    return POLICIES[kind](n_actions=M, dim=D, seed=seed, **SETTINGS[name])


def _data(n: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D))
    a = rng.integers(M, size=n)
    r = (a == (x[:, 0] > 0)).astype(float)
    return x, a, r


ALL = sorted(SETTINGS)


def test_every_registered_policy_is_covered() -> None:
    assert {n.split("_")[0] for n in ALL} == set(POLICIES)


@pytest.mark.parametrize("name", ALL)
def test_probabilities_sum_to_one_and_respect_mask(name: str) -> None:
    pol = _make(name)
    x, a, r = _data()
    pol.update(x, a, r, np.full(len(a), 1 / M))
    mask = np.array([[True, False, True], [False, True, False]] * 20)
    p = pol.select(x, mask)
    assert p.shape == (40, M)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert (p[~mask] == 0).all() and (p >= 0).all()
    p1 = pol.select(x[0], np.array([False, True, True]))
    assert p1.shape == (M,) and p1[0] == 0 and p1.sum() == pytest.approx(1.0)
    acts = pol.sample(p)
    assert acts.shape == (40,) and mask[np.arange(40), acts].all()


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_results(name: str) -> None:
    x, a, r = _data()
    outs = []
    for _ in range(2):
        pol = _make(name, seed=7)
        pol.update(x[:20], a[:20], r[:20])
        p = pol.select(x[20:])
        outs.append((p, pol.sample(p)))
        pol.update(x[20:], a[20:], r[20:])
        outs[-1] += (pol.select(x),)
    for u, v in zip(outs[0], outs[1]):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("name", ALL)
def test_inputs_not_modified(name: str) -> None:
    pol = _make(name)
    x, a, r = _data()
    mask = np.ones((40, M), dtype=bool)
    copies = [v.copy() for v in (x, a, r, mask)]
    pol.update(x, a, r)
    pol.select(x, mask)
    for before, after in zip(copies, (x, a, r, mask)):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("name", ALL)
def test_save_load_round_trip_identical(name: str, tmp_path) -> None:
    pol = _make(name, seed=3)
    x, a, r = _data()
    pol.update(x[:30], a[:30], r[:30])
    save_policy(pol, tmp_path)
    assert json.loads((tmp_path / "policy.json").read_text())["kind"] == pol.kind  # plain JSON, one format
    loaded = load_policy(tmp_path)
    twin = policy_from_config(pol.kind, pol.get_config(), pol.get_state())
    for other in (loaded, twin):
        assert other.get_config() == pol.get_config()
    p0, p1, p2 = pol.select(x), loaded.select(x), twin.select(x)
    np.testing.assert_array_equal(p0, p1)
    np.testing.assert_array_equal(p0, p2)
    np.testing.assert_array_equal(pol.sample(p0), loaded.sample(p1))
    for p in (pol, loaded):
        p.update(x[30:], a[30:], r[30:])
    np.testing.assert_array_equal(pol.select(x), loaded.select(x))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda p: p.select(np.ones(D + 1)), "context must have shape"),
        (lambda p: p.select(np.full(D, np.nan)), "NaN"),
        (lambda p: p.select(np.ones(D), np.zeros(M, dtype=bool)), "allows no action"),
        (lambda p: p.select(np.ones(D), np.ones(M + 1, dtype=bool)), "mask must have shape"),
        (lambda p: p.update(np.ones((2, D)), np.array([0]), np.array([1.0, 1.0])), "must have shape"),
        (lambda p: p.update(np.ones(D), M, 1.0), "integer indices"),
        (lambda p: p.update(np.ones(D), 0, np.nan), "reward contains NaN"),
        (lambda p: p.update(np.ones(D), 0, 1.0, 0.0), "propensity"),
    ],
)
def test_clear_errors(name: str, call, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        call(_make(name))


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (LinUCB, {"alpha": -1.0}, "alpha"),
        (LinUCB, {"ridge": 0.0}, "ridge"),
        (EpsilonGreedy, {"epsilon": 1.5}, "epsilon"),
        (LinearThompson, {"v": 0.0}, "v must be"),
        (LinearThompson, {"n_samples": 0}, "n_samples"),
        (LinUCB, {"prior_mean": np.zeros((2, 2))}, "prior_mean"),
    ],
)
def test_constructor_errors(cls, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        cls(n_actions=M, dim=D, **kwargs)


def test_load_missing_files(tmp_path) -> None:
    with pytest.raises(PersistenceError, match="policy.json"):
        load_policy(tmp_path)
    with pytest.raises(ConfigError, match="unknown policy kind"):
        policy_from_config("nope", {})


def test_rng_state_round_trip() -> None:
    g = np.random.default_rng(11)
    g.standard_normal(3)
    h = rng_from_state(rng_to_state(g))
    np.testing.assert_array_equal(g.standard_normal(5), h.standard_normal(5))


def test_linucb_sherman_morrison_matches_direct_inverse() -> None:
    pol = LinUCB(M, D, alpha=1.0)
    x, a, r = _data(200)
    pol.update(x, a, r)
    np.testing.assert_allclose(pol.A_inv_, np.linalg.inv(pol.A_), atol=1e-10)
    xd = np.hstack([x, np.ones((200, 1))])
    for k in range(M):
        sel = a == k
        theta = np.linalg.solve(xd[sel].T @ xd[sel] + np.eye(D + 1), xd[sel].T @ r[sel])
        np.testing.assert_allclose(pol.theta_[k], theta, atol=1e-8)


def test_linucb_ties_are_deterministic() -> None:
    assert LinUCB(M, D).select(np.zeros(D)).tolist() == [1.0, 0.0, 0.0]


def test_prior_mean_and_warm_start_give_offline_knowledge() -> None:
    x = np.eye(D)[np.arange(40) % D]
    best = np.arange(40) % D % M
    quality = np.full((40, M), 0.2)
    quality[np.arange(40), best] = 0.9
    warm = LinUCB(M, D, alpha=0.0).warm_start(x, quality, weight=0.5)
    assert (warm.select(x).argmax(axis=1) == best).all()
    prior = np.zeros((M, D))
    prior[best[:D], np.arange(D)] = 1.0
    pri = EpsilonGreedy(M, D, epsilon=0.0, prior_mean=prior)
    assert (pri.select(x).argmax(axis=1) == best).all()
    assert isinstance(pri.get_config()["prior_mean"], list)


@pytest.mark.slow
def test_neural_warm_start_learns_offline_best() -> None:
    x = np.eye(D)[np.arange(40) % D]
    best = np.arange(40) % D % M
    quality = np.full((40, M), 0.2)
    quality[np.arange(40), best] = 0.9
    neural = POLICIES["neural"](M, D, hidden=16, alpha=0.0, seed=0).warm_start(x, quality, epochs=40)
    assert (neural.select(x).argmax(axis=1) == best).mean() >= 0.75


# --------------------------------------------------------------------------- known-answer learning
def _cluster_env(n: int = 600, k: int = 4, seed: int = 0):
    """k context clusters (one-hot + noise); the best of 3 models per cluster is known: quality 0.9
    for model ``cluster % 3``, 0.3 for the others (plus 0.05 noise); with lam = 1 and costs
    (0, 0.05, 0.1) the best model is unchanged."""
    rng = np.random.default_rng(seed)
    cl = rng.integers(k, size=n)
    x = (np.eye(k)[cl] + 0.05 * rng.normal(size=(n, k))).astype(np.float32)
    means = np.full((k, M), 0.3)
    means[np.arange(k), np.arange(k) % M] = 0.9
    q = np.clip(means[cl] + 0.05 * rng.normal(size=(n, M)), 0, 1)
    cost = np.tile([0.0, 0.05, 0.1], (n, 1))
    o = Outcomes(prompt_ids=[str(i) for i in range(n)], prompts=[""] * n, models=["a", "b", "c"],
                 quality=q, cost=cost)
    return make_vector(x, o, num_envs=20, lam=1.0)


def _learn(pol, seed: int, steps: int = 2000) -> tuple[float, float, float]:
    regret, reward, oracle = [], [], []
    for b in run_policy(pol, _cluster_env(seed=seed), steps, seed=seed):
        regret.append(float((b.info["oracle_reward"] - b.reward).sum()))
        reward.append(float(b.reward.sum()))
        oracle.append(float(b.info["oracle_reward"].sum()))
    h, q = len(regret) // 2, len(regret) // 4
    return sum(regret[:h]), sum(regret[h:]), sum(reward[-q:]) / sum(oracle[-q:])


LEARNERS = {
    "egreedy": lambda s: EpsilonGreedy(M, D, epsilon=0.05, seed=s),
    "linucb": lambda s: LinUCB(M, D, alpha=1.0, seed=s),
    "thompson": lambda s: LinearThompson(M, D, v=0.3, seed=s),
    "neural": lambda s: POLICIES["neural"](M, D, hidden=16, train_every=200, train_steps=30, seed=s),
}


@pytest.mark.parametrize("kind", ["egreedy", "linucb", "thompson", pytest.param("neural", marks=pytest.mark.slow)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regret_is_sublinear_and_near_oracle(kind: str, seed: int) -> None:
    first, second, ratio = _learn(LEARNERS[kind](seed), seed)
    # a uniformly random policy has regret ~0.43 per step, ~430 per half of 1000 steps
    assert first + second < 250, (first, second)
    assert second < 0.5 * first, (first, second)
    assert ratio > 0.9, ratio  # last quarter's reward within 10% of the oracle's


def test_policy_dirs_of_the_older_format_still_load(tmp_path) -> None:
    """Before one component format, save_policy wrote config.json + state.npz."""
    pol = _make("linucb", seed=3)
    x, a, r = _data()
    pol.update(x, a, r)
    (tmp_path / "config.json").write_text(json.dumps({"kind": pol.kind, "config": pol.get_config(),
                                                      "model_names": ["a", "b", "c"]}))
    np.savez(tmp_path / "state.npz", **pol.get_state())
    np.testing.assert_array_equal(load_policy(tmp_path).select(x), pol.select(x))
