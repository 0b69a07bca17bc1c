"""Helpers shared by the encoders (no heavy imports)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from router.errors import ConfigError


def check_texts(texts: Any) -> list[str]:
    """Validate a list of strings; a bare string is a common mistake and is refused."""
    if isinstance(texts, str):
        raise ConfigError("encode() takes a list of strings, got a single str; wrap it: encode([text]).")
    if not isinstance(texts, Sequence | np.ndarray):
        raise ConfigError(f"encode() takes a list of strings, got {type(texts).__name__}.")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ConfigError(f"encode() got a {type(t).__name__} at position {i}; every item must be a str.")
    return out


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero. (n, d) -> (n, d) float32."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)
