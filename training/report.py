"""Self-contained evaluation reports: ``report.html`` (plots embedded as base64 PNG), ``metrics.json``
and ``summary.md``, plus MLflow logging when a run is active.

The HTML has no external assets: every figure (see :mod:`training.report_plots`) is rendered with
matplotlib's Agg backend and inlined as ``<img src="data:image/png;base64,...">``, so the file can be
mailed or archived as is. Each router's operating point (the lambda it routes with) is marked in the
figures and listed in the summary; budget-knob fidelity has a table of its own.

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

import html
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router.metrics.evaluate import EvaluationResult
from training.report_plots import (
    model_style,
    operating_index,
    plot_calibration,
    plot_cost_quality,
    plot_ope,
    plot_settings,
    plot_shares,
    plot_tasks,
)

__all__ = ["log_to_mlflow", "operating_point_of", "render_html", "summary_markdown", "write_report"]

#: Operating points given by the caller: router name -> the lambda it routes with, or its
#: :class:`router.calibration.OperatingPoint` (or that as a dict); None when unknown. A router whose
#: evaluation carries its own operating point (see :func:`training.evaluate.router_curve`) needs none.
OperatingPoints = Mapping[str, Any]


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


def _lam_of(op: Any) -> float | None:
    """The lambda of an operating point given as an object with ``lam``, a dict with ``lam``, or a number."""
    value = op.get("lam") if isinstance(op, Mapping) else getattr(op, "lam", op)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def operating_point_of(router: Any) -> float | None:
    """The lambda a router routes with, read defensively: its ``operating_point`` (a
    :class:`router.calibration.OperatingPoint`, a dict with ``lam``, or a number), else the decision
    rule's ``lam``; None when neither is there."""
    lam = _lam_of(getattr(router, "operating_point", None))
    return lam if lam is not None else _lam_of(getattr(router, "rule", None))


def _operating_rows(res: EvaluationResult, operating: OperatingPoints | None) -> dict[str, dict[str, Any]]:
    """Router name -> its operating point: ``{setting, cost, quality, ...}``.

    A router's own, measured by the evaluation (its curve's ``operating_index``: the router's saved
    :class:`~router.calibration.OperatingPoint`, with intervals, shares and the target behind it),
    comes first; else the point ``operating`` gives for it, when its sweep holds that lambda.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, r in res.routers.items():
        if r.operating_point is not None:
            out[name] = dict(r.operating_point)
            continue
        given = (operating or {}).get(name)
        k = operating_index(r.settings, _lam_of(given))
        if k is None:
            continue
        row: dict[str, Any] = {"setting": float(r.settings[k]), "cost": float(r.points[k, 0]),
                               "quality": float(r.points[k, 1])}
        info: dict[str, Any] = dict(given) if isinstance(given, Mapping) else {}
        to_dict = getattr(given, "to_dict", None)  # a router.calibration.OperatingPoint
        if callable(to_dict):
            info = to_dict()
        out[name] = {**info, **row}
    return out


def _marks(res: EvaluationResult, operating: OperatingPoints | None) -> dict[str, float | None]:
    """Router name -> the setting the figures mark as its operating point."""
    return {name: op["setting"] for name, op in _operating_rows(res, operating).items()}


def _summary_table(res: EvaluationResult, operating: OperatingPoints | None = None) -> tuple[list[str], list[list[str]]]:
    ops = _operating_rows(res, operating)
    head = ["router", "AIQ (95% CI)", "AIQ RouterBench", "max quality", "saving @ best (%)", "saving @ 95% (%)",
            "oracle-gap share"]
    if ops:
        head += ["operating point: λ", "spend / 1k (USD)", "quality"]
    two = any(r.apgr is not None for r in res.routers.values())
    if two:
        head += ["APGR (95% CI)", "CPT(50%)", "CPT(80%)"]
    body = []
    for r in res.routers.values():
        row = [r.name, _ci(r.aiq, r.aiq_ci), _fmt(r.aiq_routerbench), _fmt(r.max_quality),
               _ci(r.saving_at_best, r.saving_at_best_ci, 1), _ci(r.saving_at_95, r.saving_at_95_ci, 1),
               _ci(r.oracle_gap_share, r.oracle_gap_share_ci)]
        if ops:
            op = ops.get(r.name)
            row += ["–", "", ""] if op is None else [f"{op['setting']:.4g}", f"{1000 * op['cost']:.4f}",
                                                      f"{op['quality']:.3f}"]
        if two:
            row += [_ci(r.apgr, r.apgr_ci), _fmt(r.cpt50), _fmt(r.cpt80)]
        body.append(row)
    body.append(["zero router", _ci(res.zero_aiq, res.zero_aiq_ci), "", _fmt(float(res.zero_hull.max_quality)),
                 "", "", ""] + ([""] * 3 if ops else []) + ([""] * 3 if two else []))
    return head, body


def _operating_table(res: EvaluationResult) -> tuple[list[str], list[list[str]]]:
    """Where each router's operating point came from: its lambda and mixing, and the target behind it.

    One row per router whose evaluation carries a saved :class:`router.calibration.OperatingPoint`
    (its cost and quality there are in the summary table).
    """
    head = ["router", "λ", "mixing", "source", "target", "calibrated (train)", "held-out (fit)", "met"]
    body = []
    for r in res.routers.values():
        op = r.operating_point
        if op is None or "source" not in op:
            continue
        mix = f"{op['mix']:.3f} at λ={op['mix_lam']:.4g}" if op.get("mix") else ""
        tgt = op.get("target") or {}
        goal = next((v for k, v in tgt.items() if k not in ("kind", "model", "confidence")), None)
        body.append([r.name, f"{op['setting']:.4g}", mix, str(op.get("source", "")),
                     f"{tgt.get('kind', '')} {goal:g}" if goal is not None else "",
                     _fmt(op.get("calibrated")), _fmt(op.get("heldout")),
                     "" if op.get("met") is None else ("yes" if op["met"] else "NO")])
    return head, body


def _task_table(res: EvaluationResult) -> tuple[list[str], list[list[str]]]:
    """Per task: size, zero router's AIQ, and each router's AIQ and gain over the zero router, with intervals."""
    head = ["task", "prompts", "zero router AIQ"]
    for r in res.routers.values():
        head += [f"{r.name}: AIQ", f"{r.name}: gain vs zero"]
    body = []
    for t, info in res.task_models.items():
        row = [t, str(info["n_prompts"]), _ci(info["zero_aiq"], info.get("zero_aiq_ci"))]
        for r in res.routers.values():
            v = r.per_task.get(t, {})
            row += [_ci(v.get("aiq"), v.get("aiq_ci")), _ci(v.get("gain_vs_zero"), v.get("gain_vs_zero_ci"))]
        body.append(row)
    return head, body


def _budget_rows(res: EvaluationResult, budget: Mapping[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    rows = [(str(budget.get("router", "")), dict(b)) for b in budget.get("rows", [])] if budget else []
    return rows + [(name, b) for name, r in res.routers.items() for b in getattr(r, "budget", [])]


def _budget_table(rows: Sequence[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[list[str]]]:
    head = ["router", "target (USD / 1k)", "λ", "realised (USD / 1k)", "realised / target", "quality"]
    lam = [b.get("lam") for _, b in rows]
    body = [[n, f"{b['target']:.4f}", "–" if x is None else f"{x:.4g}", f"{b['realised']:.4f}", _fmt(b.get("ratio")),
             _fmt(b.get("quality"))] for (n, b), x in zip(rows, lam)]
    return head, body


def _md_table(head: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *["| " + " | ".join(r) + " |" for r in body]]


def summary_markdown(res: EvaluationResult, dataset: str, split: str | None = None,
                     ope_rows: Sequence[dict[str, Any]] | None = None, operating: OperatingPoints | None = None,
                     budget: Mapping[str, Any] | None = None) -> str:
    """A short Markdown summary: data, single models, oracle, and the router table."""
    lines = [f"# Evaluation: {dataset}" + (f" ({split})" if split else ""), "",
             f"{res.n_prompts} prompts, {len(res.models)} models; best single model **{res.best_model}**; "
             f"oracle quality {res.oracle[1]:.3f} at {1000 * res.oracle[0]:.4f} USD per 1k requests; "
             f"{res.n_bootstrap} bootstrap replicates, {int(res.confidence * 100)}% intervals.", "",
             "| model | cost per 1k (USD) | quality |", "|---|---|---|"]
    for j, m in enumerate(res.models):
        lines.append(f"| {m} | {1000 * res.model_points[j, 0]:.4f} | {res.model_points[j, 1]:.3f} |")
    lines += ["", *_md_table(*_summary_table(res, operating))]
    ohead, obody = _operating_table(res)
    if obody:
        lines += ["", "## Operating points (each router's default decisions)", "", *_md_table(ohead, obody)]
    brows = _budget_rows(res, budget)
    if brows:
        lines += ["", "## Budget knob fidelity", "", *_md_table(*_budget_table(brows))]
    if res.task_models:
        lines += ["", "## Per task", "", *_md_table(*_task_table(res))]
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
td{white-space:nowrap} .scroll{overflow-x:auto} .swatch{display:inline-block;width:11px;height:11px;margin-right:6px;
border:1px solid #333;vertical-align:-1px}
th{background:#f3f5f8} td:first-child,th:first-child{text-align:left} img{max-width:100%;display:block;margin:8px 0}
.meta{color:#555;font-size:13px} .warn{color:#a33;font-size:13px}
"""


def _table_html(head: Sequence[str], body: Sequence[Sequence[str]], swatches: Sequence[str | None] = ()) -> str:
    """An HTML table; ``swatches[i]`` puts a colour square before row i's first cell."""
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)

    def first(i: int, cell: str) -> str:
        colour = swatches[i] if i < len(swatches) else None
        mark = f"<span class='swatch' style='background:{colour}'></span>" if colour else ""
        return f"<td>{mark}{html.escape(cell)}</td>"

    rows = "".join("<tr>" + first(i, r[0]) + "".join(f"<td>{html.escape(c)}</td>" for c in r[1:]) + "</tr>"
                   for i, r in enumerate(body))
    return f"<div class='scroll'><table><tr>{h}</tr>{rows}</table></div>"


def render_html(res: EvaluationResult, dataset: str, split: str | None = None,
                ope_rows: Sequence[dict[str, Any]] | None = None, ope_warnings: Sequence[str] = (),
                operating: OperatingPoints | None = None, budget: Mapping[str, Any] | None = None) -> str:
    """The report as one HTML string with every figure inlined."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Routing evaluation: {html.escape(dataset)}"
             f"</title><style>{_CSS}</style></head><body>",
             f"<h1>Routing evaluation: {html.escape(dataset)}{' / ' + html.escape(split) if split else ''}</h1>",
             f"<p class='meta'>{res.n_prompts} prompts · {len(res.models)} models · best single model "
             f"<b>{html.escape(res.best_model)}</b> · oracle quality {res.oracle[1]:.3f} · "
             f"{res.n_bootstrap} bootstrap replicates (seed {res.seed}), {int(res.confidence * 100)}% intervals</p>"]
    head, body = _summary_table(res, operating)
    parts += ["<h2>Summary</h2>", _table_html(head, body)]
    ohead, obody = _operating_table(res)
    if obody:
        parts.append("<h2>Operating points</h2><p class='meta'>Where each router decides by default (circled in "
                     "the figures; its cost and quality there are in the summary): its saved lambda and mixing, "
                     "the target it was calibrated for, its value on the training split and the value `training "
                     "fit` measured on its held-out split.</p>")
        parts.append(_table_html(ohead, obody))
    mhead = ["model", "cost per 1k requests (USD)", "quality"]
    mbody = [[m, f"{1000 * res.model_points[j, 0]:.4f}", f"{res.model_points[j, 1]:.3f}"]
             for j, m in enumerate(res.models)]
    mbody.append(["oracle", f"{1000 * res.oracle[0]:.4f}", f"{res.oracle[1]:.3f}"])
    parts.append(_table_html(mhead, mbody, [model_style(j)["color"] for j in range(len(res.models))]))

    def img(title: str, b64: str | None, note: str = "") -> None:
        if b64 is None:
            return
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if note:
            parts.append(f"<p class='meta'>{html.escape(note)}</p>")
        parts.append(f"<img alt='{html.escape(title)}' src=\"data:image/png;base64,{b64}\">")

    marks = _marks(res, operating)
    marked = " Circles: each router's operating point (the lambda it routes with)." if marks else ""
    img("Cost-quality curves", plot_cost_quality(res, marks),
        "Lines: non-decreasing convex hulls (linear cost). Shaded: the single models' cost span over which AIQ is "
        "taken. Each model has its own colour and shape, the same in every figure." + marked)
    img("Setting -> cost and quality", plot_settings(res, marks))
    img("Routing share per model", plot_shares(res, marks))
    if res.task_models:
        img("Per-task AIQ", plot_tasks(res),
            "Gain of each router's AIQ over the zero router on the task's prompts, with paired bootstrap intervals.")
        parts.append(_table_html(*_task_table(res)))
    img("Calibration", plot_calibration(res))
    brows = _budget_rows(res, budget)
    if brows:
        parts.append("<h2>Budget knob fidelity</h2>")
        parts.append("<p class='meta'>Lambda calibrated on the training split to spend at most the target per "
                     "1,000 requests; realised spend and quality on the evaluated prompts. Not a router: kept out "
                     "of the summary and the figures.</p>")
        parts.append(_table_html(*_budget_table(brows)))
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
    operating_points: OperatingPoints | None = None, budget: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``report.html``, ``metrics.json`` and ``summary.md`` to ``out_dir``; returns their paths.

    ``operating_points``: router name -> the lambda it routes with, or its
    :class:`~router.calibration.OperatingPoint` (marked when its sweep holds it), for routers whose
    evaluation does not carry its own (a ``--model`` scored by ``training evaluate`` does);
    ``budget``: budget-knob fidelity ``{"router", "target", "rows": [...]}`` (see ``training.evaluate``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = res.to_metrics_json(dataset=dataset, split=split)
    for name, op in _operating_rows(res, operating_points).items():
        doc["routers"][name]["operating_point"] = op
    if budget:
        doc["budget_knob"] = dict(budget)
    if ope_rows:
        doc["ope"] = {"estimates": list(ope_rows), "diagnostics": ope_diagnostics or {}}
    warns = list((ope_diagnostics or {}).get("warnings", []))
    paths = {"metrics": out / "metrics.json", "summary": out / "summary.md", "html": out / "report.html"}
    paths["metrics"].write_text(json.dumps(_json_safe(doc), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    paths["summary"].write_text(summary_markdown(res, dataset, split, ope_rows, operating_points, budget),
                                encoding="utf-8")
    paths["html"].write_text(render_html(res, dataset, split, ope_rows, warns, operating_points, budget),
                             encoding="utf-8")
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
