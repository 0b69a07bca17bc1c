"""How much per-prompt signal would RouterBench's AIQ target need? A ceiling study on the training split.

Run: ``python bench/bench_ceiling.py`` (about a minute; MiniLM embeddings come from the router
benchmark's cache, ``python bench/bench_routers.py --embed-only`` fills it).

Every number is 5-fold grouped cross-validation on RouterBench's *training* split (the test split is not
read), with out-of-fold cost predictions (:class:`~router.cost_predictor.CostPredictor`) and the greedy rule
over an 81-value lambda grid, as in ``bench_routers.py``:

* **references**: the MLP on MiniLM embeddings; a task-mean router that is *given* each prompt's task
  label and predicts the task's mean quality per model; and the oracle (true outcomes);
* **within-task AUC**: per task and model, how well the MLP's predicted quality ranks the prompts that
  model answers correctly above those it gets wrong (0.5 is chance), averaged over (task, model) pairs;
* **signal sweep**: the MLP's logits plus ``s * (2 * outcome - 1)`` plus unit Gaussian noise (seed 0),
  for growing ``s``: synthetic predictors that know a controlled amount about each prompt's true outcome.
  The table pairs their within-task AUC with the AIQ they reach, which says how good per-prompt
  judgement must be before AIQ moves beyond what the task label alone gives.

Writes ``bench/results/ceiling.json`` and ``bench/results/ceiling.md``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import numpy as np
from bench_routers import RESULTS, lambda_curve, machine, minilm_cached, source_texts
from scipy.stats import rankdata

SIGNAL = (0.0, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.75, 1.0)


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC of ``score`` for binary ``y`` (ties count half)."""
    pos = y > 0.5
    n1, n0 = int(pos.sum()), int((~pos).sum())
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def within_task_auc(quality: np.ndarray, pred: np.ndarray, tasks: np.ndarray) -> float:
    """Mean AUC over (task, model) pairs in which the model is neither always right nor always wrong."""
    out = []
    for t in np.unique(tasks):
        rows = tasks == t
        for j in range(quality.shape[1]):
            y = quality[rows, j] > 0.5
            if 0 < y.mean() < 1:
                out.append(auc(y, pred[rows, j]))
    return float(np.mean(out))


def main() -> None:
    from router.cost_predictor import CostPredictor
    from router.data.registry import load_source
    from router.data.splits import kfold_groups, normalise_prompt
    from router.metrics import curves as C
    from router.predictors import MLPPredictor
    from router.router import prompt_lengths, prompt_texts

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    o = load_source("routerbench")
    tr = np.flatnonzero(o.split == "train")
    otr = o.subset(tr)
    texts, _ = source_texts(o, tr)
    emb = minilm_cached().encode([texts[i] for i in tr])
    raw = prompt_texts(list(otr.prompts))
    lengths = prompt_lengths(raw)
    tasks = np.asarray(otr.tasks)
    q_true = otr.quality
    folds = kfold_groups([normalise_prompt(t) for t in raw], n_folds=5, seed=0)

    oof_q = np.zeros_like(q_true, dtype=np.float64)
    oof_c = np.zeros_like(otr.cost, dtype=np.float64)
    task_mean = np.zeros_like(oof_q)
    for a, b in folds:
        oof_q[b] = MLPPredictor(seed=0).fit(emb[a], q_true[a]).predict(emb[b])
        oof_c[b] = CostPredictor().fit(emb[a], lengths[a], otr.subset(a)).predict(emb[b], lengths[b])
        for t in np.unique(tasks[b]):
            task_mean[b[tasks[b] == t]] = q_true[a[tasks[a] == t]].mean(axis=0)

    span = (otr.cost.mean(axis=0).min(), otr.cost.mean(axis=0).max())

    def cv_aiq(q: np.ndarray, c: np.ndarray) -> float:
        _, choices = lambda_curve(q, c)
        return float(C.aiq(C.non_decreasing_hull(C.points(otr, choices=choices)), span))

    refs = {
        "mlp (MiniLM)": {"aiq": cv_aiq(oof_q, oof_c), "within_task_auc": within_task_auc(q_true, oof_q, tasks)},
        # constant within a task: it cannot rank prompts (its AUC would only measure fold-to-fold noise)
        "task-mean (given the task label)": {"aiq": cv_aiq(task_mean, oof_c), "within_task_auc": None},
        "oracle (true outcomes and costs)": {"aiq": cv_aiq(q_true, otr.cost), "within_task_auc": 1.0},
    }
    p = np.clip(oof_q, 1e-4, 1 - 1e-4)
    logit = np.log(p / (1 - p))
    rng = np.random.default_rng(0)
    sweep = []
    for s in SIGNAL:
        noise = rng.normal(0.0, 1.0, q_true.shape) if s > 0 else 0.0
        q = 1.0 / (1.0 + np.exp(-(logit + s * (2 * q_true - 1) + noise)))
        sweep.append({"signal": s, "within_task_auc": within_task_auc(q_true, q, tasks), "aiq": cv_aiq(q, oof_c)})
        print(sweep[-1], flush=True)
    doc = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine(),
           "data": "routerbench, training split, 5-fold grouped CV", "n_prompts": int(len(tr)),
           "references": refs, "signal_sweep": sweep, "total_s": time.perf_counter() - t0}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ceiling.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [f"# How much per-prompt signal does AIQ 0.87 need? ({doc['date']})", "",
             f"RouterBench training split ({len(tr)} prompts, 11 models), 5-fold grouped CV; "
             f"{doc['machine']['cpu_count']} CPUs. See `bench/bench_ceiling.py` for the method.", "",
             "| router | CV AIQ | mean within-task AUC |", "|---|---|---|"]
    lines += [f"| {k} | {v['aiq']:.4f} | {'-' if v['within_task_auc'] is None else format(v['within_task_auc'], '.3f')} |"
              for k, v in refs.items()]
    lines += ["", "MLP logits plus a controlled amount of the true outcome (signal `s`, with unit noise):", "",
              "| s | mean within-task AUC | CV AIQ |", "|---|---|---|"]
    lines += [f"| {r['signal']:g} | {r['within_task_auc']:.3f} | {r['aiq']:.4f} |" for r in sweep]
    (RESULTS / "ceiling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
