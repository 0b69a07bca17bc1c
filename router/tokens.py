"""Prompt token counts from a real tokenizer, offline.

OpenAI's ``cl100k_base`` byte-pair encoding (GPT-4 / GPT-3.5) ships inside litellm's wheel, as
tiktoken's cache file ``litellm/litellm_core_utils/tokenizers/<sha1 of its download URL>``.
:func:`encoding` loads that file with tiktoken -- no download, no import of litellm, nothing at
import time of this module -- after checking its SHA-256 against the published one, and caches the
encoding for the life of the process (building it takes about half a second; encoding then runs at
roughly a million tokens per second). ``$TIKTOKEN_CACHE_DIR`` is searched too.

cl100k_base is one tokenizer among many: other providers' models split text differently (typically
within +-20% for English), so a count here is an estimate of *their* tokens, but a far better one than
characters / 4, which is off by 2-4x on code, numbers and non-English text. Where a data set logs
real token counts, those are used instead (the loaders and :class:`~router.cost_predictor.CostPredictor`
learn each model's ratio to these counts).

When tiktoken or the file is missing, :func:`count_tokens` falls back to ``ceil(characters / 4)`` and
:func:`tokenizer_name` says ``"chars/4"``, so callers can record which counter they used.

Example:
    >>> count_tokens(["Hello world", ""]).tolist()
    [2, 0]
    >>> tokenizer_name()
    'cl100k_base'
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CHARS_PER_TOKEN", "count_tokens", "encoding", "encoding_file", "tokenizer_name"]

#: Where tiktoken downloads cl100k_base from; its SHA-1 names the cached file.
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
#: SHA-256 of the cl100k_base rank file, as tiktoken checks it.
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
#: cl100k_base's pre-tokenisation pattern and special tokens (as tiktoken_ext.openai_public defines them).
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|"""
    r"""\s*[\r\n]|\s+(?!\S)|\s"""
)
CL100K_SPECIAL = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                  "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}
#: Characters per token of the fallback counter.
CHARS_PER_TOKEN = 4.0


def encoding_file() -> Path | None:
    """The cl100k_base rank file bundled with litellm (or in ``$TIKTOKEN_CACHE_DIR``), or None."""
    key = hashlib.sha1(CL100K_URL.encode()).hexdigest()
    dirs: list[Path] = []
    spec = importlib.util.find_spec("litellm")
    if spec is not None and spec.submodule_search_locations:
        dirs += [Path(loc) / "litellm_core_utils" / "tokenizers" for loc in spec.submodule_search_locations]
    for var in ("TIKTOKEN_CACHE_DIR", "CUSTOM_TIKTOKEN_CACHE_DIR"):
        if os.environ.get(var):
            dirs.append(Path(os.environ[var]))
    for d in dirs:
        if (d / key).is_file():
            return d / key
    return None


@functools.lru_cache(maxsize=1)
def encoding() -> Any:
    """The cached ``tiktoken.Encoding`` for cl100k_base, or None when tiktoken or the file is missing."""
    path = encoding_file()
    if path is None or importlib.util.find_spec("tiktoken") is None:
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != CL100K_SHA256:
        return None  # a damaged or different file: never count with it
    import tiktoken

    ranks = {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in data.splitlines() if line)}
    return tiktoken.Encoding("cl100k_base", pat_str=CL100K_PATTERN, mergeable_ranks=ranks,
                             special_tokens=CL100K_SPECIAL)


def tokenizer_name() -> str:
    """``"cl100k_base"`` when real counts are available, else ``"chars/4"``."""
    return "cl100k_base" if encoding() is not None else "chars/4"


def count_tokens(texts: Iterable[Any]) -> np.ndarray:
    """Token counts (n,) int64 of ``texts`` (non-strings count 0).

    Special-token strings such as ``<|endoftext|>`` are counted as ordinary text, as a provider
    would see them in a user's prompt.
    """
    items = [t if isinstance(t, str) else "" for t in texts]
    enc = encoding()
    if enc is None:
        return np.array([int(np.ceil(len(t) / CHARS_PER_TOKEN)) for t in items], dtype=np.int64)
    out = np.zeros(len(items), dtype=np.int64)
    for i, t in enumerate(items):
        if t:
            out[i] = len(enc.encode_ordinary(t))
    return out
