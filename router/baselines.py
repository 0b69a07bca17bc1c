"""Baselines with the router interface (``route`` and ``sweep``): they set the bar a learned router
must clear.

* :class:`AlwaysRouter` -- always one model;
* :class:`CheapestRouter` -- always the cheapest model (by mean training cost);
* :class:`RandomMixRouter` -- random mixing of the cheapest and the best model, swept over the share
  sent to the best one (RouterBench's "zero router" is the hull of all such mixtures);
* :class:`OracleRouter` -- knows every outcome; for evaluation only.

Example:
    >>> from router.data.synthetic import generate
    >>> o = generate(50, seed=0).outcomes
    >>> lams, choices, probs, q = RandomMixRouter(seed=0).fit(o).sweep(list(o.prompts))
    >>> choices.shape == (len(lams), 50)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from router.data.schema import Outcomes
from router.decision import DecisionRule
from router.errors import ConfigError, NotFittedError
from router.router import Decisions

__all__ = ["AlwaysRouter", "BaselineRouter", "CheapestRouter", "OracleRouter", "RandomMixRouter"]


class BaselineRouter:
    """Shared parts: per-model mean quality and cost learned from training outcomes."""

    name = "baseline"

    def __init__(self) -> None:
        self.models: tuple[str, ...] = ()
        self.mean_quality_: np.ndarray | None = None
        self.mean_cost_: np.ndarray | None = None

    def fit(self, outcomes: Outcomes) -> BaselineRouter:
        self.models = tuple(outcomes.models)
        self.mean_quality_ = outcomes.quality.mean(axis=0)
        self.mean_cost_ = outcomes.cost.mean(axis=0)
        return self

    def _means(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self.mean_quality_ is None or self.mean_cost_ is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(outcomes) first.")
        return np.tile(self.mean_quality_, (n, 1)), np.tile(self.mean_cost_, (n, 1))

    def _choices(self, prompts: Sequence[Any], lambdas: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def default_settings(self) -> np.ndarray:
        return np.zeros(1)

    def sweep(
        self, prompts: Sequence[Any], lambdas: Sequence[float] | None = None, *, models: Sequence[str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(settings (S,), choices (S, n), probabilities (S, n, m), quality_hat (n, m))`` like :meth:`Router.sweep`."""
        if models is not None and tuple(models) != self.models:
            raise ConfigError("baselines route over the pool they were fitted on; fit on the restricted outcomes.")
        settings = self.default_settings() if lambdas is None else np.asarray(lambdas, dtype=np.float64)
        choices = self._choices(prompts, settings)
        n, m = len(prompts), len(self.models)
        probs = np.zeros((len(settings), n, m))
        np.put_along_axis(probs, choices[:, :, None], 1.0, axis=2)
        q, _ = self._means(n)
        return settings, choices, probs, q

    def route(self, prompts: Sequence[Any], *, lam: float | None = None, **options: Any) -> Decisions:
        setting = self.default_settings()[-1] if lam is None else lam
        _, choices, probs, q = self.sweep(prompts, [setting])
        _, c = self._means(len(prompts))
        reasons = [f"{type(self).__name__}: {self.models[j]}" for j in choices[0]]
        return Decisions(self.models, choices[0], probs[0], q, c, np.zeros_like(c), q - float(setting) * c,
                         reasons, float(setting), 0.0, {})


class AlwaysRouter(BaselineRouter):
    """Always the named model."""

    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model
        self.name = f"always:{model}"

    def fit(self, outcomes: Outcomes) -> AlwaysRouter:
        outcomes.model_index(self.model)
        super().fit(outcomes)
        return self

    def _choices(self, prompts: Sequence[Any], lambdas: np.ndarray) -> np.ndarray:
        self._means(len(prompts))
        return np.full((len(lambdas), len(prompts)), self.models.index(self.model), dtype=np.int64)


class CheapestRouter(BaselineRouter):
    """Always the model with the lowest mean training cost."""

    name = "cheapest"

    def _choices(self, prompts: Sequence[Any], lambdas: np.ndarray) -> np.ndarray:
        _, c = self._means(1)
        return np.full((len(lambdas), len(prompts)), int(c[0].argmin()), dtype=np.int64)


class RandomMixRouter(BaselineRouter):
    """Send a share ``p`` (the setting, in [0, 1]) of prompts to the best model, the rest to the cheapest."""

    name = "random-mix"

    def __init__(self, seed: int = 0, n_settings: int = 11) -> None:
        super().__init__()
        self.seed = seed
        self.n_settings = n_settings

    def default_settings(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, self.n_settings)

    def _choices(self, prompts: Sequence[Any], lambdas: np.ndarray) -> np.ndarray:
        q, c = self._means(1)
        best, cheap = int(q[0].argmax()), int(c[0].argmin())
        if np.any((lambdas < 0) | (lambdas > 1)):
            raise ConfigError("RandomMixRouter settings are shares in [0, 1].")
        u = np.random.default_rng(self.seed).random(len(prompts))
        return np.where(u[None, :] < lambdas[:, None], best, cheap).astype(np.int64)


class OracleRouter(BaselineRouter):
    """Knows every outcome: per prompt, the best true ``quality - lam * cost``. Evaluation only."""

    name = "oracle"

    def __init__(self, outcomes: Outcomes) -> None:
        super().__init__()
        self.outcomes = outcomes
        self.fit(outcomes)
        self._row = {str(p): i for i, p in enumerate(outcomes.prompts)}

    def default_settings(self) -> np.ndarray:
        from router.router import default_lambda_grid

        return default_lambda_grid(self.outcomes.quality, self.outcomes.cost)

    def _choices(self, prompts: Sequence[Any], lambdas: np.ndarray) -> np.ndarray:
        try:
            rows = np.array([self._row[str(p)] for p in prompts])
        except KeyError as exc:
            raise ConfigError(f"the oracle only knows the prompts it was given; unknown prompt {exc}.") from None
        q, c = self.outcomes.quality[rows], self.outcomes.cost[rows]
        rule = DecisionRule()
        return np.stack([rule.with_(lam=float(lv)).probabilities(q, c).probabilities.argmax(axis=1)
                         for lv in lambdas])
