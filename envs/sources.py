"""What a replay environment replays: a data set by name or path, an :class:`Outcomes`, or a traffic log.

:func:`resolve_source` turns the keyword arguments of :class:`envs.replay.ReplayEnv` into the arrays
:class:`envs.replay.ReplayData` needs. When the prompts are given as text (a data set, an
``Outcomes`` without ``embeddings``, or a traffic log), they are embedded the way a
:class:`~router.router.Router` embeds them (:func:`router.context.embed_prompts`): a prefix stripper
learnt on these prompts, then the encoder named in the encoder registry (``encoder="hashing"``,
``"static"``, ``"minilm"``, ... with ``encoder_options``). The fitted encoder and stripper are kept
on the source, so a policy trained in the environment can be saved inside a router that routes new
prompts exactly as the environment showed them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.base import Encoder
from router.data.schema import Outcomes
from router.errors import ConfigError

__all__ = ["ReplaySource", "read_traffic_log", "resolve_source"]


@dataclass
class ReplaySource:
    """Resolved inputs of a replay environment.

    Attributes:
        embeddings: (n, d) encoder output (before :func:`router.context.policy_context`).
        outcomes: full-information outcomes, or None for a log.
        logged: :class:`envs.replay.LoggedFeedback` (or a mapping of its fields), or None.
        model_names: (m,) action names with a log; None with outcomes (their models are used).
        timestamps: (n,) sort key for sequential replay, or None.
        encoder: the encoder that produced ``embeddings`` (None when they were given).
        preprocessor: the prefix stripper learnt on the prompts (None when not used).
        prompt_lengths: (n,) cl100k_base tokens per prompt when the prompts were embedded here, else None.
    """

    embeddings: np.ndarray
    outcomes: Outcomes | None = None
    logged: Any = None
    model_names: tuple[str, ...] | None = None
    timestamps: Any = None
    encoder: Encoder | None = None
    preprocessor: Any = None
    prompt_lengths: np.ndarray | None = None


def _encoder(encoder: str | Encoder, options: Mapping[str, Any] | None) -> Encoder:
    if isinstance(encoder, Encoder):
        if options:
            raise ConfigError("encoder_options apply to an encoder given by name, not to an Encoder object.")
        return encoder
    if not isinstance(encoder, str):
        raise ConfigError(f"encoder must be a registered encoder name or an Encoder, got {type(encoder).__name__}.")
    from router.encoders import build_encoder

    return build_encoder(encoder, **dict(options or {}))


def _embed(prompts: Sequence[Any], encoder: str | Encoder, options: Mapping[str, Any] | None,
           strip_prefixes: bool) -> tuple[np.ndarray, Encoder, Any, np.ndarray]:
    from router.context import embed_prompts, fit_preprocessor

    enc = _encoder(encoder, options)
    pre = fit_preprocessor(prompts, strip_prefixes)
    emb, lengths = embed_prompts(prompts, enc, preprocessor=pre)
    return emb, enc, pre, lengths


def read_traffic_log(log: str | os.PathLike[str] | Any, model_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Prompts and bandit feedback of a traffic log (:data:`~router.data.schema.TRAFFIC_LOG_SCHEMA`).

    Args:
        log: a ``.jsonl`` file, a Parquet file or directory of parts, or a polars DataFrame.
        model_names: the action names in order; default the logged ``chosen_model`` values, sorted.
            Give them when the pool has models the log never chose.

    Returns:
        ``{"prompts", "model_names", "logged", "timestamps", "tenants"}``; ``logged`` holds the action
        index, propensity, quality (NaN until feedback arrives), cost and latency (None when not logged).
    """
    import polars as pl

    from router.data.logs import conform_log, read_log
    from router.data.validate import validate_traffic_log

    if isinstance(log, pl.DataFrame):
        df = conform_log(log).collect()
        validate_traffic_log(df, known_models=model_names)
    else:
        df = read_log(log, known_models=model_names)
    if df.height == 0:
        raise ConfigError("the traffic log has no rows; nothing to replay.")
    names = tuple(str(m) for m in model_names) if model_names is not None else tuple(
        sorted(str(m) for m in df["chosen_model"].unique().to_list()))
    pos = {m: i for i, m in enumerate(names)}
    prompts: list[Any] = [p if p is not None else msg for p, msg in
                          zip(df["prompt"].to_list(), df["messages"].to_list(), strict=True)]
    latency = df["latency_s"].to_numpy().astype(np.float64)
    missing = ~np.isfinite(latency)
    if missing.all():
        lat = None
    elif missing.any():
        raise ConfigError(f"row {int(np.flatnonzero(missing)[0])} of the log has no latency_s while others do; "
                          "fill it or drop the row.")
    else:
        lat = latency
    quality = df["quality"].to_numpy().astype(np.float64)
    logged = {
        "action": np.array([pos[m] for m in df["chosen_model"].to_list()], dtype=np.int64),
        "propensity": df["propensity"].to_numpy().astype(np.float64),
        "quality": np.where(np.isfinite(quality), quality, np.nan),
        "cost": df["cost"].to_numpy().astype(np.float64),
        "latency": lat,
    }
    return {"prompts": prompts, "model_names": names, "logged": logged,
            "timestamps": df["timestamp"].to_numpy(), "tenants": df["tenant"].to_list()}


def resolve_source(
    embeddings: Any = None,
    outcomes: Outcomes | None = None,
    *,
    dataset: str | os.PathLike[str] | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    log: Any = None,
    logged: Any = None,
    model_names: Sequence[str] | None = None,
    timestamps: Any = None,
    encoder: str | Encoder = "hashing",
    encoder_options: Mapping[str, Any] | None = None,
    strip_prefixes: bool = True,
) -> ReplaySource:
    """Resolve the data arguments of :class:`envs.replay.ReplayEnv`; see there for their meaning."""
    given = [name for name, v in (("dataset", dataset), ("log", log), ("outcomes", outcomes), ("logged", logged))
             if v is not None]
    if len(given) != 1:
        raise ConfigError(
            "Give exactly one of `dataset` (a registered source name or a path), `outcomes` (full information), "
            f"`log` (a traffic log) or `logged` (bandit feedback with `embeddings`); got {given or 'none'}."
        )
    if dataset_options and dataset is None:
        raise ConfigError("dataset_options apply only with `dataset`.")
    if dataset is not None or log is not None:
        if embeddings is not None:
            raise ConfigError(f"`{given[0]}` is embedded by the environment; do not also give `embeddings`.")
    elif embeddings is None and logged is not None:
        raise ConfigError("`logged` feedback needs its `embeddings`; or give the traffic log itself as `log`.")

    if dataset is not None:
        from router.data.registry import load_source

        outcomes = load_source(str(dataset), **dict(dataset_options or {}))
    if log is not None:
        data = read_traffic_log(log, model_names)
        emb, enc, pre, lengths = _embed(data["prompts"], encoder, encoder_options, strip_prefixes)
        return ReplaySource(emb, None, data["logged"], data["model_names"],
                            data["timestamps"] if timestamps is None else timestamps, enc, pre, lengths)
    if outcomes is not None and embeddings is None:
        emb, enc, pre, lengths = _embed(list(outcomes.prompts), encoder, encoder_options, strip_prefixes)
        return ReplaySource(emb, outcomes, None, None, timestamps, enc, pre, lengths)
    if encoder_options:
        raise ConfigError("encoder_options apply only when the environment embeds the prompts itself.")
    return ReplaySource(np.asarray(embeddings), outcomes, logged,
                        None if model_names is None else tuple(str(m) for m in model_names), timestamps)
