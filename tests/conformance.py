"""Conformance checks every quality predictor and encoder must pass (River ``checks/common.py`` style).

Predictors and encoders are discovered automatically: every concrete subclass of
:class:`router.base.QualityPredictor` / :class:`router.base.Encoder` defined under ``router``.
Fast hyperparameters come from the class's ``_unit_test_params()`` when it has one.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import router.encoders
import router.predictors  # noqa: F401  (imports register the subclasses)
from router.base import Encoder, QualityPredictor
from router.errors import ConfigError, NotFittedError


def all_subclasses(cls: type) -> list[type]:
    out: list[type] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(all_subclasses(sub))
    return out


def concrete(cls: type) -> list[type]:
    found = {c for c in all_subclasses(cls) if not inspect.isabstract(c) and c.__module__.startswith("router.")}
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
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"kind": obj.kind, "config": obj.get_config()}))
    np.savez(path / "weights.npz", **obj.get_state())


def load_from_dir(path: Path) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    meta = json.loads((path / "config.json").read_text())
    with np.load(path / "weights.npz", allow_pickle=False) as z:
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
