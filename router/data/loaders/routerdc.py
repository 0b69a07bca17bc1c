"""RouterDC's own labels (shuhao02/RouterDC): ``datasets/split2_model7/*.json``, 7 open ~7B models.

Each file is a JSON list of ``{"question": str, "scores": {model: float}[, "cluster_id": int]}``; 16 files
cover MMLU, GSM8K, CMMLU, C-Eval, ARC-Easy/Challenge, HumanEval, MBPP, MATH-prealgebra and HumanEval-JS
(20,600 prompts). Models: Mistral-7B-v0.1, MetaMath-Mistral-7B, Chinese-Mistral-7B-v0.1, zephyr-7b-beta,
dolphin-2.6-mistral-7b, Meta-Llama-3-8B, dolphin-2.9-llama3-8b (with their Hugging Face org prefixes).

Task = the file name without a ``_train``/``_test``/``-train``/``-test`` suffix; split = that suffix, else
``"all"`` (files with no split, e.g. ``ceval.json``). Prompt ids are ``<file stem>/<item number>``.

Quality: RouterDC's per-model score in [0, 1] (``quality_kind="score"``). It is NOT plain correctness:
25-80 % of the values are fractional depending on the file (only MATH-prealgebra is purely 0/1); RouterDC
derived them from sampled generations / answer likelihoods (its ``convert_dataset_7_model.ipynb``).

Cost: none in the source. All seven models are 7-8B open-weight models served at the same price class,
so cost is *estimated* (``cost_kind="estimated"``) with one fixed proxy price for every model,
:data:`PRICE_PER_TOKEN` = USD 0.20 per million input and output tokens (the price LLMRouter's list gives
7-8B NIM-hosted models), times input tokens = the question's cl100k_base token count
(:func:`router.tokens.count_tokens`) plus :data:`~router.data.loaders._common.ESTIMATED_OUTPUT_TOKENS`
(200) output tokens. Cost therefore varies with the prompt length only, never between models: use this source for quality routing, not cost trade-offs.

Rows lacking some model's score are dropped and recorded.
"""

from __future__ import annotations

import os
import re

import numpy as np

from router.data.loaders._common import (
    ESTIMATED_OUTPUT_TOKENS,
    estimate_tokens,
    quality_kind_of,
    read_scores_files,
    resolve_path,
)
from router.data.schema import Outcomes
from router.errors import SourceNotFoundError

__all__ = ["PRICE_PER_TOKEN", "load_routerdc", "split_of"]

SOURCE = "routerdc"
DEFAULT_PARTS = ("routerdc", "datasets", "split2_model7")
#: Proxy USD per token (input and output) for every RouterDC model.
PRICE_PER_TOKEN = 0.20 / 1e6
_SPLIT_RE = re.compile(r"[_-](train|test)$")


def split_of(stem: str) -> tuple[str, str]:
    """``(task, split)`` from a file stem.

    >>> split_of("gsm8k-test"), split_of("mmlu_train"), split_of("ceval")
    (('gsm8k', 'test'), ('mmlu', 'train'), ('ceval', 'all'))
    """
    m = _SPLIT_RE.search(stem)
    return (stem[: m.start()], m.group(1)) if m else (stem, "all")


def load_routerdc(path: str | os.PathLike[str] | None = None) -> Outcomes:
    """Load RouterDC's 7-model data.

    Args:
        path: the ``split2_model7`` folder or one of its JSON files;
            default ``$ROUTING_DATA_DIR/routerdc/datasets/split2_model7``.
    """
    root = resolve_path(path, *DEFAULT_PARTS, source=SOURCE)
    files = sorted(root.glob("*.json")) if root.is_dir() else [root]
    if not files:
        raise SourceNotFoundError(f"{SOURCE}: no .json files in {root}.")
    ids, prompts, stems, models, q, drops = read_scores_files(files, SOURCE)
    task_split = {stem: split_of(stem) for stem in set(stems)}
    tasks = [task_split[s][0] for s in stems]
    splits = [task_split[s][1] for s in stems]
    tin = np.repeat(estimate_tokens(prompts)[:, None], len(models), axis=1)
    tout = np.full_like(tin, float(ESTIMATED_OUTPUT_TOKENS))
    return Outcomes(
        prompt_ids=ids,
        prompts=prompts,
        models=models,
        quality=q,
        cost=(tin + tout) * PRICE_PER_TOKEN,
        tasks=tasks,
        input_tokens=tin,
        output_tokens=tout,
        split=splits,
        source=SOURCE,
        quality_kind=quality_kind_of(q),
        cost_kind="estimated",
        dropped=tuple(drops),
    )
