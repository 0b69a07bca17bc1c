"""Strip long prefixes shared by many prompts (few-shot blocks) before encoding.

Several public sets (RouterBench ARC-C, Winogrande) start every prompt with the same 1-2 kB
few-shot block. MiniLM reads only the first 256 word pieces, so without stripping it would
encode the block -- identical for every prompt -- and nothing that tells prompts apart.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from router.base import Component
from router.errors import ConfigError

__all__ = ["PrefixStripper"]


def _trim_to_boundary(prefix: str) -> str:
    """Cut back to the last newline (else whitespace) so no word or line is split."""
    for sep in ("\n", " "):
        cut = prefix.rfind(sep)
        if cut >= len(prefix) // 2:
            return prefix[: cut + 1]
    return prefix


class PrefixStripper(Component):
    """Learn long prefixes shared by many training prompts; strip them at encode time.

    ``fit`` groups prompts by their first ``min(key_chars, min_length)`` characters; within a group it repeatedly
    takes the longest prefix shared by at least ``min_count`` prompts (the longest common prefix
    of ``min_count`` neighbours in sorted order), trimmed back to a line/word boundary, and keeps it
    when it is at least ``min_length`` characters long; prompts starting with it are removed and
    the search repeats. ``transform`` removes the longest learned prefix a prompt starts with
    (never leaving an empty text) and, when ``tail_chars`` is set, keeps only the last
    ``tail_chars`` characters of what remains (the question of a few-shot prompt is at its end).

    Args:
        min_count: prompts that must share a prefix.
        min_length: shortest prefix kept, in characters.
        key_chars: characters used to group prompts before searching.
        tail_chars: keep at most this many trailing characters after stripping (None: keep all).

    Example:
        >>> shots = "Q: 1+1? A: 2\\nQ: 2+2? A: 4\\n"
        >>> ps = PrefixStripper(min_count=2, min_length=10).fit([shots + "Q: 3+3?", shots + "Q: 5+1?", "hi"])
        >>> ps.prefixes_
        ['Q: 1+1? A: 2\\nQ: 2+2? A: 4\\n']
        >>> ps.transform([shots + "Q: 9+9?", "hi"])
        ['Q: 9+9?', 'hi']
    """

    kind: ClassVar[str] = "prefix_stripper"

    def __init__(
        self, min_count: int = 20, min_length: int = 200, key_chars: int = 64, tail_chars: int | None = None
    ) -> None:
        self.min_count = min_count
        self.min_length = min_length
        self.key_chars = key_chars
        self.tail_chars = tail_chars
        for name in ("min_count", "min_length", "key_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"PrefixStripper({name}=...) must be a positive int, got {value!r}.")
        if min_count < 2:
            raise ConfigError(f"min_count must be >= 2 (a prefix of one prompt is the prompt), got {min_count}.")
        if tail_chars is not None and (not isinstance(tail_chars, int) or tail_chars < 1):
            raise ConfigError(f"tail_chars must be None or a positive int, got {tail_chars!r}.")
        self.prefixes_: list[str] | None = None

    def fit(self, prompts: Sequence[str]) -> PrefixStripper:
        """Learn the shared prefixes of ``prompts`` (n,)."""
        groups: dict[str, list[str]] = defaultdict(list)
        for p in prompts:
            if not isinstance(p, str):
                raise ConfigError(f"PrefixStripper.fit takes strings, got {type(p).__name__}.")
            if len(p) >= self.min_length:
                groups[p[: min(self.key_chars, self.min_length)]].append(p)
        found: list[str] = []
        for key in sorted(groups):
            left = sorted(groups[key])
            while len(left) >= self.min_count:
                best = ""
                w = self.min_count - 1
                for i in range(len(left) - w):
                    cand = os.path.commonprefix([left[i], left[i + w]])
                    if len(cand) > len(best):
                        best = cand
                best = _trim_to_boundary(best)
                if len(best) < self.min_length:
                    break
                found.append(best)
                left = [p for p in left if not p.startswith(best)]
        self.prefixes_ = sorted(set(found), key=lambda s: (-len(s), s))
        return self

    def fit_transform(self, prompts: Sequence[str]) -> list[str]:
        return self.fit(prompts).transform(prompts)

    def strip(self, text: str) -> str:
        """One prompt with its longest learned prefix removed (unchanged when none matches)."""
        self._check_fitted("prefixes_")
        assert self.prefixes_ is not None
        out = text
        for prefix in self.prefixes_:  # longest first
            if text.startswith(prefix) and len(text) > len(prefix) and text[len(prefix) :].strip():
                out = text[len(prefix) :]
                break
        if self.tail_chars is not None and len(out) > self.tail_chars:
            out = out[-self.tail_chars :]
        return out

    def transform(self, prompts: Sequence[str]) -> list[str]:
        """(n,) prompts -> (n,) prompts with shared prefixes removed."""
        if isinstance(prompts, str):
            raise ConfigError("transform() takes a list of strings; wrap a single prompt: transform([text]).")
        return [self.strip(p) for p in prompts]

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, np.ndarray]:
        """``{"prefixes_": (k,) unicode array}`` -- saved in npz without pickles."""
        self._check_fitted("prefixes_")
        return {"prefixes_": np.asarray(self.prefixes_, dtype=str)}

    def set_state(self, state: dict[str, Any]) -> None:
        if set(state) != {"prefixes_"}:
            raise ConfigError(f"PrefixStripper state must have exactly the key 'prefixes_', got {sorted(state)}.")
        self.prefixes_ = [str(s) for s in np.asarray(state["prefixes_"]).tolist()]
