"""Helpers shared by the source loaders (private)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router.data.schema import DroppedRows, Outcomes
from router.errors import SchemaError, SourceNotFoundError

#: Output tokens assumed per call when a source keeps no responses and no token counts.
ESTIMATED_OUTPUT_TOKENS = 200
#: At most this many ids are kept in a :class:`DroppedRows` record.
MAX_IDS = 300


def resolve_path(path: str | os.PathLike[str] | None, *default_parts: str, source: str) -> Path:
    """``path`` if given, else ``data_dir()/default_parts``; raises when it does not exist."""
    if path is None:
        from router.data.paths import data_dir

        p = data_dir().joinpath(*default_parts)
    else:
        p = Path(path).expanduser()
    if not p.exists():
        raise SourceNotFoundError(
            f"{source}: {p} does not exist. Pass the path of the {source} data, or set ROUTING_DATA_DIR "
            "to the folder that holds the public routing data."
        )
    return p


def estimate_tokens(texts: Iterable[Any]) -> np.ndarray:
    """Token counts (float64) of texts that a source logs without counts, from the cl100k_base
    tokenizer (:func:`router.tokens.count_tokens`; ``ceil(chars / 4)`` only when it is unavailable).

    >>> estimate_tokens(["Hello world", "abcde", "", None]).tolist()
    [2.0, 2.0, 0.0, 0.0]
    """
    from router.tokens import count_tokens

    return count_tokens(texts).astype(np.float64)


def dropped(reason: str, ids: Sequence[Any], file: str | os.PathLike[str] | None = None) -> DroppedRows:
    """A :class:`DroppedRows` record for ``ids`` (only the first :data:`MAX_IDS` ids are kept)."""
    return DroppedRows(
        reason=reason,
        count=len(ids),
        ids=tuple(str(i) for i in list(ids)[:MAX_IDS]),
        file=None if file is None else str(file),
    )


def quality_kind_of(quality: np.ndarray) -> str:
    """``"binary"`` when every value is 0 or 1, else ``"score"``."""
    return "binary" if np.isin(quality, (0.0, 1.0)).all() else "score"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path}: not valid JSON ({exc}).") from exc


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SchemaError(f"{path}: line {i + 1} is not valid JSON ({exc}).") from exc
    return rows


def prompts_in_several_splits(outcomes: Outcomes) -> dict[str, list[str]]:
    """Prompt texts that occur in more than one source-given split: ``{text: [prompt_id, ...]}``.

    Such prompts leak between train and test; loaders keep them (they are distinct items in the
    source) and ``data describe`` reports them.

    >>> o = Outcomes(prompt_ids=["a", "b", "c"], prompts=["x", "x", "y"], models=["m"],
    ...              quality=[[1], [0], [1]], cost=[[0], [0], [0]], split=["train", "test", "test"])
    >>> prompts_in_several_splits(o)
    {'x': ['a', 'b']}
    """
    if outcomes.split is None:
        return {}
    seen: dict[str, set[str]] = {}
    ids: dict[str, list[str]] = {}
    for pid, text, split in zip(outcomes.prompt_ids, outcomes.prompts, outcomes.split):
        key = str(text)
        seen.setdefault(key, set()).add(str(split))
        ids.setdefault(key, []).append(str(pid))
    return {t: ids[t] for t, s in seen.items() if len(s) > 1}


def read_scores_json(
    file: Path, source: str
) -> tuple[list[str], list[str], np.ndarray, list[int], list[DroppedRows]]:
    """Read a ``[{"question": str, "scores": {model: float}}, ...]`` file (RouterDC / LLMRouter layout).

    Returns:
        ``(questions, models, quality (n, m), kept row numbers, dropped)``; rows lacking some model's
        score (or with a non-numeric one) are dropped and recorded.
    """
    raw = read_json(file)
    if not isinstance(raw, list):
        raise SchemaError(f"{file}: expected a JSON list of {{'question': ..., 'scores': {{model: score}}}}.")
    models: list[str] = []
    for i, rec in enumerate(raw):
        if not isinstance(rec, dict):
            raise SchemaError(f"{file}: item {i} must be an object with 'question' and 'scores'.")
        check = [c for c in ("question", "scores") if c not in rec]
        if check:
            raise SchemaError(f"{file}: item {i} is missing {check}.")
        if not isinstance(rec["scores"], dict):
            raise SchemaError(f"{file}: item {i}, field 'scores' must be an object {{model: score}}.")
        for m in rec["scores"]:
            if m not in models:
                models.append(str(m))
    questions: list[str] = []
    rows: list[list[float]] = []
    kept: list[int] = []
    incomplete: list[str] = []
    for i, rec in enumerate(raw):
        scores = rec["scores"]
        values = [scores.get(m) for m in models]
        ok = all(isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) for v in values)
        if not ok:
            incomplete.append(f"{file.stem}/{i}")
            continue
        questions.append(str(rec["question"]))
        rows.append([float(v) for v in values])
        kept.append(i)
    drops = [dropped("score missing or not a number for some models", incomplete, file)] if incomplete else []
    quality = np.array(rows, dtype=np.float64).reshape(len(rows), len(models))
    return questions, models, quality, kept, drops


def read_scores_files(
    files: Sequence[Path], source: str
) -> tuple[list[str], list[str], list[str], list[str], np.ndarray, list[DroppedRows]]:
    """Read several :func:`read_scores_json` files that share one model pool.

    Returns:
        ``(prompt_ids, questions, file stem of each row, models, quality (n, m), dropped)``; prompt ids are
        ``<file stem>/<row number>``. Files whose models differ from the first file's are an error.
    """
    ids: list[str] = []
    prompts: list[str] = []
    stems: list[str] = []
    blocks: list[np.ndarray] = []
    drops: list[DroppedRows] = []
    models: list[str] | None = None
    for f in files:
        questions, file_models, quality, kept, file_drops = read_scores_json(f, source)
        if models is None:
            models = file_models
        elif set(file_models) != set(models):
            raise SchemaError(f"{f}: has models {sorted(file_models)} but {files[0]} has {sorted(models)}.")
        blocks.append(quality[:, [file_models.index(m) for m in models]])
        ids += [f"{f.stem}/{i}" for i in kept]
        prompts += questions
        stems += [f.stem] * len(kept)
        drops += file_drops
    if models is None:
        raise SourceNotFoundError(f"{source}: no files to read.")
    return ids, prompts, stems, models, np.concatenate(blocks, axis=0), drops
