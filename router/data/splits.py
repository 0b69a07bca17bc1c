"""Deterministic splits that never leak a prompt across sides.

* :func:`grouped_split` -- seeded, grouped by prompt: rows that share a group key (by default the
  normalised prompt text, so a prompt repeated under two ids stays on one side) go to the same side.
  The assignment of a group depends only on its key and the seed (a keyed hash), so adding rows to
  a data set never moves existing prompts between sides.
* :func:`time_split` -- for traffic logs: everything before a cut time trains, the rest tests.
* :func:`kfold_groups` -- grouped K-fold indices for cross-fitting and cross-validation.

Example:
    >>> tr, te = grouped_split(["a", "b", "a", "c"], test_fraction=0.5, seed=1)
    >>> sorted(set(tr) | set(te)) == [0, 1, 2, 3] and not set(tr) & set(te)
    True
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from router.errors import ConfigError

__all__ = ["grouped_split", "kfold_groups", "normalise_prompt", "split_outcomes", "time_split"]


def normalise_prompt(text: str) -> str:
    """Lower-case, whitespace-collapsed text used as the default grouping key."""
    return " ".join(str(text).lower().split())


def _unit_hash(keys: Sequence[str], seed: int) -> np.ndarray:
    out = np.empty(len(keys), dtype=np.float64)
    salt = str(int(seed)).encode()
    for i, k in enumerate(keys):
        d = hashlib.blake2b(k.encode("utf-8", "surrogatepass"), digest_size=8, key=salt).digest()
        out[i] = int.from_bytes(d, "little") / 2**64
    return out


def grouped_split(
    groups: Sequence[Any], *, test_fraction: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into (train, test) so every group lands on exactly one side.

    Args:
        groups: (n,) group key of each row (e.g. prompt text or prompt id).
        test_fraction: share of *groups* sent to test, in (0, 1).
        seed: changes the assignment; the same seed always gives the same split.

    Returns:
        Sorted int arrays of train and test row indices.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction!r}.")
    keys = [str(g) for g in groups]
    if not keys:
        raise ConfigError("cannot split an empty data set.")
    uniq, inverse = np.unique(np.asarray(keys, dtype=object).astype(str), return_inverse=True)
    u = _unit_hash(list(uniq), seed)
    is_test = (u < test_fraction)[inverse]
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def kfold_groups(groups: Sequence[Any], *, n_folds: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped K-fold: a list of (train_idx, valid_idx), each group in exactly one validation fold."""
    if n_folds < 2:
        raise ConfigError(f"n_folds must be >= 2, got {n_folds}.")
    keys = np.asarray([str(g) for g in groups], dtype=object).astype(str)
    uniq, inverse = np.unique(keys, return_inverse=True)
    if len(uniq) < n_folds:
        raise ConfigError(f"need at least n_folds={n_folds} distinct groups, got {len(uniq)}.")
    u = _unit_hash(list(uniq), seed)
    # rank-based fold assignment gives folds of equal size (+-1 group)
    fold_of_group = np.empty(len(uniq), dtype=np.int64)
    fold_of_group[np.argsort(u, kind="stable")] = np.arange(len(uniq)) % n_folds
    fold = fold_of_group[inverse]
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(n_folds)]


def split_outcomes(outcomes: Any, *, test_fraction: float = 0.3, seed: int = 0) -> tuple[Any, Any]:
    """(train, test) :class:`~router.data.schema.Outcomes`.

    Uses the source's own ``split`` column when it has ``train``/``test``; otherwise a
    :func:`grouped_split` by normalised prompt text.
    """
    if outcomes.split is not None and {"train", "test"} <= set(outcomes.split):
        return outcomes.where_split("train"), outcomes.where_split("test")
    keys = [normalise_prompt(p) for p in outcomes.prompts]
    tr, te = grouped_split(keys, test_fraction=test_fraction, seed=seed)
    return outcomes.subset(tr), outcomes.subset(te)


def time_split(
    log: pl.DataFrame, *, test_fraction: float | None = 0.2, cut: Any = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Time-ordered split of a traffic log: rows before the cut train, rows at or after it test.

    Give either ``cut`` (a datetime) or ``test_fraction`` (the latest share of rows tests).
    """
    if "timestamp" not in log.columns:
        raise ConfigError("time_split needs a 'timestamp' column.")
    ordered = log.sort("timestamp", maintain_order=True)
    if cut is None:
        if test_fraction is None or not 0.0 < test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction!r}.")
        k = int(round(ordered.height * (1.0 - test_fraction)))
        if ordered.height == 0:
            return ordered, ordered
        cut = ordered["timestamp"][min(k, ordered.height - 1)]
    return ordered.filter(pl.col("timestamp") < cut), ordered.filter(pl.col("timestamp") >= cut)
