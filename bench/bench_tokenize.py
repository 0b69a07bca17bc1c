"""Tokenising for the static encoder: the Hugging Face tokenizer against the Python WordPiece path.

Run: ``python bench/bench_tokenize.py [--reps 5] [--quick]``. Writes ``bench/results/tokenize.json``
and ``bench/results/tokenize.md``.

Per prompt, CPU time of the process (the machine's cores are shared, so wall time is recorded but
CPU time is the measure) for:

- ``hf``: ``tokenizer.encode_batch_fast(batch, add_special_tokens=False)`` and the ids read out,
  what ``_encode_plain`` did before;
- ``fast``: ``BertWordPiece.encode_ids(batch)`` with its memo warm (steady state of a service);
- ``fast (cold)``: the same with an empty memo at the start of every pass, so every chunk's first
  sighting pays for the real WordPiece model;
- ``encode (HF)`` / ``encode (fast)``: the whole ``StaticEncoder.encode(batch)`` with the fast path
  forced off (the Hugging Face tokenizer; otherwise the same code) and on.

Tokenizer rows get the texts as ``_encode_plain`` hands them over (cut to 3,072 characters).
Batches of 1, 16 and 64 over every unique prompt of each set; the methods run interleaved in a
seeded random order, ``--reps`` times, and the table gives the median pass (min and max in the
JSON). Every pass checks the fast ids equal the tokenizer's, and the encoders' vectors are compared
bit for bit.

Sets: the demo prompts (``datasets/demo``); RouterBench 0-shot prompts through ``ROUTING_DATA_DIR``
as logged (with their few-shot prefixes) and after ``PrefixStripper`` (what a router trained on
them encodes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BATCHES = (1, 16, 64)
METHODS = ("hf", "fast", "fast (cold)", "encode (HF)", "encode (fast)")


def load_sets(quick: bool) -> dict[str, list[str]]:
    import polars as pl

    from router.data.registry import load_source
    from router.encoders import PrefixStripper
    from router.errors import SourceNotFoundError

    demo = list(dict.fromkeys(pl.read_parquet(ROOT / "datasets" / "demo" / "outcomes.parquet",
                                              columns=["prompt"])["prompt"].to_list()))
    sets = {"demo": demo}
    try:
        rb = list(dict.fromkeys(load_source("routerbench").prompts))
    except SourceNotFoundError as exc:
        print(f"RouterBench skipped: {exc}", file=sys.stderr)
    else:
        sets["routerbench"] = rb
        sets["routerbench (prefix-stripped)"] = list(dict.fromkeys(PrefixStripper().fit_transform(rb)))
    if quick:
        sets = {k: v[:300] for k, v in sets.items()}
    return sets


def machine() -> dict[str, Any]:
    import tokenizers

    from bench.machine import cpu_model

    return {"platform": platform.platform(), "cpu": cpu_model("unknown"), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__, "tokenizers": tokenizers.__version__,
            "load_average_at_start": list(os.getloadavg()),
            "note": "cores shared with other jobs; CPU time of the process is the measure"}


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.process_time() - c, time.perf_counter() - w, out


def hf_pass(tok: Any, batches: list[list[str]]) -> list[list[list[int]]]:
    return [[e.ids for e in tok.encode_batch_fast(b, add_special_tokens=False)] for b in batches]


def wp_pass(wp: Any, batches: list[list[str]]) -> list[list[list[int]]]:
    return [wp.encode_ids(b) for b in batches]


def encode_pass(enc: Any, batches: list[list[str]]) -> list[np.ndarray]:
    return [enc.encode(b) for b in batches]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="300 prompts per set, 2 repetitions")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args(argv)
    reps = 2 if a.quick else a.reps
    sys.path.insert(0, str(ROOT))
    from router.encoders import StaticEncoder
    from router.encoders.wordpiece import BertWordPiece

    t_start = time.perf_counter()
    doc: dict[str, Any] = {"benchmark": "tokenize", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                           "command": "python bench/bench_tokenize.py " + " ".join(sys.argv[1:] if argv is None
                                                                                   else argv),
                           "machine": machine()}
    on = StaticEncoder()
    on.encode(["warm up"])
    off = StaticEncoder()
    off.encode(["warm up"])
    off._wordpiece = None  # the Hugging Face tokenizer, as before
    wp = on._wordpiece
    if wp is None:
        raise SystemExit("the static encoder's tokenizer did not get the fast path; nothing to measure")
    model = on._load()
    tok, cut = model.tokenizer, model.max_length * model.median_token_length
    literals = wp.literals

    sets = load_sets(a.quick)
    shares = {}
    for name, texts in sets.items():
        ascii_ = [t.isascii() for t in texts]
        lit = [t.isascii() and any(x in t for x in literals) for t in texts]
        shares[name] = {"prompts": len(texts), "mean_chars": float(np.mean([len(t) for t in texts])),
                        "ascii_share": float(np.mean(ascii_)), "ascii_with_literal_share": float(np.mean(lit)),
                        "fast_path_share": float(np.mean([x and not y for x, y in zip(ascii_, lit, strict=True)]))}
    doc["sets"] = shares

    # memo size after every set's prompts, measured alone
    tracemalloc.start()
    probe = BertWordPiece.from_tokenizer(tok)
    assert probe is not None
    for texts in sets.values():
        probe.encode_ids([t[:cut] for t in texts])
    memo_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    doc["memo"] = {"entries": len(probe._memo), "bytes": memo_bytes,
                   "bytes_per_entry": memo_bytes / max(1, len(probe._memo)), "max_words": probe.max_words}

    rng = random.Random(0)
    raw: dict[tuple[str, int, str], list[tuple[float, float]]] = {}
    checks = {"ids_equal": True, "vectors_equal": True}
    for rep in range(reps):
        for name, texts in sets.items():
            cut_texts = [t[:cut] for t in texts]
            for b in BATCHES:
                chunks = [cut_texts[i:i + b] for i in range(0, len(texts), b)]
                full = [texts[i:i + b] for i in range(0, len(texts), b)]
                cold = BertWordPiece.from_tokenizer(tok)
                assert cold is not None
                runs: dict[str, Callable[[], Any]] = {
                    "hf": partial(hf_pass, tok, chunks),
                    "fast": partial(wp_pass, wp, chunks),
                    "fast (cold)": partial(wp_pass, cold, chunks),
                    "encode (HF)": partial(encode_pass, off, full),
                    "encode (fast)": partial(encode_pass, on, full),
                }
                order = list(METHODS)
                rng.shuffle(order)
                outs = {}
                for m in order:
                    cpu, wall, outs[m] = timed(runs[m])
                    raw.setdefault((name, b, m), []).append((cpu / len(texts), wall / len(texts)))
                checks["ids_equal"] &= outs["hf"] == outs["fast"] == outs["fast (cold)"]
                checks["vectors_equal"] &= all(np.array_equal(x, y) for x, y in
                                               zip(outs["encode (HF)"], outs["encode (fast)"], strict=True))
            print(f"rep {rep + 1}/{reps} {name} done ({time.perf_counter() - t_start:.0f} s)", flush=True)
    if not all(checks.values()):
        raise SystemExit(f"the fast path disagreed with the tokenizer: {checks}")
    rows = []
    for (name, b, m), vals in raw.items():
        cpus = [v[0] * 1e6 for v in vals]
        rows.append({"set": name, "batch": b, "method": m, "cpu_us_per_prompt_median": statistics.median(cpus),
                     "cpu_us_per_prompt_min": min(cpus), "cpu_us_per_prompt_max": max(cpus),
                     "wall_us_per_prompt_median": statistics.median(v[1] * 1e6 for v in vals), "reps": len(vals)})
    doc.update(checks=checks, reps=reps, rows=rows, wall_s=time.perf_counter() - t_start)
    doc["machine"]["load_average_at_end"] = list(os.getloadavg())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenize.json").write_text(json.dumps(doc, indent=1))
    (out / "tokenize.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


def markdown(doc: dict[str, Any]) -> str:
    mc = doc["machine"]
    by = {(r["set"], r["batch"], r["method"]): r["cpu_us_per_prompt_median"] for r in doc["rows"]}
    lines = [
        "# Static encoder: tokenising with Hugging Face `tokenizers` vs the Python WordPiece path",
        "",
        f"Run {doc['date']} on {mc['cpu']} ({mc['cpu_count']} CPUs, {mc['platform']}), Python {mc['python']}, "
        f"tokenizers {mc['tokenizers']}, numpy {mc['numpy']}; load average {mc['load_average_at_start'][0]:.1f} "
        f"at start, {mc['load_average_at_end'][0]:.1f} at end ({mc['note']}). Command: `{doc['command']}`; "
        f"{doc['reps']} interleaved repetitions, median pass; {doc['wall_s']:.0f} s in all.",
        "",
        "Microseconds of CPU per prompt. `hf` / `fast`: the tokenizer step alone (ids as `_encode_plain` uses "
        "them; `fast (cold)` starts every pass with an empty memo). `encode`: the whole "
        "`StaticEncoder.encode(batch)` with the fast path forced off (HF) and on. Ids equal on every pass: "
        f"{doc['checks']['ids_equal']}; vectors bit-identical: {doc['checks']['vectors_equal']}.",
        "",
        "| prompts | batch | hf | fast | fast (cold) | tokenizer speed-up | encode (HF) | encode (fast) "
        "| encode speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in doc["sets"]:
        for b in BATCHES:
            g = {m: by[(name, b, m)] for m in METHODS}
            lines.append(f"| {name} | {b} | {g['hf']:.1f} | {g['fast']:.1f} | {g['fast (cold)']:.1f} "
                         f"| {g['hf'] / g['fast']:.1f}x | {g['encode (HF)']:.1f} | {g['encode (fast)']:.1f} "
                         f"| {g['encode (HF)'] / g['encode (fast)']:.1f}x |")
    lines += ["", "Which prompts take the fast path (ASCII and no added-token literal such as `[UNK]`):", "",
              "| prompts | unique prompts | mean characters | ASCII | ASCII with a literal | fast path |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, s in doc["sets"].items():
        lines.append(f"| {name} | {s['prompts']} | {s['mean_chars']:.0f} | {s['ascii_share']:.2%} "
                     f"| {s['ascii_with_literal_share']:.2%} | {s['fast_path_share']:.2%} |")
    mm = doc["memo"]
    lines += ["", f"Memo after all the prompts above: {mm['entries']:,} chunks, {mm['bytes'] / 1e6:.1f} MB "
              f"({mm['bytes_per_entry']:.0f} bytes a chunk, tracemalloc); it is cleared past {mm['max_words']:,} "
              f"chunks, so it stays near {mm['bytes_per_entry'] * mm['max_words'] / 1e6:.0f} MB at most.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
