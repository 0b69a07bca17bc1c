"""Bandit benchmark on RouterBench: regret in an in-order replay, test AIQ against the MLP, env speed.

Run: ``python bench/bench_bandits.py [--quick] [--encoder minilm|static|hashing]`` ->
``bench/results/bandits.json`` and ``bench/results/bandits.md`` (with the machine's details).
``--quick`` is a smoke run (hashing encoder, 512 replayed rows, one lambda, few bootstrap draws).

Data: ``load_source("routerbench")`` (3,150 prompts x 11 models, ``split`` column train/test).

* **Replay.** The 2,205 *train* rows are replayed once (``--epochs``) in row order through
  :func:`envs.vector.make_vector` (``order="sequential"``, batches of ``--batch`` requests; the
  policy picks for a whole batch, then learns from it). RouterBench has no timestamps, so
  "in order" means the order the loader gives; there is no real drift to meet. Full-information
  mode: the reward of the chosen model is exact, ``quality - lam * cost`` (lam in quality points
  per USD), and the env reports every model's reward so regret is exact. Each policy (``linucb``,
  ``thompson``, ``egreedy``, ``neural``; ``linucb@64`` and ``thompson@64`` learn on the replayed
  contexts' top 64 principal directions, as ``training bandit --context-rank 64`` does) runs cold and
  warm-started (``warm_start``) from the offline MLP's predictions. The warm start uses
  *cross-fitted* (``--folds``-fold, out-of-fold) MLP quality and cost predictions on the train rows, so no row's own label enters its pseudo-observation; the
  other folds' labels do (the MLP is fitted offline on logs gathered before the replay starts --
  this is lookahead the cold policies do not get, so compare warm runs with the MLP row, not with
  the cold runs alone). Recorded: cumulative reward, regret against the per-row oracle and
  against the best fixed model in hindsight, at checkpoints. The MLP's own greedy choices on the
  same rows (same out-of-fold predictions) are the reference row.
* **Test AIQ.** Each trained policy's quality estimate on the 945 *test* rows is
  ``q_hat = clip(expected_reward(x) + lam * c_hat, 0, 1)`` (``c_hat`` from a
  :class:`~router.cost_predictor.CostPredictor` fitted on train; exactly what
  :meth:`router.router.Router.predict` does with a policy inside), routed greedily with
  :class:`~router.decision.DecisionRule` over :func:`~router.router.default_lambda_grid` (81
  values); AIQ with percentile-bootstrap 95% intervals from :func:`router.metrics.evaluate_curves`,
  beside the offline embedding classifier (:class:`~router.predictors.MLPPredictor` fitted on train,
  same cost model and sweep) and the zero router. Ratios are policy AIQ / MLP AIQ.
* **Throughput.** ``ReplayEnv`` reset+step per second and ``ReplayVectorEnv`` rows per second
  (batch 32 and 256) on the RouterBench train rows, random actions; plus each policy's end-to-end
  replay speed (select + env step + update) in the replay table.

Embeddings: prefix-stripped prompts (:class:`~router.encoders.PrefixStripper` fitted on the train
split) through MiniLM (``all-MiniLM-L6-v2``), cached with :class:`~router.encoders.EmbeddingCache`
under ``~/.cache/llm-routing/bench`` (or ``$ROUTER_BENCH_CACHE``; the same store
``bench_routers.py`` fills). If the cache misses rows and ``--precomputed`` (default
``/tmp/exp/rb_strip.npy``, row order of ``load_source("routerbench")``) exists, its vectors fill the
cache instead of encoding, after a check that it agrees with the cached rows it overlaps.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CACHE_DIR = Path(os.environ.get("ROUTER_BENCH_CACHE", Path.home() / ".cache" / "llm-routing" / "bench"))
RESULTS = Path(__file__).resolve().parent / "results"
POLICY_KINDS = ("linucb", "linucb@64", "thompson", "thompson@64", "egreedy", "neural")
N_LAMBDAS = 81


# --------------------------------------------------------------------------- embeddings
def _encoder(kind: str) -> Any:
    """The encoder registered as ``kind`` (``minilm``, ``static``, ``hashing``), with its defaults."""
    from router.encoders import build_encoder

    return build_encoder(kind)


def _precomputed_encoder(inner: Any, table: dict[str, np.ndarray]) -> Any:
    """An Encoder with ``inner``'s kind and config (hence the same cache keys) that looks vectors up
    in a precomputed table; raises KeyError on a text it does not hold."""
    from router.base import Encoder

    class Precomputed(Encoder, register=False):  # borrows inner's kind: not a component of its own
        kind = inner.kind

        def get_config(self) -> dict[str, Any]:
            return inner.get_config()

        @property
        def dim(self) -> int:
            return inner.dim

        def encode(self, texts: list[str]) -> np.ndarray:
            return np.stack([table[t] for t in texts]).astype(np.float32)

    return Precomputed()


def embed(outcomes: Any, train_rows: np.ndarray, kind: str, precomputed: str | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Embeddings (n, d) of the prefix-stripped prompts (stripper fitted on ``train_rows``)."""
    from router.encoders import EmbeddingCache, PrefixStripper
    from router.router import prompt_texts

    t0 = time.perf_counter()
    texts = prompt_texts(list(outcomes.prompts))
    pre = PrefixStripper().fit([texts[i] for i in train_rows])
    stripped = pre.transform(texts)
    inner = _encoder(kind)
    path = str(CACHE_DIR / kind)
    cache = EmbeddingCache(inner, path=path)
    source = "cache"
    if kind == "minilm" and precomputed and os.path.exists(precomputed):
        # Which rows would miss? (read the store through a second cache object, encode nothing)
        probe = EmbeddingCache(inner, path=path)
        probe._load_disk()  # noqa: SLF001 -- read-only peek at the store
        missing = [i for i, t in enumerate(stripped) if probe.key(t) not in probe._mem]  # noqa: SLF001
        if missing:
            pre_emb = np.load(precomputed)
            hit = [i for i in range(len(stripped)) if i not in set(missing)][:200]
            ok = pre_emb.shape == (len(stripped), inner.dim)
            if ok and hit:
                ok = bool(np.abs(probe.encode([stripped[i] for i in hit]) - pre_emb[hit]).max() < 1e-4)
            if ok:
                table = {stripped[i]: pre_emb[i] for i in missing}
                cache = EmbeddingCache(_precomputed_encoder(inner, table), path=path)
                source = f"precomputed {precomputed} for {len(missing)} rows, stored in the cache"
    emb = cache.encode(stripped)
    if source == "cache" and cache.misses:
        source = f"encoded {cache.misses} rows, cached"
    info = {"encoder": kind, "dim": int(emb.shape[1]), "cache_dir": path, "source": source,
            "cache_hits": int(cache.hits), "cache_misses": int(cache.misses),
            "prefixes_stripped": len(pre.prefixes_ or []), "seconds": round(time.perf_counter() - t0, 2)}
    return emb.astype(np.float32), info


# --------------------------------------------------------------------------- policies
def make_policy(kind: str, m: int, d: int, hp: argparse.Namespace, seed: int, contexts: np.ndarray | None = None) -> Any:
    """The registered policy ``kind`` with the benchmark's hyperparameters its constructor takes; ``name@R`` is a
    linear policy on the top R principal directions of ``contexts`` (``training bandit --context-rank R``)."""
    import inspect

    from router import registry
    from router.policies import build_policy

    name, _, rank = kind.partition("@")
    params = inspect.signature(registry.get("policy", name).__init__).parameters
    values = {"alpha": hp.neural_alpha if name == "neural" else hp.alpha, "v": hp.v, "epsilon": hp.epsilon,
              "ridge": hp.ridge, "hidden": hp.hidden, "context_rank": int(rank) if rank else None}
    pol = build_policy(name, m, d, seed=seed, **{k: v for k, v in values.items() if k in params})
    return pol.fit_basis(contexts) if rank else pol


def replay(policy: Any, emb: np.ndarray, outcomes: Any, lam: float, *, rows: int, epochs: int,
           batch: int, seed: int, n_checkpoints: int = 10) -> dict[str, Any]:
    """Run ``policy`` over the first ``rows`` rows, in order, ``epochs`` times; cumulative curves."""
    from envs.loop import run_policy
    from envs.vector import make_vector

    envs = make_vector(emb[:rows], outcomes.subset(np.arange(rows)), num_envs=batch, lam=lam, order="sequential")
    m = envs.data.n_models
    total = rows * epochs
    marks = sorted(set(int(round(total * k / n_checkpoints)) for k in range(1, n_checkpoints + 1)))
    pol = orc = 0.0
    fixed = np.zeros(m)
    counts = np.zeros(m, dtype=np.int64)
    served = 0
    cps: list[dict[str, float]] = []
    t0, c0 = time.perf_counter(), time.process_time()
    for ep in range(epochs):
        # the one policy-run loop; each epoch resets the cursor back to row 0
        for b in run_policy(policy, envs, rows, seed=seed + ep):
            # checkpoints may fall inside a batch: walk its rows
            r, o, a, allr = b.reward, b.info["oracle_reward"], b.action, b.info["all_rewards"]
            for i in range(a.shape[0]):
                pol += float(r[i])
                orc += float(o[i])
                fixed += allr[i]
                counts[a[i]] += 1
                served += 1
                if marks and served == marks[0]:
                    marks.pop(0)
                    cps.append({"step": served, "policy_reward": pol, "oracle_reward": orc,
                                "regret": orc - pol, "regret_vs_best_fixed": float(fixed.max()) - pol})
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    best = int(np.argmax(fixed))
    names = list(envs.data.model_names)
    return {"rows": served, "policy_reward": pol, "oracle_reward": orc, "best_fixed_reward": float(fixed[best]),
            "best_fixed_model": names[best], "regret": orc - pol, "regret_vs_best_fixed": float(fixed[best]) - pol,
            "mean_reward": pol / served, "wall_s": round(wall, 3), "rows_per_s": served / wall,
            "cpu_s": round(cpu, 3), "rows_per_cpu_s": served / cpu,
            "action_shares": {names[j]: round(float(counts[j] / served), 4) for j in range(m) if counts[j]},
            "checkpoints": cps}


def fixed_choice_replay(choice: np.ndarray, emb: np.ndarray, outcomes: Any, lam: float, rows: int,
                        epochs: int) -> dict[str, Any]:
    """Regret of a fixed per-row choice (the MLP's greedy decisions) on the same rows."""
    from envs.replay import ReplayData

    data = ReplayData(emb[:rows], outcomes.subset(np.arange(rows)), lam=lam, order="sequential")
    idx = np.arange(rows)
    r = data.reward_all[idx, choice[:rows]]
    pol = float(r.sum()) * epochs
    orc = float(data.oracle[idx].sum()) * epochs
    fixed = data.reward_all[idx].sum(axis=0) * epochs
    best = int(np.argmax(fixed))
    return {"rows": rows * epochs, "policy_reward": pol, "oracle_reward": orc, "best_fixed_reward": float(fixed[best]),
            "best_fixed_model": data.model_names[best], "regret": orc - pol,
            "regret_vs_best_fixed": float(fixed[best]) - pol, "mean_reward": pol / (rows * epochs)}


# --------------------------------------------------------------------------- offline classifier
def make_mlp(quick: bool, seed: int = 0) -> Any:
    from router.predictors import MLPPredictor

    return MLPPredictor(seed=seed, epochs=20) if quick else MLPPredictor(seed=seed)


def crossfit(emb: np.ndarray, lengths: np.ndarray, outcomes: Any, folds: int, quick: bool) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold MLP quality (n, m) and CostPredictor cost (n, m) for the rows of ``outcomes``."""
    from router.cost_predictor import CostPredictor

    n, m = outcomes.quality.shape
    fold = np.random.default_rng(0).permutation(n) % folds
    q, c = np.empty((n, m)), np.empty((n, m))
    for k in range(folds):
        te, tr = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        sub = outcomes.subset(tr)
        q[te] = make_mlp(quick).fit(emb[tr], sub.quality).predict(emb[te])
        c[te] = CostPredictor().fit(emb[tr], lengths[tr], sub).predict(emb[te], lengths[te])
    return q, c


def sweep(q_hat: np.ndarray, c_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy choices (S, n) over the default lambda grid (S,) of the predictions."""
    from router.decision import DecisionRule
    from router.router import default_lambda_grid

    lams = default_lambda_grid(q_hat, c_hat, n=N_LAMBDAS)
    choices = np.stack([DecisionRule(lam=float(lv)).probabilities(q_hat, c_hat).probabilities.argmax(axis=1)
                        for lv in lams])
    return lams, choices


# --------------------------------------------------------------------------- throughput
def throughput(emb: np.ndarray, outcomes: Any, lam: float, quick: bool) -> dict[str, Any]:
    from envs.replay import ReplayEnv
    from envs.vector import make_vector

    n, m = outcomes.quality.shape
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"data": f"RouterBench train rows n={n}, d={emb.shape[1]}, m={m}, full-information, lam={lam:g}"}
    env = ReplayEnv(emb, outcomes, lam=lam, order="sequential")
    env.reset(seed=0)
    steps = 2000 if quick else 20000
    acts = rng.integers(m, size=steps)
    t = time.perf_counter()
    for a in acts:
        env.reset()
        env.step(int(a))
    out["single_env_steps_per_s"] = steps / (time.perf_counter() - t)
    for b in (32, 256):
        venv = make_vector(emb, outcomes, num_envs=b, lam=lam, order="sequential")
        venv.reset(seed=0)
        k = max(20, (steps * 5) // b)
        va = rng.integers(m, size=(k, b))
        t = time.perf_counter()
        for a in va:
            venv.step(a)
        out[f"vector_env_rows_per_s_batch{b}"] = k * b / (time.perf_counter() - t)
    return out


# --------------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "blas_threads": 1,
            "note": "CPU only; cores shared with other jobs, so speeds are indicative"}


def _f(x: Any, nd: int = 1) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def write_markdown(doc: dict[str, Any], path: Path) -> None:
    mc = doc["machine"]
    lines = [
        "# Bandit benchmark (RouterBench)",
        "",
        f"Run {doc['date']} on {mc['platform']}, {mc['cpu_count']} CPUs ({mc['note']}), Python {mc['python']}, "
        f"numpy {mc['numpy']}, torch {mc['torch']}. Command: `{doc['command']}`.",
        "",
        f"Embeddings: {doc['embeddings']['encoder']} (d={doc['embeddings']['dim']}) of prefix-stripped prompts; "
        f"{doc['embeddings']['source']}.",
        "",
        "## Replay of the train split, in row order",
        "",
        doc["protocol"]["replay"],
        "",
        "| lam (/USD) | policy | warm start | rows | mean reward | regret vs oracle | regret vs best fixed "
        "| best fixed model | rows/s (wall) | rows/s (CPU) |",
        "|---:|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in doc["replay"]:
        lines.append(
            f"| {r['lam']:g} | {r['policy']} | {r['warm']} | {r['rows']} | {r['mean_reward']:.4f} | {r['regret']:.1f} "
            f"| {r['regret_vs_best_fixed']:.1f} | {r['best_fixed_model']} | {_f(r.get('rows_per_s'), 0)} "
            f"| {_f(r.get('rows_per_cpu_s'), 0)} |")
    lines += ["", "Oracle mean reward per lam: " + ", ".join(
        f"lam={k}: {v['oracle_mean_reward']:.4f} (best fixed {v['best_fixed_model']} {v['best_fixed_mean_reward']:.4f})"
        for k, v in doc["replay_reference"].items()), ""]
    a = doc["aiq"]
    lines += [
        "## AIQ on the test split",
        "",
        doc["protocol"]["aiq"],
        "",
        f"Zero router AIQ {a['zero_router']['aiq']:.4f}; oracle quality {a['oracle']['quality']:.4f} at "
        f"${a['oracle']['cost']:.6f}/request; best single model {a['best_single_model']}.",
        "",
        "| router | trained at lam | warm start | AIQ | 95% CI | AIQ / MLP AIQ | max quality |",
        "|---|---:|---|---:|---|---:|---:|",
    ]
    for r in a["routers"]:
        ci = r["aiq_ci"]
        lines.append(f"| {r['router']} | {'' if r['lam'] is None else format(r['lam'], 'g')} | {r['warm']} "
                     f"| {r['aiq']:.4f} | [{_f(ci[0], 4)}, {_f(ci[1], 4)}] | {r['ratio_vs_mlp']:.3f} "
                     f"| {_f(r['max_quality'], 4)} |")
    t = doc["throughput"]
    lines += [
        "",
        "## Environment throughput",
        "",
        t["data"] + ", random actions.",
        "",
        "| environment | rate |",
        "|---|---:|",
        f"| ReplayEnv reset+step | {t['single_env_steps_per_s']:,.0f} steps/s |",
        f"| ReplayVectorEnv, batch 32 | {t['vector_env_rows_per_s_batch32']:,.0f} rows/s |",
        f"| ReplayVectorEnv, batch 256 | {t['vector_env_rows_per_s_batch256']:,.0f} rows/s |",
        "",
        f"Total wall time {doc['wall_s']:.0f} s.",
        "",
    ]
    path.write_text("\n".join(lines))


# --------------------------------------------------------------------------- main
def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: hashing encoder, 512 rows, one lam")
    p.add_argument("--encoder", default=None, help="minilm (default) | static | hashing")
    p.add_argument("--lams", default=None, help="comma-separated cost weights, quality points per USD (default 0,50,200)")
    p.add_argument("--policies", default=",".join(POLICY_KINDS))
    p.add_argument("--epochs", type=int, default=1, help="passes over the train rows")
    p.add_argument("--rows", type=int, default=None, help="replay only the first ROWS train rows")
    p.add_argument("--batch", type=int, default=32, help="requests per vector-env step")
    p.add_argument("--no-warm", action="store_true", help="skip the warm-started runs")
    p.add_argument("--warm-weight", type=float, default=0.2, help="weight of each warm-start pseudo-observation")
    p.add_argument("--folds", type=int, default=5, help="cross-fitting folds of the warm-start MLP")
    p.add_argument("--alpha", type=float, default=0.5, help="LinUCB bonus width")
    p.add_argument("--neural-alpha", type=float, default=0.5, help="NeuralLinear bonus width")
    p.add_argument("--v", type=float, default=0.1, help="Thompson posterior scale")
    p.add_argument("--epsilon", type=float, default=0.1)
    p.add_argument("--ridge", type=float, default=1.0)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap replicates (default 500, quick 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precomputed", default="/tmp/exp/rb_strip.npy",
                   help="MiniLM embeddings of the stripped prompts in load_source order, to fill the cache")
    p.add_argument("--out", default=None,
                   help="results directory (default bench/results; --quick: /tmp/bench_bandits_quick)")
    a = p.parse_args(argv)
    a.encoder = a.encoder or ("hashing" if a.quick else "minilm")
    a.lams = [float(x) for x in (a.lams or ("50" if a.quick else "0,50,200")).split(",")]
    a.rows = a.rows or (512 if a.quick else None)
    a.bootstrap = a.bootstrap if a.bootstrap is not None else (50 if a.quick else 500)
    if a.quick:
        a.folds = min(a.folds, 2)
    a.out = a.out or ("/tmp/bench_bandits_quick" if a.quick else str(RESULTS))
    return a


def main(argv: list[str] | None = None) -> int:
    import torch
    from threadpoolctl import threadpool_limits

    from router.context import policy_context, prompt_lengths, prompt_texts
    from router.cost_predictor import CostPredictor
    from router.data.registry import load_source
    from router.metrics import evaluate_curves

    args = parse(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    import scipy.linalg  # noqa: F401 -- scipy bundles a second BLAS; load it so the limit covers it too

    threadpool_limits(1, user_api="blas")  # cores are shared: two spinning BLAS threads slow the policies down
    t_start = time.perf_counter()
    o = load_source("routerbench")
    split = np.asarray(o.split).astype(str)
    tr, te = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    otr, ote = o.subset(tr), o.subset(te)
    emb, emb_info = embed(o, tr, args.encoder, args.precomputed)
    print(f"embeddings {emb.shape} ({emb_info['source']}, {emb_info['seconds']} s)", flush=True)
    lengths = prompt_lengths(prompt_texts(list(o.prompts)))  # as Router.predict gets them
    x_tr, x_te, l_tr, l_te = emb[tr], emb[te], lengths[tr], lengths[te]
    rows = min(args.rows or len(tr), len(tr))
    m = len(o.models)
    d = x_tr.shape[1]
    policies = [p for p in args.policies.split(",") if p]

    # offline classifier: on all train rows (for test AIQ) and cross-fitted (warm start, reference)
    t = time.perf_counter()
    mlp = make_mlp(args.quick).fit(x_tr, otr.quality)
    cost_model = CostPredictor().fit(x_tr, l_tr, otr)
    q_te_mlp, c_te = mlp.predict(x_te), cost_model.predict(x_te, l_te)
    q_oof, c_oof = crossfit(x_tr, l_tr, otr, args.folds, args.quick)
    print(f"MLP fitted + {args.folds}-fold cross-fit in {time.perf_counter() - t:.0f} s", flush=True)

    replay_rows: list[dict[str, Any]] = []
    reference: dict[str, Any] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {"mlp (offline classifier)": sweep(q_te_mlp, c_te)}
    meta: dict[str, dict[str, Any]] = {"mlp (offline classifier)": {"lam": None, "warm": "–"}}
    ctx_te = policy_context(x_te)  # what the policy reads (the env's observation features)
    for lam in args.lams:
        mlp_choice = np.argmax(q_oof - lam * c_oof, axis=1)
        ref = fixed_choice_replay(mlp_choice, x_tr, otr, lam, rows, args.epochs)
        reference[f"{lam:g}"] = {"oracle_mean_reward": ref["oracle_reward"] / ref["rows"],
                                 "best_fixed_model": ref["best_fixed_model"],
                                 "best_fixed_mean_reward": ref["best_fixed_reward"] / ref["rows"]}
        replay_rows.append({"lam": lam, "policy": "mlp (offline, cross-fitted, greedy)", "warm": "–", **ref})
        for kind in policies:
            for warm in ([False] if args.no_warm else [False, True]):
                pol = make_policy(kind, m, d, args, args.seed, contexts=np.clip(x_tr[:rows], -1.0, 1.0))
                tw = time.perf_counter()
                if warm:
                    pol.warm_start(policy_context(x_tr[:rows]), q_oof[:rows], lam=lam, cost=c_oof[:rows],
                                   weight=args.warm_weight)
                warm_s = time.perf_counter() - tw
                res = replay(pol, x_tr, otr, lam, rows=rows, epochs=args.epochs, batch=args.batch, seed=args.seed)
                tag = "mlp" if warm else "no"
                res.update(lam=lam, policy=kind, warm=tag, warm_start_s=round(warm_s, 2))
                replay_rows.append(res)
                reward_te = np.asarray(pol.expected_reward(ctx_te))
                q_hat = np.clip(reward_te + lam * c_te, 0.0, 1.0)
                name = f"{kind} lam={lam:g}" + (" +warm" if warm else "")
                curves[name] = sweep(q_hat, c_te)
                meta[name] = {"lam": lam, "warm": tag}
                print(f"lam={lam:g} {kind:8s} warm={tag:3s} mean reward {res['mean_reward']:.4f} "
                      f"regret {res['regret']:.1f} vs-fixed {res['regret_vs_best_fixed']:.1f} "
                      f"({res['wall_s']:.1f} s)", flush=True)

    t = time.perf_counter()
    ev = evaluate_curves(ote, curves, n_bootstrap=args.bootstrap, seed=args.seed, per_task=False)
    mj = ev.to_metrics_json("routerbench", "test")
    print(f"evaluate_curves in {time.perf_counter() - t:.0f} s", flush=True)
    mlp_aiq = mj["routers"]["mlp (offline classifier)"]["aiq"]
    routers = []
    for name, r in mj["routers"].items():
        routers.append({"router": name, **meta[name], "aiq": r["aiq"], "aiq_ci": r["aiq_ci"],
                        "ratio_vs_mlp": r["aiq"] / mlp_aiq, "max_quality": r["max_quality"],
                        "saving_at_best_pct": r["saving_at_best_pct"]})
    routers.append({"router": "zero router", "lam": None, "warm": "–", "aiq": mj["zero_router"]["aiq"],
                    "aiq_ci": mj["zero_router"]["aiq_ci"], "ratio_vs_mlp": mj["zero_router"]["aiq"] / mlp_aiq,
                    "max_quality": None, "saving_at_best_pct": None})

    thr = throughput(x_tr, otr, args.lams[0], args.quick)
    doc = {
        "benchmark": "bandits",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python bench/bench_bandits.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "args": {k: v for k, v in vars(args).items()},
        "data": {"source": "routerbench", "n_prompts": o.n_prompts, "n_train": len(tr), "n_test": len(te),
                 "replayed_rows": rows, "models": list(o.models),
                 "order": "row order of load_source('routerbench') train split (the source has no timestamps)"},
        "embeddings": emb_info,
        "protocol": {
            "replay": (f"Train rows {rows} x {args.epochs} epoch(s), in row order (no timestamps), "
                       f"vector env batch {args.batch}, full information, reward = quality - lam * cost (USD). "
                       f"Regret vs oracle = sum of (best model's reward - chosen model's reward); vs best fixed = "
                       f"best single model in hindsight over the served rows. Warm start: "
                       f"{args.folds}-fold out-of-fold MLP quality and CostPredictor cost on the replayed rows, "
                       f"pseudo-observation weight {args.warm_weight} (uses other rows' labels before they are "
                       f"served: lookahead). 'mlp' rows: greedy on the same out-of-fold predictions. "
                       f"Hyperparameters: LinUCB alpha={args.alpha}, Thompson v={args.v}, epsilon={args.epsilon}, "
                       f"ridge={args.ridge}, NeuralLinear hidden={args.hidden} alpha={args.neural_alpha}; "
                       f"'@64': the linear policy on the top 64 principal directions of the replayed rows' "
                       f"contexts (training bandit --context-rank 64). rows/s: per second of wall time and "
                       f"of the process's CPU time for the whole replay (select, sample, env step, update, "
                       f"bookkeeping) on a shared machine, one BLAS thread; "
                       f"policy_speed.md compares CPU-time rates with the code before the fast updates."),
            "aiq": (f"Test rows {len(te)}. Policies: q_hat = clip(expected_reward(x) + lam * c_hat, 0, 1), "
                    f"c_hat from CostPredictor fitted on train; MLP: MLPPredictor fitted on train; every router "
                    f"routed greedily over default_lambda_grid (n={N_LAMBDAS}); AIQ over the single models' cost "
                    f"span, percentile bootstrap ({args.bootstrap} replicates) 95% CI."),
        },
        "replay": replay_rows,
        "replay_reference": reference,
        "aiq": {"zero_router": mj["zero_router"], "oracle": mj["oracle"], "best_single_model": mj["best_single_model"],
                "single_models": mj["single_models"], "routers": routers},
        "throughput": thr,
        "wall_s": time.perf_counter() - t_start,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bandits"
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=1, default=float))
    write_markdown(doc, out / f"{stem}.md")
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')} in {doc['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
