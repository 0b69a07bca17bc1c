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

Saving is ``config.json`` (kind + constructor arguments) plus ``state.npz`` (learned arrays and
the Generator's state), never pickles; :func:`save_policy` / :func:`load_policy` do both.

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
from pathlib import Path
from typing import Any

import numpy as np

from router.base import Policy
from router.errors import ConfigError, PersistenceError
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
    "load_policy",
    "policy_from_config",
    "sample",
    "save_policy",
]

#: kind -> policy class.
POLICIES: dict[str, type[Policy]] = {
    "egreedy": EpsilonGreedy,
    "linucb": LinUCB,
    "thompson": LinearThompson,
    "neural": NeuralLinear,
}


def policy_from_config(kind: str, config: dict[str, Any], state: dict[str, np.ndarray] | None = None) -> Policy:
    """Rebuild a policy from its kind, ``get_config()`` and ``get_state()``."""
    if kind not in POLICIES:
        raise ConfigError(f"unknown policy kind {kind!r}; choose one of {sorted(POLICIES)}.")
    pol = POLICIES[kind](**config)
    if state:
        pol.set_state(state)
    return pol


def save_policy(policy: Policy, directory: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write ``config.json`` ({"kind", "config", **extra}) and ``state.npz`` into ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    payload = {"kind": policy.kind, "config": policy.get_config(), **(extra or {})}
    (d / "config.json").write_text(json.dumps(payload, indent=2, default=_json_default))
    state: dict[str, Any] = policy.get_state()
    np.savez(d / "state.npz", **state)


def load_policy(directory: str | Path) -> Policy:
    """Inverse of :func:`save_policy`."""
    d = Path(directory)
    if not (d / "config.json").is_file() or not (d / "state.npz").is_file():
        raise PersistenceError(f"{d}: expected config.json and state.npz written by save_policy.")
    payload = json.loads((d / "config.json").read_text())
    with np.load(d / "state.npz", allow_pickle=False) as z:
        state = {k: z[k] for k in z.files}
    return policy_from_config(payload["kind"], payload["config"], state)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
