"""Per-token prices (USD) for the models in our data, read offline from litellm's bundled price map.

litellm ships its price table as ``model_prices_and_context_window_backup.json`` inside the
package. :meth:`PriceTable.load` reads that file directly -- importing litellm itself takes
seconds and is never done here. When litellm is not installed, the copy in
``$ROUTING_DATA_DIR/prices_litellm/`` is used.

Names in routing data rarely match litellm's keys, so :meth:`PriceTable.lookup` resolves a name by,
in order:

1. the override file given to :meth:`PriceTable.load` (exact name);
2. litellm's key, exact or case-insensitive;
3. a small explicit alias table (:data:`ALIASES`) for the names used by RouterBench, RouteLLM and
   RouterArena (e.g. ``claude-v2`` -> ``anthropic.claude-v2:1``);
4. provider-prefix matching: a key that *ends* with ``/<name>`` (case-insensitive), trying the name
   with its own leading ``provider/`` parts removed too; among several matches a key with a non-zero
   price wins over a free local one (e.g. ``ollama/...``), then the shortest key (ties: alphabetical), so
   the result is deterministic.

An unknown name raises :class:`~router.errors.UnknownModelError` that says to add it to the
override file: a JSON object ``{model: {"input_cost_per_token": x, "output_cost_per_token": y}}``.

The same map gives each model's **context window** (``max_input_tokens``, or ``max_tokens`` where a
key has no input limit): :meth:`PriceTable.context_window` resolves names the same way, falls back on
:data:`WINDOWS` for the few models of our data the map lacks, and returns None for a model whose window
is not known (an override entry may carry ``max_input_tokens`` too).

Example:
    >>> t = PriceTable({"small": (1e-7, 2e-7), "big": (1e-5, 3e-5)})
    >>> t.lookup("BIG")
    (1e-05, 3e-05)
    >>> round(float(t.cost("small", 1000, 500)), 10)
    0.0002
    >>> t.cost("big", [1000, 0], [0, 1000]).round(6).tolist()
    [0.01, 0.03]
    >>> PriceTable({"big": (1e-5, 3e-5)}, windows={"big": 128000}).context_window("BIG")
    128000
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from router.data.schema import Outcomes
from router.errors import ConfigError, SchemaError, SourceNotFoundError, UnknownModelError

__all__ = ["ALIASES", "PRICE_FILE_NAME", "WINDOWS", "PriceTable", "fill_cost_from_tokens", "litellm_price_file"]

#: File name of litellm's bundled price map.
PRICE_FILE_NAME = "model_prices_and_context_window_backup.json"

#: Names used in our data sets -> litellm keys (chosen to be the era-appropriate public price).
ALIASES: dict[str, str] = {
    # RouterBench
    "claude-v2": "anthropic.claude-v2:1",
    "claude-v1": "anthropic.claude-v1",
    "claude-instant-v1": "anthropic.claude-instant-v1",
    "meta/llama-2-70b-chat": "replicate/meta/llama-2-70b-chat",
    "meta/code-llama-instruct-34b-chat": "anyscale/codellama/CodeLlama-34b-Instruct-hf",
    "mistralai/mistral-7b-chat": "anyscale/mistralai/Mistral-7B-Instruct-v0.1",
    "mistralai/mixtral-8x7b-chat": "together_ai/mistralai/Mixtral-8x7B-Instruct-v0.1",
    "zero-one-ai/yi-34b-chat": "fireworks_ai/accounts/fireworks/models/yi-34b-chat",
    # RouteLLM
    "mistralai/mixtral-8x7b-instruct-v0.1": "together_ai/mistralai/Mixtral-8x7B-Instruct-v0.1",
    # RouterArena
    "claude-3-haiku-20240307": "vertex_ai/claude-3-haiku@20240307",
    "gemini-2.0-flash-001": "vertex_ai/gemini-2.0-flash",
}


#: Context windows (tokens) of models in our data that litellm's map lacks, from their model cards.
WINDOWS: dict[str, int] = {
    "wizardlm/wizardlm-13b-v1.2": 4096,  # RouterBench; a Llama-2-13B fine-tune (4,096-token context)
}


def litellm_price_file() -> Path:
    """Path of litellm's bundled price map, found without importing litellm.

    Falls back to ``$ROUTING_DATA_DIR/prices_litellm/`` when litellm is not installed.
    """
    spec = importlib.util.find_spec("litellm")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidate = Path(loc) / PRICE_FILE_NAME
            if candidate.is_file():
                return candidate
    from router.data.paths import data_dir

    candidate = data_dir() / "prices_litellm" / PRICE_FILE_NAME
    if candidate.is_file():
        return candidate
    raise SourceNotFoundError(
        f"Cannot find litellm's price map {PRICE_FILE_NAME}: litellm is not installed and "
        f"{candidate} does not exist. Install litellm or pass PriceTable.load(path=...)."
    )


def _as_price(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value) or value < 0:
        raise SchemaError(f"{where}: price must be a finite number >= 0 (USD per token), got {value!r}.")
    return float(value)


def _windows(raw: dict[str, Any]) -> dict[str, int]:
    """``{name: context window in tokens}`` for the entries that state one."""
    out: dict[str, int] = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            continue
        value = entry.get("max_input_tokens", entry.get("max_tokens"))
        if isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value) and value > 0:
            out[str(name)] = int(value)
    return out


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SourceNotFoundError(f"{path}: price file does not exist.") from exc
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path}: not valid JSON ({exc}).") from exc
    if not isinstance(raw, dict):
        raise SchemaError(f"{path}: expected a JSON object {{model: {{input_cost_per_token, output_cost_per_token}}}}.")
    return raw


def _read_price_json(path: Path, *, strict: bool, raw: dict[str, Any] | None = None) -> dict[str, tuple[float, float]]:
    raw = _read_json_object(path) if raw is None else raw
    out: dict[str, tuple[float, float]] = {}
    for name, entry in raw.items():
        has = isinstance(entry, dict) and "input_cost_per_token" in entry and "output_cost_per_token" in entry
        if not has:
            if strict:
                raise SchemaError(
                    f"{path}: model {name!r} needs both 'input_cost_per_token' and 'output_cost_per_token'."
                )
            continue
        try:
            out[str(name)] = (
                _as_price(entry["input_cost_per_token"], f"{path}: {name!r} input_cost_per_token"),
                _as_price(entry["output_cost_per_token"], f"{path}: {name!r} output_cost_per_token"),
            )
        except SchemaError:
            if strict:
                raise
    return out


class PriceTable:
    """USD per input / output token for each model name, with alias resolution.

    Args:
        prices: ``{litellm key: (input_usd_per_token, output_usd_per_token)}``.
        overrides: ``{model: (in, out)}`` consulted first, by exact name.
        aliases: data name -> key of ``prices`` (case-insensitive on the data name).
        windows: ``{key of prices or overrides: context window in tokens}``; models without one have no
            known window.
    """

    def __init__(
        self,
        prices: Mapping[str, tuple[float, float]],
        overrides: Mapping[str, tuple[float, float]] | None = None,
        aliases: Mapping[str, str] | None = None,
        *,
        override_path: str | os.PathLike[str] | None = None,
        windows: Mapping[str, int] | None = None,
    ) -> None:
        self.prices = dict(prices)
        self.overrides = dict(overrides or {})
        self.windows = dict(windows or {})
        self.aliases = dict(ALIASES if aliases is None else aliases)
        self.override_path = None if override_path is None else str(override_path)
        self._lower = {k.lower(): k for k in sorted(self.prices, reverse=True)}
        suffix: dict[str, list[str]] = {}
        for key in self.prices:
            parts = key.lower().split("/")
            for i in range(1, len(parts)):
                suffix.setdefault("/".join(parts[i:]), []).append(key)
        def rank(k: str) -> tuple[bool, int, str]:  # priced keys first (ollama & co. list 0), then shortest
            return (self.prices[k] == (0.0, 0.0), len(k), k)

        self._suffix = {s: min(keys, key=rank) for s, keys in suffix.items()}
        self._alias_lower = {k.lower(): v for k, v in self.aliases.items()}
        self._cache: dict[str, tuple[float, float]] = {}

    @classmethod
    def load(
        cls,
        override_path: str | os.PathLike[str] | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
    ) -> PriceTable:
        """litellm's bundled prices and context windows (or ``path``), plus an optional JSON override file."""
        file = Path(path) if path is not None else litellm_price_file()
        raw = _read_json_object(file)
        base = _read_price_json(file, strict=False, raw=raw)
        windows = {k: v for k, v in _windows(raw).items() if k in base}
        overrides = None
        if override_path is not None:
            raw_over = _read_json_object(Path(override_path))
            overrides = _read_price_json(Path(override_path), strict=True, raw=raw_over)
            windows.update(_windows(raw_over))
        return cls(base, overrides, override_path=override_path, windows=windows)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self._resolve(model) is not None

    def __len__(self) -> int:
        return len(self.prices) + len(self.overrides)

    def _resolve_key(self, model: str) -> tuple[bool, str] | None:
        """(is an override, key) that ``model`` resolves to, or None."""
        if model in self.overrides:
            return True, model
        if model in self.prices:
            return False, model
        low = model.lower()
        if low in self._lower:
            return False, self._lower[low]
        target = self._alias_lower.get(low)
        if target is not None and target in self.prices:
            return False, target
        parts = low.split("/")
        for i in range(len(parts)):
            tail = "/".join(parts[i:])
            if tail in self._suffix:
                return False, self._suffix[tail]
            if i > 0 and tail in self._lower:
                return False, self._lower[tail]
        return None

    def _resolve(self, model: str) -> tuple[float, float] | None:
        found = self._resolve_key(model)
        if found is None:
            return None
        override, key = found
        return self.overrides[key] if override else self.prices[key]

    def context_window(self, model: str) -> int | None:
        """Most input tokens ``model`` accepts (the table's window, else :data:`WINDOWS`), or None when unknown."""
        if model in self.windows:
            return self.windows[model]
        found = self._resolve_key(model)
        window = None if found is None else self.windows.get(found[1])
        return window if window is not None else WINDOWS.get(model.lower())

    def lookup(self, model: str) -> tuple[float, float]:
        """``(input_usd_per_token, output_usd_per_token)`` of ``model``.

        Raises:
            UnknownModelError: no price is known; add the model to the override file.
        """
        if model not in self._cache:
            found = self._resolve(model)
            if found is None:
                where = f" ({self.override_path})" if self.override_path else ""
                raise UnknownModelError(
                    f"No price known for model {model!r}. Add it to the price override file{where} as "
                    f'{{"{model}": {{"input_cost_per_token": ..., "output_cost_per_token": ...}}}} '
                    "and pass it with PriceTable.load(override_path=...)."
                )
            self._cache[model] = found
        return self._cache[model]

    def cost(self, model: str, input_tokens: Any, output_tokens: Any) -> np.ndarray:
        """USD for calls to ``model``: ``input_tokens * in_price + output_tokens * out_price``.

        Args:
            input_tokens: scalar or array of token counts (>= 0).
            output_tokens: same shape as ``input_tokens`` (broadcastable).
        Returns:
            An array with the broadcast shape of the token counts (0-d for scalars).
        """
        tin = np.asarray(input_tokens, dtype=np.float64)
        tout = np.asarray(output_tokens, dtype=np.float64)
        if (tin < 0).any() or (tout < 0).any() or not (np.isfinite(tin).all() and np.isfinite(tout).all()):
            raise ConfigError("token counts must be finite and >= 0.")
        pin, pout = self.lookup(model)
        return np.asarray(tin * pin + tout * pout)

    def cost_matrix(self, models: list[str] | tuple[str, ...], input_tokens: Any, output_tokens: Any) -> np.ndarray:
        """(n, m) USD from (n, m) token matrices, one price pair per column."""
        tin = np.asarray(input_tokens, dtype=np.float64)
        tout = np.asarray(output_tokens, dtype=np.float64)
        if tin.ndim != 2 or tin.shape != tout.shape or tin.shape[1] != len(models):
            raise ConfigError(
                f"token matrices must both have shape (n, {len(models)}), got {tin.shape} and {tout.shape}."
            )
        prices = np.array([self.lookup(m) for m in models], dtype=np.float64)  # (m, 2)
        return tin * prices[:, 0] + tout * prices[:, 1]

    def __repr__(self) -> str:
        return f"PriceTable(models={len(self.prices)}, overrides={len(self.overrides)})"


def fill_cost_from_tokens(outcomes: Outcomes, table: PriceTable) -> Outcomes:
    """A copy of ``outcomes`` whose cost is tokens times prices (``cost_kind="tokens"``).

    For sources that log token counts but no cost.

    Example:
        >>> o = Outcomes(prompt_ids=["a"], prompts=["hi"], models=["m"], quality=[[1]], cost=[[0]],
        ...              input_tokens=[[100]], output_tokens=[[10]], cost_kind="estimated")
        >>> filled = fill_cost_from_tokens(o, PriceTable({"m": (1e-6, 2e-6)}))
        >>> filled.cost_kind, round(float(filled.cost[0, 0]), 6)
        ('tokens', 0.00012)
    """
    if outcomes.input_tokens is None or outcomes.output_tokens is None:
        raise SchemaError(
            f"{outcomes.source}: cannot compute cost from tokens: input_tokens and output_tokens are both needed."
        )
    cost = table.cost_matrix(list(outcomes.models), outcomes.input_tokens, outcomes.output_tokens)
    return replace(outcomes, cost=cost, cost_kind="tokens")
