"""``python -m training fit``: train a router on a data set's training split and save it.

Example::

    python -m training fit --dataset routerbench --predictor knn --encoder minilm --out out/knn
    python -m training fit --dataset demo --out out/best --register demo-router

With no ``--predictor`` it trains the project's best router (see :data:`BEST`). Predictors and
encoders are looked up by name in :mod:`router.registry` (``--predictor`` takes any registered
predictor kind or alias, e.g. ``mf``; ``--encoder`` any encoder name, e.g. ``minilm``), so a predictor
added as one new module in ``router/predictors/`` is trained here with no further edits. The router's
operating point -- the lambda it decides at by default -- is calibrated from one budget knob
(``--spend-per-1000``, ``--strong-share`` or ``--keep-quality``; see :mod:`router.calibration`), set
with ``--lam``, or else the median critical lambda; it is saved in ``router.json``, measured on the
held-out split and printed beside its target. The run is tracked in
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

__all__ = ["Args", "BEST", "build_predictor", "calibration_predictions", "knob_target", "main", "train"]

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
                                     "model's quality (found on cross-fitted predictions; spend and share on the "
                                     "trained router's own)", gt=0, le=1)
    quality_confidence: float = arg(0.9, help="one-sided confidence with which the calibrated point keeps "
                                    "--keep-quality on the training split (0.5: on the estimate alone)", ge=0.5, lt=1)
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
    from router.calibration import OperatingPoint
    from router.data.registry import load_source
    from router.data.splits import split_outcomes
    from router.router import Router

    check_args(args)
    t0 = time.perf_counter()
    target = knob_target(args)
    outcomes = load_source(args.dataset) if outcomes is None else outcomes
    train_o, test_o = split_outcomes(outcomes, test_fraction=args.test_fraction, seed=args.seed)
    from router.encoders import build_encoder

    encoder = build_encoder(args.encoder)
    predictor = build_predictor(args.predictor, args.seed)
    router = Router.fit(train_o, encoder=encoder, predictor=predictor, encode_with=_training_cache(encoder),
                        prompt_stats=args.prompt_stats or None,
                        metadata={"router_kind": args.predictor, "encoder": args.encoder, "dataset": args.dataset,
                                  "split_seed": args.seed})
    calibration: dict[str, Any] | None = None
    q_te, c_te, _ = router.predict(list(test_o.prompts))
    if target is not None:
        calibration, router.operating_point = _calibrate(router, train_o, test_o, q_te, c_te, target, args)
    elif args.lam is not None:
        router.operating_point = OperatingPoint(lam=args.lam, source="given")
    else:
        router.operating_point = OperatingPoint(lam=_knee_lambda(q_te, c_te), source="default",
                                                reason="median critical lambda of the held-out predictions")
    out = Path(args.out)
    router.save(out)
    summary = _evaluate_heldout(router, test_o, seed=args.seed)
    summary.update({"train_rows": train_o.n_prompts, "test_rows": test_o.n_prompts, "lam": router.rule.lam,
                    "operating_point": router.operating_point.to_dict(), "calibration": calibration,
                    "fit_seconds": round(time.perf_counter() - t0, 2), "out": str(out.resolve())})
    (out / "heldout_metrics.json").write_text(json.dumps(summary, indent=2, default=str))
    return {"summary": summary, "router": router, "train": train_o, "test": test_o}


def knob_target(args: Args) -> Any:
    """The calibration target the arguments ask for (None without a knob); :meth:`Args.check` allows one knob."""
    from router.calibration import QualityTarget, SpendTarget, StrongShareTarget

    if args.spend_per_1000 is not None:
        return SpendTarget(args.spend_per_1000)
    if args.strong_share is not None:
        return StrongShareTarget(args.strong_share)
    if args.keep_quality is not None:
        return QualityTarget(args.keep_quality, confidence=args.quality_confidence)
    return None


def _calibrate(router: Any, train_o: Any, test_o: Any, q_te: np.ndarray, c_te: np.ndarray, target: Any,
               args: Args) -> tuple[dict[str, Any], Any]:
    """Calibrate the operating point on the training split; measure it on the held-out split."""
    from router.calibration import OperatingPoint, calibrate, realised

    models = list(router.models)
    res = calibrate(target, **calibration_predictions(router, train_o, args, target), true_quality=train_o.quality,
                    true_cost=train_o.cost, models=models, rule=router.rule)
    held = realised(res, q_te, c_te, test_o.quality, test_o.cost, models=models, rule=router.rule)
    held.update(n_lambdas=res.n_lambdas, binding=res.binding, strong_model=res.strong_model, **res.extra)
    op = OperatingPoint(lam=res.lam, mu=router.rule.mu, mix_lam=res.mix_lam, mix=res.mix, source="calibrated",
                        target=target, calibrated=res.value, heldout=held["realised"], met=held["met"],
                        reason=held["reason"])
    return held, op


def calibration_predictions(router: Any, train_o: Any, args: Args, target: Any) -> dict[str, Any]:
    """The predictions on the training prompts that ``target`` is calibrated on: keyword arguments of
    :func:`router.calibration.calibrate` (``quality_hat``, ``cost_hat``, and ``deployed`` for quality).

    A spend or share budget depends only on where the router sends prompts, so it is calibrated on the
    trained router's own predictions: their scale is the one it has on new prompts (models fitted on two
    thirds of the data predict less spread-out differences; on RouteLLM's GSM8K the share they calibrate
    for lands 25-30% above target on the held-out split). A quality target also depends on how good the
    choices are, which in-sample predictions overstate: it is found on cross-fitted predictions as a spend
    level, then set on the router's own predictions.
    """
    from router.calibration import QualityTarget

    emb, lengths = router.embed(list(train_o.prompts), encode_with=_training_cache(router.encoder))
    q, c, _ = router.predict(embeddings=emb, lengths=lengths)
    if isinstance(target, QualityTarget):
        q_oof, _ = _out_of_fold_predictions(router, train_o, args, embedded=(emb, c))
        return {"quality_hat": q_oof, "cost_hat": c, "deployed": (q, c)}
    return {"quality_hat": q, "cost_hat": c}


def _out_of_fold_predictions(router: Any, train_o: Any, args: Args, n_folds: int = 3,
                             embedded: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitted quality predictions (and predicted cost) on the training prompts.

    A quality target is found on these, not on in-sample predictions, which are optimistic about the
    quality a cheap model keeps and so undershoot quality targets on new prompts. ``embedded``:
    ``(features, predicted cost)`` of the training prompts when the caller has them.
    """
    from router.data.splits import kfold_groups, normalise_prompt

    if embedded is None:
        emb, lengths = router.embed(list(train_o.prompts), encode_with=_training_cache(router.encoder))
        _, c_tr, _ = router.predict(embeddings=emb, lengths=lengths)
    else:
        emb, c_tr = embedded
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


def _evaluate_heldout(router: Any, test_o: Any, seed: int = 0) -> dict[str, Any]:
    from router.metrics import evaluate_curves
    from training.evaluate import router_curve

    curve = router_curve(router, list(test_o.prompts), list(test_o.models))
    result = evaluate_curves(test_o, {"router": curve}, n_bootstrap=200, seed=seed)
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
    shown = {k: s[k] for k in ("out", "train_rows", "test_rows", "lam", "fit_seconds")}
    op = s["operating_point"]
    shown["operating_point"] = res["router"].operating_point.describe()
    if s["calibration"] is not None:
        cal = s["calibration"]
        shown.update(target={"kind": cal["kind"], "value": cal["target"]}, calibrated=cal["calibrated"],
                     heldout=cal["realised"], met=cal["met"], tolerance=cal["tolerance"], reason=cal["reason"],
                     mix_lam=op["mix_lam"], mix=op["mix"])
    print(json.dumps(shown, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
