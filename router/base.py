"""Small base classes behind which every encoder, predictor and policy sits.

Conventions (scikit-learn / River style):

* hyperparameters are constructor arguments stored unchanged under the same name;
* learned state ends in ``_`` and exists only after ``fit``;
* randomness only through a ``seed`` argument;
* public methods validate and call a private core (``predict`` -> ``_predict``);
* state saves to a directory as ``config.json`` plus ``weights.npz`` / ``.safetensors`` -- never pickles.

``get_config()`` returns the constructor arguments (JSON-able); ``get_state()`` returns the learned
arrays as ``{name: np.ndarray}``; ``from_config(config, state)`` rebuilds an identical object. The
registry in :mod:`router.registry` maps a ``kind`` string to the class for loading.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from router.errors import ConfigError, NotFittedError

__all__ = ["Component", "Encoder", "QualityPredictor", "Policy", "check_embeddings"]


def check_embeddings(x: Any, *, name: str = "embeddings", dim: int | None = None) -> np.ndarray:
    """Validate a (n, d) float matrix: finite, 2-D, and of width ``dim`` when given."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ConfigError(f"{name} must be a 2-D array (n_prompts, dim), got shape {arr.shape}.")
    if dim is not None and arr.shape[1] != dim:
        raise ConfigError(f"{name} has width {arr.shape[1]} but the model was fitted on width {dim}.")
    if not np.isfinite(arr).all():
        r = int(np.argwhere(~np.isfinite(arr))[0][0])
        raise ConfigError(f"{name} contains NaN or infinite values (first at row {r}); clean the input.")
    return arr


class Component(ABC):  # noqa: B024  (abstract by convention: subclasses set kind)
    """Shared plumbing: config from constructor arguments, fitted-state checks."""

    #: registry name used when saving; set by subclasses.
    kind: ClassVar[str] = ""

    def get_config(self) -> dict[str, Any]:
        sig = inspect.signature(type(self).__init__)
        return {
            name: getattr(self, name)
            for name in sig.parameters
            if name != "self" and sig.parameters[name].kind is not inspect.Parameter.VAR_KEYWORD
        }

    def get_state(self) -> dict[str, np.ndarray]:
        """Learned arrays; empty for stateless components."""
        return {}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        if state:
            raise ConfigError(f"{type(self).__name__} has no learned state but got {sorted(state)}.")

    @classmethod
    def from_config(cls, config: dict[str, Any], state: dict[str, np.ndarray] | None = None) -> Component:
        obj = cls(**config)
        if state:
            obj.set_state(state)
        return obj

    def _check_fitted(self, attr: str) -> None:
        if getattr(self, attr, None) is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(...) first.")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Encoder(Component):
    """Text -> vector. ``encode(texts) -> (n, dim) float32``, L2-normalised rows."""

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def encode(self, texts: list[str]) -> np.ndarray: ...


class QualityPredictor(Component):
    """``fit(embeddings (n, d), quality (n, m))`` then ``predict(embeddings) -> Q_hat (n, m)`` in [0, 1]."""

    @abstractmethod
    def fit(self, embeddings: np.ndarray, quality: np.ndarray) -> QualityPredictor: ...

    @abstractmethod
    def predict(self, embeddings: np.ndarray) -> np.ndarray: ...


class Policy(Component):
    """Contextual-bandit policy over ``n_actions`` models.

    ``select(context (d,) or (n, d), mask (m,) or (n, m) bool) -> probabilities`` summing to one over
    allowed actions; ``update(context, action, reward, propensity)`` learns online.
    """

    @abstractmethod
    def select(self, context: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray: ...

    @abstractmethod
    def update(
        self, context: np.ndarray, action: np.ndarray | int, reward: np.ndarray | float,
        propensity: np.ndarray | float | None = None,
    ) -> Policy: ...
