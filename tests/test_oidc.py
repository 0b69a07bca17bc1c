"""OpenID Connect bearer tokens against an issuer on loopback: keys generated here, the JWKS and the
discovery document served over real HTTP; each bad token a 401 that says why, through the service."""

from __future__ import annotations

import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from serve_support import MATH, Service, http, tiny_router

AUD = "router-service"


class Issuer:
    """A minimal identity provider: discovery document and JWKS on 127.0.0.1, keys it can rotate."""

    def __init__(self) -> None:
        self.keys: dict[str, object] = {}
        self.fetches = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks.json"}
                elif self.path == "/jwks.json":
                    issuer.fetches += 1
                    body = {"keys": [issuer.jwk(kid) for kid in issuer.keys]}
                else:
                    self.send_error(404)
                    return
                raw = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add_key(self, kid: str, kind: str = "rsa") -> object:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa" \
            else ec.generate_private_key(ec.SECP256R1())
        self.keys[kid] = key
        return key

    def jwk(self, kid: str) -> dict:
        key = self.keys[kid]
        algo = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
        jwk = json.loads(algo.to_jwk(key.public_key()))
        return {**jwk, "kid": kid, "use": "sig"}

    def token(self, kid: str = "k1", key: object = None, alg: str = "RS256", **claims) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": AUD, "sub": "alice", "tenant": "acme", "role": "member",
                "iat": now, "exp": now + 300, **claims}
        return jwt.encode({k: v for k, v in body.items() if v is not None}, key or self.keys[kid], algorithm=alg,
                          headers={"kid": kid})


@pytest.fixture(scope="module")
def issuer():
    iss = Issuer()
    iss.add_key("k1")
    yield iss
    iss.server.shutdown()


@pytest.fixture(scope="module")
def service(issuer, tmp_path_factory):
    from serve.provider import running

    tmp = tmp_path_factory.mktemp("oidc")
    tiny_router(tmp / "router")
    with running(data="demo", latency_ms=1) as provider:
        config = {"auth": {"oidc": {"issuer": issuer.url, "audience": AUD, "leeway_s": 30}}, "cache": {"enabled": False}}
        svc = Service(str(tmp / "router"), provider_url=provider, config=config, tmp=tmp)
        svc.wait_ready()
        yield svc
        assert svc.stop() in (0, -signal.SIGTERM), svc.output()


def _chat(service, token: str):
    body = json.dumps({"model": "router", "messages": [{"role": "user", "content": MATH}]}).encode()
    status, _, raw = http("POST", service.url + "/v1/chat/completions", body,
                          {"authorization": f"Bearer {token}", "content-type": "application/json"})
    return status, json.loads(raw)


def _none_token(issuer) -> str:
    import base64

    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    now = int(time.time())
    return b64({"alg": "none", "kid": "k1", "typ": "JWT"}) + "." + b64(
        {"iss": issuer.url, "aud": AUD, "tenant": "acme", "exp": now + 300}) + "."


CASES = [
    ("expired", lambda i: i.token(exp=int(time.time()) - 120), "expired"),
    ("expired within the clock skew is valid", lambda i: i.token(exp=int(time.time()) - 10), None),
    ("not yet valid", lambda i: i.token(nbf=int(time.time()) + 600), "not valid yet"),
    ("wrong audience", lambda i: i.token(aud="another-service"), "not issued for this service"),
    ("wrong issuer", lambda i: i.token(iss="http://127.0.0.1:1/evil"), "not issued by"),
    ("wrong signature", lambda i: i.token(key=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
     "signature does not verify"),
    ("unknown kid", lambda i: i.token(kid="nope", key=i.keys["k1"]), "key id 'nope' is unknown"),
    ("alg none", _none_token, "algorithm 'none' is not accepted"),
    ("hs256 with the public key", lambda i: jwt.encode({"iss": i.url, "aud": AUD, "tenant": "acme",
                                                        "exp": int(time.time()) + 60}, "s" * 32, algorithm="HS256",
                                                       headers={"kid": "k1"}), "algorithm 'HS256' is not accepted"),
    ("no tenant claim", lambda i: i.token(tenant=None), "no 'tenant' claim"),
    ("no exp", lambda i: i.token(exp=None), "exp"),
    ("unknown role", lambda i: i.token(role="owner"), "role 'owner'"),
]


@pytest.mark.parametrize(("make", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_token_table(service, issuer, make, message):
    status, body = _chat(service, make(issuer))
    if message is None:
        assert status == 200, body
    else:
        assert status == 401 and body["error"]["code"] == "invalid_token", body
        assert message in body["error"]["message"], body


def test_valid_token_routes_and_roles_come_from_claims(service, issuer):
    status, body = _chat(service, issuer.token())
    assert status == 200 and body["choices"][0]["message"]["content"]
    status, body = _chat(service, issuer.token(role="read-only"))
    assert status == 403 and "has the read-only role" in body["error"]["message"]
    status, _, raw = http("GET", service.url + "/metrics", headers={"authorization": f"Bearer {issuer.token(role='read-only')}"})
    assert status == 200


def test_rotated_key_is_fetched_on_unknown_kid(service, issuer):
    before = issuer.fetches
    key = issuer.add_key("k2", kind="ec")  # the issuer rotates: a new key id the service has not seen
    time.sleep(5.1)  # refetches on unknown ids are rate-limited to one per 5 s (MIN_REFETCH_S)
    status, body = _chat(service, issuer.token(kid="k2", key=key, alg="ES256"))
    assert status == 200, body
    assert issuer.fetches == before + 1
    status, _ = _chat(service, issuer.token(kid="k2", key=key, alg="ES256"))  # cached now: no refetch
    assert status == 200 and issuer.fetches == before + 1
