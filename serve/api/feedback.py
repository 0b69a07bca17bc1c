"""``POST /v1/feedback``: a quality signal for one earlier request, durable before the 200.

Body: ``{"request_id": str, "score": number in [0, 1]}`` or ``{"request_id": str, "thumbs": "up" | "down"}``,
optionally ``"comment": str`` (at most 4,000 characters). ``thumbs`` becomes quality 1.0 / 0.0.

======  ==========================  ===============================================================
status  code                        when
======  ==========================  ===============================================================
200                                 on disk (the traffic log's commit holding it was fsync'd)
400     ``invalid_feedback``        not JSON, not an object, missing/unknown fields, wrong types, range
404     ``unknown_request``         no request with this id in the traffic log (any worker's), or
                                    another tenant's
404     ``feedback_disabled``       the service keeps no traffic log (set ``logbook.dir``)
409     ``duplicate_feedback``      the request already has feedback (given to any worker)
503     ``log_unavailable``         the commit failed (disk error); retry later
======  ==========================  ===============================================================

The 200 body is ``{"request_id", "quality", "status": "recorded"}``.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import orjson

from serve.api.errors import APIError
from serve.api.http import Receive, Scope, Send, read_body, send_bytes

if TYPE_CHECKING:
    from serve.app import State

__all__ = ["feedback", "parse_feedback"]

MAX_COMMENT = 4000
MAX_BODY = 64 * 1024
FIELDS = ("request_id", "score", "thumbs", "comment")


def _bad(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param=param, code="invalid_feedback")


def parse_feedback(raw: bytes) -> dict[str, Any]:
    """The feedback line for a request body; raises :class:`APIError` (400) naming what is wrong.

    >>> parse_feedback(b'{"request_id": "r1", "thumbs": "up"}')["quality"]
    1.0
    >>> parse_feedback(b'{"request_id": "r1", "score": 2}')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    serve.api.errors.APIError: score = 2 is out of range; give a number in [0, 1] ...
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"the body is not valid JSON ({exc}); send an object like "
                   '{"request_id": "...", "score": 0.8}.') from None
    if not isinstance(body, dict):
        raise _bad(f"the body must be a JSON object, not {type(body).__name__}.")
    unknown = sorted(k for k in body if k not in FIELDS)
    if unknown:
        raise _bad(f"unknown field(s) {unknown}; feedback takes {list(FIELDS)}.", unknown[0])
    rid = body.get("request_id")
    if not isinstance(rid, str) or not rid.strip() or len(rid) > 200:
        raise _bad("request_id must be the non-empty x-request-id of the response being rated (a string).",
                   "request_id")
    has_score, has_thumbs = "score" in body, "thumbs" in body
    if has_score == has_thumbs:
        raise _bad("give exactly one of score (a number in [0, 1]) or thumbs (\"up\" or \"down\").",
                   "score" if has_score else None)
    row: dict[str, Any] = {"request_id": rid, "timestamp": None}
    if has_score:
        score = body["score"]
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
            raise _bad(f"score = {score!r} must be a number in [0, 1].", "score")
        if not 0.0 <= score <= 1.0:
            raise _bad(f"score = {score!r} is out of range; give a number in [0, 1] (1 = best).", "score")
        row["score"] = float(score)
        row["quality"] = float(score)
    else:
        thumbs = body["thumbs"]
        if thumbs not in ("up", "down"):
            raise _bad(f"thumbs = {thumbs!r} must be \"up\" or \"down\".", "thumbs")
        row["thumbs"] = thumbs
        row["quality"] = 1.0 if thumbs == "up" else 0.0
    comment = body.get("comment")
    if comment is not None:
        if not isinstance(comment, str):
            raise _bad(f"comment must be a string, not {type(comment).__name__}.", "comment")
        if len(comment) > MAX_COMMENT:
            raise _bad(f"comment has {len(comment)} characters; the limit is {MAX_COMMENT}.", "comment")
        row["comment"] = comment
    return row


async def feedback(state: State, scope: Scope, receive: Receive, send: Send) -> int:
    """Record one feedback; returns the HTTP status sent (errors are raised as :class:`APIError`)."""
    book = state.logbook
    raw = await read_body(scope, receive, MAX_BODY)
    row = parse_feedback(raw)
    find = getattr(book, "find_request", None)
    if find is None:
        raise APIError(404, "this service keeps no traffic log, so it cannot take feedback; start it with "
                            "logbook.dir set (config file or ROUTER_SERVE_LOGBOOK__DIR).", code="feedback_disabled")
    rid = row["request_id"]
    principal = scope.get("principal")
    # a tenant rates only its own requests; an admin (or a service without keys) may rate any
    tenant = None if principal is None or principal.can("admin") else principal.tenant
    known = await find(rid, tenant)  # this worker's requests, else the other workers' parts
    if known == "unknown":
        raise APIError(404, f"no request {rid!r} in the traffic log; send the x-request-id of a response "
                            "this service gave.", param="request_id", code="unknown_request")
    if known == "rated" or not await book.claim(rid):  # type: ignore[attr-defined]
        raise APIError(409, f"request {rid!r} already has feedback; each request takes one.",
                       param="request_id", code="duplicate_feedback")
    from datetime import UTC, datetime

    row["timestamp"] = datetime.fromtimestamp(time.time(), UTC).isoformat()
    try:
        await book.submit_feedback(row)  # type: ignore[attr-defined]
    except OSError as exc:
        raise APIError(503, f"the feedback could not be written to disk ({exc}); retry later.",
                       code="log_unavailable") from None
    await send_bytes(send, 200, orjson.dumps({"request_id": rid, "quality": row["quality"], "status": "recorded"}), [])
    return 200
