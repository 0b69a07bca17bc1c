"""The MLflow lifecycle on a temporary store: train -> log -> register -> promote -> load in a fresh
process -> same decisions; promotion refuses worse and regressing candidates; two processes share
one Optuna study."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from router.data.registry import save_outcomes
from router.data.splits import split_outcomes
from router.data.synthetic import generate
from router.encoders import HashingEncoder
from router.predictors import LogisticPredictor
from router.router import Router

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    data = generate(2400, seed=11, source="lifecycle")
    path = save_outcomes(data.outcomes, tmp_path_factory.mktemp("data") / "outcomes.parquet")
    return data, str(path)


def _corrupt(outcomes, families: set[str]):
    """Outcomes whose quality columns are reversed on the given families (a router learns wrong models there)."""
    q = outcomes.quality.copy()
    rows = np.isin(outcomes.tasks, list(families))
    q[rows] = q[rows][:, ::-1]
    return replace(outcomes, quality=q)


def _register(name: str, dataset_path: str, corrupt: set[str] | None = None) -> str:
    """Train a router on the training split (optionally with corrupted labels), log and register it."""
    from router.data.registry import load_source
    from training import tracking
    from training.registry import log_router

    outcomes = load_source(dataset_path)
    train, test = split_outcomes(outcomes, seed=0)
    if corrupt:
        train = _corrupt(train, corrupt)
    router = Router.fit(train, encoder=HashingEncoder(dim=256), predictor=LogisticPredictor(),
                        metadata={"dataset": dataset_path, "split_seed": 0, "router_kind": "logistic"})
    with tracking.run(None, experiment="lifecycle-test", run_name=name):
        tracking.log_lineage(train, role="train", split_seed=0, split="train")
        info = log_router(router, {"test_rows": test.n_prompts}, register=name, test=test)
    return str(info["version"])


def _promote(name: str, version: str, dataset_path: str, **kw):
    from training.promote import Args, promote

    return promote(Args(name=name, candidate=version, dataset=dataset_path, n_boot=150,
                        latency_budget_ms=kw.pop("latency_budget_ms", 1000.0), **kw))


def test_lifecycle_train_register_promote_load_in_fresh_process(store, dataset, tmp_path):
    import mlflow

    from training.registry import download_router

    data, path = dataset
    version = _register("lc-router", path)
    evidence = _promote("lc-router", version, path)
    assert evidence.promote, evidence.reasons
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("lc-router", "champion").version) == version
    mv = client.get_model_version("lc-router", version)
    assert mv.tags["promotion.decision"] == "promoted" and mv.tags["promotion.baseline"] == "zero router"
    assert "Promotion to @champion" in mv.description and "## Intended use" in mv.description
    run = client.get_run(mv.run_id)
    assert run.data.tags["git_commit"] and run.data.tags["data.train.sha256"]

    # the in-memory router and the registered champion loaded in a fresh process agree
    prompts = [str(p) for p in data.outcomes.prompts[:25]]
    in_memory = download_router("models:/lc-router@champion").route(prompts)
    script = (
        "import json, sys, mlflow, pandas as pd\n"
        "m = mlflow.pyfunc.load_model('models:/lc-router@champion')\n"
        "out = m.predict(pd.DataFrame({'prompt': json.load(sys.stdin)}))\n"
        "print(json.dumps({'chosen': out['chosen_model'].tolist(), 'cost': out['predicted_cost'].tolist(),"
        " 'p': [json.loads(x) for x in out['probabilities']]}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], input=json.dumps(prompts), capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": store}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh = json.loads(proc.stdout.strip().splitlines()[-1])
    assert fresh["chosen"] == in_memory.chosen
    rows = np.arange(len(prompts))
    assert np.allclose(fresh["cost"], in_memory.cost[rows, in_memory.chosen_index])
    assert all(abs(sum(p.values()) - 1.0) < 1e-9 for p in fresh["p"])

    # the batch routing CLI reads the champion from the registry too
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"prompt_id": str(i), "prompt": p}) + "\n"
                                               for i, p in enumerate(prompts)))
    proc = subprocess.run([sys.executable, "-m", "router", "route", "--model", "models:/lc-router@champion",
                           "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "d.parquet"),
                           "--lambdas", str(in_memory.lam)],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "MLFLOW_TRACKING_URI": store},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert pd.read_parquet(tmp_path / "d.parquet")["chosen_model"].tolist() == in_memory.chosen

    # MLflow's serving-input check accepts the logged signature
    from mlflow.models import convert_input_example_to_serving_input
    from mlflow.models.utils import validate_serving_input

    serving_input = convert_input_example_to_serving_input(pd.DataFrame({"prompt": prompts[:3]}))
    result = validate_serving_input(f"models:/lc-router/{version}", serving_input)
    assert len(result) == 3


def test_promotion_refuses_worse_and_regressing_candidates_and_accepts_better(store, dataset):
    import mlflow

    _, path = dataset
    families = {"chitchat", "coding", "math", "legal", "science", "summarize"}
    name = "promo-router"
    # champion: right only on coding
    champ = _register(name, path, corrupt=families - {"coding"})
    client = mlflow.MlflowClient()
    # with no champion yet, a candidate must beat the zero router to become the first one; this one does not
    ev = _promote(name, champ, path)
    assert not ev.promote and any("not better than the zero router" in r for r in ev.reasons)
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias(name, "champion")
    client.set_registered_model_alias(name, "champion", champ)  # an operator's choice, for this test

    # a worse candidate (wrong everywhere) is refused, and the alias does not move
    worse = _register(name, path, corrupt=families)
    ev = _promote(name, worse, path)
    assert not ev.promote and any("not better than the champion" in r for r in ev.reasons)
    assert str(client.get_model_version_by_alias(name, "champion").version) == champ
    assert client.get_model_version(name, worse).tags["promotion.decision"] == "refused"

    # better overall but regresses coding: refused, naming the task
    regress = _register(name, path, corrupt={"coding"})
    ev = _promote(name, regress, path)
    assert ev.candidate_value > ev.champion_value
    assert not ev.promote and any("task 'coding' regresses" in r for r in ev.reasons)
    assert "coding" in client.get_model_version(name, regress).tags["promotion.reasons"]

    # a dry run changes nothing
    better = _register(name, path)
    ev = _promote(name, better, path, dry_run=True)
    assert ev.promote
    assert str(client.get_model_version_by_alias(name, "champion").version) == champ
    assert "promotion.decision" not in client.get_model_version(name, better).tags

    # the latency budget is enforced
    ev = _promote(name, better, path, latency_budget_ms=1e-6, dry_run=True)
    assert not ev.promote and any("exceeds the budget" in r for r in ev.reasons)

    # better everywhere: promoted, with the evidence recorded
    ev = _promote(name, better, path)
    assert ev.promote and ev.delta_ci[0] > 0
    assert str(client.get_model_version_by_alias(name, "champion").version) == better
    tags = client.get_model_version(name, better).tags
    assert tags["promotion.decision"] == "promoted" and tags["promotion.baseline"] == f"version {champ}"
    assert json.loads(tags["promotion.delta_ci"])[0] > 0

    # challenger for live A/B tests: need not beat the champion, but must not regress a task
    ev = _promote(name, regress, path, alias="challenger")
    assert not ev.promote and any("task 'coding' regresses" in r for r in ev.reasons)
    twin = _register(name, path)
    ev = _promote(name, twin, path, alias="challenger")
    assert ev.promote, ev.reasons
    assert str(client.get_model_version_by_alias(name, "challenger").version) == twin
    assert str(client.get_model_version_by_alias(name, "champion").version) == better


def test_two_processes_share_one_optuna_study(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="shared", storage=storage, direction="maximize")
    cmd = [sys.executable, "-m", "training", "tune", "--study-name", "shared", "--storage", storage,
           "--n-trials", "3", "--steps", "200", "--n-prompts", "600", "--no-track"]
    procs = [subprocess.Popen([*cmd, "--out", str(tmp_path / f"w{i}")], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="shared", storage=storage)
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert all("dr_low" in t.user_attrs and t.user_attrs["dr_low"] <= t.value <= t.user_attrs["dr_high"]
               for t in study.trials)
