"""Run a contextual-bandit policy through the replay environment and record its regret.

Usage::

    python -m training bandit --dataset synthetic --policy linucb --steps 5000 --lam 100 --out runs/linucb

The policy sees batches of requests from :class:`envs.vector.ReplayVectorEnv`, made by name from
``--dataset`` (full-information outcomes, so every reward is exact; prompts embedded as a router
embeds them: shared prefixes stripped, then ``--encoder``), picks a model per request, observes the
reward ``quality - lam * cost - mu * latency`` of that model only, and updates online
(:func:`envs.loop.run_policy`). Any policy in the policy registry can be named with ``--policy``;
the flags ``--alpha``, ``--epsilon``, ``--v``, ``--ridge`` and ``--hidden`` go to the policies whose
constructors take them. Written to ``--out``:

* ``metrics.json``: cumulative ``policy_reward``, ``oracle_reward`` (best model per request),
  ``best_fixed_reward`` (best single model in hindsight over the served requests), ``regret``
  (oracle minus policy), ``regret_vs_best_fixed``, the curves of all of them per batch, the
  arguments and model names;
* the trained policy inside a :class:`~router.router.Router` (``router.json`` and its parts; the
  policy is ``quality.json`` + ``quality.npz``), routable with ``python -m router route --model OUT``;
* ``policy/``: the policy alone (``policy.json`` + ``policy.npz``, :func:`router.policies.save_policy`),
  also written for ``--encoder features``, which has no text encoder to route with.

Tracking: ``--track`` logs ``vars(args)`` as parameters and the curves as metrics (namespaced
``bandit/...``) to MLflow, in batches through ``MlflowClient().log_batch`` -- never one call per
step. Pass your own ``tracker`` to :func:`run` to send them elsewhere.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.errors import ConfigError, RoutingError
from training._cli import arg, check_args, check_input, check_out_dir

__all__ = ["Args", "main", "run", "build_parser", "encoder_options", "make_env", "make_policy"]

#: Args fields passed to the policy constructors that take an argument of the same name.
POLICY_HYPERPARAMETERS: tuple[str, ...] = ("alpha", "epsilon", "v", "ridge", "hidden", "context_rank")



def _policies() -> list[str]:
    """The names ``--policy`` accepts: the registered policies."""
    from router import registry

    return registry.names("policy")


def _encoders() -> list[str]:
    """The names ``--encoder`` accepts: the registered encoders, plus the synthetic data's true features."""
    from router import registry

    return [*registry.names("encoder"), "features"]

#: tracker(params, metrics) where metrics are (name, value, step) triples.
Tracker = Callable[[dict[str, Any], list[tuple[str, float, int]]], None]


@dataclass
class Args:
    """Arguments of ``python -m training bandit`` (``vars(args)`` is what gets logged; see :mod:`training._cli`)."""

    dataset: str = arg("synthetic", help="'synthetic', a registered source name, or a path to an outcomes file")
    policy: str = arg("linucb", help="bandit policy: a registered kind", choices=_policies)
    steps: int = arg(5000, help="requests served in total", ge=1)
    batch_size: int = arg(32, help="requests per vector-env step (policy updates per batch)", ge=1)
    lam: float = arg(0.0, help="cost weight, reward units per USD", ge=0)
    mu: float = arg(0.0, help="latency weight, reward units per second", ge=0)
    seed: int = arg(0, help="seed of the data, the environment and the policy")
    out: str = arg("runs/bandit", help="output directory")
    encoder: str = arg("hashing", help="prompt encoder ('features': the synthetic data's true features)",
                       choices=_encoders)
    n_prompts: int = arg(2000, help="prompts generated for --dataset synthetic", ge=1)
    order: str = arg("random", help="order of the replayed requests (sequential: time order, drift in order)",
                     choices=("random", "sequential"))
    alpha: float = arg(1.0, help="UCB width (linucb, neural)", ge=0)
    epsilon: float = arg(0.1, help="exploration rate (egreedy)", ge=0, le=1)
    v: float = arg(0.3, help="posterior scale (thompson)", gt=0)
    ridge: float = arg(1.0, help="ridge penalty of the linear models", gt=0)
    hidden: int = arg(64, help="hidden width (neural)", ge=1)
    context_rank: int | None = arg(None, help="linucb, egreedy, thompson: learn on the top principal directions "
                                   "of the replayed contexts (e.g. 64: several times faster; "
                                   "bench/results/policy_speed.md); none = the full context", ge=1)
    hashing_dim: int | None = arg(None, help="width of the hashing encoder (none: the encoder's own default, as in training fit)", ge=1)
    track: bool = arg(False, help="log to MLflow")
    experiment: str = arg("bandit", help="MLflow experiment name")
    warm_start: str | None = arg(None, help="a saved router (directory or models:/...) whose quality and cost "
                                 "predictions start the policy")
    warm_weight: float = arg(0.2, help="weight of each warm-start pseudo-observation (0: none, with --log only)",
                             ge=0)
    register: str | None = arg(None, help="register the trained router under this name (needs --track)")
    log: str | None = arg(None, help="learn from a traffic log (e.g. the service's logbook.dir) instead of replaying "
                          "--dataset; needs --warm-start, the served router (see training.bandit_log)")

    def check(self) -> None:
        """Rules that tie several flags together; input paths exist."""
        if self.encoder == "features" and self.dataset != "synthetic":
            raise ConfigError("--encoder features is only for --dataset synthetic.")
        if self.register and not self.track:
            raise ConfigError("--register needs --track: the router is registered from its MLflow run.")
        if self.context_rank is not None:
            import inspect

            from router import registry

            if "context_rank" not in inspect.signature(registry.get("policy", self.policy).__init__).parameters:
                raise ConfigError(f"--context-rank applies to linucb, egreedy and thompson; {self.policy} learns "
                                  "its own representation.")
        check_input(self.warm_start, "--warm-start", "router directory")
        check_input(self.log, "--log", "traffic log")
        if self.log and not self.warm_start:
            raise ConfigError("--log needs --warm-start ROUTER: the served router whose encoder and cost model the "
                              "new policy reuses (the one that wrote the log, e.g. models:/NAME@champion).")
        if self.warm_weight == 0 and not self.log:
            raise ConfigError("--warm-weight 0 is for --log only; omit --warm-start to start cold.")
        check_out_dir(self.out)


def build_parser() -> argparse.ArgumentParser:
    """An argparse parser with one ``--flag`` per :class:`Args` field."""
    from training._cli import dataclass_parser

    return dataclass_parser(Args, "python -m training bandit", __doc__.splitlines()[0])


# --------------------------------------------------------------------------- data
def encoder_options(args: Any) -> dict[str, Any]:
    """Constructor arguments of ``args.encoder``: ``--hashing-dim`` for ``hashing`` when given, else none
    (every command builds an encoder by name with the registry's defaults)."""
    from router import registry

    if args.hashing_dim is not None and registry.get("encoder", args.encoder).kind == "hashing":
        return {"dim": int(args.hashing_dim)}
    return {}


def make_env(args: Args) -> Any:
    """The vector replay environment of ``args.dataset``, made by name (see :class:`envs.replay.ReplayEnv`).

    ``--encoder features`` replays the synthetic generator's exact one-hot context instead of text
    embeddings (no router can be saved then: there is no text encoder).
    """
    from envs.vector import make_vector

    common: dict[str, Any] = {"num_envs": args.batch_size, "lam": args.lam, "mu": args.mu, "order": args.order}
    options: dict[str, Any] = {"n_prompts": args.n_prompts, "seed": args.seed} if args.dataset == "synthetic" else {}
    if args.encoder == "features":
        if args.dataset != "synthetic":
            raise ConfigError("--encoder features is only for --dataset synthetic.")
        from router.data import synthetic

        data = synthetic.generate(**options)
        return make_vector(np.asarray(data.features, dtype=np.float32), data.outcomes, **common)
    from router import registry

    if args.encoder not in registry.names("encoder"):
        raise ConfigError(f"unknown --encoder {args.encoder!r}; choose one of {registry.names('encoder')} or features.")
    return make_vector(dataset=args.dataset, dataset_options=options, encoder=args.encoder,
                       encoder_options=encoder_options(args), **common)


def make_policy(args: Args, n_actions: int, dim: int) -> Any:
    """The policy registered as ``args.policy``, with the ``args`` hyperparameters its constructor takes."""
    import inspect

    from router import registry
    from router.policies import build_policy

    if args.policy not in registry.names("policy"):
        raise ConfigError(f"unknown --policy {args.policy!r}; choose one of {registry.names('policy')}.")
    params = inspect.signature(registry.get("policy", args.policy).__init__).parameters
    hp = {k: getattr(args, k) for k in POLICY_HYPERPARAMETERS if k in params}
    return build_policy(args.policy, n_actions, dim, seed=args.seed, **hp)


# --------------------------------------------------------------------------- tracking
def mlflow_tracker(args: Args, outcomes: Any, out: Path) -> Tracker:
    """A tracker that logs to the project's MLflow store (:mod:`training.tracking`).

    One run (nested when another run is active, e.g. inside ``training tune``) with ``vars(args)`` as
    parameters, the git commit and package versions, the dataset lineage, the curves as metrics in
    batches of at most 900 (``log_batch``, never one call per step), ``metrics.json`` as an artifact,
    and -- with ``--register NAME`` -- the trained router registered as a new version of NAME.
    """

    def track(params: dict[str, Any], metrics: list[tuple[str, float, int]]) -> None:
        import mlflow
        from mlflow.entities import Metric

        from training import tracking

        nested = mlflow.active_run() is not None
        name, tags = tracking.run_label("bandit", args.dataset, policy=args.policy, encoder=args.encoder)
        with tracking.run(args, experiment=args.experiment, run_name=name, nested=nested, tags=tags) as r:
            tracking.log_lineage(outcomes, role="train", split_seed=args.seed)
            now = int(time.time() * 1000)
            ms = [Metric(k, float(v), now, int(step)) for k, v, step in metrics if np.isfinite(v)]
            client = mlflow.MlflowClient()
            for i in range(0, len(ms), 900):
                client.log_batch(r.info.run_id, metrics=ms[i : i + 900])
            mlflow.log_artifact(str(out / "metrics.json"))
            if args.register and (out / "router.json").exists():
                from router.router import Router
                from training.registry import log_router

                summary = json.loads((out / "metrics.json").read_text())
                log_router(Router.load(out), {k: v for k, v in summary.items() if k != "curves"},
                           register=args.register)

    return track


# --------------------------------------------------------------------------- the run
def run(args: Args, tracker: Tracker | None = None) -> dict[str, Any]:
    """Run the policy for ``args.steps`` requests; write metrics and the policy; return the metrics."""
    from envs.loop import run_policy
    from router.policies import save_policy

    check_args(args)
    if args.log:
        from training.bandit_log import run_from_log, track_log_run

        learnt = run_from_log(args)
        if args.track or tracker is not None:
            track_log_run(args, learnt, tracker)
        return learnt
    t0 = time.perf_counter()
    envs = make_env(args)
    outcomes = envs.data.outcomes
    m = envs.data.n_models
    # the policies' products are small: one BLAS thread is fastest, and two spinning threads on busy
    # cores slow the loop 10-40x (bench/results/policy_speed.md); the process's setting is restored below
    import scipy.linalg  # noqa: F401 -- its own BLAS (the policies' updates call it) must be loaded to be limited
    from threadpoolctl import threadpool_limits

    dim = envs.data.dim
    blas = threadpool_limits(limits=1, user_api="blas")
    try:
        policy = make_policy(args, m, dim)
        if args.context_rank is not None and hasattr(policy, "fit_basis") and args.context_rank < dim:
            policy.fit_basis(envs.data.features)  # unlabelled: the prompts to be served, no outcomes
        if args.warm_start:
            _warm_start(policy, args, outcomes, envs.data.features)
    except BaseException:
        blas.restore_original_limits()
        raise
    t_loop = time.perf_counter()
    pol_cum = orc_cum = 0.0
    fixed_cum = np.zeros(m)
    counts = np.zeros(m, dtype=np.int64)
    served = 0
    curve: dict[str, list[float]] = {"step": [], "policy_reward": [], "oracle_reward": [], "fixed_rewards": []}
    fixed_hist: list[np.ndarray] = []
    for batch in run_policy(policy, envs, args.steps, seed=args.seed):
        pol_cum += float(batch.reward.sum())
        orc_cum += float(batch.info["oracle_reward"].sum())
        fixed_cum += batch.info["all_rewards"].sum(axis=0)
        np.add.at(counts, batch.action, 1)
        served = batch.served
        curve["step"].append(served)
        curve["policy_reward"].append(pol_cum)
        curve["oracle_reward"].append(orc_cum)
        fixed_hist.append(fixed_cum.copy())
    loop_s = time.perf_counter() - t_loop
    blas.restore_original_limits()
    best = int(np.argmax(fixed_cum))
    fixed_curve = [float(f[best]) for f in fixed_hist]
    names = list(envs.data.model_names)
    metrics: dict[str, Any] = {
        "steps": served,
        "policy_reward": pol_cum,
        "oracle_reward": orc_cum,
        "best_fixed_reward": float(fixed_cum[best]),
        "best_fixed_model": names[best],
        "regret": orc_cum - pol_cum,
        "regret_vs_best_fixed": float(fixed_cum[best]) - pol_cum,
        "mean_policy_reward": pol_cum / served,
        "action_counts": {names[i]: int(counts[i]) for i in range(m)},
        "model_names": names,
        "curves": {
            "step": curve["step"],
            "policy_reward": curve["policy_reward"],
            "oracle_reward": curve["oracle_reward"],
            "best_fixed_reward": fixed_curve,
            "regret": [o - p for o, p in zip(curve["oracle_reward"], curve["policy_reward"])],
        },
        "args": vars(args),
        "wall_s": time.perf_counter() - t0,
        "train_s": loop_s,
        "train_rows_per_s": served / loop_s if loop_s > 0 else None,
        "python": platform.python_version(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    save_policy(policy, out / "policy")
    routable = save_router(args, policy, envs.data, out)
    metrics["router_saved"] = routable
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    if args.track and tracker is None:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            print("mlflow is not installed; --track ignored", file=sys.stderr)
        else:
            tracker = mlflow_tracker(args, outcomes, out)
    if tracker is not None:
        rows: list[tuple[str, float, int]] = []
        c = metrics["curves"]
        for i, s in enumerate(c["step"]):
            for key in ("policy_reward", "oracle_reward", "best_fixed_reward", "regret"):
                rows.append((f"bandit/{key}", float(c[key][i]), int(s)))
        rows.append(("bandit/regret_vs_best_fixed", float(metrics["regret_vs_best_fixed"]), served))
        try:
            tracker(dict(vars(args)), rows)
        except Exception as err:  # tracking must never lose a finished run: metrics.json is written
            print(f"warning: tracking failed ({type(err).__name__}: {err}); results are in {out}", file=sys.stderr)
            metrics["tracking_error"] = f"{type(err).__name__}: {err}"
    return metrics


def _warm_start(policy: Any, args: Args, outcomes: Any, contexts: np.ndarray) -> None:
    """Start the policy from an offline router's predictions on the replayed prompts (no outcomes used);
    ``contexts`` (n, d) are the environment's observation features of those prompts."""
    from router.registry_io import load_router

    offline = load_router(str(args.warm_start))
    if list(offline.models) != list(outcomes.models):
        raise ConfigError(f"--warm-start router routes over {list(offline.models)}, the data has "
                          f"{list(outcomes.models)}; they must match.")
    q_hat, c_hat, _ = offline.predict([str(p) for p in outcomes.prompts])
    policy.warm_start(contexts, q_hat, lam=args.lam, cost=c_hat, weight=args.warm_weight)


def save_router(args: Args, policy: Any, data: Any, out: Path) -> bool:
    """Save the trained policy inside a :class:`~router.router.Router` at ``out``.

    The router gets the environment's encoder and prefix stripper (``data`` is the env's
    :class:`~envs.replay.ReplayData`), so it sees new prompts exactly as the policy saw the replayed
    ones; ``python -m router route --model out`` then routes with it, and serving treats it like any
    other router. Not possible for ``--encoder features`` (the synthetic ground-truth context has
    no text encoder); returns whether a router was saved.
    """
    from router.cost_predictor import CostPredictor
    from router.decision import DecisionRule
    from router.router import Router
    from router.windows import model_windows

    if data.encoder is None:
        return False
    outcomes = data.outcomes
    cost = CostPredictor().fit(data.embeddings, data.prompt_lengths, outcomes)
    router = Router(outcomes.models, data.encoder, policy, cost, rule=DecisionRule(lam=args.lam, mu=args.mu),
                    preprocessor=data.preprocessor, policy_lam=args.lam, policy_mu=args.mu,
                    context_windows=model_windows(outcomes.models),
                    metadata={"router_kind": f"bandit:{args.policy}", "dataset": args.dataset,
                              "trained_on": outcomes.source, "n_train": args.steps, "split_seed": args.seed})
    router.save(out)
    return True


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: parse ``argv``, run, print a one-line summary; 0 on success, 2 on bad input."""
    from training._cli import parse

    args = parse(Args, argv, "python -m training bandit", __doc__.splitlines()[0])
    try:
        metrics = run(args)
    except RoutingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.log:
        reg = metrics.get("registered")
        print(f"{args.policy}: learnt from {metrics['steps']} logged decisions of {args.log} "
              f"(mean logged reward {metrics['mean_logged_reward']:.4f}) -> {args.out}"
              + (f"; registered as version {reg['version']} of {args.register}" if reg else ""))
        return 0
    print(
        f"{args.policy}: steps={metrics['steps']} reward={metrics['policy_reward']:.2f} "
        f"oracle={metrics['oracle_reward']:.2f} best_fixed={metrics['best_fixed_reward']:.2f} "
        f"({metrics['best_fixed_model']}) regret={metrics['regret']:.2f} -> {args.out}"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
