"""``python -m serve.audit verify PATH [--key-file F] [--head HASH]``: check an audit log.

The HMAC key comes from ``--key-file`` or ``ROUTER_SERVE_AUDIT__HMAC_KEY``; without one, hashes and
the chain are checked but checkpoint signatures are not (and the output says so). Exit status 0 when
the log is intact, 1 when it was tampered with (each problem printed with its line), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from serve.audit import verify


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serve.audit", description="Audit log tools.")
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="check an audit log for edited, removed, inserted or reordered records")
    v.add_argument("path")
    v.add_argument("--key-file", help="file holding the HMAC key (default: $ROUTER_SERVE_AUDIT__HMAC_KEY)")
    v.add_argument("--head", help="a chain head hash recorded earlier, which must still be in the log")
    args = p.parse_args(argv)
    path = Path(args.path)
    if not path.is_file():
        print(f"error: {path} is not a file; give the audit log's path (audit.path).", file=sys.stderr)
        return 2
    key: bytes | None = None
    if args.key_file:
        key = Path(args.key_file).read_bytes().strip()
    elif os.environ.get("ROUTER_SERVE_AUDIT__HMAC_KEY"):
        key = os.environ["ROUTER_SERVE_AUDIT__HMAC_KEY"].encode()
    rep = verify(path, key, head=args.head)
    if rep.ok:
        sig = "signatures verified" if key is not None else "signatures NOT checked (no key given)"
        print(f"OK: {rep.records} records, {rep.checkpoints} checkpoints ({sig}), {rep.unsealed} after the last "
              f"checkpoint; head {rep.head}")
        return 0
    print(f"TAMPERED: {path}: {len(rep.problems)} problem(s); first at line {rep.problems[0].line}")
    for prob in rep.problems:
        print("  " + str(prob))
    return 1


if __name__ == "__main__":
    sys.exit(main())
