"""Context windows: learnt from litellm's map at fit time, saved, and enforced in ``Router.route`` / ``sweep``."""

from __future__ import annotations

import numpy as np
import pytest

from router.data.prices import PriceTable
from router.data.schema import Outcomes
from router.decision import DecisionRule
from router.encoders import HashingEncoder
from router.errors import ConfigError, ContextWindowError
from router.policies import LinUCB
from router.predictors import KNNPredictor
from router.router import Router
from router.tokens import count_tokens
from router.windows import window_mask

#: real names with known windows in litellm's bundled map, and one the map does not know
MODELS = ["gpt-3.5-turbo-1106", "claude-v2", "gpt-4-1106-preview", "my-local-model"]
WINDOWS = {"gpt-3.5-turbo-1106": 16_385, "claude-v2": 100_000, "gpt-4-1106-preview": 128_000}


def _outcomes(models: list[str], n: int = 120, seed: int = 0) -> Outcomes:
    rng = np.random.default_rng(seed)
    words = ["prime", "poem", "sum", "python", "essay", "proof", "list", "story"]
    prompts = [" ".join(rng.choice(words, size=6)) + f" #{i}" for i in range(n)]
    m = len(models)
    return Outcomes(prompt_ids=[str(i) for i in range(n)], prompts=prompts, models=models,
                    quality=rng.random((n, m)), cost=np.tile(np.linspace(1e-4, 1e-2, m), (n, 1)))


def _router(models: list[str], **kw) -> Router:
    return Router.fit(_outcomes(models), encoder=HashingEncoder(dim=32), predictor=KNNPredictor(k=5),
                      rule=DecisionRule(lam=0.0), **kw)


@pytest.fixture(scope="module")
def megabyte_prompt() -> str:
    rng = np.random.default_rng(0)
    words = np.array("the of a routing model prompt window token cost quality answer question large context "
                     "language system request budget latency provider".split())
    text = " ".join(rng.choice(words, size=200_000))
    return text[:1_000_000]


def test_windows_come_from_the_price_map_at_fit_time() -> None:
    r = _router(MODELS)
    assert r.context_windows == WINDOWS  # my-local-model: unknown, so no limit
    assert PriceTable.load().context_window("WizardLM/WizardLM-13B-V1.2") == 4096  # RouterBench's gap, filled


def test_a_megabyte_prompt_excludes_every_128k_model(megabyte_prompt: str, tmp_path) -> None:
    n_tokens = int(count_tokens([megabyte_prompt])[0])
    assert 128_000 < n_tokens < 400_000, n_tokens  # ~250k tokens
    r = _router(MODELS)
    d = r.route([megabyte_prompt, "What is 2 + 2?"])
    assert d.chosen[0] == "my-local-model"  # the only candidate without a known limit
    assert d.probabilities[0].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert f"the prompt has {n_tokens:,} tokens" in d.reasons[0]
    for name in WINDOWS:
        assert name in d.reasons[0]
    assert "excluded" not in d.reasons[1]
    # saved with the router: the loaded one decides the same
    r.save(tmp_path / "r")
    loaded = Router.load(tmp_path / "r")
    assert loaded.context_windows == WINDOWS
    np.testing.assert_array_equal(loaded.route([megabyte_prompt]).probabilities, d.probabilities[:1])


def test_a_prompt_that_fits_no_model_is_a_clear_error(megabyte_prompt: str) -> None:
    n_tokens = int(count_tokens([megabyte_prompt])[0])
    r = _router(MODELS[:3])
    with pytest.raises(ContextWindowError,
                       match=rf"prompt 1 has {n_tokens:,} tokens .*the largest is 128,000 tokens \(gpt-4-1106-preview\)"):
        r.route(["hello", megabyte_prompt])
    with pytest.raises(ContextWindowError, match="the largest is 128,000"):
        r.sweep(["hello", megabyte_prompt])


def test_allowed_models_and_windows_together() -> None:
    r = _router(MODELS[:3], context_windows={"claude-v2": 50})
    prompt = "word " * 200  # 200+ tokens: too long for the overridden 50-token window only
    d = r.route([prompt], allowed=["claude-v2", "gpt-3.5-turbo-1106"])
    assert d.chosen == ["gpt-3.5-turbo-1106"] and d.probabilities[0, 1] == 0.0
    with pytest.raises(ContextWindowError, match=r"the largest is 50 tokens \(claude-v2\)"):
        r.route([prompt], allowed=["claude-v2"])


def test_overrides_add_and_remove_limits() -> None:
    r = _router(MODELS, context_windows={"my-local-model": 8_000, "gpt-3.5-turbo-1106": None})
    assert r.context_windows == {"my-local-model": 8_000, "claude-v2": 100_000, "gpt-4-1106-preview": 128_000}


def test_sweep_excludes_at_every_lambda() -> None:
    r = _router(MODELS, context_windows={"gpt-4-1106-preview": 20})
    prompts = ["word " * 100, "short"]
    lams, choices, probs, _ = r.sweep(prompts, [0.0, 10.0, 1e6])
    assert (probs[:, 0, 2] == 0).all() and (choices[:, 0] != 2).all()
    assert probs[:, 1].sum(axis=1).tolist() == [1.0, 1.0, 1.0]


def test_a_policy_inside_a_router_obeys_the_windows() -> None:
    base = _router(MODELS)
    emb, _ = base.embed(list(_outcomes(MODELS).prompts))
    policy = LinUCB(len(MODELS), emb.shape[1], alpha=0.0)
    policy.update(np.clip(emb[:40], -1, 1), np.full(40, 2), np.ones(40))  # it likes gpt-4-1106-preview
    r = Router(MODELS, base.encoder, policy, base.cost, preprocessor=base.preprocessor,
               context_windows={"gpt-4-1106-preview": 30})
    d = r.route(["short question", "word " * 100])
    assert d.chosen[0] == "gpt-4-1106-preview"
    assert d.chosen[1] != "gpt-4-1106-preview" and d.probabilities[1, 2] == 0.0
    assert "excluded gpt-4-1106-preview" in d.reasons[1]


@pytest.mark.parametrize(
    ("windows", "match"),
    [
        ({"gpt-9": 100}, "not in the pool"),
        ({"claude-v2": 0}, "positive number of tokens"),
        ({"claude-v2": 12.5}, "positive number of tokens"),
        ({"claude-v2": True}, "positive number of tokens"),
    ],
)
def test_bad_windows(windows: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _router(MODELS, context_windows=windows)


def test_window_mask_notes_name_every_excluded_model() -> None:
    mask, notes = window_mask(np.array([10, 300]), ("a", "b", "c"), {"a": 100, "b": 200})
    assert mask is not None and mask.tolist() == [[True, True, True], [False, False, True]]
    assert notes == ["", "excluded a, b: the prompt has 300 tokens, more than their 100 / 200-token context windows"]
    none, blank = window_mask(np.array([10]), ("a",), {"a": 100})
    assert none is None and blank == [""]
