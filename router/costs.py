"""Cost and latency models: predicted USD and seconds per (prompt, model).

* :class:`TokenCostModel` -- predicts output tokens per model (ridge on ``[embedding, log prompt
  length]``, one closed-form head per model) and prices them: ``USD = input_tokens * input_price
  + predicted_output_tokens * output_price``. When the source logs only cost (no token counts),
  it predicts the cost per model directly with the same ridge, clipped at zero (``mode_ ==
  "cost"``), and prices are then ignored.
* :class:`LatencyModel` -- ``latency = ttft + output_tokens / throughput`` per model, learned from
  logs with latency, or from per-model defaults when there are none.

Prices are plain arrays (m,) in USD per token, so this module does not depend on a price table.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from router._numeric import pad_rows
from router.base import Component, check_embeddings
from router.errors import ConfigError

__all__ = ["LatencyModel", "TokenCostModel"]


def _check_lengths(prompt_lengths: Any, n: int) -> np.ndarray:
    lengths = np.asarray(prompt_lengths, dtype=np.float64)
    if lengths.shape != (n,):
        raise ConfigError(f"prompt_lengths must have shape ({n},) like the embeddings, got {lengths.shape}.")
    if not np.isfinite(lengths).all() or (lengths < 0).any():
        raise ConfigError("prompt_lengths must be finite and >= 0 (tokens per prompt).")
    return lengths


def _check_cells(name: str, value: Any, n: int, m: int | None = None) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != n or (m is not None and arr.shape[1] != m):
        want = f"({n}, {m if m is not None else 'n_models'})"
        raise ConfigError(f"{name} must have shape {want}, got {arr.shape}.")
    if (arr[np.isfinite(arr)] < 0).any():
        raise ConfigError(f"{name} must be >= 0 (NaN marks a missing value).")
    return arr


def _prices(name: str, value: Any, m: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (m,) or not np.isfinite(arr).all() or (arr < 0).any():
        raise ConfigError(f"{name} must be {m} finite non-negative USD-per-token prices, got shape {arr.shape}.")
    return arr


class TokenCostModel(Component):
    """Predicted USD per call (n, m) from embeddings (n, d) and prompt lengths (n,).

    Features are ``[embedding, log1p(prompt_length)]`` plus an unpenalised intercept; each model's
    head is a closed-form ridge fitted on the rows where its target is known (NaN = missing).

    Args:
        alpha: ridge penalty.

    Example:
        >>> x = np.array([[1.0, 0.0], [0.0, 1.0]] * 10); lengths = np.full(20, 100.0)
        >>> out_tokens = np.array([[10.0, 100.0], [50.0, 500.0]] * 10)
        >>> cm = TokenCostModel(alpha=1e-3).fit(x, lengths, output_tokens=out_tokens)
        >>> cm.predict(x[:1], lengths[:1], input_prices=[0.0, 0.0], output_prices=[1e-6, 1e-6]).round(6).tolist()
        [[1e-05, 0.0001]]
    """

    kind: ClassVar[str] = "token_cost"

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha
        if not isinstance(alpha, int | float) or not alpha >= 0:
            raise ConfigError(f"TokenCostModel(alpha=...) must be a number >= 0, got {alpha!r}.")
        self.coef_: np.ndarray | None = None
        self.mode_: str | None = None
        self.range_: np.ndarray | None = None  # (2, m) smallest / largest training target per model

    @staticmethod
    def _features(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return np.hstack([x.astype(np.float64), np.log1p(lengths)[:, None], np.ones((len(x), 1))])

    def fit(
        self,
        embeddings: np.ndarray,
        prompt_lengths: np.ndarray,
        output_tokens: np.ndarray | None = None,
        cost: np.ndarray | None = None,
    ) -> TokenCostModel:
        """Fit on embeddings (n, d), prompt lengths (n,) in tokens, and output tokens (n, m) or cost (n, m).

        Output tokens are used when given (``mode_ = "tokens"``), else cost (``mode_ = "cost"``).
        """
        x = check_embeddings(embeddings)
        n = x.shape[0]
        if n == 0:
            raise ConfigError("Cannot fit on an empty set: embeddings has 0 rows.")
        lengths = _check_lengths(prompt_lengths, n)
        if output_tokens is not None:
            y, self.mode_ = _check_cells("output_tokens", output_tokens, n), "tokens"
        elif cost is not None:
            y, self.mode_ = _check_cells("cost", cost, n), "cost"
        else:
            raise ConfigError("TokenCostModel.fit needs output_tokens (n, m) or, failing that, cost (n, m).")
        f = self._features(x, lengths)
        penalty = self.alpha * np.eye(f.shape[1])
        penalty[-1, -1] = 0.0
        coef = np.zeros((f.shape[1], y.shape[1]))
        for j in range(y.shape[1]):
            ok = np.isfinite(y[:, j])
            if not ok.any():
                raise ConfigError(f"Model column {j} has no known {self.mode_} values; drop it or give defaults.")
            fj = f[ok]
            coef[:, j] = np.linalg.solve(fj.T @ fj + penalty + 1e-9 * np.eye(f.shape[1]), fj.T @ y[ok, j])
        self.coef_ = coef
        # a linear model extrapolates on prompts unlike the training ones; keep predictions within
        # the range seen in training (per model)
        self.range_ = np.vstack([np.nanmin(y, axis=0), np.nanmax(y, axis=0)])
        return self

    def predict_target(self, embeddings: np.ndarray, prompt_lengths: np.ndarray) -> np.ndarray:
        """The fitted target (output tokens, or USD in cost mode) per model: (n, m), >= 0."""
        self._check_fitted("coef_")
        assert self.coef_ is not None
        x = check_embeddings(embeddings, dim=self.coef_.shape[0] - 2)
        f = self._features(x, _check_lengths(prompt_lengths, x.shape[0]))
        pred = (pad_rows(f) @ self.coef_)[: f.shape[0]]  # batch-invariant (router._numeric.pad_rows)
        if self.range_ is not None:
            return np.asarray(np.clip(pred, self.range_[0], self.range_[1]))
        return np.asarray(np.maximum(pred, 0.0))

    def predict_output_tokens(self, embeddings: np.ndarray, prompt_lengths: np.ndarray) -> np.ndarray:
        """Predicted output tokens (n, m); only in ``mode_ == "tokens"``."""
        self._check_fitted("coef_")
        if self.mode_ != "tokens":
            raise ConfigError("This cost model was fitted on cost only (no token counts); it cannot predict tokens.")
        return self.predict_target(embeddings, prompt_lengths)

    def predict(
        self,
        embeddings: np.ndarray,
        prompt_lengths: np.ndarray,
        input_prices: Any = None,
        output_prices: Any = None,
        input_tokens: np.ndarray | None = None,
    ) -> np.ndarray:
        """Predicted USD per call, (n, m).

        Args:
            embeddings: (n, d).
            prompt_lengths: (n,) prompt tokens.
            input_prices: (m,) USD per input token (tokens mode only).
            output_prices: (m,) USD per output token (tokens mode only).
            input_tokens: (n, m) per-model prompt tokens; defaults to ``prompt_lengths`` for every model.
        """
        target = self.predict_target(embeddings, prompt_lengths)
        if self.mode_ == "cost":
            return target
        n, m = target.shape
        if input_prices is None or output_prices is None:
            raise ConfigError("Give input_prices and output_prices (m,) in USD per token to price predicted tokens.")
        p_in, p_out = _prices("input_prices", input_prices, m), _prices("output_prices", output_prices, m)
        tokens_in = (
            np.repeat(np.asarray(prompt_lengths, dtype=np.float64)[:, None], m, axis=1)
            if input_tokens is None
            else _check_cells("input_tokens", input_tokens, n, m)
        )
        return np.asarray(tokens_in * p_in + target * p_out)

    def get_state(self) -> dict[str, np.ndarray]:
        self._check_fitted("coef_")
        assert self.coef_ is not None
        state = {"coef_": self.coef_.copy(), "mode_": np.asarray(self.mode_)}
        if self.range_ is not None:
            state["range_"] = self.range_.copy()
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.coef_ = np.asarray(state["coef_"], dtype=np.float64)
        self.mode_ = str(state["mode_"])
        self.range_ = np.asarray(state["range_"], dtype=np.float64) if "range_" in state else None


class LatencyModel(Component):
    """Seconds per call: ``ttft_j + output_tokens / throughput_j`` for each model j.

    Fitted per model from logged latency (n, m) and output tokens (n, m) (NaN = missing): with
    time-to-first-token logs, ``ttft_j`` is their median and throughput the median of
    ``tokens / (latency - ttft)``; without them, an ordinary least-squares line
    ``latency = a + b * tokens`` gives ``ttft = a`` (clipped to [0, median latency]) and
    ``throughput = 1 / b`` (median ``tokens / latency`` if ``b <= 0``). Models with fewer than
    ``min_rows`` logged calls, or a fit without logs, use the defaults.

    Args:
        default_ttft: seconds to first token, one float or a list per model.
        default_throughput: output tokens per second, one float or a list per model.
        min_rows: logged calls needed to learn a model's numbers.

    Example:
        >>> lm = LatencyModel(default_ttft=0.5, default_throughput=50.0).fit(n_models=2)
        >>> lm.predict(np.array([[100.0, 50.0]])).tolist()
        [[2.5, 1.5]]
    """

    kind: ClassVar[str] = "latency"

    def __init__(
        self, default_ttft: float | list[float] = 0.5, default_throughput: float | list[float] = 50.0, min_rows: int = 5
    ) -> None:
        self.default_ttft = default_ttft
        self.default_throughput = default_throughput
        self.min_rows = min_rows
        if np.any(np.asarray(default_ttft, dtype=np.float64) < 0):
            raise ConfigError(f"default_ttft must be >= 0 seconds, got {default_ttft!r}.")
        if np.any(np.asarray(default_throughput, dtype=np.float64) <= 0):
            raise ConfigError(f"default_throughput must be > 0 tokens/s, got {default_throughput!r}.")
        if not isinstance(min_rows, int) or min_rows < 2:
            raise ConfigError(f"min_rows must be an int >= 2, got {min_rows!r}.")
        self.ttft_: np.ndarray | None = None
        self.throughput_: np.ndarray | None = None

    def _defaults(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        out = []
        for name in ("default_ttft", "default_throughput"):
            v = np.asarray(getattr(self, name), dtype=np.float64)
            if v.ndim == 0:
                v = np.full(m, float(v))
            if v.shape != (m,):
                raise ConfigError(f"{name} has {v.size} values but there are {m} models.")
            out.append(v.copy())
        return out[0], out[1]

    def fit(
        self,
        latency: np.ndarray | None = None,
        output_tokens: np.ndarray | None = None,
        ttft: np.ndarray | None = None,
        n_models: int | None = None,
    ) -> LatencyModel:
        """Learn per-model TTFT and throughput from latency (n, m), output tokens (n, m), optional ttft (n, m).

        Without latency logs give ``n_models`` to use the defaults.
        """
        if latency is None:
            if n_models is None:
                raise ConfigError("LatencyModel.fit needs latency and output_tokens arrays, or n_models for defaults.")
            self.ttft_, self.throughput_ = self._defaults(n_models)
            return self
        lat = np.asarray(latency, dtype=np.float64)
        if lat.ndim != 2:
            raise ConfigError(f"latency must be (n, m), got shape {lat.shape}.")
        n, m = lat.shape
        if output_tokens is None:
            raise ConfigError("LatencyModel.fit needs output_tokens (n, m) alongside latency.")
        tok = _check_cells("output_tokens", output_tokens, n, m)
        first = None if ttft is None else _check_cells("ttft", ttft, n, m)
        t0, tps = self._defaults(m)
        for j in range(m):
            ok = np.isfinite(lat[:, j]) & np.isfinite(tok[:, j]) & (lat[:, j] > 0)
            if first is not None:
                ok &= np.isfinite(first[:, j])
            if ok.sum() < self.min_rows:
                continue
            lj, tj = lat[ok, j], tok[ok, j]
            if first is not None:
                t0[j] = float(np.median(first[ok, j]))
                gen = lj - first[ok, j]
                good = gen > 0
                if good.any():
                    tps[j] = float(np.median(tj[good] / gen[good]))
                continue
            b, a = np.polyfit(tj, lj, 1) if np.ptp(tj) > 0 else (0.0, float(np.median(lj)))
            t0[j] = float(np.clip(a, 0.0, np.median(lj)))
            tps[j] = 1.0 / b if b > 0 else float(np.median(tj / lj))
        self.ttft_, self.throughput_ = t0, np.maximum(tps, 1e-6)
        return self

    def predict(self, output_tokens: np.ndarray) -> np.ndarray:
        """Predicted output tokens (n, m) -> seconds (n, m)."""
        self._check_fitted("ttft_")
        assert self.ttft_ is not None and self.throughput_ is not None
        tok = np.asarray(output_tokens, dtype=np.float64)
        if tok.ndim != 2 or tok.shape[1] != self.ttft_.shape[0]:
            raise ConfigError(f"output_tokens must be (n, {self.ttft_.shape[0]}), got shape {tok.shape}.")
        if not np.isfinite(tok).all():
            raise ConfigError("output_tokens contains NaN or infinite values.")
        return np.asarray(self.ttft_ + np.maximum(tok, 0.0) / self.throughput_)

    def get_state(self) -> dict[str, np.ndarray]:
        self._check_fitted("ttft_")
        assert self.ttft_ is not None and self.throughput_ is not None
        return {"ttft_": self.ttft_.copy(), "throughput_": self.throughput_.copy()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.ttft_ = np.asarray(state["ttft_"], dtype=np.float64)
        self.throughput_ = np.asarray(state["throughput_"], dtype=np.float64)
