"""Encoders, embedding cache, conversation rendering and prefix stripping."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from router.encoders import (
    EmbeddingCache,
    HashingEncoder,
    PrefixStripper,
    SentenceTransformerEncoder,
    StaticEncoder,
    default_cache_dir,
    encoder_config,
    encoder_from_config,
    render_conversation,
)
from router.errors import ConfigError, NotFittedError

DATA = Path(os.environ.get("ROUTING_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
ARC = DATA / "routerdc" / "datasets" / "routerbench_zs" / "arc_challenge_train.csv"


def test_import_is_light():
    code = "import sys, router.encoders, router.predictors, router.costs; " \
           "print([m for m in ('torch', 'sentence_transformers', 'model2vec', 'faiss') if m in sys.modules])"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0}, "positive int"),
        ({"ngram_range": (2, 1)}, "ngram_range"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_hashing_encoder_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        HashingEncoder(**kwargs)


def test_hashing_encoder_is_deterministic_and_seeded():
    texts = ["the cat sat", "a dog ran"]
    a, b = HashingEncoder(seed=1).encode(texts), HashingEncoder(seed=1).encode(texts)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, HashingEncoder(seed=2).encode(texts))
    assert np.linalg.norm(HashingEncoder().encode([""])) == 0.0


def test_encoder_factory_errors():
    with pytest.raises(ConfigError, match="kind"):
        encoder_from_config({"dim": 3})
    with pytest.raises(ConfigError, match="Unknown encoder kind"):
        encoder_from_config({"kind": "nope"})
    with pytest.raises(ConfigError, match="Bad arguments"):
        encoder_from_config({"kind": "hashing", "width": 3})


def test_embedding_cache_memory_and_disk(tmp_path):
    class Counting(HashingEncoder):
        calls = 0

        def encode(self, texts):
            type(self).calls += len(texts)
            return super().encode(texts)

    enc = EmbeddingCache(Counting(dim=16), path=str(tmp_path))
    a = enc.encode(["x y", "z", "x y"])
    assert Counting.calls == 2 and enc.misses == 2 and enc.hits == 1
    again = EmbeddingCache(Counting(dim=16), path=str(tmp_path))
    b = again.encode(["z", "x y"])
    assert Counting.calls == 2, "second cache must read vectors from disk, not re-encode"
    np.testing.assert_array_equal(b, a[[1, 0]])
    other = EmbeddingCache(Counting(dim=16, seed=9), path=str(tmp_path))
    other.encode(["z"])
    assert Counting.calls == 3, "a different encoder config must not reuse the vectors"
    cfg = encoder_config(enc)
    assert cfg["encoder"]["kind"] == "hashing"
    np.testing.assert_array_equal(encoder_from_config(cfg).encode(["z"]), a[1:2])


def test_render_conversation_orders_turns():
    msgs = [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "U1"},
        {"role": "assistant", "content": [{"type": "text", "text": "A1"}]},
        {"role": "user", "content": "U2"},
    ]
    out = render_conversation(msgs)
    assert out.split("\n\n") == ["U2", "[system] SYS", "[assistant] A1", "[user] U1"]
    import json

    assert render_conversation(json.dumps(msgs)) == out
    assert render_conversation([{"role": "user", "content": "only"}]) == "only"
    with pytest.raises(ConfigError, match="non-empty"):
        render_conversation([])
    with pytest.raises(ConfigError, match="role"):
        render_conversation([{"content": "x"}])


def test_prefix_stripper_state_roundtrip_and_errors(tmp_path):
    with pytest.raises(ConfigError, match="min_count"):
        PrefixStripper(min_count=1)
    with pytest.raises(NotFittedError):
        PrefixStripper().transform(["x"])
    shots = "example " * 40
    prompts = [shots + f"{i} apples?" for i in range(30)] + ["short"]
    ps = PrefixStripper(min_count=5, min_length=100).fit(prompts)
    np.savez(tmp_path / "s.npz", **ps.get_state())
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        again = PrefixStripper.from_config(ps.get_config(), {k: z[k] for k in z.files})
    assert again.transform(prompts) == ps.transform(prompts)
    assert ps.transform(prompts)[:2] == ["0 apples?", "1 apples?"]
    assert ps.strip(shots) == shots, "never strip a prompt down to nothing"
    assert PrefixStripper(min_count=5, min_length=100, tail_chars=4).fit(prompts).strip(prompts[3]) == "les?"


@pytest.mark.data
@pytest.mark.skipif(not ARC.exists(), reason=f"RouterBench ARC-C rows not found at {ARC} (set ROUTING_DATA_DIR)")
def test_prefix_stripper_on_routerbench_arc():
    import polars as pl

    prompts = [ast.literal_eval(c)[0] for c in pl.read_csv(ARC, columns=["prompt"], infer_schema_length=0)["prompt"]]
    ps = PrefixStripper().fit(prompts)
    assert len(ps.prefixes_) >= 1 and len(ps.prefixes_[0]) > 1000
    stripped = ps.transform(prompts)
    assert np.mean([len(s) for s in stripped]) < 0.4 * np.mean([len(p) for p in prompts])
    assert all(s.rstrip().endswith("Answer:") for s in stripped)
    assert len(set(s[:200] for s in stripped)) > 0.9 * len(set(prompts))


def test_static_encoder_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("ROUTING_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    assert StaticEncoder(pca_dims=64).cached_path() == tmp_path / "static-all-MiniLM-L6-v2-pca64"
    with pytest.raises(ConfigError, match="pca_dims"):
        StaticEncoder(pca_dims=1)


@pytest.mark.slow
def test_minilm_separates_topics():
    enc = SentenceTransformerEncoder()
    v = enc.encode(["How do I sort a list in Python?", "Python list sorting", "Best pasta recipe with tomatoes"])
    assert v.shape == (3, 384)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


@pytest.mark.slow
def test_static_encoder_distils_once_and_loads_from_directory(tmp_path):
    path = StaticEncoder.distill(pca_dims=32, out_dir=tmp_path / "m")
    enc = StaticEncoder(model=str(path))
    v = enc.encode(["How do I sort a list in Python?", "Python list sorting", "Best pasta recipe"])
    assert v.shape == (3, 32) and enc.dim == 32
    assert v[0] @ v[1] > v[0] @ v[2]
    assert encoder_from_config(encoder_config(enc)).encode(["x"]).shape == (1, 32)


def _tiny_static_model(path, *, normalize: bool, max_length: int | None):
    """A word-level model2vec model saved to ``path`` (seeded table, an [UNK] token): no distilling needed."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[UNK]", "sort", "a", "list", "in", "python", "pasta", "recipe", "with", "tomatoes", "how", "do", "i"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    table = np.random.default_rng(3).normal(size=(len(words), 8)).astype(np.float32)
    StaticModel(table, tok, normalize=normalize, max_length=max_length).save_pretrained(str(path))
    return path


@pytest.mark.parametrize("normalize,max_length", [(False, 512), (True, 4), (False, None)])
def test_static_encoder_fast_path_matches_model2vec_bit_for_bit(tmp_path, normalize, max_length):
    from model2vec import StaticModel

    path = _tiny_static_model(tmp_path / "m", normalize=normalize, max_length=max_length)
    texts = ["how do i sort a list in python", "pasta recipe with tomatoes", "", "unknown words only",
             "sort sort sort a a list", "python " * 50, "a list", "tomatoes"]
    enc = StaticEncoder(model=str(path))
    reference = StaticModel.from_pretrained(str(path)).encode(texts, show_progress_bar=False, use_multiprocessing=False)
    ref = np.asarray(reference, dtype=np.float32)
    norms = np.linalg.norm(ref, axis=1, keepdims=True)
    expected = (ref / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    got = enc.encode(texts)
    assert np.array_equal(got, expected)
    assert not got[3].any()  # only unknown tokens: a zero row, as model2vec gives
    for i, t in enumerate(texts):  # alone or in a batch: the same row
        assert np.array_equal(enc.encode([t])[0], got[i])
