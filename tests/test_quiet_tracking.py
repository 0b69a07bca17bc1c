"""Quiet, tidy tracking on a real (temporary SQLite) MLflow store: run names say what ran, tune's trials
are nested in their parent's experiment, tune's seed reaches its sampler, a local store prints no
download bars, and third-party model-load reports stay off the terminal."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def _tune_args(tmp_path: Path, name: str, **kw: object) -> list[str]:
    args = {"--n-trials": "2", "--steps": "64", "--n-prompts": "300", "--storage": f"sqlite:///{tmp_path / name}.db",
            "--study-name": name, "--out": str(tmp_path / name), **{f"--{k.replace('_', '-')}": str(v)
                                                                     for k, v in kw.items()}}
    return [x for kv in args.items() for x in kv]


@pytest.mark.slow
def test_tune_trials_are_nested_in_the_parent_experiment_and_named(store: str, tmp_path: Path) -> None:
    import mlflow

    from training.tune import main

    assert main([*_tune_args(tmp_path, "nest", experiment="tune-exp"), "--track"]) == 0
    mlflow.set_tracking_uri(store)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("tune-exp")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_name for r in parents] == ["tune-synthetic-linucb-hashing"]
    trials = sorted(r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id)
    assert trials == ["trial-0-linucb", "trial-1-linucb"]
    assert parents[0].data.tags["command"] == "tune" and parents[0].data.tags["encoder"] == "hashing"
    assert client.search_runs(["0"]) == []  # nothing lands in the Default experiment


@pytest.mark.slow
def test_tune_seed_reaches_the_sampler(tmp_path: Path) -> None:
    import optuna

    from training.tune import main

    def params(name: str, seed: int) -> list[dict[str, float]]:
        assert main([*_tune_args(tmp_path, name, seed=seed, n_trials=3), "--no-track"]) == 0
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / name}.db")
        return [t.params for t in study.trials]

    first, again, other = params("a", 3), params("b", 3), params("c", 4)
    assert first == again
    assert first != other


@pytest.mark.slow
def test_fit_run_is_named_and_register_and_promote_print_no_download_bars(store: str, tmp_path: Path) -> None:
    import mlflow

    from router.data.registry import save_outcomes
    from router.data.synthetic import generate

    data = save_outcomes(generate(600, seed=1).outcomes, tmp_path / "small-set.parquet")
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    env.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
    fit = subprocess.run([sys.executable, "-m", "training", "fit", "--dataset", str(data), "--predictor", "logistic",
                          "--encoder", "hashing", "--register", "tidy", "--out", str(tmp_path / "r")], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, env=env)
    assert fit.returncode == 0, fit.stderr[-3000:]
    promote = subprocess.run([sys.executable, "-m", "training", "promote", "--name", "tidy", "--candidate", "1",
                              "--dataset", str(data), "--n-boot", "20", "--latency-budget-ms", "1000", "--dry-run"],
                             cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert promote.returncode in (0, 1), promote.stderr[-3000:]
    for done in (fit, promote):
        assert "Downloading artifacts" not in done.stdout + done.stderr
    mlflow.set_tracking_uri(store)
    client = mlflow.MlflowClient()
    run = client.search_runs([client.get_experiment_by_name("routing-fit").experiment_id])[0]
    assert run.info.run_name == "fit-small-set-logistic-hashing"
    assert {k: run.data.tags[k] for k in ("command", "predictor", "encoder")} == {
        "command": "fit", "predictor": "logistic", "encoder": "hashing"}
    assert run.data.params["router"] == "logistic" and run.data.params["seed"] == "0"  # vars(args) is logged


def test_harmless_load_reports_are_dropped_and_real_ones_go_to_stderr_as_plain_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from router.encoders._common import quiet_model_load

    log = logging.getLogger("transformers.modeling_utils")
    with quiet_model_load():
        log.warning("\x1b[1mBertModel LOAD REPORT\x1b[0m from: m\nembeddings.position_ids | \x1b[33mUNEXPECTED\x1b[0m")
    with quiet_model_load():
        log.warning("\x1b[1mBertModel LOAD REPORT\x1b[0m from: m\nencoder.layer.0.weight | \x1b[31mMISSING\x1b[0m")
    out, err = capsys.readouterr()
    assert out == "" and "UNEXPECTED" not in err
    assert "BertModel LOAD REPORT from: m\nencoder.layer.0.weight | MISSING" in err and "\x1b[" not in err


@pytest.mark.slow
def test_minilm_loads_without_third_party_chatter() -> None:
    code = ("from router.encoders import SentenceTransformerEncoder as E; "
            "print(E().encode(['hello there']).shape)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "(1, 384)\n"
    for noise in ("LOAD REPORT", "UNEXPECTED", "Loading weights", "\x1b["):
        assert noise not in done.stderr
