"""The service's traffic log and feedback store: JSON-lines parts in the training schema, group commit.

Every chat request becomes one line of a ``traffic-*.jsonl`` part in ``logbook.dir``; every
accepted ``POST /v1/feedback`` one line of a ``feedback-*.jsonl`` part. The columns of a traffic
line are those of :data:`router.data.schema.TRAFFIC_LOG_SCHEMA` (``messages`` as a JSON string,
``timestamp`` ISO-8601 UTC, ``quality`` absent until feedback is joined by the reader) plus the
service's optional ones: ``cache``, ``routed``, ``answered_model``, ``status``, ``error``,
``predicted_cost``, ``lam``, ``stream``, ``total_s``, ``ood`` (beyond the router's out-of-distribution
threshold), -- for the online policy -- ``explored``, and -- during an experiment -- ``experiment`` (its
name) and ``arm`` (``champion`` or ``challenger``, the policy that decided).
A feedback line is ``{"request_id", "timestamp", "quality", "score" | "thumbs", "comment"}``.
During an experiment the policy that did not act decides each routed request too (in the background,
:mod:`serve.experiments`); its scores go to ``shadow-*.jsonl`` parts, one line per request:
``{"request_id", "timestamp", "experiment", "shadow_arm", "shadow_version", "shadow_model",
"shadow_propensity", "shadow_probabilities", "shadow_quality", "shadow_cost"}`` -- the arm it stood
for, its version, what it would have chosen, its probability of the model the acting policy chose
(the logged ``chosen_model``), and per model its probability, predicted quality and predicted USD.
Shadow lines are written when they are ready, not durably awaited, and may precede their request's.
:func:`router.data.logs.scan_log` reads a log directory with the feedback and shadow scores joined.

Durability (one writer thread, one commit per ``commit_ms`` window):

* ``on_decision`` only enqueues (the event loop never blocks on disk);
* the writer waits at most ``commit_ms`` after the first uncommitted record, writes the batch to the
  open parts with one ``write`` each, then ``fsync``\\ s them: a ``kill -9`` loses at most the
  records of the last window; a torn last line (killed mid-write) is detected and skipped by the
  reader, and the next start opens new parts, so it appends cleanly;
* ``submit_feedback`` returns a future that resolves only after the commit holding the feedback
  (and, since the queue is ordered, the request it rates) was fsync'd: a 200 means it is on disk;
* ``committed()`` is the same barrier without a line: it returns once everything queued before it
  is on disk. With ``logbook.answer_after_commit`` the service awaits it before an answer leaves,
  so an answered request is never lost to a ``kill -9`` (at the price of up to one window of
  latency); by default answers leave at once and a kill loses at most the last window's records;
* the queue is first in, first out and every commit is whole before the next begins, so what a
  kill leaves on disk is always a prefix of the records in the order they were queued;
* ``close`` commits everything still queued (clean shutdown loses nothing).

Parts rotate when they pass ``rotate_mb`` or ``rotate_s``; names carry the start time, the process
id and a sequence number, so processes (``--workers N``) and restarts never write the same file.

Known ids: request ids logged by this process (and, at start, those already in ``dir``) are kept
in memory so feedback for an unknown id gets a 404 and a second feedback a 409. With several
worker processes each knows only its own requests (send feedback to the process that served them,
or run one worker when feedback matters).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import orjson

from serve.logbook import DecisionRecord

__all__ = ["Barrier", "FeedbackItem", "ShadowItem", "TrafficLog"]

log = logging.getLogger("serve")

_STOP = object()


class ShadowItem:
    """One shadow-score line (an experiment's policy that did not act, scored on a request)."""

    __slots__ = ("row",)

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row


class FeedbackItem:
    """One feedback line and the future that is resolved once it is durable."""

    __slots__ = ("done", "row")

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row
        self.done: Future[None] = Future()


class Barrier:
    """A marker through the writer's queue: ``done`` resolves once everything queued before it is on disk."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done: Future[None] = Future()


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def traffic_row(rec: DecisionRecord) -> dict[str, Any]:
    """The traffic-log line of one decision record (training schema plus the service's columns)."""
    return {
        "request_id": rec.request_id, "timestamp": _iso(rec.timestamp), "tenant": rec.tenant,
        "messages": orjson.dumps(rec.messages).decode(), "chosen_model": rec.chosen_model,
        "propensity": rec.propensity, "cost": float(rec.cost or 0.0), "latency_s": rec.latency_s,
        "input_tokens": rec.input_tokens, "output_tokens": rec.output_tokens,
        "policy_version": rec.policy_version, "cache": rec.cache, "routed": rec.routed,
        "answered_model": rec.answered_model, "status": rec.status, "error": rec.error,
        "predicted_cost": rec.predicted_cost, "lam": rec.lam, "stream": rec.stream, "total_s": rec.total_s,
        "explored": rec.explored, "ood": rec.ood, "experiment": rec.experiment, "arm": rec.arm,
    }


class _Part:
    """One open part file: appended with whole lines, fsync'd per commit, rotated by size and age."""

    def __init__(self, directory: Path, prefix: str, rotate_bytes: int, rotate_s: float) -> None:
        self.directory, self.prefix = directory, prefix
        self.rotate_bytes, self.rotate_s = rotate_bytes, rotate_s
        self.seq = 0
        self.fh: Any = None
        self.size = 0
        self.opened = 0.0

    def write(self, payload: bytes) -> None:
        if self.fh is not None and (self.size >= self.rotate_bytes or time.monotonic() - self.opened >= self.rotate_s):
            self.close()
        if self.fh is None:
            self._open()
        self.fh.write(payload)
        self.size += len(payload)

    def sync(self) -> None:
        if self.fh is not None:
            self.fh.flush()
            os.fsync(self.fh.fileno())

    def close(self) -> None:
        if self.fh is not None:
            self.sync()
            self.fh.close()
            self.fh = None

    def _open(self) -> None:
        self.seq += 1
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        path = self.directory / f"{self.prefix}-{stamp}-{os.getpid()}-{self.seq:05d}.jsonl"
        self.fh = path.open("xb")
        self.size, self.opened = 0, time.monotonic()
        _fsync_dir(self.directory)  # the new name itself is durable


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class TrafficLog:
    """The traffic log and feedback store of one service process (see the module docs).

    Args:
        directory: the log directory (created when missing).
        commit_ms: the group-commit window: at most this long between a record and its fsync.
        rotate_mb: start a new part after this many MiB.
        rotate_s: start a new part after this many seconds.
        max_batch: commit early once this many lines are waiting.
        on_commit: called from the writer thread with (lines, seconds) after each commit (metrics).
    """

    enabled = True
    keeps_shadow = True

    def __init__(self, directory: str | Path, *, commit_ms: float = 50.0, rotate_mb: float = 64.0,
                 rotate_s: float = 3600.0, max_batch: int = 4096,
                 on_commit: Callable[[int, float], None] | None = None) -> None:
        if not 0 < commit_ms <= 1000:
            raise ValueError(f"commit_ms = {commit_ms!r} must be in (0, 1000].")
        self.directory = Path(directory)
        self.commit_ms = commit_ms
        self.rotate_mb = rotate_mb
        self.rotate_s = rotate_s
        self.max_batch = max_batch
        self.on_commit = on_commit
        self.directory.mkdir(parents=True, exist_ok=True)
        self.requests_, self.rated_ = _known_ids(self.directory)
        self.feedback_listeners: list[Callable[[dict[str, Any]], None]] = []  # called once a feedback is durable
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        rb = int(rotate_mb * 1024 * 1024)
        self._traffic = _Part(self.directory, "traffic", rb, rotate_s)
        self._feedback = _Part(self.directory, "feedback", rb, rotate_s)
        self._shadow = _Part(self.directory, "shadow", rb, rotate_s)
        self.committed_ = 0
        self.failed_: str | None = None
        self._thread = threading.Thread(target=self._run, name="traffic-log-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ event-loop side
    def on_decision(self, record: DecisionRecord) -> None:
        """Queue one request's record (never blocks)."""
        self.requests_[record.request_id] = record.tenant
        self._queue.put(record)

    def feedback_status(self, request_id: str, tenant: str | None = None) -> str:
        """``"unknown"``, ``"rated"`` (feedback already given) or ``"open"``.

        With ``tenant``, another tenant's request is ``"unknown"``: a tenant can neither rate nor learn of
        requests it did not make.
        """
        owner = self.requests_.get(request_id)
        if owner is None or (tenant is not None and owner != tenant):
            return "unknown"
        return "rated" if request_id in self.rated_ else "open"

    def on_shadow(self, row: dict[str, Any]) -> None:
        """Queue one experiment's shadow score of a request (never blocks; written with the next commit)."""
        self._queue.put(ShadowItem(row))

    async def submit_feedback(self, row: dict[str, Any]) -> None:
        """Queue one feedback line and wait until it is on disk (raises OSError when the commit failed)."""
        rid = row["request_id"]
        self.rated_.add(rid)  # claimed now: a concurrent duplicate gets 409
        item = FeedbackItem(row)
        self._queue.put(item)
        try:
            await asyncio.wrap_future(item.done)
        except BaseException:
            self.rated_.discard(rid)
            raise
        for fn in self.feedback_listeners:
            fn(row)

    async def committed(self) -> None:
        """Wait until every record queued so far is on disk (raises OSError when the commit failed)."""
        if not self._thread.is_alive():
            raise OSError(self.failed_ or "the traffic log is closed")
        item = Barrier()
        self._queue.put(item)
        await asyncio.wrap_future(item.done)

    def close(self) -> None:
        """Commit everything queued, close the parts (a clean shutdown loses nothing)."""
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        window = self.commit_ms / 1000.0
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + window
            stop = batch[0] is _STOP
            while not stop and len(batch) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                batch.append(item)
                stop = item is _STOP
            self._commit([x for x in batch if x is not _STOP])
            if stop:
                while True:  # anything queued after the stop marker is still written
                    try:
                        rest = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if rest is not _STOP:
                        self._commit([rest])
                self._traffic.close()
                self._feedback.close()
                self._shadow.close()
                return

    def _commit(self, batch: list[Any]) -> None:
        if not batch:
            return
        t0 = time.perf_counter()
        traffic: list[bytes] = []
        feedback: list[FeedbackItem] = []
        barriers: list[Barrier] = []
        shadow: list[bytes] = []
        for item in batch:
            if isinstance(item, FeedbackItem):
                feedback.append(item)
            elif isinstance(item, Barrier):
                barriers.append(item)
            elif isinstance(item, ShadowItem):
                try:
                    shadow.append(orjson.dumps(item.row, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
                except Exception as exc:  # reported, never fatal to the batch
                    log.error("traffic log: shadow score of %s cannot be written: %s", item.row.get("request_id"), exc)
            else:
                try:
                    traffic.append(orjson.dumps(traffic_row(item), option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
                except Exception as exc:  # one bad record must not lose its batch; it is reported
                    log.error("traffic log: request %s cannot be written: %s", getattr(item, "request_id", "?"), exc)
        try:
            if traffic:
                self._traffic.write(b"".join(traffic))
                self._traffic.sync()
            if feedback:
                self._feedback.write(b"".join(orjson.dumps(f.row) + b"\n" for f in feedback))
                self._feedback.sync()
            if shadow:
                self._shadow.write(b"".join(shadow))
                self._shadow.sync()
        except OSError as exc:
            self.failed_ = f"{type(exc).__name__}: {exc}"
            log.error("traffic log: commit of %d line(s) failed: %s", len(batch), exc)
            for done in (*(f.done for f in feedback), *(b.done for b in barriers)):
                done.set_exception(exc)
            return
        for done in (*(f.done for f in feedback), *(b.done for b in barriers)):
            done.set_result(None)
        self.committed_ += len(traffic) + len(feedback) + len(shadow)
        if self.on_commit is not None:
            self.on_commit(len(traffic) + len(feedback) + len(shadow), time.perf_counter() - t0)


def _known_ids(directory: Path) -> tuple[dict[str, str], set[str]]:
    """Request ids already logged (with their tenant) and already rated in ``directory`` (from earlier runs)."""
    requests: dict[str, str] = {}
    rated: set[str] = set()
    for prefix in ("traffic-", "feedback-"):
        for part in sorted(directory.glob(prefix + "*.jsonl")):
            for line in part.read_bytes().split(b"\n"):
                if not line.strip():
                    continue
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # a torn tail; the reader reports it
                rid = row.get("request_id") if isinstance(row, dict) else None
                if not isinstance(rid, str):
                    continue
                if prefix == "traffic-":
                    requests[rid] = str(row.get("tenant") or "default")
                else:
                    rated.add(rid)
    return requests, rated
