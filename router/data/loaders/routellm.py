"""RouteLLM's evaluation outcomes (lm-sys/RouteLLM): two models on MMLU, GSM8K and MT-Bench.

Models: ``gpt-4-1106-preview`` (RouteLLM's strong model) and ``mistralai/Mixtral-8x7B-Instruct-v0.1``
(its weak model). Files live under ``routellm/routellm/evals/<benchmark>/`` in the data directory.

Quality:

* **MMLU** (``mmlu/responses/mmlu_<subject>.csv``, task = subject): 1 if the model picked the right
  choice, else 0 (``quality_kind="binary"``). Prompt ids are ``mmlu/<subject>/<row>``.
* **GSM8K** (``gsm8k/gsm8k_responses.csv``, task ``gsm8k``): 1 if the final number is right, else 0.
* **MT-Bench** (``mt_bench/question.jsonl`` + ``judgements.jsonl``, task = category): GPT-4's single-answer
  grade from 1 to 10 for each of the two turns, mapped to ``(grade - 1) / 9`` and averaged over the two
  turns (``quality_kind="score"``). One row per question, as RouteLLM routes a whole conversation on its
  first turn: the prompt is the first user turn. Prompt ids are ``mt-bench/<question_id>``.

Cost: the source has none, so it is *estimated* (``cost_kind="estimated"``) as tokens times litellm's
price (:class:`router.data.prices.PriceTable`): input tokens = the prompt's cl100k_base token count
(:func:`router.tokens.count_tokens`); output tokens = the response's count where the responses exist (GSM8K; MT-Bench, taken from the judge prompts, where
turn 2 also re-sends turn 1 and its answer as input), else :data:`MMLU_OUTPUT_TOKENS` for MMLU's
single-letter answers. Token estimates are returned too.

Dropped rows (recorded with reasons): prompts RouteLLM flagged as contaminated
(``contaminated_prompts.jsonl``, matched on ``eval_prompt`` as RouteLLM does), rows with a missing label,
MT-Bench questions without a grade for both turns of both models.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from router.data.loaders._common import (
    dropped,
    estimate_tokens,
    read_jsonl,
    resolve_path,
)
from router.data.prices import PriceTable
from router.data.schema import DroppedRows, Outcomes
from router.data.validate import check_columns
from router.errors import SchemaError, SourceNotFoundError

__all__ = [
    "MMLU_OUTPUT_TOKENS",
    "MODELS",
    "MT_BENCH_OUTPUT_TOKENS",
    "load_routellm_gsm8k",
    "load_routellm_mmlu",
    "load_routellm_mt_bench",
]

#: RouteLLM's (strong, weak) model pair.
MODELS: tuple[str, str] = ("gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1")
#: Output tokens assumed for an MMLU answer (a letter plus formatting); RouteLLM kept no responses.
MMLU_OUTPUT_TOKENS = 5
#: Output tokens assumed per MT-Bench turn when the answer cannot be recovered from the judge prompt.
MT_BENCH_OUTPUT_TOKENS = 400
EVALS = ("routellm", "routellm", "evals")


def _contaminated(folder: Path) -> set[str]:
    file = folder / "contaminated_prompts.jsonl"
    if not file.is_file():
        return set()
    rows = read_jsonl(file)
    for i, row in enumerate(rows):
        if "eval_prompt" not in row:
            raise SchemaError(f"{file}: line {i + 1} has no 'eval_prompt'.")
    return {str(r["eval_prompt"]) for r in rows}


def _labels(df: pl.DataFrame, file: Path) -> pl.DataFrame:
    """Cast the model columns to 0/1 floats (bool, 0/1 or 'True'/'False'); unparsable -> error."""
    exprs = []
    for m in MODELS:
        dtype = df.schema[m]
        if dtype == pl.Boolean or dtype.is_numeric():
            exprs.append(pl.col(m).cast(pl.Float64))
            continue
        s = pl.col(m).cast(pl.String).str.strip_chars().str.to_lowercase()
        cast = (pl.when(s == "true").then(1.0).when(s == "false").then(0.0)
                .otherwise(s.cast(pl.Float64, strict=False)))
        bad = df.with_row_index("__r").filter(pl.col(m).is_not_null() & (s != "") & (s != "nan") & cast.is_null())
        if bad.height:
            raise SchemaError(f"{file}: row {bad['__r'][0]}, column {m!r} = {bad[m][0]!r}: expected True/False.")
        exprs.append(cast.alias(m))
    return df.with_columns(exprs)


def _drop_common(
    df: pl.DataFrame, file_of: pl.Expr, contaminated: set[str], drops: list[DroppedRows]
) -> pl.DataFrame:
    df = df.with_columns(file_of.alias("__file"))

    def record(reason: str, mask: pl.Expr) -> pl.DataFrame:
        gone = df.filter(mask)
        for (file,), grp in gone.group_by(["__file"], maintain_order=True):
            drops.append(dropped(reason, grp["__id"].to_list(), str(file)))
        return df.filter(mask.not_())

    df = record("prompt flagged as contaminated by RouteLLM (contaminated_prompts.jsonl)",
                pl.col("prompt").is_in(sorted(contaminated)))
    missing = pl.any_horizontal([pl.col(m).is_null() | pl.col(m).is_nan() for m in MODELS])
    df = record("label missing (NaN) for some models", missing)
    return df


def _price_cost(prices: PriceTable | None, tin: np.ndarray, tout: np.ndarray) -> np.ndarray:
    table = prices if prices is not None else PriceTable.load()
    return table.cost_matrix(list(MODELS), tin, tout)


def load_routellm_mmlu(path: str | os.PathLike[str] | None = None, *, prices: PriceTable | None = None) -> Outcomes:
    """RouteLLM's MMLU outcomes (all subjects).

    Args:
        path: the ``mmlu`` folder (holding ``responses/`` and ``contaminated_prompts.jsonl``);
            default ``$ROUTING_DATA_DIR/routellm/routellm/evals/mmlu``.
        prices: prices for the cost estimate; default litellm's table.
    """
    folder = resolve_path(path, *EVALS, "mmlu", source="routellm-mmlu")
    files = sorted((folder / "responses").glob("mmlu_*.csv"))
    if not files:
        raise SourceNotFoundError(f"routellm-mmlu: no responses/mmlu_<subject>.csv files in {folder}.")
    frames = []
    for f in files:
        df = pl.read_csv(f, infer_schema_length=0)
        check_columns(df.columns, ["prompt", *MODELS], source=str(f))
        subject = f.stem.removeprefix("mmlu_")
        frames.append(_labels(df.select(["prompt", *MODELS]), f).with_columns(
            pl.lit(subject).alias("task"),
            (pl.lit(f"mmlu/{subject}/") + pl.int_range(pl.len()).cast(pl.String)).alias("__id"),
            pl.lit(str(f)).alias("__file_name"),
        ))
    df = pl.concat(frames)
    drops: list[DroppedRows] = []
    df = _drop_common(df, pl.col("__file_name"), _contaminated(folder), drops)
    prompts = df["prompt"].to_list()
    tin = np.repeat(estimate_tokens(prompts)[:, None], len(MODELS), axis=1)
    tout = np.full_like(tin, float(MMLU_OUTPUT_TOKENS))
    return _build("routellm-mmlu", df, tin, tout, prices, drops, "binary")


def load_routellm_gsm8k(path: str | os.PathLike[str] | None = None, *, prices: PriceTable | None = None) -> Outcomes:
    """RouteLLM's GSM8K outcomes; output tokens are estimated from the logged responses.

    Args:
        path: the ``gsm8k`` folder or the ``gsm8k_responses.csv`` file;
            default ``$ROUTING_DATA_DIR/routellm/routellm/evals/gsm8k``.
        prices: prices for the cost estimate; default litellm's table.
    """
    p = resolve_path(path, *EVALS, "gsm8k", source="routellm-gsm8k")
    file = p / "gsm8k_responses.csv" if p.is_dir() else p
    if not file.is_file():
        raise SourceNotFoundError(f"routellm-gsm8k: {file} does not exist.")
    df = pl.read_csv(file, infer_schema_length=0)
    responses = [f"{m}_response" for m in MODELS]
    check_columns(df.columns, ["prompt", *MODELS], source=str(file))
    has_resp = all(r in df.columns for r in responses)
    df = _labels(df.select(["prompt", *MODELS, *(responses if has_resp else [])]), file).with_columns(
        pl.lit("gsm8k").alias("task"),
        (pl.lit("gsm8k/") + pl.int_range(pl.len()).cast(pl.String)).alias("__id"),
    )
    drops: list[DroppedRows] = []
    df = _drop_common(df, pl.lit(str(file)), _contaminated(file.parent), drops)
    prompts = df["prompt"].to_list()
    tin = np.repeat(estimate_tokens(prompts)[:, None], len(MODELS), axis=1)
    if has_resp:
        tout = np.stack([estimate_tokens(df[r].to_list()) for r in responses], axis=1)
    else:
        tout = np.full_like(tin, float(MT_BENCH_OUTPUT_TOKENS))
    return _build("routellm-gsm8k", df, tin, tout, prices, drops, "binary")


_ANSWER_RE = re.compile(
    r"### Assistant A:\n(.*?)(?=\n\n### User:|\n\n<\|The End of Assistant A's Conversation with User\|>)", re.S
)


def _answers_from_judge_prompt(user_prompt: str) -> list[str]:
    """The assistant's answers in a multi-turn judge prompt (the reference answer block is skipped)."""
    start = user_prompt.find("<|The Start of Assistant A's Conversation with User|>")
    return _ANSWER_RE.findall(user_prompt[start:]) if start >= 0 else []


def load_routellm_mt_bench(
    path: str | os.PathLike[str] | None = None, *, prices: PriceTable | None = None
) -> Outcomes:
    """RouteLLM's MT-Bench outcomes: one row per question, quality = mean of the two turns' grades.

    Args:
        path: the ``mt_bench`` folder (``question.jsonl``, ``judgements.jsonl``, ``contaminated_prompts.jsonl``);
            default ``$ROUTING_DATA_DIR/routellm/routellm/evals/mt_bench``.
        prices: prices for the cost estimate; default litellm's table.
    """
    folder = resolve_path(path, *EVALS, "mt_bench", source="routellm-mt-bench")
    qfile, jfile = folder / "question.jsonl", folder / "judgements.jsonl"
    for f in (qfile, jfile):
        if not f.is_file():
            raise SourceNotFoundError(f"routellm-mt-bench: {f} does not exist.")
    questions = read_jsonl(qfile)
    judgements = read_jsonl(jfile)
    for i, q in enumerate(questions):
        check_columns(q.keys(), ["question_id", "category", "turns"], source=f"{qfile}: line {i + 1}")
    for i, j in enumerate(judgements):
        check_columns(j.keys(), ["question_id", "model", "turn", "score"], source=f"{jfile}: line {i + 1}")
    grades: dict[tuple[int, str, int], float] = {}
    answers: dict[tuple[int, str], list[str]] = {}
    for i, j in enumerate(judgements):
        score = j["score"]
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise SchemaError(f"{jfile}: line {i + 1}, field 'score' = {score!r}: expected a grade 1-10.")
        key = (int(j["question_id"]), str(j["model"]), int(j["turn"]))
        if not (1 <= score <= 10):  # -1 marks a failed judgement in FastChat
            continue
        grades[key] = float(score)
        if key[2] == 2 and isinstance(j.get("user_prompt"), str):
            answers[key[:2]] = _answers_from_judge_prompt(j["user_prompt"])

    contaminated = {c.strip() for c in _contaminated(folder)}
    drops: list[DroppedRows] = []
    flagged = [q["question_id"] for q in questions if str(q["turns"][0]).strip() in contaminated]
    if flagged:
        drops.append(dropped("prompt flagged as contaminated by RouteLLM (contaminated_prompts.jsonl)",
                             [f"mt-bench/{q}" for q in flagged], qfile))
    incomplete: list[Any] = []
    rows: list[dict[str, Any]] = []
    for q in questions:
        qid = int(q["question_id"])
        if q["question_id"] in flagged:
            continue
        keys = [(qid, m, t) for m in MODELS for t in (1, 2)]
        if not all(k in grades for k in keys):
            incomplete.append(f"mt-bench/{qid}")
            continue
        rows.append({"qid": qid, "category": str(q["category"]), "turns": [str(t) for t in q["turns"]]})
    if incomplete:
        drops.append(dropped("question lacks a valid GPT-4 grade for both turns of every model",
                             incomplete, jfile))

    n, m = len(rows), len(MODELS)
    quality = np.zeros((n, m))
    tin = np.zeros((n, m))
    tout = np.zeros((n, m))
    for r, row in enumerate(rows):
        t1, t2 = (row["turns"] + ["", ""])[:2]
        for c, model in enumerate(MODELS):
            g = [grades[(row["qid"], model, t)] for t in (1, 2)]
            quality[r, c] = float(np.mean([(x - 1.0) / 9.0 for x in g]))
            ans = answers.get((row["qid"], model), [])
            a1, a2 = (ans + [None, None])[:2] if len(ans) >= 2 else (None, None)
            q1, q2 = estimate_tokens([t1, t2])
            o1 = estimate_tokens([a1])[0] if a1 is not None else float(MT_BENCH_OUTPUT_TOKENS)
            o2 = estimate_tokens([a2])[0] if a2 is not None else float(MT_BENCH_OUTPUT_TOKENS)
            tin[r, c] = q1 + (q1 + o1 + q2)  # turn 2 re-sends turn 1 and its answer
            tout[r, c] = o1 + o2
    df = pl.DataFrame({
        "__id": [f"mt-bench/{row['qid']}" for row in rows],
        "prompt": [row["turns"][0] for row in rows],
        "task": [row["category"] for row in rows],
        **{model: quality[:, c] for c, model in enumerate(MODELS)},
    }, schema_overrides={"__id": pl.String, "prompt": pl.String, "task": pl.String})
    return _build("routellm-mt-bench", df, tin, tout, prices, drops, "score")


def _build(
    source: str,
    df: pl.DataFrame,
    tin: np.ndarray,
    tout: np.ndarray,
    prices: PriceTable | None,
    drops: Sequence[DroppedRows],
    quality_kind: str,
) -> Outcomes:
    quality = df.select(list(MODELS)).to_numpy().astype(np.float64)
    return Outcomes(
        prompt_ids=df["__id"].to_list(),
        prompts=df["prompt"].to_list(),
        models=list(MODELS),
        quality=quality,
        cost=_price_cost(prices, tin, tout),
        tasks=df["task"].to_list(),
        input_tokens=tin,
        output_tokens=tout,
        source=source,
        quality_kind=quality_kind,
        cost_kind="estimated",
        dropped=tuple(drops),
    )

