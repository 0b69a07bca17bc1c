"""Run a contextual-bandit policy through the replay environment and record its regret.

Usage::

    python -m training bandit --dataset synthetic --policy linucb --steps 5000 --lam 100 --out runs/linucb

The policy sees batches of requests from :class:`envs.vector.ReplayVectorEnv` (full-information
outcomes, so every reward is exact), picks a model per request, observes the reward
``quality - lam * cost - mu * latency`` of that model only, and updates online. Written to ``--out``:

* ``metrics.json``: cumulative ``policy_reward``, ``oracle_reward`` (best model per request),
  ``best_fixed_reward`` (best single model in hindsight over the served requests), ``regret``
  (oracle minus policy), ``regret_vs_best_fixed``, the curves of all of them per batch, the
  arguments and model names;
* ``policy/``: ``config.json`` + ``state.npz`` of the trained policy (see
  :func:`router.policies.save_policy`), with the encoder and reward weights needed to route.

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

__all__ = ["Args", "main", "run", "build_parser", "load_data", "make_policy"]

#: Policies ``--policy`` accepts.
POLICIES = ("linucb", "egreedy", "thompson", "neural")
#: Encoders ``--encoder`` accepts.
ENCODERS = ("hashing", "static", "minilm", "features")

#: tracker(params, metrics) where metrics are (name, value, step) triples.
Tracker = Callable[[dict[str, Any], list[tuple[str, float, int]]], None]


@dataclass
class Args:
    """Arguments of ``python -m training bandit`` (``vars(args)`` is what gets logged; see :mod:`training._cli`)."""

    dataset: str = arg("synthetic", help="'synthetic', a registered source name, or a path to an outcomes file")
    policy: str = arg("linucb", help="bandit policy", choices=POLICIES)
    steps: int = arg(5000, help="requests served in total", ge=1)
    batch_size: int = arg(32, help="requests per vector-env step (policy updates per batch)", ge=1)
    lam: float = arg(0.0, help="cost weight, reward units per USD", ge=0)
    mu: float = arg(0.0, help="latency weight, reward units per second", ge=0)
    seed: int = arg(0, help="seed of the data, the environment and the policy")
    out: str = arg("runs/bandit", help="output directory")
    encoder: str = arg("hashing", help="prompt encoder ('features': the synthetic data's true features)",
                       choices=ENCODERS)
    n_prompts: int = arg(2000, help="prompts generated for --dataset synthetic", ge=1)
    order: str = arg("random", help="order of the replayed requests (sequential: time order, drift in order)",
                     choices=("random", "sequential"))
    alpha: float = arg(1.0, help="UCB width (linucb, neural)", ge=0)
    epsilon: float = arg(0.1, help="exploration rate (egreedy)", ge=0, le=1)
    v: float = arg(0.3, help="posterior scale (thompson)", gt=0)
    ridge: float = arg(1.0, help="ridge penalty of the linear models", gt=0)
    hidden: int = arg(64, help="hidden width (neural)", ge=1)
    hashing_dim: int = arg(128, help="width of the hashing encoder", ge=1)
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
def load_data(args: Args) -> tuple[Any, np.ndarray, Any]:
    """(Outcomes, embeddings (n, d) float32, prefix stripper or None) for ``args.dataset``.

    Text is encoded with ``args.encoder`` after stripping long few-shot prefixes shared by many
    prompts (the same :class:`~router.encoders.PrefixStripper` the offline routers use), so
    sources such as RouterBench's ARC-C and Winogrande rows encode what tells prompts apart.
    """
    features: np.ndarray | None = None
    stripper: Any = None
    if args.dataset == "synthetic":
        from router.data import synthetic

        data = synthetic.generate(n_prompts=args.n_prompts, seed=args.seed)
        outcomes = data.outcomes
        features = getattr(data, "embeddings", None)
        if args.encoder == "features":
            features = np.asarray(data.features, dtype=np.float32)
        elif features is not None and args.encoder != "hashing":
            features = None
    else:
        if args.encoder == "features":
            raise ConfigError("--encoder features is only for --dataset synthetic.")
        try:
            from router.data.registry import load_source
        except ImportError as err:
            raise ConfigError(f"router.data.registry is not available yet ({err}); use --dataset synthetic.") from err
        outcomes = load_source(args.dataset)
    if features is None:
        from router.encoders import PrefixStripper

        texts = [str(p) for p in outcomes.prompts]
        stripper = PrefixStripper().fit(texts)
        encoder = routing_encoder(args)
        if encoder is None:
            raise ConfigError(f"unknown --encoder {args.encoder!r}; choose hashing, static, minilm or features.")
        features = encoder.encode(stripper.transform(texts))
    return outcomes, np.asarray(features, dtype=np.float32), stripper


def make_policy(args: Args, n_actions: int, dim: int) -> Any:
    """The policy named by ``args.policy`` with the matching hyperparameters from ``args``."""
    from router.policies import EpsilonGreedy, LinearThompson, LinUCB, NeuralLinear

    if args.policy == "linucb":
        return LinUCB(n_actions, dim, alpha=args.alpha, ridge=args.ridge, seed=args.seed)
    if args.policy == "egreedy":
        return EpsilonGreedy(n_actions, dim, epsilon=args.epsilon, ridge=args.ridge, seed=args.seed)
    if args.policy == "thompson":
        return LinearThompson(n_actions, dim, v=args.v, ridge=args.ridge, seed=args.seed)
    if args.policy == "neural":
        return NeuralLinear(n_actions, dim, hidden=args.hidden, alpha=args.alpha, ridge=args.ridge, seed=args.seed)
    raise ConfigError(f"unknown --policy {args.policy!r}; choose linucb, egreedy, thompson or neural.")


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
    from envs.vector import make_vector
    from router.policies import save_policy

    check_args(args)
    if args.log:
        from training.bandit_log import run_from_log

        return run_from_log(args)
    t0 = time.perf_counter()
    outcomes, emb, stripper = load_data(args)
    envs = make_vector(emb, outcomes, num_envs=args.batch_size, lam=args.lam, mu=args.mu, order=args.order)
    dim = int(envs.single_observation_space["features"].shape[0])  # type: ignore[index]
    m = envs.data.n_models
    policy = make_policy(args, m, dim)
    if args.warm_start:
        _warm_start(policy, args, outcomes, emb)
    obs, _ = envs.reset(seed=args.seed)
    n_batches = -(-args.steps // args.batch_size)
    pol_cum = orc_cum = 0.0
    fixed_cum = np.zeros(m)
    counts = np.zeros(m, dtype=np.int64)
    served = 0
    curve: dict[str, list[float]] = {"step": [], "policy_reward": [], "oracle_reward": [], "fixed_rewards": []}
    fixed_hist: list[np.ndarray] = []
    for _ in range(n_batches):
        take = min(args.batch_size, args.steps - served)
        probs = policy.select(obs["features"], obs["action_mask"].astype(bool))
        actions = np.asarray(policy.sample(probs), dtype=np.int64)
        prop = probs[np.arange(actions.shape[0]), actions]
        ctx = obs["features"]
        obs, reward, _, _, info = envs.step(actions)
        sl = slice(0, take)
        policy.update(ctx[sl], actions[sl], reward[sl], prop[sl])
        pol_cum += float(reward[sl].sum())
        orc_cum += float(info["oracle_reward"][sl].sum())
        fixed_cum += info["all_rewards"][sl].sum(axis=0)
        np.add.at(counts, actions[sl], 1)
        served += take
        curve["step"].append(served)
        curve["policy_reward"].append(pol_cum)
        curve["oracle_reward"].append(orc_cum)
        fixed_hist.append(fixed_cum.copy())
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
        "python": platform.python_version(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    save_policy(
        policy,
        out / "policy",
        extra={"model_names": names, "lam": args.lam, "mu": args.mu, "encoder": args.encoder,
               "hashing_dim": args.hashing_dim, "dataset": args.dataset},
    )
    routable = save_router(args, policy, outcomes, emb, out, stripper)
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


def _warm_start(policy: Any, args: Args, outcomes: Any, emb: np.ndarray) -> None:
    """Start the policy from an offline router's predictions on the replayed prompts (no outcomes used)."""
    from router.registry_io import load_router

    offline = load_router(str(args.warm_start))
    if list(offline.models) != list(outcomes.models):
        raise ConfigError(f"--warm-start router routes over {list(offline.models)}, the data has "
                          f"{list(outcomes.models)}; they must match.")
    q_hat, c_hat, _ = offline.predict([str(p) for p in outcomes.prompts])
    policy.warm_start(np.clip(emb, -1.0, 1.0), q_hat, lam=args.lam, cost=c_hat, weight=args.warm_weight)


def routing_encoder(args: Args) -> Any:
    """The encoder object that produced the training contexts (None for ``features``)."""
    from router import encoders as enc

    if args.encoder == "hashing":
        return enc.HashingEncoder(dim=args.hashing_dim)
    if args.encoder == "static":
        return enc.StaticEncoder()
    if args.encoder == "minilm":
        return enc.SentenceTransformerEncoder()
    return None


def save_router(args: Args, policy: Any, outcomes: Any, emb: np.ndarray, out: Path, stripper: Any = None) -> bool:
    """Save the trained policy inside a :class:`~router.router.Router` at ``out``.

    ``python -m router route --model out`` then routes with it, and serving treats it like any
    other router. Not possible for ``--encoder features`` (the synthetic ground-truth context has
    no text encoder); returns whether a router was saved.
    """
    from router.cost_predictor import CostPredictor
    from router.decision import DecisionRule
    from router.router import Router

    encoder = routing_encoder(args)
    if encoder is None:
        return False
    lengths = np.array([len(str(p)) for p in outcomes.prompts], dtype=np.float64)
    cost = CostPredictor().fit(emb, lengths, outcomes)
    router = Router(outcomes.models, encoder, policy, cost, rule=DecisionRule(lam=args.lam, mu=args.mu),
                    preprocessor=stripper,
                    metadata={"router_kind": f"bandit:{args.policy}", "policy_lam": args.lam, "policy_mu": args.mu,
                              "dataset": args.dataset, "trained_on": outcomes.source, "n_train": args.steps,
                              "split_seed": args.seed})
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
        print(f"{args.policy}: learnt from {metrics['steps']} logged decisions of {args.log} "
              f"(mean logged reward {metrics['mean_logged_reward']:.4f}) -> {args.out}")
        return 0
    print(
        f"{args.policy}: steps={metrics['steps']} reward={metrics['policy_reward']:.2f} "
        f"oracle={metrics['oracle_reward']:.2f} best_fixed={metrics['best_fixed_reward']:.2f} "
        f"({metrics['best_fixed_model']}) regret={metrics['regret']:.2f} -> {args.out}"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
