"""The component registries: look-up, aliases, errors, and a new predictor and a new policy, each added as
one file in its package, used through ``training fit`` / ``training bandit`` / ``training tune`` and a
save-load round trip."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest

import router.policies
import router.predictors
from router import registry
from router.base import Component, QualityPredictor
from router.errors import ConfigError, PersistenceError
from router.router import Router
from tests import conformance as cf

# --------------------------------------------------------------------------- the one-file components
PREDICTOR_FILE = '''
"""A predictor in one file: every prompt gets each model's mean training quality."""
import numpy as np

from router.predictors._common import BasePredictor


class ColumnMean(BasePredictor):
    kind = "column_mean"

    def _fit(self, x, q):
        self.mean_ = q.mean(axis=0)

    def _predict(self, x):
        return np.tile(self.mean_, (x.shape[0], 1))

    def get_state(self):
        return {**self._shape_state(), "mean_": self.mean_}

    def set_state(self, state):
        self._set_shape_state(state)
        self.mean_ = np.asarray(state["mean_"], dtype=np.float64)
'''

POLICY_FILE = '''
"""A policy in one file: epsilon-greedy on each model's running mean reward (context-free)."""
import numpy as np

from router.base import Policy
from router.policies._common import check_context, check_mask, check_update, rng_from_state, rng_to_state
from router.registry import FloatParam


class MeanGreedy(Policy):
    kind = "mean_greedy"
    search_space = {"epsilon": FloatParam(0.01, 0.5)}

    def __init__(self, n_actions, dim, epsilon=0.1, seed=0):
        self.n_actions, self.dim, self.epsilon, self.seed = n_actions, dim, epsilon, seed
        self.sums_ = np.zeros(n_actions)
        self.counts_ = np.zeros(n_actions)
        self.rng_ = np.random.default_rng(seed)

    def _mean(self):
        return self.sums_ / np.maximum(self.counts_, 1.0)

    def select(self, context, mask=None):
        x, single = check_context(context, self.dim)
        mk = check_mask(mask, x.shape[0], self.n_actions)
        best = np.argmax(np.where(mk, self._mean(), -np.inf), axis=1)
        p = np.where(mk, self.epsilon / mk.sum(axis=1, keepdims=True), 0.0)
        p[np.arange(x.shape[0]), best] += 1.0 - self.epsilon
        return p[0] if single else p

    def update(self, context, action, reward, propensity=None):
        _, a, r = check_update(context, action, reward, propensity, self.dim, self.n_actions)
        np.add.at(self.sums_, a, r)
        np.add.at(self.counts_, a, 1.0)
        return self

    def expected_reward(self, context):
        x, _ = check_context(np.atleast_2d(context), self.dim)
        return np.tile(self._mean(), (x.shape[0], 1))

    def get_state(self):
        return {"sums_": self.sums_, "counts_": self.counts_, "rng_": rng_to_state(self.rng_)}

    def set_state(self, state):
        self.sums_ = np.asarray(state["sums_"], dtype=np.float64)
        self.counts_ = np.asarray(state["counts_"], dtype=np.float64)
        self.rng_ = rng_from_state(state["rng_"])
'''


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """Drop one file into each package (a second folder on its ``__path__``) and let discovery find them."""
    for package, name, text in ((router.predictors, "column_mean", PREDICTOR_FILE),
                                (router.policies, "mean_greedy", POLICY_FILE)):
        folder = tmp_path / f"plugins_{name}"
        folder.mkdir()
        (folder / f"{name}.py").write_text(textwrap.dedent(text))
        monkeypatch.setattr(package, "__path__", [*package.__path__, str(folder)])
    yield
    registry.unregister("predictor", "column_mean")
    registry.unregister("policy", "mean_greedy")
    for mod in ("router.predictors.column_mean", "router.policies.mean_greedy"):
        sys.modules.pop(mod, None)


def test_new_files_are_discovered(plugins):
    assert "column_mean" in registry.kinds("predictor") and "column_mean" in router.predictors.PREDICTORS
    assert "mean_greedy" in registry.kinds("policy") and "mean_greedy" in router.policies.POLICIES
    assert registry.search_space("policy", "mean_greedy")["epsilon"].high == 0.5
    # the ensemble takes any registered predictor as a member
    ens = registry.create("predictor", "ensemble", members=[["column_mean", {}], ["knn", {"k": 3}]])
    x, q, _ = cf.cluster_data()
    assert ens.fit(x, q).predict(x[:2]).shape == (2, 3)


def test_new_predictor_through_training_fit_and_round_trip(plugins, tmp_path):
    from training.fit import main

    out = tmp_path / "fit"
    assert main(["--dataset", "synthetic", "--predictor", "column_mean", "--encoder", "hashing", "--no-track",
                 "--out", str(out)]) == 0
    assert json.loads((out / "quality.json").read_text())["kind"] == "column_mean"
    loaded = Router.load(out)
    assert type(loaded.quality).__name__ == "ColumnMean"
    cf.check_router_roundtrip(loaded, tmp_path)
    cf.check_router_errors(loaded, tmp_path)
    # a predictor without a mean per model would not be this one: its estimate is the same for every prompt
    d = loaded.route(cf.ROUTE_PROMPTS, lam=0.0)
    assert (d.quality == d.quality[0]).all()


def test_new_policy_through_training_bandit_tune_and_round_trip(plugins, tmp_path):
    from training.bandit import main
    from training.tune import Args as TuneArgs
    from training.tune import run as tune

    out = tmp_path / "bandit"
    assert main(["--dataset", "synthetic", "--policy", "mean_greedy", "--epsilon", "0.2", "--steps", "400",
                 "--n-prompts", "300", "--hashing-dim", "32", "--lam", "20", "--out", str(out)]) == 0
    loaded = Router.load(out)
    assert type(loaded.quality).__name__ == "MeanGreedy" and loaded.quality.epsilon == 0.2
    assert loaded.quality.counts_.sum() == 400 and loaded.policy_lam == 20.0
    cf.check_router_roundtrip(loaded, tmp_path)
    cf.check_router_errors(loaded, tmp_path)
    res = tune(TuneArgs(policy="mean_greedy", n_trials=2, steps=200, n_prompts=200, track=False,
                        storage=f"sqlite:///{tmp_path / 'optuna.db'}", out=str(tmp_path / "tune")))
    assert set(res["best_params"]) == {"lam", "epsilon"}  # the policy's own search space


def test_dummies_pass_the_component_and_router_suites(plugins, tmp_path):
    cls = registry.get("predictor", "column_mean")
    for check in (cf.check_predictor_shapes, cf.check_predictor_seeded, cf.check_predictor_inputs_unchanged,
                  cf.check_predictor_errors):
        check(cls)
    cf.check_predictor_roundtrip(cls, tmp_path)
    pol = registry.get("policy", "mean_greedy")
    for check in cf.ROUTER_CHECKS:
        check(cf.policy_router(pol), tmp_path / check.__name__)
    cf.check_router_seeded(lambda seed: cf.policy_router(pol, seed))


# --------------------------------------------------------------------------- look-up and errors
def test_aliases_and_defaults_are_one_place():
    assert registry.get("predictor", "mf") is registry.get("predictor", "matrix_factorization")
    assert registry.get("encoder", "minilm").kind == "sentence_transformer"
    assert {"mf", "minilm"} <= set(registry.names("predictor")) | set(registry.names("encoder"))
    # `training fit` and `training bandit` build "hashing" the same way: the encoder's own default width
    from router.encoders import build_encoder
    from training.bandit import Args, encoder_options

    assert encoder_options(Args(encoder="hashing")) == {}
    assert build_encoder("hashing").dim == registry.get("encoder", "hashing")().dim
    assert build_encoder("hashing", **encoder_options(Args(encoder="hashing", hashing_dim=16))).dim == 16


def test_registry_errors():
    with pytest.raises(ConfigError, match=r"unknown predictor 'forest'; choose one of \['ensemble'"):
        registry.get("predictor", "forest")
    with pytest.raises(ConfigError, match=r"Bad arguments for policy 'linucb': it takes no \['width'\]"):
        registry.create("policy", "linucb", n_actions=2, dim=2, width=3)
    with pytest.raises(ConfigError, match="unknown component family"):
        registry.kinds("tokenizer")
    with pytest.raises(PersistenceError, match="unknown component kind 'forest'"):
        registry.find("forest")

    with pytest.raises(ConfigError, match="kind 'knn' is taken by router.predictors.knn.KNNPredictor"):
        class Clash(QualityPredictor):  # noqa: F841  (registration happens at class creation)
            kind = "knn"

            def fit(self, embeddings, quality):
                return self

            def predict(self, embeddings):
                return embeddings
    assert registry.get("predictor", "knn").__name__ == "KNNPredictor"


def test_every_component_with_a_kind_is_registered_once():
    kinds = [k for f in registry.FAMILIES for k in registry.kinds(f)]
    assert len(kinds) == len(set(kinds))
    assert set(registry.kinds("cost")) == {"cost_predictor"}
    assert {"prefix_stripper", "prompt_stats"} <= set(registry.kinds("component"))
    for family in registry.FAMILIES:
        for kind in registry.kinds(family):
            cls = registry.get(family, kind)
            assert issubclass(cls, Component) and cls.family == family


def test_seed_is_passed_only_to_components_that_take_one():
    assert registry.create("predictor", "mlp", seed=5).seed == 5
    assert registry.create("predictor", "knn", seed=5).get_config() == {"k": 40, "metric": "cosine",
                                                                       "weighting": "uniform"}
    pol = registry.create("policy", "thompson", seed=3, n_actions=2, dim=2)
    np.testing.assert_array_equal(pol.rng_.random(2), np.random.default_rng(3).random(2))
