"""Replay environments: Gymnasium API, determinism, masks, reward modes on hand-computed cases."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the ids)
from envs.replay import LoggedFeedback, ReplayEnv
from envs.vector import ReplayVectorEnv, make_vector
from router.data.schema import Outcomes
from router.errors import ConfigError


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
