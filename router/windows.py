"""Context windows: a candidate whose window a prompt does not fit is not a candidate for it.

A :class:`~router.router.Router` learns its models' windows when it is fitted -- from litellm's
price map bundled offline (``max_input_tokens``; :meth:`router.data.prices.PriceTable.context_window`),
overridden by anything passed as ``context_windows`` -- and saves them with itself, so offline
evaluation and live serving exclude the same candidates. A model whose window is not known has no
limit (it is never excluded). Prompt lengths are token counts from the cl100k_base tokenizer
(:mod:`router.tokens`): an estimate for non-OpenAI models, which may split text differently.

:func:`window_mask` turns token counts into an allowed-mask ``(n, m)``: a prompt longer than a
model's window gets probability 0 for it (the decision's reason names the excluded models); a
prompt that fits no allowed candidate raises :class:`~router.errors.ContextWindowError` naming its
token count and the largest window.

Example:
    >>> mask, notes = window_mask(np.array([100, 5000]), ("small", "big"), {"small": 4096, "big": 128000})
    >>> mask.tolist()
    [[True, True], [False, True]]
    >>> notes[1]
    'excluded small: the prompt has 5,000 tokens, more than its 4,096-token context window'
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from router.errors import ConfigError, ContextWindowError

__all__ = ["check_windows", "model_windows", "window_mask"]


def check_windows(windows: Mapping[str, Any] | None, models: Sequence[str]) -> dict[str, int]:
    """Validated ``{model: window in tokens}`` for models of the pool (None values are dropped)."""
    out: dict[str, int] = {}
    for name, value in (windows or {}).items():
        if name not in models:
            raise ConfigError(f"context window given for {name!r}, which is not in the pool {list(models)}.")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ConfigError(f"context window of {name!r} must be a positive number of tokens, got {value!r}.")
        out[str(name)] = int(value)
    return out


@functools.lru_cache(maxsize=1)
def _bundled_table() -> Any:
    """litellm's price map, read once per process (an empty table when it is not available)."""
    from router.data.prices import PriceTable
    from router.errors import SourceNotFoundError

    try:
        return PriceTable.load()
    except SourceNotFoundError:
        return PriceTable({})


def model_windows(models: Sequence[str], overrides: Mapping[str, int | None] | None = None,
                  table: Any = None) -> dict[str, int]:
    """``{model: window}`` for the models whose window is known: the price table's (litellm's map,
    read offline; ``table`` a :class:`~router.data.prices.PriceTable` or None to load it), then
    ``overrides`` (a None value removes a model's limit). Without a price map, only the overrides."""
    if table is None:
        table = _bundled_table()
    found: dict[str, int | None] = {m: table.context_window(m) for m in models}
    found.update(dict(overrides or {}))
    return check_windows(found, models)


def window_mask(tokens: np.ndarray, models: Sequence[str], windows: Mapping[str, int],
                allowed: np.ndarray | None = None) -> tuple[np.ndarray | None, list[str]]:
    """Allowed-mask (n, m) after the windows, and a note per prompt on the models it excluded.

    Args:
        tokens: (n,) prompt token counts.
        models: (m,) the pool, in column order.
        windows: ``{model: window}``; models without one are never excluded.
        allowed: (m,) or (n, m) bool, the models the caller may use, or None for all.

    Returns:
        ``(mask, notes)``: mask None when nothing is excluded and ``allowed`` is None.

    Raises:
        ContextWindowError: a prompt fits none of the allowed models.
    """
    tok = np.asarray(tokens, dtype=np.float64).reshape(-1)
    n, m = tok.shape[0], len(models)
    limit = np.array([windows.get(name, np.inf) for name in models], dtype=np.float64)
    fits = tok[:, None] <= limit[None, :]
    base = np.ones((n, m), dtype=bool) if allowed is None else np.broadcast_to(np.asarray(allowed, bool), (n, m))
    if fits.all():
        return (None if allowed is None else np.array(base)), [""] * n
    mask = base & fits
    dead = np.flatnonzero(~mask.any(axis=1))
    if dead.size:
        i = int(dead[0])
        cand = np.flatnonzero(base[i])
        j = int(cand[np.argmax(limit[cand])])
        more = f" ({dead.size} prompts in this batch do not fit)" if dead.size > 1 else ""
        raise ContextWindowError(
            f"prompt {i} has {int(tok[i]):,} tokens (cl100k_base count), more than the context window of every "
            f"allowed model; the largest is {int(limit[j]):,} tokens ({models[j]}){more}. Shorten the prompt, "
            "or allow a model with a larger window."
        )
    notes = []
    for i in range(n):
        out = [int(j) for j in np.flatnonzero(base[i] & ~fits[i])]
        if not out:
            notes.append("")
            continue
        names = ", ".join(models[j] for j in out)
        sizes = " / ".join(f"{int(limit[j]):,}" for j in out)
        whose, plural = ("its", "") if len(out) == 1 else ("their", "s")
        notes.append(f"excluded {names}: the prompt has {int(tok[i]):,} tokens, more than {whose} {sizes}-token "
                     f"context window{plural}")
    return mask, notes
