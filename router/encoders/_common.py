"""Helpers shared by the encoders (no heavy imports)."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from router.errors import ConfigError


def check_texts(texts: Any) -> list[str]:
    """Validate a list of strings; a bare string is a common mistake and is refused."""
    if isinstance(texts, str):
        raise ConfigError("encode() takes a list of strings, got a single str; wrap it: encode([text]).")
    if not isinstance(texts, Sequence | np.ndarray):
        raise ConfigError(f"encode() takes a list of strings, got {type(texts).__name__}.")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ConfigError(f"encode() got a {type(t).__name__} at position {i}; every item must be a str.")
    return out


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero. (n, d) -> (n, d) float32."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_HARMFUL = ("MISSING", "MISMATCH", "CONVERSION")


class _LoadReportCatcher(logging.Filter):
    """Holds back transformers' "LOAD REPORT" log records instead of letting them print."""

    def __init__(self) -> None:
        super().__init__()
        self.reports: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" in message:
            self.reports.append(_ANSI.sub("", message))
            return False
        return True


@contextlib.contextmanager
def quiet_model_load() -> Iterator[None]:
    """Keep transformers' load chatter off the terminal while a model loads.

    transformers logs a "LOAD REPORT" table (with terminal colour codes) whenever checkpoint and
    architecture disagree on a key, and draws a "Loading weights" progress bar. Unexpected keys
    (MiniLM's checkpoint carries an ``embeddings.position_ids`` buffer the model rebuilds itself)
    are harmless, so such reports are dropped; a report naming missing, mismatched or unconverted
    weights -- a model that did not load as saved -- goes to stderr as plain text.
    """
    catcher = _LoadReportCatcher()
    logger = logging.getLogger("transformers.modeling_utils")
    logger.addFilter(catcher)
    tlog: Any = None
    bars = False
    try:
        from transformers.utils import logging as tlog

        bars = tlog.is_progress_bar_enabled()
        tlog.disable_progress_bar()
    except ImportError:
        tlog = None
    try:
        yield
    finally:
        logger.removeFilter(catcher)
        if tlog is not None and bars:
            tlog.enable_progress_bar()
        for report in catcher.reports:
            if any(word in report for word in _HARMFUL):
                print(report, file=sys.stderr)
