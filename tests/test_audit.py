"""The audit log's tamper evidence: a table of edits, removals, insertions and reorderings, each
detected by ``verify`` (and ``python -m serve.audit verify``) at the line where it happened."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from serve_support import ROOT

from serve.audit import AuditLog, record_hash, verify

KEY = b"k3y-for-tests"


@pytest.fixture()
def log_lines(tmp_path):
    """A closed log of 12 events with a checkpoint after every 4: 15 lines."""
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path, KEY, checkpoint_every=4)
    for i in range(12):
        audit.record("key.create", "key:admin", f"t{i}", key_id=f"{i:012x}", role="member")
    audit.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 15 and [json.loads(x)["kind"] for x in lines].count("checkpoint") == 3
    return path, lines


def _rechain(recs: list[dict], start: int) -> None:
    """What a forger without the HMAC key can do: recompute every hash (and what checkpoints seal) from ``start``."""
    for i in range(start, len(recs)):
        recs[i]["prev"] = recs[i - 1]["hash"] if i else "0" * 64
        if recs[i]["kind"] == "checkpoint":
            recs[i]["detail"]["seals_seq"], recs[i]["detail"]["seals_hash"] = recs[i]["seq"] - 1, recs[i]["prev"]
        recs[i]["hash"] = record_hash(recs[i])


def edit(recs):
    recs[5]["tenant"] = "mallory"


def edit_and_rehash_one(recs):
    recs[5]["tenant"] = "mallory"
    recs[5]["hash"] = record_hash(recs[5])


def edit_and_rechain_all(recs):
    recs[5]["detail"]["role"] = "admin"
    _rechain(recs, 5)


def remove_middle(recs):
    del recs[6]


def remove_first(recs):
    del recs[0]


def remove_and_rechain(recs):
    del recs[6]
    for i in range(6, len(recs)):
        recs[i]["seq"] -= 1
    _rechain(recs, 6)


def insert_copy(recs):
    recs.insert(7, dict(recs[2]))


def insert_forged(recs):
    forged = {"seq": recs[6]["seq"] + 1, "ts": recs[6]["ts"], "kind": "key.create", "actor": "key:admin",
              "tenant": "mallory", "detail": {"role": "admin"}, "prev": recs[6]["hash"]}
    forged["hash"] = record_hash(forged)
    recs.insert(7, forged)


def swap_adjacent(recs):
    recs[3], recs[4] = recs[4], recs[3]


def swap_and_rechain(recs):
    recs[5], recs[6] = recs[6], recs[5]
    recs[5]["seq"], recs[6]["seq"] = recs[6]["seq"], recs[5]["seq"]
    _rechain(recs, 5)


def forge_checkpoint(recs):
    recs[4]["detail"]["mac"] = "0" * 64
    recs[4]["hash"] = record_hash(recs[4])
    _rechain(recs, 5)


# case -> the first line reported and a phrase of its message
CASES = [
    (edit, 6, "was edited"),
    (edit_and_rehash_one, 7, "does not chain"),
    (edit_and_rechain_all, 10, "checkpoint signature is wrong"),
    (remove_middle, 7, "seq 7 missing"),
    (remove_first, 1, "seq 1 missing"),
    (remove_and_rechain, 9, "checkpoint"),
    (insert_copy, 8, "inserted"),
    (insert_forged, 9, "inserted"),  # the forged record chains; the one after it cannot
    (swap_adjacent, 4, "seq 4 missing"),
    (swap_and_rechain, 10, "checkpoint signature is wrong"),
    (forge_checkpoint, 5, "checkpoint signature is wrong"),
]


def test_an_untouched_log_verifies(log_lines):
    path, lines = log_lines
    rep = verify(path, KEY)
    assert rep.ok and rep.records == 15 and rep.checkpoints == 3 and rep.unsealed == 0
    assert rep.head == json.loads(lines[-1])["hash"]


@pytest.mark.parametrize(("tamper", "line", "phrase"), CASES, ids=[c[0].__name__ for c in CASES])
def test_tampering_is_detected_where_it_happened(log_lines, tamper, line, phrase):
    path, lines = log_lines
    recs = [json.loads(x) for x in lines]
    tamper(recs)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    rep = verify(path, KEY)
    assert not rep.ok
    assert rep.problems[0].line == line and phrase in rep.problems[0].message, [str(p) for p in rep.problems]
    out = subprocess.run([sys.executable, "-m", "serve.audit", "verify", str(path)], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "ROUTER_SERVE_AUDIT__HMAC_KEY": KEY.decode()})
    assert out.returncode == 1 and out.stdout.startswith("TAMPERED") and f"line {line}" in out.stdout


def test_a_cut_tail_is_detected_against_a_saved_head(log_lines):
    path, lines = log_lines
    head = json.loads(lines[-1])["hash"]
    path.write_text("\n".join(lines[:-3]) + "\n")
    assert verify(path, KEY).ok  # the chain alone cannot tell a cut tail ...
    rep = verify(path, KEY, head=head)  # ... a head kept elsewhere can
    assert not rep.ok and "records at its end were removed" in rep.problems[0].message


def test_a_reopened_log_continues_the_chain(log_lines):
    path, _ = log_lines
    audit = AuditLog(path, KEY, checkpoint_every=4)
    audit.record("limits.set", "cli:root", "acme", limits={"rpm": 5})
    audit.close()
    rep = verify(path, KEY)
    assert rep.ok and rep.records == 17


def test_wrong_key_fails_the_checkpoints_and_no_key_skips_them(log_lines):
    path, _ = log_lines
    assert "checkpoint signature is wrong" in verify(path, b"other").problems[0].message
    out = subprocess.run([sys.executable, "-m", "serve.audit", "verify", str(path)], cwd=ROOT, capture_output=True,
                         text=True, env={k: v for k, v in os.environ.items() if k != "ROUTER_SERVE_AUDIT__HMAC_KEY"})
    assert out.returncode == 0 and "signatures NOT checked" in out.stdout


def test_an_audit_log_needs_a_key(tmp_path):
    with pytest.raises(ValueError, match="needs an HMAC key"):
        AuditLog(tmp_path / "a.jsonl", b"")
