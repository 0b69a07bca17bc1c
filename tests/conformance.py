"""Conformance checks every quality predictor, encoder and router must pass (River ``checks/common.py`` style).

Predictors and encoders are discovered automatically: every concrete subclass of
:class:`router.base.QualityPredictor` / :class:`router.base.Encoder` defined under ``router`` (and
cross-checked against :mod:`router.registry`). Fast hyperparameters come from the class's
``_unit_test_params()``.

The router checks (:data:`ROUTER_CHECKS`) run a :class:`~router.router.Router` built around a
component -- :func:`predictor_router` for a quality predictor, :func:`policy_router` for a bandit
policy trained in the replay environment -- so every registered predictor and policy is checked
inside a router: route, save, load and route again give identical decisions; the same seed gives the
same router; bad input gets a clear error.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import router.encoders
import router.predictors  # noqa: F401  (imports register the subclasses)
from router.base import Encoder, Policy, QualityPredictor
from router.errors import ConfigError, NotFittedError, PersistenceError, UnknownModelError
from router.persist import save_component


def all_subclasses(cls: type) -> list[type]:
    out: list[type] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(all_subclasses(sub))
    return out


def concrete(cls: type) -> list[type]:
    # classes of modules no longer loaded (throw-away test components) do not count
    found = {c for c in all_subclasses(cls) if not inspect.isabstract(c) and c.__module__.startswith("router.")
             and c.__module__ in sys.modules}
    return sorted(found, key=lambda c: c.__name__)


def predictor_classes() -> list[type[QualityPredictor]]:
    return concrete(QualityPredictor)


def encoder_classes() -> list[type[Encoder]]:
    return concrete(Encoder)


def make_predictor(cls: type[QualityPredictor], **overrides: Any) -> QualityPredictor:
    params = dict(getattr(cls, "_unit_test_params", dict)())
    params.update(overrides)
    return cls(**params)


def cluster_data(n_per: int = 30, m: int = 3, d: int = 8, seed: int = 0, noise: float = 0.15):
    """Clusters of embeddings where model j is right exactly in cluster j. Returns (x, q, labels)."""
    rng = np.random.default_rng(seed)
    centers = np.eye(d)[:m] * 3.0
    labels = np.repeat(np.arange(m), n_per)
    x = centers[labels] + noise * rng.normal(size=(len(labels), d))
    q = np.eye(m)[labels]
    return x.astype(np.float32), q, labels


def save_to_dir(obj: Any, path: Path) -> None:
    """The one component format (``router.persist``): ``model.json`` + ``model.npz``."""
    save_component(obj, path, "model")


def load_from_dir(path: Path) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    meta = json.loads((path / "model.json").read_text())
    with np.load(path / "model.npz", allow_pickle=False) as z:
        state = {k: z[k] for k in z.files}
    return meta["kind"], meta["config"], state


# ---------------------------------------------------------------------- predictor checks
def check_predictor_shapes(cls: type[QualityPredictor]) -> None:
    x, q, _ = cluster_data()
    p = make_predictor(cls).fit(x, q)
    out = p.predict(x[:7])
    assert out.shape == (7, q.shape[1])
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert p.predict(x[:0]).shape == (0, q.shape[1])
    # any number of models
    p1 = make_predictor(cls).fit(x, q[:, :1])
    assert p1.predict(x[:3]).shape == (3, 1)


def check_predictor_seeded(cls: type[QualityPredictor]) -> None:
    x, q, _ = cluster_data(seed=1)
    a = make_predictor(cls).fit(x, q).predict(x)
    b = make_predictor(cls).fit(x, q).predict(x)
    np.testing.assert_array_equal(a, b)


def check_predictor_inputs_unchanged(cls: type[QualityPredictor]) -> None:
    x, q, _ = cluster_data(seed=2)
    x0, q0 = x.copy(), q.copy()
    p = make_predictor(cls).fit(x, q)
    p.predict(x)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(q, q0)


def check_predictor_roundtrip(cls: type[QualityPredictor], tmp_path: Path) -> None:
    from router.predictors import predictor_from_config

    x, q, _ = cluster_data(seed=3)
    p = make_predictor(cls).fit(x, q)
    save_to_dir(p, tmp_path / "model")
    kind, config, state = load_from_dir(tmp_path / "model")
    again = predictor_from_config(kind, config, state)
    np.testing.assert_array_equal(p.predict(x), again.predict(x))
    in_memory = type(p).from_config(p.get_config(), p.get_state())
    np.testing.assert_array_equal(p.predict(x), in_memory.predict(x))  # type: ignore[attr-defined]


def check_predictor_errors(cls: type[QualityPredictor]) -> None:
    x, q, _ = cluster_data(seed=4)
    with pytest.raises(NotFittedError, match="not fitted"):
        make_predictor(cls).predict(x)
    p = make_predictor(cls).fit(x, q)
    with pytest.raises(ConfigError, match="width"):
        p.predict(x[:, :-1])
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        p.predict(bad)
    with pytest.raises(ConfigError, match="NaN"):
        make_predictor(cls).fit(bad, q)
    with pytest.raises(ConfigError, match="empty"):
        make_predictor(cls).fit(x[:0], q[:0])
    with pytest.raises(ConfigError, match="rows"):
        make_predictor(cls).fit(x, q[:-1])
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        make_predictor(cls).fit(x, q * 2)


def check_predictor_known_answer(cls: type[QualityPredictor]) -> None:
    x, q, labels = cluster_data(n_per=40, seed=5)
    xt, _, lt = cluster_data(n_per=10, seed=6)
    p = make_predictor(cls).fit(x, q)
    pred = p.predict(xt)
    assert (pred.argmax(axis=1) == lt).mean() >= 0.95
    # calibrated-ish: the right model scores high, the others low
    right = pred[np.arange(len(lt)), lt]
    assert right.mean() > 0.6
    assert (pred.sum(axis=1) - right).mean() / (q.shape[1] - 1) < 0.4


PREDICTOR_CHECKS = [
    check_predictor_shapes,
    check_predictor_seeded,
    check_predictor_inputs_unchanged,
    check_predictor_errors,
    check_predictor_known_answer,
]


# ---------------------------------------------------------------------- encoder checks
def check_encoder(enc: Encoder) -> None:
    texts = ["What is the capital of France?", "Write a Python function to sort a list.", "", "2 + 2 = ?"]
    before = list(texts)
    a = enc.encode(texts)
    assert texts == before
    assert a.shape == (4, enc.dim) and a.dtype == np.float32
    norms = np.linalg.norm(a, axis=1)
    assert np.allclose(norms[[0, 1, 3]], 1.0, atol=1e-4)
    assert enc.encode([]).shape == (0, enc.dim)
    with pytest.raises(ConfigError, match="list of strings"):
        enc.encode("a bare string")  # type: ignore[arg-type]
    config = json.loads(json.dumps(router.encoders.encoder_config(enc)))
    again = router.encoders.encoder_from_config(config)
    np.testing.assert_allclose(again.encode(texts), a, atol=1e-6)
    np.testing.assert_allclose(enc.encode(texts[1:2]), a[1:2], atol=1e-5)


# ---------------------------------------------------------------------- router checks
#: cost weight of the routers built here (reward units per USD)
ROUTER_LAM = 20.0


def router_outcomes(n: int = 240, seed: int = 0) -> Any:
    from router.data.synthetic import generate

    return generate(n, seed=seed).outcomes


def predictor_router(cls: type[QualityPredictor], seed: int = 0) -> Any:
    """A router around ``cls`` (its fast test parameters, ``seed`` when it takes one) on synthetic data."""
    from router.encoders import HashingEncoder
    from router.router import Router

    params = dict(cls._unit_test_params())
    if "seed" in inspect.signature(cls.__init__).parameters:
        params["seed"] = seed
    return Router.fit(router_outcomes(), encoder=HashingEncoder(dim=32), predictor=cls(**params),
                      metadata={"router_kind": cls.kind})


def policy_router(cls: type[Policy], seed: int = 0, steps: int = 160) -> Any:
    """A router around policy ``cls`` trained for ``steps`` requests in the replay environment made from
    synthetic outcomes (the environment's encoder and prefix stripper become the router's)."""
    from envs.loop import run_policy
    from envs.vector import make_vector
    from router.cost_predictor import CostPredictor
    from router.decision import DecisionRule
    from router.router import Router

    o = router_outcomes()
    env = make_vector(outcomes=o, encoder="hashing", encoder_options={"dim": 32}, num_envs=16, lam=ROUTER_LAM)
    policy = cls(n_actions=o.n_models, dim=env.data.dim, seed=seed, **cls._unit_test_params())
    for _ in run_policy(policy, env, steps, seed=seed):
        pass
    cost = CostPredictor().fit(env.data.embeddings, env.data.prompt_lengths, o)
    return Router(o.models, env.data.encoder, policy, cost, rule=DecisionRule(lam=ROUTER_LAM),
                  preprocessor=env.data.preprocessor, policy_lam=ROUTER_LAM, metadata={"router_kind": cls.kind})


ROUTE_PROMPTS: list[Any] = [
    "Prove rigorously a theorem about prime numbers",
    "Write a Python function that merges two sorted lists",
    "hi there, how are you today?",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Summarize this contract clause"}],
]


def _same_decisions(a: Any, b: Any) -> None:
    np.testing.assert_array_equal(a.chosen_index, b.chosen_index)
    for name in ("probabilities", "quality", "cost", "latency"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.reasons == b.reasons and (a.lam, a.mu) == (b.lam, b.mu)


def check_router_roundtrip(router: Any, tmp_path: Path) -> None:
    """route, save, load, route again: identical decisions (own trade-off, an override, a model subset)."""
    from router.router import Router

    router.route(ROUTE_PROMPTS)  # routing may advance a stochastic policy's generator: it is saved with it
    router.save(tmp_path / "r")
    loaded = Router.load(tmp_path / "r")
    assert loaded.models == router.models and type(loaded.quality) is type(router.quality)
    assert (loaded.policy_lam, loaded.policy_mu, loaded.rule) == (router.policy_lam, router.policy_mu, router.rule)
    for kwargs in ({}, {"lam": 5.0}, {"allowed": list(router.models[:2])}):
        _same_decisions(router.route(ROUTE_PROMPTS, **kwargs), loaded.route(ROUTE_PROMPTS, **kwargs))
    s1, s2 = router.sweep(ROUTE_PROMPTS, [0.0, 50.0]), loaded.sweep(ROUTE_PROMPTS, [0.0, 50.0])
    for u, v in zip(s1, s2):
        np.testing.assert_array_equal(u, v)
    d = loaded.route(ROUTE_PROMPTS)
    assert d.chosen_index.shape == (len(ROUTE_PROMPTS),)
    np.testing.assert_allclose(d.probabilities.sum(axis=1), 1.0)
    assert (d.quality >= 0).all() and (d.quality <= 1).all() and (d.cost >= 0).all()


def check_router_seeded(make: Any) -> None:
    """Two routers built with the same seed decide identically."""
    _same_decisions(make(0).route(ROUTE_PROMPTS), make(0).route(ROUTE_PROMPTS))


def check_router_errors(router: Any, tmp_path: Path) -> None:
    """Bad input gets a clear error, and the prompts given are not modified."""
    from router.router import Router

    prompts = [list(p) if isinstance(p, list) else p for p in ROUTE_PROMPTS]
    router.route(prompts)
    assert prompts == ROUTE_PROMPTS
    with pytest.raises(ConfigError, match="not a single string"):
        router.route("a bare string")
    with pytest.raises(ConfigError, match="prompt 1 is empty"):
        router.route(["fine", "   "])
    with pytest.raises(ConfigError, match="prompt 0 has type int"):
        router.route([7])
    with pytest.raises(UnknownModelError, match="unknown model"):
        router.route(["hi"], allowed=["no-such-model"])
    with pytest.raises(ConfigError, match="allowed model list is empty"):
        router.route(["hi"], allowed=[])
    with pytest.raises(PersistenceError, match="router.json"):
        Router.load(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="cost must be a CostModel"):
        Router(router.models, router.encoder, router.quality, object())


ROUTER_CHECKS = [check_router_roundtrip, check_router_errors]
