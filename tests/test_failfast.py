"""Bad input fails fast and clearly: one ``Args`` convention for every training command, arguments and
input files checked before any model loads or MLflow run starts, one-line registry errors, CSV input.

The table :data:`BAD_ARGS` holds each bad command line with the exact message it gives.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from training._cli import arg, check_args, dataclass_parser, note

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("fit", "tune", "bandit", "evaluate", "promote", "demo")


def _outcome_rows(n: int = 4) -> list[dict[str, object]]:
    rows = []
    for i in range(n):
        for model, q, c in (("small", i % 2, 0.001), ("big", 1.0, 0.01)):
            rows.append({"prompt_id": f"p{i}", "prompt": f"question {i}", "task": "qa", "model": model,
                         "quality": float(q), "cost": c})
    return rows


@pytest.fixture()
def bad_csv(tmp_path: Path) -> Path:
    """An outcomes CSV with three bad cells in three rows and two columns."""
    rows = _outcome_rows()
    rows[1]["quality"] = 1.5
    rows[2]["cost"] = -0.5
    rows[5]["quality"] = -0.1
    path = tmp_path / "bad.csv"
    pl.DataFrame(rows).write_csv(path)
    return path


# --------------------------------------------------------------------------- the Args convention
@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_has_help_and_lists_its_allowed_values(command: str) -> None:
    module = importlib.import_module(f"training.{command}")
    parser = dataclass_parser(module.Args, f"python -m training {command}", None)
    flags = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert set(flags) == {f.name for f in dataclasses.fields(module.Args)}
    for f in dataclasses.fields(module.Args):
        action = flags[f.name]
        assert action.help and len(action.help) > 10, f"{command} --{f.name} has no help text"
        choices = f.metadata.get("choices")
        listed = tuple(choices()) if callable(choices) else choices
        if listed:
            assert action.metavar == "{" + ",".join(map(str, listed)) + "}"
        if f.metadata.get("bounds"):
            assert "a number" in action.help or "an integer" in action.help
    text = parser.format_help()
    for f in dataclasses.fields(module.Args):
        choices = f.metadata.get("choices")
        for choice in (choices() if callable(choices) else choices) or ():
            assert str(choice) in text


def test_a_field_without_help_is_refused() -> None:
    @dataclasses.dataclass
    class Bad:
        steps: int = 3

    with pytest.raises(TypeError, match=r"Bad\.steps: every Args field needs help text"):
        dataclass_parser(Bad, "x", None)


def test_checks_apply_to_arguments_built_in_code() -> None:
    from router.errors import ConfigError
    from training.fit import Args

    with pytest.raises(ConfigError, match=r"--predictor must be one of ensemble, knn, logistic, matrix_factorization, mf, mlp; got 'svm'\."):
        check_args(Args(predictor="svm"))
    with pytest.raises(ConfigError, match=r"--prompt-stats must be a finite number; got nan\."):
        check_args(Args(prompt_stats=float("nan")))


def test_vars_of_args_is_what_gets_logged() -> None:
    from training.tracking import _params_of
    from training.tune import Args

    args = Args(seed=5, policy="thompson")
    assert _params_of(args) == {k: str(v) for k, v in vars(args).items()}


def test_a_note_prints_once(capsys: pytest.CaptureFixture[str]) -> None:
    note("demo has no source-given split (test)")
    note("demo has no source-given split (test)")
    assert capsys.readouterr().err.count("note: demo has no source-given split (test)") == 1


def test_arg_rejects_values_outside_bounds() -> None:
    @dataclasses.dataclass
    class A:
        share: float = arg(0.5, help="a share of requests", ge=0, le=1)

    from router.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--share must be a number >= 0 and <= 1; got 1\.5\."):
        check_args(A(share=1.5))


# --------------------------------------------------------------------------- the bad-input table
#: (argv of python -m training, exact message on stderr). Argument errors are usage errors (exit 2).
BAD_ARGS = [
    pytest.param(["fit", "--predictor", "svm"],
                 "error: --predictor must be one of ensemble, knn, logistic, matrix_factorization, mf, mlp; got 'svm'.",
                 id="fit-unknown-router"),
    pytest.param(["fit", "--encoder", "bert"], "error: --encoder must be one of hashing, minilm, sentence_transformer, static; got 'bert'.", id="fit-unknown-encoder"),
    pytest.param(["fit", "--test-fraction", "1.5"], "error: --test-fraction must be a number > 0 and < 1; got 1.5.",
                 id="fit-test-fraction"),
    pytest.param(["fit", "--strong-share", "0.2", "--keep-quality", "0.9"],
                 "error: give at most one of --spend-per-1000, --strong-share and --keep-quality.",
                 id="fit-two-targets"),
    pytest.param(["fit", "--lam", "10", "--spend-per-1000", "1"],
                 "error: --lam and --spend-per-1000 both set lambda; give one of them.", id="fit-lam-and-target"),
    pytest.param(["fit", "--register", "r", "--no-track"],
                 "error: --register needs --track: the router is registered from its MLflow run.",
                 id="fit-register-untracked"),
    pytest.param(["fit", "--dataset", "nope", "--no-track"],
                 "error: Unknown data source 'nope': not a registered name and no such file or directory. "
                 "Registered names: routerbench, routellm-mmlu", id="fit-unknown-dataset"),
    pytest.param(["fit", "--dataset", "{bad_csv}", "--no-track"],
                 "error: {bad_csv}: 3 problems:\n"
                 "  row 1, column 'quality' = 1.5: must be in [0, 1].\n"
                 "  row 2, column 'cost' = -0.5: must be >= 0 (USD).\n"
                 "  row 5, column 'quality' = -0.1: must be in [0, 1].", id="fit-bad-csv-every-row"),
    pytest.param(["tune", "--n-trials", "0"], "error: --n-trials must be an integer >= 1; got 0.",
                 id="tune-no-trials"),
    pytest.param(["tune", "--policy", "ucb"], "error: --policy must be one of egreedy, linucb, neural, thompson; "
                 "got 'ucb'.", id="tune-unknown-policy"),
    pytest.param(["tune", "--log", "missing.jsonl"], "error: --log missing.jsonl: no such traffic log.",
                 id="tune-missing-log"),
    pytest.param(["bandit", "--epsilon", "2"], "error: --epsilon must be a number >= 0 and <= 1; got 2.0.",
                 id="bandit-epsilon"),
    pytest.param(["bandit", "--dataset", "demo", "--encoder", "features"],
                 "error: --encoder features is only for --dataset synthetic.", id="bandit-features"),
    pytest.param(["bandit", "--warm-start", "no/such/router"],
                 "error: --warm-start no/such/router: no such router directory.", id="bandit-warm-start"),
    pytest.param(["evaluate", "--dataset", "demo", "--out", "{tmp}/r"],
                 "error: give --model and/or --decisions: there is nothing to evaluate.", id="evaluate-nothing"),
    pytest.param(["evaluate", "--dataset", "demo", "--out", "{tmp}/r", "--decisions", "missing.parquet"],
                 "error: --decisions missing.parquet: no such decisions file.", id="evaluate-missing-decisions"),
    pytest.param(["evaluate", "--dataset", "demo", "--out", "{tmp}/r", "--model", "models:/r@champion",
                  "--budgets", "1,x"], "error: --budgets must be comma-separated numbers, got '1,x'.",
                 id="evaluate-bad-budgets"),
    pytest.param(["evaluate", "--dataset", "{bad_csv}", "--out", "{tmp}/r", "--model", "models:/r@champion",
                  "--no-track"], "error: {bad_csv}: 3 problems:", id="evaluate-bad-data"),
    pytest.param(["evaluate", "--dataset", "demo", "--out", "{bad_csv}", "--model", "models:/r@champion"],
                 "error: --out {bad_csv} is an existing file; give a directory.", id="evaluate-out-is-a-file"),
    pytest.param(["promote", "--name", "r", "--candidate", "v3"],
                 "error: --candidate must be a version number such as 3, got 'v3'.", id="promote-candidate"),
    pytest.param(["promote", "--name", "r", "--candidate", "3", "--alias", "prod"],
                 "error: --alias must be one of champion, challenger; got 'prod'.", id="promote-alias"),
    pytest.param(["demo", "--encoder", "bert"], "error: --encoder must be one of static, minilm, hashing; got 'bert'.", id="demo-encoder"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_ARGS)
def test_bad_input_exits_2_with_its_message(argv: list[str], message: str, bad_csv: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from training.__main__ import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'never.db'}")
    fill = {"bad_csv": str(bad_csv), "tmp": str(tmp_path)}
    argv = [a.format(**fill) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert message.format(**fill) in err
    assert "Traceback" not in err
    assert not (tmp_path / "never.db").exists()  # no MLflow run, not even a store


def test_data_describe_reads_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from router.cli import main

    path = tmp_path / "o.csv"
    pl.DataFrame(_outcome_rows()).write_csv(path)
    assert main(["data", "describe", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == 4 and out["models"] == ["small", "big"]
    assert out["per_model"][0] == {"model": "small", "mean_quality": 0.5, "mean_cost": pytest.approx(0.001)}


def test_data_describe_lists_every_bad_row_of_a_csv(bad_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from router.cli import main

    assert main(["data", "describe", str(bad_csv)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n  row ") == 3 and err.startswith(f"error: {bad_csv}: 3 problems:")


# --------------------------------------------------------------------------- registry errors
@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.mark.slow
def test_promote_unknown_model_is_one_line_naming_the_registered_ones(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow

    from training.promote import main

    mlflow.set_tracking_uri(store)
    mlflow.MlflowClient().create_registered_model("demo-router")
    capsys.readouterr()  # mlflow's own notes about creating the store
    assert main(["--name", "demo-ruoter", "--candidate", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "error: no registered model named 'demo-ruoter'; registered models: demo-router.\n"
    assert main(["--name", "demo-router", "--candidate", "7"]) == 2
    assert capsys.readouterr().err == "error: 'demo-router' has no version 7; its versions: none.\n"


# --------------------------------------------------------------------------- nothing heavy, no run
_PROBE = """
import sys
from training.__main__ import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("torch", "sentence_transformers", "transformers", "model2vec") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
sys.exit(code)
"""


@pytest.mark.slow
@pytest.mark.parametrize("argv", [
    ["fit", "--dataset", "nope"],
    ["fit", "--dataset", "{bad_csv}", "--encoder", "minilm"],
    ["fit", "--predictor", "svm"],
    ["evaluate", "--dataset", "nope", "--out", "{tmp}/r", "--model", "models:/x@champion"],
    ["tune", "--dataset", "{bad_csv}", "--encoder", "minilm"],
], ids=["fit-dataset", "fit-bad-file", "fit-router", "evaluate-dataset", "tune-bad-file"])
def test_bad_input_fails_without_torch_and_without_an_mlflow_run(argv: list[str], bad_csv: Path,
                                                                 tmp_path: Path) -> None:
    import mlflow

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    mlflow.set_tracking_uri(uri)
    mlflow.MlflowClient().create_experiment("routing-fit")  # an initialised store the command could write to
    fill = {"bad_csv": str(bad_csv), "tmp": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", _PROBE, *[a.format(**fill) for a in argv]], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    assert done.returncode == 2, done.stderr
    assert "HEAVY=\n" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr
    with sqlite3.connect(db) as con:
        assert con.execute("select count(*) from runs").fetchone()[0] == 0
