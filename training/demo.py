"""``python -m training demo`` (what ``make demo`` runs): the main job end to end on the demo data.

1. generate the demo traffic into ``datasets/demo/`` when it is missing (synthetic, known ground
   truth: outcomes of every model plus a traffic log with propensities), validate and describe it;
2. train the project's best router on its training split (static encoder: the live-path encoder);
3. evaluate it on the held-out split and write the HTML report, ``metrics.json`` and ``summary.md``;
4. log the run to the local MLflow store, register the router as ``demo-router`` and promote it to
   ``@champion`` when it beats the zero router on the held-out data;
5. print where the report is and the two commands that serve the champion.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from training._cli import arg, check_out_dir
from training.tracking import PROJECT_ROOT

__all__ = ["DEMO_DIR", "Args", "main", "make_demo_data"]

DEMO_DIR = PROJECT_ROOT / "datasets" / "demo"
DEMO_SEED = 7
DEMO_PROMPTS = 4000


@dataclass
class Args:
    """Arguments of ``python -m training demo`` (see :mod:`training._cli`)."""

    out: str = arg(str(PROJECT_ROOT / "out" / "demo"), help="output directory")
    regenerate: bool = arg(False, help="write the demo data again")
    encoder: str = arg("static", help="prompt encoder", choices=("static", "minilm", "hashing"))
    name: str = arg("demo-router", help="registered model name")

    def check(self) -> None:
        """The output directory can be made."""
        check_out_dir(self.out)


def make_demo_data(directory: Path = DEMO_DIR, *, n_prompts: int = DEMO_PROMPTS, seed: int = DEMO_SEED) -> Path:
    """Write the demo outcomes (``outcomes.parquet``) and a traffic log (``traffic/``) to ``directory``.

    The traffic log replays the outcomes through an epsilon-greedy logging policy over a noisy score,
    with the propensity of every choice, as production would have logged it.
    """
    import numpy as np

    from router.data.logs import append_log
    from router.data.reduce import to_traffic_log
    from router.data.registry import save_outcomes
    from router.data.synthetic import generate

    data = generate(n_prompts, seed=seed, drift=-0.15, drift_model="medium-70b", source="demo")
    save_outcomes(data.outcomes, directory)
    rng = np.random.default_rng(seed)
    noisy = data.true_quality + rng.normal(0.0, 0.15, data.true_quality.shape) - 20.0 * data.outcomes.cost
    log, _ = to_traffic_log(data.outcomes, policy="epsilon-greedy", scores=noisy, epsilon=0.3, seed=seed,
                            tenant="demo", policy_version="demo-logging-v1")
    traffic = directory / "traffic"
    if traffic.exists():
        for part in traffic.glob("*.parquet"):
            part.unlink()
    append_log(log, traffic)
    return directory


def main(argv: list[str] | None = None) -> int:
    from training._cli import parse

    ns = parse(Args, argv, "python -m training demo", __doc__)
    t0 = time.perf_counter()
    out = Path(ns.out)

    print("== 1. demo traffic")
    if ns.regenerate or not (DEMO_DIR / "outcomes.parquet").exists():
        make_demo_data()
        print(f"generated {DEMO_DIR}")
    from router.cli import describe
    from router.data.logs import read_log

    summary = describe("demo")
    log = read_log(DEMO_DIR / "traffic", known_models=summary["models"])
    print(json.dumps({k: summary[k] for k in ("rows", "models", "tasks", "oracle", "best_single_model")},
                     indent=1, default=str))
    version = str(log["policy_version"][0])
    mean_p = float(log["propensity"].mean())  # type: ignore[arg-type]
    print(f"traffic log: {log.height} requests, logged by {version}, mean propensity {mean_p:.3f}")

    print("== 2. train the best router (tracked in MLflow)")
    from training import tracking
    from training.fit import BEST, train
    from training.fit import Args as FitArgs
    from training.registry import log_router

    args = FitArgs(dataset="demo", predictor=BEST, encoder=ns.encoder, out=str(out / "router"), register=ns.name,
                experiment="routing-demo")
    run_name, tags = tracking.run_label("demo", "demo", predictor=args.predictor, encoder=args.encoder)
    with tracking.run(args, experiment=args.experiment, run_name=run_name, tags=tags):
        res = train(args)
        tracking.log_lineage(res["train"], role="train", split_seed=args.seed, split="train")
        tracking.log_lineage(res["test"], role="test", split_seed=args.seed, split="test")

        print("== 3. evaluate on the held-out split")
        from training.evaluate import Args as EvalArgs
        from training.evaluate import run as evaluate

        ev = evaluate(EvalArgs(dataset="demo", out=str(out / "report"), model=str(out / "router"),
                               log=str(DEMO_DIR / "traffic"), n_bootstrap=300, budgets="0.2,0.5,1,2"))
        reg = log_router(res["router"], res["summary"], register=ns.name, test=res["test"])
        tracking.log_metrics(ev.scalar_metrics(), prefix="")

    print("== 4. promote by evidence")
    from training.promote import Args as PromoteArgs
    from training.promote import promote

    evidence = promote(PromoteArgs(name=ns.name, candidate=str(reg["version"]), dataset="demo", n_boot=200))
    verdict = "promoted to @champion" if evidence.promote else "not promoted"
    print(f"version {reg['version']} {verdict}: " + "; ".join(evidence.reasons))

    metrics = json.loads((out / "report" / "metrics.json").read_text())
    r = next(iter(metrics["routers"].values()))
    print("\n== done in %.0f s" % (time.perf_counter() - t0))
    print(f"AIQ {r['aiq']:.3f} (zero router {metrics['zero_router']['aiq']:.3f}, "
          f"oracle quality {metrics['oracle']['quality']:.3f})")
    print(f"report:        {(out / 'report' / 'report.html').resolve()}")
    print(f"summary:       {(out / 'report' / 'summary.md').resolve()}")
    print(f"router:        {(out / 'router').resolve()}")
    print(f"decides at:    {res['router'].operating_point.describe()}")
    print(f"MLflow store:  {tracking.default_tracking_uri()}  (model {ns.name}, version {reg['version']})")
    print(f"browse runs:   .venv/bin/mlflow ui --backend-store-uri {tracking.default_tracking_uri()}")
    print(f"route a file:  .venv/bin/python -m router route --model models:/{ns.name}@champion "
          "--input datasets/samples/prompts.jsonl --output out/decisions.parquet")
    print("serve it (two shells; the first is a local stand-in for the LLM providers):")
    print("               .venv/bin/python -m serve.provider --port 9000")
    print(f"               .venv/bin/python -m serve --model models:/{ns.name}@champion --port 8000")
    print("then ask:      curl -s localhost:8000/v1/chat/completions -H 'content-type: application/json' "
          "-d '{\"model\": \"router\", \"messages\": [{\"role\": \"user\", \"content\": \"Prove that there are "
          "infinitely many primes.\"}]}'")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
