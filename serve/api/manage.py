"""Operator endpoints (admin role) and explanations (``GET /v1/decisions/{request_id}``).

=============================================  ======  ===========  =========================================
path                                           method  permission   what
=============================================  ======  ===========  =========================================
``/v1/admin/keys``                             GET     admin        list keys (``?tenant=``), never the keys
``/v1/admin/keys``                             POST    admin        create: ``{tenant, role, name?, expires_in_s?}``;
                                                                    the key is in this response only (201)
``/v1/admin/keys/{key_id}``                    DELETE  admin        revoke
``/v1/admin/tenants``                          GET     admin        every known tenant's limits and usage
``/v1/admin/tenants/{tenant}/limits``          PUT     admin        set limits (see :class:`~serve.tenants.limits.Limits`)
``/v1/admin/reload``                           POST    admin        check the model registry alias now (and an
                                                                    experiment challenger's)
``/v1/admin/audit``                            GET     admin        verify the audit log; its head hash
``/v1/admin/experiments``                      GET     admin        the experiment's per-arm report, with the
                                                                    off-policy estimates from the traffic log
``/v1/decisions/{request_id}``                 GET     decisions    why the request went where it did
                                                                    (own tenant's only; admins see all)
=============================================  ======  ===========  =========================================

Every change is written to the audit log with the credential that made it.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import orjson

from router.errors import ConfigError
from serve.api.errors import APIError
from serve.api.http import Receive, Scope, Send, read_body, send_bytes
from serve.tenants.auth import Principal
from serve.tenants.limits import Limits

if TYPE_CHECKING:
    from serve.app import State

__all__ = ["decisions", "dispatch_admin"]


async def decisions(state: State, scope: Scope, receive: Receive, send: Send, principal: Principal) -> int:
    """``GET /v1/decisions/{request_id}``: 404 for unknown ids and for other tenants' (no existence leak)."""
    if scope["method"] != "GET":
        raise APIError(405, "/v1/decisions/{request_id} takes GET.", code="method_not_allowed")
    rid = scope["path"][len("/v1/decisions/"):]
    exp = state.tenancy.decisions.get(rid)
    if exp is None or (exp.tenant != principal.tenant and principal.role != "admin"):
        raise APIError(404, f"no decision for request {rid[:64]!r} of your tenant among the last "
                            f"{state.tenancy.decisions.capacity} requests; older ones are in the traffic log.",
                       code="decision_not_found")
    await send_bytes(send, 200, orjson.dumps(exp.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY), [])
    return 200


def _store(state: State) -> Any:
    store = state.tenancy.store
    if store is None:
        raise APIError(409, "no tenant store is configured (auth.store): keys and limits cannot be managed; "
                            "set auth.store to a SQLite path and restart.", code="no_store")
    return store


async def _json(scope: Scope, receive: Receive) -> dict[str, Any]:
    raw = await read_body(scope, receive, 64 * 1024)
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise APIError(400, f"the body is not valid JSON: {exc}.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the body must be a JSON object.", code="invalid_json")
    return body


async def dispatch_admin(state: State, scope: Scope, receive: Receive, send: Send, principal: Principal) -> int:
    """Route one ``/v1/admin/...`` request (the caller has checked the admin permission)."""
    method, parts = scope["method"], scope["path"].rstrip("/").split("/")[3:]
    t = state.tenancy
    actor = principal.credential
    if parts == ["keys"] and method == "GET":
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode())
        tenant = (query.get("tenant") or [None])[0]
        recs = await asyncio.to_thread(_store(state).keys, tenant)
        return await _ok(send, {"object": "list", "data": [r.public() for r in recs]})
    if parts == ["keys"] and method == "POST":
        body = await _json(scope, receive)
        tenant, role, name = body.get("tenant"), body.get("role", "member"), body.get("name", "")
        exp_s = body.get("expires_in_s")
        if not isinstance(tenant, str) or not isinstance(role, str) or not isinstance(name, str):
            raise APIError(400, "tenant, role and name must be strings; e.g. {\"tenant\": \"acme\", \"role\": \"member\"}.",
                           code="invalid_value")
        if exp_s is not None and (isinstance(exp_s, bool) or not isinstance(exp_s, int | float) or exp_s <= 0):
            raise APIError(400, "expires_in_s must be a positive number of seconds.", param="expires_in_s")
        store = _store(state)
        try:
            rec, key = await asyncio.to_thread(store.create, tenant, role, name=name,
                                               expires_at=None if exp_s is None else time.time() + exp_s)
        except ConfigError as exc:
            raise APIError(400, str(exc), code="invalid_value") from None
        await asyncio.to_thread(t.reload)
        t.audit.record("key.create", actor, tenant, key_id=rec.key_id, role=role, name=name,
                       expires_at=rec.expires_at)
        return await _ok(send, {"key": key, **rec.public(),
                                "note": "store this key now: it is not shown again."}, 201)
    if len(parts) == 2 and parts[0] == "keys" and method == "DELETE":
        try:
            rec = await asyncio.to_thread(_store(state).revoke, parts[1])
        except ConfigError as exc:
            raise APIError(404, str(exc), code="key_not_found") from None
        await asyncio.to_thread(t.reload)
        t.audit.record("key.revoke", actor, rec.tenant, key_id=rec.key_id)
        return await _ok(send, rec.public())
    if parts == ["tenants"] and method == "GET":
        now = time.time()
        names = sorted(set(t.defaults) | set(t.overrides_) - {"*"})
        data = []
        for name in names:
            lim = t.limits(name)
            data.append({"tenant": name, "limits": lim.to_dict(), "usage": await t.limiter.usage(name, lim, now)})
        return await _ok(send, {"object": "list", "data": data})
    if len(parts) == 3 and parts[0] == "tenants" and parts[2] == "limits" and method == "PUT":
        body = await _json(scope, receive)
        try:
            lim = Limits.from_dict(body)
        except (ConfigError, TypeError) as exc:
            raise APIError(400, str(exc), code="invalid_value") from None
        if t.unshared_workers > 1 and not lim.unlimited:
            raise APIError(409, "cannot set a budget or rate limits: " + t.unshared_message(parts[1]),
                           code="limits_not_shared")
        try:
            await asyncio.to_thread(_store(state).set_limits, parts[1], lim.to_dict())
        except (ConfigError, TypeError) as exc:
            raise APIError(400, str(exc), code="invalid_value") from None
        await asyncio.to_thread(t.reload)
        t.audit.record("limits.set", actor, parts[1], limits=lim.to_dict())
        return await _ok(send, {"tenant": parts[1], "limits": lim.to_dict()})
    if parts == ["reload"] and method == "POST":
        follower = state.follower
        if follower is None:
            raise APIError(409, "the service does not follow a registry alias (--model models:/NAME@ALIAS); "
                                "nothing to reload.", code="no_registry")
        swapped = await asyncio.to_thread(follower.check_once)
        t.audit.record("model.reload", actor, None, swapped=bool(swapped), version=state.holder.current.version)
        out: dict[str, Any] = {"swapped": bool(swapped), "policy_version": state.holder.current.version}
        ex = t.experiment
        if ex is not None and ex.follower is not None:  # the experiment's challenger follows its alias too
            c_swapped = await asyncio.to_thread(ex.follower.check_once)
            t.audit.record("model.reload", actor, None, swapped=bool(c_swapped), version=ex.version,
                           source=ex.follower.spec.text)
            out.update(challenger_swapped=bool(c_swapped), challenger_version=ex.version)
        return await _ok(send, out)
    if parts == ["experiments"] and method == "GET":
        if t.experiment is None:
            raise APIError(409, "no experiment runs; configure the experiment settings (name, challenger, split).",
                           code="no_experiment")
        report = t.experiment.report()
        report["off_policy"] = await _offpolicy(state, t.experiment)
        return await _ok(send, report)
    if parts == ["audit"] and method == "GET":
        audit = t.audit
        if not audit.enabled:
            raise APIError(409, "no audit log is configured (audit.path).", code="no_audit")
        from serve.audit import verify

        rep = await asyncio.to_thread(verify, audit.path, audit.key)
        return await _ok(send, {"ok": rep.ok, "records": rep.records, "checkpoints": rep.checkpoints,
                                "head": rep.head, "problems": [str(p) for p in rep.problems]})
    raise APIError(404, f"no admin route {method} {scope['path'][:100]!r}; see serve/api/manage.py for the list.",
                   code="not_found")


async def _offpolicy(state: State, experiment: Any) -> dict[str, Any]:
    """The experiment's estimates from observed feedback in the traffic log (read in a thread)."""
    directory = getattr(state.logbook, "directory", None)
    if not state.logbook.keeps_shadow or directory is None:
        return {"available": False, "reason": "the service keeps no traffic log, so there is no observed feedback "
                                              "to estimate from; set logbook.dir and send POST /v1/feedback."}
    lam = float(state.holder.current.router.rule.lam)
    return await asyncio.to_thread(experiment.offpolicy, directory, lam)  # type: ignore[no-any-return]


async def _ok(send: Send, body: Any, status: int = 200) -> int:
    await send_bytes(send, status, orjson.dumps(body), [])
    return status
