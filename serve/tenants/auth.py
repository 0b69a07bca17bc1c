"""Who is calling, and what they may do: credentials to a :class:`Principal`, roles to permissions.

A request carries ``Authorization: Bearer <credential>``: an API key (``rk-...``, see
:mod:`serve.tenants.keys`) or, when an OpenID Connect issuer is configured, a JWT checked by
:mod:`serve.tenants.oidc`. The tenant always comes from the credential, never from the request body.

=============  ===========================================================================
role           permissions
=============  ===========================================================================
``admin``      everything: keys, budgets, audit, model reload, plus every permission below
``member``     ``route`` (chat completions), ``feedback``, ``models``, ``decisions`` (own tenant)
``read-only``  ``metrics``, ``dashboard``, ``models``, ``decisions`` (own tenant)
=============  ===========================================================================

``/healthz`` and ``/readyz`` need no credential (load-balancer probes). With no tenant store and
no issuer configured, authentication is off: every request is tenant ``default`` with the admin
role, and the service logs a warning at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serve.api.errors import APIError
from serve.tenants.keys import KeyIndex, KeyRejected

__all__ = ["ANONYMOUS", "PERMISSIONS", "Authenticator", "Principal", "forbidden"]

PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({"route", "feedback", "models", "decisions", "metrics", "dashboard", "admin"}),
    "member": frozenset({"route", "feedback", "models", "decisions"}),
    "read-only": frozenset({"metrics", "dashboard", "models", "decisions"}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: its tenant, role, and the credential that proved it."""

    tenant: str
    role: str
    credential: str  # "key:<id>", "oidc:<subject>" or "none"
    subject: str = ""

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, ())


ANONYMOUS = Principal("default", "admin", "none")


def forbidden(principal: Principal, permission: str, what: str) -> APIError:
    allowed = sorted(r for r, p in PERMISSIONS.items() if permission in p)
    return APIError(403, f"{what} needs the {' or '.join(allowed)} role; this credential ({principal.credential}) "
                         f"has the {principal.role} role.", type="permission_error", code="forbidden")


def _unauthorized(message: str) -> APIError:
    return APIError(401, message, type="authentication_error", code="invalid_api_key",
                    headers=[(b"www-authenticate", b'Bearer realm="router"')])


class Authenticator:
    """Turns the ``authorization`` header into a :class:`Principal` (in memory: no I/O per request)."""

    def __init__(self, keys: KeyIndex | None, oidc: Any = None) -> None:
        self.keys = keys
        self.oidc = oidc

    @property
    def enabled(self) -> bool:
        return self.keys is not None or self.oidc is not None

    async def authenticate(self, authorization: bytes | None, now: float) -> Principal:
        """The caller of a request, or a 401 :class:`APIError` saying what is wrong with its credential."""
        if not self.enabled:
            return ANONYMOUS
        if authorization is None:
            raise _unauthorized("no credential: send `Authorization: Bearer <API key or token>` "
                                "(the OpenAI client's api_key).")
        scheme, _, token = authorization.decode("latin-1").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("the Authorization header must be `Bearer <API key or token>`.")
        if token.startswith("rk-") and self.keys is not None:
            try:
                rec = self.keys.check(token, now=now)
            except KeyRejected as exc:
                raise _unauthorized(str(exc)) from None
            return Principal(rec.tenant, rec.role, "key:" + rec.key_id)
        if self.oidc is not None and token.count(".") == 2:
            return await self.oidc.principal(token, now)
        raise _unauthorized("the credential is not a valid API key" +
                            (" or token" if self.oidc is not None else "") + "; check it, or ask an admin for one.")
