"""PLACEHOLDER - being written"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

CACHE_DIR = Path(os.environ.get("ROUTER_BENCH_CACHE", Path.home() / ".cache" / "llm-routing" / "bench"))


def source_texts(outcomes, fit_rows=None) -> tuple[list[str], object]:
    """Prefix-stripped texts (stripper learned on ``fit_rows``, all rows when None) and the stripper."""
    from router.encoders import PrefixStripper
    from router.router import prompt_texts

    texts = prompt_texts(list(outcomes.prompts))
    fit_texts = texts if fit_rows is None else [texts[i] for i in fit_rows]
    pre = PrefixStripper().fit(fit_texts)
    return pre.transform(texts), pre


def minilm_cached():
    from router.encoders import EmbeddingCache, SentenceTransformerEncoder

    return EmbeddingCache(SentenceTransformerEncoder(), path=str(CACHE_DIR / "minilm"))


def embed_only() -> None:
    from router.data.registry import load_source

    enc = minilm_cached()
    for name in ("routerbench", "routellm-gsm8k", "routellm-mmlu"):
        o = load_source(name)
        rows = np.flatnonzero(o.split == "train") if o.split is not None else None
        texts, _ = source_texts(o, rows)
        for s in range(0, len(texts), 1000):
            t = time.time()
            enc.encode(texts[s:s + 1000])
            print(name, s, f"{time.time() - t:.1f}s", flush=True)


if __name__ == "__main__":
    embed_only()
