"""Known-answer checks of the synthetic generator and of the reduction to traffic logs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from router.data.reduce import logging_probabilities, to_traffic_log
from router.data.schema import TRAFFIC_LOG_SCHEMA, Outcomes
from router.data.synthetic import _SKILL, EMERGING_FAMILIES, FAMILIES, MODELS, SyntheticData, generate
from router.data.validate import validate_traffic_log
from router.errors import ConfigError

MODEL_NAMES = [s.name for s in MODELS]


@pytest.fixture(scope="module")
def big() -> SyntheticData:
    return generate(20_000, seed=7)


@pytest.fixture(scope="module")
def small() -> SyntheticData:
    return generate(600, seed=3)


# =========================================================================== generator
def test_same_seed_same_data_different_seed_different() -> None:
    a, b, c = generate(300, seed=11), generate(300, seed=11), generate(300, seed=12)
    assert a.outcomes.content_hash() == b.outcomes.content_hash()
    for name in ("prompts", "latency", "input_tokens", "output_tokens", "timestamps", "tasks"):
        np.testing.assert_array_equal(getattr(a.outcomes, name), getattr(b.outcomes, name))
    np.testing.assert_array_equal(a.true_quality, b.true_quality)
    np.testing.assert_array_equal(a.features, b.features)
    assert a.outcomes.content_hash() != c.outcomes.content_hash()
    assert not np.array_equal(a.outcomes.quality, c.outcomes.quality)
    assert not np.array_equal(a.family, c.family)


def test_shapes_and_kinds(small: SyntheticData) -> None:
    o = small.outcomes
    n, m, nf = 600, len(MODELS), len(FAMILIES)
    assert (o.n_prompts, o.n_models) == (n, m) and o.models == tuple(MODEL_NAMES)
    assert small.true_quality.shape == (n, m) and small.logging_mask.shape == (n, m)
    assert small.features.shape == (n, 2 * nf) and small.families == tuple(FAMILIES)
    assert (o.quality_kind, o.cost_kind, o.source) == ("binary", "tokens", "synthetic")
    assert set(np.unique(o.quality)) <= {0.0, 1.0}
    assert np.all(np.diff(o.timestamps.astype(np.int64)) >= 0)  # timestamps increase with row order
    assert o.tasks.tolist() == [small.families[f] for f in small.family]
    for arr in (small.true_quality, small.family, small.hard, small.features, small.logging_mask):
        assert not arr.flags.writeable


def test_true_quality_is_the_skill_table(small: SyntheticData) -> None:
    expected = np.array([_SKILL[small.families[f]][int(h)] for f, h in zip(small.family, small.hard, strict=True)])
    np.testing.assert_array_equal(small.true_quality, expected)
    # the features are an exact one-hot of (family, level)
    assert np.all(small.features.sum(axis=1) == 1)
    np.testing.assert_array_equal(small.features.argmax(axis=1), small.family * 2 + small.hard)


def test_empirical_quality_matches_the_truth(big: SyntheticData) -> None:
    q = big.outcomes.quality
    for f, name in enumerate(big.families):
        for level in (False, True):
            rows = (big.family == f) & (big.hard == level)
            assert rows.sum() > 800, (name, level)  # ~2000 easy / ~1330 hard per family
            emp = q[rows].mean(axis=0)
            np.testing.assert_allclose(emp, _SKILL[name][int(level)], atol=0.05, err_msg=f"{name} hard={level}")
    assert abs(big.hard.mean() - 0.4) < 0.02


def test_costs_are_tokens_times_prices(small: SyntheticData) -> None:
    o = small.outcomes
    in_price, out_price = small.prices
    np.testing.assert_array_equal(in_price, [s.input_price for s in MODELS])
    np.testing.assert_allclose(o.cost, o.input_tokens * in_price + o.output_tokens * out_price, rtol=1e-12)
    assert np.all(o.output_tokens >= 1) and np.all(o.input_tokens == o.input_tokens[:, :1])  # same prompt
    assert np.all(o.latency > 0)
    # the frontier model costs the most on every prompt
    assert np.all(o.cost.argmax(axis=1) == MODEL_NAMES.index("frontier-xl"))


def test_best_model_per_context_is_the_argmax_of_the_skill_table(small: SyntheticData) -> None:
    best = small.best_model_per_context(lam=0.0)
    expected = {(name, level): MODEL_NAMES[int(np.argmax(_SKILL[name][int(level)]))]
                for name in FAMILIES for level in (False, True)}
    assert best == expected
    assert best[("coding", True)] == "code-34b" and best[("math", True)] == "math-13b"
    # a huge cost weight prefers the cheapest model everywhere
    assert set(small.best_model_per_context(lam=1e6).values()) == {"small-8b"}


def test_drift_moves_the_drifting_model_only() -> None:
    drift, j = 0.3, MODEL_NAMES.index("medium-70b")
    data = generate(4000, seed=5, drift=drift, families=["coding", "legal"], days=10.0)
    base = np.array([_SKILL[data.families[f]][int(h)] for f, h in zip(data.family, data.hard, strict=True)])
    others = [k for k in range(len(MODELS)) if k != j]
    np.testing.assert_array_equal(data.true_quality[:, others], base[:, others])
    ts = data.outcomes.timestamps
    frac = (ts - np.datetime64(dt.datetime(2026, 1, 1), "us")) / np.timedelta64(10 * 86400, "s")
    np.testing.assert_allclose(data.true_quality[:, j], np.clip(base[:, j] + drift * frac, 0.01, 0.99), atol=1e-9)
    # first to last timestamp, within one context: the skill moved by `drift`
    rows = np.flatnonzero((data.family == data.families.index("coding")) & data.hard)
    first, last = rows[0], rows[-1]
    assert ts[first] < ts[last]
    assert data.true_quality[last, j] - data.true_quality[first, j] == pytest.approx(drift, abs=0.01)
    # negative drift lowers it, clipped at 0.01
    down = generate(2000, seed=5, drift=-1.0, families=["coding"])
    assert down.true_quality[-1, j] == pytest.approx(0.01)


def test_emerging_family_appears_only_after_the_shift_and_changes_the_best_model() -> None:
    data = generate(6000, seed=4, emerging="translation", emerging_at=0.6, emerging_share=0.5)
    o, new = data.outcomes, data.family == data.families.index("translation")
    assert data.families == (*FAMILIES, "translation") and data.features.shape == (6000, 2 * (len(FAMILIES) + 1))
    ts = o.timestamps
    frac = (ts - np.datetime64(dt.datetime(2026, 1, 1), "us")) / np.timedelta64(30 * 86400, "s")
    np.testing.assert_array_equal(data.after_shift, frac >= 0.6)
    assert not new[~data.after_shift].any()  # absent before the shift ...
    assert abs(new[data.after_shift].mean() - 0.5) < 0.03  # ... half of the traffic after it
    assert set(o.tasks[new]) == {"translation"}
    subjects, easy, hard, _ = EMERGING_FAMILIES["translation"]
    assert all(any(s in p for s in subjects) for p in o.prompts[new])
    np.testing.assert_array_equal(data.true_quality[new & data.hard], np.tile(_SKILL["translation"][1], ((new & data.hard).sum(), 1)))
    # the shift is in which model is best: the small model on translation, never the best on any old family
    best = data.best_model_per_context(lam=0.0)
    assert best[("translation", False)] == best[("translation", True)] == "small-8b"
    assert "small-8b" not in {m for (fam, _), m in best.items() if fam != "translation"}
    # the old families keep their skills; the knob off leaves the default data as it was
    assert generate(300, seed=4).after_shift is not None and not generate(300, seed=4).after_shift.any()
    a, b = generate(300, seed=4), generate(300, seed=4, emerging="translation", emerging_at=0.5)
    np.testing.assert_array_equal(a.hard, b.hard)
    np.testing.assert_array_equal(a.family[~b.after_shift], b.family[~b.after_shift])


def test_unlogged_pairs_are_masked() -> None:
    pairs = [("coding", "small-8b"), ("math", "frontier-xl")]
    data = generate(500, seed=2, unlogged=pairs)
    expected = np.ones((500, len(MODELS)), dtype=bool)
    for fam, mod in pairs:
        expected[data.family == data.families.index(fam), MODEL_NAMES.index(mod)] = False
    np.testing.assert_array_equal(data.logging_mask, expected)
    assert (~data.logging_mask).sum() > 0
    assert generate(50, seed=2).logging_mask.all()


def test_families_subset_and_options() -> None:
    data = generate(300, seed=1, families=["math", "legal"], hard_fraction=0.0, source="mine")
    assert data.families == ("math", "legal") and set(data.outcomes.tasks) == {"math", "legal"}
    assert not data.hard.any() and data.features.shape == (300, 4) and data.outcomes.source == "mine"
    assert generate(100, seed=1, hard_fraction=1.0).hard.all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_prompts": 0}, r"n_prompts must be positive, got 0"),
        ({"hard_fraction": 1.5}, r"hard_fraction must be in \[0, 1\], got 1\.5"),
        ({"families": ["cooking"]}, r"unknown families \['cooking'\]; choose from"),
        ({"drift": 0.1, "drift_model": "gpt-9"}, r"drift_model 'gpt-9' is not one of"),
        ({"unlogged": [("coding", "gpt-9")]}, r"unlogged pair \('coding', 'gpt-9'\) names an unknown family or model"),
        ({"unlogged": [("legal", "small-8b")], "families": ["coding"]}, r"unlogged pair \('legal', 'small-8b'\)"),
        ({"emerging": "cooking"}, r"unknown emerging family 'cooking'; choose from \['translation'\]"),
        ({"emerging": "translation", "emerging_at": 1.0}, r"emerging_at must be in \[0, 1\), got 1\.0"),
        ({"emerging": "translation", "emerging_share": 0.0}, r"emerging_share must be in \(0, 1\], got 0\.0"),
    ],
)
def test_generate_errors(kwargs: dict[str, object], message: str) -> None:
    kwargs = {"n_prompts": 10, **kwargs}
    with pytest.raises(ConfigError, match=message):
        generate(**kwargs)  # type: ignore[arg-type]


# =========================================================================== reduce
def test_uniform_propensities() -> None:
    probs = logging_probabilities(4, 5)
    np.testing.assert_allclose(probs, 0.2)
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1], [1, 0, 1, 0, 1]], dtype=bool)
    probs = logging_probabilities(4, 5, mask=mask)
    np.testing.assert_allclose(probs, mask / mask.sum(axis=1, keepdims=True))


def test_epsilon_greedy_probabilities() -> None:
    scores = np.array([[0.1, 0.9, 0.3], [0.5, 0.2, 0.1], [0.0, 0.0, 1.0]])
    eps, k = 0.3, 3
    probs = logging_probabilities(3, 3, policy="epsilon-greedy", scores=scores, epsilon=eps)
    greedy = scores.argmax(axis=1)
    for i in range(3):
        for j in range(3):
            expected = (1 - eps) + eps / k if j == greedy[i] else eps / k
            assert probs[i, j] == pytest.approx(expected)
    # with a mask: greedy among the allowed, eps spread over the allowed only
    mask = np.array([[1, 0, 1], [1, 1, 1], [0, 1, 1]], dtype=bool)
    probs = logging_probabilities(3, 3, policy="epsilon-greedy", scores=scores, epsilon=eps, mask=mask)
    np.testing.assert_allclose(probs[0], [eps / 2, 0.0, 1 - eps + eps / 2])  # model 1 would be greedy but is masked
    np.testing.assert_allclose(probs[1], [1 - eps + eps / 3, eps / 3, eps / 3])
    np.testing.assert_allclose(probs[2], [0.0, eps / 2, 1 - eps + eps / 2])
    assert logging_probabilities(3, 3, policy="epsilon-greedy", scores=scores, epsilon=0.0).max(axis=1).tolist() == [
        1.0, 1.0, 1.0
    ]


def test_softmax_probabilities() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 4))
    probs = logging_probabilities(50, 4, policy="softmax", scores=scores, temperature=0.5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    expected = np.exp(scores / 0.5) / np.exp(scores / 0.5).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, expected, rtol=1e-12)
    # numerically safe for large scores, and masked actions get exactly zero
    mask = np.ones((50, 4), dtype=bool)
    mask[:, 0] = False
    probs = logging_probabilities(50, 4, policy="softmax", scores=scores * 1e4, temperature=0.01, mask=mask)
    assert np.isfinite(probs).all() and np.all(probs[:, 0] == 0.0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mask": np.array([[True, True], [False, False]])}, r"mask row 1 allows no model"),
        ({"mask": np.ones((3, 2), dtype=bool)}, r"mask must have shape \(2, 2\), got \(3, 2\)"),
        ({"policy": "softmax"}, r"policy 'softmax' needs scores \(n, m\)"),
        ({"policy": "epsilon-greedy"}, r"policy 'epsilon-greedy' needs scores \(n, m\)"),
        ({"policy": "softmax", "scores": np.zeros((2, 3))}, r"scores must be finite with shape \(2, 2\), got \(2, 3\)"),
        ({"policy": "softmax", "scores": np.array([[0.0, np.nan], [0.0, 0.0]])}, r"scores must be finite"),
        ({"policy": "epsilon-greedy", "scores": np.zeros((2, 2)), "epsilon": 1.5}, r"epsilon must be in \[0, 1\]"),
        ({"policy": "softmax", "scores": np.zeros((2, 2)), "temperature": 0.0}, r"temperature must be > 0"),
        ({"policy": "thompson", "scores": np.zeros((2, 2))}, r"unknown logging policy 'thompson'"),
    ],
)
def test_logging_probability_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        logging_probabilities(2, 2, **kwargs)  # type: ignore[arg-type]


def test_to_traffic_log_errors(small: SyntheticData) -> None:
    mask = np.ones((600, 5), dtype=bool)
    mask[17] = False
    with pytest.raises(ConfigError, match=r"mask row 17 allows no model"):
        to_traffic_log(small.outcomes, mask=mask)
    with pytest.raises(ConfigError, match=r"needs scores"):
        to_traffic_log(small.outcomes, policy="softmax")


def test_choice_frequencies_match_probabilities() -> None:
    n, m = 20_000, 4
    o = Outcomes(prompt_ids=[f"p{i}" for i in range(n)], prompts=["x"] * n, models=["a", "b", "c", "d"],
                 quality=np.zeros((n, m)), cost=np.zeros((n, m)))
    scores = np.tile([0.0, 0.1, 0.25, 0.05], (n, 1))
    for policy, kw in (("uniform", {}), ("epsilon-greedy", {"epsilon": 0.4}), ("softmax", {"temperature": 0.1})):
        log, probs = to_traffic_log(o, policy=policy, scores=scores, seed=1, **kw)
        freq = log["chosen_model"].value_counts().sort("chosen_model")
        counts = dict(zip(freq["chosen_model"], freq["count"], strict=True))
        emp = np.array([counts.get(name, 0) for name in o.models]) / n
        np.testing.assert_allclose(emp, probs[0], atol=0.015, err_msg=policy)
        np.testing.assert_allclose(log["propensity"].to_numpy(), probs[np.arange(n), o.model_index(log["chosen_model"])])


def test_masked_actions_are_never_chosen(big: SyntheticData) -> None:
    mask = big.logging_mask.copy()
    mask[:, MODEL_NAMES.index("frontier-xl")] = False
    mask[big.family == 0, MODEL_NAMES.index("small-8b")] = False
    scores = big.true_quality  # the masked frontier model would be the softmax favourite
    for policy in ("uniform", "epsilon-greedy", "softmax"):
        log, probs = to_traffic_log(big.outcomes, policy=policy, scores=scores, mask=mask, seed=0, temperature=0.05)
        assert np.all(probs[~mask] == 0.0)
        chosen = big.outcomes.model_index(log["chosen_model"])
        assert mask[np.arange(big.outcomes.n_prompts), chosen].all(), policy
        assert (log["propensity"] > 0).all()


def test_traffic_log_is_valid_and_keeps_ids(small: SyntheticData) -> None:
    o = small.outcomes
    log, probs = to_traffic_log(o, policy="softmax", scores=small.true_quality, seed=4, tenant="t1")
    validate_traffic_log(log, source="reduced", known_models=o.models)
    assert log.columns == list(TRAFFIC_LOG_SCHEMA) and log.schema == pl.Schema(TRAFFIC_LOG_SCHEMA)
    assert log["prompt_id"].to_list() == o.prompt_ids.tolist()
    assert log["task"].to_list() == o.tasks.tolist()
    assert log["prompt"].to_list() == o.prompts.tolist()
    assert log["request_id"].n_unique() == o.n_prompts and log["request_id"][0] == f"synthetic-{o.prompt_ids[0]}"
    assert set(log["tenant"]) == {"t1"} and set(log["policy_version"]) == {"logging-softmax"}
    # each row carries the chosen model's own outcome, and the log keeps the source timestamps in UTC
    rows = np.arange(o.n_prompts)
    chosen = o.model_index(log["chosen_model"])
    np.testing.assert_array_equal(log["quality"].to_numpy(), o.quality[rows, chosen])
    np.testing.assert_allclose(log["cost"].to_numpy(), o.cost[rows, chosen])
    np.testing.assert_array_equal(log["output_tokens"].to_numpy(), o.output_tokens[rows, chosen].astype(np.int64))
    np.testing.assert_allclose(log["propensity"].to_numpy(), probs[rows, chosen])
    assert log["timestamp"].dt.replace_time_zone(None).to_numpy().astype("datetime64[us]").tolist() == \
        o.timestamps.tolist()
    again, _ = to_traffic_log(o, policy="softmax", scores=small.true_quality, seed=4, tenant="t1")
    assert again.equals(log)
    other, _ = to_traffic_log(o, policy="softmax", scores=small.true_quality, seed=5, tenant="t1")
    assert not other["chosen_model"].equals(log["chosen_model"])


def test_traffic_log_without_timestamps_or_tokens() -> None:
    o = Outcomes(prompt_ids=["a", "b", "c"], prompts=["x", "y", "z"], models=["s", "b"],
                 quality=[[0, 1], [1, 1], [0, 0]], cost=[[0.1, 0.2]] * 3, source="tiny")
    log, probs = to_traffic_log(o, seed=0, policy_version="v9")
    validate_traffic_log(log, known_models=["s", "b"])
    np.testing.assert_allclose(probs, 0.5)
    assert log["timestamp"].to_list() == [dt.datetime(2026, 1, 1, 0, 0, s, tzinfo=dt.UTC) for s in range(3)]
    assert log["input_tokens"].null_count() == 3 and set(log["policy_version"]) == {"v9"}
