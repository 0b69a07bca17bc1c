"""``python -m training bandit``: a small run writes metrics.json and a loadable policy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from router.policies import load_policy
from training.bandit import Args, build_parser, main, run

REQUIRED = ("steps", "policy_reward", "best_fixed_reward", "oracle_reward", "regret")


def test_args_parser_round_trip() -> None:
    ns = build_parser().parse_args(["--policy", "thompson", "--steps", "10", "--lam", "2.5", "--track"])
    args = Args(**vars(ns))
    assert (args.policy, args.steps, args.lam, args.track) == ("thompson", 10, 2.5, True)
    assert build_parser().parse_args([]).track is False


@pytest.mark.parametrize("policy", ["linucb", "egreedy", "thompson"])
def test_cli_writes_metrics_and_policy(policy: str, tmp_path) -> None:
    out = tmp_path / policy
    rc = main(["--policy", policy, "--steps", "300", "--n-prompts", "200", "--batch-size", "25",
               "--lam", "10", "--encoder", "features", "--out", str(out)])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in REQUIRED:
        assert key in metrics
    assert metrics["steps"] == 300
    assert metrics["regret"] == pytest.approx(metrics["oracle_reward"] - metrics["policy_reward"])
    assert metrics["oracle_reward"] >= metrics["best_fixed_reward"] - 1e-9
    assert len(metrics["curves"]["regret"]) == 12
    assert metrics["args"]["policy"] == policy
    pol = load_policy(out / "policy")
    cfg = json.loads((out / "policy" / "policy.json").read_text())  # the one component format
    assert cfg["kind"] == policy and pol.n_actions == len(metrics["model_names"])
    p = pol.select(np.ones(pol.dim, dtype=np.float32) * 0.1)
    assert p.sum() == pytest.approx(1.0)


def test_tracker_hook_gets_params_and_batched_metrics(tmp_path) -> None:
    calls = []
    args = Args(steps=100, batch_size=50, n_prompts=100, encoder="hashing", hashing_dim=16, out=str(tmp_path))
    run(args, tracker=lambda params, rows: calls.append((params, rows)))
    assert len(calls) == 1
    params, rows = calls[0]
    assert params == vars(args)
    assert {name for name, _, _ in rows} >= {"bandit/policy_reward", "bandit/regret"}
    assert all(name.startswith("bandit/") for name, _, _ in rows)


def test_bad_arguments_return_error_code(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:  # a usage error: nothing is loaded or run
        main(["--policy", "nope", "--steps", "10", "--n-prompts", "50", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "error: --policy must be one of egreedy, linucb, neural, thompson; got 'nope'." in capsys.readouterr().err


@pytest.mark.slow
def test_track_logs_to_mlflow_in_batches(tmp_path, monkeypatch) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    rc = main(["--steps", "100", "--n-prompts", "100", "--batch-size", "25", "--track", "--encoder", "features",
               "--experiment", "bandit-test", "--out", str(tmp_path / "run")])
    assert rc == 0
    client = mlflow.tracking.MlflowClient()
    exp = client.get_experiment_by_name("bandit-test")
    (r,) = client.search_runs([exp.experiment_id])
    assert r.data.params["policy"] == "linucb"
    assert len(client.get_metric_history(r.info.run_id, "bandit/regret")) == 4


def test_tracking_failure_keeps_results(tmp_path, capsys) -> None:
    def broken(params, rows):
        raise RuntimeError("no server")

    args = Args(steps=50, batch_size=25, n_prompts=50, encoder="features", out=str(tmp_path))
    metrics = run(args, tracker=broken)
    assert "no server" in metrics["tracking_error"] and (tmp_path / "metrics.json").is_file()
    assert "tracking failed" in capsys.readouterr().err


@pytest.mark.slow
def test_warm_start_from_offline_router_lowers_regret(tmp_path) -> None:
    """A policy started from an offline router's predictions has less regret over the same replay."""
    from training.fit import Args as FitArgs
    from training.fit import train

    train(FitArgs(dataset="synthetic", predictor="logistic", encoder="hashing", out=str(tmp_path / "off"),
                  track=False))
    base = ["--dataset", "synthetic", "--policy", "linucb", "--steps", "1500", "--lam", "20"]
    assert main([*base, "--out", str(tmp_path / "cold")]) == 0
    assert main([*base, "--out", str(tmp_path / "warm"), "--warm-start", str(tmp_path / "off")]) == 0
    cold = json.loads((tmp_path / "cold" / "metrics.json").read_text())
    warm = json.loads((tmp_path / "warm" / "metrics.json").read_text())
    assert warm["regret"] < 0.8 * cold["regret"]
