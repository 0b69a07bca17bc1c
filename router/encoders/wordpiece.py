"""A pure-Python fast path for BERT WordPiece tokenizers on ASCII text: the same ids as ``tokenizers``.

Hugging Face's ``tokenizers`` spends most of its time on a short prompt in the offset bookkeeping of
normalisation and pre-tokenisation (~50 us for 70 characters), work a static encoder never uses.
For the BERT family (``BertNormalizer`` with ``clean_text`` and ``lowercase``, ``BertPreTokenizer``,
a ``WordPiece`` model) the ASCII part of that pipeline is a few table rules:

- ``clean_text`` deletes NUL and the control characters 1-31 and 127, except tab, newline and
  carriage return, which become spaces (``\\x0b``, ``\\x0c`` and ``\\x1c``-``\\x1f`` are deleted:
  Rust counts them as control characters, not whitespace, unlike Python's ``str.split``);
- ``lowercase`` maps A-Z to a-z; accent stripping and the CJK rule change no ASCII character;
- the pre-tokenizer splits on spaces, and every other printable non-alphanumeric character is a
  word of its own.

:class:`BertWordPiece` applies these with one ``bytes.translate`` and ``bytes.split`` per text and
looks each whitespace-separated chunk up in a memo (chunk -> tuple of ids). A chunk it has not seen
is split on punctuation and each word goes through the tokenizer's own WordPiece model
(``tokenizer.model.tokenize``), so greedy longest match, the ``##`` prefix and the unknown id for
words over ``max_input_chars_per_word`` are the real model's. The id list is then cut to the
tokenizer's truncation length, as ``encode_batch_fast(..., add_special_tokens=False)`` does.

Texts that are not ASCII, or that contain an added token's literal text (``[UNK]``, ``[PAD]``: the
tokenizer matches those before normalising), go to the Hugging Face tokenizer, batched.

Memory: the memo is cleared when it passes ``max_words`` entries (200,000 by default). An entry
is a bytes key, a tuple of ids and a dict slot (ids are shared int objects): 3.3 MB for the 20k
chunks of the demo and RouterBench prompts, ~160 bytes a chunk, so ~32 MB at the bound
(``bench/results/tokenize.md``). The memo is per instance (one per loaded static model); concurrent
threads may share it (a race costs a recomputation, never a wrong id).

Example:
    >>> from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    >>> vocab = {"[UNK]": 0, "route": 1, "the": 2, "prompt": 3, "##s": 4, "!": 5}
    >>> tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    >>> tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    >>> tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    >>> wp = BertWordPiece.from_tokenizer(tok)
    >>> wp.encode_ids(["Route the\\tPROMPTS!", "route é"])
    [[1, 2, 3, 4, 5], [1, 0]]
    >>> [e.ids for e in tok.encode_batch_fast(["Route the\\tPROMPTS!", "route é"], add_special_tokens=False)]
    [[1, 2, 3, 4, 5], [1, 0]]
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["BertWordPiece"]

#: chunk bytes -> its (lowercased, cleaned) words: runs of letters and digits, or one other character
_WORDS = re.compile(rb"[a-z0-9]+|[^a-z0-9]")
_STRATEGIES = ("LongestFirst", "OnlyFirst")


def _translation() -> tuple[bytes, bytes]:
    """``bytes.translate`` arguments: tab/newline/CR -> space, A-Z -> a-z; controls deleted."""
    table = bytearray(range(256))
    for c in b"\t\n\r":
        table[c] = ord(" ")
    for c in range(ord("A"), ord("Z") + 1):
        table[c] = c + 32
    delete = bytes([c for c in range(32) if c not in b"\t\n\r"] + [127])
    return bytes(table), delete


class BertWordPiece:
    """Token ids of a BERT WordPiece ``tokenizers.Tokenizer``, with ASCII texts done in Python.

    Build it with :meth:`from_tokenizer`, which returns None for a tokenizer outside the family
    (the caller then keeps the Hugging Face tokenizer). The tokenizer's truncation and padding are
    read once, there: change them afterwards and build a new one.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` of the BERT WordPiece family (see the module notes).
        max_length: the tokenizer's truncation length, or None for no truncation.
        literals: the added tokens' contents; a text holding one goes to ``tokenizer``.
        max_words: the memo is cleared when it holds more chunks than this.
    """

    def __init__(self, tokenizer: Any, max_length: int | None, literals: tuple[str, ...],
                 max_words: int = 200_000) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.literals = literals
        self.max_words = max_words
        self._table, self._delete = _translation()
        self._memo: dict[bytes, tuple[int, ...]] = {}
        self._ints: dict[int, int] = {}  # one int object per id, shared by every memo entry

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, max_words: int = 200_000) -> BertWordPiece | None:
        """A fast path for ``tokenizer``, or None when its configuration is not one this class
        reproduces exactly (another normaliser, pre-tokenizer or model, a post-processor, padding,
        normalised added tokens, truncation other than keeping the first ``max_length`` ids)."""
        try:
            spec = json.loads(tokenizer.to_str())
            tokenizer.model.tokenize  # noqa: B018 -- the model must expose tokenize
        except (AttributeError, TypeError, ValueError):
            return None
        norm, pre, model = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}, spec.get("model") or {}
        if not (norm.get("type") == "BertNormalizer" and norm.get("clean_text") is True
                and norm.get("lowercase") is True and pre == {"type": "BertPreTokenizer"}
                and model.get("type") == "WordPiece" and spec.get("post_processor") is None):
            return None
        added = spec.get("added_tokens") or []
        if any(t.get("normalized") for t in added):
            return None
        padding = spec.get("padding")
        if padding is not None and not (padding.get("strategy") == {"Fixed": 0}
                                        and not padding.get("pad_to_multiple_of")):
            return None  # Fixed(0) pads nothing; anything else adds pad ids
        truncation = spec.get("truncation")
        max_length = None
        if truncation is not None:
            if (truncation.get("direction") != "Right" or truncation.get("stride") != 0
                    or truncation.get("strategy") not in _STRATEGIES):
                return None
            max_length = int(truncation["max_length"])
        literals = tuple(str(t["content"]) for t in added if str(t["content"]).isascii() and t["content"])
        return cls(tokenizer, max_length, literals, max_words)

    def encode_ids(self, texts: list[str]) -> list[list[int]]:
        """(n,) texts -> n id lists, equal to ``[e.ids for e in tokenizer.encode_batch_fast(texts,
        add_special_tokens=False)]``."""
        out: list[list[int]] = []
        slow: list[int] = []
        literals = self.literals
        ids = self._ids
        for i, text in enumerate(texts):
            if text.isascii() and not (literals and any(lit in text for lit in literals)):
                out.append(ids(text))
            else:
                out.append([])
                slow.append(i)
        if slow:
            encodings = self.tokenizer.encode_batch_fast([texts[i] for i in slow], add_special_tokens=False)
            for i, enc in zip(slow, encodings, strict=True):
                out[i] = enc.ids
        return out

    def _ids(self, text: str) -> list[int]:
        """One ASCII text with no added-token literal -> its ids, truncated."""
        get = self._memo.get
        ids: list[int] = []
        for chunk in text.encode("ascii").translate(self._table, self._delete).split():
            part = get(chunk)
            ids += part if part is not None else self._chunk(chunk)
        if self.max_length is not None and len(ids) > self.max_length:
            del ids[self.max_length:]
        return ids

    def _chunk(self, chunk: bytes) -> tuple[int, ...]:
        """A chunk not in the memo: split on punctuation, WordPiece each word, remember them all."""
        memo = self._memo
        if len(memo) >= self.max_words:
            memo.clear()
        words = _WORDS.findall(chunk)
        ids: list[int] = []
        for word in words:
            part = memo.get(word)
            if part is None:
                ints = self._ints
                part = tuple(ints.setdefault(t.id, t.id) for t in self.tokenizer.model.tokenize(word.decode("ascii")))
                memo[word] = part
            ids += part
        whole = tuple(ids)
        memo[chunk] = whole
        return whole
