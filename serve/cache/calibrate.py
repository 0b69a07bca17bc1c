"""Similarity threshold for a target false-hit rate, measured on labelled question pairs.

The pairs (GPTCache's benchmark: Quora Question Pairs with label 1 = same question, 0 = a
different question, often worded alike; plus 999 sentence / paraphrase pairs) are split once,
stratified by label, into a calibration part and a held-out part (``seed``):

* **threshold**: on the calibration part, the smallest cut at which at most ``target`` of the
  different-question pairs have similarity >= the cut (the midpoint between the two neighbouring
  similarities, so ties do not decide); its bootstrap interval resamples those pairs;
* **pairwise rates** on the held-out part at that threshold: false-hit rate (different-question
  pairs that would hit: a cache holding one question answers the other) and hit rate (same-question
  pairs that hit), each with a Wilson 95% interval;
* **retrieval rates**: a cache holding every held-out ``text_b`` (deduplicated); each ``text_a`` is
  looked up (its own identical text excluded, that is the exact path) and its nearest neighbour
  taken. A hit is *true* when the neighbour is a known duplicate of the query (any label-1 pair of
  the data), otherwise *false* -- an upper bound, since Quora's labels are incomplete.

Note: MiniLM (``all-MiniLM-L6-v2``) was trained on a sentence-pair mix that includes Quora
duplicates, so its QQP rates are optimistic; the static encoder inherits some of that by distillation.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router.base import Encoder
from router.errors import ConfigError

__all__ = [
    "ENCODERS",
    "bootstrap_threshold",
    "build_encoder",
    "calibrate",
    "evaluate_threshold",
    "retrieval_rates",
    "stratified_split",
    "threshold_at",
    "wilson",
]

#: ``--encoder`` names -> (kind, constructor arguments).
ENCODERS: dict[str, dict[str, Any]] = {
    "static": {"kind": "static"},
    "minilm": {"kind": "sentence_transformer"},
    "minilm-int8": {"kind": "sentence_transformer", "quantize": True},
}

#: false-hit targets reported alongside the chosen one.
CURVE_TARGETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1)


def build_encoder(name: str) -> Encoder:
    """The encoder for a ``--encoder`` name (see :data:`ENCODERS`)."""
    from router.encoders import encoder_from_config

    if name not in ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}.")
    return encoder_from_config(dict(ENCODERS[name]))


# ---------------------------------------------------------------------- statistics
def threshold_at(negatives: np.ndarray, target: float) -> float:
    """Cut such that at most ``floor(target * n)`` of ``negatives`` are >= it.

    The cut is the midpoint between the largest similarity left out and the smallest one allowed
    in (just above the largest negative when none may hit).

    Example:
        >>> threshold_at(np.array([0.1, 0.2, 0.3, 0.4, 0.9]), 0.2)  # one of five may hit
        0.65
        >>> round(threshold_at(np.array([0.1, 0.5]), 0.0), 6)
        0.500001
    """
    neg = np.asarray(negatives, dtype=np.float64).ravel()
    if neg.size == 0:
        raise ConfigError("threshold_at needs at least one different-question similarity.")
    if not 0.0 <= target < 1.0:
        raise ConfigError(f"target false-hit rate must be in [0, 1), got {target!r}.")
    desc = np.sort(neg)[::-1]
    k = int(np.floor(target * desc.size + 1e-9))  # negatives allowed to hit
    if k == 0:
        return float(min(1.0, desc[0] + 1e-6))
    # every value >= desc[k-1] hits; desc[k] must not: cut strictly between them
    if desc[k] == desc[k - 1]:  # a tie straddles the cut: fewer than k may hit
        above = desc[desc > desc[k]]
        if above.size == 0:
            return float(min(1.0, desc[0] + 1e-6))
        return float((desc[k] + above.min()) / 2.0)
    return float((desc[k] + desc[k - 1]) / 2.0)


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n`` (95% by default).

    Example:
        >>> [round(x, 4) for x in wilson(10, 100)]
        [0.0552, 0.1744]
    """
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return (float(lo), float(hi))


def _rate(sims: np.ndarray, threshold: float) -> dict[str, Any]:
    k, n = int(np.count_nonzero(sims >= threshold)), int(sims.size)
    lo, hi = wilson(k, n)
    return {"rate": k / n if n else float("nan"), "ci95": [lo, hi], "k": k, "n": n}


def bootstrap_threshold(negatives: np.ndarray, target: float, *, n_boot: int = 200, seed: int = 0) -> list[float]:
    """95% percentile interval of :func:`threshold_at` over bootstrap resamples of ``negatives``."""
    rng = np.random.default_rng(seed)
    neg = np.asarray(negatives, dtype=np.float64)
    cuts = [threshold_at(neg[rng.integers(0, neg.size, neg.size)], target) for _ in range(n_boot)]
    return [float(np.percentile(cuts, 2.5)), float(np.percentile(cuts, 97.5))]


def stratified_split(labels: np.ndarray, calibration_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(calibration rows, held-out rows): each label split in the same proportion, seeded.

    Example:
        >>> cal, held = stratified_split(np.array([0, 0, 0, 0, 1, 1]), 0.5, seed=0)
        >>> sorted(np.array([0, 0, 0, 0, 1, 1])[cal].tolist()), len(held)
        ([0, 0, 1], 3)
    """
    if not 0.0 < calibration_share < 1.0:
        raise ConfigError(f"calibration_share must be in (0, 1), got {calibration_share!r}.")
    rng = np.random.default_rng(seed)
    cal, held = [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(calibration_share * rows.size))
        cal.append(rows[:cut])
        held.append(rows[cut:])
    return np.sort(np.concatenate(cal)), np.sort(np.concatenate(held))


def evaluate_threshold(sims: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """Pairwise false-hit rate (label 0 pairs >= threshold) and hit rate (label 1 pairs), Wilson CIs."""
    return {"false_hit": _rate(sims[labels == 0], threshold), "hit": _rate(sims[labels == 1], threshold)}


def retrieval_rates(
    query_vecs: np.ndarray, query_keys: Sequence[str], pair_labels: np.ndarray, index_vecs: np.ndarray,
    index_keys: Sequence[str], duplicates: set[frozenset[str]], threshold: float, *, block: int = 2048,
) -> dict[str, Any]:
    """Nearest-neighbour lookups of every query in an index of texts (see the module docstring).

    Args:
        query_vecs: (q, d) unit-norm query vectors; query_keys: (q,) their texts.
        pair_labels: (q,) label of the pair each query came from (1: its partner is a duplicate).
        index_vecs: (m, d) unit-norm cached vectors; index_keys: (m,) their texts.
        duplicates: unordered text pairs known to be the same question.
        threshold: the hit threshold.
    """
    import faiss

    index = faiss.IndexFlatIP(index_vecs.shape[1])
    index.add(np.ascontiguousarray(index_vecs, dtype=np.float32))
    k = 2  # the query's own text may be cached: skip it (the exact path answers it)
    best_sim = np.full(len(query_keys), -np.inf)
    best_key: list[str | None] = [None] * len(query_keys)
    for start in range(0, len(query_keys), block):
        sims, ids = index.search(np.ascontiguousarray(query_vecs[start : start + block], dtype=np.float32), k)
        for r in range(sims.shape[0]):
            q = start + r
            for sim, i in zip(sims[r], ids[r]):
                if i >= 0 and index_keys[i] != query_keys[q]:
                    best_sim[q], best_key[q] = sim, index_keys[i]
                    break
    hit = best_sim >= threshold
    true = np.array([bool(h) and frozenset((query_keys[q], best_key[q])) in duplicates for q, h in enumerate(hit)])
    false = hit & ~true
    same = pair_labels == 1
    out: dict[str, Any] = {"n_queries": len(query_keys), "n_cached": int(index_vecs.shape[0])}
    for name, mask, num in (("hit_same", same, hit), ("true_hit_same", same, true),
                            ("false_hit_all", np.ones_like(same), false), ("false_hit_different", ~same, false)):
        k_, n_ = int(np.count_nonzero(num[mask])), int(np.count_nonzero(mask))
        out[name] = {"rate": k_ / n_ if n_ else float("nan"), "ci95": list(wilson(k_, n_)), "k": k_, "n": n_}
    return out


# ---------------------------------------------------------------------- the data pipeline
def _embed_unique(encoder: Encoder, texts: list[str], cache_dir: Path | None, batch: int = 4096) -> np.ndarray:
    """Vectors of ``texts`` (unique), from an on-disk float16 copy when one exists for this encoder."""
    from serve.cache.thresholds import encoder_identity

    digest = hashlib.sha256(repr((sorted(encoder_identity(encoder).items()), texts)).encode()).hexdigest()[:24]
    file = cache_dir / f"cache-calibration-{digest}.npy" if cache_dir is not None else None
    if file is not None and file.is_file():
        return np.load(file).astype(np.float32)
    parts = [encoder.encode(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    vecs = np.concatenate(parts).astype(np.float32)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp.npy")
        np.save(tmp, vecs.astype(np.float16))
        tmp.replace(file)
    return vecs


def _pairs(pairs_path: str | Path | None) -> tuple[Any, Any, str]:
    """(qqp-style pairs with labels 0/1, paraphrase pairs or None, description)."""
    import polars as pl

    from router.data.loaders.auxiliary import load_paraphrase_pairs

    if pairs_path is not None:
        path = Path(pairs_path)
        if not path.is_file():
            raise ConfigError(f"--pairs {path} does not exist; give a JSONL/CSV file of text_a, text_b, label.")
        df = pl.read_csv(path) if path.suffix == ".csv" else pl.read_ndjson(path)
        missing = {"text_a", "text_b", "label"} - set(df.columns)
        if missing:
            raise ConfigError(f"{path} lacks column(s) {sorted(missing)}; it needs text_a, text_b, label (0/1).")
        if not df["label"].is_in([0, 1]).all():
            raise ConfigError(f"{path}: every label must be 0 or 1.")
        return df, None, str(path)
    return load_paraphrase_pairs("qqp"), load_paraphrase_pairs("mock"), "gptcache_paraphrase (QQP + mock)"


def calibrate(
    encoder: Encoder | str = "static", *, target_false_hit: float = 0.01, calibration_share: float = 0.5,
    seed: int = 0, max_pairs: int | None = None, retrieval_pairs: int = 10_000, pairs_path: str | Path | None = None,
    cache_dir: str | Path | None = None, n_boot: int = 200,
) -> dict[str, Any]:
    """Calibrate the threshold and measure it (see the module docstring); returns a threshold document.

    Args:
        encoder: an encoder or a name in :data:`ENCODERS`.
        target_false_hit: share of different-question calibration pairs allowed to hit.
        calibration_share: share of the pairs (per label) used to pick the threshold.
        seed: the split and bootstrap seed.
        max_pairs: a stratified subsample of the pairs (all when None).
        retrieval_pairs: held-out pairs used for the retrieval measure (0 to skip).
        pairs_path: a JSONL/CSV of ``text_a, text_b, label`` instead of the GPTCache data.
        cache_dir: where unique-text vectors are kept between runs (None: not kept).
        n_boot: bootstrap resamples for the threshold interval.
    """
    from serve.cache.keys import normalise
    from serve.cache.thresholds import FORMAT, encoder_identity

    if not 0.0 <= target_false_hit < 1.0:
        raise ConfigError(f"--target-false-hit must be in [0, 1), got {target_false_hit!r}.")
    enc = build_encoder(encoder) if isinstance(encoder, str) else encoder
    qqp, mock, source = _pairs(pairs_path)
    labels = qqp["label"].to_numpy().astype(np.int64)
    rows = np.arange(labels.size)
    if max_pairs is not None and max_pairs < labels.size:
        rows, _ = stratified_split(labels, max_pairs / labels.size, seed + 1)
    all_a = [normalise(t) for t in qqp["text_a"].cast(str).to_list()]
    all_b = [normalise(t) for t in qqp["text_b"].cast(str).to_list()]
    duplicates = {frozenset((x, y)) for x, y, lab in zip(all_a, all_b, labels) if lab == 1}
    a, b, labels = [all_a[i] for i in rows], [all_b[i] for i in rows], labels[rows]
    mock_a = [normalise(t) for t in mock["text_a"].to_list()] if mock is not None else []
    mock_b = [normalise(t) for t in mock["text_b"].to_list()] if mock is not None else []
    unique = sorted(set(a) | set(b) | set(mock_a) | set(mock_b))
    where = {t: i for i, t in enumerate(unique)}
    t0 = time.perf_counter()
    vecs = _embed_unique(enc, unique, Path(cache_dir) if cache_dir is not None else None)
    embed_s = time.perf_counter() - t0
    ia, ib = np.array([where[t] for t in a]), np.array([where[t] for t in b])
    sims = np.einsum("ij,ij->i", vecs[ia], vecs[ib])

    cal, held = stratified_split(labels, calibration_share, seed)
    neg_cal = sims[cal][labels[cal] == 0]
    threshold = threshold_at(neg_cal, target_false_hit)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "encoder": encoder_identity(enc),
        "threshold": threshold,
        "target_false_hit": target_false_hit,
        "data": {"source": source, "pairs": int(labels.size), "same": int((labels == 1).sum()),
                 "different": int((labels == 0).sum()), "calibration_share": calibration_share, "seed": seed,
                 "unique_texts": len(unique)},
        "threshold_ci95": bootstrap_threshold(neg_cal, target_false_hit, n_boot=n_boot, seed=seed),
        "calibration": evaluate_threshold(sims[cal], labels[cal], threshold),
        "held_out": evaluate_threshold(sims[held], labels[held], threshold),
        "curve": [],
        "embed_s_per_text": embed_s / max(1, len(unique)),
    }
    for t in CURVE_TARGETS:
        cut = threshold_at(neg_cal, t)
        held_rates = evaluate_threshold(sims[held], labels[held], cut)
        doc["curve"].append({"target": t, "threshold": cut, "false_hit": held_rates["false_hit"]["rate"],
                             "hit": held_rates["hit"]["rate"]})
    if mock_a:
        ma, mb = np.array([where[t] for t in mock_a]), np.array([where[t] for t in mock_b])
        doc["held_out"]["paraphrase_hit"] = _rate(np.einsum("ij,ij->i", vecs[ma], vecs[mb]), threshold)
    if retrieval_pairs > 0:
        sub = held if held.size <= retrieval_pairs else np.sort(
            np.random.default_rng(seed + 2).choice(held, retrieval_pairs, replace=False))
        cached = sorted({b[i] for i in sub})
        doc["retrieval"] = retrieval_rates(
            vecs[ia[sub]], [a[i] for i in sub], labels[sub], vecs[[where[t] for t in cached]], cached,
            duplicates, threshold,
        )
    return doc
