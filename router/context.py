"""How a request becomes the numbers a router, a policy and the replay environment see.

One path, used offline and live:

1. :func:`prompt_texts` -- text of each prompt (chat conversations rendered whole);
2. :func:`embed_prompts` -- the preprocessor strips shared few-shot prefixes, the encoder embeds what
   is left, prompt statistics are appended when given: ``(embeddings (n, d), lengths (n,))``;
   :meth:`router.router.Router.embed` is this function with the router's parts;
3. :func:`policy_context` -- what a bandit policy reads: the embedding clipped to [-1, 1], followed
   by optional request features (scaled prompt length, one-hot task and tenant). It is the replay
   environment's observation (``obs["features"]``), the context :class:`~router.router.Router` hands
   its policy, and what ``training tune`` scores policies on.

:func:`fit_preprocessor` learns the prefix stripper on training prompts (``Router.fit``, the replay
environment built from a data set, ``training bandit`` and ``training tune`` all call it).

Example:
    >>> from router.encoders import HashingEncoder
    >>> emb, lengths = embed_prompts(["What is 2 + 2?"], HashingEncoder(dim=8))
    >>> emb.shape, lengths.tolist(), bool(policy_context(emb * 10).max() <= 1.0)
    ((1, 8), [8.0], True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from router.errors import ConfigError

if TYPE_CHECKING:
    from router.base import Encoder
    from router.encoders.prefix import PrefixStripper
    from router.features import PromptStats

__all__ = ["Prompt", "embed_prompts", "fit_preprocessor", "policy_context", "prompt_texts"]

Prompt = str | Sequence[dict[str, Any]]


def prompt_texts(prompts: Sequence[Prompt]) -> list[str]:
    """Text to encode for each prompt; chat conversations are rendered whole.

    See :func:`router.encoders.render_conversation` for how turns are ordered.
    """
    from router.encoders import render_conversation

    if isinstance(prompts, str):
        raise ConfigError("prompts must be a list of prompts, not a single string; wrap it in a list.")
    out: list[str] = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            text = p
        elif isinstance(p, Sequence):
            text = render_conversation(p)
        else:
            raise ConfigError(f"prompt {i} has type {type(p).__name__}; give text or a list of chat messages.")
        if not text.strip():
            raise ConfigError(f"prompt {i} is empty; every request needs text to route on.")
        out.append(text)
    return out


def fit_preprocessor(prompts: Sequence[Prompt], strip_prefixes: bool = True) -> PrefixStripper | None:
    """A :class:`~router.encoders.PrefixStripper` learnt on these (training) prompts, or None when not asked."""
    if not strip_prefixes:
        return None
    from router.encoders import PrefixStripper

    return PrefixStripper().fit(prompt_texts(prompts))


#: units a prompt's length can be counted in: cl100k_base tokens, or characters (older routers)
LENGTH_UNITS = ("tokens", "chars")


def prompt_lengths(texts: Sequence[str], unit: str = "tokens") -> np.ndarray:
    """Lengths (n,) float64 of prompt texts: cl100k_base token counts (:func:`router.tokens.count_tokens`),
    or characters for ``unit="chars"`` (routers saved before token counts)."""
    if unit == "tokens":
        from router.tokens import count_tokens

        return count_tokens(list(texts)).astype(np.float64)
    if unit == "chars":
        return np.array([len(t) for t in texts], dtype=np.float64)
    from router.errors import ConfigError

    raise ConfigError(f"length unit must be one of {LENGTH_UNITS}, got {unit!r}.")


def embed_prompts(
    prompts: Sequence[Prompt],
    encoder: Encoder,
    *,
    preprocessor: PrefixStripper | None = None,
    features: PromptStats | None = None,
    encode_with: Encoder | None = None,
    length_unit: str = "tokens",
) -> tuple[np.ndarray, np.ndarray]:
    """``(embeddings (n, d [+ k]) float32, prompt lengths (n,) in ``length_unit``)`` of ``prompts``.

    Args:
        prompts: texts or chat conversations.
        encoder: the text encoder.
        preprocessor: a fitted prefix stripper applied before encoding (lengths are of the whole text).
        features: fitted prompt statistics appended to the embedding.
        encode_with: an encoder used instead of ``encoder`` for this call (e.g. a caching wrapper of it).
        length_unit: ``"tokens"`` (cl100k_base) or ``"chars"``, as the router's cost model was fitted.
    """
    texts = prompt_texts(prompts)
    lengths = prompt_lengths(texts, length_unit)
    if preprocessor is not None:
        texts = preprocessor.transform(texts)
    emb = np.asarray((encode_with or encoder).encode(texts), dtype=np.float32)
    if features is not None:
        emb = np.hstack([emb, features.transform(texts)]).astype(np.float32)
    return emb, lengths


def _codes(values: Any, name: str, n: int) -> tuple[np.ndarray, int]:
    """Integer codes (n,) for ids given as ints or strings, and how many distinct codes."""
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise ConfigError(f"{name} must have shape ({n},) like embeddings, got {arr.shape}.")
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and arr.min() < 0:
            raise ConfigError(f"{name} must hold non-negative integer ids.")
        return arr.astype(np.int64), int(arr.max()) + 1 if arr.size else 0
    _, inv = np.unique(arr.astype(str), return_inverse=True)
    return inv.astype(np.int64), int(inv.max()) + 1 if inv.size else 0


def policy_context(
    embeddings: Any, *, prompt_length: Any = None, task_ids: Any = None, tenant_ids: Any = None
) -> np.ndarray:
    """The context a policy reads: (n, d + k) float32, every value in [-1, 1].

    The embedding clipped to [-1, 1]; then, when given, ``log1p(prompt_length) / log1p(max length)``
    (one column), the one-hot task id and the one-hot tenant id (ids are ints, or strings coded in
    sorted order). The extra features are scaled on the rows given, so they are for replaying a fixed
    data set; a router routes on the clipped embedding alone.

    Args:
        embeddings: (n, d) finite embeddings.
        prompt_length: (n,) non-negative lengths (tokens or characters), optional.
        task_ids: (n,) task ids, optional. tenant_ids: (n,) tenant ids, optional.
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2:
        raise ConfigError(f"embeddings must be a 2-D array (n, d), got shape {emb.shape}.")
    n = emb.shape[0]
    parts = [np.clip(emb, -1.0, 1.0)]
    if prompt_length is not None:
        length = np.asarray(prompt_length, dtype=np.float64)
        if length.shape != (n,) or not np.isfinite(length).all() or (length < 0).any():
            raise ConfigError(f"prompt_length must be (n,) = ({n},) finite and >= 0.")
        scale = np.log1p(length.max()) if n else 1.0
        scale = scale or 1.0
        parts.append((np.log1p(length) / scale)[:, None].astype(np.float32))
    for name, ids in (("task_ids", task_ids), ("tenant_ids", tenant_ids)):
        if ids is not None:
            codes, k = _codes(ids, name, n)
            parts.append(np.eye(k, dtype=np.float32)[codes])
    return np.ascontiguousarray(np.hstack(parts), dtype=np.float32)
