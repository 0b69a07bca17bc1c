"""Injectable faults of the local provider: what goes wrong, for which model, how many times.

A :class:`Fault` names a model (or ``"*"`` for every model), a kind and how many requests it hits
(``count``; None = until cleared). :class:`FaultTable` holds them in the order they were added: a request
takes the first fault for its exact model that has requests left, else the first ``"*"`` fault. Faults come
from the command line (``--fault MODEL=KIND[:COUNT]``, parsed by :func:`parse_fault`) or at run time from
``POST /_faults`` (JSON, :meth:`Fault.from_json`).

Kinds, and how each shows on the wire (see ``server.py``):

============== ===========================================================================================
``error``      HTTP 500 with the protocol's own error body
``429``        HTTP 429 with ``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms`` headers
``reset``      the connection is reset (TCP RST) without any response
``no_response`` the request is read and never answered (until the client gives up)
``stall_first`` a stream sends its headers, then stalls before the first token (``stall_s``, default forever)
``stall_mid``  a stream (or a plain body) stops half-way and stalls (``stall_s``, default forever)
``cut``        the connection closes half-way: a stream without its final chunk / ``[DONE]``, a body short
               of its ``Content-Length``
``malformed``  a stream gets an unparseable chunk half-way (then continues); a plain answer is invalid JSON
``flap``       ``period`` requests succeed, the next ``period`` fail with 500, and so on
============== ===========================================================================================

Example:
    >>> t = FaultTable()
    >>> t.add(parse_fault("gpt-4=429:2"))
    >>> [t.take("gpt-4").kind if t.peek("gpt-4") else None for _ in range(3)]
    ['429', '429', None]
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from router.errors import ConfigError

__all__ = ["KINDS", "Fault", "FaultTable", "parse_fault"]

#: Fault kinds the local provider can inject.
KINDS = ("error", "429", "reset", "no_response", "stall_first", "stall_mid", "cut", "malformed", "flap")


@dataclass
class Fault:
    """One injected fault (``count`` is decremented as requests hit it)."""

    model: str
    kind: str
    count: int | None = None
    retry_after: float = 1.0
    period: int = 1
    stall_s: float | None = None
    seen: int = field(default=0)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"fault model must be a model name or '*', got {self.model!r}.")
        if self.kind not in KINDS:
            raise ConfigError(f"unknown fault kind {self.kind!r}; choose one of {', '.join(KINDS)}.")
        if self.count is not None and (isinstance(self.count, bool) or not isinstance(self.count, int)
                                       or self.count < 1):
            raise ConfigError(f"fault count must be an integer >= 1 (or absent for 'forever'), got {self.count!r}.")
        for name in ("retry_after", "stall_s"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
                                  or v < 0):
                raise ConfigError(f"fault {name} must be a number of seconds >= 0, got {v!r}.")
        if isinstance(self.period, bool) or not isinstance(self.period, int) or self.period < 1:
            raise ConfigError(f"fault period must be an integer >= 1, got {self.period!r}.")

    @classmethod
    def from_json(cls, body: Any) -> Fault:
        """Build from the ``POST /_faults`` body ``{"model", "kind", "count"?, "retry_after"?, "period"?, "stall_s"?}``."""
        if not isinstance(body, dict):
            raise ConfigError('a fault is a JSON object like {"model": "gpt-4", "kind": "429", "count": 2}.')
        unknown = set(body) - {"model", "kind", "count", "retry_after", "period", "stall_s"}
        if unknown:
            raise ConfigError(f"unknown fault field(s) {sorted(unknown)}; allowed: model, kind, count, "
                              "retry_after, period, stall_s.")
        if "model" not in body or "kind" not in body:
            raise ConfigError("a fault needs 'model' (a model name or '*') and 'kind'.")
        kind = body["kind"]
        return cls(model=body["model"], kind=str(kind) if isinstance(kind, int) and not isinstance(kind, bool)
                   else kind, count=body.get("count"), retry_after=body.get("retry_after", 1.0),
                   period=body.get("period", 1), stall_s=body.get("stall_s"))

    def to_json(self) -> dict[str, Any]:
        """The fault as JSON (``seen`` counts the requests it has hit)."""
        return asdict(self)


def parse_fault(text: str) -> Fault:
    """Parse ``MODEL=KIND[:COUNT]`` (the ``--fault`` flag); ``*=KIND`` hits every model."""
    model, sep, rest = text.rpartition("=")
    if not sep or not model or not rest:
        raise ConfigError(f"--fault {text!r}: expected MODEL=KIND[:COUNT], e.g. gpt-4=429:3 or '*=error'.")
    kind, _, count = rest.partition(":")
    n: int | None = None
    if count:
        try:
            n = int(count)
        except ValueError:
            raise ConfigError(f"--fault {text!r}: COUNT must be an integer, got {count!r}.") from None
    return Fault(model=model, kind=kind, count=n)


class FaultTable:
    """The active faults, safe to change from another thread while the server reads them."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self.injected: dict[str, dict[str, int]] = {}

    def add(self, fault: Fault) -> None:
        """Append a fault (it applies after those added before it for the same model run out)."""
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._faults = []

    def peek(self, model: str) -> Fault | None:
        """The fault the next request for ``model`` would take, without taking it."""
        if not self._faults:
            return None
        with self._lock:
            return self._find(model)

    def take(self, model: str) -> Fault | None:
        """The fault that hits this request for ``model`` (counted), or None.

        A ``flap`` fault is returned only for its failing requests.
        """
        if not self._faults:  # the hot path: no lock when nothing is injected
            return None
        with self._lock:
            f = self._find(model)
            if f is None:
                return None
            f.seen += 1
            if f.count is not None:
                f.count -= 1
                if f.count == 0:
                    self._faults.remove(f)
            if f.kind == "flap" and ((f.seen - 1) // f.period) % 2 == 0:
                return None  # the succeeding half of the cycle
            per = self.injected.setdefault(model, {})
            per[f.kind] = per.get(f.kind, 0) + 1
            return f

    def _find(self, model: str) -> Fault | None:
        for f in self._faults:
            if f.model == model:
                return f
        for f in self._faults:
            if f.model == "*":
                return f
        return None

    def to_json(self) -> list[dict[str, Any]]:
        """The active faults."""
        with self._lock:
            return [f.to_json() for f in self._faults]
