"""A prompt gets the same predictions and the same decision however it is batched: routed alone, in a
service's micro-batch of any size, or offline in bulk (``router._numeric.pad_rows``)."""

from __future__ import annotations

import numpy as np
import pytest

from router._numeric import ROW_BLOCK, pad_rows, rows_matmul
from router.data.synthetic import generate
from router.encoders import HashingEncoder
from router.policies import EpsilonGreedy, LinUCB
from router.predictors import EnsemblePredictor
from router.router import Router


def test_rows_matmul_does_not_depend_on_the_other_rows():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(262, 64)).astype(np.float32)
    q = rng.normal(size=262).astype(np.float32)
    alone = rows_matmul(q[None], w)[0]
    for n in range(1, 41):
        batch = rng.normal(size=(n, 262)).astype(np.float32)
        pos = int(rng.integers(n))
        batch[pos] = q
        assert np.array_equal(rows_matmul(batch, w)[pos], alone), n
    b = ROW_BLOCK
    assert pad_rows(np.ones((b, 3))).shape == (b, 3) and pad_rows(np.ones((b + 1, 3))).shape == (2 * b, 3)
    assert pad_rows(np.ones((0, 3))).shape == (b, 3)


@pytest.fixture(scope="module")
def router():
    o = generate(500, seed=4).outcomes
    pred = EnsemblePredictor(members=[("knn", {"k": 25}), ("logistic", {}), ("mlp", {"epochs": 3, "hidden": (32,)})])
    return Router.fit(o, encoder=HashingEncoder(dim=96), predictor=pred), [str(p) for p in generate(60, seed=9).outcomes.prompts]


def test_router_decisions_do_not_depend_on_the_batch(router):
    r, prompts = router
    bulk = r.route(prompts, explain=False)
    rng = np.random.default_rng(1)
    start = 0
    while start < len(prompts):
        size = int(rng.integers(1, 20))
        part = r.route(prompts[start:start + size], explain=False)
        sl = slice(start, start + size)
        assert np.array_equal(part.quality, bulk.quality[sl])
        assert np.array_equal(part.cost, bulk.cost[sl])
        assert np.array_equal(part.probabilities, bulk.probabilities[sl])
        assert part.chosen == bulk.chosen[sl]
        start += size
    one = [r.route([p], explain=False) for p in prompts[:10]]
    assert [d.chosen[0] for d in one] == bulk.chosen[:10]
    assert all(np.array_equal(d.quality[0], bulk.quality[k]) for k, d in enumerate(one))


@pytest.mark.parametrize("cls", [EpsilonGreedy, LinUCB])
def test_policy_scores_do_not_depend_on_the_batch(cls):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 12))
    a = rng.integers(0, 4, 300)
    pol = cls(4, 12, seed=0)
    pol.update(x, a, rng.random(300), np.full(300, 0.25))
    ctx = rng.normal(size=(37, 12))
    bulk = pol.expected_reward(ctx)
    for k in range(len(ctx)):
        assert np.array_equal(pol.expected_reward(ctx[k:k + 1])[0], bulk[k])
