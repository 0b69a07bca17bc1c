"""``python -m router data describe``: text and JSON output, clear errors, no heavy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from router.cli import main
from router.data.paths import data_dir
from router.data.registry import save_outcomes
from router.data.schema import DroppedRows, Outcomes
from router.errors import SourceNotFoundError

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ}, timeout=120)


@pytest.fixture()
def small_file(tmp_path: Path) -> Path:
    o = Outcomes(prompt_ids=["a", "b", "c"], prompts=["x", "y", "x"], models=["small", "big"],
                 quality=[[0, 1], [1, 1], [0, 0]], cost=[[0.001, 0.01], [0.001, 0.01], [0.002, 0.02]],
                 tasks=["qa", "math", "qa"], split=["train", "test", "test"], source="tiny",
                 dropped=(DroppedRows("bad row", 2, ("d", "e"), "raw.csv"),))
    return save_outcomes(o, tmp_path / "tiny.parquet")


def test_describe_json_in_process(small_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "describe", str(small_file), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == 3 and out["models"] == ["small", "big"]
    assert out["tasks"] == {"qa": 2, "math": 1}
    assert out["splits"] == {"test": 2, "train": 1}
    assert out["oracle"] == pytest.approx({"quality": 2 / 3, "cost": (0.01 + 0.001 + 0.002) / 3})
    assert out["per_model"][1] == {"model": "big", "mean_quality": pytest.approx(2 / 3),
                                   "mean_cost": pytest.approx(0.04 / 3)}
    assert out["dropped"] == [{"reason": "bad row", "count": 2, "file": "raw.csv"}]
    assert out["prompts_in_several_splits"] == [{"prompt": "x", "prompt_ids": ["a", "c"]}]


def test_describe_text(small_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "describe", str(small_file)]) == 0
    out = capsys.readouterr().out
    assert "rows:    3" in out and "oracle" in out and "bad row [raw.csv]" in out and "train 1" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "describe", "no-such-source"], "error: Unknown data source 'no-such-source'"),
        (["data", "describe", "bad.parquet"], "bad.parquet: missing column(s) ['quality']"),
    ],
)
def test_bad_input_exits_2_without_traceback(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import polars as pl

    monkeypatch.chdir(tmp_path)
    pl.DataFrame({"prompt_id": ["a"], "prompt": ["x"], "task": ["t"], "model": ["m"], "cost": [0.1]}).write_parquet(
        tmp_path / "bad.parquet")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["data"])
    assert exc.value.code == 2


@pytest.mark.slow
def test_subprocess_error_and_no_heavy_imports(small_file: Path) -> None:
    bad = _run("data", "describe", "nope")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    code = ("import sys; from router.cli import main; main(['data', 'describe', sys.argv[1]]); "
            "heavy = [m for m in ('torch', 'sentence_transformers', 'litellm') if m in sys.modules]; "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code, str(small_file)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
@pytest.mark.data
def test_describe_routerbench_json_subprocess() -> None:
    try:
        data_dir()
    except SourceNotFoundError as exc:
        pytest.skip(f"public routing data not available: {exc}")
    done = _run("data", "describe", "routerbench", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert {"rows", "models", "tasks", "per_model", "oracle", "dropped", "splits"} <= set(out)
    assert out["rows"] == 3150 and len(out["models"]) == 11
    assert out["splits"] == {"test": 945, "train": 2205}
    assert sum(d["count"] for d in out["dropped"]) == 28
    assert out["oracle"]["quality"] == pytest.approx(0.9756, abs=1e-4)
    assert len(out["prompts_in_several_splits"]) == 2
