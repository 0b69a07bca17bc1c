"""Command-line interface: ``python -m router <group> <command> ...``.

Commands are registered on one :class:`argparse.ArgumentParser` built by :func:`build_parser`; each
group adds its sub-commands in a ``_add_<group>`` function and each command sets ``func`` to the
function that runs it (taking the parsed arguments, returning an exit code). To add a group, write
``_add_route(subparsers)`` and call it from :func:`build_parser`.

Commands:

* ``data describe SOURCE [--json]`` -- rows, models, tasks, per-model mean quality and cost, the oracle,
  rows per split and every group of dropped rows with its reason. ``SOURCE`` is a registered name
  (see :data:`router.data.registry.SOURCES`) or a path to an outcomes file in our format.
* ``data prompts SOURCE --output FILE [--split test]`` -- a split's prompts as the JSON lines ``route`` reads.
* ``route --model DIR --input FILE --output FILE`` -- route a file of prompts (see :mod:`router.cli_route`).

Errors from the library (:class:`~router.errors.RoutingError`) are printed to stderr as one line and
exit with code 2; nothing heavy (torch, sentence-transformers, litellm) is imported.

Example:
    >>> build_parser().parse_args(["data", "describe", "routerbench", "--json"]).json
    True
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from router.errors import RoutingError

__all__ = ["build_parser", "describe", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every command group registered."""
    parser = argparse.ArgumentParser(prog="python -m router", description="Learned LLM routing toolkit.")
    groups = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    _add_data(groups)
    from router.cli_route import add_parser as _add_route

    _add_route(groups)
    return parser


def _add_data(groups: Any) -> None:
    data = groups.add_parser("data", help="inspect routing data sources")
    commands = data.add_subparsers(dest="command", metavar="COMMAND", required=True)
    desc = commands.add_parser(
        "describe",
        help="summarise a data source",
        description="Rows, models, tasks, per-model quality and cost, the oracle, splits and dropped rows.",
    )
    desc.add_argument("source", metavar="SOURCE", help="a registered source name or a path to an outcomes file")
    desc.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    desc.set_defaults(func=_run_describe)
    from router.cli_route import add_prompts_parser

    add_prompts_parser(commands)


def describe(source: str) -> dict[str, Any]:
    """The summary ``data describe`` prints, as a JSON-able dict."""
    from collections import Counter

    from router.data.loaders import prompts_in_several_splits
    from router.data.registry import load_source

    o = load_source(source)
    per_model = o.per_model_frame()
    out: dict[str, Any] = {
        "source": o.source,
        "rows": o.n_prompts,
        "models": list(o.models),
        "tasks": dict(sorted(Counter(str(t) for t in o.tasks).items(), key=lambda kv: (-kv[1], kv[0]))),
        "quality_kind": o.quality_kind,
        "cost_kind": o.cost_kind,
        "per_model": [
            {"model": r["model"], "mean_quality": r["mean_quality"], "mean_cost": r["mean_cost"]}
            for r in per_model.iter_rows(named=True)
        ],
        "oracle": o.oracle(),
        "best_single_model": o.best_single_model(),
        "dropped": [{"reason": d.reason, "count": d.count, "file": d.file} for d in o.dropped],
        "dropped_total": o.n_dropped,
    }
    if o.split is not None:
        out["splits"] = dict(sorted(Counter(str(s) for s in o.split).items()))
        shared = prompts_in_several_splits(o)
        out["prompts_in_several_splits"] = [{"prompt": t[:80], "prompt_ids": ids} for t, ids in shared.items()]
    return out


def _format(d: dict[str, Any]) -> str:
    lines = [
        f"source:  {d['source']}  (quality: {d['quality_kind']}, cost: {d['cost_kind']})",
        f"rows:    {d['rows']}",
        f"models:  {len(d['models'])}",
        f"tasks:   {len(d['tasks'])}  " + ", ".join(f"{k} ({v})" for k, v in list(d["tasks"].items())[:12])
        + (" ..." if len(d["tasks"]) > 12 else ""),
    ]
    if "splits" in d:
        lines.append("splits:  " + ", ".join(f"{k} {v}" for k, v in d["splits"].items()))
    width = max(len(r["model"]) for r in d["per_model"])
    lines += ["", f"  {'model':<{width}}  mean quality  mean cost (USD)"]
    for r in d["per_model"]:
        lines.append(f"  {r['model']:<{width}}  {r['mean_quality']:12.4f}  {r['mean_cost']:.6g}")
    oracle = d["oracle"]
    lines.append(f"  {'oracle':<{width}}  {oracle['quality']:12.4f}  {oracle['cost']:.6g}")
    lines.append(f"\nbest single model: {d['best_single_model']}")
    lines.append(f"dropped rows: {d['dropped_total']}")
    for g in d["dropped"]:
        where = f" [{g['file']}]" if g["file"] else ""
        lines.append(f"  {g['count']:>6}  {g['reason']}{where}")
    shared = d.get("prompts_in_several_splits") or []
    if shared:
        lines.append(f"prompt texts in more than one split (kept): {len(shared)}")
        for s in shared[:5]:
            lines.append(f"  {', '.join(s['prompt_ids'])}: {s['prompt']!r}")
        if len(shared) > 5:
            lines.append("  ...")
    return "\n".join(lines)


def _run_describe(args: argparse.Namespace) -> int:
    d = describe(args.source)
    print(json.dumps(d, indent=2) if args.json else _format(d))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; library errors print one line to stderr and return 2."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except RoutingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (BrokenPipeError, KeyboardInterrupt):
        return 1
    return code
