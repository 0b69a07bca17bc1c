"""An experiment's per-arm estimates from *observed* feedback in the traffic log.

    python -m serve.experiment_report --log DIR --name EXPERIMENT --lam 0

The service's log directory (``logbook.dir``) holds every routed request with the arm that decided
it (``experiment``, ``arm``), the acting policy's probability of its choice (``propensity``), the
feedback joined as ``quality``, and -- joined from the ``shadow-*.jsonl`` parts -- the other policy's
probability of every model and its predictions on the same request (:mod:`serve.experiments`). The
reward is the project's off-policy reward, ``quality - lam * cost``: quality from feedback, cost the
USD the request actually spent. Only routed, answered, non-cached decisions count
(:func:`router.data.servicelog.read_service_log`). Per arm:

* ``on_policy`` -- the realised mean quality, cost and reward of the arm's rated requests, with a
  95% normal interval (:func:`router.ope.on_policy_mean`);
* ``off_policy`` -- the *other* arm's policy (in shadow mode: the challenger) evaluated on this arm's
  rated traffic by IPS, SNIPS and DR (:mod:`router.ope`; 95% normal intervals). The logging
  propensities are the logged ``propensity``; the target's probabilities are the ones it gave when it
  scored the request; DR's reward model is the target's own predicted quality and cost (as in
  ``training evaluate --log``). ``overlap`` gives the effective sample size, the share of rounds
  whose logged model the target would never choose (``share_zero_target``), the largest and mean
  importance weight, and plain-language warnings. Rated requests the other policy did not score
  (it failed, or its line was lost with the process) are counted as ``unscored`` and left out.

Example:
    >>> import json, pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> msg = json.dumps([{"role": "user", "content": "hi"}])
    >>> rows = [{"request_id": f"r{i}", "timestamp": "2026-01-01T00:00:00+00:00", "messages": msg,
    ...          "chosen_model": "a" if i % 2 else "b", "propensity": 0.5, "cost": 0.0, "policy_version": "v1",
    ...          "experiment": "x", "arm": "champion"} for i in range(4)]
    >>> _ = (d / "traffic-1.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
    >>> fb = [{"request_id": f"r{i}", "quality": float(i % 2)} for i in range(4)]
    >>> _ = (d / "feedback-1.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in fb))
    >>> sh = [{"request_id": f"r{i}", "shadow_arm": "challenger", "shadow_version": "v2",
    ...        "shadow_probabilities": {"a": 1.0, "b": 0.0}, "shadow_quality": {"a": 1.0, "b": 0.0},
    ...        "shadow_cost": {"a": 0.0, "b": 0.0}} for i in range(4)]
    >>> _ = (d / "shadow-1.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in sh))
    >>> arm = offpolicy_report(d, "x", lam=0.0)["arms"]["champion"]
    >>> arm["on_policy"]["reward"]["mean"], arm["off_policy"]["estimates"]["reward"]["ips"]["value"]
    (0.5, 1.0)
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["arm_estimates", "main", "offpolicy_report"]

ARMS = ("champion", "challenger")
CONFIDENCE = 0.95


def offpolicy_report(log_dir: str | Path, name: str, lam: float) -> dict[str, Any]:
    """Per-arm on-policy and off-policy estimates of experiment ``name`` from the log in ``log_dir``."""
    import polars as pl

    from router.data.servicelog import TornLogWarning, read_service_log
    from router.errors import SourceNotFoundError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TornLogWarning)  # reported below, under "problems"
            df, rep = read_service_log(log_dir)
    except SourceNotFoundError as exc:
        return {"available": False, "reason": f"{exc} (no request has been logged yet)."}
    rows = df.filter(pl.col("experiment") == name).to_dicts() if "experiment" in df.columns else []
    return {
        "available": True, "log": str(log_dir), "lam": lam,
        "reward": "quality - lam * cost (quality from feedback, cost the USD spent)",
        "decisions": len(rows), "problems": rep.problems() or None,
        "arms": {arm: arm_estimates([r for r in rows if r.get("arm") == arm], lam) for arm in ARMS},
    }


def arm_estimates(rows: list[dict[str, Any]], lam: float) -> dict[str, Any]:
    """Estimates over one arm's logged decisions (rows of :func:`router.data.servicelog.read_service_log`)."""
    from router.ope import on_policy_mean

    rated = [r for r in rows if r.get("quality") is not None]
    versions = Counter(str(r.get("policy_version")) for r in rows)
    out: dict[str, Any] = {"decisions": len(rows), "rated": len(rated), "policy_versions": dict(versions),
                           "on_policy": None, "off_policy": None, "notes": []}
    if not rated:
        out["notes"].append("no decision of this arm in the log yet." if not rows else
                            "no feedback on this arm's decisions yet (POST /v1/feedback).")
        return out
    q = np.array([float(r["quality"]) for r in rated])
    c = np.array([float(r.get("cost") or 0.0) for r in rated])
    out["on_policy"] = {metric: {**_interval(on_policy_mean(x)), "n": int(x.shape[0])}
                        for metric, x in (("quality", q), ("cost", c), ("reward", q - lam * c))}
    if len(versions) > 1:
        out["notes"].append(f"{len(versions)} policy versions decided on this arm; its results mix them.")
    scored = [r for r in rated if isinstance(r.get("shadow_probabilities"), dict)]
    out["off_policy"] = _off_policy(scored, len(rated) - len(scored), lam, out["notes"])
    return out


def _off_policy(rows: list[dict[str, Any]], unscored: int, lam: float, notes: list[str]) -> dict[str, Any] | None:
    from router.ope import DR, IPS, SNIPS, overlap_diagnostics

    if not rows:
        notes.append("no rated decision of this arm was scored by the other policy (it needs logbook.dir while "
                     "the experiment runs); no off-policy estimate.")
        return None
    targets = Counter(str(r.get("shadow_arm")) for r in rows)
    versions = Counter(str(r.get("shadow_version")) for r in rows)
    if len(versions) > 1:
        notes.append(f"the evaluated policy changed version {len(versions) - 1} time(s) during the experiment; "
                     "its estimates mix the versions.")
    models = sorted({str(r["chosen_model"]) for r in rows}
                    | {m for r in rows for m, v in r["shadow_probabilities"].items() if v is not None})
    pos = {m: j for j, m in enumerate(models)}
    n, m = len(rows), len(models)
    a = np.array([pos[str(r["chosen_model"])] for r in rows], dtype=np.int64)
    p = np.array([float(r["propensity"]) for r in rows])
    q = np.array([float(r["quality"]) for r in rows])
    c = np.array([float(r.get("cost") or 0.0) for r in rows])
    pi, q_hat, c_hat = np.zeros((n, m)), np.zeros((n, m)), np.zeros((n, m))
    for i, r in enumerate(rows):
        for col, dest in (("shadow_probabilities", pi), ("shadow_quality", q_hat), ("shadow_cost", c_hat)):
            for model, v in (r.get(col) or {}).items():
                if v is not None:
                    dest[i, pos[model]] = float(v)
    estimates = {
        metric: {e.name: _interval(e.estimate_interval(r, a, p, pi, r_hat, method="normal", confidence=CONFIDENCE))
                 for e in (IPS(), SNIPS(), DR())}
        for metric, r, r_hat in (("quality", q, q_hat), ("cost", c, c_hat), ("reward", q - lam * c,
                                                                             q_hat - lam * c_hat))
    }
    return {"policy": targets.most_common(1)[0][0], "policy_versions": dict(versions), "scored": n,
            "unscored": unscored, "estimates": estimates, "overlap": overlap_diagnostics(a, p, pi).as_dict()}


def _interval(e: Any) -> dict[str, Any]:
    """``{"mean"|"value", "ci95"}``; an undefined bound (one round) is None."""
    lo, hi = (None if not np.isfinite(x) else float(x) for x in (e.low, e.high))
    key = "mean" if e.estimator == "on_policy_mean" else "value"
    return {key: float(e.value), "ci95": None if lo is None or hi is None else [lo, hi]}


def main(argv: list[str] | None = None) -> int:
    """``python -m serve.experiment_report``: print the estimates as JSON (exit 2 on a bad log)."""
    import orjson

    from router.errors import RoutingError

    parser = argparse.ArgumentParser(prog="python -m serve.experiment_report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", required=True, help="the service's traffic log directory (logbook.dir)")
    parser.add_argument("--name", required=True, help="the experiment's name (experiment.name)")
    parser.add_argument("--lam", type=float, required=True, help="cost weight of the reward, quality points per USD")
    args = parser.parse_args(argv)
    if not np.isfinite(args.lam) or args.lam < 0:
        print(f"error: --lam {args.lam} must be a finite number >= 0.", file=sys.stderr)
        return 2
    try:
        report = offpolicy_report(args.log, args.name, args.lam)
    except RoutingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not report["available"]:
        print(f"error: {report['reason']}", file=sys.stderr)
        return 2
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
