"""An averaging ensemble of other quality predictors (kNN + logistic + MLP by default)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np

from router.errors import ConfigError
from router.predictors._common import BasePredictor

__all__ = ["EnsemblePredictor", "DEFAULT_MEMBERS"]

#: The configuration chosen by 5-fold grouped cross-validation on RouterBench's training split
#: (see ``bench/results/routers.md``): a wide-neighbourhood kNN, a strongly regularised logistic
#: regression and a wide, heavily dropped-out MLP, averaged with equal weights.
DEFAULT_MEMBERS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("knn", {"k": 200}),
    ("logistic", {"C": 0.3}),
    ("mlp", {"hidden": (512,), "dropout": 0.5, "weight_decay": 1e-2, "batch_size": 256}),
)


def _member_kind(name: str) -> str | None:
    """The registered predictor kind of a member name (kind or alias); None for unknown or nested ensembles."""
    from router import registry

    if name not in registry.names("predictor"):
        return None
    cls = registry.get("predictor", name)
    return None if issubclass(cls, EnsemblePredictor) else str(cls.kind)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


class EnsemblePredictor(BasePredictor):
    """Weighted mean of the member predictors' quality predictions (probability space).

    Members are given as ``(kind, config)`` pairs of any other registered predictor (``"knn"``,
    ``"logistic"``, ``"mlp"``, ``"matrix_factorization"``, or one added in its own module); members that take a ``seed`` get ``seed + i`` (member
    ``i``), so the ensemble is seeded through its own ``seed`` only. State is every member's state
    with keys prefixed ``"m<i>."`` -- numeric arrays only.

    Args:
        members: sequence of ``(kind, config)``; default :data:`DEFAULT_MEMBERS`.
        weights: one non-negative weight per member (normalised), or None for equal weights.
        seed: base seed for the members.

    Example:
        >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]] * 4); q = np.array([[1, 0], [1, 0], [0, 1], [0, 1]] * 4)
        >>> ens = EnsemblePredictor(members=[("knn", {"k": 2}), ("logistic", {"C": 10.0})]).fit(x, q)
        >>> ens.predict(np.array([[1.0, 0.0]])).argmax(axis=1).tolist()
        [0]
    """

    kind: ClassVar[str] = "ensemble"

    def __init__(
        self,
        members: Any = DEFAULT_MEMBERS,
        weights: Any = None,
        seed: int = 0,
    ) -> None:
        self.members = members
        self.weights = weights
        self.seed = seed
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"seed must be an int, got {seed!r}.")
        try:
            specs = [(str(k), dict(c or {})) for k, c in members]
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"members must be a sequence of (kind, config) pairs, e.g. [('knn', {{'k': 40}})], got {members!r}."
            ) from exc
        if not specs:
            raise ConfigError("EnsemblePredictor needs at least one member.")
        for i, (k, c) in enumerate(specs):
            kind = _member_kind(k)
            if kind is None:
                from router import registry

                allowed = [n for n in registry.kinds("predictor") if n != self.kind]
                raise ConfigError(f"unknown member kind {k!r}; members may be of kinds {allowed}.")
            specs[i] = (kind, c)
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (len(specs),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
                raise ConfigError(
                    f"weights must be {len(specs)} non-negative numbers with a positive sum, got {weights!r}."
                )
        self._specs = specs
        self.models_: list[BasePredictor] | None = None

    def get_config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (tuples become lists)."""
        return {
            "members": [[k, _jsonable(c)] for k, c in self._specs],
            "weights": None if self.weights is None else [float(v) for v in self.weights],
            "seed": self.seed,
        }

    def _build_members(self) -> list[BasePredictor]:
        import inspect

        from router import registry

        out = []
        for i, (kind, cfg) in enumerate(self._specs):
            cls = registry.get("predictor", kind)
            cfg = dict(cfg)
            if "hidden" in cfg and isinstance(cfg["hidden"], list):
                cfg["hidden"] = tuple(cfg["hidden"])
            if "seed" in inspect.signature(cls.__init__).parameters:
                cfg["seed"] = int(cfg.get("seed", 0)) + self.seed + i
            try:
                out.append(cls(**cfg))
            except TypeError as exc:
                raise ConfigError(f"bad config for ensemble member {i} ({kind!r}): {exc}.") from exc
        return out

    def _weights(self) -> np.ndarray:
        w = np.ones(len(self._specs)) if self.weights is None else np.asarray(self.weights, dtype=np.float64)
        return w / w.sum()

    def _fit(self, x: np.ndarray, q: np.ndarray) -> None:
        models = self._build_members()
        for m in models:
            m.fit(x, q)
        self.models_ = models

    def _predict(self, x: np.ndarray) -> np.ndarray:
        assert self.models_ is not None
        w = self._weights()
        return sum(wi * m.predict(x) for wi, m in zip(w, self.models_))

    def member_predictions(self, embeddings: np.ndarray) -> np.ndarray:
        """(n_members, n, m) each member's predicted quality."""
        self._check_fitted("models_")
        assert self.models_ is not None
        return np.stack([m.predict(embeddings) for m in self.models_])

    def get_state(self) -> dict[str, np.ndarray]:
        self._check_fitted("models_")
        assert self.models_ is not None
        state = dict(self._shape_state())
        for i, m in enumerate(self.models_):
            for k, v in m.get_state().items():
                state[f"m{i}.{k}"] = np.asarray(v)
        state["members_json"] = np.frombuffer(json.dumps(self.get_config()["members"]).encode(), dtype=np.uint8).copy()
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self._set_shape_state(state)
        if "members_json" in state:
            saved = json.loads(np.asarray(state["members_json"], dtype=np.uint8).tobytes().decode())
            if saved != self.get_config()["members"]:
                raise ConfigError("this state was saved by an ensemble with different members; rebuild from its config.")
        models = self._build_members()
        for i, m in enumerate(models):
            prefix = f"m{i}."
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if not sub:
                raise ConfigError(f"ensemble state lacks member {i}'s arrays ('{prefix}*'); was it saved by this class?")
            m.set_state(sub)
        self.models_ = models

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {
            "members": [
                ["knn", {"k": 5}],
                ["logistic", {"C": 10.0}],
                ["mlp", {"hidden": [16], "epochs": 40, "lr": 0.02, "batch_size": 32}],
            ]
        }
