"""Prompt statistics appended to the embedding (:mod:`router.features`)."""

from __future__ import annotations

import numpy as np
import pytest

from router.data.schema import Outcomes
from router.encoders import HashingEncoder
from router.errors import ConfigError, NotFittedError
from router.features import STAT_NAMES, PromptStats
from router.predictors import KNNPredictor, LogisticPredictor
from router.router import Router

WORDS = "apple pear coin book car tree lamp road bird fish".split()


def counting_data(n: int, seed: int) -> Outcomes:
    """The small model answers only prompts with at most 4 numbers; the large one answers all.

    Numbers are fresh 4-6 digit values (unseen at test time) among a random number of filler words, so
    a bag-of-hashed-tokens embedding cannot count them, while the ``numbers`` statistic does.
    """
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 11, n)
    prompts = []
    for kk in k:
        toks = [str(v) for v in rng.integers(1000, 10**6, kk)] + list(rng.choice(WORDS, rng.integers(3, 16)))
        prompts.append(" ".join(rng.permutation(toks)))
    q = np.stack([(k <= 4).astype(float), np.ones(n)], axis=1)
    return Outcomes([f"p{i}" for i in range(n)], prompts, ["small", "large"], q,
                    np.tile([0.001, 0.01], (n, 1)), source="counting")


def auc(y: np.ndarray, s: np.ndarray) -> float:
    """Probability that a random positive outranks a random negative (ties count half)."""
    pos, neg = s[y > 0.5], s[y <= 0.5]
    return float(((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
                 / (len(pos) * len(neg)))


def test_known_counts():
    x = PromptStats.raw(["Add 3 and 4.5, then 7?\nDone!", "word"])
    counts = np.expm1(x).round().astype(int)
    assert dict(zip(STAT_NAMES, counts[0].tolist())) == {
        "chars": 28, "words": 7, "numbers": 3, "lines": 1, "math_signs": 0, "sentences": 2}
    assert dict(zip(STAT_NAMES, counts[1].tolist())) == {
        "chars": 4, "words": 1, "numbers": 0, "lines": 0, "math_signs": 0, "sentences": 0}


def test_standardised_on_training_texts_and_weighted():
    texts = ["a", "a b c", "1 + 2 = 3", "x\ny\nz?"]
    z = PromptStats(weight=1.0).fit(texts).transform(texts)
    assert z.dtype == np.float32 and z.shape == (4, len(STAT_NAMES))
    assert np.allclose(z.mean(axis=0), 0.0, atol=1e-6)
    half = PromptStats(weight=0.5).fit(texts).transform(texts)
    assert np.allclose(half, 0.5 * z, atol=1e-6)
    same = PromptStats(weight=1.0).fit(["same text"] * 3).transform(["same text", "other words here"])
    assert np.isfinite(same).all() and (same[0] == 0).all()  # a constant statistic is centred, not divided by 0


@pytest.mark.parametrize("weight", [-0.1, float("nan"), "0.2", True])
def test_bad_weight(weight):
    with pytest.raises(ConfigError, match="weight"):
        PromptStats(weight=weight)


def test_errors():
    with pytest.raises(NotFittedError):
        PromptStats().transform(["x"])
    with pytest.raises(ConfigError, match="wrap a single prompt"):
        PromptStats.raw("just one string")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="at least one text"):
        PromptStats().fit([])
    with pytest.raises(ConfigError, match="mean_"):
        PromptStats().set_state({"mean_": np.zeros(6)})
    with pytest.raises(ConfigError, match="shape"):
        PromptStats().set_state({"mean_": np.zeros(3), "scale_": np.ones(3)})


@pytest.mark.parametrize("predictor", [LogisticPredictor, lambda: KNNPredictor(k=10)], ids=["logistic", "knn"])
def test_statistics_recover_a_difficulty_the_embedding_misses(predictor):
    train, test = counting_data(600, seed=0), counting_data(400, seed=1)
    scores = {}
    for weight in (None, 0.2):
        router = Router.fit(train, encoder=HashingEncoder(dim=256), predictor=predictor(), prompt_stats=weight)
        q, _, _ = router.predict(list(test.prompts))
        scores[weight] = auc(test.quality[:, 0], q[:, 0])
    assert scores[None] < 0.75  # the hashed tokens alone barely tell easy from hard
    assert scores[0.2] > 0.95


def test_router_with_statistics_saves_and_loads_identically(tmp_path):
    train, test = counting_data(300, seed=0), counting_data(50, seed=1)
    router = Router.fit(train, encoder=HashingEncoder(dim=64), predictor=LogisticPredictor(), prompt_stats=0.2)
    emb, _ = router.embed(list(test.prompts))
    assert emb.shape == (50, 64 + len(STAT_NAMES))
    router.save(tmp_path / "r")
    assert (tmp_path / "r" / "features.json").exists()
    loaded = Router.load(tmp_path / "r")
    a, b = router.route(list(test.prompts), lam=20.0), loaded.route(list(test.prompts), lam=20.0)
    assert a.chosen == b.chosen and np.array_equal(a.probabilities, b.probabilities)
    assert np.array_equal(loaded.embed(list(test.prompts))[0], emb)
