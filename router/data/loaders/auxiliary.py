"""Loaders for the public data that is not an outcomes table.

* :func:`load_llmfao` -- llmonitor's crowdsourced benchmark with LLMFAO's pairwise votes
  (`dustalov/llmfao`, CC BY 4.0): 19 prompts x 70 models, each answer with its wall-clock latency
  (``duration``, ms) and generation rate (tokens/s), plus crowd and GPT-4 pairwise preferences. There is
  no cost and no absolute quality: it serves as real latency data for the latency model and as a small
  pairwise-preference set (``winner`` in ``left`` / ``right`` / ``tie``).
* :func:`load_paraphrase_pairs` -- GPTCache's benchmark pairs (MIT): 999 sentence / paraphrase pairs
  (``mock``: a semantic cache should answer the paraphrase from the cache) and 80,854 labelled Quora
  question pairs (``qqp``: label 1 = the same question, 0 = a different one, often worded alike), for the
  hit and false-hit rates of the semantic cache.

Both return polars frames; rows that cannot be used are reported, never silently dropped.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from router.data.paths import data_dir
from router.errors import SchemaError, SourceNotFoundError

__all__ = ["LLMFAOData", "load_llmfao", "load_paraphrase_pairs"]


@dataclass(frozen=True)
class LLMFAOData:
    """llmonitor answers and LLMFAO votes.

    Attributes:
        results: one row per (prompt, model) answer: ``prompt_id, prompt, model, api, latency_s,
            tokens_per_s, answer``.
        comparisons: one row per pairwise vote: ``prompt_id, model_left, model_right, winner, judge``
            (``judge`` is ``crowd`` or ``gpt4``).
        dropped: rows removed, as (reason, count).
    """

    results: pl.DataFrame
    comparisons: pl.DataFrame
    dropped: tuple[tuple[str, int], ...]


def _require(path: Path) -> Path:
    if not path.exists():
        raise SourceNotFoundError(f"{path} does not exist; set ROUTING_DATA_DIR to the folder holding the data.")
    return path


def load_llmfao(path: str | Path | None = None) -> LLMFAOData:
    """Read ``llmfao_llmonitor/`` (results with latency, and crowd / GPT-4 pairwise comparisons)."""
    root = _require(Path(path) if path is not None else data_dir() / "llmfao_llmonitor")
    prompts = pl.read_ndjson(_require(root / "prompts.jsonl")).select(
        pl.col("id").alias("prompt_id"), pl.col("text").alias("prompt"))
    raw = pl.read_ndjson(_require(root / "results.jsonl"), infer_schema_length=None)
    need = {"prompt", "name", "api", "duration", "rate", "result"}
    if not need <= set(raw.columns):
        raise SchemaError(f"{root / 'results.jsonl'}: missing column(s) {sorted(need - set(raw.columns))}.")
    results = raw.select(
        pl.col("prompt").alias("prompt_id"), pl.col("name").alias("model"), "api",
        (pl.col("duration").cast(pl.Float64) / 1000.0).alias("latency_s"),
        pl.col("rate").cast(pl.Float64).alias("tokens_per_s"), pl.col("result").alias("answer"),
    ).join(prompts, on="prompt_id", how="left")
    bad = results.filter(pl.col("latency_s").is_null() | (pl.col("latency_s") <= 0) | pl.col("prompt").is_null())
    results = results.filter(~(pl.col("latency_s").is_null() | (pl.col("latency_s") <= 0) | pl.col("prompt").is_null()))
    frames = []
    for judge, name in (("crowd", "crowd-comparisons.csv"), ("gpt4", "gpt4-comparisons.csv")):
        df = pl.read_csv(_require(root / name))
        frames.append(df.select(pl.col("prompt").alias("prompt_id"), pl.col("left").alias("model_left"),
                                pl.col("right").alias("model_right"), "winner", pl.lit(judge).alias("judge")))
    comparisons = pl.concat(frames)
    dropped = (("answer without a positive latency or an unknown prompt", bad.height),) if bad.height else ()
    return LLMFAOData(results.select("prompt_id", "prompt", "model", "api", "latency_s", "tokens_per_s", "answer"),
                      comparisons, dropped)


def load_paraphrase_pairs(kind: str = "qqp", path: str | Path | None = None) -> pl.DataFrame:
    """Labelled text pairs ``text_a, text_b, label`` (1 = same meaning) for semantic-cache evaluation.

    Args:
        kind: ``"qqp"`` (80,854 Quora pairs, labels 0/1) or ``"mock"`` (999 paraphrase pairs, all label 1).
        path: the file; default under ``gptcache_paraphrase/examples/benchmark/``.
    """
    base = data_dir() / "gptcache_paraphrase" / "examples" / "benchmark"
    if kind == "mock":
        file = _require(Path(path) if path is not None else base / "mock_data.json")
        rows = json.loads(file.read_text())
        return pl.DataFrame({"text_a": [r["origin"] for r in rows], "text_b": [r["similar"] for r in rows],
                             "label": [1] * len(rows)})
    if kind != "qqp":
        raise SchemaError(f"kind must be 'qqp' or 'mock', got {kind!r}.")
    file = _require(Path(path) if path is not None else base / "similiar_qqp_full.json.gz")
    # despite its name the file is a gzip-compressed tar archive with one JSON member
    with tarfile.open(file, "r:gz") as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith(".json")), None)
        if member is None:
            raise SchemaError(f"{file}: the archive holds no .json member.")
        fh = tar.extractfile(member)
        assert fh is not None
        rows = json.load(io.TextIOWrapper(fh, encoding="utf-8"))
    df = pl.DataFrame(rows).select("text_a", "text_b", pl.col("label").cast(pl.Int64))
    bad = df.filter(~pl.col("label").is_in([0, 1]))
    if bad.height:
        raise SchemaError(f"{file}: {bad.height} pair(s) have a label other than 0/1.")
    return df
