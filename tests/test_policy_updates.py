"""The linear policies' fast paths give the answers of the slow, direct computations.

* Woodbury / Sherman--Morrison updates of ``A^{-1}`` equal a direct inverse of the Gram matrix, and
  ``theta`` equals a direct solve, after thousands of rows in batches of every size;
* a batch update equals the same rows one at a time;
* Thompson sampling's scalar score draws give the probabilities of its posterior (known answer);
* a reduced context (``context_rank``) is exactly a full policy on projected contexts, and
  :meth:`fit_basis` finds a planted subspace;
* the training loop with the same seed gives identical trajectories.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from envs.vector import make_vector
from router.data.schema import Outcomes
from router.errors import ConfigError
from router.policies import EpsilonGreedy, LinearThompson, LinUCB, load_policy, save_policy
from router.policies._common import quad_forms

M, D = 4, 12

KINDS = {
    "linucb": lambda **kw: LinUCB(M, D, alpha=0.7, **kw),
    "thompson": lambda **kw: LinearThompson(M, D, v=0.3, **kw),
    "egreedy": lambda **kw: EpsilonGreedy(M, D, epsilon=0.1, **kw),
}


def _rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D))
    a = rng.choice(M, size=n, p=[0.6, 0.25, 0.1, 0.05])  # skewed, as a learning policy's choices are
    r = np.tanh(x[:, 0] * (a + 1)) + 0.1 * rng.normal(size=n)
    return x, a, r


def _design(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((x.shape[0], 1))])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_fast_updates_equal_direct_inverse_and_solve(kind: str) -> None:
    pol = KINDS[kind](ridge=0.5)
    x, a, r = _rows(4000)
    warm_q = np.random.default_rng(1).random((50, M))
    pol.warm_start(x[:50], warm_q, weight=0.2)
    start = 50
    for size in (1, 7, 32, 100, 1, 250, 3, 64) * 6:  # every batch size, ~2,900 rows
        pol.update(x[start : start + size], a[start : start + size], r[start : start + size])
        start += size
    # the Gram matrix and b by definition, from the rows themselves
    xd = _design(x)
    for k in range(M):
        online = np.flatnonzero(a[50:start] == k) + 50
        gram = 0.5 * np.eye(D + 1) + 0.2 * xd[:50].T @ xd[:50] + xd[online].T @ xd[online]
        b = 0.2 * xd[:50].T @ warm_q[:, k] + xd[online].T @ r[online]
        np.testing.assert_allclose(pol.A_[k], gram, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(pol.A_inv_[k], np.linalg.inv(gram), rtol=0, atol=1e-10)
        np.testing.assert_allclose(pol.theta_[k], np.linalg.solve(gram, b), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(pol.counts_, 50 + np.bincount(a[50:start], minlength=M))


def test_many_single_row_updates_stay_accurate() -> None:
    pol = LinUCB(M, D, alpha=1.0)
    x, a, r = _rows(20_000, seed=3)
    for i in range(x.shape[0]):
        pol.update(x[i], int(a[i]), float(r[i]))
    direct = np.linalg.inv(pol.A_)
    assert np.abs(pol.A_inv_ - direct).max() < 1e-12
    assert np.abs(pol.A_inv_ - np.swapaxes(pol.A_inv_, 1, 2)).max() < 1e-15


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_batch_update_equals_rows_one_at_a_time(kind: str) -> None:
    x, a, r = _rows(300, seed=2)
    batched, single = KINDS[kind](seed=5), KINDS[kind](seed=5)
    for s in range(0, 300, 32):
        batched.update(x[s : s + 32], a[s : s + 32], r[s : s + 32])
    for i in range(300):
        single.update(x[i : i + 1], a[i : i + 1], r[i : i + 1])
    np.testing.assert_allclose(batched.A_inv_, single.A_inv_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(batched.theta_, single.theta_, rtol=0, atol=1e-10)
    if kind != "thompson":  # Thompson draws; the others are deterministic functions of the statistics
        np.testing.assert_array_equal(batched.select(x), single.select(x))


def test_quad_forms_over_chunks_equal_the_definition() -> None:
    rng = np.random.default_rng(0)
    g = rng.normal(size=(3, 5, 5))
    mats = g @ np.swapaxes(g, 1, 2)
    x = rng.normal(size=(2500, 5))  # more rows than one chunk
    expected = np.stack([[x[i] @ mats[k] @ x[i] for k in range(3)] for i in range(x.shape[0])])
    np.testing.assert_allclose(quad_forms(x, mats), expected, rtol=1e-12)


def test_thompson_probabilities_match_the_posterior() -> None:
    """Two actions, one feature, no intercept: the posterior of x . theta_a is N(b_a / A_a, v^2 / A_a),
    so P(action 0 wins at x = 1) = Phi((mu_0 - mu_1) / (v sqrt(1 / A_0 + 1 / A_1)))."""
    v = 0.5
    pol = LinearThompson(2, 1, v=v, intercept=False, n_samples=40_000, seed=0)
    pol.update(np.ones((3, 1)), np.zeros(3, dtype=int), np.array([0.9, 0.7, 0.8]))
    pol.update(np.ones((8, 1)), np.ones(8, dtype=int), np.full(8, 0.6))
    mu0, mu1 = 2.4 / 4.0, 4.8 / 9.0
    z = (mu0 - mu1) / (v * math.sqrt(1 / 4.0 + 1 / 9.0))
    expected = 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
    p = pol.select(np.ones(1))
    assert abs(p[0] - expected) < 0.01, (p, expected)  # Monte-Carlo sd ~0.0025 at 40,000 draws
    assert pol.select(np.ones(1), mask=np.array([False, True])).tolist() == [0.0, 1.0]


# --------------------------------------------------------------------------- reduced context
def _planted(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Contexts whose variance lies in a known 3-dimensional subspace of R^12 (plus tiny noise)."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(D, 3)))
    x = rng.normal(size=(n, 3)) * [3.0, 2.0, 1.0] @ basis.T + 0.01 * rng.normal(size=(n, D))
    return x, basis


def test_fit_basis_finds_the_planted_subspace() -> None:
    x, basis = _planted()
    pol = LinUCB(M, D, context_rank=3).fit_basis(x)
    assert pol.basis_ is not None and pol.basis_.shape == (D, 3)
    np.testing.assert_allclose(pol.basis_.T @ pol.basis_, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(pol.basis_ @ pol.basis_.T, basis @ basis.T, atol=1e-3)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_reduced_policy_is_a_full_policy_on_projected_contexts(kind: str) -> None:
    x, _ = _planted()
    _, a, r = _rows(400)
    reduced = KINDS[kind](context_rank=3, seed=4).fit_basis(x)
    assert reduced.basis_ is not None
    z = x @ reduced.basis_
    small = {"linucb": LinUCB(M, 3, alpha=0.7, seed=4), "thompson": LinearThompson(M, 3, v=0.3, seed=4),
             "egreedy": EpsilonGreedy(M, 3, epsilon=0.1, seed=4)}[kind]
    for s in range(0, 400, 50):
        reduced.update(x[s : s + 50], a[s : s + 50], r[s : s + 50])
        small.update(z[s : s + 50], a[s : s + 50], r[s : s + 50])
    np.testing.assert_allclose(reduced.theta_, small.theta_, atol=1e-10)
    np.testing.assert_allclose(reduced.select(x[:20]), small.select(z[:20]), atol=1e-10)
    np.testing.assert_allclose(reduced.expected_reward(x[:20]), small.expected_reward(z[:20]), atol=1e-10)


def test_reduced_policy_round_trips_its_basis(tmp_path) -> None:
    x, _ = _planted()
    _, a, r = _rows(400)
    pol = LinUCB(M, D, alpha=0.5, context_rank=3).fit_basis(x)
    pol.update(x, a, r)
    save_policy(pol, tmp_path)
    loaded = load_policy(tmp_path)
    np.testing.assert_array_equal(loaded.basis_, pol.basis_)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(loaded.select(x), pol.select(x))


def test_random_basis_comes_from_the_seed_and_full_rank_means_no_reduction() -> None:
    a, b, c = (LinUCB(M, D, context_rank=4, seed=s) for s in (1, 1, 2))
    assert a.basis_ is not None and b.basis_ is not None and c.basis_ is not None
    np.testing.assert_array_equal(a.basis_, b.basis_)
    assert not np.allclose(a.basis_, c.basis_)
    assert LinUCB(M, D, context_rank=D).basis_ is None and LinUCB(M, D, context_rank=D).theta_.shape == (M, D + 1)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: LinUCB(M, D, context_rank=0), "context_rank must be a positive int"),
        (lambda: LinUCB(M, D, context_rank=2.5), "context_rank must be a positive int"),
        (lambda: LinUCB(M, D).fit_basis(np.ones((5, D))), "fit_basis needs context_rank < dim"),
        (lambda: LinUCB(M, D, context_rank=2).fit_basis(np.ones((1, D))), "at least 2 contexts"),
        (lambda: LinUCB(M, D, context_rank=2).update(np.ones(D), 0, 1.0).fit_basis(np.ones((5, D))),
         "must come before any update or warm start"),
        (lambda: LinUCB(M, D, context_rank=2, prior_mean=np.zeros((M, D))), r"\(4, 2\) or \(4, 3\)"),
    ],
)
def test_reduced_context_errors(build, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build()


# --------------------------------------------------------------------------- trajectories
def _trajectory(policy, seed: int, batches: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n, m = 500, 4
    x = rng.normal(size=(n, D)).astype(np.float32) / 4
    o = Outcomes(prompt_ids=[str(i) for i in range(n)], prompts=[""] * n, models=list("abcd"),
                 quality=rng.random((n, m)), cost=rng.random((n, m)) * 1e-3)
    envs = make_vector(x, o, num_envs=16, lam=50.0)
    if getattr(policy, "_rank", None):
        policy.fit_basis(envs.data.features)
    obs, _ = envs.reset(seed=seed)
    acts, rews = [], []
    for _ in range(batches):
        probs = policy.select(obs["features"], obs["action_mask"].astype(bool))
        a = np.asarray(policy.sample(probs), dtype=np.int64)
        ctx = obs["features"]
        obs, r, _, _, _ = envs.step(a)
        policy.update(ctx, a, r, probs[np.arange(a.shape[0]), a])
        acts.append(a)
        rews.append(r)
    return np.concatenate(acts), np.concatenate(rews)


@pytest.mark.parametrize("kind", ["linucb", "thompson"])
@pytest.mark.parametrize("rank", [None, 5])
def test_same_seed_gives_identical_trajectories(kind: str, rank: int | None) -> None:
    a1, r1 = _trajectory(KINDS[kind](seed=7, context_rank=rank), seed=7)
    a2, r2 = _trajectory(KINDS[kind](seed=7, context_rank=rank), seed=7)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(r1, r2)
    a3, _ = _trajectory(KINDS[kind](seed=8, context_rank=rank), seed=8)
    assert not np.array_equal(a1, a3)


# --------------------------------------------------------------------------- through `training bandit`
def test_bandit_cli_trains_on_a_reduced_context(tmp_path) -> None:
    from router.router import Router
    from training.bandit import main

    out = tmp_path / "run"
    rc = main(["--policy", "thompson", "--context-rank", "8", "--steps", "200", "--n-prompts", "150",
               "--batch-size", "25", "--encoder", "hashing", "--hashing-dim", "32", "--out", str(out)])
    assert rc == 0
    pol = load_policy(out / "policy")
    assert pol.basis_.shape == (pol.dim, 8)  # type: ignore[attr-defined]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["args"]["context_rank"] == 8 and metrics["train_rows_per_s"] > 0
    router = Router.load(out)
    d = router.route(["What is 2 + 2?"])
    assert d.chosen[0] in router.models


def test_bandit_cli_rejects_a_reduced_context_for_neural(tmp_path, capsys) -> None:
    from training.bandit import main

    with pytest.raises(SystemExit) as exc:  # a usage error, before any data loads
        main(["--policy", "neural", "--context-rank", "8", "--steps", "20", "--n-prompts", "50",
              "--encoder", "features", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "--context-rank applies to linucb, egreedy and thompson; neural learns" in capsys.readouterr().err
