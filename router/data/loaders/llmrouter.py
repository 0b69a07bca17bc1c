"""LLMRouter (ulab-uiuc/LLMRouter) DC-router data: ``data/dcrouter_preprocessed/{train,test}.json``.

Each item is ``{"question": str, "scores": {model: float}[, "cluster_id": int]}`` for 9 models hosted on
NVIDIA NIM (qwen2.5-7b-instruct, llama3-chatqa-1.5-8b/70b, llama-3.1-nemotron-51b-instruct,
llama-3.3-nemotron-super-49b-v1, mistral-7b-instruct-v0.3, gemma-2-9b-it, codegemma-7b,
llama-3.1-8b-instruct); 5,608 train + 500 test prompts. The split comes from the file name; the source
gives no task label (``"unknown"``). Prompt ids are ``<split>/<item number>``.

Quality: LLMRouter's per-model score, mostly 0/1 correctness with a few fractional values
(``quality_kind="score"`` unless all are 0/1).

Cost: the source keeps no tokens or responses, so cost is *estimated* (``cost_kind="estimated"``) as
tokens times LLMRouter's own price list (``data/example_data/llm_candidates/default_llm.json``,
``input_price`` / ``output_price`` in USD per million tokens): input tokens = the question's
cl100k_base token count (:func:`router.tokens.count_tokens`), output tokens = :data:`~router.data.loaders._common.ESTIMATED_OUTPUT_TOKENS` (200) per call.

Rows lacking some model's score are dropped and recorded. Note: 119 question texts occur in both train
and test (the source's own split); they are kept and reported by
:func:`router.data.loaders.prompts_in_several_splits`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from router.data.loaders._common import (
    ESTIMATED_OUTPUT_TOKENS,
    estimate_tokens,
    quality_kind_of,
    read_json,
    read_scores_files,
    resolve_path,
)
from router.data.schema import Outcomes
from router.errors import SchemaError, SourceNotFoundError, UnknownModelError

__all__ = ["load_llmrouter", "read_llm_candidates"]

SOURCE = "llmrouter"
DEFAULT_PARTS = ("llmrouter_ulab", "data", "dcrouter_preprocessed")
PRICE_PARTS = ("example_data", "llm_candidates", "default_llm.json")


def read_llm_candidates(path: str | os.PathLike[str]) -> dict[str, tuple[float, float]]:
    """LLMRouter's model list as ``{model: (usd_per_input_token, usd_per_output_token)}``."""
    p = Path(path)
    raw = read_json(p)
    if not isinstance(raw, dict):
        raise SchemaError(f"{p}: expected an object {{model: {{input_price, output_price, ...}}}}.")
    out: dict[str, tuple[float, float]] = {}
    for name, entry in raw.items():
        try:
            pin, pout = float(entry["input_price"]), float(entry["output_price"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"{p}: model {name!r} needs numeric 'input_price' and 'output_price' "
                              "(USD per million tokens).") from exc
        out[str(name)] = (pin / 1e6, pout / 1e6)
    return out


def load_llmrouter(
    path: str | os.PathLike[str] | None = None, *, prices_path: str | os.PathLike[str] | None = None
) -> Outcomes:
    """Load LLMRouter's DC-router train and test data.

    Args:
        path: the ``dcrouter_preprocessed`` folder or one of its JSON files;
            default ``$ROUTING_DATA_DIR/llmrouter_ulab/data/dcrouter_preprocessed``.
        prices_path: LLMRouter's ``default_llm.json``; default ``../example_data/llm_candidates/default_llm.json``
            next to the data folder.
    """
    root = resolve_path(path, *DEFAULT_PARTS, source=SOURCE)
    files = sorted(root.glob("*.json")) if root.is_dir() else [root]
    if not files:
        raise SourceNotFoundError(f"{SOURCE}: no .json files in {root}.")
    folder = root if root.is_dir() else root.parent
    price_file = Path(prices_path) if prices_path is not None else folder.parent.joinpath(*PRICE_PARTS)
    if not price_file.is_file():
        raise SourceNotFoundError(
            f"{SOURCE}: price list {price_file} does not exist; pass prices_path=... (LLMRouter's default_llm.json)."
        )
    prices = read_llm_candidates(price_file)

    ids, prompts, splits, models, q, drops = read_scores_files(files, SOURCE)
    unknown = [m for m in models if m not in prices]
    if unknown:
        raise UnknownModelError(f"{SOURCE}: no price for model(s) {unknown} in {price_file}; add them there.")
    tin = np.repeat(estimate_tokens(prompts)[:, None], len(models), axis=1)
    tout = np.full_like(tin, float(ESTIMATED_OUTPUT_TOKENS))
    p = np.array([prices[m] for m in models])
    return Outcomes(
        prompt_ids=ids,
        prompts=prompts,
        models=models,
        quality=q,
        cost=tin * p[:, 0] + tout * p[:, 1],
        input_tokens=tin,
        output_tokens=tout,
        split=splits,
        source=SOURCE,
        quality_kind=quality_kind_of(q),
        cost_kind="estimated",
        dropped=tuple(drops),
    )
