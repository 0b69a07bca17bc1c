"""Synthetic LLM traffic with a known ground truth.

The generator draws prompts from task *families* (chit-chat, coding, maths, ...), each at an easy or
hard level. Every model has a known probability of answering well per (family, level) -- its
*skill* -- plus known prices, answer lengths and latency distributions. Prompt texts are built
from family- and level-specific phrases, so a text encoder can recover the context and a learned
router can recover the best model per context; tests check exactly that against
:attr:`SyntheticData.true_quality`.

Knobs:

* ``drift`` -- over the time span, the skill of the drifting model (``drift_model``) moves by this
  much on every family (positive improves it); timestamps increase with row order.
* ``unlogged`` -- a list of ``(family, model)`` pairs a logging policy never tried: they appear in
  :attr:`SyntheticData.logging_mask` as False, so reductions to traffic logs leave those actions
  without support (to test overlap diagnostics).
* ``emerging`` -- the drift scenario of the loop tests: a family of :data:`EMERGING_FAMILIES` that is
  absent before the time fraction ``emerging_at`` and makes up ``emerging_share`` of the prompts
  after it (:attr:`SyntheticData.after_shift` marks those rows). Its best model is one a router
  trained on the earlier traffic does not pick for it: in ``translation`` (short texts in
  low-resource languages) the small model, fine-tuned on translation pairs, is right most often and
  cheapest, the frontier model is mediocre, the mid-size model and the specialists mostly fail.

Example:
    >>> data = generate(n_prompts=200, seed=0)
    >>> data.outcomes.n_prompts, data.outcomes.n_models
    (200, 5)
    >>> data.true_quality.shape == data.outcomes.quality.shape
    True
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from router.data.schema import Outcomes
from router.errors import ConfigError

__all__ = ["EMERGING_FAMILIES", "FAMILIES", "MODELS", "ModelSpec", "SyntheticData", "generate"]


@dataclass(frozen=True)
class ModelSpec:
    """A synthetic model: prices (USD per token), speed and verbosity."""

    name: str
    input_price: float
    output_price: float
    ttft_s: float
    tokens_per_s: float
    verbosity: float


#: The default pool: a cheap small model, two specialists, a mid-size and a frontier model.
MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("small-8b", 0.05e-6, 0.08e-6, 0.12, 160.0, 0.9),
    ModelSpec("code-34b", 0.35e-6, 0.40e-6, 0.25, 90.0, 1.1),
    ModelSpec("math-13b", 0.20e-6, 0.25e-6, 0.20, 110.0, 1.0),
    ModelSpec("medium-70b", 0.60e-6, 0.80e-6, 0.35, 70.0, 1.0),
    ModelSpec("frontier-xl", 5.00e-6, 15.0e-6, 0.60, 45.0, 1.2),
)

#: Family -> (subjects, easy phrasing, hard phrasing, mean answer tokens).
FAMILIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], float]] = {
    "chitchat": (
        ("the weekend", "my cat", "a good movie", "coffee", "the weather", "travel plans", "a birthday"),
        ("Tell me something nice about", "Say hi and chat about", "What do you think of"),
        ("Write a witty, layered dialogue in iambic verse about", "Compose a subtle satirical monologue on"),
        120.0,
    ),
    "coding": (
        ("a linked list", "a REST endpoint", "binary search", "a CSV parser", "a thread pool", "a regex"),
        ("Write a short Python function for", "Show a simple example of"),
        ("Implement a lock-free concurrent version of", "Refactor for performance and prove the complexity of"),
        300.0,
    ),
    "math": (
        ("prime numbers", "a quadratic equation", "probability of dice", "compound interest", "triangles"),
        ("Compute a quick answer about", "Do the arithmetic for"),
        ("Prove rigorously a theorem about", "Derive a closed form with full proof concerning"),
        250.0,
    ),
    "legal": (
        ("a rental contract", "an NDA clause", "copyright fair use", "GDPR consent", "a will"),
        ("Summarise in plain words", "Explain simply"),
        ("Analyse the liability exposure and precedent for", "Draft a jurisdiction-aware opinion on"),
        350.0,
    ),
    "science": (
        ("photosynthesis", "black holes", "vaccines", "plate tectonics", "entropy", "enzymes"),
        ("Give a one-line fact about", "Define briefly"),
        ("Critically evaluate the open research questions in", "Explain the quantitative mechanism of"),
        280.0,
    ),
    "summarize": (
        ("this meeting transcript", "this news article", "this email thread", "this report"),
        ("Give three bullet points of", "Summarise"),
        ("Write an executive brief with risks and numbers from", "Contrast the arguments and biases in"),
        180.0,
    ),
}

#: Families that only appear through the ``emerging`` knob (after a shift; never in the default mix).
EMERGING_FAMILIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], float]] = {
    "translation": (
        ("a Finnish folk poem", "a Basque proverb", "an Icelandic saga passage", "a Welsh road sign",
         "a Maltese recipe", "a Yoruba greeting"),
        ("Translate word for word", "Give the literal English of"),
        ("Translate keeping the metre and idiom of", "Render with cultural notes"),
        160.0,
    ),
}

# skill[family][level] -> probability of a good answer per model (order of MODELS)
_SKILL: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "chitchat": ((0.92, 0.85, 0.85, 0.93, 0.96), (0.45, 0.40, 0.40, 0.70, 0.88)),
    "coding": ((0.55, 0.96, 0.55, 0.82, 0.92), (0.10, 0.86, 0.15, 0.45, 0.76)),
    "math": ((0.50, 0.55, 0.96, 0.80, 0.92), (0.08, 0.15, 0.84, 0.40, 0.74)),
    "legal": ((0.60, 0.50, 0.50, 0.86, 0.94), (0.15, 0.12, 0.12, 0.55, 0.88)),
    "science": ((0.80, 0.65, 0.75, 0.90, 0.95), (0.25, 0.20, 0.35, 0.60, 0.90)),
    "summarize": ((0.90, 0.80, 0.80, 0.92, 0.94), (0.50, 0.45, 0.45, 0.78, 0.90)),
    # emerging (see EMERGING_FAMILIES): the small model is best, the mid-size one and the specialists fail
    "translation": ((0.92, 0.15, 0.15, 0.25, 0.60), (0.82, 0.05, 0.05, 0.15, 0.45)),
}

_PHRASES = {**FAMILIES, **EMERGING_FAMILIES}


@dataclass(frozen=True, eq=False)
class SyntheticData:
    """Synthetic traffic and its ground truth.

    Attributes:
        outcomes: sampled full-information outcomes (quality 0/1, cost, latency, tokens, timestamps).
        true_quality: (n, m) probability of a good answer per prompt and model (the ground truth).
        family: (n,) family index into ``families``.
        hard: (n,) bool, the prompt's level.
        families: family names.
        features: (n, 2 * n_families) one-hot (family, level) context, an exact representation.
        logging_mask: (n, m) False where a logging policy never tried the model.
        models: the model specs used.
        after_shift: (n,) bool, rows at or after the ``emerging`` shift (all False without it).
    """

    outcomes: Outcomes
    true_quality: np.ndarray
    family: np.ndarray
    hard: np.ndarray
    families: tuple[str, ...]
    features: np.ndarray
    logging_mask: np.ndarray
    models: tuple[ModelSpec, ...] = field(default=MODELS)
    after_shift: np.ndarray | None = None

    @property
    def prices(self) -> tuple[np.ndarray, np.ndarray]:
        """(input, output) USD per token, each (m,)."""
        return (np.array([s.input_price for s in self.models]), np.array([s.output_price for s in self.models]))

    def best_model_per_context(self, lam: float = 0.0) -> dict[tuple[str, bool], str]:
        """The model with the highest expected ``quality - lam * cost`` per (family, hard)."""
        out: dict[tuple[str, bool], str] = {}
        exp_cost = self.outcomes.cost
        for f, name in enumerate(self.families):
            for level in (False, True):
                rows = (self.family == f) & (self.hard == level)
                if not rows.any():
                    continue
                util = self.true_quality[rows].mean(axis=0) - lam * exp_cost[rows].mean(axis=0)
                out[(name, level)] = self.outcomes.models[int(np.argmax(util))]
        return out


def generate(
    n_prompts: int = 2000,
    *,
    seed: int = 0,
    families: Sequence[str] | None = None,
    hard_fraction: float = 0.4,
    drift: float = 0.0,
    drift_model: str = "medium-70b",
    unlogged: Sequence[tuple[str, str]] = (),
    emerging: str | None = None,
    emerging_at: float = 0.5,
    emerging_share: float = 0.5,
    start: dt.datetime = dt.datetime(2026, 1, 1),
    days: float = 30.0,
    source: str = "synthetic",
) -> SyntheticData:
    """Generate ``n_prompts`` synthetic requests with every model's outcome.

    Args:
        n_prompts: number of prompts.
        seed: the only source of randomness.
        families: subset of :data:`FAMILIES` to use (default: all).
        hard_fraction: share of hard prompts.
        drift: change of ``drift_model``'s skill from the first to the last timestamp.
        drift_model: the model whose skill drifts.
        unlogged: (family, model) pairs never tried by the logging policy.
        emerging: a family of :data:`EMERGING_FAMILIES` that appears only from ``emerging_at`` on.
        emerging_at: time fraction in [0, 1) of the shift.
        emerging_share: share of the prompts from the shift on that belong to ``emerging``.
        start: first timestamp; ``days``: time span of the traffic.
        source: the outcomes' source name.
    """
    if n_prompts <= 0:
        raise ConfigError(f"n_prompts must be positive, got {n_prompts}.")
    if not 0.0 <= hard_fraction <= 1.0:
        raise ConfigError(f"hard_fraction must be in [0, 1], got {hard_fraction}.")
    fam_names = tuple(families) if families is not None else tuple(FAMILIES)
    unknown = [f for f in fam_names if f not in FAMILIES]
    if unknown:
        raise ConfigError(f"unknown families {unknown}; choose from {list(FAMILIES)}.")
    if emerging is not None:
        if emerging not in EMERGING_FAMILIES:
            raise ConfigError(f"unknown emerging family {emerging!r}; choose from {list(EMERGING_FAMILIES)}.")
        if not 0.0 <= emerging_at < 1.0:
            raise ConfigError(f"emerging_at must be in [0, 1), got {emerging_at}.")
        if not 0.0 < emerging_share <= 1.0:
            raise ConfigError(f"emerging_share must be in (0, 1], got {emerging_share}.")
    model_names = [s.name for s in MODELS]
    if drift and drift_model not in model_names:
        raise ConfigError(f"drift_model {drift_model!r} is not one of {model_names}.")
    for fam, mod in unlogged:
        if fam not in fam_names or mod not in model_names:
            raise ConfigError(f"unlogged pair ({fam!r}, {mod!r}) names an unknown family or model.")

    rng = np.random.default_rng(seed)
    n, m, nf = n_prompts, len(MODELS), len(fam_names)
    family = rng.integers(0, nf, size=n)
    hard = rng.random(n) < hard_fraction
    time_frac = np.sort(rng.random(n))
    after_shift = np.zeros(n, dtype=bool)
    if emerging is not None:  # drawn only with the knob on, so the default data stays as it was
        after_shift = time_frac >= emerging_at
        family[after_shift & (rng.random(n) < emerging_share)] = nf
        fam_names, nf = (*fam_names, emerging), nf + 1
    timestamps = np.datetime64(start, "us") + (time_frac * days * 86400e6).astype("timedelta64[us]")

    prompts = np.empty(n, dtype=object)
    mean_tokens = np.empty(n)
    true_q = np.empty((n, m))
    for i in range(n):
        subjects, easy, hard_phr, toks = _PHRASES[fam_names[family[i]]]
        phrase = hard_phr if hard[i] else easy
        prompts[i] = (
            f"{phrase[rng.integers(len(phrase))]} {subjects[rng.integers(len(subjects))]}"
            f" (request {i})."
        )
        mean_tokens[i] = toks * (1.8 if hard[i] else 1.0)
        true_q[i] = _SKILL[fam_names[family[i]]][int(hard[i])]
    if drift:
        j = model_names.index(drift_model)
        true_q[:, j] = np.clip(true_q[:, j] + drift * time_frac, 0.01, 0.99)

    quality = (rng.random((n, m)) < true_q).astype(np.float64)
    verbosity = np.array([s.verbosity for s in MODELS])
    out_tokens = np.maximum(
        1.0, np.round(rng.lognormal(np.log(mean_tokens[:, None] * verbosity[None, :]), 0.35, size=(n, m)))
    )
    in_tokens = np.array([len(str(p)) / 4.0 + 20.0 for p in prompts])[:, None].repeat(m, axis=1).round()
    in_price = np.array([s.input_price for s in MODELS])
    out_price = np.array([s.output_price for s in MODELS])
    cost = in_tokens * in_price + out_tokens * out_price
    ttft = np.array([s.ttft_s for s in MODELS])
    tps = np.array([s.tokens_per_s for s in MODELS])
    latency = ttft * rng.lognormal(0.0, 0.25, size=(n, m)) + out_tokens / tps

    features = np.zeros((n, 2 * nf), dtype=np.float32)
    features[np.arange(n), family * 2 + hard.astype(int)] = 1.0
    logging_mask = np.ones((n, m), dtype=bool)
    for fam, mod in unlogged:
        logging_mask[family == fam_names.index(fam), model_names.index(mod)] = False

    outcomes = Outcomes(
        prompt_ids=[f"syn-{seed}-{i:06d}" for i in range(n)],
        prompts=prompts,
        models=model_names,
        quality=quality,
        cost=cost,
        tasks=[fam_names[f] for f in family],
        latency=latency,
        input_tokens=in_tokens,
        output_tokens=out_tokens,
        timestamps=timestamps,
        source=source,
        quality_kind="binary",
        cost_kind="tokens",
    )
    for arr in (true_q, family, hard, features, logging_mask, after_shift):
        arr.setflags(write=False)
    return SyntheticData(
        outcomes=outcomes,
        true_quality=true_q,
        family=family,
        hard=hard,
        families=fam_names,
        features=features,
        logging_mask=logging_mask,
        after_shift=after_shift,
    )
