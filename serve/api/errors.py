"""Errors the API returns, in OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``.

======  ===========================  ====================================================
status  type                         when
======  ===========================  ====================================================
400     ``invalid_request_error``    malformed JSON, wrong types, empty or huge message lists, bad options
404     ``invalid_request_error``    unknown model (code ``model_not_found``) or path (``not_found``)
405     ``invalid_request_error``    wrong method for the path
413     ``invalid_request_error``    body larger than ``max_body_bytes`` (code ``request_too_large``)
429     ``rate_limit_error``         every candidate provider was rate limited
502     ``upstream_error``           every candidate provider failed (code ``provider_error``)
503     ``server_error``             not ready (the policy is still loading) or shutting down
504     ``upstream_error``           the request ran past ``request_timeout_s``
500     ``server_error``             a bug: the message names the request id to report
======  ===========================  ====================================================

>>> APIError(400, "messages is empty; send at least one message.", param="messages").body()
b'{"error":{"message":"messages is empty; send at least one message.","type":"invalid_request_error","param":"messages","code":null}}'
"""

from __future__ import annotations

import orjson

__all__ = ["APIError"]

_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 405: "invalid_request_error",
          413: "invalid_request_error", 415: "invalid_request_error", 429: "rate_limit_error",
          502: "upstream_error", 504: "upstream_error"}


class APIError(Exception):
    """An error response: HTTP ``status`` and the OpenAI error fields."""

    def __init__(self, status: int, message: str, *, type: str | None = None, param: str | None = None,
                 code: str | None = None, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.param = param
        self.code = code
        self.headers = headers or []

    def payload(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body(self) -> bytes:
        return orjson.dumps(self.payload())
