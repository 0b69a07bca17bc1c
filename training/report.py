"""Self-contained evaluation reports: ``report.html`` (plots embedded as base64 PNG), ``metrics.json``
and ``summary.md``, plus MLflow logging when a run is active.

The HTML has no external assets: every figure is rendered with matplotlib's Agg backend and
inlined as ``<img src="data:image/png;base64,...">``, so the file can be mailed or archived as is.

Example:
    >>> import numpy as np, tempfile
    >>> from router.data.schema import Outcomes
    >>> from router.metrics import evaluate_curves
    >>> q = np.array([[0, 1], [1, 1], [0, 0], [1, 1]], float)
    >>> o = Outcomes(prompt_ids=list("abcd"), prompts=list("abcd"), models=["s", "b"], quality=q,
    ...              cost=np.tile([1e-3, 1e-2], (4, 1)))
    >>> res = evaluate_curves(o, {"r": ([0.0, 1.0], [[0, 0, 0, 0], [1, 0, 0, 0]])}, n_bootstrap=20)
    >>> paths = write_report(res, tempfile.mkdtemp(), dataset="toy")
    >>> sorted(paths)
    ['html', 'metrics', 'summary']
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router.metrics.evaluate import EvaluationResult

__all__ = ["log_to_mlflow", "render_html", "summary_markdown", "write_report"]

_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def _fig_to_b64(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------- plots
def plot_cost_quality(res: EvaluationResult) -> str:
    """Every router's points and hull against single models, the zero router and the oracle."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    mp = res.model_points
    ax.scatter(mp[:, 0], mp[:, 1], color="black", marker="s", zorder=5, label="single models")
    for j, name in enumerate(res.models):
        ax.annotate(name, (mp[j, 0], mp[j, 1]), textcoords="offset points", xytext=(5, -10), fontsize=8)
    zh = res.zero_hull
    ax.plot(zh.cost, zh.quality, "k--", lw=1, label=f"zero router (AIQ {res.zero_aiq:.3f})")
    ax.scatter([res.oracle[0]], [res.oracle[1]], marker="*", s=200, color="gold", edgecolor="black",
               zorder=6, label="oracle")
    for i, r in enumerate(res.routers.values()):
        col = _PALETTE[i % len(_PALETTE)]
        ax.scatter(r.points[:, 0], r.points[:, 1], s=14, color=col, alpha=0.6)
        hx = np.append(r.hull.cost, max(res.cost_span[1], r.hull.cost[-1]))
        hy = np.append(r.hull.quality, r.hull.quality[-1])
        ax.plot(hx, hy, "-", color=col, lw=2, label=f"{r.name} (AIQ {r.aiq:.3f})")
        if r.operating_point is not None:
            ax.scatter([r.operating_point["cost"]], [r.operating_point["quality"]], marker="D", s=90, color=col,
                       edgecolor="black", linewidth=1.2, zorder=7, label=f"{r.name}: operating point")
    ax.axvspan(res.cost_span[0], res.cost_span[1], color="grey", alpha=0.06)
    ax.set_xlabel("mean cost per call (USD)")
    ax.set_ylabel("mean quality")
    ax.set_title("Cost-quality: router hulls vs single models")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _fig_to_b64(fig)


def plot_settings(res: EvaluationResult) -> str:
    """Setting (lambda) -> spend per 1,000 requests and quality, with bootstrap bands."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for i, r in enumerate(res.routers.values()):
        col = _PALETTE[i % len(_PALETTE)]
        order = np.argsort(r.settings)
        s = r.settings[order]
        a1.plot(s, 1000 * r.points[order, 0], "o-", ms=3, color=col, label=r.name)
        a1.fill_between(s, 1000 * r.points_ci[order, 0, 0], 1000 * r.points_ci[order, 0, 1], color=col, alpha=0.15)
        a2.plot(s, r.points[order, 1], "o-", ms=3, color=col, label=r.name)
        a2.fill_between(s, r.points_ci[order, 1, 0], r.points_ci[order, 1, 1], color=col, alpha=0.15)
    for j, _ in enumerate(res.models):
        a2.axhline(res.model_points[j, 1], color="grey", lw=0.6, ls=":")
    a1.set_xlabel("setting (lambda)")
    a1.set_ylabel("spend per 1,000 requests (USD)")
    a2.set_xlabel("setting (lambda)")
    a2.set_ylabel("mean quality")
    a1.set_title("Setting -> cost")
    a2.set_title("Setting -> quality (dotted: single models)")
    for a in (a1, a2):
        _symlog_settings(a, res)
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    return _fig_to_b64(fig)


def _symlog_settings(ax: Any, res: EvaluationResult) -> None:
    """Lambdas span orders of magnitude: a symmetric log axis (linear near 0) shows them all."""
    pos = np.concatenate([r.settings[r.settings > 0] for r in res.routers.values()] or [np.array([])])
    if pos.size and pos.max() / max(pos.min(), 1e-12) > 50:
        lo = float(pos.min())
        ax.set_xscale("symlog", linthresh=lo, linscale=0.5)
        ax.set_xlim(0.0, float(pos.max()) * 1.5)


def plot_shares(res: EvaluationResult) -> str:
    """Routing share per model across settings, one panel per router."""
    plt = _plt()
    k = len(res.routers)
    fig, axes = plt.subplots(1, k, figsize=(max(5 * k, 6), 3.8), squeeze=False)
    for ax, r in zip(axes[0], res.routers.values()):
        order = np.argsort(r.settings)
        ax.stackplot(r.settings[order], r.shares[order].T, labels=list(res.models),
                     colors=[_PALETTE[j % len(_PALETTE)] for j in range(len(res.models))], alpha=0.85)
        ax.set_title(f"{r.name}: routing share")
        ax.set_xlabel("setting (lambda)")
        ax.set_ylim(0, 1)
        _symlog_settings(ax, res)
    axes[0][0].set_ylabel("share of prompts")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return _fig_to_b64(fig)


def plot_tasks(res: EvaluationResult) -> str:
    """AIQ per task: the zero router and every router."""
    plt = _plt()
    tasks = list(res.task_models)
    series = [("zero router", [res.task_models[t]["zero_aiq"] for t in tasks])]
    series += [(r.name, [r.per_task.get(t, {}).get("aiq", np.nan) for t in tasks]) for r in res.routers.values()]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(tasks) * len(series) * 0.5 + 3), 4))
    x = np.arange(len(tasks))
    wdt = 0.8 / len(series)
    for i, (name, vals) in enumerate(series):
        col = "grey" if i == 0 else _PALETTE[(i - 1) % len(_PALETTE)]
        ax.bar(x + i * wdt - 0.4 + wdt / 2, vals, width=wdt, label=name, color=col)
    ax.set_xticks(x)
    ax.set_xticklabels(tasks, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("AIQ")
    ax.set_title("AIQ per task")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _fig_to_b64(fig)


def plot_calibration(res: EvaluationResult, n_bins: int = 10) -> str | None:
    """Predicted vs realised quality over all (prompt, model) pairs, per router with predictions."""
    with_pred = [r for r in res.routers.values() if r.predicted_quality is not None]
    if not with_pred:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect")
    for i, r in enumerate(with_pred):
        if r.predicted_quality is None or r.realised_quality is None:
            continue
        pred = np.clip(r.predicted_quality.reshape(-1), 0.0, 1.0)
        real = r.realised_quality.reshape(-1)
        bins = np.clip((pred * n_bins).astype(int), 0, n_bins - 1)
        cnt = np.bincount(bins, minlength=n_bins)
        ok = cnt > 0
        mp = np.bincount(bins, pred, n_bins)[ok] / cnt[ok]
        mr = np.bincount(bins, real, n_bins)[ok] / cnt[ok]
        ece = float(np.sum(cnt[ok] * np.abs(mp - mr)) / cnt.sum())
        ax.plot(mp, mr, "o-", color=_PALETTE[i % len(_PALETTE)], label=f"{r.name} (ECE {ece:.3f})")
    ax.set_xlabel("predicted quality")
    ax.set_ylabel("realised quality")
    ax.set_title("Calibration (all prompt x model pairs)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _fig_to_b64(fig)


def plot_ope(ope_rows: Sequence[dict[str, Any]]) -> str | None:
    """Off-policy estimates with intervals (rows: estimator, method, value, low, high[, policy])."""
    if not ope_rows:
        return None
    plt = _plt()
    labels = [f"{r.get('policy', '')} {r['estimator']} ({r['method']})".strip() for r in ope_rows]
    vals = np.array([r["value"] for r in ope_rows], dtype=float)
    lo = np.array([r["low"] for r in ope_rows], dtype=float)
    hi = np.array([r["high"] for r in ope_rows], dtype=float)
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(labels) + 1.5))
    y = np.arange(len(labels))
    ax.errorbar(vals, y, xerr=[vals - lo, hi - vals], fmt="o", color=_PALETTE[0], ecolor="grey", capsize=3)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("estimated mean reward of the target policy")
    ax.set_title("Off-policy estimates (traffic log)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _fig_to_b64(fig)


# --------------------------------------------------------------------------- text
def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float | np.floating):
        return "–" if not math.isfinite(float(x)) else f"{float(x):.{nd}f}"
    return str(x)


def _ci(v: Any, ci: Any, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "never reached" if ci is not None else "–"
    if ci is None or not all(isinstance(c, float) and math.isfinite(c) for c in ci):
        return _fmt(v, nd)
    return f"{_fmt(v, nd)} [{_fmt(ci[0], nd)}, {_fmt(ci[1], nd)}]"


def _summary_table(res: EvaluationResult) -> tuple[list[str], list[list[str]]]:
    head = ["router", "AIQ (95% CI)", "AIQ RouterBench", "max quality", "saving @ best (%)", "saving @ 95% (%)",
            "oracle-gap share"]
    two = any(r.apgr is not None for r in res.routers.values())
    if two:
        head += ["APGR (95% CI)", "CPT(50%)", "CPT(80%)"]
    body = []
    for r in res.routers.values():
        row = [r.name, _ci(r.aiq, r.aiq_ci), _fmt(r.aiq_routerbench), _fmt(r.max_quality),
               _ci(r.saving_at_best, r.saving_at_best_ci, 1), _ci(r.saving_at_95, r.saving_at_95_ci, 1),
               _ci(r.oracle_gap_share, r.oracle_gap_share_ci)]
        if two:
            row += [_ci(r.apgr, r.apgr_ci), _fmt(r.cpt50), _fmt(r.cpt80)]
        body.append(row)
    body.append(["zero router", _ci(res.zero_aiq, res.zero_aiq_ci), "", _fmt(float(res.zero_hull.max_quality)),
                 "", "", ""] + ([""] * 3 if two else []))
    return head, body


def _operating_table(res: EvaluationResult) -> tuple[list[str], list[list[str]]]:
    """One row per router with an operating point: its lambda, cost, quality and the target behind it."""
    head = ["router", "lambda", "mixing", "cost per 1k (USD)", "quality", "source", "target", "calibrated",
            "held-out (fit)", "met"]
    body = []
    for r in res.routers.values():
        op = r.operating_point
        if op is None:
            continue
        mix = f"{op['mix']:.3f} at {op['mix_lam']:.4g}" if op.get("mix") else ""
        tgt = op.get("target") or {}
        goal = next((v for k, v in tgt.items() if k not in ("kind", "model")), None)
        body.append([r.name, f"{op['setting']:.4g}", mix, f"{1000 * op['cost']:.4f}", f"{op['quality']:.3f}",
                     str(op.get("source", "")), f"{tgt.get('kind', '')} {goal:g}" if goal is not None else "",
                     _fmt(op.get("calibrated")), _fmt(op.get("heldout")),
                     "" if op.get("met") is None else ("yes" if op["met"] else "NO")])
    return head, body


def summary_markdown(res: EvaluationResult, dataset: str, split: str | None = None,
                     ope_rows: Sequence[dict[str, Any]] | None = None) -> str:
    """A short Markdown summary: data, single models, oracle, and the router table."""
    lines = [f"# Evaluation: {dataset}" + (f" ({split})" if split else ""), "",
             f"{res.n_prompts} prompts, {len(res.models)} models; best single model **{res.best_model}**; "
             f"oracle quality {res.oracle[1]:.3f} at {1000 * res.oracle[0]:.4f} USD per 1k requests; "
             f"{res.n_bootstrap} bootstrap replicates, {int(res.confidence * 100)}% intervals.", "",
             "| model | cost per 1k (USD) | quality |", "|---|---|---|"]
    for j, m in enumerate(res.models):
        lines.append(f"| {m} | {1000 * res.model_points[j, 0]:.4f} | {res.model_points[j, 1]:.3f} |")
    head, body = _summary_table(res)
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    ohead, obody = _operating_table(res)
    if obody:
        lines += ["", "## Operating points (each router's default decisions)", "",
                  "| " + " | ".join(ohead) + " |", "|" + "---|" * len(ohead)]
        lines += ["| " + " | ".join(row) + " |" for row in obody]
    if ope_rows:
        lines += ["", "## Off-policy estimates", "", "| policy | estimator | method | value | interval |",
                  "|---|---|---|---|---|"]
        for r in ope_rows:
            lines.append(f"| {r.get('policy', '')} | {r['estimator']} | {r['method']} | {_fmt(r['value'])} | "
                         f"[{_fmt(r['low'])}, {_fmt(r['high'])}] |")
    lines += ["", "AIQ: mean hull quality over the single models' cost span; savings: cost saved against always "
              "using the best single model when reaching its quality (or 95% of it); oracle-gap share: "
              "(hull quality at the best model's cost - best quality) / (oracle - best quality). "
              "See docs/metrics_schema.md.", ""]
    return "\n".join(lines)


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;color:#222}
h1{font-size:24px;margin-bottom:4px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0} td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f5f8} td:first-child,th:first-child{text-align:left} img{max-width:100%;display:block;margin:8px 0}
.meta{color:#555;font-size:13px} .warn{color:#a33;font-size:13px}
"""


def _table_html(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><tr>{h}</tr>{rows}</table>"


def render_html(res: EvaluationResult, dataset: str, split: str | None = None,
                ope_rows: Sequence[dict[str, Any]] | None = None, ope_warnings: Sequence[str] = ()) -> str:
    """The report as one HTML string with every figure inlined."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Routing evaluation: {html.escape(dataset)}"
             f"</title><style>{_CSS}</style></head><body>",
             f"<h1>Routing evaluation: {html.escape(dataset)}{' / ' + html.escape(split) if split else ''}</h1>",
             f"<p class='meta'>{res.n_prompts} prompts · {len(res.models)} models · best single model "
             f"<b>{html.escape(res.best_model)}</b> · oracle quality {res.oracle[1]:.3f} · "
             f"{res.n_bootstrap} bootstrap replicates (seed {res.seed}), {int(res.confidence * 100)}% intervals</p>"]
    head, body = _summary_table(res)
    parts += ["<h2>Summary</h2>", _table_html(head, body)]
    mhead = ["model", "cost per 1k requests (USD)", "quality"]
    mbody = [[m, f"{1000 * res.model_points[j, 0]:.4f}", f"{res.model_points[j, 1]:.3f}"]
             for j, m in enumerate(res.models)]
    mbody.append(["oracle", f"{1000 * res.oracle[0]:.4f}", f"{res.oracle[1]:.3f}"])
    parts.append(_table_html(mhead, mbody))
    ohead, obody = _operating_table(res)
    if obody:
        parts.append("<h2>Operating points</h2><p class='meta'>Where each router decides by default (diamonds in "
                     "the cost-quality plot): its saved lambda, measured here; the target it was calibrated for "
                     "and the value `training fit` measured on its held-out split.</p>")
        parts.append(_table_html(ohead, obody))

    def img(title: str, b64: str | None, note: str = "") -> None:
        if b64 is None:
            return
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if note:
            parts.append(f"<p class='meta'>{html.escape(note)}</p>")
        parts.append(f"<img alt='{html.escape(title)}' src=\"data:image/png;base64,{b64}\">")

    img("Cost-quality curves", plot_cost_quality(res),
        "Lines: non-decreasing convex hulls (linear cost). Shaded: the single models' cost span over which AIQ is taken.")
    img("Setting -> cost and quality", plot_settings(res))
    img("Routing share per model", plot_shares(res))
    if res.task_models:
        img("Per-task AIQ", plot_tasks(res))
    img("Calibration", plot_calibration(res))
    budget_rows = [(name, b) for name, r in res.routers.items() for b in getattr(r, "budget", [])]
    if budget_rows:
        parts.append("<h2>Budget knob fidelity</h2>")
        parts.append("<p class='meta'>Lambda calibrated on the training split to spend at most the target per "
                     "1,000 requests; realised spend on the evaluated prompts.</p>")
        parts.append(_table_html(
            ["router", "target (USD / 1k)", "realised (USD / 1k)", "realised / target"],
            [[n, f"{b['target']:.4f}", f"{b['realised']:.4f}", f"{b['ratio']:.3f}"] for n, b in budget_rows]))
    if ope_rows:
        img("Off-policy estimates", plot_ope(ope_rows))
        for w in ope_warnings:
            parts.append(f"<p class='warn'>⚠ {html.escape(w)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


# --------------------------------------------------------------------------- files + mlflow
def write_report(
    res: EvaluationResult, out_dir: str | os.PathLike[str], *, dataset: str, split: str | None = None,
    ope_rows: Sequence[dict[str, Any]] | None = None, ope_diagnostics: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``report.html``, ``metrics.json`` and ``summary.md`` to ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = res.to_metrics_json(dataset=dataset, split=split)
    if ope_rows:
        doc["ope"] = {"estimates": list(ope_rows), "diagnostics": ope_diagnostics or {}}
    warns = list((ope_diagnostics or {}).get("warnings", []))
    paths = {"metrics": out / "metrics.json", "summary": out / "summary.md", "html": out / "report.html"}
    paths["metrics"].write_text(json.dumps(_json_safe(doc), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    paths["summary"].write_text(summary_markdown(res, dataset, split, ope_rows), encoding="utf-8")
    paths["html"].write_text(render_html(res, dataset, split, ope_rows, warns), encoding="utf-8")
    return paths


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def log_to_mlflow(res: EvaluationResult, out_dir: str | os.PathLike[str], prefix: str = "eval") -> bool:
    """Log report files as artifacts and scalar metrics in one batch, when an MLflow run is active.

    Returns True when something was logged. mlflow is imported only when it may have a run.
    """
    if "mlflow" not in sys.modules and "MLFLOW_RUN_ID" not in os.environ:
        return False
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return False
    import time

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    ts = int(time.time() * 1000)
    metrics = [Metric(k, v, ts, 0) for k, v in res.scalar_metrics(prefix).items()]
    MlflowClient().log_batch(run.info.run_id, metrics=metrics)
    mlflow.log_artifacts(str(out_dir), artifact_path="evaluation")
    return True
