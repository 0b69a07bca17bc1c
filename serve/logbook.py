"""The decision record of every chat request and the hook that receives it.

The service calls ``logbook.on_decision(record)`` once per chat request, after the answer (or the
failure) is known, on the event loop thread; implementations must not block. The record carries
what off-policy evaluation and online learning need later (the columns of
:data:`router.data.schema.TRAFFIC_LOG_SCHEMA`, plus the decision's predictions):

========================  ====================================================================
``request_id``            the ``x-request-id`` of the response
``timestamp``             UNIX seconds when the request arrived
``tenant``                who asked (``"default"`` until keys and tenants exist)
``messages``              the conversation as sent
``chosen_model``          the router's choice (or the model named in a pass-through request)
``answered_model``        the model that actually answered (differs after a fallback)
``propensity``            probability the policy gave ``chosen_model`` (1.0 for pass-through)
``routed``                False for pass-through requests
``predicted_cost``        USD predicted for ``chosen_model``; ``cost`` the USD actually spent
``predicted``             per candidate model: predicted quality, cost and latency
``latency_s``             provider time; ``total_s`` the whole request
``input_tokens`` ...      tokens of the answer
``policy_version``        e.g. ``demo-router/3``
``cache``                 ``hit_exact``, ``hit_semantic``, ``miss`` or ``bypass``
``status``                HTTP status returned; ``error`` the message when it failed
``explored``              True when the online policy explored (chose other than its greedy pick)
``ood``                   True when the prompt was beyond the router's out-of-distribution threshold
``experiment``, ``arm``   the running experiment's name and the arm that decided (``champion`` or
                          ``challenger``); None outside experiments
========================  ====================================================================

During an experiment the policy that did *not* act decides the same request in the background (see
:mod:`serve.experiments`); its result reaches ``logbook.on_shadow(row)``, which the traffic log
writes as a ``shadow-*.jsonl`` line joined to the request by id (the other logbooks drop it).

:class:`NullLogbook` drops records (the default); :class:`JsonlLogbook` appends them to a JSON-lines
file from a writer thread (group commit: one write per batch of records);
:class:`serve.trafficlog.TrafficLog` is the traffic log in the training schema, with feedback.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = ["DecisionRecord", "JsonlLogbook", "Logbook", "NullLogbook", "make_logbook"]


@dataclass(slots=True)
class DecisionRecord:
    """One chat request's decision and outcome (see the module docs for the fields)."""

    request_id: str
    timestamp: float
    tenant: str
    messages: list[Any]
    chosen_model: str
    propensity: float
    routed: bool
    policy_version: str
    cache: str
    answered_model: str | None = None
    predicted_cost: float | None = None
    predicted: dict[str, dict[str, float]] = field(default_factory=dict)
    cost: float | None = None
    latency_s: float | None = None
    total_s: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    stream: bool = False
    status: int = 200
    error: str | None = None
    lam: float | None = None
    explored: bool = False
    ood: bool | None = None
    experiment: str | None = None
    arm: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Logbook(Protocol):
    """Receives every decision record; ``close`` flushes at shutdown."""

    enabled: bool
    keeps_shadow: bool  # writes shadow scores (only the traffic log does)

    def on_decision(self, record: DecisionRecord) -> None: ...

    def on_shadow(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class NullLogbook:
    """Drops every record (the default). ``enabled`` False lets the hot path skip building records."""

    enabled = False
    keeps_shadow = False

    def on_decision(self, record: DecisionRecord) -> None:
        return None

    def on_shadow(self, row: dict[str, Any]) -> None:
        return None

    def close(self) -> None:
        return None


class JsonlLogbook:
    """Appends records as JSON lines to ``path`` from a background thread (one write per batch)."""

    enabled = True
    keeps_shadow = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._queue: queue.SimpleQueue[DecisionRecord | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="logbook-writer", daemon=True)
        self._thread.start()

    def on_decision(self, record: DecisionRecord) -> None:
        self._queue.put(record)

    def on_shadow(self, row: dict[str, Any]) -> None:
        return None  # raw decision records only; experiments' shadow scores need the traffic log (logbook.dir)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        import orjson

        with self.path.open("ab") as fh:
            while True:
                item = self._queue.get()
                batch = [item]
                while True:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = any(r is None for r in batch)
                lines = [orjson.dumps(r.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
                         for r in batch if r is not None]
                if lines:
                    fh.write(b"".join(lines))
                    fh.flush()
                if stop:
                    return


def make_logbook(settings: Any, on_commit: Any = None) -> Logbook:
    """The logbook :class:`serve.settings.LogbookSettings` asks for: the traffic log, a raw file, or none."""
    if settings.dir:
        from serve.trafficlog import TrafficLog

        return TrafficLog(settings.dir, commit_ms=settings.commit_ms, rotate_mb=settings.rotate_mb,
                          rotate_s=settings.rotate_s, on_commit=on_commit)
    return JsonlLogbook(settings.path) if settings.path else NullLogbook()
