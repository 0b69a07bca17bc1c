"""A tiny hashed bag-of-words encoder: deterministic, pure numpy, no model files."""

from __future__ import annotations

import re
import zlib
from typing import Any, ClassVar

import numpy as np

from router.base import Encoder
from router.encoders._common import check_texts, l2_normalize
from router.errors import ConfigError

__all__ = ["HashingEncoder"]

_TOKEN = re.compile(r"\w+", re.UNICODE)


class HashingEncoder(Encoder):
    """Signed feature hashing of lower-cased word n-grams, sub-linear counts, L2-normalised.

    Fast enough for tests and usable as a fallback when no model files exist. The same text gives
    the same vector in every process (CRC-32 hashing, not Python's salted ``hash``). An empty text
    maps to the zero vector.

    Args:
        dim: output width.
        ngram_range: (min_n, max_n) word n-gram sizes.
        seed: salt of the hash, so different seeds give different (equally good) projections.

    Example:
        >>> enc = HashingEncoder(dim=16)
        >>> v = enc.encode(["What is 2 + 2?", "what is 2+2"])
        >>> v.shape, v.dtype.name, round(float((v[0] * v[1]).sum()), 2) > 0.5
        ((2, 16), 'float32', True)
    """

    kind: ClassVar[str] = "hashing"

    def __init__(self, dim: int = 256, ngram_range: tuple[int, int] | Any = (1, 2), seed: int = 0) -> None:
        self._dim = dim
        self.ngram_range = ngram_range
        self.seed = seed
        if not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"HashingEncoder(dim=...) must be a positive int, got {dim!r}.")
        lo_hi = tuple(ngram_range)
        if len(lo_hi) != 2 or not all(isinstance(v, int) for v in lo_hi) or not 1 <= lo_hi[0] <= lo_hi[1]:
            raise ConfigError(f"ngram_range must be (min_n, max_n) with 1 <= min_n <= max_n, got {ngram_range!r}.")
        if not isinstance(seed, int):
            raise ConfigError(f"seed must be an int, got {seed!r}.")

    @property
    def dim(self) -> int:
        """Output width (the ``dim`` hyperparameter)."""
        return self._dim

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n,) texts -> (n, dim) float32, unit-norm rows (zero rows for texts without words)."""
        items = check_texts(texts)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        lo, hi = tuple(self.ngram_range)
        salt = zlib.crc32(str(self.seed).encode())
        for row, text in enumerate(items):
            words = _TOKEN.findall(text.lower())
            for n in range(lo, hi + 1):
                for i in range(len(words) - n + 1):
                    h = zlib.crc32(" ".join(words[i : i + n]).encode(), salt)
                    out[row, h % self.dim] += 1.0 if (h >> 31) & 1 else -1.0
        out = np.sign(out) * np.log1p(np.abs(out))
        return l2_normalize(out)
