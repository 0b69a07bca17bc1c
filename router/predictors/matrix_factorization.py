"""Matrix-factorisation router in the manner of RouteLLM's best (MF) router, for m models."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from router.errors import ConfigError
from router.predictors._common import BasePredictor
from router.predictors._torch import (
    numpy_to_state,
    split_validation,
    state_to_numpy,
    train_with_early_stopping,
)
from router.predictors.calibration import PlattCalibrator

__all__ = ["MatrixFactorizationPredictor"]


def _build_net(d: int, m: int, dim: int) -> Any:
    import torch
    from torch import nn

    class MF(nn.Module):
        """score(j, e) = w2^T (normalise(v_j) * (W1 e)) + b_j  (RouteLLM MF plus a per-model bias)."""

        def __init__(self) -> None:
            super().__init__()
            self.P = nn.Embedding(m, dim)
            self.text_proj = nn.Linear(d, dim, bias=False)
            self.classifier = nn.Linear(dim, 1, bias=False)
            self.bias = nn.Parameter(torch.zeros(m))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            v = torch.nn.functional.normalize(self.P.weight, p=2, dim=1)  # (m, dim)
            h = self.text_proj(x)  # (n, dim)
            return (h.unsqueeze(1) * v.unsqueeze(0)) @ self.classifier.weight.squeeze(0) + self.bias  # (n, m)

    return MF()


class MatrixFactorizationPredictor(BasePredictor):
    """RouteLLM-style matrix factorisation, generalised to m models, with calibrated outputs.

    ``score(model j, prompt e) = w2ᵀ (v̂_j ⊙ (W1 e)) + b_j`` where ``v̂_j`` is model j's unit-norm
    embedding. Two objectives:

    * ``"pointwise"``: BCE of ``sigmoid(score)`` against every (prompt, model) quality; outputs
      are probabilities directly.
    * ``"pairwise"`` (RouteLLM): for each prompt, every pair of models with different quality;
      BCE of ``sigmoid(score_j - score_k)`` against "j is better". Scores are then only relative,
      so a seeded ``calib_fraction`` slice is held out and a per-model Platt calibration maps
      scores to probabilities of quality.

    A seeded ``val_fraction`` slice (of the rows left) drives early stopping.

    Args:
        dim: latent width.
        epochs: maximum epochs.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        batch_size: prompts per minibatch.
        objective: ``"pointwise"`` or ``"pairwise"``.
        val_fraction: rows held out for early stopping.
        calib_fraction: rows held out for calibration (pairwise only).
        patience: epochs without validation improvement before stopping.
        seed: seeds initialisation, shuffling and the held-out slices.

    Example:
        >>> rng = np.random.default_rng(0); x = rng.normal(size=(80, 4)); q = np.c_[x[:, 0] > 0, x[:, 0] <= 0].astype(float)
        >>> p = MatrixFactorizationPredictor(dim=8, epochs=60, lr=0.05).fit(x, q).predict(np.array([[3.0, 0, 0, 0]]))
        >>> int(p.argmax())
        0
    """

    kind: ClassVar[str] = "matrix_factorization"
    aliases: ClassVar[tuple[str, ...]] = ("mf",)

    def __init__(
        self,
        dim: int = 128,
        epochs: int = 100,
        lr: float = 3e-3,
        weight_decay: float = 1e-5,
        batch_size: int = 128,
        objective: str = "pointwise",
        val_fraction: float = 0.1,
        calib_fraction: float = 0.2,
        patience: int = 10,
        seed: int = 0,
    ) -> None:
        self.dim = dim
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.objective = objective
        self.val_fraction = val_fraction
        self.calib_fraction = calib_fraction
        self.patience = patience
        self.seed = seed
        for name in ("dim", "epochs", "batch_size", "patience"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"MatrixFactorizationPredictor({name}=...) must be a positive int.")
        if objective not in ("pointwise", "pairwise"):
            raise ConfigError(f"objective must be 'pointwise' or 'pairwise', got {objective!r}.")
        if not lr > 0 or not weight_decay >= 0:
            raise ConfigError(f"lr must be > 0 and weight_decay >= 0, got lr={lr!r}, weight_decay={weight_decay!r}.")
        if not 0 <= val_fraction < 1 or not 0 < calib_fraction < 1:
            raise ConfigError("val_fraction must be in [0, 1) and calib_fraction in (0, 1).")
        if not isinstance(seed, int):
            raise ConfigError(f"seed must be an int, got {seed!r}.")
        self.net_: Any = None
        self.calibrator_: PlattCalibrator | None = None

    def _fit(self, x: np.ndarray, q: np.ndarray) -> None:
        import torch

        rows = np.arange(len(x))
        calib = np.zeros(0, dtype=np.int64)
        if self.objective == "pairwise":
            rest, calib = split_validation(len(x), self.calib_fraction, self.seed + 1)
            if len(calib) == 0:
                rest, calib = rows, rows  # too few rows to hold out: calibrate in-sample
            rows = rest
        train_pos, val_pos = split_validation(len(rows), self.val_fraction, self.seed)
        train, val = rows[train_pos], rows[val_pos]
        xt = torch.from_numpy(x.astype(np.float32))
        qt = torch.from_numpy(q.astype(np.float32))
        bce = torch.nn.functional.binary_cross_entropy_with_logits

        def loss_on(idx: torch.Tensor) -> torch.Tensor:
            s = net(xt[idx])
            target = qt[idx]
            if self.objective == "pointwise":
                return bce(s, target)
            diff = s.unsqueeze(2) - s.unsqueeze(1)  # (b, m, m): score_j - score_k
            better = (target.unsqueeze(2) > target.unsqueeze(1)).float()
            pairs = better + better.transpose(1, 2)  # pairs with different quality
            if pairs.sum() == 0:
                return (s * 0).sum()
            raw = bce(diff, better, reduction="none")
            return (raw * pairs).sum() / pairs.sum()

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            gen = torch.Generator().manual_seed(self.seed)
            assert self.dim_ is not None and self.n_models_ is not None
            net = _build_net(self.dim_, self.n_models_, self.dim)
            tr = torch.from_numpy(train)
            va = torch.from_numpy(val)
            train_with_early_stopping(
                net, lambda b: loss_on(tr[b]), (lambda: float(loss_on(va))) if len(val) else None, len(train),
                epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay,
                batch_size=self.batch_size, patience=self.patience, generator=gen,
            )
        self.net_ = net
        if self.objective == "pairwise":
            self.calibrator_ = PlattCalibrator().fit(self._scores(x[calib]), q[calib])

    def _scores(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.net_(torch.from_numpy(x.astype(np.float32))).double().numpy()

    def _predict(self, x: np.ndarray) -> np.ndarray:
        s = self._scores(x)
        if self.objective == "pairwise":
            assert self.calibrator_ is not None
            return self.calibrator_.transform(s)
        return np.asarray(1.0 / (1.0 + np.exp(-s)))

    def get_state(self) -> dict[str, np.ndarray]:
        self._check_fitted("net_")
        state = {**state_to_numpy(self.net_), **self._shape_state()}
        if self.calibrator_ is not None:
            state.update({"calib." + k: v for k, v in self.calibrator_.get_state().items()})
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        import torch

        self._set_shape_state(state)
        assert self.dim_ is not None and self.n_models_ is not None
        with torch.random.fork_rng(devices=[]):
            net = _build_net(self.dim_, self.n_models_, self.dim)
        numpy_to_state(net, state)
        net.eval()
        self.net_ = net
        cal = {k[len("calib.") :]: v for k, v in state.items() if k.startswith("calib.")}
        if cal:
            self.calibrator_ = PlattCalibrator()
            self.calibrator_.set_state(cal)

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"dim": 8, "epochs": 40, "lr": 0.03, "batch_size": 32}
