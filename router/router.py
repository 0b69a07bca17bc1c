"""The :class:`Router`: encoder -> quality / cost / latency predictions -> decision rule.

The same object is evaluated offline and serves live, so offline numbers predict live behaviour.
A router is saved to a directory as JSON configuration plus ``.npz`` arrays -- no pickled code --
and loads back to identical decisions::

    router_dir/
      router.json            models, decision rule, operating point, component names, metadata, format version
      encoder.json           encoder reference + configuration (weights are never copied)
      preprocessor.json/.npz shared-prefix stripper (optional)
      features.json/.npz     prompt statistics appended to the embedding (optional)
      quality.json/.npz      quality predictor or bandit policy
      cost.json/.npz         cost model
      latency.json/.npz      latency model (optional)

Example:
    >>> from router.data.synthetic import generate
    >>> from router.encoders import HashingEncoder
    >>> from router.predictors import KNNPredictor
    >>> data = generate(300, seed=0)
    >>> r = Router.fit(data.outcomes, encoder=HashingEncoder(dim=64), predictor=KNNPredictor(k=10))
    >>> d = r.route(["Prove rigorously a theorem about prime numbers"], lam=200.0)
    >>> d.chosen[0] in r.models, round(float(d.probabilities.sum()), 6)
    (True, 1.0)
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from router.base import Component, Encoder, Policy, QualityPredictor
from router.calibration import OperatingPoint
from router.data.schema import Outcomes
from router.decision import DecisionRule
from router.errors import ConfigError, PersistenceError, UnknownModelError
from router.persist import load_component, read_json, save_component, write_json

__all__ = ["Decisions", "Router", "default_lambda_grid", "prompt_texts"]

FORMAT_VERSION = 1

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
            text = render_conversation(list(p))  # type: ignore[arg-type]
        else:
            raise ConfigError(f"prompt {i} has type {type(p).__name__}; give text or a list of chat messages.")
        if not text.strip():
            raise ConfigError(f"prompt {i} is empty; every request needs text to route on.")
        out.append(text)
    return out


@dataclass(frozen=True, eq=False)
class Decisions:
    """Routing decisions for n prompts over m candidate models.

    Attributes:
        models: (m,) candidate model names.
        chosen_index: (n,) index of the chosen model.
        probabilities: (n, m) probability the rule gave each model (the chosen one's is the propensity).
        quality: (n, m) predicted quality. cost: (n, m) predicted USD. latency: (n, m) predicted seconds.
        utility: (n, m) quality - lam * cost - mu * latency (``-inf`` where not allowed).
        reasons: (n,) short explanation of each choice.
        lam, mu: the trade-off used (a mixed rule's first lambda; see :class:`~router.decision.DecisionRule`).
    """

    models: tuple[str, ...]
    chosen_index: np.ndarray
    probabilities: np.ndarray
    quality: np.ndarray
    cost: np.ndarray
    latency: np.ndarray
    utility: np.ndarray
    reasons: list[str]
    lam: float
    mu: float
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def chosen(self) -> list[str]:
        return [self.models[i] for i in self.chosen_index]

    @property
    def propensity(self) -> np.ndarray:
        return self.probabilities[np.arange(len(self.chosen_index)), self.chosen_index]

    def __len__(self) -> int:
        return len(self.chosen_index)

    def to_frame(self, prompt_ids: Sequence[str] | None = None, models: Sequence[str] | None = None) -> pl.DataFrame:
        """One row per prompt, the format ``python -m router route`` writes and ``training evaluate --decisions``
        reads.

        Columns: ``prompt_id, chosen_model, propensity`` (the chosen model's probability), ``quality, cost,
        latency`` (the chosen model's predictions), ``reason``, ``lam, mu`` (numbers), then for every
        candidate (``models``, default all) ``p:<model>``, ``q:<model>``, ``cost:<model>``, ``latency:<model>``.
        """
        n = len(self)
        rows = np.arange(n)
        cols = list(range(len(self.models))) if models is None else [self.models.index(m) for m in models]
        data: dict[str, Any] = {
            "prompt_id": list(prompt_ids) if prompt_ids is not None else [str(i) for i in range(n)],
            "chosen_model": self.chosen,
            "propensity": self.propensity,
            "quality": self.quality[rows, self.chosen_index],
            "cost": self.cost[rows, self.chosen_index],
            "latency": self.latency[rows, self.chosen_index],
            "reason": self.reasons,
            "lam": np.full(n, float(self.lam)),
            "mu": np.full(n, float(self.mu)),
        }
        for prefix, values in (("p", self.probabilities), ("q", self.quality), ("cost", self.cost),
                               ("latency", self.latency)):
            for j in cols:
                data[f"{prefix}:{self.models[j]}"] = values[:, j]
        return pl.DataFrame(data)


def default_lambda_grid(quality: np.ndarray, cost: np.ndarray, n: int = 41) -> np.ndarray:
    """Lambda values that trace the whole cost-quality curve, from the best model to the cheapest.

    Critical lambdas are where two models swap places on a prompt: ``dq / dc`` for every pair with
    more quality at more cost. The grid holds 0, quantiles of those ratios, and one value above the
    largest (where every prompt goes to its cheapest model).

    Args:
        quality: (n, m) predicted quality. cost: (n, m) predicted cost.
    """
    q = np.asarray(quality, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    dq = q[:, :, None] - q[:, None, :]
    dc = c[:, :, None] - c[:, None, :]
    valid = (dq > 0) & (dc > 0)
    ratios = (dq[valid] / dc[valid]) if valid.any() else np.array([1.0])
    inner = np.quantile(ratios, np.linspace(0.0, 1.0, max(n - 2, 1)))
    return np.unique(np.concatenate([[0.0], inner, [ratios.max() * 10.0 + 1.0]]))


class Router:
    """Encoder, quality predictor (or bandit policy), cost / latency models and a decision rule.

    Build one with :meth:`fit` (or from parts), route with :meth:`route`, trace the cost-quality curve
    with :meth:`sweep`, persist with :meth:`save` / :meth:`load`. :attr:`operating_point` says where it
    decides by default (its rule's trade-off and, when calibrated, the target behind it).
    """

    def __init__(
        self,
        models: Sequence[str],
        encoder: Encoder,
        quality: QualityPredictor | Policy,
        cost: Component,
        latency: Component | None = None,
        rule: DecisionRule | None = None,
        preprocessor: Component | None = None,
        metadata: dict[str, Any] | None = None,
        features: Component | None = None,
        operating_point: OperatingPoint | None = None,
    ) -> None:
        self.models = tuple(str(m) for m in models)
        if not self.models:
            raise ConfigError("a router needs at least one model.")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"model names must be unique, got {list(self.models)}.")
        self.encoder = encoder
        self.quality = quality
        self.cost = cost
        self.latency = latency
        self.rule = rule or DecisionRule()
        self.preprocessor = preprocessor
        self.metadata = dict(metadata or {})
        self.features = features
        self._operating_point: OperatingPoint | None = None
        if operating_point is not None:
            self.operating_point = operating_point

    @property
    def operating_point(self) -> OperatingPoint:
        """Where the router decides by default: its rule's lambda, mu and mixing, and where they came from.

        Setting it sets the rule's trade-off; setting the rule to another trade-off makes the point
        ``source="rule"`` (the target of an earlier calibration no longer applies).
        """
        op = self._operating_point
        if op is not None and op.same_trade_off(self.rule):
            return op
        return OperatingPoint.of_rule(self.rule, source="rule")

    @operating_point.setter
    def operating_point(self, op: OperatingPoint) -> None:
        self.rule = replace(self.rule, lam=op.lam, mu=op.mu, mix_lam=op.mix_lam, mix=op.mix)
        self._operating_point = op

    # ------------------------------------------------------------------ training
    @classmethod
    def fit(
        cls,
        outcomes: Outcomes,
        *,
        encoder: Encoder,
        predictor: QualityPredictor,
        cost_model: Component | None = None,
        rule: DecisionRule | None = None,
        strip_prefixes: bool = True,
        prompt_stats: float | None = None,
        embeddings: np.ndarray | None = None,
        encode_with: Encoder | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Router:
        """Fit every part on full-information outcomes (use the training split only).

        Args:
            outcomes: training outcomes.
            encoder: text encoder (not trained here).
            predictor: quality predictor to fit on (embeddings, quality).
            cost_model: default :class:`~router.cost_predictor.CostPredictor`, fitted on the outcomes' cost,
                tokens and latency (it predicts latency too when latency was logged).
            strip_prefixes: learn and strip long few-shot prefixes shared by many prompts.
            prompt_stats: weight of the :class:`~router.features.PromptStats` appended to the embedding
                (standardised on these prompts); None or 0 appends none.
            embeddings: (n, d) precomputed *encoder* embeddings of the preprocessed prompts, to skip
                encoding (the prompt statistics, when asked for, are appended here).
            encode_with: encoder used for the training prompts instead of ``encoder`` -- e.g. an
                :class:`~router.encoders.EmbeddingCache` around it, so re-training does not re-encode while
                the saved router keeps the bare encoder.
        """
        from router.cost_predictor import CostPredictor
        from router.encoders import PrefixStripper

        texts = prompt_texts(list(outcomes.prompts))
        pre = PrefixStripper().fit(texts) if strip_prefixes else None
        from router.features import PromptStats

        texts_in = pre.transform(texts) if pre is not None else texts
        if embeddings is None:
            embeddings = (encode_with or encoder).encode(texts_in)
        feats = PromptStats(weight=prompt_stats).fit(texts_in) if prompt_stats else None
        if feats is not None:
            embeddings = np.hstack([np.asarray(embeddings, dtype=np.float32), feats.transform(texts_in)])
        lengths = np.array([len(t) for t in texts], dtype=np.float64)
        predictor.fit(embeddings, outcomes.quality)
        cost_model = cost_model or CostPredictor()
        cost_model.fit(embeddings, lengths, outcomes)  # type: ignore[attr-defined]
        meta = {"trained_on": outcomes.source, "n_train": outcomes.n_prompts, **(metadata or {})}
        return cls(outcomes.models, encoder, predictor, cost_model, None, rule, pre, meta, feats)

    # ------------------------------------------------------------------ prediction
    def embed(self, prompts: Sequence[Prompt], encode_with: Encoder | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(features (n, d), prompt lengths in characters (n,)) of the given prompts.

        The features are the encoder's embedding of the preprocessed prompt, followed by the prompt
        statistics when the router has them. ``encode_with`` replaces the router's encoder for this
        call (e.g. a caching wrapper of it).
        """
        texts = prompt_texts(prompts)
        lengths = np.array([len(t) for t in texts], dtype=np.float64)
        if self.preprocessor is not None:
            texts = self.preprocessor.transform(texts)  # type: ignore[attr-defined]
        emb = (encode_with or self.encoder).encode(texts)
        if self.features is not None:
            emb = np.hstack([emb, self.features.transform(texts)])  # type: ignore[attr-defined]
        return emb, lengths

    def predict(
        self, prompts: Sequence[Prompt] | None = None, *, embeddings: np.ndarray | None = None,
        lengths: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predicted (quality, cost, latency), each (n, m), for prompts or precomputed embeddings."""
        if embeddings is None:
            if prompts is None:
                raise ConfigError("give prompts or embeddings.")
            embeddings, lengths = self.embed(prompts)
        if lengths is None:
            raise ConfigError("give prompt lengths with precomputed embeddings.")
        c = np.asarray(self.cost.predict(embeddings, lengths))  # type: ignore[attr-defined]
        lat_fn = getattr(self.latency or self.cost, "predict_latency", None)
        lat_pred = lat_fn(embeddings, lengths) if lat_fn is not None else None
        lat = np.zeros_like(c) if lat_pred is None else np.asarray(lat_pred)
        if isinstance(self.quality, Policy):
            # a policy learns reward = quality - lam0 * cost - mu0 * latency at its training trade-off;
            # adding the predicted cost and latency back gives its quality estimate for any other trade-off
            reward = np.asarray(self.quality.expected_reward(self._policy_context(embeddings)))  # type: ignore[attr-defined]
            lam0 = float(self.metadata.get("policy_lam", 0.0))
            mu0 = float(self.metadata.get("policy_mu", 0.0))
            q = np.clip(reward + lam0 * c + mu0 * lat, 0.0, 1.0)
        else:
            q = self.quality.predict(embeddings)
        return q, c, lat

    @staticmethod
    def _policy_context(embeddings: np.ndarray) -> np.ndarray:
        """The replay environment's observation features: embeddings clipped to [-1, 1]."""
        return np.clip(np.asarray(embeddings, dtype=np.float64), -1.0, 1.0)

    def allowed_mask(self, models: Sequence[str] | None) -> np.ndarray | None:
        """(m,) bool mask of the named models; None means all."""
        if models is None:
            return None
        pos = {m: i for i, m in enumerate(self.models)}
        unknown = [m for m in models if m not in pos]
        if unknown:
            raise UnknownModelError(f"unknown model(s) {unknown}; this router's pool is {list(self.models)}.")
        if not models:
            raise ConfigError("the allowed model list is empty; allow at least one model.")
        mask = np.zeros(len(self.models), dtype=bool)
        mask[[pos[m] for m in models]] = True
        return mask

    def route(
        self,
        prompts: Sequence[Prompt],
        *,
        lam: float | None = None,
        mu: float | None = None,
        allowed: Sequence[str] | None = None,
        max_cost: float | None = None,
        max_latency: float | None = None,
        explain: bool = True,
        embedded: tuple[np.ndarray, np.ndarray] | None = None,
        sample_keys: Sequence[str] | None = None,
    ) -> Decisions:
        """Choose a model for every prompt.

        With a bandit policy inside and no ``lam`` / ``mu`` override, the policy's own probabilities
        (including its exploration) decide; with an override, the decision rule decides on the
        policy's quality estimates, as for any other router.

        Args:
            prompts: texts, or chat conversations (lists of ``{"role", "content"}``).
            lam, mu, max_cost, max_latency: override the router's decision rule for this call.
            allowed: model names this caller may use (e.g. a tenant's list).
            explain: build a short reason per decision.
            embedded: ``(embeddings, lengths)`` of these prompts from :meth:`embed`, when the caller already
                has them, so they are not computed twice.
            sample_keys: (n,) keys of the draw where a choice is random (exploration, a mixed operating
                point): see :meth:`~router.decision.DecisionRule.sample`; default the prompt texts.
        """
        t0 = time.perf_counter()
        emb, lengths = self.embed(prompts) if embedded is None else embedded
        t1 = time.perf_counter()
        q, c, lat = self.predict(embeddings=emb, lengths=lengths)
        t2 = time.perf_counter()
        rule = self.rule.with_(lam=lam, mu=mu, max_cost=max_cost, max_latency=max_latency)
        mask = self.allowed_mask(allowed)
        if isinstance(self.quality, Policy) and lam is None and mu is None:
            # at its own trade-off a policy decides itself (with its exploration), so the logged
            # propensities are the policy's; limits still apply through the rule's feasible set
            out = rule.probabilities(q, c, lat, mask)
            ctx = self._policy_context(emb)
            probs = np.atleast_2d(self.quality.select(ctx, out.feasible))
            out = type(out)(probs, out.utility, out.feasible, out.fallback)
        else:
            out = rule.probabilities(q, c, lat, mask)
        if sample_keys is None:  # the prompt texts are needed only where the choice is random
            random_rows = (out.probabilities.max(axis=1) < 1.0).any()
            sample_keys = prompt_texts(prompts) if random_rows else [""] * out.probabilities.shape[0]
        chosen = rule.sample(out.probabilities, sample_keys)
        t3 = time.perf_counter()
        reasons = self._reasons(chosen, q, c, lat, out, rule) if explain else [""] * len(chosen)
        timings = {"encode": (t1 - t0) * 1e3, "predict": (t2 - t1) * 1e3, "decide": (t3 - t2) * 1e3}
        return Decisions(self.models, chosen, out.probabilities, q, c, lat, out.utility, reasons,
                         rule.lam, rule.mu, timings)

    def sweep(
        self,
        prompts: Sequence[Prompt] | None = None,
        lambdas: Sequence[float] | None = None,
        *,
        models: Sequence[str] | None = None,
        embeddings: np.ndarray | None = None,
        lengths: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Route every prompt at every lambda (prompts are encoded once).

        Args:
            prompts: the prompts (or give ``embeddings`` and ``lengths``).
            lambdas: (S,) trade-offs; default :func:`default_lambda_grid` of the predictions.
            models: restrict the pool (and the output columns) to these models, in this order.

        Returns:
            ``(lambdas (S,), choices (S, n) indices into models, probabilities (S, n, m), quality_hat (n, m))``.
        """
        q, c, lat = self.predict(prompts, embeddings=embeddings, lengths=lengths)
        cols = np.arange(len(self.models))
        if models is not None:
            self.allowed_mask(models)  # validates the names
            order = {m: i for i, m in enumerate(self.models)}
            cols = np.array([order[m] for m in models])
        q, c, lat = q[:, cols], c[:, cols], lat[:, cols]
        lams = default_lambda_grid(q, c) if lambdas is None else np.asarray(lambdas, dtype=np.float64)
        probs = np.stack([self.rule.with_(lam=float(lv)).probabilities(q, c, lat).probabilities for lv in lams])
        return lams, probs.argmax(axis=2), probs, q

    def _reasons(self, chosen: np.ndarray, q: np.ndarray, c: np.ndarray, lat: np.ndarray, out: Any,
                 rule: DecisionRule) -> list[str]:
        reasons = []
        best_q = np.where(np.isfinite(out.utility), q, -np.inf).argmax(axis=1)
        for i, j in enumerate(chosen):
            name = self.models[j]
            text = f"{name}: predicted quality {q[i, j]:.2f}, cost ${c[i, j]:.6f}"
            if lat.any():
                text += f", latency {lat[i, j]:.2f}s"
            b = best_q[i]
            if b != j:
                text += (f"; {self.models[b]} would add {q[i, b] - q[i, j]:+.2f} quality for "
                         f"${c[i, b] - c[i, j]:.6f} more (lambda {rule.lam:g}/USD)")
            else:
                text += "; highest predicted quality"
            if out.fallback[i]:
                text += "; no model met the cost/latency limits, used the cheapest allowed"
            reasons.append(text)
        return reasons

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write the router to ``directory`` (created); returns the path."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_component(self.encoder, d, "encoder")
        save_component(self.quality, d, "quality")
        save_component(self.cost, d, "cost")
        if self.latency is not None:
            save_component(self.latency, d, "latency")
        if self.preprocessor is not None:
            save_component(self.preprocessor, d, "preprocessor")
        if self.features is not None:
            save_component(self.features, d, "features")
        write_json(d / "router.json", {
            "format_version": FORMAT_VERSION,
            "models": list(self.models),
            "rule": self.rule.to_dict(),
            "operating_point": self.operating_point.to_dict(),
            "has_latency": self.latency is not None,
            "has_preprocessor": self.preprocessor is not None,
            "has_features": self.features is not None,
            "quality_role": "policy" if isinstance(self.quality, Policy) else "predictor",
            "metadata": self.metadata,
        })
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Router:
        """Load a router written by :meth:`save`."""
        d = Path(directory)
        if not (d / "router.json").exists():
            raise PersistenceError(
                f"{d} has no router.json; give a directory written by Router.save or `python -m training fit --out`."
            )
        meta = read_json(d / "router.json")
        if meta.get("format_version") != FORMAT_VERSION:
            raise PersistenceError(
                f"{d}: router format version {meta.get('format_version')} is not supported "
                f"(this toolkit reads version {FORMAT_VERSION}); retrain or upgrade."
            )
        encoder = load_component(d, "encoder")
        quality = load_component(d, "quality")
        cost = load_component(d, "cost")
        latency = load_component(d, "latency") if meta.get("has_latency") else None
        pre = load_component(d, "preprocessor") if meta.get("has_preprocessor") else None
        feats = load_component(d, "features") if meta.get("has_features") else None
        op = meta.get("operating_point")  # absent in routers saved before operating points existed
        return cls(meta["models"], encoder, quality, cost, latency,  # type: ignore[arg-type]
                   DecisionRule(**meta["rule"]), pre, meta.get("metadata"), feats,
                   None if op is None else OperatingPoint.from_dict(op))

    def __repr__(self) -> str:
        return (f"Router(models={list(self.models)}, encoder={type(self.encoder).__name__}, "
                f"quality={type(self.quality).__name__}, rule={self.rule})")

    def describe(self) -> str:
        return json.dumps({"models": list(self.models), "rule": self.rule.to_dict(),
                           "operating_point": self.operating_point.to_dict(), **self.metadata}, indent=2)
