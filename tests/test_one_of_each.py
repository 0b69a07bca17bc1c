"""One of each: tuning trains and scores policies on the contexts ``training bandit`` and a router use,
and one tracking-URI resolver serves the library and the training commands."""

from __future__ import annotations

import numpy as np
import pytest

from router.context import embed_prompts, fit_preprocessor, policy_context
from router.data.registry import save_outcomes
from router.data.schema import Outcomes
from router.data.splits import split_outcomes
from router.encoders import HashingEncoder


def _few_shot_outcomes(n: int = 160, seed: int = 0) -> Outcomes:
    """Prompts that share a long few-shot block (as RouterBench's ARC-C rows do), then differ."""
    rng = np.random.default_rng(seed)
    shots = "Answer like the examples. " + " ".join(f"Q{i}: what is {i} times {i}? A: {i * i}." for i in range(30))
    words = rng.choice(["compute", "explain", "prove", "summarise", "translate"], n)
    prompts = [f"{shots}\nQ: {w} item {i}" for i, w in enumerate(words)]
    q = (rng.random((n, 3)) < 0.5).astype(float)
    return Outcomes(prompt_ids=[f"p{i}" for i in range(n)], prompts=prompts, models=["a", "b", "c"], quality=q,
                    cost=np.tile([1e-4, 1e-3, 1e-2], (n, 1)), source="few-shot")


def test_tune_uses_the_contexts_bandit_trains_on(tmp_path):
    """``training tune`` strips the shared prefix like ``training bandit`` and a router (it did not)."""
    pytest.importorskip("optuna")
    from training.tune import Args, prepare

    o = _few_shot_outcomes()
    path = save_outcomes(o, tmp_path / "o.parquet")
    data = prepare(Args(dataset=str(path), encoder="hashing", track=False))
    train, valid = split_outcomes(o, seed=0)
    pre = fit_preprocessor(list(train.prompts))
    assert pre is not None and pre.prefixes_
    enc = HashingEncoder()
    expected_train, _ = embed_prompts(list(train.prompts), enc, preprocessor=pre)
    expected_valid = policy_context(embed_prompts(list(valid.prompts), enc, preprocessor=pre)[0])
    np.testing.assert_array_equal(data.train_x, expected_train)
    np.testing.assert_array_equal(data.valid_x, expected_valid)
    unstripped = policy_context(enc.encode([str(p) for p in valid.prompts]))
    assert np.abs(unstripped - data.valid_x).max() > 0.1  # what tune scored on before


def test_one_tracking_uri_resolver(monkeypatch):
    from router.registry_io import registry_uri, tracking_uri
    from training.tracking import default_tracking_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/elsewhere.db")
    assert default_tracking_uri() == tracking_uri() == registry_uri() == "sqlite:////tmp/elsewhere.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    uri = tracking_uri()
    assert default_tracking_uri() == uri and uri.startswith("sqlite:///") and uri.endswith("mlruns/mlflow.db")
