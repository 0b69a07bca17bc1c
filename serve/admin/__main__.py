"""``python -m serve.admin keys create|list|revoke`` and ``budgets set|list``: the tenant store from the shell.

The store is ``--store PATH``, else ``auth.store`` of ``--config FILE`` / ``ROUTER_SERVE_AUTH__STORE``.
A running service picks changes up within ``auth.reload_s`` seconds. ``--audit`` records the change
in the audit log (with ``ROUTER_SERVE_AUDIT__HMAC_KEY``), as the admin endpoint does; stop the service
first or give the CLI its own audit file, as one file has one writer.

Examples::

    python -m serve.admin keys create --store tenants.db --tenant acme --role member --expires-days 90
    python -m serve.admin keys list --store tenants.db [--tenant acme] [--json]
    python -m serve.admin keys revoke --store tenants.db 3f2a9c01b7de
    python -m serve.admin budgets set --store tenants.db --tenant acme --budget-usd 50 --on-budget downgrade --rpm 600
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from router.errors import ConfigError


def _store_path(args: argparse.Namespace) -> str:
    if args.store:
        return str(args.store)
    if args.config or os.environ.get("ROUTER_SERVE_AUTH__STORE"):
        import yaml

        if args.config:
            with open(args.config, encoding="utf-8") as fh:
                raw: Any = yaml.safe_load(fh) or {}
            path = ((raw.get("auth") or {}).get("store")) if isinstance(raw, dict) else None
            if path:
                return str(path)
        if os.environ.get("ROUTER_SERVE_AUTH__STORE"):
            return os.environ["ROUTER_SERVE_AUTH__STORE"]
    raise ConfigError("no tenant store: pass --store PATH (or --config FILE with auth.store, or set "
                      "ROUTER_SERVE_AUTH__STORE).")


def _audit(args: argparse.Namespace) -> Any:
    from serve.audit import AuditLog, NullAudit

    if not args.audit:
        return NullAudit()
    key = os.environ.get("ROUTER_SERVE_AUDIT__HMAC_KEY", "").encode()
    return AuditLog(args.audit, key)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serve.admin", description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", help="the tenant store (SQLite file)")
    common.add_argument("--config", help="the service config, whose auth.store is used")
    common.add_argument("--audit", help="append this change to the audit log at this path")
    sub = p.add_subparsers(dest="group", required=True)
    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="cmd", required=True)
    c = keys.add_parser("create", parents=[common], help="create a key (printed once)")
    c.add_argument("--tenant", required=True)
    c.add_argument("--role", default="member", choices=("admin", "member", "read-only"))
    c.add_argument("--name", default="")
    c.add_argument("--expires-days", type=float, help="days until the key expires (default: never)")
    ls = keys.add_parser("list", parents=[common], help="list keys (never the keys themselves)")
    ls.add_argument("--tenant")
    ls.add_argument("--json", action="store_true")
    rv = keys.add_parser("revoke", parents=[common], help="revoke a key by its id")
    rv.add_argument("key_id")
    budgets = sub.add_parser("budgets", help="budgets and limits").add_subparsers(dest="cmd", required=True)
    bs = budgets.add_parser("set", parents=[common], help="set a tenant's budget and limits (replaces them)")
    bs.add_argument("--tenant", required=True)
    bs.add_argument("--budget-usd", type=float)
    bs.add_argument("--period", default="month", choices=("day", "month", "total"))
    bs.add_argument("--on-budget", default="refuse", choices=("refuse", "downgrade"))
    bs.add_argument("--rpm", type=int)
    bs.add_argument("--tpm", type=int)
    bs.add_argument("--max-body-bytes", type=int)
    budgets.add_parser("list", parents=[common], help="every tenant's stored limits")
    args = p.parse_args(argv)
    try:
        return _run(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from serve.tenants.keys import KeyStore
    from serve.tenants.limits import Limits

    store = KeyStore(_store_path(args))
    actor = "cli:" + (os.environ.get("USER") or str(os.getuid()))
    if args.group == "keys" and args.cmd == "create":
        expires = time.time() + args.expires_days * 86400 if args.expires_days else None
        rec, key = store.create(args.tenant, args.role, name=args.name, expires_at=expires)
        audit = _audit(args)
        audit.record("key.create", actor, rec.tenant, key_id=rec.key_id, role=rec.role, name=rec.name,
                     expires_at=rec.expires_at)
        audit.close()
        print(key)
        print(f"key id {rec.key_id}, tenant {rec.tenant}, role {rec.role}; store the key now: it is not shown again.",
              file=sys.stderr)
        return 0
    if args.group == "keys" and args.cmd == "list":
        rows = [r.public() for r in store.keys(args.tenant)]
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            print(f"{'key_id':12}  {'tenant':16} {'role':9} {'status':8} {'expires':20} name")
            for r in rows:
                exp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["expires_at"])) if r["expires_at"] else "never"
                print(f"{r['key_id']:12}  {r['tenant']:16} {r['role']:9} {r['status']:8} {exp:20} {r['name']}")
        return 0
    if args.group == "keys" and args.cmd == "revoke":
        rec = store.revoke(args.key_id)
        audit = _audit(args)
        audit.record("key.revoke", actor, rec.tenant, key_id=rec.key_id)
        audit.close()
        print(f"revoked {rec.key_id} (tenant {rec.tenant})")
        return 0
    if args.group == "budgets" and args.cmd == "set":
        lim = Limits(budget_usd=args.budget_usd, budget_period=args.period, on_budget=args.on_budget,
                     rpm=args.rpm, tpm=args.tpm, max_body_bytes=args.max_body_bytes)
        store.set_limits(args.tenant, lim.to_dict())
        audit = _audit(args)
        audit.record("limits.set", actor, args.tenant, limits=lim.to_dict())
        audit.close()
        print(json.dumps({"tenant": args.tenant, "limits": lim.to_dict()}))
        return 0
    print(json.dumps(store.limits(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
