"""The static encoder's Python WordPiece path gives the Hugging Face tokenizer's ids, and the same vectors."""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from router.encoders import StaticEncoder
from router.encoders.static import _encode_plain
from router.encoders.wordpiece import BertWordPiece
from router.errors import SourceNotFoundError

DEMO = Path(__file__).resolve().parents[1] / "datasets" / "demo" / "outcomes.parquet"


@pytest.fixture(scope="module")
def encoder() -> StaticEncoder:
    enc = StaticEncoder()
    enc.encode(["warm up"])
    return enc


@pytest.fixture(scope="module")
def tok(encoder):
    return encoder._load().tokenizer


def hf_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


def adversarial() -> list[str]:
    """Hand-picked edge cases, then seeded random strings over an alphabet heavy in the awkward characters."""
    word = "internationalization"
    cases = [
        "", " ", "   \t\n\r  ", "\x0b\x0c\x1c\x1d\x1e\x1f", "\x00", "\x7f", "a\x00b", "a\x0bb", "a\x0cb", "a\x1cb",
        "a\x1fb", "a\x7fb", "a\tb\nc\rd", "tab\t\tbetween", "A\x01B\x02C", "x \x0b y", "\x1c lead", "trail \x1f",
        "...", "?!?!", "a.b,c;d:e", "(x+y)*z=w", "'quoted' \"double\" `back`", "{[<>]}", "~!@#$%^&*()_+-=|\\/",
        "e-mail@host.com", "C++ and C# and F#", "$1,000.50", "12345678901234567890", "3.14159 2e-10 0x1F",
        "MiXeD CaSe WoRdS", "UPPER lower Title", "don't can't won't", "http://example.com/a?b=c&d=e#f",
        "##", "##ing", "a##b", "## ##", "#hashtag", "[UNK]", "[PAD]", "a[UNK]b", "x [PAD] y [UNK] z", "[unk] [pad]",
        "[UNK", "UNK]", "[ UNK ]", "[CLS] [SEP] [MASK]", "caf\u00e9 au lait", "na\u00efve r\u00e9sum\u00e9",
        "\u4e2d\u6587 mixed", "emoji \U0001f600 here", "\u00a0nbsp\u00a0", "zero\u200bwidth", "\ufffd replacement",
        "x" * 99, "x" * 100, "x" * 101, "x" * 300, "y" * 100 + "!", "!" + "z" * 101, (word * 5)[:99],
        (word * 5)[:100], (word * 5)[:101], "a" * 100 + " " + "b" * 101, "qzxqzxqzx" * 12,
        "word " * 600, "! " * 700, ("x" * 101 + " ") * 600, "token " * 511 + "x" * 101 + " tail",
        "token " * 510 + ("x" * 101 + " ") * 3 + "more words", "a.b " * 400, "\n".join(["line"] * 800),
    ]
    rng = np.random.default_rng(11)
    alphabet = list(string.printable) + ["\x00", "\x01", "\x0b", "\x0c", "\x1c", "\x1f", "\x7f", "#", "[", "]"]
    vocab_words = ["the", "route", "Model", "##s", "[UNK]", "[PAD]", "over", "x" * 100, "2024", "e.g."]
    for _ in range(1500):
        n = int(rng.integers(0, 60))
        if rng.random() < 0.5:
            cases.append("".join(rng.choice(alphabet, size=n)))
        else:
            cases.append(" ".join(rng.choice(vocab_words + alphabet, size=n)))
    cases += [c + " \u00e9" for c in cases[:40]]  # the same strings with a non-ASCII character
    return cases


def demo_prompts() -> list[str]:
    return list(dict.fromkeys(pl.read_parquet(DEMO, columns=["prompt"])["prompt"].to_list()))


def test_the_served_static_model_takes_the_fast_path(encoder, tok):
    wp = encoder._wordpiece
    assert isinstance(wp, BertWordPiece)  # otherwise every test below compares HF with itself
    assert wp.max_length == 512 and set(wp.literals) == {"[PAD]", "[UNK]"}


def test_ascii_rules_match_the_tokenizer_character_by_character(encoder, tok):
    wp = encoder._wordpiece
    texts = [f"a{chr(c)}b {chr(c)}{chr(c)}x{chr(c)}" for c in range(128)]
    assert wp.encode_ids(texts) == hf_ids(tok, texts)
    # the rules as stated: controls (bar tab, newline, CR) vanish; punctuation is a word of its own
    assert wp.encode_ids(["a\x0bb"]) == hf_ids(tok, ["ab"]) and wp.encode_ids(["a\tb"]) == hf_ids(tok, ["a b"])
    assert wp.encode_ids(["a+b"]) == hf_ids(tok, ["a + b"])


def test_adversarial_strings_give_the_tokenizers_ids(encoder, tok):
    texts = adversarial()
    wp = encoder._wordpiece
    assert wp.encode_ids(texts) == hf_ids(tok, texts)
    assert [wp.encode_ids([t])[0] for t in texts] == hf_ids(tok, texts)  # alone or in a batch
    unk = tok.token_to_id("[UNK]")
    assert wp.encode_ids(["x" * 101]) == [[unk]] and unk not in wp.encode_ids(["x" * 100])[0]
    assert len(wp.encode_ids(["word " * 600])[0]) == 512


def test_demo_prompts_give_the_tokenizers_ids(encoder, tok):
    prompts = demo_prompts()
    assert len(prompts) >= 1000 and all(p.isascii() for p in prompts)
    assert encoder._wordpiece.encode_ids(prompts) == hf_ids(tok, prompts)


@pytest.mark.data
def test_routerbench_prompts_give_the_tokenizers_ids(encoder, tok):
    from router.data.registry import load_source

    try:
        prompts = list(dict.fromkeys(load_source("routerbench").prompts))
    except SourceNotFoundError as exc:
        pytest.skip(f"public routing data not available: {exc}")
    assert len(prompts) > 2000
    cut = [p[:3072] for p in prompts]  # what _encode_plain hands the tokenizer
    wp = BertWordPiece.from_tokenizer(tok, max_words=5000)  # clears its memo several times on the way
    assert wp is not None and wp.encode_ids(prompts) == hf_ids(tok, prompts)
    assert wp.encode_ids(cut) == hf_ids(tok, cut)
    assert len(wp._memo) <= 5000 + 3100


def test_static_encoder_is_bit_identical_with_the_fast_path_on_and_off(encoder):
    from model2vec import StaticModel

    texts = adversarial() + demo_prompts()[:500]
    off = StaticEncoder(encoder.model, encoder.pca_dims, encoder.cache_dir)
    off.encode(["warm up"])
    off._wordpiece = None  # force the Hugging Face tokenizer
    fast = encoder.encode(texts)
    assert np.array_equal(fast, off.encode(texts))
    for i in (0, 7, 61, 80, 200, len(texts) - 1):
        assert np.array_equal(encoder.encode([texts[i]])[0], fast[i])
    for size in (1, 16, 64):
        got = np.concatenate([encoder.encode(texts[j:j + size]) for j in range(0, 192, size)])
        assert np.array_equal(got, fast[:192])
    reference = StaticModel.from_pretrained(str(encoder.cached_path()))
    reference.embedding = np.asarray(reference.embedding, dtype=np.float32)  # as StaticEncoder loads it
    ref = reference.encode(texts, show_progress_bar=False, use_multiprocessing=False)
    assert np.array_equal(_encode_plain(encoder._load(), texts, encoder._wordpiece), ref)


class Spy:
    """The real tokenizer, recording which texts reach ``encode_batch_fast``."""

    def __init__(self, inner):
        self.inner, self.model, self.calls = inner, inner.model, []

    def encode_batch_fast(self, texts, add_special_tokens):
        self.calls.append(list(texts))
        return self.inner.encode_batch_fast(texts, add_special_tokens=add_special_tokens)


def test_non_ascii_and_added_token_texts_go_to_the_tokenizer_in_one_batch(tok):
    spy = Spy(tok)
    wp = BertWordPiece(spy, 512, ("[PAD]", "[UNK]"))
    texts = ["plain text", "caf\u00e9", "a [UNK] b", "more plain", "x[PAD]", "[unk] is lowercase", "\u00e9"]
    assert wp.encode_ids(texts) == hf_ids(tok, texts)
    assert spy.calls == [["caf\u00e9", "a [UNK] b", "x[PAD]", "\u00e9"]]
    spy.calls.clear()
    wp.encode_ids(["only ascii", "here"])
    assert spy.calls == []


def _bert_tokenizer(**normalizer):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "route", "the", "prompt", "##s", "!", "a", "##b", "é"])}
    t = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=5))
    t.normalizer = normalizers.BertNormalizer(**{"clean_text": True, "lowercase": True, **normalizer})
    t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    t.add_special_tokens(["[PAD]", "[UNK]"])
    return t


@pytest.mark.parametrize("strip_accents", [None, True, False])
def test_small_bert_tokenizers_match_with_any_accent_rule(strip_accents):
    t = _bert_tokenizer(strip_accents=strip_accents)
    t.enable_truncation(6)
    wp = BertWordPiece.from_tokenizer(t)
    assert wp is not None and wp.max_length == 6
    texts = ["Route the PROMPTS!", "ab abb abbbbb", "r\u00e9sum\u00e9 prompt", "a [UNK] b", "a b a b a b a b"] + adversarial()
    assert wp.encode_ids(texts) == hf_ids(t, texts)
    t.no_truncation()
    wp = BertWordPiece.from_tokenizer(t)
    assert wp is not None and wp.max_length is None
    assert wp.encode_ids(texts) == hf_ids(t, texts)


def _declined():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    def edit(fn):
        t = _bert_tokenizer()
        fn(t)
        return t

    word_level = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    word_level.normalizer = normalizers.BertNormalizer()
    word_level.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return {
        "no lowercase": _bert_tokenizer(lowercase=False),
        "no clean_text": _bert_tokenizer(clean_text=False),
        "whitespace pre-tokenizer": edit(lambda t: setattr(t, "pre_tokenizer", pre_tokenizers.Whitespace())),
        "sequence normalizer": edit(lambda t: setattr(t, "normalizer", normalizers.Sequence([normalizers.BertNormalizer()]))),
        "post-processor": edit(lambda t: setattr(t, "post_processor", processors.BertProcessing(("[PAD]", 0), ("[UNK]", 1)))),
        "fixed padding": edit(lambda t: t.enable_padding(length=8)),
        "batch padding": edit(lambda t: t.enable_padding()),
        "left truncation": edit(lambda t: t.enable_truncation(4, direction="left")),
        "stride": edit(lambda t: t.enable_truncation(4, stride=1)),
        "normalized added token": edit(lambda t: t.add_tokens(["hello"])),
        "word-level model": word_level,
        "not a tokenizer": object(),
    }


@pytest.mark.parametrize("case", sorted(_declined()))
def test_other_tokenizers_are_left_to_hugging_face(case):
    assert BertWordPiece.from_tokenizer(_declined()[case]) is None


def test_memo_is_bounded_and_clearing_it_changes_nothing(tok):
    wp = BertWordPiece.from_tokenizer(tok, max_words=50)
    texts = [f"prompt number {i} asks about {i * 7}-things, e.g. x{i}y." for i in range(400)]
    assert wp is not None and wp.encode_ids(texts) == hf_ids(tok, texts)
    assert len(wp._memo) <= 50 + 16
