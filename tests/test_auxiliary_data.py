"""Latency / preference data (llmonitor + LLMFAO) and the semantic-cache pairs (GPTCache, QQP)."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.data.loaders.auxiliary import load_llmfao, load_paraphrase_pairs
from router.data.paths import data_dir
from router.errors import RoutingError, SchemaError


@pytest.fixture(scope="module")
def data_root() -> Path:
    try:
        return data_dir()
    except RoutingError as exc:
        pytest.skip(f"public routing data not available: {exc}")


@pytest.mark.data
def test_llmfao_shapes(data_root):
    d = load_llmfao(data_root / "llmfao_llmonitor")
    assert d.results.shape == (1133, 7) and d.dropped == ()
    assert d.results["model"].n_unique() == 70 and d.results["prompt_id"].n_unique() == 19
    assert (d.results["latency_s"] > 0).all() and d.results["prompt"].null_count() == 0
    counts = dict(d.comparisons["judge"].value_counts().iter_rows())
    assert counts == {"crowd": 8931, "gpt4": 3236}
    assert set(d.comparisons["winner"].unique()) <= {"left", "right", "tie"}


@pytest.mark.data
def test_paraphrase_pairs_shapes(data_root):
    qqp = load_paraphrase_pairs("qqp")
    assert qqp.shape == (80854, 3) and int(qqp["label"].sum()) == 30141
    mock = load_paraphrase_pairs("mock")
    assert mock.shape == (999, 3) and (mock["label"] == 1).all()
    with pytest.raises(SchemaError, match="kind must be 'qqp' or 'mock'"):
        load_paraphrase_pairs("other")
