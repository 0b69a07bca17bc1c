"""Off-policy evaluation of a router on a traffic log (the service's, or any in the log schema).

Used by ``python -m training evaluate --log PATH --model CANDIDATE`` (with or without
``--dataset``). The log's rows with a quality signal are the logging policy's bandit feedback
(chosen model, its propensity, quality, cost); the candidate's probabilities on the logged
prompts are the target policy and its own predictions the reward model of DM / DR. Estimated for
the candidate at its saved operating point:

* ``quality`` -- expected quality; ``cost`` -- expected USD per request; ``reward`` -- expected
  ``quality - lam * cost`` at the router's saved ``lam``;

each with IPS, clipped IPS, SNIPS, DM, DR and Switch-DR, normal and bootstrap intervals
(:func:`router.ope.evaluate_policy`), plus the logging policy's realised (on-policy) means for
comparison, and the overlap diagnostics (effective sample size, weight tail, unsupported mass).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from router.errors import ValidationError

__all__ = ["feedback_rows", "ope_on_log", "write_log_report"]


def feedback_rows(log: str | Path | pl.DataFrame) -> pl.DataFrame:
    """The log's rows with both a prompt and a quality signal (the service's routing decisions only)."""
    from router.data.logs import read_log

    df = log if isinstance(log, pl.DataFrame) else read_log(log)
    df = df.filter(pl.col("quality").is_not_null() & pl.col("prompt").is_not_null())
    if df.height == 0:
        raise ValidationError(f"{log if not isinstance(log, pl.DataFrame) else 'the log'}: no rows with both a "
                              "prompt and a quality signal (feedback) to evaluate on; send feedback first.")
    return df


def _realised(name: str, x: np.ndarray) -> dict[str, Any]:
    from router.ope import on_policy_mean

    e = on_policy_mean(x)
    return {"policy": "logging policy (realised)", "metric": name, "estimator": e.estimator, "method": e.method,
            "value": e.value, "low": e.low, "high": e.high, "confidence": e.confidence}


def ope_on_log(log: str | Path | pl.DataFrame, router: Any, *, seed: int = 0,
               n_bootstrap: int = 500) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Estimates (flat rows) and overlap diagnostics of ``router`` at its operating point on ``log``."""
    from router.ope import evaluate_policy

    df = feedback_rows(log)
    models = list(router.models)
    pos = {m: j for j, m in enumerate(models)}
    unknown = sorted(set(df["chosen_model"].to_list()) - set(pos))
    if unknown:
        raise ValidationError(f"the log chose model(s) {unknown} the candidate cannot route to (its pool is "
                              f"{models}); evaluate a candidate over the logged pool or filter those rows.")
    prompts = df["prompt"].to_list()
    a = np.array([pos[m] for m in df["chosen_model"].to_list()], dtype=np.int64)
    p = df["propensity"].to_numpy().astype(float)
    q = df["quality"].to_numpy().astype(float)
    c = df["cost"].to_numpy().astype(float)
    emb, lengths = router.embed(prompts)
    pi = np.asarray(router.route(prompts, explain=False, embedded=(emb, lengths)).probabilities, dtype=float)
    q_hat, c_hat, _ = router.predict(embeddings=emb, lengths=lengths)
    lam = float(router.rule.lam)
    label = f"candidate at its operating point (lambda={lam:g})"
    rows: list[dict[str, Any]] = []
    diag: dict[str, Any] = {}
    for metric, r, r_hat in (("quality", q, q_hat), ("cost", c, c_hat), ("reward", q - lam * c, q_hat - lam * c_hat)):
        res = evaluate_policy(r, a, p, pi, q_hat=np.asarray(r_hat, dtype=float), seed=seed, n_bootstrap=n_bootstrap)
        rows += [{"policy": label, "metric": metric, **row} for row in res.rows()]
        rows.append(_realised(metric, r))
        if metric == "quality":
            diag = res.diagnostics.as_dict()
    diag["n_rows"] = int(df.height)
    diag["lam"] = lam
    return rows, diag


def write_log_report(out_dir: str | Path, rows: list[dict[str, Any]], diag: dict[str, Any], *, log: str,
                     model: str) -> dict[str, Path]:
    """``metrics.json``, ``summary.md`` and ``report.html`` of an evaluation on a log alone."""
    from training.report import _json_safe, plot_ope

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"log": log, "model": model, "ope": {"estimates": rows, "diagnostics": diag}}
    paths = {"metrics": out / "metrics.json", "summary": out / "summary.md", "html": out / "report.html"}
    paths["metrics"].write_text(json.dumps(_json_safe(doc), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    lines = [f"# Off-policy evaluation of `{model}` on `{log}`", "",
             f"{diag.get('n_rows', 0)} logged decisions with feedback; lambda = {diag.get('lam')}.", "",
             "| policy | metric | estimator | interval | value | low | high |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['policy']} | {r['metric']} | {r['estimator']} | {r['method']} | {r['value']:.4f} | "
                     f"{r['low']:.4f} | {r['high']:.4f} |")
    warns = list(diag.get("warnings", []))
    if warns:
        lines += ["", "**Overlap warnings:**", *[f"- {w}" for w in warns]]
    paths["summary"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    img = plot_ope([r for r in rows if r["metric"] == "reward" and r["method"] == "bootstrap"])
    html = ["<!doctype html><html><head><meta charset='utf-8'><title>Off-policy evaluation</title></head><body>",
            f"<h1>Off-policy evaluation of {model}</h1><p>log: {log}</p>"]
    if img:
        html.append(f"<img alt='off-policy estimates' src='data:image/png;base64,{img}'>")
    html.append("<table border='1'><tr><th>policy</th><th>metric</th><th>estimator</th><th>interval</th>"
                "<th>value</th><th>low</th><th>high</th></tr>")
    for r in rows:
        html.append(f"<tr><td>{r['policy']}</td><td>{r['metric']}</td><td>{r['estimator']}</td><td>{r['method']}</td>"
                    f"<td>{r['value']:.4f}</td><td>{r['low']:.4f}</td><td>{r['high']:.4f}</td></tr>")
    html.append("</table>")
    if warns:
        html.append("<h2>Overlap warnings</h2><ul>" + "".join(f"<li>{w}</li>" for w in warns) + "</ul>")
    html.append(f"<pre>{json.dumps(_json_safe(diag), indent=1)}</pre></body></html>")
    paths["html"].write_text("\n".join(html), encoding="utf-8")
    return paths
