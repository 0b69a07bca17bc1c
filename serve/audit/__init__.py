"""The audit log: an append-only, tamper-evident JSON-lines record of what operators and the service did.

What is recorded (``kind``): ``key.create``, ``key.revoke``, ``limits.set`` (budget and limit
changes), ``model.swap`` (the registry follower loaded a new policy version), ``model.reload``,
``refusal`` (401, 402, 403, 429), ``service.start`` / ``service.stop``, and ``checkpoint``.

Each line is one record::

    {"seq": 7, "ts": 1764550000.1, "kind": "key.revoke", "actor": "key:3f2a...", "tenant": "acme",
     "detail": {...}, "prev": "<hash of record 6>", "hash": "<sha256 of this record without 'hash'>"}

``hash`` is the sha256 of the record's canonical JSON (sorted keys, no spaces) without ``hash``, and
``prev`` is the previous record's ``hash`` (64 zeros for the first), so editing a record breaks its
hash, and removing, inserting or reordering records breaks ``seq`` and ``prev``. Every
``checkpoint_every`` records (and at shutdown) a ``checkpoint`` record carries an HMAC-SHA256, under
a key only the service holds (``audit.hmac_key`` / ``ROUTER_SERVE_AUDIT__HMAC_KEY`` or
``audit.hmac_key_file``), of the sequence number and hash it seals: someone who edits a record and
recomputes every hash after it still cannot forge the next checkpoint. Records after the last
checkpoint are protected by the chain only; cutting them off the end is detectable only against a
head hash kept elsewhere (``verify --head``).

Writes go through a queue to one writer thread (group commit), so the request path never touches
the file. One process writes one file: with ``--workers N`` each worker appends ``.<pid>`` to the path.

``python -m serve.audit verify PATH`` checks a file (see :func:`verify`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["GENESIS", "AuditLog", "NullAudit", "Problem", "Report", "record_hash", "verify"]

GENESIS = "0" * 64
log = logging.getLogger("serve")


def _canonical(rec: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in rec.items() if k != "hash"}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def record_hash(rec: dict[str, Any]) -> str:
    """sha256 (hex) of a record's canonical JSON without its ``hash`` field."""
    return hashlib.sha256(_canonical(rec)).hexdigest()


def checkpoint_mac(key: bytes, seq: int, sealed_hash: str) -> str:
    return hmac.new(key, f"{seq}:{sealed_hash}".encode(), hashlib.sha256).hexdigest()


class NullAudit:
    """No audit log configured: records are dropped."""

    enabled = False

    def record(self, kind: str, actor: str, tenant: str | None = None, **detail: Any) -> None:
        return None

    def close(self) -> None:
        return None


class AuditLog:
    """Appends chained records to ``path`` from a writer thread; see the module docs."""

    enabled = True

    def __init__(self, path: str | os.PathLike[str], key: bytes, *, checkpoint_every: int = 100) -> None:
        if not key:
            raise ValueError("the audit log needs an HMAC key: set audit.hmac_key (ROUTER_SERVE_AUDIT__HMAC_KEY) "
                             "or audit.hmac_key_file.")
        self.path = Path(path)
        self.key = key
        self.checkpoint_every = checkpoint_every
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.seq_, self.head_ = self._resume()
        self._since_checkpoint = 0
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._fh = self.path.open("a", encoding="utf-8")
        self._thread.start()

    def _resume(self) -> tuple[int, str]:
        """Continue the chain of an existing file from its last record."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return 0, GENESIS
        with self.path.open("rb") as fh:
            fh.seek(max(0, self.path.stat().st_size - 65536))
            lines = [ln for ln in fh.read().splitlines() if ln.strip()]
        last = json.loads(lines[-1])
        return int(last["seq"]), str(last["hash"])

    def record(self, kind: str, actor: str, tenant: str | None = None, **detail: Any) -> None:
        """Queue one record (never blocks on I/O)."""
        self._queue.put({"ts": round(time.time(), 6), "kind": kind, "actor": actor, "tenant": tenant,
                         "detail": detail})

    def close(self) -> None:
        """Write what is queued, seal it with a checkpoint, close the file."""
        self._queue.put(None)
        self._thread.join(30)

    # ------------------------------------------------------------------ writer thread
    def _chain(self, rec: dict[str, Any]) -> str:
        self.seq_ += 1
        rec = {"seq": self.seq_, **rec, "prev": self.head_}
        rec["hash"] = self.head_ = record_hash(rec)
        return json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n"

    def _checkpoint(self) -> str:
        self._since_checkpoint = 0
        mac = checkpoint_mac(self.key, self.seq_, self.head_)
        return self._chain({"ts": round(time.time(), 6), "kind": "checkpoint", "actor": "service", "tenant": None,
                            "detail": {"seals_seq": self.seq_, "seals_hash": self.head_, "mac": mac}})

    def _run(self) -> None:
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            lines = []
            for rec in batch:
                if rec is None:
                    stop = True
                    continue
                lines.append(self._chain(rec))
                self._since_checkpoint += 1
                if self._since_checkpoint >= self.checkpoint_every:
                    lines.append(self._checkpoint())
            if stop and self._since_checkpoint:
                lines.append(self._checkpoint())
            try:
                self._fh.write("".join(lines))
                self._fh.flush()
            except OSError as exc:  # the audit log must not take the service down; say so loudly
                log.error("audit log %s: cannot write %d records: %s", self.path, len(lines), exc)
        self._fh.close()


# ---------------------------------------------------------------------- verification
@dataclass(frozen=True)
class Problem:
    """Where verification failed: 1-based ``line`` of the file, the record's ``seq`` if readable, what is wrong."""

    line: int
    seq: int | None
    message: str

    def __str__(self) -> str:
        at = f"line {self.line}" + (f" (seq {self.seq})" if self.seq is not None else "")
        return f"{at}: {self.message}"


@dataclass
class Report:
    records: int = 0
    checkpoints: int = 0
    head: str = GENESIS
    unsealed: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(path: str | os.PathLike[str], key: bytes | None = None, *, head: str | None = None) -> Report:
    """Check a whole audit file: hashes, sequence, chain, and (with ``key``) every checkpoint's HMAC.

    ``head``, a hash recorded elsewhere earlier, must appear in the chain (detects a cut-off tail).
    """
    rep = Report()
    expected, prev = 1, GENESIS
    seen_head = head is None
    with Path(path).open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                rep.problems.append(Problem(lineno, None, "empty line inside the log (a record was blanked)"))
                continue
            try:
                rec = json.loads(line)
                seq, stored, rprev = int(rec["seq"]), str(rec["hash"]), str(rec["prev"])
            except (ValueError, KeyError, TypeError):
                rep.problems.append(Problem(lineno, None, "not a readable audit record (edited or corrupted)"))
                continue
            rep.records += 1
            if record_hash(rec) != stored:
                rep.problems.append(Problem(lineno, seq, "the record's contents do not match its hash: it was edited"))
            if seq > expected:
                missing = f"seq {expected}" if seq == expected + 1 else f"seq {expected}..{seq - 1}"
                rep.problems.append(Problem(lineno, seq, f"{missing} missing before this record: removed"))
            elif seq < expected:
                rep.problems.append(Problem(lineno, seq, f"expected seq {expected}: a record was inserted here or "
                                                         "the records were reordered"))
            elif rprev != prev:
                rep.problems.append(Problem(lineno, seq, "does not chain to the record before it: a record before "
                                                         "it was edited and re-hashed, replaced or reordered"))
            if rec.get("kind") == "checkpoint":
                rep.checkpoints += 1
                rep.unsealed = 0
                detail = rec.get("detail") or {}
                if detail.get("seals_seq") != seq - 1 or detail.get("seals_hash") != rprev:
                    rep.problems.append(Problem(lineno, seq, "checkpoint does not seal the record before it"))
                elif key is not None and not hmac.compare_digest(
                        str(detail.get("mac", "")), checkpoint_mac(key, seq - 1, rprev)):
                    rep.problems.append(Problem(lineno, seq, "checkpoint signature is wrong: the records it seals "
                                                             "were changed (or the HMAC key is not the service's)"))
            else:
                rep.unsealed += 1
            if not seen_head and stored == head:
                seen_head = True
            expected, prev = max(expected, seq + 1), stored
    rep.head = prev
    if not seen_head:
        rep.problems.append(Problem(rep.records, None, f"head {head} is not in the log: records at its end were "
                                                        "removed"))
    return rep
