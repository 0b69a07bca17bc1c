"""``python -m training evaluate``: score routers on held-out outcomes and write a report.

Usage::

    python -m training evaluate --dataset routerbench --model runs/router --out reports/rb
    python -m training evaluate --dataset data.parquet --decisions other_router.parquet --out reports/x

Routers come from ``--model`` (a saved :class:`router.router.Router` directory or an MLflow
``models:/NAME@alias`` URI) and/or ``--decisions`` (any router's output: Parquet, CSV or JSON lines
with one row per prompt per setting: ``prompt_id``, ``setting`` (or ``lam``, as ``python -m router
route`` writes it), ``chosen_model``). The same code scores both, on the same prompts. A model is
scored at its saved operating point -- its default decisions, marked in the report and in
``metrics.json`` under ``routers.<name>.operating_point`` -- and along a lambda sweep that traces
its cost-quality curve (AIQ and savings are properties of that curve). With ``--log`` (a traffic log
with propensities) the model's settings are also evaluated off-policy.

Outputs in ``--out``: ``report.html`` (self-contained), ``metrics.json`` (schema in
``docs/metrics_schema.md``) and ``summary.md``. Inside an active MLflow run the files are logged
as artifacts and the scalars as ``eval/<router>/<metric>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from router.errors import (
    ConfigError,
    PersistenceError,
    SchemaError,
    SourceNotFoundError,
    UnknownModelError,
    ValidationError,
)
from router.metrics.evaluate import Curve, EvaluationResult, evaluate_curves

if TYPE_CHECKING:
    from router.data.schema import Outcomes

__all__ = ["Args", "load_curve_from_model", "load_decisions", "main", "parse_args", "run"]


@dataclass
class Args:
    """Arguments of ``python -m training evaluate`` (``vars(args)`` is what gets logged).

    Attributes:
        dataset: a registered source name or a path (see ``router.data.registry.load_source``).
        out: output directory for the report.
        model: a saved router directory or ``models:/NAME@alias``; optional when ``decisions`` is given.
        decisions: a Parquet/CSV/JSONL decisions file to score (prompt_id, setting or lam, chosen_model).
        split: the split to evaluate on ("" or "all" for every row); for sources without their own split,
            the grouped split of ``split_seed`` (the one ``training fit`` uses).
        log: a traffic log (with propensities) to evaluate the model's settings off-policy.
        n_bootstrap: bootstrap replicates for intervals.
        seed: bootstrap seed.
        n_thresholds: RouteLLM quantile bins (two-model pools).
        split_seed: seed of the grouped split for sources without their own split.
        track: log the evaluation to MLflow as its own run (inside an active run it always logs there).
        experiment: MLflow experiment of that run.
        budgets: comma-separated spend targets (USD per 1,000 requests): lambda is calibrated for each on
            the training split and the realised spend on the evaluated prompts is reported (budget-knob fidelity).
    """

    dataset: str
    out: str
    model: str | None = None
    decisions: str | None = None
    split: str = "test"
    log: str | None = None
    n_bootstrap: int = 500
    seed: int = 0
    n_thresholds: int = 10
    split_seed: int = 0
    track: bool = True
    experiment: str = "routing-evaluate"
    budgets: str | None = None


def parse_args(argv: list[str] | None = None) -> Args:
    """Parse command-line arguments into :class:`Args`.

    Example:
        >>> parse_args(["--dataset", "demo", "--out", "/tmp/r", "--decisions", "d.parquet"]).split
        'test'
    """
    p = argparse.ArgumentParser(prog="python -m training evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="source name or path")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--model", default=None, help="router directory or models:/NAME@alias")
    p.add_argument("--decisions", default=None,
                   help="decisions file (Parquet, CSV or JSONL; e.g. what `python -m router route` wrote) to score")
    p.add_argument("--split", default="test", help="split to evaluate ('all' for every row)")
    p.add_argument("--log", default=None, help="traffic log with propensities for off-policy estimates")
    p.add_argument("--n-bootstrap", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-thresholds", type=int, default=10)
    p.add_argument("--split-seed", type=int, default=0,
                   help="seed of the grouped held-out split for sources without their own split")
    p.add_argument("--track", action=argparse.BooleanOptionalAction, default=True,
                   help="log parameters, lineage, metrics and the report to MLflow")
    p.add_argument("--experiment", default="routing-evaluate")
    p.add_argument("--budgets", default=None,
                   help="comma-separated spend targets in USD per 1,000 requests to check the budget knob")
    ns = p.parse_args(argv)
    if ns.model is None and ns.decisions is None:
        p.error("give --model and/or --decisions: there is nothing to evaluate.")
    return Args(**vars(ns))


# --------------------------------------------------------------------------- inputs
def load_outcomes(dataset: str, split: str | None, split_seed: int = 0) -> tuple[Outcomes, str | None]:
    """The evaluation outcomes and the split actually used (None when the source has no splits)."""
    from router.data.registry import load_source

    outcomes = load_source(dataset)
    if not split or split == "all":
        return outcomes, None
    if outcomes.split is None:
        if split not in ("train", "test"):
            raise ConfigError(f"{dataset} has no source-given splits; use --split test, train or all.")
        from router.data.splits import split_outcomes

        train, test = split_outcomes(outcomes, seed=split_seed)
        print(f"note: {dataset} has no source-given split; using the grouped split with seed {split_seed} "
              f"(as `training fit` does): {test.n_prompts} held-out prompts.", file=sys.stderr)
        return (test if split == "test" else train), f"{split} (grouped, seed {split_seed})"
    return outcomes.where_split(split), split


def _load_router(spec: str) -> Any:
    if spec.startswith("models:/") or spec.startswith("runs:/"):
        from training.registry import download_router

        return download_router(spec)
    if not Path(spec).exists():
        raise SourceNotFoundError(f"{spec}: no such router directory; train one with `python -m training fit`.")
    from router.router import Router

    return Router.load(spec)


def budget_curve(args: Args, outcomes: Outcomes) -> Curve:
    """Calibrate lambda on the training split for each spend target; route the evaluated prompts with it."""
    from router.calibration import SpendTarget, calibrate

    try:
        targets = [float(x) for x in str(args.budgets).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--budgets must be comma-separated numbers, got {args.budgets!r}.") from None
    if not targets or any(t <= 0 for t in targets):
        raise ConfigError(f"--budgets must be positive USD per 1,000 requests, got {args.budgets!r}.")
    router = _load_router(str(args.model))
    train, _ = load_outcomes(args.dataset, "train", args.split_seed)
    train = train.subset(models=list(outcomes.models))
    q_tr, c_tr, _ = router.predict(list(train.prompts))
    cols = [router.models.index(m) for m in outcomes.models]
    q_tr, c_tr = q_tr[:, cols], c_tr[:, cols]
    results = [calibrate(SpendTarget(t), q_tr, c_tr, true_quality=train.quality, true_cost=train.cost)
               for t in targets]
    q, c, _ = router.predict(list(outcomes.prompts))
    q, c = q[:, cols], c[:, cols]
    probs = np.stack([r.rule().probabilities(q, c).probabilities for r in results])
    choices = np.stack([r.rule().sample(p, list(outcomes.prompt_ids)) for r, p in zip(results, probs, strict=True)])
    return Curve(settings=np.asarray([r.lam for r in results]), choices=choices, probs=probs,
                 targets=np.asarray(targets))


def router_curve(router: Any, prompts: list[Any], models: list[str]) -> Curve:
    """A router's decisions on ``prompts`` along its lambda sweep plus its operating point (marked).

    The operating point's row is the router's default decision (:meth:`Router.route` without overrides,
    its mixing and exploration drawn as in serving); the other rows are deterministic at each lambda of
    :func:`router.router.default_lambda_grid`. ``models`` restricts the pool (and orders the columns).
    """
    from router.router import default_lambda_grid

    emb, lengths = router.embed(prompts)
    router.allowed_mask(models)  # unknown names: a clear error
    cols = [router.models.index(m) for m in models]
    q, c, _ = router.predict(embeddings=emb, lengths=lengths)
    op = router.operating_point
    grid = np.unique(np.append(default_lambda_grid(q[:, cols], c[:, cols]), op.lam))
    lambdas, choices, probs, predicted = router.sweep(embeddings=emb, lengths=lengths, lambdas=grid, models=models)
    k = int(np.searchsorted(lambdas, op.lam))
    d = router.route(prompts, embedded=(emb, lengths), allowed=models, explain=False)
    probs = np.array(probs, copy=True)
    choices = np.array(choices, copy=True)
    probs[k] = d.probabilities[:, cols]
    choices[k] = [models.index(router.models[j]) for j in d.chosen_index]
    return Curve(settings=lambdas, choices=choices, probs=probs, predicted_quality=predicted,
                 operating_index=k, operating_info=op.to_dict())


def load_curve_from_model(spec: str, outcomes: Outcomes) -> Curve:
    """Load a router (directory or ``models:/NAME@alias``) and score it on ``outcomes``: its sweep and its
    operating point (see :func:`router_curve`)."""
    router = _load_router(spec)
    return router_curve(router, list(outcomes.prompts), list(outcomes.models))


def load_decisions(path: str | Path, outcomes: Outcomes) -> Curve:
    """Read a decisions file as a :class:`Curve`.

    The file (Parquet, CSV or JSONL) has ``prompt_id``, ``chosen_model`` and a numeric setting: a
    ``setting`` column, else ``lam`` (what ``python -m router route`` writes). Other columns are
    ignored. Every (prompt, setting) pair of the evaluated prompts must be present exactly once; extra
    prompt ids (e.g. other splits) are ignored only when none of the evaluated prompts is missing.

    Example:
        >>> import polars as pl, tempfile
        >>> from router.data.schema import Outcomes
        >>> o = Outcomes(prompt_ids=["a", "b"], prompts=["x", "y"], models=["s", "b"],
        ...              quality=[[0, 1], [1, 1]], cost=[[1.0, 2.0], [1.0, 2.0]])
        >>> f = tempfile.mkdtemp() + "/d.parquet"
        >>> pl.DataFrame({"prompt_id": ["a", "b", "a", "b"], "setting": [0.0, 0.0, 1.0, 1.0],
        ...               "chosen_model": ["b", "s", "s", "s"]}).write_parquet(f)
        >>> load_decisions(f, o).choices.tolist()
        [[1, 0], [0, 0]]
    """
    import polars as pl

    p = Path(path)
    if not p.exists():
        raise SourceNotFoundError(f"{p}: no such decisions file.")
    if p.suffix in (".jsonl", ".ndjson", ".json"):
        df = pl.read_ndjson(p)
    elif p.suffix == ".csv":
        df = pl.read_csv(p, infer_schema_length=None)
    elif p.suffix == ".parquet" or p.is_dir():
        df = pl.read_parquet(p / "*.parquet" if p.is_dir() else p)
    else:
        raise SchemaError(f"{p}: decisions must be a .parquet, .csv or .jsonl file.")
    setting = "setting" if "setting" in df.columns else "lam"
    missing = sorted({"prompt_id", setting, "chosen_model"} - set(df.columns))
    if missing:
        raise SchemaError(f"{p}: decisions file lacks column(s) {missing}; "
                          "expected prompt_id, setting (or lam), chosen_model.")
    values = df[setting].cast(pl.Float64, strict=False)
    invalid = (values.is_null() | values.is_nan()).to_numpy()
    if invalid.any():
        i = int(np.flatnonzero(invalid)[0])
        raise SchemaError(f"{p}: row {i + 1}: {setting!r} must be a number (the lambda of the decision), "
                          f"got {df[setting][i]!r}; write the setting as a number, e.g. 0.5, not 'lam=0.5'.")
    df = df.select(pl.col("prompt_id").cast(pl.String), values.alias("setting"),
                   pl.col("chosen_model").cast(pl.String))
    known_models = set(outcomes.models)
    bad_models = sorted(set(df["chosen_model"].unique().to_list()) - known_models)
    if bad_models:
        raise UnknownModelError(f"{p}: chosen_model values {bad_models[:10]} are not in the data's models "
                                f"{list(outcomes.models)}.")
    ids = list(outcomes.prompt_ids)
    pos = {pid: i for i, pid in enumerate(ids)}
    file_ids = set(df["prompt_id"].unique().to_list())
    unknown = sorted(file_ids - set(ids))
    if unknown and not (set(ids) <= file_ids):
        raise ValidationError(f"{p}: {len(unknown)} prompt_id(s) not in the evaluated data, e.g. {unknown[:5]}.")
    df = df.filter(pl.col("prompt_id").is_in(ids))
    dup = df.group_by(["prompt_id", "setting"]).len().filter(pl.col("len") > 1)
    if dup.height:
        r = dup.row(0, named=True)
        raise ValidationError(f"{p}: prompt {r['prompt_id']!r} has {r['len']} rows for setting {r['setting']}; "
                              "give one decision per (prompt, setting).")
    settings = np.sort(np.asarray(df["setting"].unique().to_list(), dtype=np.float64))
    n, S = len(ids), len(settings)
    if df.height != n * S:
        have = set(zip(df["prompt_id"].to_list(), df["setting"].to_list()))
        gap = next((pid, s) for s in settings for pid in ids if (pid, s) not in have)
        raise ValidationError(f"{p}: {n * S - df.height} (prompt, setting) pair(s) missing, e.g. prompt "
                              f"{gap[0]!r} at setting {gap[1]}; every setting needs a decision for every prompt.")
    mi = {m: j for j, m in enumerate(outcomes.models)}
    si = {float(s): k for k, s in enumerate(settings)}
    choices = np.empty((S, n), dtype=np.int64)
    choices[[si[s] for s in df["setting"].to_list()], [pos[x] for x in df["prompt_id"].to_list()]] = [
        mi[m] for m in df["chosen_model"].to_list()
    ]
    return Curve(settings=settings, choices=choices)


def ope_from_log(log_path: str, model_spec: str, seed: int = 0,
                 n_bootstrap: int = 500) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Off-policy estimates of the model on a traffic log (rows, diagnostics of its operating point).

    The target policies are the router at its saved operating point (its default decisions, with their
    probabilities) and at the cheapest, middle and dearest lambdas of its sweep. The router's predicted
    quality is the reward model for DM/DR (it was fitted on other data, so no cross-fitting is needed).
    """
    from router.data.logs import read_log
    from router.ope import evaluate_policy

    log = read_log(log_path)
    log = log.filter(log["quality"].is_not_null() & log["prompt"].is_not_null())
    if log.height == 0:
        raise ValidationError(f"{log_path}: no rows with both a prompt and a quality signal to evaluate on.")
    router = _load_router(model_spec)
    models = sorted(set(log["chosen_model"].to_list()))
    curve = router_curve(router, log["prompt"].to_list(), models)
    lambdas, probs, predicted = curve.settings, curve.probs, curve.predicted_quality
    a = np.array([models.index(m) for m in log["chosen_model"].to_list()])
    rows: list[dict[str, Any]] = []
    diag: dict[str, Any] = {}
    op = int(curve.operating_index)
    picks = [op] + [s for s in sorted({0, len(lambdas) // 2, len(lambdas) - 1}) if s != op]
    for s in picks:
        res = evaluate_policy(log["quality"].to_numpy(), a, log["propensity"].to_numpy(), np.asarray(probs)[s],
                              q_hat=predicted, seed=seed, n_bootstrap=n_bootstrap)
        name = f"lambda={float(lambdas[s]):g}" + (" (operating point)" if s == op else "")
        rows += [{"policy": name, **r} for r in res.rows()]
        if s == op:
            diag = res.diagnostics.as_dict()
    return rows, diag


# --------------------------------------------------------------------------- run
def run(args: Args) -> EvaluationResult:
    """Evaluate and write the report; returns the :class:`EvaluationResult`."""
    from training.report import log_to_mlflow, write_report

    outcomes, split = load_outcomes(args.dataset, args.split, args.split_seed)
    if "mlflow" in sys.modules and sys.modules["mlflow"].active_run() is not None:
        from training.tracking import log_lineage

        log_lineage(outcomes, role="eval", split_seed=args.split_seed, split=split)
    curves: dict[str, Curve] = {}
    if args.model:
        curves[Path(args.model.rstrip("/")).name or args.model] = load_curve_from_model(args.model, outcomes)
    if args.decisions:
        curves[Path(args.decisions).stem] = load_decisions(args.decisions, outcomes)
    if args.budgets:
        if not args.model:
            raise ConfigError("--budgets needs --model: the budget knob calibrates the router's lambda.")
        name = Path(args.model.rstrip("/")).name or args.model
        curves[f"{name} (budget knob)"] = budget_curve(args, outcomes)
    if not curves:
        raise ConfigError("nothing to evaluate: give --model and/or --decisions.")
    res = evaluate_curves(outcomes, curves, n_bootstrap=args.n_bootstrap, seed=args.seed,
                          n_thresholds=args.n_thresholds)
    ope_rows: list[dict[str, Any]] = []
    diag: dict[str, Any] = {}
    if args.log:
        if not args.model:
            raise ConfigError("--log needs --model: off-policy estimates need the router's probabilities.")
        ope_rows, diag = ope_from_log(args.log, args.model, seed=args.seed, n_bootstrap=args.n_bootstrap)
    write_report(res, args.out, dataset=args.dataset, split=split, ope_rows=ope_rows, ope_diagnostics=diag)
    log_to_mlflow(res, args.out)
    return res


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m training evaluate``; returns the exit code."""
    args = parse_args(argv)
    try:
        if args.track:
            from training import tracking

            with tracking.run(args, experiment=args.experiment, run_name=f"evaluate-{args.dataset}"):
                res = run(args)
        else:
            res = run(args)
    except (ConfigError, SchemaError, ValidationError, SourceNotFoundError, UnknownModelError,
            PersistenceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}/report.html, metrics.json, summary.md ({len(res.routers)} router(s), "
          f"{res.n_prompts} prompts); args: {dataclasses.asdict(args)}")
    return 0
