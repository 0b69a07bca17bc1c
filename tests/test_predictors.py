"""Predictor-specific behaviour beyond the conformance suite: variants, calibration, factory."""

from __future__ import annotations

import numpy as np
import pytest

from router.errors import ConfigError
from router.predictors import (
    IsotonicCalibrator,
    KNNPredictor,
    LogisticPredictor,
    MatrixFactorizationPredictor,
    MLPPredictor,
    PlattCalibrator,
    expected_calibration_error,
    out_of_fold_scores,
    predictor_from_config,
)
from tests.conformance import cluster_data


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (KNNPredictor, {"k": 0}, "positive int"),
        (KNNPredictor, {"metric": "manhattan"}, "metric"),
        (KNNPredictor, {"weighting": "rank"}, "weighting"),
        (LogisticPredictor, {"C": 0}, "positive"),
        (MLPPredictor, {"hidden": (0,)}, "hidden"),
        (MLPPredictor, {"dropout": 1.0}, "dropout"),
        (MatrixFactorizationPredictor, {"objective": "listwise"}, "objective"),
        (MatrixFactorizationPredictor, {"dim": 0}, "dim"),
    ],
)
def test_bad_hyperparameters_fail_at_construction(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs)


def test_factory_errors():
    with pytest.raises(ConfigError, match="Unknown predictor kind"):
        predictor_from_config("forest", {})
    with pytest.raises(ConfigError, match="Bad arguments"):
        predictor_from_config("knn", {"neighbours": 3})


@pytest.mark.parametrize(
    "predictor",
    [
        KNNPredictor(k=5, weighting="distance"),
        KNNPredictor(k=5, metric="euclidean"),
        MLPPredictor(hidden=(16,), epochs=40, lr=0.02, batch_size=32, per_model=True),
        MatrixFactorizationPredictor(dim=8, epochs=60, lr=0.03, batch_size=32, objective="pairwise"),
    ],
    ids=["knn-distance", "knn-euclidean", "mlp-per-model", "mf-pairwise"],
)
def test_variants_recover_best_model_per_cluster(predictor, tmp_path):
    x, q, _ = cluster_data(n_per=40, seed=5)
    xt, _, lt = cluster_data(n_per=10, seed=6)
    pred = predictor.fit(x, q).predict(xt)
    assert (pred.argmax(axis=1) == lt).mean() >= 0.95
    again = predictor_from_config(predictor.kind, predictor.get_config(), predictor.get_state())
    np.testing.assert_array_equal(again.predict(xt), pred)


def test_mf_pairwise_outputs_are_calibrated_probabilities():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 6)).astype(np.float32)
    p_true = 1 / (1 + np.exp(-np.c_[2 * x[:, 0], -2 * x[:, 0], np.zeros(600)]))
    q = (rng.random(p_true.shape) < p_true).astype(float)
    mf = MatrixFactorizationPredictor(dim=8, epochs=60, lr=0.02, objective="pairwise").fit(x, q)
    pred = mf.predict(x)
    assert mf.calibrator_ is not None
    assert expected_calibration_error(pred, q) < 0.08


def test_logistic_soft_targets_estimate_expected_quality():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    target = 1 / (1 + np.exp(-(1.5 * x[:, :1] - 0.5)))
    pred = LogisticPredictor(C=100.0).fit(x, target).predict(x)
    np.testing.assert_allclose(pred, target, atol=0.02)


def test_mlp_does_not_touch_global_torch_rng():
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    x, q, _ = cluster_data(n_per=10)
    MLPPredictor(hidden=(4,), epochs=2).fit(x, q)
    torch.testing.assert_close(torch.rand(3), expected)


def test_platt_and_isotonic_calibrate_a_miscalibrated_score():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(2000, 2)) * 3
    truth = (rng.random(s.shape) < 1 / (1 + np.exp(-s / 3))).astype(float)
    raw = 1 / (1 + np.exp(-s))  # overconfident
    assert expected_calibration_error(raw, truth) > 0.1
    for cal in (PlattCalibrator(), IsotonicCalibrator()):
        fitted = cal.fit(s, truth)
        assert expected_calibration_error(fitted.transform(s), truth) < 0.04
        again = type(cal).from_config(cal.get_config(), cal.get_state())
        np.testing.assert_array_equal(again.transform(s), fitted.transform(s))


def test_out_of_fold_scores_never_see_their_own_row():
    x = np.arange(20.0)[:, None]
    q = np.zeros((20, 1))
    seen = out_of_fold_scores(lambda xt, qt, xs: np.isin(xs, xt).astype(float), x, q, n_folds=4)
    assert seen.sum() == 0
    with pytest.raises(ConfigError, match="n_folds"):
        out_of_fold_scores(lambda *a: a[2], x[:2], q[:2], n_folds=4)


def test_expected_calibration_error_errors():
    with pytest.raises(ConfigError, match="shape"):
        expected_calibration_error([0.1, 0.2], [1])


@pytest.mark.parametrize("weighting", ["uniform", "distance"])
def test_knn_numpy_search_matches_faiss(weighting, monkeypatch):
    """The numpy search of small cosine indexes finds FAISS's neighbours and gives its predictions."""
    import router.predictors.knn as knn_mod

    rng = np.random.default_rng(7)
    x = rng.normal(size=(600, 24)).astype(np.float32)
    q = (rng.random((600, 4)) < 0.5).astype(np.float64)
    queries = rng.normal(size=(64, 24)).astype(np.float32)
    fast = KNNPredictor(k=40, weighting=weighting).fit(x, q)
    assert fast._xb is not None and fast._index is None  # small cosine index: numpy path
    monkeypatch.setattr(knn_mod, "NUMPY_SEARCH_MAX_VALUES", 0)
    ref = KNNPredictor(k=40, weighting=weighting).fit(x, q)
    assert ref._index is not None
    for n in (1, 7, 25, 64):  # FAISS scans per query below 20 queries and uses BLAS above
        xq = fast._prep(queries[:n])
        s_fast, i_fast = fast._search(xq, 40)
        s_ref, i_ref = ref._search(xq, 40)
        assert [set(r) for r in i_fast] == [set(r) for r in i_ref]
        np.testing.assert_allclose(s_fast, s_ref, rtol=0, atol=1e-5)
        # float32 scores differ in the last bit (summation order); distance weights carry that into ~1e-9
        np.testing.assert_allclose(fast.predict(queries[:n]), ref.predict(queries[:n]), rtol=0, atol=1e-7)
    assert fast._search(fast._prep(queries[:3]), 600)[1].shape == (3, 600)  # k = training size: all rows


def test_knn_keeps_faiss_for_euclidean_and_large_indexes(monkeypatch):
    import router.predictors.knn as knn_mod

    x, q = np.eye(6, dtype=np.float32), np.eye(6)
    assert KNNPredictor(k=2, metric="euclidean").fit(x, q)._index is not None
    monkeypatch.setattr(knn_mod, "NUMPY_SEARCH_MAX_VALUES", 35)  # 6 x 6 values is over the limit
    assert KNNPredictor(k=2).fit(x, q)._index is not None


@pytest.mark.parametrize("per_model", [False, True])
def test_mlp_numpy_inference_matches_the_torch_network(per_model, tmp_path):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(120, 10))
    q = (rng.random((120, 3)) < 0.5).astype(float)
    mlp = MLPPredictor(hidden=(16, 8), epochs=5, per_model=per_model, dropout=0.3).fit(x, q)
    for n in (1, 50):
        np.testing.assert_allclose(mlp.predict(x[:n]), np.clip(mlp._predict_torch(x[:n]), 0, 1), rtol=0, atol=1e-6)
    loaded = MLPPredictor(hidden=(16, 8), per_model=per_model, dropout=0.3)
    loaded.set_state(mlp.get_state())  # the exported weights follow the loaded network, not a stale one
    np.testing.assert_allclose(loaded.predict(x), mlp.predict(x), rtol=0, atol=1e-12)
    mlp.fit(x[::-1].copy(), q)  # refitting replaces the network: the numpy weights follow it
    np.testing.assert_allclose(mlp.predict(x), np.clip(mlp._predict_torch(x), 0, 1), rtol=0, atol=1e-6)
