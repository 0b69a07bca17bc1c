"""The evaluation report: files, metrics.json schema, CLI wiring, and what a browser shows."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

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


# --------------------------------------------------------------------------- eleven models, read at a glance
ELEVEN = ["WizardLM/WizardLM-13B-V1.2", "claude-instant-v1", "claude-v1", "claude-v2", "gpt-3.5-turbo-1106",
          "gpt-4-1106-preview", "meta/code-llama-instruct-34b-chat", "meta/llama-2-70b-chat",
          "mistralai/mistral-7b-chat", "mistralai/mixtral-8x7b-chat", "zero-one-ai/Yi-34B-Chat"]


def eleven_outcomes(n: int = 600, seed: int = 0) -> Outcomes:
    """11 models, several close together in cost and quality (their labels compete for the same spot)."""
    rng = np.random.default_rng(seed)
    price = np.array([0.12, 0.36, 3.5, 3.8, 0.42, 5.0, 0.31, 0.37, 0.08, 0.25, 0.33]) / 1000
    skill = np.array([0.56, 0.68, 0.74, 0.57, 0.75, 0.88, 0.62, 0.63, 0.59, 0.75, 0.78])
    tasks = rng.choice(["arc", "mbpp", "winogrande", "gsm8k"], n)
    shift = np.where(tasks == "mbpp", -0.1, 0.05)[:, None]
    q = (rng.random((n, 11)) < np.clip(skill + shift, 0, 1)).astype(float)
    return Outcomes(prompt_ids=[f"p{i}" for i in range(n)], prompts=[f"prompt {i}" for i in range(n)],
                    models=ELEVEN, quality=q, cost=np.tile(price, (n, 1)), tasks=tasks)


LAMS = np.concatenate([[0.0], np.geomspace(1.0, 3000.0, 25)])
OPERATING = float(LAMS[10])


def eleven_result(o: Outcomes, n_bootstrap: int = 100) -> Any:
    rng = np.random.default_rng(2)
    pred = np.clip(0.5 * o.quality + 0.25 + rng.normal(0, 0.15, o.quality.shape), 0, 1)
    learned = np.stack([(pred - lv * o.cost).argmax(axis=1) for lv in LAMS])
    cheapest = np.zeros_like(learned) + int(np.argmin(o.cost[0]))
    return evaluate_curves(o, {"learned": Curve(LAMS, learned, predicted_quality=pred),
                               "cheapest": Curve(LAMS, cheapest)}, n_bootstrap=n_bootstrap, seed=0)


BUDGET = {"router": "learned", "target": "spend_per_1000",
          "rows": [{"target": 0.5, "realised": 0.46, "ratio": 0.92, "rel_error": 0.08, "lam": 160.0, "quality": 0.7}]}


def _lab(hex_colour: str) -> np.ndarray:
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]) / 255.0
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = lin @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    f = np.cbrt(xyz / np.array([0.95047, 1.0, 1.08883]))  # every colour here is above the linear toe
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _colours_present(img: np.ndarray, colours: list[str], min_pixels: int) -> list[str]:
    """The colours of ``colours`` that cover at least ``min_pixels`` pixels of ``img`` (H, W, 3) exactly (+-3)."""
    found = []
    for c in colours:
        rgb = np.array([int(c[i:i + 2], 16) for i in (1, 3, 5)])
        if int((np.abs(img[..., :3].astype(int) - rgb).max(axis=2) <= 3).sum()) >= min_pixels:
            found.append(c)
    return found


def _distinct(colours: list[str], min_delta_e: float) -> bool:
    labs = [_lab(c) for c in colours]
    return all(np.linalg.norm(a - b) >= min_delta_e for i, a in enumerate(labs) for b in labs[i + 1:])


def test_twenty_model_styles_are_distinct() -> None:
    from training.report_plots import MODEL_COLOURS, model_style

    styles = [model_style(j) for j in range(20)]
    assert len({s["color"] for s in styles}) == 20
    assert _distinct(list(MODEL_COLOURS), 25.0)
    assert len({s["marker"] for s in styles[:12]}) == 12


@pytest.mark.slow
def test_share_plot_shows_eleven_distinct_model_colours() -> None:
    from training.report_plots import MODEL_COLOURS, shares_figure

    fig = shares_figure(eleven_result(eleven_outcomes(), n_bootstrap=0), {"learned": OPERATING})
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())
    found = _colours_present(img, list(MODEL_COLOURS[:11]), min_pixels=30)
    assert len(found) == 11 and _distinct(found, 20.0)


@pytest.mark.slow
def test_labels_do_not_overlap() -> None:
    from training.report_plots import cost_quality_figure, settings_figure

    res = eleven_result(eleven_outcomes(), n_bootstrap=0)
    fig = cost_quality_figure(res, {"learned": OPERATING})
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(boxes) == 11  # one label per model
    frame = ax.get_window_extent(renderer)
    for i, a in enumerate(boxes):
        assert frame.x0 <= a.x0 and a.x1 <= frame.x1 and frame.y0 <= a.y0 and a.y1 <= frame.y1
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)
    fig = settings_figure(res, {"learned": OPERATING})
    fig.canvas.draw()
    for ax in fig.axes:
        shown = sorted((t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_visible() and t.get_text()),
                       key=lambda b: b.x0)
        assert len(shown) >= 3
        assert all(a.x1 <= b.x0 for a, b in zip(shown, shown[1:]))


@pytest.mark.slow
def test_operating_point_budget_table_and_task_intervals(tmp_path: Path) -> None:
    o = eleven_outcomes()
    res = eleven_result(o)
    write_report(res, tmp_path, dataset="eleven", operating_points={"learned": OPERATING, "cheapest": None},
                 budget=BUDGET)
    doc = json.loads((tmp_path / "metrics.json").read_text())
    op = doc["routers"]["learned"]["operating_point"]
    assert op["setting"] == pytest.approx(OPERATING)
    k = int(np.flatnonzero(LAMS == OPERATING)[0])
    assert op["cost"] == pytest.approx(doc["routers"]["learned"]["points"][k]["cost"])
    assert "operating_point" not in doc["routers"]["cheapest"]
    # the budget knob is a table of its own, not a router
    assert set(doc["routers"]) == {"learned", "cheapest"} and doc["budget_knob"]["rows"][0]["lam"] == 160.0
    summary = (tmp_path / "summary.md").read_text()
    head = summary.split("## Budget knob fidelity")[0]
    assert "budget" not in head.lower() and "| learned |" in head and f"| {OPERATING:.4g} |" in head
    assert "| learned | 0.5000 | 160 | 0.4600 | 0.920 | 0.700 |" in summary
    page = (tmp_path / "report.html").read_text()
    assert page.count("Budget knob fidelity") == 1 and "operating point" in page
    # per task: the gain over the zero router has a paired interval; always taking the cheapest model loses
    for task, v in doc["routers"]["cheapest"]["per_task"].items():
        lo, hi = v["gain_vs_zero_ci"]
        assert lo <= v["gain_vs_zero"] <= hi and hi < 0, task
    for v in doc["routers"]["learned"]["per_task"].values():
        lo, hi = v["gain_vs_zero_ci"]
        assert lo <= v["gain_vs_zero"] <= hi and lo > 0
        assert v["aiq_ci"][0] <= v["aiq"] <= v["aiq_ci"][1]


def _screenshot(html_file: Path, shot: Path, profile: Path, height: int) -> np.ndarray:
    from PIL import Image

    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--force-color-profile=srgb", f"--user-data-dir={profile}", f"--screenshot={shot}",
           f"--window-size=1280,{height}", html_file.resolve().as_uri()]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    return np.asarray(Image.open(shot).convert("RGB"))


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed; run scripts/ensure_chromium.sh")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    out = make_report(tmp_path / "rep")
    img = _screenshot(out / "report.html", tmp_path / "shot.png", tmp_path / "profile", 4000)
    grey = img.mean(axis=2)
    assert img.shape[:2] == (4000, 1280)
    non_white = float((grey < 240).mean())
    assert non_white > 0.03, f"screenshot is mostly blank ({non_white:.1%} non-white pixels)"
    # the plots fill the page: the lower half is not blank either
    assert float((grey[1500:3000] < 240).mean()) > 0.01


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed; run scripts/ensure_chromium.sh")
def test_eleven_model_report_shows_eleven_distinct_colours_in_chromium(tmp_path: Path) -> None:
    from training.report_plots import MODEL_COLOURS

    write_report(eleven_result(eleven_outcomes()), tmp_path / "rep", dataset="eleven",
                 operating_points={"learned": OPERATING}, budget=BUDGET)
    img = _screenshot(tmp_path / "rep" / "report.html", tmp_path / "shot.png", tmp_path / "profile", 6000)
    found = _colours_present(img, list(MODEL_COLOURS[:11]), min_pixels=200)
    assert found == list(MODEL_COLOURS[:11]), sorted(set(MODEL_COLOURS[:11]) - set(found))
    assert _distinct(found, 20.0)
    # with the palette of before (9 colours, repeated from the 10th model on) this check fails
    old = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
    assert not _distinct([old[j % 9] for j in range(11)], 20.0)
