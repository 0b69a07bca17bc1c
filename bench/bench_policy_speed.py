"""How fast the linear bandit policies train on RouterBench's shape, before and after the fast updates.

Run: ``python bench/bench_policy_speed.py`` -> ``bench/results/policy_speed.json`` and ``.md``.

Shape: RouterBench's 2,205 train rows, 384-dimensional MiniLM contexts (the env's features, clipped to
[-1, 1]), 11 models, reward ``quality - 50 * cost``, batches of 32 requests, rows in order -- the
loop of ``python -m training bandit`` (select, sample, env step, update; :func:`loop` is the same
sequence of calls as :func:`training.bandit.run`). The MiniLM vectors come from the cache that
``bench_bandits.py`` fills (they are encoded once if missing); ``--contexts synthetic`` uses random
unit vectors of the same shape instead (for speed only the shape matters).

Each configuration runs in its own subprocess with ``OPENBLAS_NUM_THREADS=1`` (one BLAS thread:
the machine's cores are shared, and two spinning BLAS threads slow everything several-fold):

* **before** -- the code of commit ``--before`` (default ``2e37b91``, the last one with the
  per-row Sherman--Morrison loop and D-dimensional Thompson draws), unpacked from git into a temporary
  folder and imported from there;
* **after** -- this checkout, full context (exact: same statistics, same decisions as a direct solve);
* **after, context_rank=R** -- this checkout, contexts reduced to their top ``R`` principal directions
  (``--context-rank`` of ``training bandit``), the fast setting.

Reported per run: rows per second of wall time and of the process's CPU time (the machine is shared,
so wall time depends on the neighbours; CPU time is the work done), the CPU seconds spent in each
phase, the mean reward (to show what the faster settings cost or gain), and a digest of the action
sequence (equal digests = identical trajectories). After the subprocess runs, ``training.bandit.run``
itself is timed on the same data (its ``train_rows_per_s``) for the fast configurations, as a
cross-check that the real entry point runs at the measured speed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LAM = 50.0
BATCH = 32


# --------------------------------------------------------------------------- data
def load_contexts(kind: str) -> tuple[np.ndarray, Any]:
    """(train contexts (2205, 384) float32, train Outcomes) of RouterBench."""
    sys.path.insert(0, str(ROOT / "bench"))
    from router.data.registry import load_source

    o = load_source("routerbench")
    tr = np.flatnonzero(np.asarray(o.split).astype(str) == "train")
    if kind == "synthetic":
        x = np.random.default_rng(0).normal(size=(len(tr), 384)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x, o.subset(tr)
    from bench_bandits import embed  # type: ignore[import-not-found]

    emb, _ = embed(o, tr, "minilm", None)
    return emb[tr], o.subset(tr)


# --------------------------------------------------------------------------- the measured loop
def loop(policy: Any, envs: Any, steps: int) -> dict[str, Any]:
    """``training bandit``'s loop: select, sample, propensity, env step, update; timed per phase."""
    cpu = dict.fromkeys(("select", "sample", "step", "update"), 0.0)
    obs, _ = envs.reset(seed=0)
    served, reward = 0, 0.0
    actions: list[np.ndarray] = []
    t0, c0 = time.perf_counter(), time.process_time()
    while served < steps:
        take = min(envs.num_envs, steps - served)
        c = time.process_time()
        probs = policy.select(obs["features"], obs["action_mask"].astype(bool))
        c1 = time.process_time()
        a = np.asarray(policy.sample(probs), dtype=np.int64)
        prop = probs[np.arange(a.shape[0]), a]
        c2 = time.process_time()
        ctx = obs["features"]
        obs, r, _, _, _ = envs.step(a)
        c3 = time.process_time()
        policy.update(ctx[:take], a[:take], r[:take], prop[:take])
        c4 = time.process_time()
        cpu["select"] += c1 - c
        cpu["sample"] += c2 - c1
        cpu["step"] += c3 - c2
        cpu["update"] += c4 - c3
        reward += float(r[:take].sum())
        actions.append(a[:take])
        served += take
    wall, cpu_total = time.perf_counter() - t0, time.process_time() - c0
    acts = np.concatenate(actions).astype(np.int64)
    return {"rows": served, "wall_s": wall, "cpu_s": cpu_total, "rows_per_s_wall": served / wall,
            "rows_per_s_cpu": served / cpu_total, "phase_cpu_s": cpu, "mean_reward": reward / served,
            "actions_sha1": hashlib.sha1(acts.tobytes()).hexdigest()[:12]}


def worker(tree: str, spec: dict[str, Any], data_path: str) -> dict[str, Any]:
    """Run one configuration with the packages of ``tree`` (this checkout or an older commit)."""
    sys.path.insert(0, tree)
    import scipy.linalg  # noqa: F401 -- a one-time import (the fast updates call LAPACK), not timed

    from envs.vector import make_vector
    from router.policies import EpsilonGreedy, LinearThompson, LinUCB

    with np.load(data_path, allow_pickle=False) as z:
        x, q, c = z["x"], z["quality"], z["cost"]
    from router.data.schema import Outcomes

    n, m = q.shape
    o = Outcomes(prompt_ids=[str(i) for i in range(n)], prompts=[""] * n,
                 models=[f"m{j}" for j in range(m)], quality=q, cost=c)
    if spec.get("entry"):
        return entry_point(x, o, spec)
    envs = make_vector(x, o, num_envs=BATCH, lam=LAM, order="sequential")
    d = envs.data.dim
    extra = {"context_rank": spec["rank"]} if spec.get("rank") else {}
    cls = {"linucb": LinUCB, "thompson": LinearThompson, "egreedy": EpsilonGreedy}[spec["policy"]]
    hp = {"linucb": {"alpha": 0.5}, "thompson": {"v": 0.1}, "egreedy": {"epsilon": 0.1}}[spec["policy"]]
    policy = cls(m, d, seed=0, **hp, **extra)
    if spec.get("rank"):
        policy.fit_basis(envs.data.features)
    return loop(policy, envs, int(spec["rows"]))


def entry_point(x: np.ndarray, outcomes: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Wall time of :func:`training.bandit.run` itself on these contexts (data loading and the router's
    cost model skipped; the env is built and the policy saved, as in a real run)."""
    import training.bandit as tb

    kw = {"context_rank": spec["rank"]} if spec.get("rank") else {}
    args = tb.Args(dataset="routerbench", policy=spec["policy"], steps=int(spec["rows"]), batch_size=BATCH, lam=LAM,
                   order="sequential", alpha=0.5, v=0.1, encoder="minilm",
                   out=tempfile.mkdtemp(prefix="bench_policy_speed_"), **kw)
    tb.load_data = lambda a: (outcomes, x, None)  # type: ignore[assignment]
    tb.save_router = lambda *a, **k: False  # type: ignore[assignment]
    t = time.perf_counter()
    metrics = tb.run(args)
    wall = time.perf_counter() - t
    return {"rows": int(metrics["steps"]), "run_wall_s": wall, "run_rows_per_s": metrics["steps"] / wall,
            "train_rows_per_s": metrics.get("train_rows_per_s"), "mean_reward": metrics["mean_policy_reward"]}


def run_sub(tree: Path, spec: dict[str, Any], data_path: str) -> dict[str, Any]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(tree), json.dumps(spec), data_path]
    out = subprocess.run(cmd, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"worker failed for {spec}:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def old_tree(commit: str, into: Path) -> Path:
    """Unpack ``router``, ``envs`` and ``training`` of ``commit`` into ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "router", "envs", "training"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


# --------------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    from bench.machine import cpu_model  # the project root is on sys.path once main() runs

    cpu = cpu_model("unknown")
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__, "blas_threads": 1,
            "load_average_at_start": list(os.getloadavg()),
            "note": "cores shared with other jobs; CPU-time rates are the work done, wall-time rates depend on "
                    "the neighbours"}


def write_markdown(doc: dict[str, Any], path: Path) -> None:
    mc = doc["machine"]
    lines = [
        "# Linear bandit policies: training speed (RouterBench shape)",
        "",
        f"Run {doc['date']} on {mc['cpu']} ({mc['cpu_count']} CPUs, {mc['platform']}), Python {mc['python']}, "
        f"numpy {mc['numpy']}, one BLAS thread; load average at start {mc['load_average_at_start'][0]:.1f} "
        f"({mc['note']}). Command: `{doc['command']}`.",
        "",
        doc["protocol"],
        "",
        "| policy | code | context | rows | rows/s (CPU) | rows/s (wall) | CPU s: select / sample / step / update "
        "| mean reward | actions digest | speed-up (CPU) |",
        "|---|---|---|---:|---:|---:|---|---:|---|---:|",
    ]
    for r in doc["runs"]:
        ph = r["phase_cpu_s"]
        lines.append(
            f"| {r['policy']} | {r['code']} | {r['context']} | {r['rows']} | {r['rows_per_s_cpu']:,.0f} "
            f"| {r['rows_per_s_wall']:,.0f} | {ph['select']:.2f} / {ph['sample']:.2f} / {ph['step']:.2f} / "
            f"{ph['update']:.2f} | {r['mean_reward']:.4f} | `{r['actions_sha1']}` | {r['speedup_cpu']:.1f}x |")
    if doc.get("entry_point"):
        lines += ["", "`training.bandit.run` itself on the same data, timed around the call (building the env, "
                  "the loop, writing metrics and the policy; loading data and fitting the router's cost model "
                  "skipped), wall time:", "",
                  "| policy | code | context | rows | rows/s, whole call (wall) | its loop's train_rows_per_s "
                  "| mean reward |", "|---|---|---|---:|---:|---:|---:|"]
        lines += [f"| {e['policy']} | {e['code']} | {e['context']} | {e['rows']} | {e['run_rows_per_s']:,.0f} "
                  f"| {'–' if e.get('train_rows_per_s') is None else format(e['train_rows_per_s'], ',.0f')} "
                  f"| {e['mean_reward']:.4f} |" for e in doc["entry_point"]]
    lines += ["", f"Total wall time {doc['wall_s']:.0f} s.", ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default="2e37b91", help="commit whose policies are the 'before' figures")
    p.add_argument("--before-rows", type=int, default=2205, help="rows replayed for the old code (it is slow)")
    p.add_argument("--context-rank", type=int, default=64)
    p.add_argument("--contexts", default="minilm", choices=("minilm", "synthetic"))
    p.add_argument("--policies", default="linucb,thompson,egreedy")
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)
    t_start = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    x, o = load_contexts(a.contexts)
    rows = x.shape[0]
    runs: list[dict[str, Any]] = []
    entry: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_path = str(Path(tmp) / "data.npz")
        np.savez(data_path, x=x, quality=np.asarray(o.quality), cost=np.asarray(o.cost))
        old = old_tree(a.before, Path(tmp) / "before")
        for pol in a.policies.split(","):
            configs = [("before", old, None, min(a.before_rows, rows)), ("after", ROOT, None, rows),
                       ("after", ROOT, a.context_rank, rows)]
            base = None
            for code, tree, rank, n in configs:
                res = run_sub(tree, {"policy": pol, "rank": rank, "rows": n}, data_path)
                label = "full (d=384)" if rank is None else f"context_rank={rank}"
                base = base or res["rows_per_s_cpu"]
                res.update(policy=pol, code=code if code == "after" else f"before ({a.before})", context=label,
                           speedup_cpu=res["rows_per_s_cpu"] / base)
                runs.append(res)
                print(f"{pol:9s} {code:6s} {label:16s} {res['rows_per_s_cpu']:9,.0f} rows/s CPU "
                      f"{res['rows_per_s_wall']:9,.0f} wall  reward {res['mean_reward']:.4f} {res['actions_sha1']}",
                      flush=True)
            if pol in ("linucb", "thompson"):
                for code, tree, rank, n in configs:
                    res = run_sub(tree, {"policy": pol, "rank": rank, "rows": n, "entry": True}, data_path)
                    res.update(policy=pol, code=code if code == "after" else f"before ({a.before})",
                               context="full (d=384)" if rank is None else f"context_rank={rank}")
                    entry.append(res)
                    print(f"{pol:9s} {code:6s} training.bandit.run {res['run_rows_per_s']:9,.0f} rows/s wall",
                          flush=True)
    doc = {
        "benchmark": "policy_speed",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python bench/bench_policy_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "protocol": (f"RouterBench train rows ({rows}) x 11 models, {a.contexts} contexts (d={x.shape[1]}), in row "
                     f"order, reward = quality - {LAM:g} * cost, batches of {BATCH}; the loop of `training bandit` "
                     "(select, sample, env step, update). Hyperparameters: LinUCB alpha 0.5, Thompson v 0.1 "
                     "(64 draws per row and action), epsilon 0.1, ridge 1. 'before' = the code of commit "
                     f"{a.before} run in the same benchmark; speed-up = CPU rows/s over that. Equal action digests "
                     "mean identical trajectories."),
        "runs": runs,
        "entry_point": entry,
        "wall_s": time.perf_counter() - t_start,
    }
    doc["machine"]["load_average_at_end"] = list(os.getloadavg())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "policy_speed.json").write_text(json.dumps(doc, indent=1))
    write_markdown(doc, out / "policy_speed.md")
    print(f"wrote {out / 'policy_speed.json'} and {out / 'policy_speed.md'}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], json.loads(sys.argv[3]), sys.argv[4])))
        raise SystemExit(0)
    raise SystemExit(main())
