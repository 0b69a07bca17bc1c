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

Feedback from any process (``--workers N``, or several services sharing one ``dir``): every request
id this process logs is kept in memory with its tenant, and an id it does not know is looked up in
the other writers' traffic parts -- only the bytes added since the last look are read -- waiting up
to ``lookup_wait_s`` (default 1 s + two commit windows) for the writer that served it to commit, so
feedback sent to another worker right after the answer finds its request; an id still not found is
unknown (404). Duplicates are refused across processes by a claim: an empty file
``.feedback-claims/<sha256 of the id>`` created with ``O_EXCL`` (one process wins) before the
feedback is queued, then removed once the feedback line is durable; after creating its claim a
process re-reads the other writers' feedback parts, so feedback committed (and unclaimed) meanwhile
is seen. A claim left by a process killed before its commit is taken over after ``STALE_CLAIM_S``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
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

__all__ = ["STALE_CLAIM_S", "Barrier", "FeedbackItem", "ShadowItem", "TrafficLog"]

log = logging.getLogger("serve")

_STOP = object()
#: A feedback claim older than this whose feedback is in no part was left by a process that died
#: before its commit; another process may take it over.
STALE_CLAIM_S = 60.0
CLAIMS = ".feedback-claims"


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
        lookup_wait_s: how long a request id this process does not know is looked for in the other
            writers' parts before it is called unknown (None: 1 s plus two commit windows).
    """

    enabled = True
    keeps_shadow = True

    def __init__(self, directory: str | Path, *, commit_ms: float = 50.0, rotate_mb: float = 64.0,
                 rotate_s: float = 3600.0, max_batch: int = 4096,
                 on_commit: Callable[[int, float], None] | None = None, lookup_wait_s: float | None = None) -> None:
        if not 0 < commit_ms <= 1000:
            raise ValueError(f"commit_ms = {commit_ms!r} must be in (0, 1000].")
        self.directory = Path(directory)
        self.commit_ms = commit_ms
        self.rotate_mb = rotate_mb
        self.rotate_s = rotate_s
        self.max_batch = max_batch
        self.on_commit = on_commit
        self.lookup_wait_s = lookup_wait_s
        self._lookup_s = 1.0 + 2 * commit_ms / 1000.0 if lookup_wait_s is None else lookup_wait_s
        self.directory.mkdir(parents=True, exist_ok=True)
        self.claims = self.directory / CLAIMS
        self.claims.mkdir(exist_ok=True)
        self.requests_: dict[str, str] = {}  # request id -> tenant: this process's and those read from parts
        self.rated_: set[str] = set()  # request ids with durable feedback (any process)
        self._claimed: set[str] = set()  # request ids whose feedback this process is writing
        self._offsets: dict[Path, int] = {}  # part -> bytes read (whole lines)
        self._scan(skip_own=False)  # everything already in the directory
        self._scan_lock: asyncio.Lock | None = None
        self._scans_asked = 0
        self._scans_done = 0
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
        """``"unknown"``, ``"rated"`` (feedback given or being written) or ``"open"``, from this process's memory.

        With ``tenant``, another tenant's request is ``"unknown"``: a tenant can neither rate nor learn of
        requests it did not make. :meth:`find_request` also looks in the other writers' parts.
        """
        owner = self.requests_.get(request_id)
        if owner is None or (tenant is not None and owner != tenant):
            return "unknown"
        return "rated" if request_id in self.rated_ or request_id in self._claimed else "open"

    async def find_request(self, request_id: str, tenant: str | None = None) -> str:
        """:meth:`feedback_status`, looking in the other writers' parts for an id this process does not know.

        Waits up to ``lookup_wait_s`` for the writer that served it to commit (see the module docs).
        """
        status = self.feedback_status(request_id, tenant)
        if request_id in self.requests_:
            return status
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._lookup_s
        while True:
            await self._refresh()
            if request_id in self.requests_ or loop.time() >= deadline:
                return self.feedback_status(request_id, tenant)
            await asyncio.sleep(min(self.commit_ms / 1000.0, max(0.0, deadline - loop.time())))

    async def claim(self, request_id: str) -> bool:
        """Take the right to write the one feedback of ``request_id``; False when it has (or is getting) one.

        Atomic across processes sharing the directory (see the module docs); a claim is released by
        :meth:`submit_feedback` once its line is durable (or its commit failed).
        """
        if request_id in self.rated_ or request_id in self._claimed:
            return False
        self._claimed.add(request_id)  # no await since the check: a concurrent duplicate here sees it
        try:
            won = await asyncio.to_thread(self._claim_file, request_id)
            if won:
                await self._refresh()  # feedback another process committed before we claimed
                if request_id in self.rated_:
                    await asyncio.to_thread(self._unclaim_file, request_id)
                    won = False
        except BaseException:
            self._claimed.discard(request_id)
            raise
        if not won:
            self._claimed.discard(request_id)
        return won

    def on_shadow(self, row: dict[str, Any]) -> None:
        """Queue one experiment's shadow score of a request (never blocks; written with the next commit)."""
        self._queue.put(ShadowItem(row))

    async def submit_feedback(self, row: dict[str, Any]) -> None:
        """Queue one feedback line and wait until it is on disk (raises OSError when the commit failed).

        Takes the request's claim first unless :meth:`claim` did (ValueError when it already has feedback).
        """
        rid = row["request_id"]
        if rid not in self._claimed and not await self.claim(rid):
            raise ValueError(f"request {rid!r} already has feedback.")
        item = FeedbackItem(row)
        item.done.add_done_callback(lambda f: self._release(rid, f))  # also when the waiter is cancelled
        self._queue.put(item)
        await asyncio.wrap_future(item.done)
        for fn in self.feedback_listeners:
            fn(row)

    async def committed(self) -> None:
        """Wait until every record queued so far is on disk (raises OSError when the commit failed)."""
        if not self._thread.is_alive():
            raise OSError(self.failed_ or "the traffic log is closed")
        item = Barrier()
        self._queue.put(item)
        await asyncio.wrap_future(item.done)

    # ------------------------------------------------------------------ claims and other writers' parts
    def _claim_path(self, request_id: str) -> Path:
        digest = hashlib.sha256(request_id.encode()).hexdigest()
        return self.claims / digest[:2] / digest

    def _claim_file(self, request_id: str) -> bool:
        """Create the claim file (True), or find it held by a live writer (False); takes over stale claims."""
        path = self._claim_path(request_id)
        path.parent.mkdir(exist_ok=True)
        for _ in range(2):
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                return True
            except FileExistsError:
                pass
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue  # released meanwhile: try again
            if age < STALE_CLAIM_S:
                return False
            self._scan(skip_own=True)
            if request_id in self.rated_:
                return False
            try:  # a writer died holding it: one process wins the rename, then claims anew
                tomb = path.with_name(f"{path.name}.stale-{os.getpid()}-{os.urandom(4).hex()}")
                os.rename(path, tomb)
                os.unlink(tomb)
            except FileNotFoundError:
                return False
            log.warning("feedback for %s: took over a claim left %.0f s ago by a writer that did not commit it",
                        request_id, age)
        return False

    def _unclaim_file(self, request_id: str) -> None:
        try:
            os.unlink(self._claim_path(request_id))
        except FileNotFoundError:
            pass

    def _release(self, request_id: str, done: Future[None]) -> None:
        """The commit of a feedback ended (writer thread): record it if durable, then drop the claim."""
        if not done.cancelled() and done.exception() is None:
            self.rated_.add(request_id)
        self._claimed.discard(request_id)
        try:
            self._unclaim_file(request_id)
        except OSError as exc:  # a leftover claim only delays a duplicate's 409 to a scan; it is reported
            log.warning("feedback for %s: could not remove its claim: %s", request_id, exc)

    async def _refresh(self) -> None:
        """Read what other writers appended to their parts, in a thread; concurrent callers share a scan
        that started after they asked."""
        if self._scan_lock is None:
            self._scan_lock = asyncio.Lock()
        self._scans_asked += 1
        ticket = self._scans_asked
        async with self._scan_lock:
            if self._scans_done >= ticket:
                return
            start = self._scans_asked
            await asyncio.to_thread(self._scan, skip_own=True)
            self._scans_done = start

    def _scan(self, *, skip_own: bool) -> None:
        """Add the whole lines appended to the parts since the last scan to the known and rated ids."""
        me = str(os.getpid())
        for part in sorted(self.directory.glob("*-*.jsonl")):
            name = part.name
            traffic = name.startswith("traffic-")
            if not traffic and not name.startswith("feedback-"):
                continue
            if skip_own and name.rsplit("-", 2)[-2] == me:
                continue  # this process's own records are in memory already
            start = self._offsets.get(part, 0)
            try:
                size = part.stat().st_size
                if size <= start:
                    continue
                with part.open("rb") as fh:
                    fh.seek(start)
                    data = fh.read(size - start)
            except OSError:
                continue
            end = data.rfind(b"\n")
            if end < 0:
                continue  # no whole line yet (or a torn tail, which the reader reports)
            self._offsets[part] = start + end + 1
            for line in data[:end].split(b"\n"):
                if not line.strip():
                    continue
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # a torn line; the reader reports it
                rid = row.get("request_id") if isinstance(row, dict) else None
                if not isinstance(rid, str):
                    continue
                if traffic:
                    self.requests_[rid] = str(row.get("tenant") or "default")
                else:
                    self.rated_.add(rid)

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
