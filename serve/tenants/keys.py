"""API keys and tenant limits, kept in one SQLite file (the *tenant store*), served from memory.

A key looks like ``rk-<id>-<secret>``: a 12-hex-digit key id, then 256 random bits (URL-safe base64).
The store keeps only the id and ``sha256(key)``; the key itself is shown once, when it is created.
The service loads the store into a :class:`KeyIndex` (a dict from key id to record) at start and
reloads it when the file changes (checked in the background, never per request), so checking a key
is one dict lookup, one sha256 and one constant-time compare.

>>> import tempfile, os
>>> store = KeyStore(os.path.join(tempfile.mkdtemp(), "tenants.db"))
>>> rec, key = store.create("acme", "member", name="ci")
>>> key.startswith("rk-" + rec.key_id + "-"), rec.tenant, rec.role
(True, 'acme', 'member')
>>> index = KeyIndex(store.keys())
>>> index.check(key, now=rec.created_at).tenant
'acme'
>>> _ = store.revoke(rec.key_id)
>>> KeyIndex(store.keys()).check(key, now=rec.created_at)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
serve.tenants.keys.KeyRejected: API key rk-...-... was revoked; ...
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from router.errors import ConfigError

__all__ = ["ROLES", "KeyIndex", "KeyRecord", "KeyRejected", "KeyStore", "StoreError"]

ROLES = ("admin", "member", "read-only")
PREFIX = "rk-"
_ID_LEN = 12
_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, role TEXT NOT NULL, name TEXT NOT NULL,
    digest TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL, revoked_at REAL);
CREATE TABLE IF NOT EXISTS limits (tenant TEXT PRIMARY KEY, spec TEXT NOT NULL, updated_at REAL NOT NULL);
"""


class StoreError(ConfigError):
    """The tenant store cannot do what was asked (unknown key, bad role, unreadable file)."""


class KeyRejected(Exception):
    """A presented key is unknown, malformed, revoked or expired (the message says which)."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One key as stored: never the key itself, only its id and sha256 digest (hex)."""

    key_id: str
    tenant: str
    role: str
    name: str
    digest: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None

    def public(self) -> dict[str, Any]:
        """The record as shown to operators (without the digest)."""
        d = asdict(self)
        del d["digest"]
        d["status"] = "revoked" if self.revoked_at else (
            "expired" if self.expires_at is not None and self.expires_at <= time.time() else "active")
        return d


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _check_name(what: str, value: str) -> None:
    if not value or len(value) > 128 or not all(c.isalnum() or c in "-_.@:" for c in value):
        raise StoreError(f"{what} {value!r} is invalid: use 1-128 letters, digits or -_.@: characters.")


class KeyStore:
    """The SQLite tenant store at ``path`` (created when missing): keys and per-tenant limits."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._db() as db:
                db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"tenant store {self.path} cannot be opened: {exc}; check the path "
                             "(auth.store) and its permissions.") from None

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    # ------------------------------------------------------------------ keys
    def create(self, tenant: str, role: str, *, name: str = "", expires_at: float | None = None,
               now: float | None = None) -> tuple[KeyRecord, str]:
        """A new key for ``tenant`` with ``role``; returns its record and the key (shown only now)."""
        _check_name("tenant", tenant)
        if role not in ROLES:
            raise StoreError(f"role {role!r} is unknown; use one of {', '.join(ROLES)}.")
        now = time.time() if now is None else now
        if expires_at is not None and expires_at <= now:
            raise StoreError("expires_at is in the past; give a future time (or none for a key that never expires).")
        key_id = secrets.token_hex(_ID_LEN // 2)
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        key = f"{PREFIX}{key_id}-{secret}"
        rec = KeyRecord(key_id, tenant, role, name[:200], _digest(key), now, expires_at)
        with self._db() as db:
            db.execute("INSERT INTO keys VALUES (?,?,?,?,?,?,?,?)",
                       (rec.key_id, rec.tenant, rec.role, rec.name, rec.digest, rec.created_at, rec.expires_at, None))
        return rec, key

    def keys(self, tenant: str | None = None) -> list[KeyRecord]:
        """Every key (or one tenant's), oldest first, revoked ones included."""
        sql = "SELECT * FROM keys" + (" WHERE tenant = ?" if tenant else "") + " ORDER BY created_at, key_id"
        with self._db() as db:
            rows = db.execute(sql, (tenant,) if tenant else ()).fetchall()
        return [KeyRecord(*row) for row in rows]

    def revoke(self, key_id: str, *, now: float | None = None) -> KeyRecord:
        """Revoke ``key_id`` (idempotent); raises :class:`StoreError` when no such key exists."""
        now = time.time() if now is None else now
        with self._db() as db:
            db.execute("UPDATE keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL", (now, key_id))
            row = db.execute("SELECT * FROM keys WHERE key_id = ?", (key_id,)).fetchone()
        if row is None:
            raise StoreError(f"no key with id {key_id!r}; list them with `python -m serve.admin keys list`.")
        return KeyRecord(*row)

    # ------------------------------------------------------------------ limits
    def set_limits(self, tenant: str, spec: dict[str, Any], *, now: float | None = None) -> None:
        """Store ``tenant``'s limits (validated by the caller: see :class:`serve.tenants.limits.Limits`)."""
        _check_name("tenant", tenant)
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO limits VALUES (?,?,?)",
                       (tenant, json.dumps(spec, sort_keys=True), time.time() if now is None else now))

    def limits(self) -> dict[str, dict[str, Any]]:
        with self._db() as db:
            rows = db.execute("SELECT tenant, spec FROM limits ORDER BY tenant").fetchall()
        return {t: json.loads(s) for t, s in rows}

    def version(self) -> tuple[int, int]:
        """Changes when the store changes (the file and its WAL's size and mtime); cheap to poll."""
        out = []
        for p in (self.path, Path(str(self.path) + "-wal")):
            try:
                st = p.stat()
                out += [st.st_mtime_ns, st.st_size]
            except FileNotFoundError:
                out += [0, 0]
        return tuple(out)  # type: ignore[return-value]


class KeyIndex:
    """The keys in memory: key id -> record, checked with one sha256 and a constant-time compare."""

    def __init__(self, records: Iterable[KeyRecord]) -> None:
        self.records_ = {r.key_id: r for r in records}
        self._digests = {r.key_id: bytes.fromhex(r.digest) for r in self.records_.values()}

    def check(self, key: str, *, now: float | None = None) -> KeyRecord:
        """The record of a valid, active ``key``; raises :class:`KeyRejected` saying why not."""
        if not key.startswith(PREFIX) or len(key) < len(PREFIX) + _ID_LEN + 2 or key[len(PREFIX) + _ID_LEN] != "-":
            raise KeyRejected("the API key is malformed: keys look like rk-<id>-<secret>, as "
                              "`python -m serve.admin keys create` prints them.")
        key_id = key[len(PREFIX):len(PREFIX) + _ID_LEN]
        rec = self.records_.get(key_id)
        presented = hashlib.sha256(key.encode()).digest()
        stored = self._digests.get(key_id, b"\0" * 32)
        if not hmac.compare_digest(presented, stored) or rec is None:
            raise KeyRejected("the API key is not valid; check it, or ask an admin for a new one.")
        shown = f"{PREFIX}{key_id}-..."
        if rec.revoked_at is not None:
            raise KeyRejected(f"API key {shown} was revoked; ask an admin for a new one.")
        if rec.expires_at is not None and rec.expires_at <= (time.time() if now is None else now):
            raise KeyRejected(f"API key {shown} expired at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(rec.expires_at))}; "
                              "ask an admin for a new one.")
        return rec
