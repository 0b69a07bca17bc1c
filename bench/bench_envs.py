"""Throughput of the replay environments: single-env steps/s and vector-env rows/s.

Run: ``python bench/bench_envs.py`` -> ``bench/results/envs.json`` (with the machine's details).
Data: synthetic full-information outcomes, n=5000 requests, d=384 embeddings, m=11 models.

Rates are per second of wall time (``*_per_s``) and per second of the process's CPU time
(``*_per_cpu_s``): on a machine whose cores are shared, wall-time rates fall with the neighbours'
load (recorded as the load average at start and end), CPU-time rates measure the work itself.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs.replay import LoggedFeedback, ReplayEnv  # noqa: E402
from envs.vector import make_vector  # noqa: E402
from router.data.schema import Outcomes  # noqa: E402


def _data(n: int = 5000, d: int = 384, m: int = 11, seed: int = 0) -> tuple[np.ndarray, Outcomes]:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    o = Outcomes(prompt_ids=[str(i) for i in range(n)], prompts=[""] * n, models=[f"m{j}" for j in range(m)],
                 quality=rng.random((n, m)), cost=rng.random((n, m)) * 1e-3, latency=rng.random((n, m)))
    return emb, o


def bench_single(env: ReplayEnv, steps: int) -> tuple[float, float]:
    """(steps per wall second, steps per CPU second) of reset + step."""
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    acts = rng.integers(env.action_space.n, size=steps)
    t, c = time.perf_counter(), time.process_time()
    for a in acts:
        env.reset()
        env.step(int(a))
    return steps / (time.perf_counter() - t), steps / (time.process_time() - c)


def bench_vector(emb: np.ndarray, o: Outcomes | None, batch: int, steps: int, **kw: object) -> tuple[float, float]:
    """(rows per wall second, rows per CPU second) of vector steps."""
    env = make_vector(emb, o, num_envs=batch, **kw)  # type: ignore[arg-type]
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    acts = rng.integers(env.data.n_models, size=(steps, batch))
    t, c = time.perf_counter(), time.process_time()
    for a in acts:
        env.step(a)
    return steps * batch / (time.perf_counter() - t), steps * batch / (time.process_time() - c)


def main() -> None:
    emb, o = _data()
    n, m = o.quality.shape
    rng = np.random.default_rng(1)
    logged = LoggedFeedback(action=rng.integers(m, size=n), propensity=np.full(n, 1 / m),
                            quality=rng.random(n), cost=rng.random(n) * 1e-3, latency=rng.random(n))
    import scipy.linalg  # noqa: F401 -- scipy bundles a second BLAS; load it so the limit covers it too
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")  # shared cores: spinning BLAS threads would time the neighbours
    load_start = list(os.getloadavg())
    single = {
        "full": bench_single(ReplayEnv(emb, o, lam=1.0, mu=0.1), 20_000),
        "ips": bench_single(ReplayEnv(emb, logged=logged, model_names=o.models, reward_mode="ips"), 20_000),
    }
    vector = {f"full_batch{b}": bench_vector(emb, o, b, max(200, 200_000 // b), lam=1.0) for b in (32, 256, 1024)}
    t, c = time.perf_counter(), time.process_time()
    ReplayEnv(emb, logged=logged, model_names=o.models, reward_mode="dr")
    dr_build, dr_build_cpu = time.perf_counter() - t, time.process_time() - c
    vector["dr_batch256"] = bench_vector(emb, None, 256, 500, logged=logged, model_names=o.models, reward_mode="dr")
    results: dict[str, object] = {
        "single_env_steps_per_s": {k: v[0] for k, v in single.items()},
        "single_env_steps_per_cpu_s": {k: v[1] for k, v in single.items()},
        "vector_env_rows_per_s": {k: v[0] for k, v in vector.items()},
        "vector_env_rows_per_cpu_s": {k: v[1] for k, v in vector.items()},
        "dr_env_build_s": dr_build,
        "dr_env_build_cpu_s": dr_build_cpu,
        "data": {"n": n, "d": emb.shape[1], "m": m},
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    results["machine"] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas_threads": 1,
        "load_average_at_start": load_start,
        "load_average_at_end": list(os.getloadavg()),
        "note": "cores shared with other jobs: wall-time rates depend on their load, CPU-time rates less so",
    }
    out = Path(__file__).resolve().parent / "results" / "envs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
