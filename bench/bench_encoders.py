"""Encoder speed: batch prompts/s and single-request latency p50/p99 for MiniLM, static and hashing.

Run: ``python bench/bench_encoders.py [--n 2000]``. Prompts are RouterBench rows from
``$ROUTING_DATA_DIR/routerdc/datasets/routerbench_zs`` (synthetic text when absent).
Writes ``bench/results/encoders.json``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def load_prompts(n: int) -> tuple[list[str], str]:
    root = Path(os.environ.get("ROUTING_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    folder = root / "routerdc" / "datasets" / "routerbench_zs"
    if folder.is_dir():
        import polars as pl

        prompts: list[str] = []
        for f in sorted(folder.glob("*_train.csv")):
            for cell in pl.read_csv(f, columns=["prompt"], infer_schema_length=0)["prompt"].to_list():
                prompts.append(str(ast.literal_eval(cell)[0]))
        reps = int(np.ceil(n / len(prompts)))
        return (prompts * reps)[:n], f"routerbench_zs ({len(prompts)} unique train prompts)"
    words = "route the prompt to a model that answers it well and cheaply for users".split()
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, size=40)) for _ in range(n)], "synthetic"


def bench(enc, prompts: list[str], n_single: int) -> dict[str, float]:
    enc.encode(prompts[:8])  # load / warm up
    t = time.perf_counter()
    enc.encode(prompts)
    batch_s = time.perf_counter() - t
    lat = []
    for p in prompts[:n_single]:
        t = time.perf_counter()
        enc.encode([p])
        lat.append(time.perf_counter() - t)
    return {
        "n_prompts": len(prompts),
        "prompts_per_s": len(prompts) / batch_s,
        "single_p50_ms": float(np.percentile(lat, 50) * 1e3),
        "single_p99_ms": float(np.percentile(lat, 99) * 1e3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="prompts for the static and hashing encoders")
    ap.add_argument("--n-minilm", type=int, default=300, help="prompts for MiniLM (slow on CPU)")
    ap.add_argument("--n-single", type=int, default=200)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "encoders.json"))
    args = ap.parse_args()

    from router.encoders import HashingEncoder, PrefixStripper, SentenceTransformerEncoder, StaticEncoder

    raw, source = load_prompts(max(args.n, args.n_minilm))
    prompts = PrefixStripper().fit_transform(raw)  # what the router actually encodes
    results: dict[str, dict[str, float]] = {}
    t = time.perf_counter()
    static = StaticEncoder()
    static.encode(["warm"])
    load_static_s = time.perf_counter() - t
    results["static"] = bench(static, prompts[: args.n], args.n_single)
    results["static"]["load_or_distill_s"] = load_static_s
    results["hashing"] = bench(HashingEncoder(), prompts[: args.n], args.n_single)
    results["minilm"] = bench(SentenceTransformerEncoder(), prompts[: args.n_minilm], min(args.n_single, 100))
    import torch

    report = {
        "source": source,
        "prefix_stripped": True,
        "mean_chars": float(np.mean([len(p) for p in prompts[: args.n]])),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
        },
        "results": results,
        "static_over_minilm": results["static"]["prompts_per_s"] / results["minilm"]["prompts_per_s"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
