"""``python -m training tune``: tune a bandit policy's hyperparameters and lambda with Optuna.

Example::

    python -m training tune --dataset synthetic --policy linucb --n-trials 20
    # several workers, one study (run the same command in two shells or on two machines):
    python -m training tune --study-name linucb-1 --storage sqlite:////abs/path/optuna.db --n-trials 10

Every trial trains the policy in the replay environment on the training split, then is scored
**off-policy** on validation traffic: a traffic log with propensities (``--log``, or, by default,
the held-out outcomes replayed through a uniform logging policy). The score is the doubly-robust
estimate of the policy's mean reward ``quality - score_lam * cost`` -- ``score_lam`` is the business
trade-off and stays fixed, while the policy's own training ``lam`` is tuned. The interval and the
overlap diagnostics are logged with each trial.

Tracking: the study is one MLflow parent run; each trial is a nested run with its parameters and
``tune/dr_value``, ``tune/dr_low``, ``tune/dr_high`` and ``tune/ess``. Workers share a study through
Optuna's database storage (SQLite here; PostgreSQL, e.g. ``postgresql://user@host/optuna``, in
production): each worker loads the study by name and asks it for new trials, so every trial is
recorded exactly once however many workers run.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training._cli import arg, check_args, check_input, check_out_dir
from training.tracking import PROJECT_ROOT

__all__ = ["Args", "TuneData", "main", "objective", "prepare", "run"]

#: Policies ``--policy`` accepts.
POLICIES = ("linucb", "egreedy", "thompson", "neural")
#: Encoders ``--encoder`` accepts.
ENCODERS = ("hashing", "static", "minilm")


@dataclass
class Args:
    """Arguments of ``python -m training tune`` (``vars(args)`` is what gets logged; see :mod:`training._cli`)."""

    dataset: str = arg("synthetic", help="'synthetic', a registered source name or a path to an outcomes file")
    policy: str = arg("linucb", help="bandit policy to tune", choices=POLICIES)
    n_trials: int = arg(10, help="trials this worker runs", ge=1)
    study_name: str = arg("bandit-tune", help="the Optuna study (shared by workers)")
    storage: str | None = arg(None, help="Optuna storage URL; none = SQLite under mlruns/optuna.db")
    log: str | None = arg(None, help="validation traffic log with propensities (.parquet, .jsonl or .csv); "
                          "none = the held-out outcomes under uniform logging")
    score_lam: float = arg(20.0, help="the fixed business trade-off of the score, quality points per USD", ge=0)
    steps: int = arg(1500, help="training requests per trial", ge=1)
    n_prompts: int = arg(2000, help="prompts generated for --dataset synthetic", ge=10)
    encoder: str = arg("hashing", help="prompt encoder", choices=ENCODERS)
    seed: int = arg(0, help="seed of the data, split, sampler and policies (give each worker of a shared "
                    "study its own seed)")
    track: bool = arg(True, help="log the study and its trials to MLflow")
    experiment: str = arg("routing-tune", help="MLflow experiment name")
    out: str = arg("out/tune", help="where the best trial's settings are written (best.json)")

    def check(self) -> None:
        """Input files exist and the output directory can be made."""
        check_input(self.log, "--log", "traffic log")
        check_out_dir(self.out)


@dataclass
class TuneData:
    """Training outcomes and contexts, plus the validation log as arrays."""

    train: Any
    train_x: np.ndarray
    valid_x: np.ndarray
    valid_action: np.ndarray
    valid_reward: np.ndarray
    valid_propensity: np.ndarray
    q_hat: np.ndarray


def default_storage() -> str:
    path = PROJECT_ROOT / "mlruns" / "optuna.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


def prepare(args: Args) -> TuneData:
    """Load and encode the data, split it, and build the validation log and its reward model."""
    from router.data.reduce import to_traffic_log
    from router.data.registry import load_source
    from router.data.splits import split_outcomes
    from router.ope import CrossFitRewardModel
    from training.bandit import Args as BanditArgs
    from training.bandit import routing_encoder

    if args.dataset == "synthetic":
        from router.data.synthetic import generate

        outcomes = generate(args.n_prompts, seed=args.seed).outcomes
    else:
        outcomes = load_source(args.dataset)
    train, valid = split_outcomes(outcomes, seed=args.seed)
    if args.log:  # read and checked before any encoder loads
        from router.data.logs import read_log
        from router.errors import ValidationError

        log = read_log(args.log, known_models=train.models).filter(_has_feedback())
        if log.height == 0:
            raise ValidationError(f"{args.log}: no row has both a prompt and a quality signal to score trials on.")
        prompts = log["prompt"].to_list()
    else:
        log, _ = to_traffic_log(valid, policy="uniform", seed=args.seed, policy_version="uniform-validation")
        prompts = log["prompt"].to_list()
    encoder = routing_encoder(BanditArgs(encoder=args.encoder))
    train_x = np.asarray(encoder.encode([str(p) for p in train.prompts]), dtype=np.float64)
    valid_x = np.asarray(encoder.encode(prompts), dtype=np.float64)
    pos = {m: i for i, m in enumerate(train.models)}
    action = np.array([pos[m] for m in log["chosen_model"].to_list()])
    reward = log["quality"].to_numpy() - args.score_lam * log["cost"].to_numpy()
    prop = log["propensity"].to_numpy()
    q_hat = CrossFitRewardModel(seed=args.seed).fit_predict(valid_x, action, reward, n_actions=len(train.models))
    return TuneData(train, np.clip(train_x, -1, 1), np.clip(valid_x, -1, 1), action, reward, prop, q_hat)


def _has_feedback() -> Any:
    import polars as pl

    return pl.col("quality").is_not_null() & pl.col("prompt").is_not_null()


def _suggest(trial: Any, policy: str) -> dict[str, Any]:
    params: dict[str, Any] = {"lam": trial.suggest_float("lam", 1.0, 200.0, log=True),
                              "ridge": trial.suggest_float("ridge", 0.1, 10.0, log=True)}
    if policy in ("linucb", "neural"):
        params["alpha"] = trial.suggest_float("alpha", 0.01, 2.0, log=True)
    if policy == "egreedy":
        params["epsilon"] = trial.suggest_float("epsilon", 0.01, 0.3, log=True)
    if policy == "thompson":
        params["v"] = trial.suggest_float("v", 0.01, 1.0, log=True)
    return params


def train_policy(args: Args, params: dict[str, Any], data: TuneData, seed: int) -> Any:
    """Train one policy in the vector replay environment (full-information rewards at ``params['lam']``)."""
    from envs.vector import make_vector
    from training.bandit import Args as BanditArgs
    from training.bandit import make_policy

    batch = 32
    envs = make_vector(data.train_x.astype(np.float32), data.train, num_envs=batch, lam=params["lam"], mu=0.0)
    bargs = BanditArgs(policy=args.policy, seed=seed, **{k: v for k, v in params.items() if k != "lam"})
    policy = make_policy(bargs, data.train.n_models, int(envs.single_observation_space["features"].shape[0]))  # type: ignore[index]
    obs, _ = envs.reset(seed=seed)
    for _ in range(-(-args.steps // batch)):
        probs = policy.select(obs["features"], obs["action_mask"].astype(bool))
        actions = np.asarray(policy.sample(probs), dtype=np.int64)
        ctx = obs["features"]
        obs, reward, _, _, _ = envs.step(actions)
        policy.update(ctx, actions, reward, probs[np.arange(len(actions)), actions])
    return policy


def objective(args: Args, data: TuneData, trial: Any) -> float:
    """Train with the trial's parameters and return the DR estimate of its value on validation logs."""
    import mlflow

    from router.ope import DR, overlap_diagnostics
    from training import tracking

    params = _suggest(trial, args.policy)
    policy = train_policy(args, params, data, seed=args.seed + trial.number)
    pi = policy.select(data.valid_x)
    est = DR().estimate_interval(data.valid_reward, data.valid_action, data.valid_propensity, pi, data.q_hat,
                                 method="normal")
    diag = overlap_diagnostics(data.valid_action, data.valid_propensity, pi)
    trial.set_user_attr("dr_low", est.low)
    trial.set_user_attr("dr_high", est.high)
    trial.set_user_attr("ess", float(diag.ess))
    parent = mlflow.active_run() if args.track else None
    if parent is not None:
        with mlflow.start_run(run_name=f"trial-{trial.number}-{args.policy}", nested=True,
                              experiment_id=parent.info.experiment_id,
                              tags={"command": "tune-trial", "dataset": args.dataset, "policy": args.policy}):
            mlflow.log_params({**params, "trial": trial.number, "policy": args.policy, "seed": args.seed + trial.number})
            tracking.log_metrics({"dr_value": est.value, "dr_low": est.low, "dr_high": est.high,
                                  "ess": float(diag.ess)}, prefix="tune/")
    return float(est.value)


def run(args: Args) -> dict[str, Any]:
    """Run ``n_trials`` trials of the shared study; returns the study's best trial so far."""
    import optuna

    check_args(args)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = args.storage or default_storage()
    data = prepare(args)
    study = optuna.create_study(study_name=args.study_name, storage=storage, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=args.seed), load_if_exists=True)

    def optimize() -> None:
        study.optimize(lambda t: objective(args, data, t), n_trials=args.n_trials)

    if args.track:
        from training import tracking

        name, tags = tracking.run_label("tune", args.dataset, policy=args.policy, encoder=args.encoder)
        with tracking.run(args, experiment=args.experiment, run_name=name,
                          tags={**tags, "optuna.study": args.study_name, "optuna.storage": storage.split("://")[0]}):
            optimize()
            best = study.best_trial
            tracking.log_metrics({"best_dr_value": best.value or 0.0, "n_trials": len(study.trials)}, prefix="tune/")
    else:
        optimize()
        best = study.best_trial
    result = {"study": args.study_name, "storage": storage, "n_trials": len(study.trials),
              "best_trial": best.number, "best_value": best.value, "best_params": best.params,
              "best_interval": [best.user_attrs.get("dr_low"), best.user_attrs.get("dr_high")]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "best.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    from training._cli import parse

    args = parse(Args, argv, "python -m training tune", __doc__)
    from router.errors import RoutingError

    try:
        result = run(args)
    except RoutingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
