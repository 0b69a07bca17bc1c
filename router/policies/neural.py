"""Neural-linear bandit (Riquelme et al., 2018): an MLP representation plus a LinUCB head.

A small MLP ``x -> z`` (two ReLU layers of width ``hidden``, then a linear output per action) is
trained every ``train_every`` observed rows on the replay buffer (squared error on the chosen
action's output, ``train_steps`` Adam steps on minibatches of ``batch_size``). On top of the last
hidden layer ``z`` (plus a constant) sits a disjoint LinUCB head; after each retraining its ridge
statistics are rebuilt from the buffer, between retrainings they are updated by Sherman--Morrison.
Selection is greedy on the UCB score (probability 1, lowest index on ties), or a softmax with
``softmax_temperature > 0``.

Weights are initialised from the numpy Generator seeded by ``seed`` (no global torch seed is
touched), so two policies with the same seed are identical. Everything runs on CPU.

Example:
    >>> import numpy as np
    >>> pol = NeuralLinear(n_actions=2, dim=3, hidden=8, train_every=16, seed=0)
    >>> x = np.random.default_rng(0).normal(size=(32, 3))
    >>> _ = pol.update(x, np.array([0, 1] * 16), np.array([0.0, 1.0] * 16))
    >>> p = pol.select(x[:4])
    >>> p.shape, p.sum(axis=1).tolist()
    ((4, 2), [1.0, 1.0, 1.0, 1.0])
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from router.base import Policy
from router.errors import ConfigError
from router.policies._common import (
    check_context,
    check_mask,
    check_update,
    masked_argmax,
    restore_arrays,
    rng_to_state,
    warm_start_rewards,
)
from router.policies._common import sample as _sample
from router.policies.linucb import softmax_probs, ucb_scores
from router.registry import FloatParam

__all__ = ["NeuralLinear"]

_BUFFERS = ("buf_x_", "buf_a_", "buf_r_")
_ARRAYS = ("A_", "A_inv_", "b_", "counts_", *_BUFFERS, "n_seen_", "since_train_")


class NeuralLinear(Policy):
    """MLP representation + LinUCB head.

    Args:
        n_actions: number of models m.
        dim: context width d.
        hidden: width of both hidden layers (the head works on this many features + 1).
        alpha: UCB bonus width of the head.
        ridge: ridge penalty of the head (> 0).
        lr: Adam learning rate.
        train_every: retrain after this many new rows.
        train_steps: Adam steps per retraining.
        batch_size: minibatch size.
        buffer_size: replay buffer capacity (oldest rows are overwritten).
        softmax_temperature: None/0 for greedy, > 0 for softmax propensities.
        seed: seed of initial weights, minibatches and :meth:`sample`.
    """

    kind = "neural"
    search_space: ClassVar[dict[str, Any]] = {"ridge": FloatParam(0.1, 10.0, log=True),
                                              "alpha": FloatParam(0.01, 2.0, log=True)}

    def __init__(self, n_actions: int, dim: int, hidden: int = 64, alpha: float = 0.5, ridge: float = 1.0,
                 lr: float = 1e-2, train_every: int = 256, train_steps: int = 50, batch_size: int = 64,
                 buffer_size: int = 10_000, softmax_temperature: float | None = None, seed: int = 0) -> None:
        self.n_actions = n_actions
        self.dim = dim
        self.hidden = hidden
        self.alpha = alpha
        self.ridge = ridge
        self.lr = lr
        self.train_every = train_every
        self.train_steps = train_steps
        self.batch_size = batch_size
        self.buffer_size = buffer_size
        self.softmax_temperature = softmax_temperature
        self.seed = seed
        for name in ("n_actions", "dim", "hidden", "train_every", "train_steps", "batch_size", "buffer_size"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r}.")
        for name in ("ridge", "lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}.")
        if not alpha >= 0:
            raise ConfigError(f"alpha must be >= 0, got {alpha!r}.")
        if not isinstance(seed, int | np.integer):
            raise ConfigError(f"seed must be an int, got {seed!r}.")
        self._build()

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"hidden": 8, "train_every": 16, "train_steps": 5, "batch_size": 8}

    # ------------------------------------------------------------------ construction and state
    def _build(self) -> None:
        import torch

        m, d, h = int(self.n_actions), int(self.dim), int(self.hidden)
        self.rng_ = np.random.default_rng(int(self.seed))
        self.net_ = torch.nn.Sequential(
            torch.nn.Linear(d, h), torch.nn.ReLU(), torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, m)
        )
        with torch.no_grad():
            for p in self.net_.parameters():
                fan_in = p.shape[1] if p.ndim == 2 else h
                w = self.rng_.uniform(-1.0, 1.0, size=tuple(p.shape)) / np.sqrt(fan_in)
                p.copy_(torch.from_numpy(w.astype(np.float32)))
        hd = h + 1
        self.A_ = np.tile(np.eye(hd) * float(self.ridge), (m, 1, 1))
        self.A_inv_ = np.tile(np.eye(hd) / float(self.ridge), (m, 1, 1))
        self.b_ = np.zeros((m, hd))
        self.counts_ = np.zeros(m, dtype=np.int64)
        cap = int(self.buffer_size)
        self.buf_x_ = np.zeros((cap, d), dtype=np.float32)
        self.buf_a_ = np.zeros(cap, dtype=np.int64)
        self.buf_r_ = np.zeros(cap, dtype=np.float64)
        self.n_seen_ = np.zeros((), dtype=np.int64)
        self.since_train_ = np.zeros((), dtype=np.int64)

    def get_state(self) -> dict[str, np.ndarray]:
        state = {name: np.array(getattr(self, name)) for name in _ARRAYS}
        state["rng_"] = rng_to_state(self.rng_)
        for k, v in self.net_.state_dict().items():
            state[f"net.{k}"] = v.detach().cpu().numpy().copy()
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        import torch

        net_keys = [f"net.{k}" for k in self.net_.state_dict()]
        restore_arrays(self, state, _ARRAYS, net_keys)
        self.net_.load_state_dict({k[4:]: torch.from_numpy(np.array(state[k])) for k in net_keys})

    # ------------------------------------------------------------------ internals
    def _features(self, x: np.ndarray) -> np.ndarray:
        """Last hidden layer plus a constant: (n, d) -> (n, hidden + 1) float64."""
        import torch

        with torch.no_grad():
            z = self.net_[:4](torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy().astype(np.float64)
        return np.hstack([z, np.ones((z.shape[0], 1))])

    def _n_buffered(self) -> int:
        return int(min(int(self.n_seen_), int(self.buffer_size)))

    def _train(self, n_steps: int, targets: np.ndarray | None = None, x_full: np.ndarray | None = None) -> None:
        import torch

        if targets is not None and x_full is not None:
            n = x_full.shape[0]
        else:
            n = self._n_buffered()
        if n == 0:
            return
        opt = torch.optim.Adam(self.net_.parameters(), lr=float(self.lr))
        for _ in range(n_steps):
            idx = self.rng_.integers(n, size=min(int(self.batch_size), n))
            if targets is not None and x_full is not None:
                out = self.net_(torch.from_numpy(x_full[idx].astype(np.float32)))
                loss = ((out - torch.from_numpy(targets[idx].astype(np.float32))) ** 2).mean()
            else:
                out = self.net_(torch.from_numpy(self.buf_x_[idx]))
                pred = out.gather(1, torch.from_numpy(self.buf_a_[idx])[:, None])[:, 0]
                loss = ((pred - torch.from_numpy(self.buf_r_[idx].astype(np.float32))) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    def _rebuild_head(self) -> None:
        n = self._n_buffered()
        m, hd = int(self.n_actions), int(self.hidden) + 1
        z = self._features(self.buf_x_[:n])
        a, r = self.buf_a_[:n], self.buf_r_[:n]
        for k in range(m):
            zk = z[a == k]
            self.A_[k] = float(self.ridge) * np.eye(hd) + zk.T @ zk
            self.b_[k] = zk.T @ r[a == k]
        self.A_inv_ = np.asarray(np.linalg.inv(self.A_), dtype=np.float64)

    # ------------------------------------------------------------------ public API
    def sample(self, probs: Any, rng: np.random.Generator | None = None) -> np.ndarray | int:
        """Draw action(s) from ``probs`` (m,) or (n, m) with ``rng`` (default: the policy's own)."""
        return _sample(probs, self.rng_ if rng is None else rng)

    def expected_reward(self, context: np.ndarray) -> np.ndarray:
        """Head's posterior-mean reward (n, m) of every action for contexts (n, d)."""
        x, _ = check_context(np.atleast_2d(context), int(self.dim))
        theta = np.einsum("mij,mj->mi", self.A_inv_, self.b_)
        return np.asarray(self._features(x) @ theta.T)

    def select(self, context: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Probabilities (m,) for a context (d,), or (n, m) for contexts (n, d); masked entries are 0."""
        x, single = check_context(context, int(self.dim))
        mk = check_mask(mask, x.shape[0], int(self.n_actions))
        theta = np.einsum("mij,mj->mi", self.A_inv_, self.b_)
        scores = ucb_scores(self._features(x), theta, self.A_inv_, float(self.alpha))
        if self.softmax_temperature:
            p = softmax_probs(scores, mk, float(self.softmax_temperature))
        else:
            p = np.zeros_like(scores)
            p[np.arange(x.shape[0]), masked_argmax(scores, mk)] = 1.0
        return p[0] if single else p

    def update(self, context: np.ndarray, action: np.ndarray | int, reward: np.ndarray | float,
               propensity: np.ndarray | float | None = None) -> NeuralLinear:
        """Add rows to the buffer and the head; retrain every ``train_every`` rows."""
        x, a, r = check_update(context, action, reward, propensity, int(self.dim), int(self.n_actions))
        n = x.shape[0]
        cap = int(self.buffer_size)
        slots = (int(self.n_seen_) + np.arange(n)) % cap
        self.buf_x_[slots] = x.astype(np.float32)
        self.buf_a_[slots] = a
        self.buf_r_[slots] = r
        self.n_seen_ = np.array(int(self.n_seen_) + n)
        self.since_train_ = np.array(int(self.since_train_) + n)
        np.add.at(self.counts_, a, 1)
        if int(self.since_train_) >= int(self.train_every):
            self._train(int(self.train_steps))
            self._rebuild_head()
            self.since_train_ = np.array(0)
        else:
            z = self._features(x)
            for i in range(n):
                k, zi = int(a[i]), z[i]
                az = self.A_inv_[k] @ zi
                self.A_inv_[k] -= np.outer(az, az) / (1.0 + zi @ az)
                self.A_[k] += np.outer(zi, zi)
                self.b_[k] += r[i] * zi
        return self

    def warm_start(self, embeddings: Any, quality: Any, lam: float = 0.0, cost: Any = None,
                   weight: float = 1.0, epochs: int = 5) -> NeuralLinear:
        """Pretrain the representation on offline full-information rewards ``quality - lam * cost``
        (n, m) and set the head from them as pseudo-observations of weight ``weight``."""
        x, r = warm_start_rewards(embeddings, quality, lam, cost, int(self.dim), int(self.n_actions))
        n, m = r.shape
        steps = max(1, epochs * n // int(self.batch_size))
        self._train(steps, targets=r, x_full=x)
        z = self._features(x)
        gram = float(weight) * z.T @ z
        for k in range(m):
            self.A_[k] += gram
            self.b_[k] += float(weight) * z.T @ r[:, k]
        self.A_inv_ = np.asarray(np.linalg.inv(self.A_), dtype=np.float64)
        return self
