"""Threshold calibration: known-answer statistics, the calibrate command, the shipped threshold files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from router.encoders import HashingEncoder, SentenceTransformerEncoder, StaticEncoder
from router.errors import ConfigError
from serve.cache import SemanticCache, encoder_identity
from serve.cache.calibrate import (
    calibrate,
    evaluate_threshold,
    retrieval_rates,
    stratified_split,
    threshold_at,
    wilson,
)
from serve.cache.thresholds import SHIPPED_DIR

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ROUTING_DATA_DIR", ROOT.parent / "shared" / "data")) / "gptcache_paraphrase"
needs_data = pytest.mark.skipif(
    not (DATA / "examples" / "benchmark" / "similiar_qqp_full.json.gz").is_file(),
    reason=f"GPTCache pairs not found under {DATA} (set ROUTING_DATA_DIR)",
)


# ---------------------------------------------------------------------- statistics
@pytest.mark.parametrize(
    ("negatives", "target", "expected"),
    [
        (np.linspace(0.0, 0.5, 101), 0.01, (0.5 + 0.495) / 2),  # one of 101 may hit: cut between the top two
        (np.linspace(0.0, 0.5, 101), 0.0, 0.5 + 1e-6),  # none may hit
        (np.linspace(0.0, 0.5, 101), 0.05, (0.475 + 0.48) / 2),  # five may hit
        (np.array([0.2, 0.7, 0.7, 0.9]), 0.5, 0.8),  # two may hit, but 0.7 is tied: only 0.9 hits
        (np.array([0.7, 0.7]), 0.5, 0.7 + 1e-6),  # a tie at the top: nothing may hit
    ],
)
def test_threshold_at_known_answers(negatives, target, expected):
    cut = threshold_at(negatives, target)
    assert cut == pytest.approx(expected, abs=1e-9)
    assert np.mean(negatives >= cut) <= target


def test_separable_similarities_give_a_threshold_that_separates():
    rng = np.random.default_rng(0)
    neg, pos = rng.uniform(0.0, 0.6, 1000), rng.uniform(0.8, 1.0, 500)
    cut = threshold_at(neg, 0.0)
    sims, labels = np.concatenate([neg, pos]), np.r_[np.zeros(1000, int), np.ones(500, int)]
    rates = evaluate_threshold(sims, labels, cut)
    assert cut == pytest.approx(neg.max() + 1e-6)
    assert (rates["false_hit"]["k"], rates["hit"]["k"]) == (0, 500)
    assert rates["hit"]["rate"] == 1.0 and rates["false_hit"]["ci95"][0] == 0.0


@pytest.mark.parametrize(("k", "n", "lo", "hi"), [(10, 100, 0.0552, 0.1744), (0, 50, 0.0, 0.0714), (50, 50, 0.9286, 1.0)])
def test_wilson_interval(k, n, lo, hi):
    assert wilson(k, n) == pytest.approx((lo, hi), abs=1e-4)


def test_stratified_split_keeps_label_shares():
    labels = np.r_[np.zeros(600, int), np.ones(400, int)]
    cal, held = stratified_split(labels, 0.25, seed=3)
    assert len(set(cal) & set(held)) == 0 and len(cal) + len(held) == 1000
    assert (labels[cal] == 1).sum() == 100 and (labels[cal] == 0).sum() == 150
    again, _ = stratified_split(labels, 0.25, seed=3)
    assert (again == cal).all()


@pytest.mark.parametrize(("negatives", "target", "match"), [(np.array([]), 0.01, "at least one"),
                                                            (np.array([0.5]), 1.0, r"must be in \[0, 1\)")])
def test_threshold_at_errors(negatives, target, match):
    with pytest.raises(ConfigError, match=match):
        threshold_at(negatives, target)


def test_retrieval_rates_known_answer():
    # cached texts x, y, z on three axes; queries: a (duplicate of x), b (labelled different from y
    # but nearest y above the threshold), c (own text cached as "c", then z below the threshold)
    e = np.eye(4, dtype=np.float32)
    near = lambda v, w, s: (s * v + np.sqrt(1 - s * s) * w).astype(np.float32)  # noqa: E731
    index_vecs = np.stack([e[0], e[1], e[2], e[3]])
    index_keys = ["x", "y", "z", "c"]
    queries = np.stack([near(e[0], e[3], 0.95), near(e[1], e[3], 0.92), e[3]])
    out = retrieval_rates(queries, ["a", "b", "c"], np.array([1, 0, 0]), index_vecs, index_keys,
                          {frozenset(("a", "x"))}, threshold=0.9)
    assert out["hit_same"]["k"] == 1 and out["true_hit_same"]["k"] == 1
    assert out["false_hit_different"] == {"rate": 0.5, "ci95": list(wilson(1, 2)), "k": 1, "n": 2}
    assert out["false_hit_all"]["k"] == 1 and out["false_hit_all"]["n"] == 3


# ---------------------------------------------------------------------- calibrate on a small known set
def _pairs_file(tmp_path: Path) -> Path:
    """Same-question pairs are identical up to case (similarity 1 for a word encoder), different ones share
    no word (similarity 0)."""
    rows = []
    for i in range(40):
        rows.append({"text_a": f"how do I cook dish{i} tonight", "text_b": f"How do I cook DISH{i} tonight", "label": 1})
        rows.append({"text_a": f"what is planet{i}", "text_b": f"who painted picture{i}", "label": 0})
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_calibrate_on_a_separable_set(tmp_path):
    enc = HashingEncoder(dim=256)
    doc = calibrate(enc, pairs_path=_pairs_file(tmp_path), target_false_hit=0.01, retrieval_pairs=0)
    assert doc["encoder"] == encoder_identity(enc)
    assert 0.0 < doc["threshold"] < 0.01  # just above the largest different-question similarity (0)
    assert doc["held_out"]["hit"]["rate"] == 1.0 and doc["held_out"]["false_hit"]["rate"] == 0.0
    assert doc["data"]["pairs"] == 80 and doc["held_out"]["hit"]["n"] == 20
    assert "retrieval" not in doc  # hashing collisions make retrieval no known answer (tested above)
    cache = SemanticCache(enc, threshold=doc["threshold"])
    scope = SemanticCache.scope("t", {"messages": [{"role": "user", "content": "x"}]})
    cache.put(scope, "how do I cook dish3 tonight", {"a": 3})
    assert cache.get(scope, "HOW DO I COOK DISH3 TONIGHT").value == {"a": 3}


@pytest.mark.slow
def test_calibrate_command_as_documented(tmp_path):
    out = tmp_path / "thr.json"
    cmd = [sys.executable, "-m", "serve.cache", "calibrate", "--encoder", "static", "--target-false-hit", "0.01",
           "--out", str(out), "--pairs", str(_pairs_file(tmp_path))]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "static: threshold" in res.stdout
    doc = json.loads(out.read_text())
    assert doc["format"] == "serve.cache.threshold/1" and doc["target_false_hit"] == 0.01
    assert doc["encoder"] == encoder_identity(StaticEncoder())
    assert SemanticCache(StaticEncoder(), threshold_file=out).threshold_ == doc["threshold"]
    with pytest.raises(ConfigError, match="calibrated for encoder"):
        SemanticCache(SentenceTransformerEncoder(), threshold_file=out)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--encoder", "bert"], "invalid choice"),
        (["--target-false-hit", "1.5"], r"must be in \[0, 1\)"),
        (["--pairs", "/nonexistent.jsonl"], "does not exist"),
    ],
)
def test_calibrate_command_errors(tmp_path, capsys, args, match):
    from serve.cache.__main__ import main

    try:
        code = main(["calibrate", "--out", str(tmp_path / "x.json"), *args])
    except SystemExit as exc:  # argparse refuses bad choices itself
        code = exc.code
    assert code == 2
    assert re.search(match, " ".join(capsys.readouterr().err.split()))
    assert not (tmp_path / "x.json").exists()


# ---------------------------------------------------------------------- shipped files and the real data
def test_shipped_threshold_files_are_consistent():
    files = {f.stem: json.loads(f.read_text()) for f in sorted(SHIPPED_DIR.glob("*.json"))}
    assert set(files) >= {"static", "minilm"}
    for name, doc in files.items():
        held = doc["held_out"]
        assert doc["threshold_ci95"][0] <= doc["threshold"] <= doc["threshold_ci95"][1]
        assert held["false_hit"]["ci95"][0] <= doc["target_false_hit"] <= held["false_hit"]["ci95"][1], name
        assert doc["data"]["pairs"] == doc["data"]["same"] + doc["data"]["different"]
        assert doc["command"].startswith("python -m serve.cache calibrate")
    assert files["static"]["data"]["pairs"] == 80_854 and files["static"]["data"]["same"] == 30_141
    for enc in (StaticEncoder(), SentenceTransformerEncoder()):  # each default encoder finds its own file
        assert SemanticCache(enc).calibration_["encoder"] == encoder_identity(enc)


@pytest.mark.data
@pytest.mark.slow
@needs_data
def test_real_pairs_hit_and_miss_at_the_shipped_threshold():
    from router.data.loaders.auxiliary import load_paraphrase_pairs

    enc = StaticEncoder()
    cache = SemanticCache(enc)
    qqp = load_paraphrase_pairs("qqp")
    rng = np.random.default_rng(0)
    rows = rng.choice(qqp.height, 1500, replace=False)
    a, b = qqp["text_a"].to_list(), qqp["text_b"].to_list()
    labels = qqp["label"].to_numpy()
    hits = {0: 0, 1: 0}
    n = {0: 0, 1: 0}
    for i in rows:  # each pair in its own tenant: the cache holds only the partner
        scope = SemanticCache.scope(f"t{i}", {"messages": [{"role": "user", "content": b[i]}]})
        cache.put(scope, b[i], {"i": int(i)})
        hit = cache.get(scope, a[i]) if a[i].strip() != b[i].strip() else None
        if a[i].strip() != b[i].strip():
            n[int(labels[i])] += 1
            hits[int(labels[i])] += hit is not None and not hit.exact
    shipped = cache.calibration_["held_out"]
    # fixed seed: a deterministic count; bounds are the shipped rates' 95% intervals widened for n ~ 500-1000
    assert hits[0] / n[0] <= shipped["false_hit"]["rate"] + 0.02
    assert abs(hits[1] / n[1] - shipped["hit"]["rate"]) <= 0.04
    # and the same questions never cross tenants, even identical texts
    for i in rows[:300]:
        other = SemanticCache.scope(f"x{i}", {"messages": [{"role": "user", "content": b[i]}]})
        assert cache.get(other, b[i]) is None
