"""Torch helpers shared by the neural predictors (imported lazily, inside methods only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def state_to_numpy(module: Any, prefix: str = "net.") -> dict[str, np.ndarray]:
    """A module's ``state_dict`` as float numpy arrays under ``prefix``."""
    return {prefix + k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def numpy_to_state(module: Any, state: dict[str, np.ndarray], prefix: str = "net.") -> None:
    """Load arrays saved by :func:`state_to_numpy` into ``module`` (strict)."""
    import torch

    sd = {k[len(prefix) :]: torch.from_numpy(np.asarray(v).copy()) for k, v in state.items() if k.startswith(prefix)}
    module.load_state_dict(sd, strict=True)


def train_with_early_stopping(
    module: Any,
    batch_loss: Callable[[Any], Any],
    val_loss: Callable[[], float] | None,
    n_train: int,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    patience: int,
    generator: Any,
) -> int:
    """Adam over shuffled minibatches of ``range(n_train)``; keeps the weights of the best epoch.

    ``batch_loss(index_tensor) -> scalar loss``; ``val_loss()`` -> float or None (no early stopping).
    Returns the number of epochs run. Call inside ``torch.random.fork_rng`` with a seed set.
    """
    import torch

    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    best = float("inf")
    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    bad = 0
    ran = 0
    for epoch in range(1, epochs + 1):
        ran = epoch
        module.train()
        perm = torch.randperm(n_train, generator=generator)
        for start in range(0, n_train, batch_size):
            opt.zero_grad()
            loss = batch_loss(perm[start : start + batch_size])
            loss.backward()
            opt.step()
        if val_loss is None:
            continue
        module.eval()
        with torch.no_grad():
            v = float(val_loss())
        if v < best - 1e-6:
            best, bad = v, 0
            best_state = {k: t.detach().clone() for k, t in module.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    if val_loss is not None:
        module.load_state_dict(best_state)
    module.eval()
    return ran


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) row indices; empty validation when it would be under 2 rows."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * fraction))
    if n_val < 2 or n - n_val < 2:
        return np.sort(perm), np.zeros(0, dtype=np.int64)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
