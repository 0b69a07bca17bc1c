"""Cost and latency of every candidate, predicted before any call.

:class:`CostPredictor` is what the :class:`~router.router.Router` uses. It picks its method from
what the training data holds:

* **tokens** (input and output token counts known): per-model prices are recovered from the logged
  cost by non-negative least squares on ``cost = in_tokens * p_in + out_tokens * p_out`` (or taken
  from ``prices``), input tokens are the prompt length divided by ``length_per_token_``, learned per
  model as the median ratio of prompt length to logged input tokens, and output tokens come from
  :class:`~router.costs.TokenCostModel` (ridge on the embedding and prompt length). The
  :class:`~router.router.Router` gives prompt lengths as cl100k_base token counts
  (:func:`router.router.prompt_lengths`), so the ratio is a tokenizer-to-tokenizer one (about 1 for
  OpenAI's models, and it absorbs how much more finely another model's tokenizer splits text).
  Predicted USD = input tokens x input price + predicted output tokens x output price. Latency, when
  logged, is ``ttft + output tokens / throughput`` (:class:`~router.costs.LatencyModel`).
* **cost** (only USD per call known, as in RouterBench): a ridge regression of ``log(cost)`` per model
  on ``[embedding, log(prompt length)]``; costs are multiplicative in prompt length and price, so the
  log scale fits them with one linear model.

Example:
    >>> from router.data.synthetic import generate
    >>> o = generate(300, seed=0).outcomes
    >>> x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    >>> from router.router import prompt_lengths
    >>> lengths = prompt_lengths(list(o.prompts))
    >>> cp = CostPredictor().fit(x, lengths, o)
    >>> cp.mode_, cp.predict(x[:2], lengths[:2]).shape
    ('tokens', (2, 5))
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from router._numeric import pad_rows
from router.base import CostModel, check_embeddings
from router.errors import ConfigError

__all__ = ["CostPredictor"]


def _nnls2(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Non-negative least squares for y ~ pa * a + pb * b (two unknowns, closed form over active sets)."""
    best = (0.0, 0.0)
    best_err = float(np.sum(y**2))
    cands = []
    m = np.array([[a @ a, a @ b], [a @ b, b @ b]])
    rhs = np.array([a @ y, b @ y])
    if abs(np.linalg.det(m)) > 1e-30:
        cands.append(tuple(np.linalg.solve(m, rhs)))
    if a @ a > 0:
        cands.append((float(a @ y / (a @ a)), 0.0))
    if b @ b > 0:
        cands.append((0.0, float(b @ y / (b @ b))))
    for pa, pb in cands:
        if pa < 0 or pb < 0:
            continue
        err = float(np.sum((y - pa * a - pb * b) ** 2))
        if err < best_err:
            best, best_err = (float(pa), float(pb)), err
    return best


class CostPredictor(CostModel):
    """Predicted USD (n, m) and seconds (n, m) per candidate; see the module docs.

    Args:
        alpha: ridge penalty of the regressions.
    """

    kind: ClassVar[str] = "cost_predictor"

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha
        if not alpha >= 0:
            raise ConfigError(f"CostPredictor(alpha=...) must be >= 0, got {alpha!r}.")
        self.mode_: str | None = None
        self.coef_: np.ndarray | None = None  # cost mode: (d + 2, m) on log cost
        self.price_in_: np.ndarray | None = None
        self.price_out_: np.ndarray | None = None
        self.length_per_token_: np.ndarray | None = None
        self.log_range_: np.ndarray | None = None
        self._tokens: Any = None
        self._latency: Any = None

    @staticmethod
    def _features(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return np.hstack([x.astype(np.float64), np.log1p(lengths)[:, None], np.ones((len(x), 1))])

    def fit(self, embeddings: np.ndarray, prompt_lengths: np.ndarray, outcomes: Any) -> CostPredictor:
        """Fit on embeddings (n, d), prompt lengths (n,) and the outcomes of those prompts.

        The lengths may be in any unit (the Router gives cl100k_base tokens); predict with the same unit.
        """
        from router.costs import LatencyModel, TokenCostModel

        x = check_embeddings(embeddings)
        lengths = np.asarray(prompt_lengths, dtype=np.float64)
        if lengths.shape != (x.shape[0],):
            raise ConfigError(f"prompt_lengths must be ({x.shape[0]},), got {lengths.shape}.")
        cost = np.asarray(outcomes.cost, dtype=np.float64)
        m = cost.shape[1]
        if outcomes.output_tokens is not None and outcomes.input_tokens is not None:
            tin = np.asarray(outcomes.input_tokens, dtype=np.float64)
            tout = np.asarray(outcomes.output_tokens, dtype=np.float64)
            self.mode_ = "tokens"
            prices = [_nnls2(tin[:, j], tout[:, j], cost[:, j]) for j in range(m)]
            self.price_in_ = np.array([p[0] for p in prices])
            self.price_out_ = np.array([p[1] for p in prices])
            self.length_per_token_ = np.array(
                [float(np.median(lengths / np.maximum(tin[:, j], 1.0))) for j in range(m)]
            )
            self._tokens = TokenCostModel(alpha=self.alpha).fit(x, lengths, output_tokens=tout)
            if outcomes.latency is not None:
                self._latency = LatencyModel().fit(latency=outcomes.latency, output_tokens=tout)
        else:
            self.mode_ = "cost"
            f = self._features(x, lengths)
            y = np.log(np.maximum(cost, 1e-12))
            pen = self.alpha * np.eye(f.shape[1])
            pen[-1, -1] = 0.0
            self.coef_ = np.linalg.solve(f.T @ f + pen + 1e-9 * np.eye(f.shape[1]), f.T @ y)
            self.log_range_ = np.vstack([y.min(axis=0), y.max(axis=0)])  # no extrapolation past training costs
            resid = y - f @ self.coef_
            # log-normal mean correction so predicted USD is unbiased on average
            self.price_in_ = np.exp(0.5 * resid.var(axis=0))
        return self

    def predict_output_tokens(self, embeddings: np.ndarray, prompt_lengths: np.ndarray) -> np.ndarray | None:
        """(n, m) predicted answer tokens, or None in cost mode."""
        if self.mode_ != "tokens":
            return None
        return np.asarray(self._tokens.predict_target(embeddings, prompt_lengths))

    def predict(self, embeddings: np.ndarray, prompt_lengths: np.ndarray) -> np.ndarray:
        """(n, m) predicted USD per call, for prompt lengths (n,) in the unit ``fit`` saw."""
        return self._predict_cost(embeddings, prompt_lengths, None)

    def predict_both(self, embeddings: np.ndarray, prompt_lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(predict(...), predict_latency(...))`` with the answer length predicted once for both."""
        out = self.predict_output_tokens(embeddings, prompt_lengths)
        cost = self._predict_cost(embeddings, prompt_lengths, out)
        if self._latency is None or out is None:
            return cost, None
        return cost, np.asarray(self._latency.predict(out))

    def _predict_cost(self, embeddings: np.ndarray, prompt_lengths: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """:meth:`predict`, given the predicted answer tokens when already known (tokens mode)."""
        self._check_fitted("mode_")
        lengths = np.asarray(prompt_lengths, dtype=np.float64)
        if self.mode_ == "cost":
            assert self.coef_ is not None and self.price_in_ is not None
            x = check_embeddings(embeddings, dim=self.coef_.shape[0] - 2)
            f = self._features(x, lengths)
            log_cost = (pad_rows(f) @ self.coef_)[: f.shape[0]]  # batch-invariant (router._numeric.pad_rows)
            if self.log_range_ is not None:
                log_cost = np.clip(log_cost, self.log_range_[0], self.log_range_[1])
            return np.asarray(np.exp(log_cost) * self.price_in_)
        assert self.price_in_ is not None and self.price_out_ is not None and self.length_per_token_ is not None
        if out is None:
            out = self.predict_output_tokens(embeddings, lengths)
        assert out is not None
        tin = lengths[:, None] / self.length_per_token_[None, :]
        return np.asarray(tin * self.price_in_ + out * self.price_out_)

    def predict_latency(self, embeddings: np.ndarray, prompt_lengths: np.ndarray) -> np.ndarray | None:
        """(n, m) predicted seconds, or None when no latency was logged."""
        if self._latency is None:
            return None
        out = self.predict_output_tokens(embeddings, prompt_lengths)
        return None if out is None else np.asarray(self._latency.predict(out))

    def get_state(self) -> dict[str, np.ndarray]:
        self._check_fitted("mode_")
        state: dict[str, np.ndarray] = {"mode_": np.asarray(self.mode_)}
        for name in ("coef_", "price_in_", "price_out_", "length_per_token_", "log_range_"):
            v = getattr(self, name)
            if v is not None:
                state[name] = np.asarray(v)
        if self._tokens is not None:
            state.update({f"tokens.{k}": v for k, v in self._tokens.get_state().items()})
        if self._latency is not None:
            state.update({f"latency.{k}": v for k, v in self._latency.get_state().items()})
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        from router.costs import LatencyModel, TokenCostModel

        self.mode_ = str(state["mode_"])
        if "chars_per_token_" in state and "length_per_token_" not in state:  # saved before token counts
            state = {**state, "length_per_token_": state["chars_per_token_"]}
        for name in ("coef_", "price_in_", "price_out_", "length_per_token_", "log_range_"):
            if name in state:
                setattr(self, name, np.asarray(state[name], dtype=np.float64))
        tok = {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("tokens.")}
        if tok:
            self._tokens = TokenCostModel(alpha=self.alpha)
            self._tokens.set_state(tok)
        lat = {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("latency.")}
        if lat:
            self._latency = LatencyModel()
            self._latency.set_state(lat)
