"""``python -m training tune``: tune a bandit policy's hyperparameters and lambda with Optuna.

Example::

    python -m training tune --dataset synthetic --policy linucb --n-trials 20
    # several workers, one study (run the same command in two shells or on two machines):
    python -m training tune --study-name linucb-1 --storage sqlite:////abs/path/optuna.db --n-trials 10

Every trial trains the policy in the replay environment on the training split -- on the very
contexts ``training bandit`` trains on (prompts prefix-stripped and embedded as a router embeds them,
:mod:`router.context`; the one run loop :func:`envs.loop.run_policy`) -- then is scored
**off-policy** on validation traffic: a traffic log with propensities (``--log``, or, by default,
the held-out outcomes replayed through a uniform logging policy). The score is the doubly-robust
estimate of the policy's mean reward ``quality - score_lam * cost`` -- ``score_lam`` is the business
trade-off and stays fixed, while the policy's own training ``lam`` is tuned. The interval and the
overlap diagnostics are logged with each trial. What a trial samples is the policy's own
``search_space`` in the policy registry (plus the training ``lam``), so a policy added as one module
in ``router/policies/`` is tuned with no edits here.

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



def _policies() -> list[str]:
    """The names ``--policy`` accepts: the registered policies."""
    from router import registry

    return registry.names("policy")


def _encoders() -> list[str]:
    """The names ``--encoder`` accepts: the registered encoders."""
    from router import registry

    return registry.names("encoder")


@dataclass
class Args:
    """Arguments of ``python -m training tune`` (``vars(args)`` is what gets logged; see :mod:`training._cli`)."""

    dataset: str = arg("synthetic", help="'synthetic', a registered source name or a path to an outcomes file")
    policy: str = arg("linucb", help="bandit policy to tune", choices=_policies)
    n_trials: int = arg(10, help="trials this worker runs", ge=1)
    study_name: str = arg("bandit-tune", help="the Optuna study (shared by workers)")
    storage: str | None = arg(None, help="Optuna storage URL; none = SQLite under mlruns/optuna.db")
    log: str | None = arg(None, help="validation traffic log with propensities (.parquet, .jsonl or .csv); "
                          "none = the held-out outcomes under uniform logging")
    score_lam: float = arg(20.0, help="the fixed business trade-off of the score, quality points per USD", ge=0)
    steps: int = arg(1500, help="training requests per trial", ge=1)
    n_prompts: int = arg(2000, help="prompts generated for --dataset synthetic", ge=10)
    encoder: str = arg("hashing", help="prompt encoder", choices=_encoders)
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
    """Training outcomes and their embeddings, plus the validation log as arrays.

    ``train_x`` are the encoder's embeddings of the (prefix-stripped) training prompts -- the replay
    environment turns them into policy contexts; ``valid_x`` are the validation prompts' policy
    contexts (:func:`router.context.policy_context`), what the trained policy is scored on.
    """

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
    """Load and encode the data, split it, and build the validation log and its reward model.

    The training prompts are embedded by the replay environment made from them (prefix stripper learnt
    on them, then the encoder); the validation prompts go through that same stripper and encoder.
    """
    from envs.sources import read_traffic_log
    from envs.vector import make_vector
    from router.context import embed_prompts, policy_context
    from router.data.reduce import to_traffic_log
    from router.data.registry import load_source
    from router.data.splits import split_outcomes
    from router.ope import CrossFitRewardModel

    options = {"n_prompts": args.n_prompts, "seed": args.seed} if args.dataset == "synthetic" else {}
    outcomes = load_source(args.dataset, **options)
    train, valid = split_outcomes(outcomes, seed=args.seed)
    env = make_vector(outcomes=train, encoder=args.encoder, num_envs=1)
    if args.log:
        log = read_traffic_log(args.log, model_names=train.models)
    else:
        frame, _ = to_traffic_log(valid, policy="uniform", seed=args.seed, policy_version="uniform-validation")
        log = read_traffic_log(frame, model_names=train.models)
    fb = log["logged"]
    has = np.isfinite(fb["quality"])  # feedback arrived
    if not has.any():
        from router.errors import ValidationError

        raise ValidationError(f"{args.log}: no row has both a prompt and a quality signal to score trials on.")
    prompts = [p for p, h in zip(log["prompts"], has, strict=True) if h]
    assert env.data.encoder is not None  # the env embedded the training prompts itself
    valid_emb, _ = embed_prompts(prompts, env.data.encoder, preprocessor=env.data.preprocessor)
    valid_x = policy_context(valid_emb).astype(np.float64)
    action = fb["action"][has]
    reward = fb["quality"][has] - args.score_lam * fb["cost"][has]
    prop = fb["propensity"][has]
    q_hat = CrossFitRewardModel(seed=args.seed).fit_predict(valid_x, action, reward, n_actions=len(train.models))
    return TuneData(train, env.data.embeddings, valid_x, action, reward, prop, q_hat)


def _suggest(trial: Any, policy: str) -> dict[str, Any]:
    """The training ``lam`` and the policy's registered search space, sampled by the trial."""
    from router import registry

    params: dict[str, Any] = {"lam": trial.suggest_float("lam", 1.0, 200.0, log=True)}
    for name, dist in registry.search_space("policy", policy).items():
        params[name] = dist.suggest(trial, name)
    return params


def train_policy(args: Args, params: dict[str, Any], data: TuneData, seed: int) -> Any:
    """Train one policy in the vector replay environment (full-information rewards at ``params['lam']``)."""
    from envs.loop import run_policy
    from envs.vector import make_vector
    from router.policies import build_policy

    envs = make_vector(data.train_x, data.train, num_envs=32, lam=params["lam"], mu=0.0)
    policy = build_policy(args.policy, data.train.n_models, envs.data.dim, seed=seed,
                          **{k: v for k, v in params.items() if k != "lam"})
    for _ in run_policy(policy, envs, args.steps, seed=seed):
        pass
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
