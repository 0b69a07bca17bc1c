"""Router benchmark: every quality predictor and baseline on RouterBench and RouteLLM's two-model sets.

Run: ``python bench/bench_routers.py [--quick]`` (``--quick``: fewer bootstrap replicates, RouteLLM
MMLU subsampled to 3,000 prompts, fewer latency samples). ``--embed-only`` just fills the cache.

* **RouterBench rows** (``load_source("routerbench")``, 11 models): train on ``split == "train"``,
  score on ``split == "test"``. Every router is the same :class:`~router.router.Router` (MiniLM
  embeddings of prefix-stripped prompts, :class:`~router.cost_predictor.CostPredictor` costs, greedy
  rule over an 81-value lambda grid); the "+ stats" rows append :class:`~router.features.PromptStats`
  (weight 0.2, the ``training fit`` default). Baselines: zero router (random mixing of single models),
  always-best, cheapest, a task-aware per-task mean (uses the task label, which routers do not get),
  and the oracle. AIQ, cost saving at the best single model's quality and at 95% of it, with
  percentile bootstrap 95% intervals (:func:`router.metrics.evaluate_curves`).
* **RouteLLM MMLU / GSM8K** (two models, no split): 5-fold grouped cross-fitting
  (:func:`router.data.splits.kfold_groups`; prompt statistics standardised on each fold's training
  prompts); score = predicted strong minus weak quality; APGR,
  CPT(50%), CPT(80%) beside the published figures of RouteLLM (Ong et al. 2024, "RouteLLM:
  Learning to Route LLMs with Preference Data", best published router CPT(50%): 35.4% MMLU,
  33.6% GSM8K).
* **Latency**: ``Router.route([prompt])`` p50 / p99 per prompt and batch throughput (prompts/s on
  1,000 prompts) of the saved-and-reloaded best router, with the static (model2vec) and MiniLM encoders.

Embeddings are cached on disk (``EmbeddingCache`` under ``~/.cache/llm-routing/bench`` or
``$ROUTER_BENCH_CACHE``). Writes ``bench/results/routers.json`` and ``bench/results/routers.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

CACHE_DIR = Path(os.environ.get("ROUTER_BENCH_CACHE", Path.home() / ".cache" / "llm-routing" / "bench"))
RESULTS = Path(__file__).resolve().parent / "results"

#: RouteLLM (Ong et al. 2024), best published router's CPT(50%) in percent of strong-model calls.
ROUTELLM_PUBLISHED_CPT50 = {"routellm-mmlu": 35.4, "routellm-gsm8k": 33.6}
N_LAMBDAS = 81


def source_texts(outcomes, fit_rows=None):
    """Prefix-stripped texts (stripper learned on ``fit_rows``, all rows when None) and the stripper."""
    from router.encoders import PrefixStripper
    from router.router import prompt_texts

    texts = prompt_texts(list(outcomes.prompts))
    fit_texts = texts if fit_rows is None else [texts[i] for i in fit_rows]
    pre = PrefixStripper().fit(fit_texts)
    return pre.transform(texts), pre


def minilm_cached():
    from router.encoders import EmbeddingCache, SentenceTransformerEncoder

    return EmbeddingCache(SentenceTransformerEncoder(), path=str(CACHE_DIR / "minilm"))


#: Weight of the prompt statistics (:class:`router.features.PromptStats`) in the "+ stats" rows; the
#: default of ``python -m training fit``.
STATS_WEIGHT = 0.2


def predictors(dataset: str) -> dict[str, tuple[object, float | None]]:
    """Router name -> (quality predictor, prompt-statistics weight or None)."""
    from router.predictors import (
        EnsemblePredictor,
        KNNPredictor,
        LogisticPredictor,
        MatrixFactorizationPredictor,
        MLPPredictor,
    )

    if dataset == "routerbench":
        return {
            "knn-40": (KNNPredictor(k=40), None),
            "logistic": (LogisticPredictor(), None),
            "mlp": (MLPPredictor(seed=0), None),
            "matrix-factorization": (MatrixFactorizationPredictor(seed=0), None),
            "ensemble": (EnsemblePredictor(seed=0), None),
            "mlp + stats": (MLPPredictor(seed=0), STATS_WEIGHT),
            "ensemble + stats (best)": (EnsemblePredictor(seed=0), STATS_WEIGHT),
        }
    # RouteLLM sets are 5-10x larger; the MLP baseline is capped at 30 epochs to keep the run short.
    return {
        "knn-40": (KNNPredictor(k=40), None),
        "mlp": (MLPPredictor(epochs=30, seed=0), None),
        "ensemble": (EnsemblePredictor(seed=0), None),
        "knn-40 + stats": (KNNPredictor(k=40), STATS_WEIGHT),
        "mlp + stats": (MLPPredictor(epochs=30, seed=0), STATS_WEIGHT),
        "ensemble + stats (best)": (EnsemblePredictor(seed=0), STATS_WEIGHT),
    }


def sweep_choices(router, emb, lengths):
    from router.router import default_lambda_grid

    q, c, _ = router.predict(embeddings=emb, lengths=lengths)
    lams = default_lambda_grid(q, c, n=N_LAMBDAS)
    lams, choices, _, qhat = router.sweep(lambdas=lams, embeddings=emb, lengths=lengths)
    return lams, choices, qhat


def lambda_curve(q, c):
    """Greedy choices over the lambda grid for given quality / cost matrices (baselines, oracle)."""
    from router.decision import DecisionRule
    from router.router import default_lambda_grid

    lams = default_lambda_grid(q, c, n=N_LAMBDAS)
    return lams, np.stack([DecisionRule(lam=float(lv)).probabilities(q, c).probabilities.argmax(1) for lv in lams])


# ---------------------------------------------------------------------------------------- RouterBench
def bench_routerbench(args, enc) -> tuple[dict, object]:
    from router.data.registry import load_source
    from router.metrics import Curve, evaluate_curves
    from router.router import Router

    o = load_source("routerbench")
    tr = np.flatnonzero(o.split == "train")
    te = np.flatnonzero(o.split == "test")
    otr, ote = o.subset(tr), o.subset(te)
    texts, _ = source_texts(o, tr)
    t = time.perf_counter()
    emb = enc.encode(texts)
    embed_s = time.perf_counter() - t
    from router.router import prompt_lengths, prompt_texts

    lengths = prompt_lengths(prompt_texts(list(o.prompts)))  # the unit Router.fit gives its cost model
    curves, fit_s, best_router = {}, {}, None
    for name, (pred, stats) in predictors("routerbench").items():
        t = time.perf_counter()
        r = Router.fit(otr, encoder=enc, predictor=pred, embeddings=emb[tr], prompt_stats=stats)
        x_te = emb[te] if stats is None else r.embed(list(ote.prompts), encode_with=enc)[0]
        lams, ch, qhat = sweep_choices(r, x_te, lengths[te])
        fit_s[name] = time.perf_counter() - t
        curves[name] = Curve(settings=lams, choices=ch, predicted_quality=qhat)
        print(f"  routerbench {name}: {fit_s[name]:.1f}s", flush=True)
        if name.endswith("(best)"):
            best_router = r
    n_te, m = ote.quality.shape
    best = int(np.argmax(otr.quality.mean(0)))  # best single model chosen on train
    cheap = int(np.argmin(otr.cost.mean(0)))
    curves["baseline: always-best"] = Curve(settings=[0.0], choices=np.full((1, n_te), best))
    curves["baseline: cheapest"] = Curve(settings=[0.0], choices=np.full((1, n_te), cheap))
    # task-aware: per-task mean quality on train, predicted costs -- uses task labels routers do not get
    tm = np.zeros((n_te, m))
    tasks = np.asarray(o.tasks)
    for task in np.unique(tasks[tr]):
        tm[tasks[te] == task] = otr.quality[tasks[tr] == task].mean(0)
    c_hat = best_router.predict(list(ote.prompts))[1]
    lams, ch = lambda_curve(tm, c_hat)
    curves["baseline: task-mean (uses task labels)"] = Curve(settings=lams, choices=ch)
    lams, ch = lambda_curve(ote.quality, ote.cost)
    curves["oracle (true quality and cost)"] = Curve(settings=lams, choices=ch)
    res = evaluate_curves(ote, curves, n_bootstrap=args.n_bootstrap, seed=0, per_task=True)
    doc = res.to_metrics_json("routerbench", "test")
    for name in doc["routers"]:
        doc["routers"][name].pop("points", None)
        doc["routers"][name]["fit_and_sweep_s"] = fit_s.get(name)
    doc["embed_s_all_rows"] = embed_s
    doc["n_train"] = int(len(tr))
    doc["best_single_model_on_train"] = o.models[best]
    return doc, (best_router, o, tr, te, texts)


# ---------------------------------------------------------------------------------------- RouteLLM
def bench_routellm(name: str, args, enc) -> dict:
    from router.cost_predictor import CostPredictor
    from router.data.registry import load_source
    from router.data.splits import kfold_groups, normalise_prompt
    from router.features import PromptStats
    from router.metrics import Curve, evaluate_curves
    from router.router import prompt_lengths, prompt_texts

    o = load_source(name)
    if args.quick and o.n_prompts > 3000:
        o = o.subset(np.sort(np.random.default_rng(0).choice(o.n_prompts, 3000, replace=False)))
    texts, _ = source_texts(o)  # unsupervised: the stripper sees prompts only, no outcomes
    emb = enc.encode(texts)
    raw = prompt_texts(list(o.prompts))
    lengths = prompt_lengths(raw)
    folds = kfold_groups([normalise_prompt(t) for t in raw], n_folds=5, seed=0)
    strong = int(np.argmax(o.quality.mean(0)))
    curves, fit_s = {}, {}
    for pname in predictors(name):
        t = time.perf_counter()
        oof_q = np.zeros_like(o.quality)
        oof_c = np.zeros_like(o.cost)
        for a, b in folds:
            pred, stats = predictors(name)[pname]
            x = emb
            if stats is not None:  # standardised on the fold's training prompts only
                ps = PromptStats(weight=stats).fit([texts[i] for i in a])
                x = np.hstack([emb, ps.transform(texts)])
            pred.fit(x[a], o.quality[a])  # type: ignore[attr-defined]
            oof_q[b] = pred.predict(x[b])  # type: ignore[attr-defined]
            oof_c[b] = CostPredictor().fit(emb[a], lengths[a], o.subset(a)).predict(emb[b], lengths[b])
        fit_s[pname] = time.perf_counter() - t
        lams, ch = lambda_curve(oof_q, oof_c)
        scores = oof_q[:, strong] - oof_q[:, 1 - strong]
        curves[pname] = Curve(settings=lams, choices=ch, predicted_quality=oof_q, scores=scores)
        print(f"  {name} {pname}: {fit_s[pname]:.1f}s", flush=True)
    rng = np.random.default_rng(0)
    curves["baseline: random"] = Curve(settings=[0.0], choices=np.full((1, o.n_prompts), strong),
                                       scores=rng.random(o.n_prompts))
    res = evaluate_curves(o, curves, n_bootstrap=min(args.n_bootstrap, 200), seed=0, per_task=False)
    doc = res.to_metrics_json(name, "5-fold cross-fitted")
    for r in doc["routers"]:
        doc["routers"][r].pop("points", None)
        doc["routers"][r]["cross_fit_s"] = fit_s.get(r)
    doc["published_best_cpt50_pct"] = ROUTELLM_PUBLISHED_CPT50[name]
    doc["published_source"] = ("RouteLLM: Learning to Route LLMs with Preference Data (Ong et al., 2024), "
                               "best published router's CPT(50%)")
    return doc


# ---------------------------------------------------------------------------------------- latency
def bench_latency(args, best) -> dict:
    from router.encoders import SentenceTransformerEncoder, StaticEncoder
    from router.router import Router

    router, o, tr, te, texts = best
    prompts = [str(p) for p in np.asarray(o.prompts, dtype=object)[te]]
    otr = o.subset(tr)
    out = {}
    n_single = 30 if args.quick else 200
    encoders = (("static", StaticEncoder()), ("minilm", SentenceTransformerEncoder()),
                ("minilm-int8", SentenceTransformerEncoder(quantize=True)))
    for enc_name, enc in encoders:
        if enc_name == "minilm":
            emb_tr = minilm_cached().encode([texts[i] for i in tr])
        else:
            emb_tr = enc.encode([texts[i] for i in tr])
        from router.predictors import EnsemblePredictor

        r = Router.fit(otr, encoder=enc, predictor=EnsemblePredictor(seed=0), embeddings=emb_tr,
                       prompt_stats=STATS_WEIGHT)
        with tempfile.TemporaryDirectory() as d:
            r.save(d)
            r = Router.load(d)
            r.route(prompts[:4])  # warm up (model load)
            n_s = n_single if enc_name == "static" else max(n_single // 2, 20)
            lat = []
            for p in (prompts * 2)[:n_s]:
                t = time.perf_counter()
                r.route([p])
                lat.append(time.perf_counter() - t)
            batch = (prompts * 2)[:1000 if not args.quick or enc_name == "static" else 200]
            t = time.perf_counter()
            r.route(batch)
            batch_s = time.perf_counter() - t
        out[enc_name] = {
            "single_p50_ms": float(np.percentile(lat, 50) * 1e3),
            "single_p99_ms": float(np.percentile(lat, 99) * 1e3),
            "n_single": n_s,
            "batch_size": len(batch),
            "batch_prompts_per_s": len(batch) / batch_s,
        }
        print(f"  latency {enc_name}: {out[enc_name]}", flush=True)
    return out


# ---------------------------------------------------------------------------------------- report
def machine() -> dict:
    import torch

    u = platform.uname()
    return {"platform": platform.platform(), "processor": platform.processor() or u.machine,
            "node_machine": u.machine, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version()}


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.1f}%"


def _ci(v) -> str:
    return "" if not v or v[0] is None else f" [{v[0]:.3f}, {v[1]:.3f}]"


def _ci_pct(v) -> str:
    return "" if not v or v[0] is None else f" [{v[0]:.1f}, {v[1]:.1f}]"


def render_md(doc: dict) -> str:
    rb = doc["routerbench"]
    lines = [f"# Router benchmark ({doc['date']})", "",
             f"Machine: {doc['machine']['platform']}, processor {doc['machine']['processor']}, "
             f"{doc['machine']['cpu_count']} CPUs. Mode: {'quick' if doc['quick'] else 'full'}. "
             f"Bootstrap: {rb['n_bootstrap']} replicates, 95% percentile intervals.", "",
             f"## RouterBench rows, test split ({rb['n_prompts']} prompts, {len(rb['models'])} models; "
             f"trained on {rb['n_train']} train rows)", "",
             f"Zero router AIQ {rb['zero_router']['aiq']:.4f}{_ci(rb['zero_router']['aiq_ci'])}; "
             f"oracle point quality {rb['oracle']['quality']:.4f} at ${rb['oracle']['cost']:.6f}/call; "
             f"best single model {rb['best_single_model']}.", "",
             "| router | AIQ [95% CI] | AIQ / zero | AIQ / kNN-40 | max quality | saving at best quality [CI] "
             "| saving at 95% of best [CI] |", "|---|---|---|---|---|---|---|"]
    z = rb["zero_router"]["aiq"]
    k40 = rb["routers"]["knn-40"]["aiq"]
    for name, r in rb["routers"].items():
        lines.append(f"| {name} | {r['aiq']:.4f}{_ci(r['aiq_ci'])} | {r['aiq'] / z:.3f} | {r['aiq'] / k40:.3f} "
                     f"| {r['max_quality']:.4f} | {_pct(r['saving_at_best_pct'])}{_ci_pct(r['saving_at_best_pct_ci'])} "
                     f"| {_pct(r['saving_at_95_pct'])}{_ci_pct(r['saving_at_95_pct_ci'])} |")
    lines += ["", "Savings are against the best single model's cost (n/a: the router's hull never reaches that "
              "quality). The task-mean baseline uses task labels; the oracle uses true outcomes.", ""]
    lines += ["## RouteLLM two-model sets (5-fold grouped cross-fitting)", "",
              "| data | router | APGR [CI] | CPT(50%) | CPT(80%) | published best CPT(50%) | ratio to published |",
              "|---|---|---|---|---|---|---|"]
    for key in ("routellm-mmlu", "routellm-gsm8k"):
        d = doc[key]
        for name, r in d["routers"].items():
            c50 = None if r.get("cpt50") is None else 100 * r["cpt50"]
            c80 = None if r.get("cpt80") is None else 100 * r["cpt80"]
            ratio = "" if c50 is None else f"{c50 / d['published_best_cpt50_pct']:.2f}"
            lines.append(f"| {key} ({d['n_prompts']}) | {name} | {r['apgr']:.3f}{_ci(r.get('apgr_ci'))} | {_pct(c50)} "
                         f"| {_pct(c80)} | {d['published_best_cpt50_pct']:.1f}% | {ratio} |")
    lines += ["", "Published figures: RouteLLM (Ong et al. 2024), \"RouteLLM: Learning to Route LLMs with "
              "Preference Data\"; CPT = share of calls to the strong model needed to recover that share of the "
              "quality gap.", "", "## Decision latency (saved best router, `Router.route`)", "",
              "| encoder | single prompt p50 | p99 | batch of 1,000: prompts/s |", "|---|---|---|---|"]
    for k, v in doc["latency"].items():
        lines.append(f"| {k} | {v['single_p50_ms']:.1f} ms | {v['single_p99_ms']:.1f} ms | "
                     f"{v['batch_prompts_per_s']:.0f} (batch {v['batch_size']}) |")
    return "\n".join(lines) + "\n"


def embed_only() -> None:
    from router.data.registry import load_source

    enc = minilm_cached()
    for name in ("routerbench", "routellm-gsm8k", "routellm-mmlu"):
        o = load_source(name)
        rows = np.flatnonzero(o.split == "train") if o.split is not None else None
        texts, _ = source_texts(o, rows)
        for s in range(0, len(texts), 1000):
            t = time.time()
            enc.encode(texts[s:s + 1000])
            print(name, s, f"{time.time() - t:.1f}s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fast subset")
    ap.add_argument("--embed-only", action="store_true", help="only fill the embedding cache")
    ap.add_argument("--n-bootstrap", type=int, default=None)
    args = ap.parse_args()
    if args.embed_only:
        embed_only()
        return
    if args.n_bootstrap is None:
        args.n_bootstrap = 100 if args.quick else 1000
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    enc = minilm_cached()
    doc: dict = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine(),
                 "quick": bool(args.quick), "encoder": "MiniLM (all-MiniLM-L6-v2) of prefix-stripped prompts",
                 "lambda_grid": N_LAMBDAS}
    print("RouterBench", flush=True)
    doc["routerbench"], best = bench_routerbench(args, enc)
    for key in ("routellm-mmlu", "routellm-gsm8k"):
        print(key, flush=True)
        doc[key] = bench_routellm(key, args, enc)
    print("latency", flush=True)
    doc["latency"] = bench_latency(args, best)
    doc["total_s"] = time.perf_counter() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (RESULTS / f"routers{suffix}.json").write_text(json.dumps(doc, indent=2, default=float) + "\n")
    md = render_md(doc)
    (RESULTS / f"routers{suffix}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
