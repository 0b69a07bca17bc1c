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

Prompt lengths, which the cost model reads, are token counts from the cl100k_base tokenizer
(:func:`prompt_lengths`; routers saved before token counts keep characters). Each model's context
window is learnt at :meth:`Router.fit` from litellm's price map (see :mod:`router.windows`) and saved
with the router; :meth:`Router.route` and :meth:`Router.sweep` give probability 0 to a model whose
window the prompt does not fit and raise :class:`~router.errors.ContextWindowError` when it fits none.

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

from router.base import Component, CostModel, Encoder, Policy, QualityPredictor
from router.calibration import OperatingPoint
from router.context import (
    LENGTH_UNITS,
    Prompt,
    embed_prompts,
    fit_preprocessor,
    policy_context,
    prompt_lengths,
    prompt_texts,
)
from router.data.schema import Outcomes
from router.decision import DecisionRule
from router.encoders.prefix import PrefixStripper
from router.errors import ConfigError, PersistenceError, UnknownModelError
from router.features import PromptStats
from router.lambdas import default_lambda_grid
from router.persist import load_component, read_json, save_component, write_json

__all__ = ["Decisions", "Router", "default_lambda_grid", "prompt_lengths", "prompt_texts"]

FORMAT_VERSION = 1

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
        ood: (n,) True where the prompt was beyond the router's out-of-distribution threshold (its quality
            predictions shrunk toward the priors; see :mod:`router.ood`), or None without a guard.
        ood_distance: (n,) each prompt's distance to the guard's training prompts, or None without a guard.
        raw_quality: (n, m) the predictions before the guard (what :meth:`Router.update_guard` learns
            from), or None without a guard.
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
    ood: np.ndarray | None = None
    ood_distance: np.ndarray | None = None
    raw_quality: np.ndarray | None = None

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


class Router:
    """Encoder, quality predictor (or bandit policy), cost / latency models and a decision rule.

    Build one with :meth:`fit` (or from parts), route with :meth:`route`, trace the cost-quality curve
    with :meth:`sweep`, persist with :meth:`save` / :meth:`load`. :attr:`operating_point` says where it
    decides by default (its rule's trade-off and, when calibrated, the target behind it).

    With a bandit policy as ``quality``, ``policy_lam`` / ``policy_mu`` are the trade-off its reward
    was trained at; the router adds the predicted cost and latency back to the policy's reward
    estimate to get quality estimates for any other trade-off.
    """

    def __init__(
        self,
        models: Sequence[str],
        encoder: Encoder,
        quality: QualityPredictor | Policy,
        cost: CostModel,
        latency: CostModel | None = None,
        rule: DecisionRule | None = None,
        preprocessor: PrefixStripper | None = None,
        metadata: dict[str, Any] | None = None,
        features: PromptStats | None = None,
        ood: Component | None = None,
        *,
        policy_lam: float = 0.0,
        policy_mu: float = 0.0,
        context_windows: dict[str, int] | None = None,
        length_unit: str = "tokens",
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
        #: the trade-off a policy's reward was trained at (``quality - policy_lam * cost - policy_mu * latency``)
        self.ood = ood
        self.policy_lam = float(policy_lam)
        self.policy_mu = float(policy_mu)
        for name, part, kind, what in (("encoder", encoder, Encoder, "an Encoder"), ("cost", cost, CostModel, "a CostModel"),
                                       ("quality", quality, (QualityPredictor, Policy), "a QualityPredictor or a Policy")):
            if not isinstance(part, kind):
                raise ConfigError(f"the router's {name} must be {what} (router.base), got {type(part).__name__}.")
        from router.windows import check_windows

        #: {model: most input tokens it accepts}; models not listed have no known limit
        self.context_windows = check_windows(context_windows, self.models)
        if length_unit not in LENGTH_UNITS:
            raise ConfigError(f"length_unit must be one of {LENGTH_UNITS}, got {length_unit!r}.")
        #: unit of the prompt lengths the cost model reads
        self.length_unit = length_unit
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
        cost_model: CostModel | None = None,
        rule: DecisionRule | None = None,
        strip_prefixes: bool = True,
        prompt_stats: float | None = None,
        embeddings: np.ndarray | None = None,
        encode_with: Encoder | None = None,
        metadata: dict[str, Any] | None = None,
        context_windows: dict[str, int | None] | None = None,
        ood_quantile: float | None = None,
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
            context_windows: ``{model: tokens}`` overriding the windows of litellm's price map (None
                removes a model's limit); models known to neither have no limit.
            ood_quantile: fit an out-of-distribution guard (:class:`~router.ood.OODGuard`) at this quantile of
                the training prompts' nearest-neighbour distances; None fits none.
        """
        from router.cost_predictor import CostPredictor

        texts = prompt_texts(list(outcomes.prompts))
        pre = fit_preprocessor(texts, strip_prefixes)
        texts_in = pre.transform(texts) if pre is not None else texts
        lengths = prompt_lengths(texts)
        if embeddings is None:
            embeddings = (encode_with or encoder).encode(texts_in)
        feats = PromptStats(weight=prompt_stats).fit(texts_in) if prompt_stats else None
        if feats is not None:
            embeddings = np.hstack([np.asarray(embeddings, dtype=np.float32), feats.transform(texts_in)])
        predictor.fit(embeddings, outcomes.quality)
        cost_model = cost_model or CostPredictor()
        cost_model.fit(embeddings, lengths, outcomes)
        meta = {"trained_on": outcomes.source, "n_train": outcomes.n_prompts, **(metadata or {})}
        from router.windows import model_windows

        guard = None
        if ood_quantile is not None:
            from router.ood import OODGuard

            guard = OODGuard(quantile=ood_quantile).fit(embeddings, outcomes.quality, outcomes.cost)
        return cls(outcomes.models, encoder, predictor, cost_model, None, rule, pre, meta, feats, guard,
                   context_windows=model_windows(outcomes.models, context_windows))

    def fit_ood_guard(self, outcomes: Outcomes, quantile: float = 0.95, **options: Any) -> Router:
        """Fit (or refit) the out-of-distribution guard on the router's training ``outcomes``; returns self."""
        from router.ood import OODGuard

        emb, _ = self.embed(list(outcomes.prompts))
        mine = outcomes.subset(models=list(self.models))
        self.ood = OODGuard(quantile=quantile, **options).fit(emb, mine.quality, mine.cost)
        return self

    def update_guard(self, prompts: Sequence[Prompt] | None, quality: Any, cost: Any = None, *,
                     chosen: Sequence[str] | None = None, propensity: Any = None,
                     embedded: tuple[np.ndarray, np.ndarray] | None = None) -> Router:
        """Teach the out-of-distribution guard the priors and trust of rated traffic; returns self.

        Full information: ``quality`` (n, m) (and ``cost`` (n, m) USD) of every model, columns in
        :attr:`models` order. Bandit feedback: ``chosen`` (n,) the model names used, ``quality`` (n,)
        and ``cost`` (n,) of those, ``propensity`` (n,) their probabilities. See
        :meth:`router.ood.OODGuard.update`; the service's online learner feeds the same method.
        """
        if self.ood is None:
            raise ConfigError("this router has no out-of-distribution guard to update; fit one with "
                              "Router.fit(..., ood_quantile=0.95) or router.fit_ood_guard(train_outcomes).")
        if embedded is None:
            if prompts is None:
                raise ConfigError("give the rated prompts or their embedded=(embeddings, lengths).")
            embedded = self.embed(prompts)
        q_raw, _, _ = self._raw_predict(*embedded)
        dist = self.ood.distance(embedded[0])  # type: ignore[attr-defined]
        idx = None
        if chosen is not None:
            pos = {m: i for i, m in enumerate(self.models)}
            unknown = sorted({str(m) for m in chosen if m not in pos})
            if unknown:
                raise UnknownModelError(f"chosen model(s) {unknown} are not in this router's pool {list(self.models)}.")
            idx = np.array([pos[m] for m in chosen], dtype=np.int64)
        self.ood.update(q_raw, dist, quality, cost, chosen=idx, propensity=propensity)  # type: ignore[attr-defined]
        return self

    # ------------------------------------------------------------------ prediction
    def embed(self, prompts: Sequence[Prompt], encode_with: Encoder | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(features (n, d), prompt lengths (n,) in :attr:`length_unit`) of the given prompts.

        The features are the encoder's embedding of the preprocessed prompt, followed by the prompt
        statistics when the router has them. ``encode_with`` replaces the router's encoder for this
        call (e.g. a caching wrapper of it).
        """
        return embed_prompts(prompts, self.encoder, preprocessor=self.preprocessor, features=self.features,
                             encode_with=encode_with, length_unit=self.length_unit)

    def predict(
        self, prompts: Sequence[Prompt] | None = None, *, embeddings: np.ndarray | None = None,
        lengths: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predicted (quality, cost, latency), each (n, m), for prompts or precomputed embeddings.

        With an out-of-distribution guard, quality and cost are shrunk toward its priors (see :mod:`router.ood`).
        """
        q, c, lat, _ = self._predict(prompts, embeddings, lengths)
        return q, c, lat

    def _predict(self, prompts: Sequence[Prompt] | None, embeddings: np.ndarray | None,
                 lengths: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
        """(quality, cost, latency, guard) with the guard applied; guard is None or (flags, distance, raw quality)."""
        if embeddings is None:
            if prompts is None:
                raise ConfigError("give prompts or embeddings.")
            embeddings, lengths = self.embed(prompts)
        if lengths is None:
            raise ConfigError("give prompt lengths with precomputed embeddings.")
        q, c, lat = self._raw_predict(embeddings, lengths)
        if self.ood is None:
            return q, c, lat, None
        dist = self.ood.distance(embeddings)  # type: ignore[attr-defined]
        q_guarded, c = self.ood.apply(q, c, dist)  # type: ignore[attr-defined]
        return q_guarded, c, lat, (dist > self.ood.threshold_, dist, q)  # type: ignore[attr-defined]

    def _raw_predict(self, embeddings: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(quality, cost, latency) of the router's own parts, before any guard."""
        if self.latency is None:  # one cost model predicts both (sharing its predicted answer length)
            cost_pred, lat_pred = self.cost.predict_both(embeddings, lengths)
            c = np.asarray(cost_pred)
        else:
            c = np.asarray(self.cost.predict(embeddings, lengths))
            lat_pred = self.latency.predict_latency(embeddings, lengths)
        lat = np.zeros_like(c) if lat_pred is None else np.asarray(lat_pred)
        if isinstance(self.quality, Policy):
            # a policy learns reward = quality - lam0 * cost - mu0 * latency at its training trade-off;
            # adding the predicted cost and latency back gives its quality estimate for any other trade-off
            reward = np.asarray(self.quality.expected_reward(self._policy_context(embeddings)))
            q = np.clip(reward + self.policy_lam * c + self.policy_mu * lat, 0.0, 1.0)
        else:
            q = self.quality.predict(embeddings)
        return q, c, lat

    @staticmethod
    def _policy_context(embeddings: np.ndarray) -> np.ndarray:
        """What the policy reads: :func:`router.context.policy_context` of the embeddings (the replay
        environment's observation features)."""
        return policy_context(embeddings)

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
        q, c, lat, guard = self._predict(None, emb, lengths)
        t2 = time.perf_counter()
        rule = self.rule.with_(lam=lam, mu=mu, max_cost=max_cost, max_latency=max_latency)
        mask, window_notes = self._window_mask(prompts, lengths, self.allowed_mask(allowed))
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
        if explain:
            reasons = [f"{r}; {w}" if w else r for r, w in zip(reasons, window_notes)]
        timings = {"encode": (t1 - t0) * 1e3, "predict": (t2 - t1) * 1e3, "decide": (t3 - t2) * 1e3}
        return Decisions(self.models, chosen, out.probabilities, q, c, lat, out.utility, reasons,
                         rule.lam, rule.mu, timings, *(guard or (None, None, None)))

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
        if embeddings is None and prompts is not None:
            embeddings, lengths = self.embed(prompts)
        q, c, lat = self.predict(prompts, embeddings=embeddings, lengths=lengths)
        window, _ = self._window_mask(prompts, lengths, None)
        cols = np.arange(len(self.models))
        if models is not None:
            self.allowed_mask(models)  # validates the names
            order = {m: i for i, m in enumerate(self.models)}
            cols = np.array([order[m] for m in models])
        q, c, lat = q[:, cols], c[:, cols], lat[:, cols]
        if window is not None:
            window = window[:, cols]
            if not window.any(axis=1).all():
                self._window_mask(prompts, lengths, np.isin(np.arange(len(self.models)), cols))  # raises
        lams = (default_lambda_grid(q - self.rule.mu * lat, c, feasible=window) if lambdas is None
                else np.asarray(lambdas, dtype=np.float64))
        probs = np.stack([self.rule.with_(lam=float(lv)).probabilities(q, c, lat, window).probabilities
                          for lv in lams])
        return lams, probs.argmax(axis=2), probs, q

    def _window_mask(self, prompts: Sequence[Prompt] | None, lengths: np.ndarray | None,
                     allowed: np.ndarray | None) -> tuple[np.ndarray | None, list[str]]:
        """``allowed`` narrowed to the models whose context window each prompt fits (see :mod:`router.windows`)."""
        if not self.context_windows:
            n = 0 if lengths is None else len(lengths)
            return allowed, [""] * n
        from router.windows import window_mask

        if self.length_unit == "tokens" and lengths is not None:
            tokens = np.asarray(lengths)
        elif prompts is not None:
            tokens = prompt_lengths(prompt_texts(prompts), "tokens")
        else:
            raise ConfigError("this router counts prompt length in characters; give the prompts, not only embeddings, "
                              "so their tokens can be checked against the context windows.")
        return window_mask(tokens, self.models, self.context_windows, allowed)

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
        if self.ood is not None:
            save_component(self.ood, d, "ood")
        write_json(d / "router.json", {
            "format_version": FORMAT_VERSION,
            "models": list(self.models),
            "rule": self.rule.to_dict(),
            "operating_point": self.operating_point.to_dict(),
            "has_latency": self.latency is not None,
            "has_preprocessor": self.preprocessor is not None,
            "has_features": self.features is not None,
            "has_ood": self.ood is not None,
            "quality_role": "policy" if isinstance(self.quality, Policy) else "predictor",
            "policy": {"lam": self.policy_lam, "mu": self.policy_mu} if isinstance(self.quality, Policy) else None,
            "length_unit": self.length_unit,
            "context_windows": self.context_windows,
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
        encoder = _load_part(d, "encoder", Encoder)
        quality = _load_part(d, "quality", (QualityPredictor, Policy))
        cost = _load_part(d, "cost", CostModel)
        latency = _load_part(d, "latency", CostModel) if meta.get("has_latency") else None
        pre = _load_part(d, "preprocessor", PrefixStripper) if meta.get("has_preprocessor") else None
        feats = _load_part(d, "features", PromptStats) if meta.get("has_features") else None
        ood = load_component(d, "ood") if meta.get("has_ood") else None
        metadata = dict(meta.get("metadata") or {})
        # routers saved before the policy trade-off had its own field kept it in the metadata
        policy = meta.get("policy") or {"lam": metadata.pop("policy_lam", 0.0), "mu": metadata.pop("policy_mu", 0.0)}
        op = meta.get("operating_point")  # absent in routers saved before operating points existed
        return cls(meta["models"], encoder, quality, cost, latency, DecisionRule(**meta["rule"]), pre, metadata,
                   feats, ood, policy_lam=float(policy["lam"]), policy_mu=float(policy["mu"]),
                   # routers saved before token counts and windows: characters, no limits
                   context_windows=meta.get("context_windows"), length_unit=meta.get("length_unit", "chars"),
                   operating_point=None if op is None else OperatingPoint.from_dict(op))

    def __repr__(self) -> str:
        return (f"Router(models={list(self.models)}, encoder={type(self.encoder).__name__}, "
                f"quality={type(self.quality).__name__}, rule={self.rule})")

    def describe(self) -> str:
        return json.dumps({"models": list(self.models), "rule": self.rule.to_dict(),
                           "operating_point": self.operating_point.to_dict(), **self.metadata}, indent=2)


def _load_part(directory: Path, name: str, kind: Any) -> Any:
    """Load component ``name`` and check it is of the expected type (a file edited by hand may not be)."""
    part = load_component(directory, name)
    if not isinstance(part, kind):
        raise PersistenceError(f"{directory}/{name}.json holds a {type(part).__name__}, which cannot be the "
                               f"router's {name}; was the directory written by Router.save?")
    return part
