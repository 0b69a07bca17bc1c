"""A native vector environment that serves a batch of logged requests per step.

Every request is a one-step episode, so there is nothing to autoreset: each ``step(actions)``
scores the current batch and returns the *next* batch's observations (``terminated`` is all True;
the terminal observation of a one-step episode carries no information, so no ``final_obs`` is
kept). ``metadata["autoreset_mode"]`` is ``SAME_STEP`` to say so. All reward modes and data of
:class:`envs.replay.ReplayEnv` are supported -- by name too, ``gymnasium.make_vec("routing/Replay-v0",
num_envs=32, dataset="synthetic", lam=20.0)`` -- and ``infos`` hold (num_envs,) arrays of the same keys.

Example:
    >>> import numpy as np
    >>> from router.data.schema import Outcomes
    >>> o = Outcomes(prompt_ids=list("abcd"), prompts=list("abcd"), models=["small", "big"],
    ...              quality=[[1, 1], [0, 1], [1, 1], [0, 1]], cost=np.zeros((4, 2)))
    >>> envs = make_vector(np.eye(4, dtype=np.float32), o, num_envs=2, order="sequential")
    >>> obs, info = envs.reset(seed=0)
    >>> obs["features"].shape, info["row"]
    ((2, 4), array([0, 1]))
    >>> obs, reward, terminated, truncated, info = envs.step(np.array([0, 0]))
    >>> reward, terminated, info["row"]
    (array([1., 0.]), array([ True,  True]), array([0, 1]))
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv
from gymnasium.vector.utils import batch_space
from gymnasium.vector.vector_env import AutoresetMode

from envs.replay import ReplayData
from router.data.schema import Outcomes
from router.errors import ConfigError

__all__ = ["ReplayVectorEnv", "make_vector"]


class ReplayVectorEnv(VectorEnv):
    """Serve ``num_envs`` requests per step; arguments as :class:`envs.replay.ReplayEnv`.

    Observations: ``{"features": (num_envs, d + k) float32, "action_mask": (num_envs, m) int8}``;
    actions: (num_envs,) ints; rewards (num_envs,) float64.
    """

    def __init__(self, embeddings: Any = None, outcomes: Outcomes | None = None, *, num_envs: int = 32,
                 render_mode: str | None = None, **kwargs: Any) -> None:
        if int(num_envs) < 1:
            raise ConfigError(f"num_envs must be >= 1, got {num_envs!r}.")
        self.data = ReplayData(embeddings, outcomes, **kwargs)
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self.metadata = {
            "render_modes": [],
            "model_names": self.data.model_names,
            "autoreset_mode": AutoresetMode.SAME_STEP,
        }
        self.single_observation_space = self.data.observation_space()
        self.single_action_space = spaces.Discrete(self.data.n_models)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._rows = np.full(self.num_envs, -1, dtype=np.int64)
        self._cursor = 0

    @property
    def n_skipped(self) -> int:
        return self.data.n_skipped

    def _next_rows(self) -> np.ndarray:
        pool = self.data.rows
        if self.data.order == "sequential":
            idx = (self._cursor + np.arange(self.num_envs)) % pool.shape[0]
            self._cursor = int((self._cursor + self.num_envs) % pool.shape[0])
            return pool[idx]
        return pool[self.np_random.integers(pool.shape[0], size=self.num_envs)]

    def _obs(self) -> dict[str, np.ndarray]:
        return {"features": self.data.features[self._rows], "action_mask": self.data.mask_i8[self._rows]}

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if isinstance(seed, list):
            seed = seed[0] if seed else None
        super().reset(seed=seed)
        if seed is not None:
            self._cursor = 0
        self._rows = self._next_rows()
        return self._obs(), {"row": self._rows.copy()}

    def step(
        self, actions: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._rows[0] < 0:
            raise ConfigError("call reset() before step().")
        acts = np.asarray(actions)
        if acts.shape != (self.num_envs,) or not np.issubdtype(acts.dtype, np.integer):
            raise ConfigError(f"actions must be an int array of shape ({self.num_envs},), got {acts.dtype} {acts.shape}.")
        if acts.min() < 0 or acts.max() >= self.data.n_models:
            raise ConfigError(f"actions must be in [0, {self.data.n_models}).")
        info: dict[str, Any] = self.data.rewards(self._rows, acts.astype(np.int64))
        if self.data.reward_mode == "full":
            info["all_rewards"] = self.data.reward_all[self._rows]
        reward = info.pop("reward")
        self._rows = self._next_rows()
        terminated = np.ones(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        return self._obs(), reward, terminated, truncated, info


def make_vector(embeddings: Any = None, outcomes: Outcomes | None = None, *, num_envs: int = 32,
                **kwargs: Any) -> ReplayVectorEnv:
    """Build a :class:`ReplayVectorEnv` (same arguments as :class:`envs.replay.ReplayEnv`)."""
    return ReplayVectorEnv(embeddings, outcomes, num_envs=num_envs, **kwargs)
