"""``python -m training evaluate``: score routers on held-out outcomes and write a report.

Usage::

    python -m training evaluate --dataset routerbench --model runs/router --out reports/rb
    python -m training evaluate --dataset data.parquet --decisions other_router.parquet --out reports/x

Routers come from ``--model`` (a saved :class:`router.router.Router` directory or an MLflow
``models:/NAME@alias`` URI) and/or ``--decisions`` (any router's output: Parquet, JSON lines or CSV
with one row per prompt per setting: ``prompt_id``, ``setting`` (or ``lam``, as ``python -m router
route`` writes it), ``chosen_model``). The same code scores both, on the same prompts. A model is
scored at its saved operating point (:attr:`router.router.Router.operating_point`) -- its default
decisions, marked in the report and in ``metrics.json`` under ``routers.<name>.operating_point`` --
and along a lambda sweep that traces its cost-quality curve (AIQ and savings are properties of that
curve). With ``--log`` (a traffic log
with propensities) the model's settings are also evaluated off-policy.

Outputs in ``--out``: ``report.html`` (self-contained), ``metrics.json`` (schema in
``docs/metrics_schema.md``) and ``summary.md``. Inside an active MLflow run the files are logged
as artifacts and the scalars as ``eval/<router>/<metric>``.
"""

from __future__ import annotations

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
from router.metrics.evaluate import Curve, evaluate_curves
from training._cli import arg, check_input, check_out_dir, note, parse

if TYPE_CHECKING:
    from router.data.schema import Outcomes

__all__ = ["Args", "budget_table", "check_inputs", "load_curve_from_model", "load_decisions", "main", "parse_args",
           "run"]


@dataclass
class Args:
    """Arguments of ``python -m training evaluate`` (``vars(args)`` is what gets logged; see :mod:`training._cli`)."""

    out: str = arg(help="output directory for the report")
    dataset: str | None = arg(None, help="a registered source name or a path to an outcomes file (.parquet, .jsonl, "
                              ".csv); optional with --log (then the report holds the off-policy estimates alone)")
    model: str | None = arg(None, help="a saved router directory or models:/NAME@alias (swept over its settings)")
    decisions: str | None = arg(None, help="a decisions file to score (.parquet, .jsonl or .csv with prompt_id, "
                                "setting (or lam, as `python -m router route` writes it), chosen_model)")
    split: str = arg("test", help="the split to evaluate on ('all' for every row); for sources without their own "
                     "split, the grouped split of --split-seed (the one `training fit` uses)")
    log: str | None = arg(None, help="a traffic log with propensities (e.g. the service's logbook.dir) to evaluate "
                          "the model off-policy at its operating point")
    n_bootstrap: int = arg(500, help="bootstrap replicates for intervals", ge=0)
    seed: int = arg(0, help="bootstrap seed")
    n_thresholds: int = arg(10, help="RouteLLM quantile bins (two-model pools)", ge=1)
    split_seed: int = arg(0, help="seed of the grouped held-out split for sources without their own split")
    track: bool = arg(True, help="log parameters, lineage, metrics and the report to MLflow as a run of its own")
    experiment: str = arg("routing-evaluate", help="MLflow experiment of that run")
    budgets: str | None = arg(None, help="comma-separated spend targets in USD per 1,000 requests: lambda is "
                              "calibrated for each on the training split and the realised spend is reported")

    def check(self) -> None:
        """Rules that tie several flags together; input paths exist."""
        if self.model is None and self.decisions is None:
            raise ConfigError("give --model and/or --decisions: there is nothing to evaluate.")
        if self.budgets is not None:
            parse_budgets(self.budgets)
            if not self.model:
                raise ConfigError("--budgets needs --model: the budget knob calibrates the router's lambda.")
        if self.log and not self.model:
            raise ConfigError("--log needs --model: off-policy estimates need the router's probabilities.")
        if self.dataset is None and not self.log:
            raise ConfigError("give --dataset (held-out outcomes) and/or --log (a traffic log, e.g. the service's "
                              "logbook.dir).")
        if self.dataset is None and self.budgets is not None:
            raise ConfigError("--budgets needs --dataset: the budget knob is calibrated on its training split.")
        check_input(self.model, "--model", "router directory")
        check_input(self.decisions, "--decisions", "decisions file")
        check_input(self.log, "--log", "traffic log")
        check_out_dir(self.out)


def parse_budgets(text: str) -> list[float]:
    """Spend targets from ``--budgets`` ("0.2,0.5,1"): positive numbers, USD per 1,000 requests."""
    try:
        targets = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--budgets must be comma-separated numbers, got {text!r}.") from None
    if not targets or any(not np.isfinite(t) or t <= 0 for t in targets):
        raise ConfigError(f"--budgets must be positive USD per 1,000 requests, got {text!r}.")
    return targets


def parse_args(argv: list[str] | None = None) -> Args:
    """Parse and check command-line arguments into :class:`Args` (a bad value exits with code 2).

    Example:
        >>> import tempfile
        >>> parse_args(["--dataset", "demo", "--out", tempfile.mkdtemp(), "--model", "models:/r@champion"]).split
        'test'
    """
    return parse(Args, argv, "python -m training evaluate", __doc__.split("\n\n")[0])


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
        note(f"{dataset} has no source-given split; using the grouped split with seed {split_seed} "
             f"(as `training fit` does): {test.n_prompts} held-out prompts.")
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

    targets = parse_budgets(str(args.budgets))
    router = _load_router(str(args.model))
    train, _ = load_outcomes(str(args.dataset), "train", args.split_seed)
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


def router_curve(router: Any, prompts: list[Any], models: list[str], operating: Any = None) -> Curve:
    """A router's decisions on ``prompts`` along its lambda sweep plus its operating point (marked).

    The operating point's row is the router's default decision (:meth:`Router.route` without overrides,
    its mixing and exploration drawn as in serving); the other rows are deterministic at each lambda of
    :func:`router.router.default_lambda_grid`. ``models`` restricts the pool (and orders the columns).
    ``operating``: another point to mark instead of the router's saved one (an
    :class:`~router.calibration.OperatingPoint` or a lambda); the router is then routed at its trade-off.
    """
    from router.calibration import OperatingPoint
    from router.router import default_lambda_grid

    own = router.operating_point
    if operating is None:
        op = own
    elif isinstance(operating, OperatingPoint):
        op = operating
    else:
        op = OperatingPoint(lam=float(operating), mu=own.mu, source="given")
    emb, lengths = router.embed(prompts)
    router.allowed_mask(models)  # unknown names: a clear error
    cols = [router.models.index(m) for m in models]
    q, c, _ = router.predict(embeddings=emb, lengths=lengths)
    grid = np.unique(np.append(default_lambda_grid(q[:, cols], c[:, cols]), op.lam))
    lambdas, choices, probs, predicted = router.sweep(embeddings=emb, lengths=lengths, lambdas=grid, models=models)
    k = int(np.searchsorted(lambdas, op.lam))
    if op.same_trade_off(router.rule):
        d = router.route(prompts, embedded=(emb, lengths), allowed=models, explain=False)
    else:  # a point other than the router's own: its rule at that trade-off (mixing included)
        saved = router.rule
        try:
            router.rule = dataclasses.replace(saved, lam=op.lam, mu=op.mu, mix_lam=op.mix_lam, mix=op.mix)
            d = router.route(prompts, embedded=(emb, lengths), allowed=models, explain=False)
        finally:
            router.rule = saved
    probs = np.array(probs, copy=True)
    choices = np.array(choices, copy=True)
    probs[k] = d.probabilities[:, cols]
    choices[k] = [models.index(router.models[j]) for j in d.chosen_index]
    return Curve(settings=lambdas, choices=choices, probs=probs, predicted_quality=predicted,
                 operating_index=k, operating_info=op.to_dict())


def budget_table(curve: Curve, outcomes: Outcomes) -> list[dict[str, float]]:
    """Budget-knob fidelity of a :func:`budget_curve`: per target, the lambda, realised spend and quality.

    Rows hold ``target`` and ``realised`` (USD per 1,000 requests), ``ratio``, ``rel_error``, ``lam`` and
    ``quality`` (the realised mean quality at that lambda).
    """
    from router.metrics.curves import budget_fidelity

    choices = np.asarray(curve.choices)
    rows = np.arange(outcomes.n_prompts)
    spend = 1000.0 * outcomes.cost[rows, choices].mean(axis=1)
    quality = outcomes.quality[rows, choices].mean(axis=1)
    table = budget_fidelity(spend, np.asarray(curve.targets))
    for row, lam, q in zip(table, np.asarray(curve.settings), quality):
        row.update(lam=float(lam), quality=float(q))
    return table


def load_curve_from_model(spec: Any, outcomes: Outcomes, operating: Any = None) -> Curve:
    """Score a router (a loaded one, a directory or ``models:/NAME@alias``) on ``outcomes``: its lambda sweep
    and its operating point, marked (see :func:`router_curve`).

    ``operating``: the operating point to mark, when not the router's own saved one -- an
    :class:`~router.calibration.OperatingPoint`, or a lambda.
    """
    router = _load_router(spec) if isinstance(spec, str) else spec
    return router_curve(router, list(outcomes.prompts), list(outcomes.models), operating)


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
        df = pl.read_csv(p, infer_schema_length=None,
                         schema_overrides={"prompt_id": pl.String, "chosen_model": pl.String})
    elif p.suffix == ".parquet" or p.is_dir():
        df = pl.read_parquet(p / "*.parquet" if p.is_dir() else p)
    else:
        raise SchemaError(f"{p}: decisions must be a .parquet, .jsonl or .csv file.")
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
    """Off-policy estimates of the model at its operating point on a traffic log (rows, overlap diagnostics).

    See :mod:`training.ope_log`: the router's probabilities on the logged prompts are the target
    policy, its predictions the reward model for DM/DR (fitted on other data: no cross-fitting needed).
    """
    from training.ope_log import ope_on_log

    return ope_on_log(log_path, _load_router(model_spec), seed=seed, n_bootstrap=n_bootstrap)


# --------------------------------------------------------------------------- run
def check_inputs(args: Args) -> tuple[Outcomes, str | None]:
    """Load the evaluated outcomes and check the decisions file and traffic log against them.

    Runs before any router loads or MLflow run starts, so bad input fails in seconds and leaves no
    failed run behind. Returns the outcomes and the split used.
    """
    if args.dataset is None:  # a log alone: checked here, evaluated by _run_on_log
        from training.ope_log import feedback_rows

        feedback_rows(str(args.log))
        return None, None  # type: ignore[return-value]
    outcomes, split = load_outcomes(args.dataset, args.split, args.split_seed)
    if args.decisions:
        load_decisions(args.decisions, outcomes)
    if args.log:
        from router.data.logs import read_log

        read_log(args.log)
    return outcomes, split


def _router_name(args: Args) -> str:
    return Path(str(args.model).rstrip("/")).name or str(args.model)


def run(args: Args, inputs: tuple[Outcomes, str | None] | None = None) -> Any:
    """Evaluate and write the report; returns the :class:`EvaluationResult`.

    ``inputs``: what :func:`check_inputs` returned (called here when None).
    """
    from training._cli import check_args
    from training.report import log_to_mlflow, write_report

    check_args(args)
    if args.dataset is None:
        return _run_on_log(args)
    outcomes, split = inputs if inputs is not None else check_inputs(args)
    if "mlflow" in sys.modules and sys.modules["mlflow"].active_run() is not None:
        from training.tracking import log_lineage

        log_lineage(outcomes, role="eval", split_seed=args.split_seed, split=split)
    curves: dict[str, Curve] = {}
    if args.model:  # scored along its sweep and at its saved operating point, which the curve carries
        curves[_router_name(args)] = load_curve_from_model(_load_router(args.model), outcomes)
    if args.decisions:
        curves[Path(args.decisions).stem] = load_decisions(args.decisions, outcomes)
    if not curves:
        raise ConfigError("nothing to evaluate: give --model and/or --decisions.")
    res = evaluate_curves(outcomes, curves, n_bootstrap=args.n_bootstrap, seed=args.seed,
                          n_thresholds=args.n_thresholds)
    budget: dict[str, Any] | None = None
    if args.budgets:
        budget = {"router": _router_name(args), "target": "spend_per_1000",
                  "rows": budget_table(budget_curve(args, outcomes), outcomes)}
    ope_rows: list[dict[str, Any]] = []
    diag: dict[str, Any] = {}
    if args.log:
        ope_rows, diag = ope_from_log(str(args.log), str(args.model), seed=args.seed, n_bootstrap=args.n_bootstrap)
    write_report(res, args.out, dataset=args.dataset, split=split, ope_rows=ope_rows, ope_diagnostics=diag,
                 budget=budget)
    log_to_mlflow(res, args.out)
    return res


def _run_on_log(args: Args) -> dict[str, Any]:
    """Evaluate on a traffic log alone: off-policy estimates, the usual three report files.

    Returns ``{"rows", "diagnostics"}`` (not an :class:`EvaluationResult`: there are no full outcomes).
    """
    from training.ope_log import write_log_report

    rows, diag = ope_from_log(str(args.log), str(args.model), seed=args.seed, n_bootstrap=args.n_bootstrap)
    write_log_report(args.out, rows, diag, log=str(args.log), model=str(args.model))
    if "mlflow" in sys.modules and sys.modules["mlflow"].active_run() is not None:
        import mlflow

        est = {f"ope/{r['metric']}/{r['estimator']}": r["value"] for r in rows
               if r["method"] == "normal" and r["policy"].startswith("candidate")}
        mlflow.log_metrics({k: float(v) for k, v in est.items() if np.isfinite(v)})
        mlflow.log_artifacts(args.out)
    return {"rows": rows, "diagnostics": diag}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m training evaluate``; returns the exit code."""
    args = parse_args(argv)
    try:
        inputs = check_inputs(args)  # before any router loads or MLflow run starts
        if args.track:
            from training import tracking

            name, tags = tracking.run_label("evaluate", args.dataset or "log",
                                            router=_router_name(args) if args.model else Path(str(args.decisions)).stem)
            with tracking.run(args, experiment=args.experiment, run_name=name, tags=tags):
                res = run(args, inputs)
        else:
            res = run(args, inputs)
    except (ConfigError, SchemaError, ValidationError, SourceNotFoundError, UnknownModelError,
            PersistenceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if isinstance(res, dict):
        diag = res["diagnostics"]
        dr = next((r for r in res["rows"] if r["metric"] == "reward" and r["method"] == "normal"
                   and r["estimator"] == "dr" and r["policy"].startswith("candidate")), None)
        print(f"wrote {args.out}/report.html, metrics.json, summary.md (off-policy on {diag['n_rows']} logged "
              f"decisions" + (f"; DR reward {dr['value']:.4f} [{dr['low']:.4f}, {dr['high']:.4f}], "
                              f"ESS {diag.get('ess', float('nan')):.1f})" if dr else ")"))
        return 0
    print(f"wrote {args.out}/report.html, metrics.json, summary.md ({len(res.routers)} router(s), "
          f"{res.n_prompts} prompts); args: {dataclasses.asdict(args)}")
    return 0


