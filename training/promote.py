"""``python -m training promote``: move ``@champion`` only on evidence.

Example::

    python -m training promote --name demo-router --candidate 3 [--dataset demo] [--dry-run]
    python -m training promote --name demo-router --candidate 4 --alias challenger

The candidate and the current champion are routed over the *same* held-out prompts. With full
information (an outcomes table) both get their cost-quality hull and AIQ, and the difference is
judged with a **paired** bootstrap over prompts (both routers scored on the same resample). The
candidate is promoted only when all hold:

1. better beyond the interval: the lower end of the 95% interval of ``AIQ(candidate) - AIQ(champion)``
   is above zero (with no champion yet: above the zero router, i.e. random mixing of single models);
2. no task regresses: per task, ``AIQ(candidate) >= AIQ(champion) - task_tolerance``;
3. within the decision-latency budget: the candidate's p50 single-request decision time is at most
   ``latency_budget_ms``.

With ``--log PATH`` (a traffic log with propensities) the comparison uses the doubly-robust
off-policy estimate of each router's value at its saved lambda instead of AIQ, with the same
interval rule: the lower end of the 95% paired-bootstrap interval of the DR gain must be above zero.

Whatever the outcome, the evidence is recorded on the candidate version (tags ``promotion.*`` and
a description paragraph); a refusal lists every failed check. ``--alias challenger`` sets the
challenger alias for a live A/B test instead (same checks, except it need not beat the champion).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training._cli import arg, check_args, check_input

__all__ = ["Args", "Evidence", "candidate_version", "compare", "main", "promote"]


@dataclass
class Args:
    """Arguments of ``python -m training promote`` (``vars(args)`` is what gets logged; see :mod:`training._cli`)."""

    name: str = arg(help="registered model name")
    candidate: str = arg(help="candidate version number")
    dataset: str | None = arg(None, help="held-out data (registered name or path); none = the candidate's "
                              "training data set")
    split_seed: int = arg(0, help="seed of the held-out split when the source has no split of its own")
    log: str | None = arg(None, help="a traffic log to judge on by off-policy estimates instead of outcomes")
    alias: str = arg("champion", help="the alias to move", choices=("champion", "challenger"))
    task_tolerance: float = arg(0.02, help="largest allowed per-task AIQ drop", ge=0)
    latency_budget_ms: float = arg(15.0, help="largest allowed p50 single-request decision time (ms)", gt=0)
    n_boot: int = arg(500, help="bootstrap resamples", ge=10)
    dry_run: bool = arg(False, help="evaluate and report, change nothing")

    def check(self) -> None:
        """The candidate is a version number; input paths exist."""
        from router.errors import ConfigError

        if not str(self.candidate).isdigit():
            raise ConfigError(f"--candidate must be a version number such as 3, got {self.candidate!r}.")
        check_input(self.log, "--log", "traffic log")


@dataclass
class Evidence:
    """What the decision rests on."""

    promote: bool
    reasons: list[str]
    candidate_value: float
    champion_value: float | None
    delta_ci: tuple[float, float]
    metric: str
    per_task: dict[str, dict[str, float]] = field(default_factory=dict)
    latency_p50_ms: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "delta_ci": list(self.delta_ci)}


def _aiq_of(q: np.ndarray, c: np.ndarray, choices: np.ndarray, span: tuple[float, float]) -> float:
    from router.metrics import aiq, non_decreasing_hull

    rows = np.arange(q.shape[0])
    pts = np.array([[c[rows, ch].mean(), q[rows, ch].mean()] for ch in choices])
    return float(aiq(non_decreasing_hull(pts), span))


def _paired_aiq(outcomes: Any, cand: np.ndarray, champ: np.ndarray | None, n_boot: int, seed: int = 0
                ) -> tuple[float, float, np.ndarray]:
    """(AIQ candidate, AIQ champion-or-zero-router, bootstrap deltas (B,))."""
    q, c = outcomes.quality, outcomes.cost
    n, m = q.shape
    single = np.tile(np.arange(m)[:, None], (1, n))  # the zero router's settings: each single model

    def span_of(idx: np.ndarray) -> tuple[float, float]:
        means = c[idx].mean(axis=0)
        return float(means.min()), float(means.max())

    ref = single if champ is None else champ
    full = np.arange(n)
    a = _aiq_of(q, c, cand, span_of(full))
    b = _aiq_of(q, c, ref, span_of(full))
    rng = np.random.default_rng(seed)
    deltas = np.empty(n_boot)
    for k in range(n_boot):
        idx = rng.integers(0, n, n)
        sp = span_of(idx)
        deltas[k] = _aiq_of(q[idx], c[idx], cand[:, idx], sp) - _aiq_of(q[idx], c[idx], ref[:, idx], sp)
    return a, b, deltas


def _decision_latency_ms(router: Any, prompts: list[str], n: int = 50) -> float:
    router.route(prompts[:1])  # warm up (lazy model loads)
    times = []
    for p in prompts[:n]:
        t = time.perf_counter()
        router.route([p], explain=False)
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def compare(candidate: Any, champion: Any | None, outcomes: Any, *, task_tolerance: float = 0.02,
            latency_budget_ms: float = 15.0, n_boot: int = 500, require_better: bool = True) -> Evidence:
    """Judge a candidate router against the champion (or the zero router) on held-out outcomes."""
    prompts = [str(p) for p in outcomes.prompts]
    emb, lengths = candidate.embed(prompts)
    _, cand_choices, _, _ = candidate.sweep(embeddings=emb, lengths=lengths, models=list(outcomes.models))
    champ_choices = None
    if champion is not None:
        e2, l2 = champion.embed(prompts)
        _, champ_choices, _, _ = champion.sweep(embeddings=e2, lengths=l2, models=list(outcomes.models))
    a, b, deltas = _paired_aiq(outcomes, cand_choices, champ_choices, n_boot)
    lo, hi = (float(x) for x in np.percentile(deltas, [2.5, 97.5]))
    reasons: list[str] = []
    ok = True
    against = "the champion" if champion is not None else "the zero router"
    if require_better or champion is None:
        if lo > 0:
            reasons.append(f"AIQ {a:.4f} beats {against} ({b:.4f}); 95% interval of the gain [{lo:+.4f}, {hi:+.4f}]")
        else:
            ok = False
            reasons.append(f"not better than {against} beyond the interval: AIQ {a:.4f} vs {b:.4f}, "
                           f"gain interval [{lo:+.4f}, {hi:+.4f}] includes or is below 0")
    per_task: dict[str, dict[str, float]] = {}
    if champ_choices is not None:
        q, c = outcomes.quality, outcomes.cost
        for task in sorted(set(outcomes.tasks)):
            rows = np.flatnonzero(outcomes.tasks == task)
            means = c[rows].mean(axis=0)
            span = (float(means.min()), float(means.max()))
            ta = _aiq_of(q[rows], c[rows], cand_choices[:, rows], span)
            tb = _aiq_of(q[rows], c[rows], champ_choices[:, rows], span)
            per_task[str(task)] = {"candidate": ta, "champion": tb, "delta": ta - tb}
            if ta < tb - task_tolerance:
                ok = False
                reasons.append(f"task {task!r} regresses: AIQ {ta:.4f} vs champion {tb:.4f} "
                               f"(tolerance {task_tolerance})")
    lat = _decision_latency_ms(candidate, prompts)
    if lat > latency_budget_ms:
        ok = False
        reasons.append(f"decision latency p50 {lat:.2f} ms exceeds the budget of {latency_budget_ms} ms")
    else:
        reasons.append(f"decision latency p50 {lat:.2f} ms within {latency_budget_ms} ms")
    return Evidence(ok, reasons, a, b if champion is not None else None, (lo, hi), "aiq", per_task, lat)


def compare_on_log(candidate: Any, champion: Any | None, log: Any, *, n_boot: int = 500,
                   latency_budget_ms: float = 15.0) -> Evidence:
    """Judge by doubly-robust off-policy value on a traffic log: both routers are scored on the same logged
    rounds with one cross-fitted reward model, and the interval is a paired bootstrap over rounds of the
    difference of their per-round DR values (the champion: uniform mixing when there is none)."""
    from router.metrics.bootstrap import bootstrap_indices, percentile_interval
    from router.ope import DoublyRobust
    from router.ope.reward_model import CrossFitRewardModel

    prompts = [p if p is not None else "" for p in log["prompt"].to_list()]
    models = list(candidate.models)
    pos = {m: i for i, m in enumerate(models)}
    unknown = sorted(set(log["chosen_model"].to_list()) - set(pos))
    if unknown:
        from router.errors import ValidationError

        raise ValidationError(f"the log chose model(s) {unknown} the candidate cannot route to (its pool is {models}).")
    actions = np.array([pos[m] for m in log["chosen_model"].to_list()])
    reward = log["quality"].to_numpy().astype(float) - candidate.rule.lam * log["cost"].to_numpy().astype(float)
    if np.isnan(reward).any():
        raise ValueError("the log has rows without quality feedback; filter them before promotion.")
    prop = log["propensity"].to_numpy().astype(float)
    embedded = candidate.embed(prompts)
    emb = embedded[0]
    pi_c = candidate.route(prompts, explain=False, embedded=embedded).probabilities
    if champion is not None:
        pi_b = champion.route(prompts, explain=False).probabilities
    else:
        pi_b = np.full_like(pi_c, 1.0 / pi_c.shape[1])
    q_hat = CrossFitRewardModel().fit_predict(emb, actions, reward, n_actions=len(models))
    est = DoublyRobust()
    v_c = est.round_rewards(reward, actions, prop, pi_c, q_hat=q_hat)
    v_b = est.round_rewards(reward, actions, prop, pi_b, q_hat=q_hat)
    a, b = float(v_c.mean()), float(v_b.mean())
    diff = v_c - v_b
    deltas = np.concatenate([np.take(diff, ix).mean(axis=1) for ix in bootstrap_indices(len(diff), n_boot, 0)])
    lo, hi = percentile_interval(deltas, 0.95)
    ok = lo > 0
    against = "the champion" if champion is not None else "uniform mixing"
    reasons = [f"DR value {a:.4f} vs {against} {b:.4f}; 95% interval of the gain [{lo:+.4f}, {hi:+.4f}]"
               + ("" if ok else " includes or is below 0")]
    lat = _decision_latency_ms(candidate, prompts)
    if lat > latency_budget_ms:
        ok = False
        reasons.append(f"decision latency p50 {lat:.2f} ms exceeds the budget of {latency_budget_ms} ms")
    return Evidence(ok, reasons, a, b, (float(lo), float(hi)), "dr_value", {}, lat)


def candidate_version(client: Any, name: str, version: str) -> Any:
    """The registered ``ModelVersion``; an unknown name or version is one clear error naming what exists.

    Raises:
        ConfigError: ``name`` is not registered (the message lists the registered names) or has no
            such version (the message lists its versions).
    """
    from mlflow.exceptions import MlflowException

    from router.errors import ConfigError

    try:
        client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models())
        known = ", ".join(names) if names else "none yet (register one with `python -m training fit --register NAME`)"
        raise ConfigError(f"no registered model named {name!r}; registered models: {known}.") from None
    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        raise ConfigError(f"{name!r} has no version {version}; its versions: "
                          f"{', '.join(map(str, versions)) or 'none'}.") from None


def promote(args: Args) -> Evidence:
    """Compare, record the evidence on the candidate version, and move the alias when it passes."""
    import mlflow

    from router.data.registry import load_source
    from router.data.splits import split_outcomes
    from training.registry import download_router, resolve_version
    from training.tracking import setup

    check_args(args)
    setup()
    client = mlflow.MlflowClient()
    cand_mv = candidate_version(client, args.name, str(args.candidate))
    # the evidence's data is read and checked before any router loads
    tag = (getattr(cand_mv, "tags", None) or {}).get("dataset")
    dataset = args.dataset or (tag if tag and tag != "None" else None)
    log = outcomes = None
    if args.log:
        from training.ope_log import feedback_rows

        log = feedback_rows(args.log)  # rated routing decisions only
    elif dataset is not None:
        outcomes = load_source(dataset)
    candidate = download_router(f"models:/{args.name}/{cand_mv.version}")
    champion = None
    champ_version = None
    try:
        champ_mv = resolve_version(args.name, "champion")
        champ_version = champ_mv.version
        if str(champ_version) != str(cand_mv.version):
            champion = download_router(f"models:/{args.name}/{champ_version}")
    except mlflow.exceptions.MlflowException:
        champion = None
    require_better = args.alias == "champion"
    if log is not None:
        ev = compare_on_log(candidate, champion, log, n_boot=args.n_boot, latency_budget_ms=args.latency_budget_ms)
    else:
        if outcomes is None:
            outcomes = load_source(candidate.metadata.get("dataset") or "demo")
        split_seed = int(candidate.metadata.get("split_seed", args.split_seed))
        _, test = split_outcomes(outcomes, seed=split_seed)
        test = test.subset(models=list(candidate.models))
        ev = compare(candidate, champion, test, task_tolerance=args.task_tolerance,
                     latency_budget_ms=args.latency_budget_ms, n_boot=args.n_boot, require_better=require_better)
    tags = {
        "promotion.decision": ("promoted" if ev.promote else "refused") + ("" if not args.dry_run else " (dry run)"),
        "promotion.alias": args.alias,
        "promotion.metric": ev.metric,
        "promotion.candidate_value": f"{ev.candidate_value:.6f}",
        "promotion.baseline_value": "" if ev.champion_value is None else f"{ev.champion_value:.6f}",
        "promotion.baseline": f"version {champ_version}" if champion is not None else "zero router",
        "promotion.delta_ci": json.dumps([round(x, 6) for x in ev.delta_ci]),
        "promotion.latency_p50_ms": f"{ev.latency_p50_ms:.3f}",
        "promotion.reasons": " | ".join(ev.reasons)[:5000],
        "promotion.time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if not args.dry_run:
        for k, v in tags.items():
            client.set_model_version_tag(args.name, cand_mv.version, k, v)
        note = (f"\n\n## Promotion to @{args.alias} ({tags['promotion.time']}): {tags['promotion.decision']}\n"
                + "\n".join(f"- {r}" for r in ev.reasons))
        client.update_model_version(args.name, cand_mv.version, description=(cand_mv.description or "") + note)
        if ev.promote:
            client.set_registered_model_alias(args.name, args.alias, cand_mv.version)
    return ev


def main(argv: list[str] | None = None) -> int:
    from training._cli import parse

    args = parse(Args, argv, "python -m training promote", __doc__)
    from router.errors import RoutingError

    try:
        ev = promote(args)
    except RoutingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(ev.to_dict(), indent=2, default=str))
    if not ev.promote:
        print("refused: " + "; ".join(r for r in ev.reasons), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
