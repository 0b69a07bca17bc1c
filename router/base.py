"""Small base classes behind which every encoder, predictor and policy sits.

Conventions (scikit-learn / River style):

* hyperparameters are constructor arguments stored unchanged under the same name;
* learned state ends in ``_`` and exists only after ``fit``;
* randomness only through a ``seed`` argument;
* public methods validate and call a private core (``predict`` -> ``_predict``);
* state saves to a directory as ``config.json`` plus ``weights.npz`` / ``.safetensors`` -- never pickles.

``get_config()`` returns the constructor arguments (JSON-able); ``get_state()`` returns the learned
arrays as ``{name: np.ndarray}``; ``from_config(config, state)`` rebuilds an identical object.

A subclass that sets ``kind`` registers itself in :mod:`router.registry` under its ``family``
(``"encoder"``, ``"predictor"``, ``"cost"``, ``"policy"``; ``"component"`` for other parts), which
is how persistence, the command lines, the ensemble and tuning find it: a new component is one new
file in its family's package.

=================  ============================================================================
contract           methods
=================  ============================================================================
Encoder            ``dim``, ``encode(texts) -> (n, dim)``
QualityPredictor   ``fit(embeddings (n, d), quality (n, m))``, ``predict(embeddings) -> (n, m)``
CostModel          ``fit(embeddings, prompt_chars (n,), outcomes)``, ``predict(...) -> USD (n, m)``,
                   ``predict_latency(...) -> seconds (n, m) or None``
Policy             ``select``, ``update``, ``expected_reward``, ``sample``, ``warm_start``
=================  ============================================================================
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from router.errors import ConfigError, NotFittedError

__all__ = ["Component", "CostModel", "Encoder", "QualityPredictor", "Policy", "check_embeddings"]


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

    #: registry name used when saving and on the command lines; set by subclasses.
    kind: ClassVar[str] = ""
    #: the registry family (set by the contract base classes below).
    family: ClassVar[str] = "component"
    #: further names the command lines accept for this kind (e.g. ``"mf"``).
    aliases: ClassVar[tuple[str, ...]] = ()
    #: Optuna search space of constructor arguments: ``{name: router.registry.FloatParam(...)}``.
    search_space: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        """Register a subclass that sets ``kind``; ``class X(Base, register=False)`` opts out (e.g. a
        stand-in that borrows another component's kind)."""
        super().__init_subclass__(**kwargs)
        if register and cls.__dict__.get("kind"):
            from router import registry

            registry.register(cls)

    def get_config(self) -> dict[str, Any]:
        sig = inspect.signature(type(self).__init__)
        variadic = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        return {
            name: getattr(self, name)
            for name in sig.parameters
            if name != "self" and sig.parameters[name].kind not in variadic
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

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        """Small, fast constructor arguments the conformance suites use (River's convention)."""
        return {}

    def _check_fitted(self, attr: str) -> None:
        if getattr(self, attr, None) is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(...) first.")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Encoder(Component):
    """Text -> vector. ``encode(texts) -> (n, dim) float32``, L2-normalised rows."""

    family: ClassVar[str] = "encoder"

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def encode(self, texts: list[str]) -> np.ndarray: ...


class QualityPredictor(Component):
    """``fit(embeddings (n, d), quality (n, m))`` then ``predict(embeddings) -> Q_hat (n, m)`` in [0, 1]."""

    family: ClassVar[str] = "predictor"

    @abstractmethod
    def fit(self, embeddings: np.ndarray, quality: np.ndarray) -> QualityPredictor: ...

    @abstractmethod
    def predict(self, embeddings: np.ndarray) -> np.ndarray: ...


class CostModel(Component):
    """USD and seconds of every candidate, predicted before any call.

    ``fit(embeddings (n, d), prompt_chars (n,), outcomes)`` learns from full-information outcomes;
    ``predict(embeddings, prompt_chars) -> (n, m)`` USD per call; ``predict_latency`` gives (n, m)
    seconds, or None when the model has not learnt latency.
    """

    family: ClassVar[str] = "cost"

    @abstractmethod
    def fit(self, embeddings: np.ndarray, prompt_chars: np.ndarray, outcomes: Any) -> CostModel: ...

    @abstractmethod
    def predict(self, embeddings: np.ndarray, prompt_chars: np.ndarray) -> np.ndarray: ...

    def predict_latency(self, embeddings: np.ndarray, prompt_chars: np.ndarray) -> np.ndarray | None:
        """(n, m) predicted seconds, or None (the default: no latency model)."""
        return None

    def predict_both(self, embeddings: np.ndarray, prompt_chars: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(predict(...), predict_latency(...))`` in one call; a model whose two predictions share
        work (e.g. the predicted answer length) overrides it to do that work once."""
        return self.predict(embeddings, prompt_chars), self.predict_latency(embeddings, prompt_chars)


class Policy(Component):
    """Contextual-bandit policy over ``n_actions`` models on contexts of width ``dim``.

    Constructed as ``cls(n_actions, dim, ..., seed=...)``; randomness only through its own
    Generator ``rng_`` (seeded by ``seed``, saved with the state).

    * ``select(context (d,) or (n, d), mask (m,) or (n, m) bool) -> probabilities`` summing to one
      over allowed actions;
    * ``sample(probs) -> action(s)`` draws from them with ``rng_``;
    * ``update(context, action, reward, propensity)`` learns online;
    * ``expected_reward(context (n, d)) -> (n, m)`` the reward estimate without exploration (the
      :class:`~router.router.Router` turns it into quality estimates);
    * ``warm_start(embeddings, quality, lam, cost, weight)`` starts from offline full-information
      data (optional; the default says the policy cannot).
    """

    family: ClassVar[str] = "policy"
    n_actions: int
    dim: int
    rng_: np.random.Generator

    @abstractmethod
    def select(self, context: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray: ...

    @abstractmethod
    def update(
        self, context: np.ndarray, action: np.ndarray | int, reward: np.ndarray | float,
        propensity: np.ndarray | float | None = None,
    ) -> Policy: ...

    @abstractmethod
    def expected_reward(self, context: np.ndarray) -> np.ndarray: ...

    def sample(self, probs: Any, rng: np.random.Generator | None = None) -> Any:
        """Draw action(s) from ``probs`` (m,) -> int or (n, m) -> (n,) with ``rng`` (default: ``rng_``)."""
        from router.policies._common import sample

        return sample(probs, self.rng_ if rng is None else rng)

    def warm_start(self, embeddings: Any, quality: Any, lam: float = 0.0, cost: Any = None,
                   weight: float = 1.0) -> Policy:
        """Add offline pseudo-observations with reward ``quality - lam * cost`` (n, m); see the subclasses."""
        raise ConfigError(f"{type(self).__name__} ({self.kind!r}) cannot be warm-started; drop --warm-start.")
