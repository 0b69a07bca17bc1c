"""``python -m training fit``: train a router on a data set's training split and save it.

Example::

    python -m training fit --dataset routerbench --predictor knn --encoder minilm --out out/knn
    python -m training fit --dataset demo --out out/best --register demo-router

With no ``--predictor`` it trains the project's best router (see :data:`BEST`). Predictors and
encoders are looked up by name in :mod:`router.registry` (``--predictor`` takes any registered
predictor kind or alias, e.g. ``mf``; ``--encoder`` any encoder name, e.g. ``minilm``), so a predictor
added as one new module in ``router/predictors/`` is trained here with no further edits. The run is tracked in
MLflow (parameters = ``vars(args)``, dataset lineage, git commit, package versions, the held-out
evaluation); ``--register NAME`` also registers the trained router as a new version of ``NAME``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training._cli import arg, check_args, check_out_dir

__all__ = ["Args", "BEST", "build_predictor", "main", "train"]

#: The predictor trained when ``--predictor`` is not given.
BEST = "ensemble"


def _registered(family: str) -> Any:
    """The names ``--predictor`` / ``--encoder`` accept: whatever the component registry holds."""

    def names() -> list[str]:
        from router import registry

        return registry.names(family)

    return names


@dataclass
class Args:
    """Arguments of ``python -m training fit`` (``vars(args)`` is what gets logged; see :mod:`training._cli`)."""

    dataset: str = arg("demo", help="a registered source name (routerbench, demo, ...) or a path to an outcomes "
                       "file (.parquet, .jsonl, .csv or a directory of them)")
    predictor: str = arg(BEST, help="quality predictor: a registered kind or alias", choices=_registered("predictor"))
    encoder: str = arg("static", help="prompt encoder: a registered name", choices=_registered("encoder"))
    prompt_stats: float = arg(0.2, help="weight of the prompt statistics (router.features.PromptStats) appended "
                              "to the embedding; 0 appends none", ge=0)
    out: str = arg("out/router", help="directory to save the router to")
    seed: int = arg(0, help="seed of the split and of every learner")
    test_fraction: float = arg(0.3, help="held-out share when the source has no split of its own", gt=0, lt=1)
    lam: float | None = arg(None, help="lambda saved with the router (quality points per USD); none = calibrated",
                            ge=0)
    spend_per_1000: float | None = arg(None, help="calibrate lambda to spend at most this many USD per 1,000 "
                                       "requests", gt=0)
    strong_share: float | None = arg(None, help="calibrate lambda to send at most this share of requests to the "
                                     "best model", ge=0, le=1)
    keep_quality: float | None = arg(None, help="calibrate lambda to keep at least this share of the best "
                                     "model's quality", gt=0, le=1)
    register: str | None = arg(None, help="register the trained router under this MLflow model name (needs "
                               "--track)")
    track: bool = arg(True, help="log the run to MLflow")
    experiment: str = arg("routing-fit", help="MLflow experiment name")

    def check(self) -> None:
        """Rules that tie several flags together."""
        from router.errors import ConfigError

        given = [f for f in ("spend_per_1000", "strong_share", "keep_quality") if getattr(self, f) is not None]
        if len(given) > 1:
            raise ConfigError("give at most one of --spend-per-1000, --strong-share and --keep-quality.")
        if given and self.lam is not None:
            raise ConfigError(f"--lam and --{given[0].replace('_', '-')} both set lambda; give one of them.")
        if self.register and not self.track:
            raise ConfigError("--register needs --track: the router is registered from its MLflow run.")
        check_out_dir(self.out)


def _training_cache(encoder: Any) -> Any:
    """An on-disk embedding cache for training (``$ROUTING_CACHE_DIR/embeddings``): re-training on the same
    prompts does not re-encode them. The saved router keeps the bare encoder."""
    from router.encoders import EmbeddingCache, HashingEncoder, default_cache_dir

    if isinstance(encoder, HashingEncoder):
        return None
    return EmbeddingCache(encoder, path=str(default_cache_dir() / "embeddings"))


def build_predictor(kind: str, seed: int = 0) -> Any:
    """The quality predictor registered as ``kind`` (a kind or alias), with its defaults and ``seed``."""
    from router import registry
    from router.errors import ConfigError

    if kind not in registry.names("predictor"):
        raise ConfigError(f"unknown --predictor {kind!r}; choose one of {registry.names('predictor')}.")
    return registry.create("predictor", kind, seed=seed)


def train(args: Args, outcomes: Any = None) -> dict[str, Any]:
    """Train, calibrate, evaluate on the held-out split, save; returns a summary dict.

    ``outcomes`` are the already loaded ``args.dataset`` (loaded here when None).
    """
    from router.calibration import QualityTarget, SpendTarget, StrongShareTarget, calibrate, realised
    from router.data.registry import load_source
    from router.data.splits import split_outcomes
    from router.decision import DecisionRule
    from router.errors import ConfigError
    from router.router import Router

    check_args(args)
    t0 = time.perf_counter()
    outcomes = load_source(args.dataset) if outcomes is None else outcomes
    train_o, test_o = split_outcomes(outcomes, test_fraction=args.test_fraction, seed=args.seed)
    from router.encoders import build_encoder

    encoder = build_encoder(args.encoder)
    predictor = build_predictor(args.predictor, args.seed)
    router = Router.fit(train_o, encoder=encoder, predictor=predictor, encode_with=_training_cache(encoder),
                        prompt_stats=args.prompt_stats or None,
                        metadata={"router_kind": args.predictor, "encoder": args.encoder, "dataset": args.dataset,
                                  "split_seed": args.seed})
    lam = args.lam
    calibration: dict[str, Any] | None = None
    q_te, c_te, _ = router.predict(list(test_o.prompts))
    targets = [t for t in (
        None if args.spend_per_1000 is None else SpendTarget(args.spend_per_1000),
        None if args.strong_share is None else StrongShareTarget(args.strong_share),
        None if args.keep_quality is None else QualityTarget(args.keep_quality),
    ) if t is not None]
    if len(targets) > 1:
        raise ConfigError("give at most one of --spend-per-1000, --strong-share and --keep-quality.")
    if targets:
        q_tr, c_tr = _out_of_fold_predictions(router, train_o, args)
        res = calibrate(targets[0], q_tr, c_tr, true_quality=train_o.quality,
                        true_cost=train_o.cost, models=list(router.models))
        lam = res.lam
        calibration = realised(res, q_te, c_te, test_o.quality, test_o.cost, models=list(router.models))
    router.rule = DecisionRule(lam=lam if lam is not None else _knee_lambda(q_te, c_te))
    out = Path(args.out)
    router.save(out)
    summary = _evaluate_heldout(router, test_o)
    summary.update({"train_rows": train_o.n_prompts, "test_rows": test_o.n_prompts, "lam": router.rule.lam,
                    "calibration": calibration, "fit_seconds": round(time.perf_counter() - t0, 2),
                    "out": str(out.resolve())})
    (out / "heldout_metrics.json").write_text(json.dumps(summary, indent=2, default=str))
    return {"summary": summary, "router": router, "train": train_o, "test": test_o}


def _out_of_fold_predictions(router: Any, train_o: Any, args: Args, n_folds: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitted quality predictions (and predicted cost) on the training prompts.

    Lambda is calibrated on these, not on in-sample predictions, which are optimistic about the
    quality a cheap model keeps and so undershoot quality targets on new prompts.
    """
    from router.data.splits import kfold_groups, normalise_prompt
    emb, lengths = router.embed(list(train_o.prompts), encode_with=_training_cache(router.encoder))
    _, c_tr, _ = router.predict(embeddings=emb, lengths=lengths)
    q_oof = np.zeros_like(train_o.quality, dtype=np.float64)
    groups = [normalise_prompt(p) for p in train_o.prompts]
    for fit_idx, val_idx in kfold_groups(groups, n_folds=n_folds, seed=args.seed):
        pred = build_predictor(args.predictor, args.seed).fit(emb[fit_idx], train_o.quality[fit_idx])
        q_oof[val_idx] = pred.predict(emb[val_idx])
    return q_oof, c_tr


def _knee_lambda(q: np.ndarray, c: np.ndarray) -> float:
    """A default lambda: the one that spends half of the way between cheapest and best routing."""
    from router.router import default_lambda_grid

    grid = default_lambda_grid(q, c)
    return float(np.median(grid))


def _evaluate_heldout(router: Any, test_o: Any) -> dict[str, Any]:
    from router.metrics import evaluate_curves

    lams, choices, probs, qhat = router.sweep(list(test_o.prompts))
    result = evaluate_curves(test_o, {"router": (lams, choices)}, n_bootstrap=200, seed=0)
    return {"heldout": result.to_metrics_json()}


def main(argv: list[str] | None = None) -> int:
    from training._cli import parse

    args = parse(Args, argv, "python -m training fit", __doc__)
    from router.errors import RoutingError

    try:
        from router.data.registry import load_source

        outcomes = load_source(args.dataset)  # the data is checked before any model loads or run starts
        if args.track:
            from training import tracking

            name, tags = tracking.run_label("fit", args.dataset, predictor=args.predictor, encoder=args.encoder)
            with tracking.run(args, experiment=args.experiment, run_name=name, tags=tags):
                res = train(args, outcomes)
                tracking.log_lineage(res["train"], role="train", split_seed=args.seed, split="train")
                tracking.log_lineage(res["test"], role="test", split_seed=args.seed, split="test")
                from training.registry import log_router

                log_router(res["router"], res["summary"], register=args.register, test=res["test"])
        else:
            res = train(args, outcomes)
    except RoutingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s = res["summary"]
    print(json.dumps({k: s[k] for k in ("out", "train_rows", "test_rows", "lam", "fit_seconds")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
