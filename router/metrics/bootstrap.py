"""Seeded, vectorised bootstrap over prompts.

Prompts are resampled with replacement ``B`` times. Means of per-prompt values are computed for
all replicates at once as ``counts @ values / n`` where ``counts`` (b, n) holds how often each
prompt was drawn, built in chunks so memory stays near ``chunk_cells`` numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from router.errors import ConfigError

__all__ = ["bootstrap_indices", "bootstrap_means", "percentile_interval"]


def bootstrap_indices(
    n: int, n_bootstrap: int, seed: int | np.random.Generator = 0, chunk_cells: int = 4_000_000
) -> Iterator[np.ndarray]:
    """Yield (b, n) arrays of resampled prompt indices, ``n_bootstrap`` rows in all.

    Example:
        >>> sum(ix.shape[0] for ix in bootstrap_indices(5, 7, seed=0, chunk_cells=10))
        7
    """
    if n <= 0 or n_bootstrap <= 0:
        raise ConfigError(f"bootstrap needs n > 0 and n_bootstrap > 0, got n={n}, n_bootstrap={n_bootstrap}.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    per = max(1, chunk_cells // n)
    done = 0
    while done < n_bootstrap:
        b = min(per, n_bootstrap - done)
        yield rng.integers(0, n, size=(b, n))
        done += b


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    b = idx.shape[0]
    flat = (idx + (np.arange(b) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def bootstrap_means(
    values: Any, n_bootstrap: int = 1000, seed: int | np.random.Generator = 0, chunk_cells: int = 4_000_000
) -> np.ndarray:
    """Means of per-prompt values over bootstrap resamples of prompts.

    Args:
        values: (n,) or (n, k) per-prompt values.
        n_bootstrap: number of replicates B.
        seed: seed or numpy Generator.

    Returns:
        (B, k) replicate means ((B,) for 1-D input).

    Example:
        >>> m = bootstrap_means(np.arange(10.0), n_bootstrap=2000, seed=0)
        >>> m.shape, abs(float(m.mean()) - 4.5) < 0.1
        ((2000,), True)
    """
    v = np.asarray(values, dtype=np.float64)
    one_d = v.ndim == 1
    v2 = v[:, None] if one_d else v
    n = v2.shape[0]
    out = [(_counts(ix, n) @ v2) / n for ix in bootstrap_indices(n, n_bootstrap, seed, chunk_cells)]
    res = np.concatenate(out, axis=0)
    return res[:, 0] if one_d else res


def percentile_interval(replicates: Any, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates, ignoring NaN; (NaN, NaN) when none is finite.

    Example:
        >>> tuple(round(x, 6) for x in percentile_interval(np.arange(101.0), 0.9))
        (5.0, 95.0)
    """
    r = np.asarray(replicates, dtype=np.float64).reshape(-1)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return (float("nan"), float("nan"))
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(r, [a, 1.0 - a])
    return (float(lo), float(hi))
