"""Token counts from cl100k_base, loaded offline from litellm's wheel, where characters / 4 was used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from router import tokens
from router.cost_predictor import CostPredictor
from router.data.synthetic import generate
from router.encoders import HashingEncoder
from router.predictors import KNNPredictor
from router.router import Router, prompt_lengths

#: text -> cl100k_base tokens (checked against tiktoken's own cl100k_base in the test below)
KNOWN = {
    "Hello world": 2,
    "1234567890" * 10: 34,  # digits go in threes: chars / 4 says 25
    "<|endoftext|>": 7,  # a special token's text in a prompt is ordinary text
    "def f(x):\n    return x ** 2\n": 11,
    "東京は日本の首都です。": 11,  # chars / 4 says 3
    "": 0,
}


def test_known_counts() -> None:
    assert tokens.tokenizer_name() == "cl100k_base"
    assert tokens.count_tokens(list(KNOWN)).tolist() == list(KNOWN.values())
    assert tokens.count_tokens([None, 3]).tolist() == [0, 0]


def test_counts_equal_tiktokens_own_encoding(monkeypatch) -> None:
    tiktoken = pytest.importorskip("tiktoken")
    path = tokens.encoding_file()
    assert path is not None
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(path.parent))  # tiktoken finds litellm's copy, no download
    ref = tiktoken.get_encoding("cl100k_base")
    texts = [*KNOWN, "Überprüfung der Größe " * 50, "SELECT * FROM t WHERE id = 42;", "emoji 🙂🙂 ok"]
    assert tokens.count_tokens(texts).tolist() == [len(ref.encode_ordinary(t)) for t in texts]


def test_no_network_no_litellm_import_and_nothing_at_import_time() -> None:
    code = (
        "import sys, socket\n"
        "def no_net(*a, **k): raise RuntimeError('network used')\n"
        "socket.socket.connect = no_net\n"
        "import router.tokens as t\n"
        "assert 'tiktoken' not in sys.modules, 'tiktoken imported at import time'\n"
        "print(int(t.count_tokens(['Hello world'])[0]), 'litellm' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["2", "False"]


def test_fallback_without_the_file_and_refusal_of_a_damaged_one(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(tokens, "encoding_file", lambda: None)
    tokens.encoding.cache_clear()
    try:
        assert tokens.tokenizer_name() == "chars/4"
        assert tokens.count_tokens(["abcde", ""]).tolist() == [2, 0]
        bad = tmp_path / "cl100k"
        bad.write_bytes(b"aGVsbG8= 0\n")
        monkeypatch.setattr(tokens, "encoding_file", lambda: bad)
        tokens.encoding.cache_clear()
        assert tokens.encoding() is None  # wrong SHA-256: never counted with
    finally:
        monkeypatch.undo()
        tokens.encoding.cache_clear()
    assert tokens.tokenizer_name() == "cl100k_base"


@pytest.mark.data
def test_loaders_without_token_counts_use_the_tokenizer() -> None:
    from router.data.registry import load_source
    from router.errors import SourceNotFoundError

    try:
        o = load_source("routellm-gsm8k")
    except SourceNotFoundError as err:
        pytest.skip(f"public routing data not available: {err}")
    assert o.input_tokens is not None
    expected = tokens.count_tokens([str(p) for p in o.prompts])
    np.testing.assert_array_equal(o.input_tokens[:, 0], expected)


def test_router_lengths_are_tokens_and_old_routers_keep_characters(tmp_path) -> None:
    data = generate(200, seed=0)
    router = Router.fit(data.outcomes, encoder=HashingEncoder(dim=32), predictor=KNNPredictor(k=5))
    prompts = ["How many primes are below 100?", "東京は日本の首都です。"]
    _, lengths = router.embed(prompts)
    assert router.length_unit == "tokens"
    np.testing.assert_array_equal(lengths, tokens.count_tokens(prompts))
    router.save(tmp_path / "new")
    assert Router.load(tmp_path / "new").length_unit == "tokens"
    # a router saved before token counts: no length_unit in router.json -> characters, as it was fitted
    meta = json.loads((tmp_path / "new" / "router.json").read_text())
    del meta["length_unit"], meta["context_windows"]
    (tmp_path / "new" / "router.json").write_text(json.dumps(meta))
    old = Router.load(tmp_path / "new")
    assert old.length_unit == "chars" and old.context_windows == {}
    assert old.embed(prompts)[1].tolist() == [float(len(p)) for p in prompts]


def test_cost_predictor_learns_each_models_tokens_per_cl100k_token() -> None:
    o = generate(300, seed=0).outcomes  # logs input tokens (its own tokenizer: ~chars / 4 + 20)
    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    lengths = prompt_lengths(list(o.prompts))
    cp = CostPredictor().fit(x, lengths, o)
    assert cp.mode_ == "tokens" and cp.length_per_token_ is not None
    ratio = np.median(lengths / np.asarray(o.input_tokens)[:, 0])
    np.testing.assert_allclose(cp.length_per_token_[0], ratio, rtol=1e-12)
    legacy = {k: v for k, v in cp.get_state().items() if k != "length_per_token_"}
    legacy["chars_per_token_"] = cp.length_per_token_
    again = CostPredictor()
    again.set_state(legacy)  # a cost model saved before the rename still loads
    np.testing.assert_array_equal(again.predict(x, lengths), cp.predict(x, lengths))
