"""The serving benchmark's report: ``serve.json`` (every row) and ``serve.md`` (tables, ratios, machine)."""

from __future__ import annotations

import datetime as dt
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from bench.serve_procs import machine_info, versions

# issue 11's targets for our service: misses at 1,000 req/s with <= 1 ms CPU each, hits at 5,000 req/s
GOAL_MISS_RATE, GOAL_MISS_CPU_MS, GOAL_HIT_RATE = 1000, 1.0, 5000

LABELS = {
    "null": "null server (generator ceiling)",
    "provider": "provider alone (baseline)",
    "ours-miss": "our service, cache misses",
    "ours-hit": "our service, cache hits",
    "litellm-router": "LiteLLM Router (ASGI app)",
    "litellm-proxy": "LiteLLM proxy",
}


def _fmt(x: Any, nd: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{nd}f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Per target: the highest rate sustained (with all lower rates of its ladder sustained too)."""
    out: dict[str, dict] = {}
    for target in LABELS:
        mine = sorted((r for r in rows if r["target"] == target), key=lambda r: r["rate"])
        if not mine:
            continue
        best = None
        for r in mine:
            if not r["sustained"]:
                break
            best = r
        out[target] = {
            "max_sustained_rate": best["rate"] if best else 0,
            "cpu_ms_per_request": best["cpu_s_per_1000"] if best else None,
            "added_p95_ms": (best["added_ms"] or {}).get("p95") if best else None,
            "rates_measured": [r["rate"] for r in mine],
            "first_unsustained": next(({"rate": r["rate"], "why": why(r)} for r in mine if not r["sustained"]), None),
        }
    return out


def why(row: dict) -> str:
    reasons = []
    if row["achieved_rate"] < 0.95 * row["rate"]:
        reasons.append(f"achieved {row['achieved_rate']:.0f}/s")
    if row["error_rate"] >= 0.001:
        reasons.append(f"errors {row['error_rate']:.1%} {row['errors']}")
    if row["added_ms"] and row["added_ms"]["p95"] >= 10:
        reasons.append(f"added P95 {row['added_ms']['p95']:.1f} ms")
    return ", ".join(reasons) or "-"


def _cpu_at(rows: list[dict], target: str, rate: float) -> float | None:
    for r in rows:
        if r["target"] == target and r["rate"] == rate and r["cpu_s_per_1000"] is not None:
            return r["cpu_s_per_1000"]
    return None


def ratios(rows: list[dict], summary: dict[str, dict]) -> list[dict]:
    """Ours against each LiteLLM peer: highest sustained rate, and CPU per request at a rate both ran."""
    out = []
    for ours in ("ours-miss", "ours-hit"):
        for peer in ("litellm-router", "litellm-proxy"):
            if ours not in summary or peer not in summary:
                continue
            a, b = summary[ours]["max_sustained_rate"], summary[peer]["max_sustained_rate"]
            common = sorted(set(summary[ours]["rates_measured"]) & set(summary[peer]["rates_measured"]))
            both_ok = [r for r in common if _sustained(rows, ours, r) and _sustained(rows, peer, r)]
            at = both_ok[-1] if both_ok else (common[0] if common else None)
            cpu_ours = _cpu_at(rows, ours, at) if at is not None else None
            cpu_peer = _cpu_at(rows, peer, at) if at is not None else None
            out.append({
                "ours": ours, "peer": peer,
                "max_rate_ours": a, "max_rate_peer": b, "max_rate_ratio": a / b if b else None,
                "cpu_compared_at_rate": at, "cpu_ms_ours": cpu_ours, "cpu_ms_peer": cpu_peer,
                "cpu_ratio_peer_over_ours": cpu_peer / cpu_ours if cpu_ours and cpu_peer else None,
            })
    return out


def _sustained(rows: list[dict], target: str, rate: float) -> bool:
    return any(r["target"] == target and r["rate"] == rate and r["sustained"] for r in rows)


def goals(summary: dict[str, dict], rows: list[dict]) -> list[dict]:
    out = []
    if "ours-miss" in summary:
        cpu = _cpu_at(rows, "ours-miss", GOAL_MISS_RATE)
        ok = _sustained(rows, "ours-miss", GOAL_MISS_RATE) and cpu is not None and cpu <= GOAL_MISS_CPU_MS
        out.append({"goal": f"misses at {GOAL_MISS_RATE}/s, added P95 < 10 ms, <= {GOAL_MISS_CPU_MS} ms CPU/request",
                    "met": ok, "measured": f"max sustained {summary['ours-miss']['max_sustained_rate']}/s, "
                                           f"CPU at {GOAL_MISS_RATE}/s: {_fmt(cpu, 2)} ms/request"})
    if "ours-hit" in summary:
        out.append({"goal": f"hits at {GOAL_HIT_RATE}/s", "met": _sustained(rows, "ours-hit", GOAL_HIT_RATE),
                    "measured": f"max sustained {summary['ours-hit']['max_sustained_rate']}/s"})
    return out


def write_report(bench: Any, logs: Path) -> dict:
    args = bench.args
    rows = bench.rows
    summary = summarise(rows)
    root = Path(__file__).resolve().parents[1]
    report = {
        "benchmark": "serve",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "bench/bench_serve.py", *map(shlex.quote, sys.argv[1:])]),
        "machine": getattr(bench, "machine", None) or machine_info(),
        "versions": versions(root),
        "layout": {"target_cpu": args.service_cpu, "loadgen_and_provider_cpus": args.load_cpus},
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "served_command": getattr(bench, "service_cmd", None),
        "criteria": {"min_achieved_fraction": 0.95, "max_error_rate": 0.001, "max_added_p95_ms": 10.0},
        "notes": bench.notes,
        "summary": summary,
        "ratios": ratios(rows, summary),
        "goals": goals(summary, rows),
        "profile": bench.profile,
        "logs": str(logs),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    out.with_suffix(".md").write_text(markdown(report) + "\n")
    return report


def markdown(rep: dict) -> str:
    m, s = rep["machine"], rep["settings"]
    lines = [
        "# Serving benchmark: open-loop load, our service vs LiteLLM's Router and proxy",
        "",
        f"Command: `{rep['command']}` ({rep['date']}, commit {rep['versions'].get('git_commit')}).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores (`nproc` {m['nproc']}), kernel {m['kernel']}, Python {m['python']}; "
        f"load average at start {m['load_average_at_start']}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in rep["versions"].items() if k != "git_commit" and v) + ".",
        "",
        f"Layout: the target under test alone on core {rep['layout']['target_cpu']} (`taskset`); the load generator "
        f"and the provider on core(s) {rep['layout']['loadgen_and_provider_cpus']}. Provider: "
        f"`python -m serve.provider --data demo --latency-ms {s['latency_ms']:g}`. Steps of {s['warmup']:g} s warm-up "
        f"+ {s['duration']:g} s measured; requests sent on a fixed schedule (open loop), latency from the scheduled "
        f"send time; `max_tokens` {s['max_tokens']}. Added latency = the target's percentile minus the provider "
        "alone's at the same rate (for hits: minus the null server's, the floor of the measurement). Sustained = "
        "achieved >= 95% of offered, errors < 0.1%, added P95 < 10 ms; a target stops at its first unsustained rate.",
        "",
    ]
    if rep["served_command"]:
        lines += [f"Our service: `{' '.join(rep['served_command'][1:])}`.", ""]
    for note in rep["notes"]:
        lines.append(f"- {note}")
    lines.append("")
    lines += ["## Summary", "", "| target | highest rate sustained (req/s) | CPU ms/request there | added P95 there (ms) | "
              "first rate missed: why |", "|---|---:|---:|---:|---|"]
    for t, v in rep["summary"].items():
        miss = v["first_unsustained"]
        lines.append(f"| {LABELS[t]} | {v['max_sustained_rate']} | {_fmt(v['cpu_ms_per_request'], 2)} | "
                     f"{_fmt(v['added_p95_ms'], 2)} | {(str(miss['rate']) + ': ' + miss['why']) if miss else '-'} |")
    if rep["goals"]:
        lines += ["", "Issue 11's targets: " + "; ".join(
            f"{g['goal']}: **{'met' if g['met'] else 'missed'}** ({g['measured']})" for g in rep["goals"]) + "."]
    if rep["ratios"]:
        lines += ["", "## Ratios against LiteLLM", "", "| ours | peer | max rate ours / peer | CPU per request: peer / ours "
                  "(at rate) |", "|---|---|---:|---:|"]
        for r in rep["ratios"]:
            ratio = _fmt(r["max_rate_ratio"], 1) + "x" if r["max_rate_ratio"] else f"{r['max_rate_ours']} vs 0"
            cpu = (f"{_fmt(r['cpu_ratio_peer_over_ours'], 1)}x ({_fmt(r['cpu_ms_peer'], 2)} vs {_fmt(r['cpu_ms_ours'], 2)} ms "
                   f"at {r['cpu_compared_at_rate']}/s)") if r["cpu_ratio_peer_over_ours"] else "-"
            lines.append(f"| {LABELS[r['ours']]} | {LABELS[r['peer']]} | {ratio} | {cpu} |")
    lines += ["", "## Every step", ""]
    for t in LABELS:
        mine = [r for r in rep["rows"] if r["target"] == t]
        if not mine:
            continue
        lines += [f"### {LABELS[t]}", "", "| offered/s | achieved/s | errors | P50 | P95 | P99 ms | added P50 | P95 | "
                  "P99 ms | CPU s/1k req | core busy | generator lag P99 ms | x-cache | sustained |",
                  "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for r in mine:
            lat, add = r["latency_ms"], r["added_ms"] or {}
            errs = f"{r['error_rate']:.2%}" + (f" {r['errors']}" if r["errors"] else "")
            lines.append(
                f"| {r['rate']:g} | {r['achieved_rate']:.0f} | {errs} | {_fmt(lat['p50'], 2)} | {_fmt(lat['p95'], 2)} | "
                f"{_fmt(lat['p99'], 2)} | {_fmt(add.get('p50'), 2)} | {_fmt(add.get('p95'), 2)} | {_fmt(add.get('p99'), 2)} | "
                f"{_fmt(r['cpu_s_per_1000'], 3)} | {_pct(r.get('cpu_busy_fraction'))} | "
                f"{_fmt(r['dispatch_lag_ms']['p99'], 2)} | "
                f"{' '.join(f'{k}:{v}' for k, v in sorted(r['header_counts'].items())) or '-'} | "
                f"{'yes' if r['sustained'] else 'no'} |")
        lines.append("")
    prof = rep["profile"]
    if prof:
        lines += ["## Where our service's time goes (a missed target, profiled)", ""]
        if "error" in prof:
            lines.append(f"Profile not taken: {prof['error']}")
        else:
            load = prof.get("load") or {}
            lines += [f"py-spy sampled the service under {prof['target']} load at {prof['rate']}/s "
                      f"({prof['samples']} samples while it ran, idle time left out; achieved "
                      f"{_fmt(load.get('achieved_rate'), 0)}/s; inclusive leaves out the frames under 90% or more "
                      "of the samples, the process and event-loop entry points): "
                      f"`{prof['command']}`.", "", "| own time % | function |", "|---:|---|"]
            lines += [f"| {e['percent']:.1f} | `{e['function']}` |" for e in prof["top_self"][:15]]
            lines += ["", "| inclusive % | function |", "|---:|---|"]
            lines += [f"| {e['percent']:.1f} | `{e['function']}` |" for e in prof["top_inclusive"][:15]]
    return "\n".join(lines)
