"""Reading the service's log directory: traffic parts, feedback parts, torn tails.

``python -m serve`` with ``logbook.dir`` writes JSON-lines parts (see :mod:`serve.trafficlog`):
``traffic-*.jsonl`` (one routed request per line, in :data:`~router.data.schema.TRAFFIC_LOG_SCHEMA`
plus the service's columns) and ``feedback-*.jsonl`` (``{"request_id", "quality", ...}``). This
module reads such a directory into one frame:

* a part that ends without a newline has a **torn tail** (the process was killed mid-write): the
  partial line is skipped and reported; so is any line that is not a JSON object;
* feedback is **joined** to its request: ``quality`` is the feedback's quality (``score``, or 1/0
  for thumbs up/down), and ``feedback_comment`` its comment; feedback for an id with no request,
  and a second feedback for one id, are reported and not used;
* an experiment's **shadow scores** (``shadow-*.jsonl``: the policy that did not act, scored on the
  same request) are joined the same way: their ``shadow_*`` columns (see :mod:`serve.trafficlog`)
  are added to the request's row, ``shadow_probabilities`` / ``shadow_quality`` / ``shadow_cost``
  as structs keyed by model; a score for an id with no request is counted (``orphan_shadow``) --
  the process ended before writing the request -- and not used;
* by default only the **routing decisions** are kept -- rows the policy routed (``routed``), not
  answered from the cache (``cache`` not ``hit_*``) and answered (``status`` 200): pass-through
  requests and cache hits were not chosen by the policy, so they carry no information about it;
  the report counts what was left out (``excluded``), and ``decisions_only=False`` keeps all;
* ``prompt`` is filled with the rendered conversation
  (:func:`router.encoders.render_conversation`, what the router encodes), so every reader of
  traffic logs works on service logs unchanged.

Nothing is dropped silently: :func:`read_service_log` returns a :class:`ServiceLogReport`, and a
:class:`TornLogWarning` is issued when anything was skipped.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "traffic-1.jsonl").write_text(
    ...     '{"request_id": "r1", "timestamp": "2026-01-01T00:00:00+00:00", "messages": '
    ...     '"[{\\\\"role\\\\": \\\\"user\\\\", \\\\"content\\\\": \\\\"hi\\\\"}]", "chosen_model": "a", '
    ...     '"propensity": 1.0, "cost": 0.0}\\n{"request_id": "r2", "tim')
    >>> _ = (d / "feedback-1.jsonl").write_text('{"request_id": "r1", "quality": 1.0}\\n')
    >>> import warnings
    >>> with warnings.catch_warnings(record=True):
    ...     df, report = read_service_log(d)
    >>> df["prompt"].to_list(), df["quality"].to_list(), report.torn_bytes
    (['hi'], [1.0], 25)
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from router.errors import SourceNotFoundError

__all__ = ["ServiceLogReport", "TornLogWarning", "is_service_log", "read_service_log"]


class TornLogWarning(UserWarning):
    """Lines of a service log were skipped (a torn tail after a crash, or unreadable lines)."""


@dataclass
class ServiceLogReport:
    """What reading a service log directory found besides the rows.

    Attributes:
        parts: traffic part files read.
        rows: request rows read.
        feedback: feedback lines joined to a request.
        torn: ``(file, bytes)`` of each torn tail skipped.
        bad_lines: ``(file, line number)`` of lines that are not JSON objects (skipped).
        orphan_feedback: request ids of feedback with no request in the log.
        duplicate_feedback: request ids with more than one feedback line (the first is used).
        excluded: rows left out as not routing decisions, by reason (``passthrough``, ``cache_hit``, ``failed``).
        shadow: shadow-score lines joined to a request.
        orphan_shadow: shadow-score lines whose request is not in the log.
    """

    parts: int = 0
    rows: int = 0
    feedback: int = 0
    torn: list[tuple[str, int]] = field(default_factory=list)
    bad_lines: list[tuple[str, int]] = field(default_factory=list)
    orphan_feedback: list[str] = field(default_factory=list)
    duplicate_feedback: list[str] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)
    shadow: int = 0
    orphan_shadow: int = 0

    @property
    def torn_bytes(self) -> int:
        return sum(n for _, n in self.torn)

    def problems(self) -> str:
        """A one-line summary of what was skipped ('' when nothing)."""
        out = []
        if self.torn:
            out.append(f"{len(self.torn)} torn tail(s) ({self.torn_bytes} bytes) skipped in "
                       f"{', '.join(Path(f).name for f, _ in self.torn)}")
        if self.bad_lines:
            f, n = self.bad_lines[0]
            out.append(f"{len(self.bad_lines)} unreadable line(s) skipped (first: {Path(f).name} line {n})")
        if self.orphan_feedback:
            out.append(f"{len(self.orphan_feedback)} feedback line(s) for unknown request ids "
                       f"(first {self.orphan_feedback[0]!r})")
        if self.duplicate_feedback:
            out.append(f"{len(self.duplicate_feedback)} request(s) with repeated feedback (first one used)")
        return "; ".join(out)


def is_service_log(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a directory holding the service's ``traffic-*.jsonl`` parts."""
    p = Path(path)
    return p.is_dir() and any(p.glob("traffic-*.jsonl"))


def _read_lines(path: Path, report: ServiceLogReport) -> list[dict[str, Any]]:
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        report.torn.append((str(path), len(data) - end))
    rows: list[dict[str, Any]] = []
    for i, line in enumerate(data[:end].split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            report.bad_lines.append((str(path), i))
            continue
        rows.append(obj)
    return rows


def _exclusion(row: dict[str, Any]) -> str | None:
    if row.get("routed") is False:
        return "passthrough"
    if str(row.get("cache") or "").startswith("hit"):
        return "cache_hit"
    if row.get("status", 200) != 200:
        return "failed"
    return None


def read_service_log(path: str | os.PathLike[str], *,
                     decisions_only: bool = True) -> tuple[pl.DataFrame, ServiceLogReport]:
    """Rows of a service log directory with feedback joined (see the module docs), and the report.

    ``decisions_only`` keeps only the policy's routing decisions (the default, what training reads).
    """
    from router.encoders import render_conversation

    p = Path(path)
    parts = sorted(p.glob("traffic-*.jsonl")) if p.is_dir() else []
    if not parts:
        raise SourceNotFoundError(f"{p}: no traffic-*.jsonl parts; give the service's logbook.dir.")
    report = ServiceLogReport(parts=len(parts))
    rows: list[dict[str, Any]] = []
    for part in parts:
        rows.extend(_read_lines(part, report))
    fb: dict[str, dict[str, Any]] = {}
    for part in sorted(p.glob("feedback-*.jsonl")):
        for obj in _read_lines(part, report):
            rid = obj.get("request_id")
            if not isinstance(rid, str):
                report.bad_lines.append((str(part), -1))
            elif rid in fb:
                report.duplicate_feedback.append(rid)
            else:
                fb[rid] = obj
    shadows: dict[str, dict[str, Any]] = {}
    for part in sorted(p.glob("shadow-*.jsonl")):
        for obj in _read_lines(part, report):
            rid = obj.get("request_id")
            if isinstance(rid, str):
                shadows.setdefault(rid, obj)
            else:
                report.bad_lines.append((str(part), -1))
    seen = set()
    for r in rows:
        rid = r.get("request_id")
        seen.add(rid)
        sh = shadows.get(rid) if isinstance(rid, str) else None
        if sh is not None:
            r.update({k: v for k, v in sh.items() if k.startswith("shadow_")})
            report.shadow += 1
        f = fb.get(rid) if isinstance(rid, str) else None
        if f is not None:
            r["quality"] = f.get("quality")
            r["feedback_comment"] = f.get("comment")
            report.feedback += 1
        if r.get("prompt") is None and isinstance(r.get("messages"), str):
            try:
                r["prompt"] = render_conversation(orjson.loads(r["messages"]))
            except Exception:  # left empty; validation names the row
                r["prompt"] = None
    report.orphan_feedback = [rid for rid in fb if rid not in seen]
    report.orphan_shadow = sum(rid not in seen for rid in shadows)
    if decisions_only:
        kept = []
        for r in rows:
            why = _exclusion(r)
            if why is None:
                kept.append(r)
            else:
                report.excluded[why] = report.excluded.get(why, 0) + 1
        rows = kept
    report.rows = len(rows)
    problems = report.problems()
    if problems:
        warnings.warn(f"{p}: {problems}.", TornLogWarning, stacklevel=2)
    df = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame({"request_id": []})
    for col in ("quality", "feedback_comment"):
        if col not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.Float64 if col == "quality" else pl.String).alias(col))
    return df, report
