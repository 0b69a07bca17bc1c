"""OpenID Connect bearer tokens: a JWT's signature checked against the issuer's JWKS, then its claims.

The signing keys come from ``auth.oidc.jwks_url`` or, when unset, from the issuer's discovery
document (``<issuer>/.well-known/openid-configuration`` -> ``jwks_uri``). They are cached for
``jwks_ttl_s`` and fetched again when a token names a key id (``kid``) not in the cache -- the
issuer rotated its keys -- at most once per ``MIN_REFETCH_S`` so unknown ids cannot make the service
hammer the issuer. A token must be signed with one of ``algorithms`` (``alg: none`` and HMAC
algorithms are never accepted: an HMAC "signed" with the public key is a known forgery), carry
``iss`` equal to the issuer, ``aud`` containing the audience, and ``exp``; ``exp``, ``nbf`` and
``iat`` are checked with ``leeway_s`` of clock skew. The tenant is the ``tenant_claim`` and the role
the ``role_claim`` (``default_role`` when absent).
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from typing import Any

from serve.api.errors import APIError
from serve.tenants.auth import PERMISSIONS, Principal

__all__ = ["OIDCVerifier"]

log = logging.getLogger("serve")
MIN_REFETCH_S = 5.0
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


def _reject(message: str) -> APIError:
    return APIError(401, f"bearer token rejected: {message}", type="authentication_error", code="invalid_token",
                    headers=[(b"www-authenticate", b'Bearer realm="router", error="invalid_token"')])


class OIDCVerifier:
    """Checks JWTs of one issuer (``settings``: :class:`serve.settings.OIDCSettings`)."""

    def __init__(self, settings: Any) -> None:
        bad = [a for a in settings.algorithms if a not in ASYMMETRIC]
        if bad:
            raise ValueError(f"auth.oidc.algorithms {bad} are not allowed; use public-key algorithms "
                             f"({', '.join(ASYMMETRIC)}).")
        self.settings = settings
        self.issuer = str(settings.issuer).rstrip("/")
        self.keys_: dict[str, Any] = {}
        self.fetched_at_ = float("-inf")
        self.fetches_ = 0
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ keys
    def _fetch(self) -> dict[str, Any]:
        url = self.settings.jwks_url
        if not url:
            with urllib.request.urlopen(self.issuer + "/.well-known/openid-configuration", timeout=5) as resp:
                url = json.load(resp)["jwks_uri"]
        with urllib.request.urlopen(url, timeout=5) as resp:
            jwks = json.load(resp)
        import jwt

        keys = {}
        for jwk in jwks.get("keys", []):
            if jwk.get("use", "sig") != "sig" or "kid" not in jwk:
                continue
            try:
                keys[str(jwk["kid"])] = jwt.PyJWK(jwk)
            except Exception as exc:  # one odd key must not hide the others
                log.warning("oidc: skipping key %s of %s: %s", jwk.get("kid"), url, exc)
        return keys

    async def _key(self, kid: str, now: float) -> Any:
        key = self.keys_.get(kid)
        stale = now - self.fetched_at_ > self.settings.jwks_ttl_s
        if key is not None and not stale:
            return key
        async with self._lock:
            key = self.keys_.get(kid)
            if key is not None and not now - self.fetched_at_ > self.settings.jwks_ttl_s:
                return key
            if now - self.fetched_at_ >= MIN_REFETCH_S or stale:
                try:
                    self.keys_ = await asyncio.to_thread(self._fetch)
                    self.fetches_ += 1
                    self.fetched_at_ = now
                except Exception as exc:
                    log.warning("oidc: cannot fetch the signing keys of %s: %s", self.issuer, exc)
                    if not self.keys_:
                        raise APIError(503, f"the identity provider's keys cannot be fetched ({exc}); retry later.",
                                       code="jwks_unavailable") from None
        key = self.keys_.get(kid)
        if key is None:
            raise _reject(f"signing key id {kid!r} is unknown to the issuer {self.issuer}.")
        return key

    # ------------------------------------------------------------------ tokens
    async def principal(self, token: str, now: float) -> Principal:
        """The caller a valid token names; a 401 saying what is wrong otherwise."""
        import jwt

        try:
            head = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _reject(f"malformed token ({exc}).") from None
        alg = head.get("alg")
        if alg not in self.settings.algorithms:
            raise _reject(f"algorithm {alg!r} is not accepted; the issuer must sign with one of "
                          f"{', '.join(self.settings.algorithms)}.")
        kid = head.get("kid")
        if not isinstance(kid, str):
            raise _reject("the token has no key id (kid).")
        key = await self._key(kid, now)
        s = self.settings
        try:
            claims = jwt.decode(token, key.key, algorithms=[str(alg)], audience=s.audience, issuer=s.issuer,
                                leeway=s.leeway_s, options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise _reject("it has expired; get a new token.") from None
        except jwt.ImmatureSignatureError:
            raise _reject("it is not valid yet (nbf/iat in the future beyond the allowed clock skew).") from None
        except jwt.InvalidAudienceError:
            raise _reject(f"it was not issued for this service (audience must include {s.audience!r}).") from None
        except jwt.InvalidIssuerError:
            raise _reject(f"it was not issued by {s.issuer}.") from None
        except jwt.InvalidSignatureError:
            raise _reject("its signature does not verify.") from None
        except jwt.PyJWTError as exc:
            raise _reject(f"{exc}.") from None
        tenant = claims.get(s.tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise _reject(f"it has no {s.tenant_claim!r} claim naming the tenant.")
        role = claims.get(s.role_claim, s.default_role)
        if role not in PERMISSIONS:
            raise _reject(f"role {role!r} in claim {s.role_claim!r} is not one of {', '.join(PERMISSIONS)}.")
        return Principal(tenant, str(role), "oidc:" + str(claims.get("sub", "?"))[:64], str(claims.get("sub", "")))
