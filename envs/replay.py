"""A Gymnasium environment that replays routing traffic, one request per episode.

Each episode serves one logged request: the observation is its context (prompt embedding plus
request features) and the mask of models allowed for it; the action is the model to call; the
reward is ``quality - lam * cost - mu * latency`` (USD and seconds), and the episode ends.

The data is given by name, as an object, or as arrays:

* ``dataset=NAME`` -- a registered source (``"synthetic"``, ``"demo"``, ``"routerbench"``, ...) or a path
  to outcomes in our format, loaded with :func:`router.data.registry.load_source` (``dataset_options``
  go to its loader, e.g. ``{"n_prompts": 500, "seed": 1}`` for ``"synthetic"``);
* ``outcomes=Outcomes`` -- full-information outcomes in memory;
* ``log=PATH`` -- a traffic log in :data:`~router.data.schema.TRAFFIC_LOG_SCHEMA` (JSON lines, Parquet,
  or a polars DataFrame) with the logging policy's propensities; ``model_names`` orders the actions
  (default: the logged models, sorted);
* ``embeddings`` plus ``outcomes`` or ``logged`` -- precomputed embeddings (the env encodes nothing).

Without ``embeddings`` the prompts are embedded as a :class:`~router.router.Router` embeds them: long
shared few-shot prefixes stripped (``strip_prefixes``), then the encoder named in the encoder registry
(``encoder="hashing"``, ``"static"``, ``"minilm"``, ... built with ``encoder_options``). The encoder and
stripper stay on ``env.unwrapped.data`` (``encoder``, ``preprocessor``, ``embeddings``, ``outcomes``),
so a policy trained here can be saved inside a router that sees new prompts the same way::

    env = gymnasium.make("routing/Replay-v0", dataset="synthetic", lam=20.0)
    envs = gymnasium.make_vec("routing/Replay-v0", num_envs=32, dataset="demo", encoder="static", mu=0.1)

Two kinds of data can be replayed:

* **full information** (:class:`~router.data.schema.Outcomes`): every model's outcome is known, so
  the reward of any action is exact (``reward_mode="full"``);
* **logged bandit feedback** (:class:`LoggedFeedback`): only the chosen model's outcome is known,
  with the probability the logging policy gave that choice. The reward of another action is then
  *estimated*:

  ======== ================================================================================
  mode     reward of action ``a`` on logged row ``i`` (``r_i`` the logged reward)
  ======== ================================================================================
  replay   ``r_i`` when ``a == a_i`` (``info["accepted"] = True``), else 0 and not accepted
           (rejection sampling, Li et al. 2011: average only the accepted steps)
  ips      ``r_i * 1[a == a_i] / p_i``
  dm       ``r_hat[i, a]`` from a reward model: ``q_hat`` if given, else
           :class:`~router.ope.CrossFitRewardModel` (per action, cross-fitted over ``dm_folds``
           folds so a row never scores itself; also for cost and latency)
  dr       ``r_hat[i, a] + (r_i - r_hat[i, a_i]) * 1[a == a_i] / p_i``
  ======== ================================================================================

  Logged rows whose quality is NaN (feedback not arrived) are skipped: nothing can be learnt
  from them (``env.n_skipped`` counts them).

``order="sequential"`` replays rows in time order (so drift is met in order, wrapping at the end);
``order="random"`` draws a row with the env's seeded ``np_random``. ``reset(options={"row": i})``
serves a given row.

Observation ``{"features": (d + k,) float32 in [-1, 1], "action_mask": (m,) int8}``: the features are
:func:`router.context.policy_context` of the embedding -- the embedding clipped to [-1, 1] (what a
router's policy reads), then ``log1p(prompt length) / log1p(max length)`` when lengths are given, then
one-hot task and tenant ids when given. Observations are fresh copies.

``info`` holds the reward parts (``quality``, ``cost``, ``latency``; in ``replay``/``ips`` the logged
ones when the action matches the log, else 0), ``accepted``, ``valid_action``, ``propensity``,
``logged_action`` and ``row``; with logs also ``matched`` (action equals the logged one). In
``full``, ``dm`` and ``dr`` modes also ``oracle_reward`` and ``best_action`` (best allowed action by
exact reward in ``full``, by the reward model in ``dm``/``dr``); in ``full`` mode ``all_rewards``
(m,), every model's reward on the row.

Example:
    >>> import numpy as np
    >>> from router.data.schema import Outcomes
    >>> o = Outcomes(prompt_ids=["a", "b"], prompts=["hi", "2+2?"], models=["small", "big"],
    ...              quality=[[1, 1], [0, 1]], cost=[[0.0, 0.5], [0.0, 0.5]])
    >>> env = ReplayEnv(np.eye(2, dtype=np.float32), o, lam=1.0)
    >>> obs, info = env.reset(seed=0, options={"row": 1})
    >>> obs["features"], obs["action_mask"]
    (array([0., 1.], dtype=float32), array([1, 1], dtype=int8))
    >>> _, reward, terminated, truncated, info = env.step(1)
    >>> reward, terminated, info["oracle_reward"], info["best_action"]
    (0.5, True, 0.5, 1)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from router.context import policy_context
from router.data.schema import Outcomes
from router.errors import ConfigError

__all__ = ["LoggedFeedback", "ReplayData", "ReplayEnv", "REWARD_MODES"]

REWARD_MODES: tuple[str, ...] = ("full", "replay", "ips", "dm", "dr")
ORDERS: tuple[str, ...] = ("random", "sequential")


@dataclass(frozen=True, eq=False)
class LoggedFeedback:
    """Bandit feedback as production logs it: one chosen model per request.

    Attributes:
        action: (n,) int index of the chosen model.
        propensity: (n,) probability the logging policy gave that choice, in (0, 1].
        quality: (n,) observed quality in [0, 1]; NaN where feedback is missing.
        cost: (n,) USD of the call.
        latency: (n,) seconds of the call, or None (treated as 0).

    Example:
        >>> fb = LoggedFeedback(action=[0, 1], propensity=[0.5, 0.5], quality=[1.0, float("nan")],
        ...                     cost=[0.0, 0.1])
        >>> fb.n_rows
        2
    """

    action: Any
    propensity: Any
    quality: Any
    cost: Any
    latency: Any = None

    def __post_init__(self) -> None:
        action = np.asarray(self.action)
        if action.ndim != 1:
            raise ConfigError(f"LoggedFeedback.action must be 1-D (n,), got shape {action.shape}.")
        n = action.shape[0]
        if not np.issubdtype(action.dtype, np.integer):
            if not np.all(np.isfinite(action)) or not np.all(action == np.round(action)):
                raise ConfigError("LoggedFeedback.action must hold integer model indices.")
        arrays: dict[str, np.ndarray | None] = {"action": action.astype(np.int64)}
        for name in ("propensity", "quality", "cost", "latency"):
            value = getattr(self, name)
            if value is None:
                if name != "latency":
                    raise ConfigError(f"LoggedFeedback.{name} is required.")
                arrays[name] = None
                continue
            arr = np.asarray(value, dtype=np.float64)
            if arr.shape != (n,):
                raise ConfigError(f"LoggedFeedback.{name} must have shape ({n},) like action, got {arr.shape}.")
            arrays[name] = arr
        p = arrays["propensity"]
        assert p is not None
        if not np.all((p > 0) & (p <= 1)):
            raise ConfigError("LoggedFeedback.propensity must be in (0, 1]; log the policy's probabilities.")
        for name in ("cost", "latency"):
            checked = arrays[name]
            if checked is not None and not np.all(np.isfinite(checked)):
                raise ConfigError(f"LoggedFeedback.{name} has NaN or infinite values; fill or drop those rows.")
        for name, value in arrays.items():
            if value is not None:
                value = value.copy()
                value.setflags(write=False)
            object.__setattr__(self, name, value)

    @property
    def n_rows(self) -> int:
        return int(self.action.shape[0])


class ReplayData:
    """The arrays both replay environments read; rewards of (row, action) pairs, vectorised.

    Built once from the constructor arguments of :class:`ReplayEnv` (see there); holds the
    observation features (n, d + k) float32, the masks (n, m) bool and the reward tables, and -- when
    it embedded the prompts itself -- the ``encoder``, ``preprocessor`` and raw ``embeddings``.
    """

    def __init__(
        self,
        embeddings: Any = None,
        outcomes: Outcomes | None = None,
        *,
        dataset: str | os.PathLike[str] | None = None,
        dataset_options: Mapping[str, Any] | None = None,
        log: Any = None,
        encoder: Any = "hashing",
        encoder_options: Mapping[str, Any] | None = None,
        strip_prefixes: bool = True,
        logged: LoggedFeedback | Mapping[str, Any] | None = None,
        model_names: Sequence[str] | None = None,
        prompt_length: Any = None,
        task_ids: Any = None,
        tenant_ids: Any = None,
        allowed: Any = None,
        timestamps: Any = None,
        lam: float = 0.0,
        mu: float = 0.0,
        reward_mode: str | None = None,
        q_hat: Any = None,
        order: str = "random",
        dm_folds: int = 2,
        dm_ridge: float = 1.0,
        invalid_action_penalty: float | None = None,
        seed: int = 0,
    ) -> None:
        from envs.sources import resolve_source

        if order not in ORDERS:  # settings first: nothing is loaded or encoded for a bad one
            raise ConfigError(f"order must be one of {ORDERS}, got {order!r}.")
        for name, value in (("lam", lam), ("mu", mu)):
            if not np.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}.")
        src = resolve_source(embeddings, outcomes, dataset=dataset, dataset_options=dataset_options, log=log,
                             logged=logged, model_names=model_names, timestamps=timestamps, encoder=encoder,
                             encoder_options=encoder_options, strip_prefixes=strip_prefixes)
        outcomes, logged, timestamps = src.outcomes, src.logged, src.timestamps
        if src.model_names is not None:
            model_names = src.model_names
        emb = np.asarray(src.embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise ConfigError(f"embeddings must be a non-empty 2-D array (n, d), got shape {emb.shape}.")
        if not np.isfinite(emb).all():
            raise ConfigError("embeddings contain NaN or infinite values; clean them before building the env.")
        n = emb.shape[0]
        #: what the environment was built from (the encoder and stripper when it embedded the prompts)
        self.outcomes = outcomes
        self.embeddings = emb
        self.encoder = src.encoder
        self.preprocessor = src.preprocessor
        self.prompt_lengths = src.prompt_lengths
        self.lam = float(lam)
        self.mu = float(mu)
        self.order = order
        self.invalid_action_penalty = invalid_action_penalty

        if outcomes is not None:
            if outcomes.n_prompts != n:
                raise ConfigError(f"outcomes has {outcomes.n_prompts} rows but embeddings has {n}.")
            mode = reward_mode or "full"
            if mode != "full":
                raise ConfigError(
                    f"reward_mode {mode!r} is for logged feedback; with full outcomes use reward_mode='full'."
                )
            self.model_names: tuple[str, ...] = tuple(outcomes.models)
            m = len(self.model_names)
            quality = np.asarray(outcomes.quality, dtype=np.float64)
            cost = np.asarray(outcomes.cost, dtype=np.float64)
            latency = np.zeros((n, m)) if outcomes.latency is None else np.asarray(outcomes.latency, np.float64)
            if timestamps is None and outcomes.timestamps is not None:
                timestamps = outcomes.timestamps
        else:
            fb = logged if isinstance(logged, LoggedFeedback) else LoggedFeedback(**dict(logged or {}))
            if fb.n_rows != n:
                raise ConfigError(f"logged feedback has {fb.n_rows} rows but embeddings has {n}.")
            mode = reward_mode or "replay"
            if mode not in REWARD_MODES or mode == "full":
                raise ConfigError(
                    f"reward_mode for logged feedback must be one of {REWARD_MODES[1:]}, got {mode!r}."
                )
            if model_names is None:
                raise ConfigError("model_names is required with logged feedback (index -> model name).")
            self.model_names = tuple(str(x) for x in model_names)
            m = len(self.model_names)
            if fb.action.min() < 0 or fb.action.max() >= m:
                raise ConfigError(f"logged action indices must be in [0, {m}); got {fb.action.min()}..{fb.action.max()}.")
        if reward_mode is not None and reward_mode not in REWARD_MODES:
            raise ConfigError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}.")
        self.reward_mode = mode
        self.n_models = m

        mask = np.ones((n, m), dtype=bool) if allowed is None else np.asarray(allowed)
        if mask.shape != (n, m) or mask.dtype != np.bool_:
            raise ConfigError(f"allowed must be a bool array of shape (n, m) = ({n}, {m}), got {mask.dtype} {mask.shape}.")
        if not mask.any(axis=1).all():
            r = int(np.flatnonzero(~mask.any(axis=1))[0])
            raise ConfigError(f"allowed has no allowed model on row {r}; every request needs at least one.")

        # request features, all scaled into [-1, 1]: the context a router's policy reads
        features = policy_context(emb, prompt_length=prompt_length, task_ids=task_ids, tenant_ids=tenant_ids)

        keep = np.ones(n, dtype=bool)
        self.logged_action = np.full(n, -1, dtype=np.int64)
        self.propensity = np.ones(n)
        if logged is None:
            reward_all = quality - self.lam * cost - self.mu * latency
            self.quality_t, self.cost_t, self.latency_t = quality, cost, latency
        else:
            keep = np.isfinite(fb.quality)
            if not keep.any():
                raise ConfigError("no logged row has quality feedback (all NaN); nothing to replay.")
            rows = np.arange(n)
            if not mask[rows, fb.action].all():
                r = int(np.flatnonzero(~mask[rows, fb.action])[0])
                raise ConfigError(f"row {r}: the logged action is not in `allowed`; fix the mask or the log.")
            self.logged_action = fb.action.copy()
            self.propensity = fb.propensity.copy()
            lat = np.zeros(n) if fb.latency is None else fb.latency
            q_log = np.where(keep, fb.quality, 0.0)
            self.q_log, self.c_log, self.l_log = q_log, fb.cost.copy(), lat.copy()
            self.r_log = q_log - self.lam * fb.cost - self.mu * lat
            reward_all = np.full((n, m), np.nan)
            self.quality_t = self.cost_t = self.latency_t = reward_all
            if mode in ("dm", "dr"):
                from router.ope import CrossFitRewardModel

                rm = CrossFitRewardModel(n_folds=dm_folds, kind="ridge", alpha=dm_ridge, seed=seed)
                xk, ak = features[keep], fb.action[keep]
                if q_hat is not None:
                    qh = np.asarray(q_hat, dtype=np.float64)
                    if qh.shape != (n, m) or not np.isfinite(qh).all():
                        raise ConfigError(f"q_hat must be a finite (n, m) = ({n}, {m}) array, got {qh.shape}.")
                else:
                    qk = rm.fit_predict(xk, ak, q_log[keep], n_actions=m)
                    qh = np.empty((n, m))
                    qh[keep] = qk
                    qh[~keep] = qk.mean(axis=0)
                ch = rm.fit_predict(xk, ak, fb.cost[keep], n_actions=m)
                lh = rm.fit_predict(xk, ak, lat[keep], n_actions=m)
                c_full = np.zeros((n, m))
                l_full = np.zeros((n, m))
                c_full[keep], l_full[keep] = ch, lh
                self.quality_t, self.cost_t, self.latency_t = qh, c_full, l_full
                reward_all = qh - self.lam * c_full - self.mu * l_full
        self.n_skipped = int((~keep).sum())
        self.rows = np.flatnonzero(keep)
        if timestamps is not None:
            ts = np.asarray(timestamps)
            if ts.shape != (n,):
                raise ConfigError(f"timestamps must have shape ({n},), got {ts.shape}.")
            self.rows = self.rows[np.argsort(ts[self.rows], kind="stable")]
        self.features = features
        self.mask = mask
        self.mask_i8 = mask.astype(np.int8)
        self.reward_all = reward_all
        masked = np.where(mask, reward_all, -np.inf)
        self.best_action = np.where(np.isfinite(masked).any(axis=1), np.argmax(masked, axis=1), -1)
        self.oracle = np.where(self.best_action >= 0, masked.max(axis=1), np.nan)

    @property
    def n_rows(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def rewards(self, rows: np.ndarray, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Reward and its parts for ``rows`` (b,) served ``actions`` (b,); all outputs (b,)."""
        b = rows.shape[0]
        valid = self.mask[rows, actions]
        if not valid.all() and self.invalid_action_penalty is None:
            j = int(np.flatnonzero(~valid)[0])
            raise ConfigError(
                f"action {int(actions[j])} ({self.model_names[int(actions[j])]}) is masked out for row "
                f"{int(rows[j])}; choose among obs['action_mask'] or set invalid_action_penalty."
            )
        mode = self.reward_mode
        accepted = np.ones(b, dtype=bool)
        if mode == "full":
            q, c, lat = (t[rows, actions] for t in (self.quality_t, self.cost_t, self.latency_t))
            reward = self.reward_all[rows, actions]
        else:
            match = actions == self.logged_action[rows]
            p = self.propensity[rows]
            if mode in ("replay", "ips"):
                q = np.where(match, self.q_log[rows], 0.0)
                c = np.where(match, self.c_log[rows], 0.0)
                lat = np.where(match, self.l_log[rows], 0.0)
                r_log = self.r_log[rows]
                reward = np.where(match, r_log, 0.0) if mode == "replay" else np.where(match, r_log / p, 0.0)
                if mode == "replay":
                    accepted = match
            else:
                q, c, lat = (t[rows, actions] for t in (self.quality_t, self.cost_t, self.latency_t))
                reward = self.reward_all[rows, actions]
                if mode == "dr":
                    la = self.logged_action[rows]
                    corr = (self.r_log[rows] - self.reward_all[rows, la]) / p
                    reward = reward + np.where(match, corr, 0.0)
        if not valid.all():
            assert self.invalid_action_penalty is not None
            reward = np.where(valid, reward, float(self.invalid_action_penalty))
        out = {
            "reward": reward.astype(np.float64),
            "quality": np.asarray(q, dtype=np.float64),
            "cost": np.asarray(c, dtype=np.float64),
            "latency": np.asarray(lat, dtype=np.float64),
            "oracle_reward": self.oracle[rows],
            "best_action": self.best_action[rows],
            "accepted": accepted,
            "valid_action": valid,
            "propensity": self.propensity[rows],
            "logged_action": self.logged_action[rows],
            "row": rows.astype(np.int64),
        }
        if mode != "full":
            out["matched"] = actions == self.logged_action[rows]
        if mode in ("replay", "ips"):  # no reward model: the oracle is unknown
            del out["oracle_reward"], out["best_action"]
        return out

    def observation_space(self) -> spaces.Dict:
        return spaces.Dict(
            {
                "features": spaces.Box(-1.0, 1.0, shape=(self.dim,), dtype=np.float32),
                "action_mask": spaces.MultiBinary(self.n_models),
            }
        )


class ReplayEnv(gym.Env[dict[str, np.ndarray], np.int64]):
    """Replay one logged request per episode; see the module docstring for modes and spaces.

    Give the data one way: ``dataset``, ``outcomes`` (with or without ``embeddings``), ``log``, or
    ``embeddings`` with ``logged``.

    Args:
        embeddings: (n, d) float32 prompt embeddings, when precomputed (the env then encodes nothing).
        outcomes: full-information :class:`Outcomes` with n rows.
        dataset: a registered source name (``"synthetic"``, ``"demo"``, ``"routerbench"``, ...) or a path
            to outcomes in our format.
        dataset_options: keyword arguments of the source's loader (e.g. ``{"n_prompts": 500}``).
        log: a traffic log (path or polars DataFrame) in ``TRAFFIC_LOG_SCHEMA``, replayed as bandit feedback.
        encoder: registered encoder name (or an :class:`~router.base.Encoder`) that embeds the prompts
            when no ``embeddings`` are given; default ``"hashing"``.
        encoder_options: constructor arguments of the named encoder (e.g. ``{"dim": 128}``).
        strip_prefixes: strip long few-shot prefixes shared by many prompts before encoding.
        logged: :class:`LoggedFeedback` (or a mapping of its fields) with n rows, with ``embeddings``.
        model_names: (m,) names of the action indices; required with ``logged``, optional with ``log``.
        prompt_length: (n,) prompt lengths (tokens or characters), optional feature.
        task_ids: (n,) task ids (ints or strings), one-hot features; optional.
        tenant_ids: (n,) tenant ids (ints or strings), one-hot features; optional.
        allowed: (n, m) bool, False for models not allowed or not available; default all True.
        timestamps: (n,) sort key for ``order="sequential"`` (default: ``outcomes.timestamps`` or row order).
        lam: weight of cost, reward units per USD.
        mu: weight of latency, reward units per second.
        reward_mode: ``"full"`` (outcomes) or ``"replay"``/``"ips"``/``"dm"``/``"dr"`` (logged);
            default ``"full"`` with outcomes and ``"replay"`` with logs.
        q_hat: (n, m) predicted quality for ``dm``/``dr``; default a cross-fitted ridge per action.
        order: ``"random"`` or ``"sequential"``.
        dm_folds: folds of the cross-fitted reward model.
        dm_ridge: ridge penalty of the reward model.
        invalid_action_penalty: reward for a masked-out action; None (default) raises ConfigError.
        seed: seed of the reward model's folds (episodes are seeded through ``reset(seed=...)``).
        render_mode: unused (no rendering); accepted for the Gymnasium API.

    Example:
        >>> import gymnasium, envs
        >>> env = gymnasium.make("routing/Replay-v0", dataset="synthetic", dataset_options={"n_prompts": 50},
        ...                      encoder_options={"dim": 16}, lam=10.0)
        >>> obs, info = env.reset(seed=0)
        >>> obs["features"].shape, env.unwrapped.metadata["model_names"][0]
        ((16,), 'small-8b')
    """

    metadata: dict[str, Any] = {"render_modes": [], "model_names": ()}

    def __init__(self, embeddings: Any = None, outcomes: Outcomes | None = None, *,
                 render_mode: str | None = None, **kwargs: Any) -> None:
        self.data = ReplayData(embeddings, outcomes, **kwargs)
        self.metadata = {"render_modes": [], "model_names": self.data.model_names}
        self.render_mode = render_mode
        self.observation_space = self.data.observation_space()  # type: ignore[assignment]
        self.action_space = spaces.Discrete(self.data.n_models)
        self._row = -1
        self._cursor = 0

    @property
    def n_skipped(self) -> int:
        return self.data.n_skipped

    def _obs(self, row: int) -> dict[str, np.ndarray]:
        return {"features": self.data.features[row].copy(), "action_mask": self.data.mask_i8[row].copy()}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._cursor = 0
        if options and "row" in options:
            row = int(options["row"])
            if not 0 <= row < self.data.n_rows:
                raise ConfigError(f"options['row'] must be in [0, {self.data.n_rows}), got {row}.")
        elif self.data.order == "sequential":
            row = int(self.data.rows[self._cursor % self.data.rows.shape[0]])
            self._cursor += 1
        else:
            row = int(self.data.rows[self.np_random.integers(self.data.rows.shape[0])])
        self._row = row
        return self._obs(row), {"row": row}

    def step(
        self, action: Any
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._row < 0:
            raise ConfigError("call reset() before step().")
        a = int(action)
        if not 0 <= a < self.data.n_models:
            raise ConfigError(f"action must be in [0, {self.data.n_models}), got {action!r}.")
        parts = self.data.rewards(np.array([self._row]), np.array([a]))
        info: dict[str, Any] = {k: v[0].item() for k, v in parts.items()}
        if self.data.reward_mode == "full":
            info["all_rewards"] = self.data.reward_all[self._row].copy()
        reward = float(info.pop("reward"))
        return self._obs(self._row), reward, True, False, info
