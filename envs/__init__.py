"""Gymnasium environments that replay logged routing traffic.

Importing :mod:`envs` registers (cheaply, nothing is built):

* ``routing/Replay-v0`` -- :class:`envs.replay.ReplayEnv`, one request per episode; its
  ``vector_entry_point`` is the native :class:`envs.vector.ReplayVectorEnv`, so
  ``gymnasium.make_vec("routing/Replay-v0", num_envs=B, ...)`` serves B requests per step;
* ``routing/ReplayVector-v0`` -- the same vector env for ``gymnasium.make_vec``.

Both are made by name with a data set: ``gymnasium.make("routing/Replay-v0", dataset="synthetic")``
(or ``outcomes=...``, ``log=PATH``), the encoder and reward settings as keyword arguments -- see
:class:`envs.replay.ReplayEnv`. :func:`envs.loop.run_policy` is the one loop that runs a policy in
the vector environment.

Example:
    >>> import gymnasium as gym, numpy as np
    >>> from router.data.schema import Outcomes
    >>> o = Outcomes(prompt_ids=["a", "b"], prompts=["x", "y"], models=["s", "b"],
    ...              quality=[[1, 0], [0, 1]], cost=np.zeros((2, 2)))
    >>> env = gym.make("routing/Replay-v0", embeddings=np.eye(2, dtype=np.float32), outcomes=o)
    >>> env.unwrapped.metadata["model_names"]
    ('s', 'b')
"""

import gymnasium

from envs.replay import LoggedFeedback, ReplayEnv
from envs.vector import ReplayVectorEnv, make_vector

__all__ = ["LoggedFeedback", "ReplayEnv", "ReplayVectorEnv", "make_vector"]

if "routing/Replay-v0" not in gymnasium.registry:
    gymnasium.register(
        id="routing/Replay-v0",
        entry_point="envs.replay:ReplayEnv",
        vector_entry_point="envs.vector:ReplayVectorEnv",
    )
if "routing/ReplayVector-v0" not in gymnasium.registry:
    gymnasium.register(
        id="routing/ReplayVector-v0",
        entry_point="envs.replay:ReplayEnv",
        vector_entry_point="envs.vector:ReplayVectorEnv",
    )
