"""The one loop that runs a bandit policy in a replay vector environment: select, sample, step, update.

``training bandit``, ``training tune``, the bandit benchmark and the learning tests all run policies
through :func:`run_policy`, so they train on the same contexts in the same order. It yields one
:class:`Batch` per environment step with what happened, for callers to sum as they need.

Example:
    >>> import numpy as np
    >>> from router.data.schema import Outcomes
    >>> from router.policies import LinUCB
    >>> from envs.vector import make_vector
    >>> o = Outcomes(prompt_ids=list("abcd"), prompts=list("abcd"), models=["small", "big"],
    ...              quality=[[1, 0], [0, 1], [1, 0], [0, 1]], cost=np.zeros((4, 2)))
    >>> envs = make_vector(np.eye(4, dtype=np.float32), o, num_envs=2, order="sequential")
    >>> batches = list(run_policy(LinUCB(2, 4, alpha=0.1), envs, steps=5, seed=0))
    >>> [b.served for b in batches], batches[-1].action.shape
    ([2, 4, 5], (1,))
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.base import Policy
from router.errors import ConfigError

__all__ = ["Batch", "run_policy"]


@dataclass(frozen=True, eq=False)
class Batch:
    """One step of the vector environment, cut to the requests that count.

    Attributes:
        served: requests served so far, this batch included.
        context: (b, d) contexts the policy saw. action: (b,) actions taken.
        propensity: (b,) probability the policy gave each action. reward: (b,) rewards observed.
        info: the environment's ``info`` arrays for these b requests (``oracle_reward``, ``all_rewards``, ...).
    """

    served: int
    context: np.ndarray
    action: np.ndarray
    propensity: np.ndarray
    reward: np.ndarray
    info: dict[str, Any]


def run_policy(policy: Policy, envs: Any, steps: int, *, seed: int | None = None,
               learn: bool = True) -> Iterator[Batch]:
    """Serve ``steps`` requests from ``envs`` with ``policy``, updating it online after every batch.

    The environment is reset (with ``seed``) first. Each step the policy gives probabilities over
    the allowed models for the batch's contexts, an action is drawn from them with the policy's own
    Generator, the environment scores it, and the policy learns from the rewards. When ``steps`` is
    not a multiple of ``envs.num_envs`` the last batch counts (and teaches) only its first rows.

    Args:
        policy: any :class:`~router.base.Policy`.
        envs: a :class:`envs.vector.ReplayVectorEnv` (or another vector env with the same observations).
        steps: requests to serve (>= 1).
        seed: seed of the environment's reset.
        learn: update the policy (False evaluates it as it is).
    """
    if not isinstance(steps, int | np.integer) or steps < 1:
        raise ConfigError(f"steps must be a positive int, got {steps!r}.")
    obs, _ = envs.reset(seed=seed)
    served = 0
    while served < steps:
        take = min(int(envs.num_envs), int(steps) - served)
        probs = policy.select(obs["features"], obs["action_mask"].astype(bool))
        actions = np.asarray(policy.sample(probs), dtype=np.int64)
        prop = probs[np.arange(actions.shape[0]), actions]
        ctx = obs["features"]
        obs, reward, _, _, info = envs.step(actions)
        s = slice(0, take)
        if learn:
            policy.update(ctx[s], actions[s], reward[s], prop[s])
        served += take
        yield Batch(served, ctx[s], actions[s], prop[s], np.asarray(reward)[s],
                    {k: v[s] if isinstance(v, np.ndarray) else v for k, v in info.items()})
