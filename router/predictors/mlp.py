"""Multi-output MLP over the embeddings (the "embedding classifier")."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from router.errors import ConfigError
from router.predictors._common import BasePredictor, pad_rows
from router.predictors._torch import (
    numpy_to_state,
    split_validation,
    state_to_numpy,
    train_with_early_stopping,
)

__all__ = ["MLPPredictor"]


def _build_net(d: int, m: int, hidden: tuple[int, ...], dropout: float, per_model: bool) -> Any:
    import torch
    from torch import nn

    class SharedMLP(nn.Module):
        """Shared trunk, one logit per model."""

        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            width = d
            for h in hidden:
                layers += [nn.Linear(width, h), nn.GELU(), nn.Dropout(dropout)]
                width = h
            layers.append(nn.Linear(width, m))
            self.body = nn.Sequential(*layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    class PerModelMLP(nn.Module):
        """m independent MLPs computed in one batched einsum."""

        def __init__(self) -> None:
            super().__init__()
            dims = [d, *hidden, 1]
            self.weights = nn.ParameterList()
            self.biases = nn.ParameterList()
            for a, b in zip(dims[:-1], dims[1:]):
                w = torch.empty(m, a, b)
                for j in range(m):
                    nn.init.kaiming_uniform_(w[j].T, a=5**0.5)
                self.weights.append(nn.Parameter(w))
                self.biases.append(nn.Parameter(torch.zeros(m, b)))
            self.drop = nn.Dropout(dropout)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = x.unsqueeze(0).expand(m, -1, -1)  # (m, n, d)
            for i, (w, b) in enumerate(zip(self.weights, self.biases)):
                h = torch.bmm(h, w) + b.unsqueeze(1)
                if i < len(self.weights) - 1:
                    h = self.drop(torch.nn.functional.gelu(h))
            return h.squeeze(-1).T  # (n, m)

    return PerModelMLP() if per_model else SharedMLP()


def _gelu(h: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU in float32 by torch's own kernel on the numpy buffer (no copy); scipy's erf
    costs six times as much."""
    import torch

    # torch's own CPU kernel, not oneDNN's: the same values, without building a oneDNN primitive per call
    # (~25 us of a ~35 us call for a few rows)
    enabled = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    try:
        return torch.nn.functional.gelu(torch.from_numpy(np.ascontiguousarray(h))).numpy()
    finally:
        torch._C._set_mkldnn_enabled(enabled)


class MLPPredictor(BasePredictor):
    """A torch MLP from embeddings (n, d) to one logit per model; BCE with soft targets.

    Trained with AdamW on minibatches; a seeded ``val_fraction`` slice is held out for early
    stopping (best epoch's weights kept). ``per_model=True`` trains m independent networks (one
    head per model, no shared trunk). torch's thread count is whatever the caller set with
    ``torch.set_num_threads``; nothing is changed at import. Prediction runs in numpy on weights
    exported once from the trained network (same arithmetic in float32, no torch per-call overhead). Random state is forked, so fitting
    does not disturb the caller's torch RNG. State is saved as numpy arrays.

    Args:
        hidden: hidden layer widths.
        epochs: maximum epochs.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        dropout: dropout after each hidden layer.
        batch_size: minibatch size.
        val_fraction: share of rows held out for early stopping (0 disables it).
        patience: epochs without validation improvement before stopping.
        per_model: separate network per model.
        seed: seeds initialisation, shuffling, dropout and the validation split.

    Example:
        >>> rng = np.random.default_rng(0); x = rng.normal(size=(64, 4)); q = (x[:, :1] > 0).astype(float)
        >>> p = MLPPredictor(hidden=(8,), epochs=30, lr=0.05).fit(x, q).predict(np.array([[3.0, 0, 0, 0], [-3.0, 0, 0, 0]]))
        >>> bool(p[0, 0] > 0.7 and p[1, 0] < 0.3)
        True
    """

    kind: ClassVar[str] = "mlp"

    def __init__(
        self,
        hidden: tuple[int, ...] | Any = (256,),
        epochs: int = 100,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        dropout: float = 0.1,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        patience: int = 10,
        per_model: bool = False,
        seed: int = 0,
    ) -> None:
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.patience = patience
        self.per_model = per_model
        self.seed = seed
        if not all(isinstance(h, int) and h > 0 for h in tuple(hidden)):
            raise ConfigError(f"hidden must be a tuple of positive ints, got {hidden!r}.")
        for name in ("epochs", "batch_size", "patience"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"MLPPredictor({name}=...) must be a positive int, got {getattr(self, name)!r}.")
        if not lr > 0 or not weight_decay >= 0:
            raise ConfigError(f"lr must be > 0 and weight_decay >= 0, got lr={lr!r}, weight_decay={weight_decay!r}.")
        if not 0 <= dropout < 1 or not 0 <= val_fraction < 1:
            raise ConfigError(f"dropout and val_fraction must be in [0, 1), got {dropout!r} and {val_fraction!r}.")
        if not isinstance(seed, int):
            raise ConfigError(f"seed must be an int, got {seed!r}.")
        self.net_: Any = None
        self.epochs_run_: int | None = None

    def _make_net(self) -> Any:
        assert self.dim_ is not None and self.n_models_ is not None
        return _build_net(self.dim_, self.n_models_, tuple(self.hidden), self.dropout, self.per_model)

    def _fit(self, x: np.ndarray, q: np.ndarray) -> None:
        import torch

        train, val = split_validation(len(x), self.val_fraction, self.seed)
        xt = torch.from_numpy(x.astype(np.float32))
        qt = torch.from_numpy(q.astype(np.float32))
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            gen = torch.Generator().manual_seed(self.seed)
            net = self._make_net()
            tr = torch.from_numpy(train)
            va = torch.from_numpy(val)

            def batch_loss(b: torch.Tensor) -> torch.Tensor:
                rows = tr[b]
                return bce(net(xt[rows]), qt[rows])

            def val_loss() -> float:
                return float(bce(net(xt[va]), qt[va]))

            self.epochs_run_ = train_with_early_stopping(
                net, batch_loss, val_loss if len(val) else None, len(train),
                epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay,
                batch_size=self.batch_size, patience=self.patience, generator=gen,
            )
        self.net_ = net

    def _predict(self, x: np.ndarray) -> np.ndarray:
        layers = self._numpy_layers()
        n = x.shape[0]
        h = pad_rows(x.astype(np.float32))  # batch-invariant products (see pad_rows); padding rows dropped below
        if self.per_model:
            h = np.broadcast_to(h, (len(layers[0][0]), *h.shape))  # (m, n, d)
        for i, (w, b) in enumerate(layers):
            h = h @ w + b  # float32, as torch's linear / bmm
            if i < len(layers) - 1:
                h = _gelu(h)
        logits = h[..., :n, 0].T if self.per_model else h[:n]
        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))

    def _predict_torch(self, x: np.ndarray) -> np.ndarray:
        """The network's own forward pass in torch (what :meth:`predict` computes in numpy)."""
        import torch

        with torch.no_grad():
            logits = self.net_(torch.from_numpy(x.astype(np.float32)))
            return torch.sigmoid(logits).double().numpy()

    def _numpy_layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The trained network's (weight, bias) per layer as float32 numpy arrays, exported once per
        network: inference is then a few numpy matrix products (dropout is off at inference), which for
        the small batches of live routing costs a fraction of torch's per-call overhead."""
        cached = self.__dict__.get("_np_layers")
        if cached is not None and cached[0] is self.net_:
            return cached[1]  # type: ignore[no-any-return]
        net = self.net_
        if self.per_model:
            pairs = zip(net.weights, net.biases)  # (m, a, b) and (m, b): h @ w + b[:, None, :]
            layers = [(w.detach().numpy().copy(), b.detach().numpy()[:, None, :].copy()) for w, b in pairs]
        else:
            linear = [mod for mod in net.body if hasattr(mod, "weight")]  # nn.Linear: y = x W^T + b
            layers = [(np.ascontiguousarray(mod.weight.detach().numpy().T), mod.bias.detach().numpy().copy())
                      for mod in linear]
        self._np_layers = (net, layers)
        return layers

    def get_state(self) -> dict[str, np.ndarray]:
        self._check_fitted("net_")
        return {**state_to_numpy(self.net_), **self._shape_state()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        import torch

        self._set_shape_state(state)
        with torch.random.fork_rng(devices=[]):
            net = self._make_net()
        numpy_to_state(net, state)
        net.eval()
        self.net_ = net

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"hidden": (16,), "epochs": 40, "lr": 0.02, "batch_size": 32}
