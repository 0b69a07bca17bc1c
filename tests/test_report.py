"""The evaluation report: files, metrics.json schema, CLI wiring, and what a browser shows."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from router.data.schema import Outcomes
from router.errors import UnknownModelError, ValidationError
from router.metrics import Curve, evaluate_curves
from training.evaluate import load_decisions, main
from training.report import write_report

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def toy_outcomes(n: int = 240, seed: int = 0) -> Outcomes:
    rng = np.random.default_rng(seed)
    skill = np.array([0.45, 0.65, 0.85])
    hard = rng.random(n) < 0.5
    q = (rng.random((n, 3)) < np.where(hard[:, None], skill - 0.25, skill)).astype(float)
    c = np.tile([0.0002, 0.002, 0.02], (n, 1)) * rng.uniform(0.5, 1.5, (n, 1))
    return Outcomes(prompt_ids=[f"p{i}" for i in range(n)], prompts=[f"prompt {i}" for i in range(n)],
                    models=["tiny", "mid", "large"], quality=q, cost=c,
                    tasks=np.where(hard, "hard", "easy"), split=np.where(np.arange(n) % 4 == 0, "train", "test"))


def toy_curves(o: Outcomes) -> dict[str, Curve]:
    rng = np.random.default_rng(1)
    n = o.n_prompts
    pred = np.clip(0.6 * o.quality + 0.2 + rng.normal(0, 0.1, o.quality.shape), 0, 1)
    lams = np.linspace(0, 1, 15)
    util = pred[None] - lams[:, None, None] * (np.log(o.cost[None]) + 9.0) / 5.0
    learned = util.argmax(axis=2)
    rand = rng.integers(0, 3, (15, n))
    return {"learned": Curve(lams, learned, predicted_quality=pred), "random": Curve(lams, rand)}


def make_report(tmp_path: Path) -> Path:
    o = toy_outcomes()
    res = evaluate_curves(o, toy_curves(o), n_bootstrap=100)
    ope_rows = [{"policy": "lambda=0.5", "estimator": e, "method": "normal", "value": v, "low": v - 0.05,
                 "high": v + 0.05} for e, v in [("ips", 0.61), ("snips", 0.6), ("dr", 0.62)]]
    write_report(res, tmp_path, dataset="toy", split="test", ope_rows=ope_rows,
                 ope_diagnostics={"ess": 80.0, "warnings": ["weak overlap: test"]})
    return tmp_path


@pytest.mark.slow
def test_report_files_and_schema(tmp_path: Path) -> None:
    out = make_report(tmp_path)
    page = (out / "report.html").read_text()
    # cost-quality, settings, shares, per-task, calibration, OPE
    assert page.count('<img alt=') == 6
    assert page.count('src="data:image/png;base64,') == 6
    assert "http://" not in page and "https://" not in page  # self-contained
    doc = json.loads((out / "metrics.json").read_text())
    for key in ("schema_version", "dataset", "split", "n_prompts", "models", "single_models", "zero_router",
                "oracle", "routers", "ope"):
        assert key in doc
    r = doc["routers"]["learned"]
    for key in ("aiq", "aiq_ci", "aiq_routerbench", "saving_at_best_pct", "saving_at_best_pct_ci",
                "saving_at_95_pct", "oracle_gap_share", "per_task_aiq"):
        assert key in r
    assert "apgr" not in r  # three models: no RouteLLM metrics
    assert doc["routers"]["learned"]["aiq"] > doc["routers"]["random"]["aiq"]
    assert "| learned |" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_cli_scores_decisions_file(tmp_path: Path) -> None:
    from router.data.registry import save_outcomes

    o = toy_outcomes()
    data = save_outcomes(o, tmp_path / "toy.parquet")
    test = o.where_split("test")
    lams = np.array([0.0, 1.0])
    rows = [{"prompt_id": pid, "setting": float(s), "chosen_model": "large" if s == 0 else "tiny"}
            for s in lams for pid in test.prompt_ids]
    pl.DataFrame(rows).write_parquet(tmp_path / "mine.parquet")
    rc = main(["--dataset", str(data), "--decisions", str(tmp_path / "mine.parquet"), "--out", str(tmp_path / "rep"),
               "--n-bootstrap", "30"])
    assert rc == 0
    doc = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert doc["split"] == "test" and doc["n_prompts"] == test.n_prompts
    # always-large and always-tiny: the hull is the zero router's chord from tiny to large
    assert doc["routers"]["mine"]["aiq"] <= doc["zero_router"]["aiq"] + 1e-9


def test_decisions_errors(tmp_path: Path) -> None:
    o = toy_outcomes(8)
    f = tmp_path / "d.jsonl"
    base = [{"prompt_id": p, "setting": 0.0, "chosen_model": "tiny"} for p in o.prompt_ids]
    pl.DataFrame(base[:-1]).write_ndjson(f)
    with pytest.raises(ValidationError, match="missing"):
        load_decisions(f, o)
    pl.DataFrame(base[:-1] + [{"prompt_id": "p7", "setting": 0.0, "chosen_model": "gpt-9"}]).write_ndjson(f)
    with pytest.raises(UnknownModelError, match="gpt-9"):
        load_decisions(f, o)
    pl.DataFrame(base + [{"prompt_id": "zzz", "setting": 0.0, "chosen_model": "tiny"}]).write_ndjson(f)
    assert load_decisions(f, o.subset(np.arange(8))).choices.shape == (1, 8)  # extra ids ignored when all present
    pl.DataFrame(base[:-1] + [{"prompt_id": "zzz", "setting": 0.0, "chosen_model": "tiny"}]).write_ndjson(f)
    with pytest.raises(ValidationError, match="not in the evaluated data"):
        load_decisions(f, o)
    pl.DataFrame(base + base[:1]).write_ndjson(f)
    with pytest.raises(ValidationError, match="one decision per"):
        load_decisions(f, o)


def test_dispatcher_help(capsys: pytest.CaptureFixture[str]) -> None:
    from training.__main__ import main as dispatch

    assert dispatch(["--help"]) == 0
    assert "evaluate" in capsys.readouterr().out
    assert dispatch(["nope"]) == 2


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed; run scripts/ensure_chromium.sh")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    from PIL import Image

    out = make_report(tmp_path / "rep")
    shot = tmp_path / "shot.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,4000",
           (out / "report.html").resolve().as_uri()]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape[:2] == (4000, 1280)
    non_white = float((img < 240).mean())
    assert non_white > 0.03, f"screenshot is mostly blank ({non_white:.1%} non-white pixels)"
    # the plots fill the page: the lower half is not blank either
    assert float((img[1500:3000] < 240).mean()) > 0.01
