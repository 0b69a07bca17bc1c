"""Replay environments: Gymnasium API, determinism, masks, reward modes on hand-computed cases."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import polars as pl
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the ids)
from envs.replay import LoggedFeedback, ReplayEnv
from envs.vector import ReplayVectorEnv, make_vector
from router.data.schema import Outcomes
from router.errors import ConfigError, SourceNotFoundError


def _outcomes(n: int = 40, m: int = 3, seed: int = 0, latency: bool = True) -> Outcomes:
    rng = np.random.default_rng(seed)
    return Outcomes(
        prompt_ids=[f"p{i}" for i in range(n)],
        prompts=[f"prompt {i}" for i in range(n)],
        models=[f"m{j}" for j in range(m)],
        quality=rng.random((n, m)),
        cost=rng.random((n, m)) * 0.01,
        latency=rng.random((n, m)) if latency else None,
    )


def _emb(n: int = 40, d: int = 5, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _logged() -> dict:
    # 3 rows, 2 models; row 2 lacks feedback
    return {
        "embeddings": np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32),
        "logged": LoggedFeedback(action=[0, 1, 0], propensity=[0.5, 0.25, 0.5],
                                 quality=[1.0, 0.8, np.nan], cost=[0.1, 0.2, 0.0], latency=[1.0, 2.0, 0.0]),
        "model_names": ["a", "b"],
        "lam": 1.0,
        "mu": 0.1,
    }


@pytest.mark.parametrize("mode", ["full", "replay", "ips", "dm", "dr"])
def test_check_env_passes(mode: str) -> None:
    if mode == "full":
        env = gym.make("routing/Replay-v0", embeddings=_emb(), outcomes=_outcomes(), lam=1.0, mu=0.1)
    else:
        env = gym.make("routing/Replay-v0", reward_mode=mode, **_logged())
    check_env(env.unwrapped, skip_render_check=True)


def test_request_features_and_bounds() -> None:
    emb = _emb() * 5  # out of [-1, 1]: clipped
    env = ReplayEnv(emb, _outcomes(), prompt_length=np.arange(40) * 10, task_ids=["math", "code"] * 20,
                    tenant_ids=np.arange(40) % 3)
    obs, _ = env.reset(seed=0, options={"row": 3})
    assert obs["features"].shape == (5 + 1 + 2 + 3,)
    assert env.observation_space.contains(obs)
    np.testing.assert_array_equal(obs["features"][:5], np.clip(emb[3], -1, 1))
    np.testing.assert_allclose(obs["features"][5], np.log1p(30) / np.log1p(390), rtol=1e-6)
    np.testing.assert_array_equal(obs["features"][6:8], [1, 0])  # row 3 is "code", sorted first
    np.testing.assert_array_equal(obs["features"][8:], [1, 0, 0])


def test_same_seed_same_trajectory() -> None:
    def roll(seed: int) -> list:
        env = ReplayEnv(_emb(), _outcomes(), lam=1.0)
        env.action_space.seed(seed)
        out = []
        for i in range(20):
            obs, info = env.reset(seed=seed if i == 0 else None)
            _, r, *_ = env.step(env.action_space.sample())
            out.append((info["row"], r, obs["features"].tobytes()))
        return out

    assert roll(3) == roll(3)
    assert roll(3) != roll(4)


def test_sequential_order_follows_timestamps() -> None:
    ts = np.array([3, 1, 2, 0])
    env = ReplayEnv(_emb(4), _outcomes(4), order="sequential", timestamps=ts)
    rows = [env.reset(seed=0 if i == 0 else None)[1]["row"] for i in range(6)]
    assert rows == [3, 1, 2, 0, 3, 1]


def test_observations_are_copies() -> None:
    env = ReplayEnv(_emb(), _outcomes())
    obs, _ = env.reset(seed=0, options={"row": 0})
    obs["features"][:] = 9
    obs["action_mask"][:] = 0
    obs2, _ = env.reset(options={"row": 0})
    assert obs2["features"].max() <= 1 and obs2["action_mask"].all()


def test_reward_parts_in_info_full() -> None:
    o = _outcomes()
    env = ReplayEnv(_emb(), o, lam=2.0, mu=0.5)
    env.reset(seed=0, options={"row": 7})
    _, r, terminated, truncated, info = env.step(1)
    q, c, lat = o.quality[7, 1], o.cost[7, 1], o.latency[7, 1]
    assert terminated and not truncated
    assert r == pytest.approx(q - 2.0 * c - 0.5 * lat)
    assert (info["quality"], info["cost"], info["latency"]) == pytest.approx((q, c, lat))
    all_r = o.quality[7] - 2.0 * o.cost[7] - 0.5 * o.latency[7]
    assert info["oracle_reward"] == pytest.approx(all_r.max())
    assert info["best_action"] == int(all_r.argmax())
    np.testing.assert_allclose(info["all_rewards"], all_r)


def test_mask_respected() -> None:
    o = _outcomes(4, 3)
    allowed = np.array([[True, False, True]] * 4)
    q = np.array(o.quality)
    env = ReplayEnv(_emb(4), o, allowed=allowed)
    obs, _ = env.reset(seed=0, options={"row": 0})
    np.testing.assert_array_equal(obs["action_mask"], [1, 0, 1])
    _, _, _, _, info = env.step(0)
    assert info["best_action"] in (0, 2)
    assert info["oracle_reward"] == pytest.approx(max(q[0, 0], q[0, 2]))
    env.reset(options={"row": 0})
    with pytest.raises(ConfigError, match="masked out"):
        env.step(1)
    pen = ReplayEnv(_emb(4), o, allowed=allowed, invalid_action_penalty=-1.0)
    pen.reset(seed=0, options={"row": 0})
    _, r, _, _, info = pen.step(1)
    assert r == -1.0 and info["valid_action"] is False


def test_replay_and_ips_by_hand() -> None:
    kw = _logged()
    r0 = 1.0 - 1.0 * 0.1 - 0.1 * 1.0  # logged reward of row 0
    env = ReplayEnv(reward_mode="replay", **kw)
    assert env.n_skipped == 1
    env.reset(seed=0, options={"row": 0})
    _, r, _, _, info = env.step(0)
    assert r == pytest.approx(r0) and info["accepted"] is True and info["propensity"] == 0.5
    env.reset(options={"row": 0})
    _, r, _, _, info = env.step(1)
    assert r == 0.0 and info["accepted"] is False and info["matched"] is False and info["quality"] == 0.0
    assert "oracle_reward" not in info
    ips = ReplayEnv(reward_mode="ips", **kw)
    ips.reset(seed=0, options={"row": 1})
    _, r, _, _, info = ips.step(1)
    assert r == pytest.approx((0.8 - 0.2 - 0.2) / 0.25)
    ips.reset(options={"row": 1})
    assert ips.step(0)[1] == 0.0
    # rows without feedback are never served
    rows = {ips.reset(seed=s)[1]["row"] for s in range(30)}
    assert rows == {0, 1}


def test_dm_and_dr_with_given_q_hat() -> None:
    kw = _logged()
    q_hat = np.array([[0.6, 0.7], [0.5, 0.9], [0.1, 0.2]])
    dm = ReplayEnv(reward_mode="dm", q_hat=q_hat, **kw)
    dm.reset(seed=0, options={"row": 1})
    _, r_dm, _, _, info = dm.step(0)
    assert info["quality"] == pytest.approx(0.5)
    assert r_dm == pytest.approx(0.5 - info["cost"] - 0.1 * info["latency"])
    dr = ReplayEnv(reward_mode="dr", q_hat=q_hat, **kw)
    dr.reset(seed=0, options={"row": 1})
    _, r_other, *_ = dr.step(0)  # not the logged action: DR == DM
    assert r_other == pytest.approx(r_dm)
    dr.reset(options={"row": 1})
    _, r_dr, _, _, info = dr.step(1)
    r_hat_logged = dr.data.reward_all[1, 1]
    r_log = 0.8 - 0.2 - 0.2
    assert r_dr == pytest.approx(r_hat_logged + (r_log - r_hat_logged) / 0.25)


def test_dm_fitted_reward_model_is_cross_fitted() -> None:
    rng = np.random.default_rng(0)
    n = 200
    x = rng.normal(size=(n, 3)).astype(np.float32)
    a = rng.integers(2, size=n)
    q = np.clip(0.5 + 0.3 * x[:, 0] * (2 * a - 1), 0, 1)
    env = ReplayEnv(x, logged={"action": a, "propensity": np.full(n, 0.5), "quality": q, "cost": np.zeros(n)},
                    model_names=["a", "b"], reward_mode="dm")
    r_hat = env.data.reward_all
    assert r_hat.shape == (n, 2) and np.isfinite(r_hat).all()
    assert np.corrcoef(r_hat[np.arange(n), a], q)[0, 1] > 0.8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reward_mode": "ips"}, "for logged feedback"),
        ({"order": "shuffled"}, "order must be"),
        ({"lam": -1.0}, "lam must be"),
        ({"allowed": np.zeros((40, 3), dtype=bool)}, "no allowed model"),
        ({"allowed": np.ones((40, 2), dtype=bool)}, "allowed must be"),
    ],
)
def test_constructor_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ReplayEnv(_emb(), _outcomes(), **kwargs)


def test_constructor_errors_logged() -> None:
    kw = _logged()
    with pytest.raises(ConfigError, match="exactly one"):
        ReplayEnv(kw["embeddings"])
    with pytest.raises(ConfigError, match="model_names is required"):
        ReplayEnv(kw["embeddings"], logged=kw["logged"])
    with pytest.raises(ConfigError, match="propensity must be in"):
        LoggedFeedback(action=[0], propensity=[0.0], quality=[1.0], cost=[0.0])
    with pytest.raises(ConfigError, match="NaN"):
        ReplayEnv(np.full((40, 5), np.nan), _outcomes())


def test_vector_env_batches_and_no_autoreset_waste() -> None:
    o = _outcomes()
    venv = make_vector(_emb(), o, num_envs=8, order="sequential", lam=1.0, mu=0.5)
    obs, info = venv.reset(seed=0)
    np.testing.assert_array_equal(info["row"], np.arange(8))
    assert obs["features"].shape == (8, 5) and obs["action_mask"].shape == (8, 3)
    assert venv.observation_space.contains(obs)
    seen = []
    for _ in range(5):
        obs, r, term, trunc, info = venv.step(np.zeros(8, dtype=np.int64))
        seen.extend(info["row"].tolist())
        assert term.all() and not trunc.any() and r.shape == (8,)
        np.testing.assert_allclose(r, o.quality[info["row"], 0] - o.cost[info["row"], 0] - 0.5 * o.latency[info["row"], 0])
    assert seen == list(range(40))  # every row served once per pass, none wasted


def test_vector_env_matches_single_env_rewards_and_make_vec() -> None:
    o = _outcomes()
    venv = gym.make_vec("routing/Replay-v0", num_envs=4, embeddings=_emb(), outcomes=o, lam=1.0)
    assert isinstance(venv, ReplayVectorEnv)
    single = ReplayEnv(_emb(), o, lam=1.0)
    _, info0 = venv.reset(seed=5)
    _, r, _, _, info = venv.step(np.array([0, 1, 2, 0]))
    for k in range(4):
        single.reset(options={"row": int(info["row"][k])})
        assert single.step(int([0, 1, 2, 0][k]))[1] == pytest.approx(r[k])
    np.testing.assert_array_equal(info0["row"], info["row"])
    # same seed -> same batches
    v2 = make_vector(_emb(), o, num_envs=4, lam=1.0)
    _, i2 = v2.reset(seed=5)
    np.testing.assert_array_equal(i2["row"], info0["row"])


def test_vector_env_logged_ips() -> None:
    venv = ReplayVectorEnv(num_envs=2, order="sequential", reward_mode="ips", **_logged())
    venv.reset(seed=0)
    _, r, _, _, info = venv.step(np.array([0, 0]))
    np.testing.assert_allclose(r, [(1.0 - 0.1 - 0.1) / 0.5, 0.0])
    np.testing.assert_array_equal(info["accepted"], [True, True])


# --------------------------------------------------------------------------- made by name
def check_vector_env(venv, seed: int = 7) -> None:
    """Gymnasium 1.4 has no checker for vector environments; these are :func:`check_env`'s checks
    applied to a batch: spaces batched from the single ones, reset/step types and bounds, seeded
    determinism, fresh arrays on every call."""
    from gymnasium.vector.utils import batch_space

    n = venv.num_envs
    assert venv.observation_space == batch_space(venv.single_observation_space, n)
    assert venv.action_space == batch_space(venv.single_action_space, n)
    obs, info = venv.reset(seed=seed)
    assert venv.observation_space.contains(obs) and isinstance(info, dict)
    venv.action_space.seed(seed)
    actions = venv.action_space.sample()
    obs2, reward, terminated, truncated, info = venv.step(actions)
    assert venv.observation_space.contains(obs2)
    assert reward.shape == (n,) and np.issubdtype(reward.dtype, np.floating) and np.isfinite(reward).all()
    assert terminated.dtype == np.bool_ and truncated.dtype == np.bool_ and terminated.shape == (n,)
    # same seed -> same observations and rewards; the returned arrays are not reused
    again, _ = venv.reset(seed=seed)
    for key in obs:
        np.testing.assert_array_equal(again[key], obs[key])
    again["features"][:] = 5.0
    obs3, reward3, *_ = venv.step(actions)
    np.testing.assert_array_equal(obs3["features"], obs2["features"])
    np.testing.assert_array_equal(reward3, reward)


def test_make_by_name_passes_check_env() -> None:
    env = gym.make("routing/Replay-v0", dataset="synthetic", lam=20.0, mu=0.1)
    check_env(env.unwrapped, skip_render_check=True)
    data = env.unwrapped.data
    assert data.outcomes.source == "synthetic" and data.n_rows == 2000
    assert data.encoder.kind == "hashing" and data.preprocessor is not None
    obs, _ = env.reset(seed=0, options={"row": 4})
    o = data.outcomes
    _, r, *_ = env.step(2)
    assert r == pytest.approx(o.quality[4, 2] - 20.0 * o.cost[4, 2] - 0.1 * o.latency[4, 2])


def test_make_vec_by_name_native_and_sync() -> None:
    kw = {"dataset": "synthetic", "dataset_options": {"n_prompts": 300, "seed": 2},
          "encoder_options": {"dim": 32}, "lam": 10.0}
    venv = gym.make_vec("routing/Replay-v0", num_envs=6, **kw)
    assert isinstance(venv, ReplayVectorEnv) and venv.data.dim == 32
    check_vector_env(venv)
    sync = gym.make_vec("routing/Replay-v0", num_envs=2, vectorization_mode="sync", **kw)
    for sub in sync.envs:
        check_env(sub.unwrapped, skip_render_check=True)
    # the native and the per-request env score a row alike
    _, info = venv.reset(seed=1)
    _, r, _, _, info = venv.step(np.arange(6) % 5)
    single = sync.envs[0].unwrapped
    for k in range(6):
        single.reset(options={"row": int(info["row"][k])})
        assert single.step(k % 5)[1] == pytest.approx(r[k])


@pytest.mark.parametrize("vector", [False, True])
def test_by_name_same_seed_same_trajectory(vector: bool) -> None:
    def roll(seed: int) -> list:
        kw = {"dataset": "synthetic", "dataset_options": {"n_prompts": 200}, "encoder_options": {"dim": 16}}
        env = gym.make_vec("routing/Replay-v0", num_envs=4, **kw) if vector else gym.make("routing/Replay-v0", **kw)
        env.action_space.seed(seed)
        out = []
        for i in range(10):
            obs, info = env.reset(seed=seed if i == 0 else None)
            _, r, *_ = env.step(env.action_space.sample())
            out.append((np.asarray(info["row"]).tolist(), np.asarray(r).tolist(), obs["features"].tobytes()))
        return out

    assert roll(3) == roll(3)
    assert roll(3) != roll(4)


def test_env_contexts_are_what_a_router_gives_its_policy() -> None:
    """One context function: the env's observation of a prompt equals the context a router built from the
    env's encoder and prefix stripper hands its policy -- here with a long few-shot prefix stripped."""
    from router.context import embed_prompts, policy_context
    from router.cost_predictor import CostPredictor
    from router.policies import LinUCB
    from router.router import Router

    shots = "Answer like these examples. " + " ".join(f"Q{i}: what is {i} plus {i}? A: {2 * i}." for i in range(30))
    n = 60
    rng = np.random.default_rng(0)
    prompts = [f"{shots}\nQ: {w} {i}" for i, w in zip(range(n), rng.choice(["tell", "explain", "compute"], n))]
    o = Outcomes(prompt_ids=[str(i) for i in range(n)], prompts=prompts, models=["a", "b"],
                 quality=rng.random((n, 2)), cost=rng.random((n, 2)) * 1e-3)
    env = ReplayEnv(outcomes=o, encoder="hashing", encoder_options={"dim": 64})
    assert env.data.preprocessor.prefixes_  # the shared block was learnt and stripped
    router = Router(o.models, env.data.encoder, LinUCB(2, 64), CostPredictor().fit(
        env.data.embeddings, env.data.prompt_lengths, o), preprocessor=env.data.preprocessor)
    emb, _ = router.embed(prompts[:5])
    np.testing.assert_array_equal(router._policy_context(emb), env.data.features[:5])
    np.testing.assert_array_equal(policy_context(embed_prompts(prompts[:5], env.data.encoder,
                                                               preprocessor=env.data.preprocessor)[0]),
                                  env.data.features[:5])
    unstripped = policy_context(env.data.encoder.encode(prompts[:5]))
    assert not np.allclose(unstripped, env.data.features[:5])


def test_env_from_traffic_log(tmp_path) -> None:
    from router.data.logs import append_log
    from router.data.reduce import to_traffic_log
    from router.data.synthetic import generate

    o = generate(120, seed=1).outcomes
    log, probs = to_traffic_log(o, policy="epsilon-greedy", scores=o.quality, epsilon=0.5, seed=0)
    log = log.with_columns(quality=pl.when(pl.int_range(pl.len()) % 10 == 3).then(None).otherwise(pl.col("quality")))
    path = tmp_path / "log.jsonl"
    append_log(log, path)
    env = gym.make("routing/Replay-v0", log=str(path), reward_mode="ips", lam=20.0, encoder_options={"dim": 32})
    check_env(env.unwrapped, skip_render_check=True)
    data = env.unwrapped.data
    assert data.model_names == tuple(sorted(o.models)) and data.n_skipped == 12
    row = 5
    logged = data.model_names.index(log["chosen_model"][row])
    env.reset(seed=0, options={"row": row})
    _, r, _, _, info = env.step(logged)
    expect = (log["quality"][row] - 20.0 * log["cost"][row] - 0.0 * log["latency_s"][row]) / log["propensity"][row]
    assert r == pytest.approx(expect) and info["matched"] is True
    # the pool order can be given; the vector env takes a log too (a DataFrame here), in time order
    venv = gym.make_vec("routing/Replay-v0", num_envs=4, log=log, model_names=o.models, order="sequential",
                        encoder_options={"dim": 32})
    assert venv.metadata["model_names"] == tuple(o.models)
    _, info = venv.reset(seed=0)
    assert info["row"].tolist() == [0, 1, 2, 4]  # row 3 has no feedback yet


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dataset": "synthetic", "embeddings": np.zeros((3, 2))}, ConfigError, "do not also give `embeddings`"),
        ({"dataset": "synthetic", "log": "x.jsonl"}, ConfigError, "exactly one of `dataset`"),
        ({}, ConfigError, "got none"),
        ({"dataset": "no-such-source"}, SourceNotFoundError, "Registered names"),
        ({"dataset": "synthetic", "encoder": "word2vec"}, ConfigError, r"unknown encoder 'word2vec'; choose one of"),
        ({"dataset": "synthetic", "encoder_options": {"width": 3}}, ConfigError, "Bad arguments for encoder 'hashing'"),
        ({"embeddings": np.zeros((40, 5)), "outcomes": _outcomes(), "encoder_options": {"dim": 3}}, ConfigError,
         "encoder_options apply only"),
        ({"dataset_options": {"n_prompts": 5}, "outcomes": _outcomes()}, ConfigError, "dataset_options apply only"),
        ({"logged": _logged()["logged"], "model_names": ["a", "b"]}, ConfigError, "needs its `embeddings`"),
    ],
)
def test_by_name_errors(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        gym.make("routing/Replay-v0", **kwargs)
