"""Threshold files: a calibrated similarity threshold tied to the encoder it was calibrated for.

A file is JSON with at least ``{"format": "serve.cache.threshold/1", "encoder": {...},
"threshold": float}`` plus the calibration report (see :mod:`serve.cache.calibrate`). The
``encoder`` entry is the encoder's identity: its ``encoder_config`` without the settings that do
not change vectors (cache directory, device, batch size). A cache refuses a file whose identity
differs from its own encoder's: a threshold means nothing for another embedding space.

The package ships files for its default encoders in ``serve/cache/thresholds/``, so the service
needs no data at run time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from router.base import Encoder
from router.encoders import encoder_config
from router.errors import ConfigError, PersistenceError

__all__ = ["FORMAT", "SHIPPED_DIR", "encoder_identity", "load_threshold_file", "shipped_threshold"]

FORMAT = "serve.cache.threshold/1"
SHIPPED_DIR = Path(__file__).resolve().parent / "thresholds"
_NOT_IDENTITY = {"cache_dir", "device", "batch_size"}


def encoder_identity(encoder: Encoder) -> dict[str, Any]:
    """The encoder's configuration minus settings that leave its vectors unchanged.

    Example:
        >>> from router.encoders import StaticEncoder
        >>> encoder_identity(StaticEncoder(cache_dir="/tmp/x"))
        {'kind': 'static', 'model': 'all-MiniLM-L6-v2', 'pca_dims': 256}
    """
    cfg = encoder_config(encoder)
    if cfg["kind"] == "cached":  # an EmbeddingCache computes the wrapped encoder's vectors
        inner = encoder.encoder  # type: ignore[attr-defined]
        return encoder_identity(inner)
    return {k: v for k, v in cfg.items() if k not in _NOT_IDENTITY}


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise PersistenceError(f"threshold file {path} does not exist; calibrate one with "
                               f"`python -m serve.cache calibrate --out {path}`.") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise PersistenceError(f"threshold file {path} cannot be read as JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise PersistenceError(f"{path} is not a threshold file (expected format {FORMAT!r}); "
                               "write one with `python -m serve.cache calibrate`.")
    thr = doc.get("threshold")
    if not isinstance(thr, int | float) or isinstance(thr, bool) or not -1.0 <= thr <= 1.0:
        raise PersistenceError(f"{path}: 'threshold' must be a number in [-1, 1], got {thr!r}.")
    if not isinstance(doc.get("encoder"), dict) or "kind" not in doc["encoder"]:
        raise PersistenceError(f"{path}: 'encoder' must be the encoder identity dict with a 'kind'.")
    return doc


def load_threshold_file(path: str | Path, encoder: Encoder) -> dict[str, Any]:
    """Read a threshold file and check it was calibrated for ``encoder``; returns the document."""
    doc = _read(Path(path))
    mine = encoder_identity(encoder)
    if doc["encoder"] != mine:
        raise ConfigError(
            f"threshold file {path} was calibrated for encoder {doc['encoder']} but this cache uses {mine}; "
            "a similarity threshold only holds for the encoder it was calibrated with. Calibrate one for this "
            "encoder (`python -m serve.cache calibrate --encoder ...`) or build the cache with that encoder."
        )
    return doc


def shipped_threshold(encoder: Encoder) -> dict[str, Any]:
    """The shipped threshold document for ``encoder``; a clear error when none matches."""
    mine = encoder_identity(encoder)
    for path in sorted(SHIPPED_DIR.glob("*.json")):
        doc = _read(path)
        if doc["encoder"] == mine:
            return doc
    raise ConfigError(
        f"no shipped cache threshold for encoder {mine}; pass threshold=<float>, or calibrate one with "
        "`python -m serve.cache calibrate --out FILE.json` and pass threshold_file=FILE.json."
    )
