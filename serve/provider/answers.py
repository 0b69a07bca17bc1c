"""What the local provider answers, and how long it takes: deterministic text of the logged length.

:class:`AnswerBook` holds the model pool and, per model, a latency model and a typical answer length.
Built :meth:`from_data` (an outcomes source: ``demo``, ``routerbench`` or a path), it serves exactly the
data's models; built with no data it answers any model name ("open pool").

The answer to ``(model, prompt)`` -- the prompt being the text of the last user message -- is a string of
pseudo-words, one word per token, drawn by a generator seeded from ``seed``, the model and the prompt, so
the same request always gets the same text. Its length is the logged ``output_tokens`` of that prompt and
model when the data has it, else the model's typical length (the median of its logged lengths, or a seeded
value in [80, 400) without token data); ``max_tokens`` truncates it (finish reason ``length``).

Latency of one call is ``ttft + per_token * tokens``: per model, ``ttft`` and ``per_token`` come from a
least-squares fit of the data's ``latency`` on ``output_tokens`` (a logged prompt replays its logged total
latency); without latency data they are drawn per model from seeded lognormals. A call whose prompt is not
logged gets a seeded lognormal jitter (sigma 0.25) around the model's line. ``latency_ms`` replaces all of
this with a fixed total (the first token after half of it).

Example:
    >>> book = AnswerBook(models=None, seed=0, latency_ms=40)
    >>> a = book.answer("any-model", "hello", max_tokens=5)
    >>> a.output_tokens, a.finish_reason, a.text == book.answer("any-model", "hello", max_tokens=5).text
    (5, 'length', True)
    >>> book.timing("any-model", "hello", a.output_tokens)
    (0.02, 0.004)
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from router.errors import ConfigError, UnknownModelError

__all__ = ["Answer", "AnswerBook", "ModelProfile", "WORDS"]

#: The vocabulary of the generated answers (one word = one token).
WORDS: tuple[str, ...] = tuple(
    (
        "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
        "they you were her she there can all we one so if would their will up more out about into than them "
        "only other new some time could these two may then do first any my now such like our over also made "
        "well most after way many before must through back years where much your great still between world "
        "answer model route token value result number step case point reason because given first therefore"
    ).split()
)
_CACHE_SIZE = 8192
_JITTER_SIGMA = 0.25


@dataclass(frozen=True)
class ModelProfile:
    """Per-model parameters: typical answer length and the latency line ``ttft + per_token * tokens``."""

    typical_tokens: int
    ttft_s: float
    per_token_s: float


@dataclass(frozen=True)
class Answer:
    """One generated answer: its text, the streaming pieces, token counts and finish reason."""

    text: str
    pieces: tuple[str, ...]
    output_tokens: int
    finish_reason: str  # "stop" | "length"
    logged_latency_s: float | None


def _seed_of(*parts: str) -> int:
    h = hashlib.blake2b("\x00".join(parts).encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def _pieces(words: list[str], max_chunks: int) -> tuple[str, ...]:
    """Split the answer into at most ``max_chunks`` stream deltas that concatenate to the text."""
    n = len(words)
    if n == 0:
        return ()
    per = max(1, math.ceil(n / max_chunks))
    out = []
    for i in range(0, n, per):
        part = " ".join(words[i:i + per])
        out.append(part if i == 0 else " " + part)
    return tuple(out)


class AnswerBook:
    """The pool of served models with their profiles, and a cache of generated answers.

    Args:
        models: ``{model: ModelProfile}`` of the pool, or None for an open pool that answers any name
            (each unseen name gets a seeded profile).
        seed: seeds the text, the drawn profiles and the latency jitter.
        latency_ms: fixed total latency of every call in milliseconds (None: per-model latency models).
        max_chunks: most stream deltas per answer (tokens are grouped to fit).
        index: ``{prompt text: row}`` of the logged prompts, with ``tokens[row][model]`` and
            ``latency[row][model]`` giving the logged output length and latency (may be empty).
    """

    def __init__(
        self,
        models: dict[str, ModelProfile] | None,
        *,
        seed: int = 0,
        latency_ms: float | None = None,
        max_chunks: int = 16,
        index: dict[str, int] | None = None,
        tokens: dict[str, list[int]] | None = None,
        input_tokens: dict[str, list[int]] | None = None,
        latency: dict[str, list[float]] | None = None,
        source: str = "open",
    ) -> None:
        if latency_ms is not None and (not math.isfinite(latency_ms) or latency_ms < 0):
            raise ConfigError(f"latency_ms must be a number >= 0 (milliseconds), got {latency_ms!r}.")
        if max_chunks < 1:
            raise ConfigError(f"max_chunks must be >= 1, got {max_chunks!r}.")
        self.models = None if models is None else dict(models)
        self.seed = int(seed)
        self.latency_ms = latency_ms
        self.max_chunks = int(max_chunks)
        self.index = dict(index or {})
        self.tokens = dict(tokens or {})
        self.input_tokens = dict(input_tokens or {})
        self.latency = dict(latency or {})
        self.source = source
        self._drawn: dict[str, ModelProfile] = {}
        self._cache: OrderedDict[tuple[str, str, int | None], Answer] = OrderedDict()

    # ------------------------------------------------------------------ building
    @classmethod
    def from_data(cls, data: str, *, seed: int = 0, latency_ms: float | None = None,
                  max_chunks: int = 16) -> AnswerBook:
        """The pool, lengths and latencies of an outcomes source (``demo``, ``routerbench`` or a path)."""
        import numpy as np

        from router.data.registry import load_source

        o = load_source(data)
        models = [str(m) for m in o.models]
        prompts = [str(p) for p in o.prompts]
        index: dict[str, int] = {}
        for i, p in enumerate(prompts):
            index.setdefault(p, i)
        out_tok = None if o.output_tokens is None else np.asarray(o.output_tokens, dtype=np.float64)
        in_tok = None if o.input_tokens is None else np.asarray(o.input_tokens, dtype=np.float64)
        lat = None if o.latency is None else np.asarray(o.latency, dtype=np.float64)
        profiles: dict[str, ModelProfile] = {}
        tokens: dict[str, list[int]] = {}
        inputs: dict[str, list[int]] = {}
        latency: dict[str, list[float]] = {}
        for j, m in enumerate(models):
            drawn = _drawn_profile(m, seed)
            typical = drawn.typical_tokens
            ttft, per_tok = drawn.ttft_s, drawn.per_token_s
            if out_tok is not None:
                col = out_tok[:, j]
                ok = np.isfinite(col) & (col >= 0)
                if ok.any():
                    typical = max(1, int(np.median(col[ok])))
                tokens[m] = [int(x) if np.isfinite(x) and x >= 0 else -1 for x in col]
            if in_tok is not None:
                inputs[m] = [int(x) if np.isfinite(x) and x >= 0 else -1 for x in in_tok[:, j]]
            if lat is not None:
                lcol = lat[:, j]
                latency[m] = [float(x) if np.isfinite(x) and x >= 0 else -1.0 for x in lcol]
                ttft, per_tok = _fit_line(lcol, None if out_tok is None else out_tok[:, j], ttft, per_tok)
            profiles[m] = ModelProfile(typical, ttft, per_tok)
        return cls(profiles, seed=seed, latency_ms=latency_ms, max_chunks=max_chunks, index=index,
                   tokens=tokens, input_tokens=inputs, latency=latency, source=o.source)

    # ------------------------------------------------------------------ queries
    @property
    def open_pool(self) -> bool:
        """True when any model name is answered."""
        return self.models is None

    def model_names(self) -> list[str]:
        """The served models (for an open pool: the names seen so far)."""
        return sorted(self.models) if self.models is not None else sorted(self._drawn)

    def knows(self, model: str) -> bool:
        """Whether ``model`` is served."""
        return self.models is None or model in self.models

    def profile(self, model: str) -> ModelProfile:
        """The profile of ``model``; an open pool draws one (seeded) for a new name."""
        if self.models is not None:
            try:
                return self.models[model]
            except KeyError:
                raise UnknownModelError(f"model {model!r} is not served; served: {sorted(self.models)}") from None
        p = self._drawn.get(model)
        if p is None:
            p = self._drawn[model] = _drawn_profile(model, self.seed)
        return p

    def answer(self, model: str, prompt: str, max_tokens: int | None = None) -> Answer:
        """The deterministic answer of ``model`` to ``prompt`` (cached)."""
        key = (model, prompt, max_tokens)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        prof = self.profile(model)
        row = self.index.get(prompt)
        n = prof.typical_tokens
        logged_lat = None
        if row is not None:
            col = self.tokens.get(model)
            if col is not None and col[row] >= 0:
                n = col[row]
            lcol = self.latency.get(model)
            if lcol is not None and lcol[row] >= 0:
                logged_lat = lcol[row]
        finish = "stop"
        if max_tokens is not None and n > max_tokens:
            n, finish = max_tokens, "length"
        rng = random.Random(_seed_of(str(self.seed), model, prompt))
        words = rng.choices(WORDS, k=n)
        if words:
            words[0] = words[0].capitalize()
        ans = Answer(" ".join(words), _pieces(words, self.max_chunks), n, finish, logged_lat)
        self._cache[key] = ans
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return ans

    def input_tokens_of(self, model: str, prompt: str, chars: int) -> int:
        """Prompt tokens: the logged count when the prompt is in the data, else about four characters a token."""
        row = self.index.get(prompt)
        if row is not None:
            col = self.input_tokens.get(model)
            if col is not None and col[row] >= 0:
                return col[row]
        return max(1, (chars + 3) // 4)

    def timing(self, model: str, prompt: str, output_tokens: int, logged_s: float | None = None) -> tuple[float, float]:
        """``(time to first token, time per later token)`` in seconds for one call."""
        if self.latency_ms is not None:
            total = self.latency_ms / 1000.0
            ttft = total / 2
            return ttft, (total - ttft) / max(1, output_tokens)
        prof = self.profile(model)
        if logged_s is not None:
            ttft = min(prof.ttft_s, logged_s / 2)
            return ttft, (logged_s - ttft) / max(1, output_tokens)
        z = random.Random(_seed_of("latency", str(self.seed), model, prompt)).gauss(0.0, 1.0)
        f = math.exp(_JITTER_SIGMA * z - _JITTER_SIGMA**2 / 2)
        return prof.ttft_s * f, prof.per_token_s * f

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (for ``GET /_stats``)."""
        return {"source": self.source, "open_pool": self.open_pool, "models": self.model_names(),
                "latency_ms": self.latency_ms, "logged_prompts": len(self.index)}


def _drawn_profile(model: str, seed: int) -> ModelProfile:
    """A seeded profile for a model without data: typical length in [80, 400), lognormal latencies."""
    rng = random.Random(_seed_of("profile", str(seed), model))
    typical = rng.randrange(80, 400)
    ttft = min(3.0, rng.lognormvariate(math.log(0.3), 0.5))
    per_token = min(0.1, rng.lognormvariate(math.log(0.015), 0.5))
    return ModelProfile(typical, ttft, per_token)


def _fit_line(lat: Any, tok: Any, ttft0: float, per0: float) -> tuple[float, float]:
    """Least-squares ``latency = ttft + per_token * tokens`` (both clamped >= 0); falls back to the inputs."""
    import numpy as np

    ok = np.isfinite(lat) & (lat >= 0)
    if tok is None:
        if ok.sum() == 0:
            return ttft0, per0
        med = float(np.median(lat[ok]))
        return 0.3 * med, 0.7 * med / 300.0  # no token counts: call it a 300-token answer, 30% waiting
    ok &= np.isfinite(tok) & (tok >= 0)
    if ok.sum() < 3:
        return ttft0, per0
    a = np.c_[np.ones(int(ok.sum())), tok[ok]]
    (ttft, per), *_ = np.linalg.lstsq(a, lat[ok], rcond=None)
    if per <= 0:
        med = float(np.median(lat[ok]))
        return med, 0.0
    return max(0.0, float(ttft)), float(per)
