"""``python -m training bandit --log PATH --warm-start ROUTER``: learn a bandit policy from a traffic log.

The log's routing decisions with feedback (the service's ``logbook.dir``, or any log in the
schema) are replayed in time order into a fresh policy (``--policy``), each row an update with
the logged context, chosen model and reward ``quality - lam * cost - mu * latency``. Linear
policies fit one ridge model per model on the rows where it was chosen; since the logging policy
chose by the context alone, that estimate is unbiased wherever the log covers the context (the
overlap the off-policy evaluation of the result reports).

The served router (``--warm-start``) supplies the encoder, prefix stripper and cost model, so the
new router sees requests exactly as the served one does; with ``--warm-weight`` > 0 the policy
starts from its quality predictions on the logged prompts. The result is a normal router directory
(``--out``) that ``training evaluate --log`` judges and ``training promote`` moves an alias to.

``--track`` logs ``vars(args)``, ``bandit/steps`` and ``bandit/mean_logged_reward`` and
``metrics.json`` to MLflow; with ``--register NAME`` the router becomes a new version of NAME (the
candidate ``training promote --log`` judges).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from router.errors import ConfigError, ValidationError

__all__ = ["run_from_log", "track_log_run"]


def run_from_log(args: Any) -> dict[str, Any]:
    """Train ``args.policy`` on the feedback in ``args.log`` (see the module docs); returns the metrics."""
    from router.decision import DecisionRule
    from router.policies import save_policy
    from router.registry_io import load_router
    from router.router import Router
    from training.bandit import make_policy
    from training.ope_log import feedback_rows

    if not args.warm_start:
        raise ConfigError("--log needs --warm-start ROUTER: the served router whose encoder and cost model the "
                          "new policy reuses (the one that wrote the log, e.g. models:/NAME@champion).")
    t0 = time.perf_counter()
    base = load_router(str(args.warm_start))
    df = feedback_rows(args.log).sort("timestamp")
    models = list(base.models)
    pos = {m: j for j, m in enumerate(models)}
    unknown = sorted(set(df["chosen_model"].to_list()) - set(pos))
    if unknown:
        raise ValidationError(f"the log chose model(s) {unknown} outside the router's pool {models}.")
    prompts = df["prompt"].to_list()
    emb, lengths = base.embed(prompts)
    ctx = Router._policy_context(emb)
    a = np.array([pos[m] for m in df["chosen_model"].to_list()], dtype=np.int64)
    lat = df["latency_s"].fill_null(0.0).to_numpy().astype(float)
    reward = (df["quality"].to_numpy().astype(float) - args.lam * df["cost"].to_numpy().astype(float)
              - args.mu * lat)
    prop = df["propensity"].to_numpy().astype(float)
    policy = make_policy(args, len(models), int(ctx.shape[1]))
    if args.warm_weight > 0:
        q_hat, c_hat, _ = base.predict(embeddings=emb, lengths=lengths)
        policy.warm_start(ctx, q_hat, lam=args.lam, cost=c_hat, weight=args.warm_weight)
    for start in range(0, len(a), max(1, args.batch_size)):
        sl = slice(start, start + max(1, args.batch_size))
        policy.update(ctx[sl], a[sl], reward[sl], prop[sl])
    router = Router(models, base.encoder, policy, base.cost, base.latency,
                    rule=DecisionRule(lam=args.lam, mu=args.mu), preprocessor=base.preprocessor,
                    features=base.features,
                    metadata={"router_kind": f"bandit:{args.policy}", "trained_on": f"log:{args.log}",
                              "n_train": int(len(a)), "warm_start": args.warm_start},
                    policy_lam=args.lam, policy_mu=args.mu, context_windows=base.context_windows,
                    length_unit=base.length_unit)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    router.save(out)
    save_policy(policy, out / "policy")
    counts = np.bincount(a, minlength=len(models))
    metrics = {"steps": int(len(a)), "source": "log", "log": str(args.log), "mean_logged_reward": float(reward.mean()),
               "action_counts": {models[j]: int(counts[j]) for j in range(len(models))}, "model_names": models,
               "router_saved": True, "args": vars(args), "wall_s": time.perf_counter() - t0}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str))
    return metrics


def track_log_run(args: Any, metrics: dict[str, Any], tracker: Any = None) -> None:
    """Send a finished ``--log`` run to ``tracker(params, [(name, value, step)])``, or to MLflow (one run;
    with ``args.register`` the router at ``args.out`` is registered as a new version). A tracking failure
    is reported on stderr and in ``metrics["tracking_error"]``; the router on disk is kept either way."""
    import sys

    rows = [("bandit/steps", float(metrics["steps"]), int(metrics["steps"])),
            ("bandit/mean_logged_reward", float(metrics["mean_logged_reward"]), int(metrics["steps"]))]
    try:
        if tracker is not None:
            tracker(dict(vars(args)), rows)
            return
        import mlflow

        from router.router import Router
        from training import tracking
        from training.registry import log_router

        tracking.setup()
        name, tags = tracking.run_label("bandit", f"log:{args.log}", policy=args.policy, encoder="served")
        with tracking.run(args, experiment=args.experiment, run_name=name, tags=tags,
                          nested=mlflow.active_run() is not None):
            mlflow.log_metrics({k: v for k, v, _ in rows}, step=int(metrics["steps"]))
            mlflow.log_artifact(str(Path(args.out) / "metrics.json"))
            if args.register:
                summary = {k: v for k, v in metrics.items() if k != "args"}
                metrics["registered"] = log_router(Router.load(args.out), summary, register=args.register)
    except Exception as err:  # tracking must never lose a finished run: the router is on disk
        print(f"warning: tracking failed ({type(err).__name__}: {err}); the router is in {args.out}", file=sys.stderr)
        metrics["tracking_error"] = f"{type(err).__name__}: {err}"
