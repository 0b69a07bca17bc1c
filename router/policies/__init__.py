"""Contextual-bandit policies behind :class:`router.base.Policy`, one module each.

=========== ============================================ ==========================================
kind        class                                        propensities
=========== ============================================ ==========================================
egreedy     :class:`~router.policies.egreedy.EpsilonGreedy`   epsilon-uniform + greedy
linucb      :class:`~router.policies.linucb.LinUCB`           0/1 (or softmax with a temperature)
thompson    :class:`~router.policies.thompson.LinearThompson` Monte-Carlo estimate, action drawn from it
neural      :class:`~router.policies.neural.NeuralLinear`     0/1 (or softmax); needs torch
=========== ============================================ ==========================================

The linear policies (egreedy, linucb, thompson) update ``A^{-1}`` by Woodbury corrections per batch
(see :mod:`router.policies._common`), so a batch costs ``O(m D^2)`` per row; ``context_rank=R`` with
:meth:`~router.policies._common.LinearPolicy.fit_basis` reduces ``D`` to ``R + 1`` for several times more
rows per second (``bench/results/policy_speed.md``).


Policies register by ``kind`` in :mod:`router.registry` (``POLICIES`` is a live view of that
table). **Adding a policy is one file**: a module in this package with a subclass of
:class:`router.base.Policy` (or :class:`~router.policies._common.LinearPolicy`) that sets ``kind``,
takes ``(n_actions, dim, ..., seed)`` and implements ``select``, ``update`` and ``expected_reward``;
its ``search_space`` tells ``training tune`` what to sample. ``training bandit --policy KIND``,
routers holding it and the conformance suites pick it up without further edits.

A policy is saved like every other component (:mod:`router.persist`): ``policy.json`` (kind +
constructor arguments) and ``policy.npz`` (learned arrays and the Generator's state), never pickles;
:func:`save_policy` / :func:`load_policy` write and read them (and still read the ``config.json`` +
``state.npz`` pair older versions wrote).

Example:
    >>> import numpy as np, tempfile
    >>> pol = POLICIES["linucb"](n_actions=3, dim=2, alpha=0.1)
    >>> _ = pol.update(np.array([[1.0, 0.0]]), np.array([2]), np.array([1.0]))
    >>> d = tempfile.mkdtemp()
    >>> save_policy(pol, d)
    >>> load_policy(d).select(np.array([1.0, 0.0])).tolist()
    [0.0, 0.0, 1.0]
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from router import registry
from router.base import Policy
from router.errors import ConfigError, PersistenceError
from router.persist import load_component, save_component
from router.policies._common import sample
from router.policies.egreedy import EpsilonGreedy
from router.policies.linucb import LinUCB
from router.policies.neural import NeuralLinear
from router.policies.thompson import LinearThompson

__all__ = [
    "POLICIES",
    "EpsilonGreedy",
    "LinUCB",
    "LinearThompson",
    "NeuralLinear",
    "build_policy",
    "load_policy",
    "policy_from_config",
    "sample",
    "save_policy",
]

#: kind -> policy class: a live view of the policy registry.
POLICIES: Mapping[str, type[Policy]] = registry.table("policy")


def build_policy(kind: str, n_actions: int, dim: int, *, seed: int = 0, **hyperparameters: Any) -> Policy:
    """The policy registered as ``kind`` for ``n_actions`` models and contexts of width ``dim``.

    Example:
        >>> build_policy("egreedy", 3, 2, epsilon=0.2).select(np.zeros(2)).round(3).tolist()
        [0.867, 0.067, 0.067]
    """
    pol: Policy = registry.create("policy", kind, seed=seed, n_actions=n_actions, dim=dim, **hyperparameters)
    return pol


def policy_from_config(kind: str, config: dict[str, Any], state: dict[str, np.ndarray] | None = None) -> Policy:
    """Rebuild a policy from its kind, ``get_config()`` and ``get_state()``."""
    if kind not in registry.names("policy"):
        raise ConfigError(f"unknown policy kind {kind!r}; choose one of {registry.kinds('policy')}.")
    pol: Policy = registry.create("policy", kind, **config)
    if state:
        pol.set_state(state)
    return pol


def save_policy(policy: Policy, directory: str | Path) -> None:
    """Write ``policy.json`` and ``policy.npz`` into ``directory`` (the component format of :mod:`router.persist`)."""
    save_component(policy, Path(directory), "policy")


def load_policy(directory: str | Path) -> Policy:
    """Inverse of :func:`save_policy` (also reads the older ``config.json`` + ``state.npz`` pair)."""
    d = Path(directory)
    if (d / "policy.json").is_file():
        pol = load_component(d, "policy")
    elif (d / "config.json").is_file() and (d / "state.npz").is_file():
        payload = json.loads((d / "config.json").read_text())
        with np.load(d / "state.npz", allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
        pol = policy_from_config(payload["kind"], payload["config"], state)
    else:
        raise PersistenceError(f"{d}: expected policy.json (and policy.npz) written by save_policy.")
    if not isinstance(pol, Policy):
        raise PersistenceError(f"{d}: policy.json holds a {type(pol).__name__}, not a policy.")
    return pol
