"""Loaders of the public routing data, our long outcomes format, and the error messages of bad input."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.data.loaders import prompts_in_several_splits
from router.data.logs import append_log, read_log
from router.data.paths import data_dir
from router.data.registry import SOURCES, load_source, read_outcomes, save_outcomes
from router.data.schema import DroppedRows, Outcomes
from router.errors import ConfigError, SchemaError, SourceNotFoundError, ValidationError


@pytest.fixture(scope="module")
def data_root() -> Path:
    try:
        return data_dir()
    except SourceNotFoundError as exc:
        pytest.skip(f"public routing data not available: {exc}")


# --------------------------------------------------------------------------- real data: shapes
#: name -> (rows, models, quality_kind, cost_kind, dropped, rows per split or None)
EXPECTED = {
    "routerbench": (3150, 11, "binary", "logged", 28, {"test": 945, "train": 2205}),
    "routellm-mmlu": (14037, 2, "binary", "estimated", 5, None),
    "routellm-gsm8k": (1307, 2, "binary", "estimated", 12, None),
    "routellm-mt-bench": (72, 2, "score", "estimated", 8, None),
    "routerarena": (808, 2, "score", "logged", 1, None),
    "llmrouter": (6108, 9, "score", "estimated", 0, {"test": 500, "train": 5608}),
    "routerdc": (20600, 7, "score", "estimated", 0, {"all": 2881, "test": 10121, "train": 7598}),
}


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_source_shapes(data_root: Path, name: str) -> None:
    rows, models, qkind, ckind, n_dropped, splits = EXPECTED[name]
    o = load_source(name)
    assert o.source == name
    assert (o.n_prompts, o.n_models) == (rows, models)
    assert (o.quality_kind, o.cost_kind) == (qkind, ckind)
    assert o.n_dropped == n_dropped
    assert all(d.reason and d.count > 0 for d in o.dropped)
    assert (None if o.split is None else dict(Counter(o.split))) == splits
    assert len(set(o.prompt_ids)) == o.n_prompts
    assert ((o.quality >= 0) & (o.quality <= 1)).all() and (o.cost >= 0).all()
    assert all(isinstance(p, str) and p for p in o.prompts)
    # the oracle is at least as good as the best single model
    assert o.oracle()["quality"] >= o.quality.mean(axis=0).max() - 1e-12


@pytest.mark.data
def test_routerbench_known_answer(data_root: Path) -> None:
    folder = data_root / "routerdc" / "datasets" / "routerbench_zs"
    raw = sum(pl.read_csv(f, infer_schema_length=0).height for f in folder.glob("*.csv"))
    assert raw == 3178
    start = time.perf_counter()
    o = load_source("routerbench")
    assert time.perf_counter() - start < 3.0
    assert o.n_prompts + o.n_dropped == raw
    assert Counter(o.split) == {"train": 2205, "test": 945}
    assert o.n_models == 11 and "gpt-4-1106-preview" in o.models
    # the 28 dropped rows are the 14 duplicated sample ids, all of ARC-Challenge
    ids = [i for d in o.dropped for i in d.ids]
    assert len(ids) == 28 and len(set(ids)) == 14
    assert all("sample_id occurs in several rows" in d.reason for d in o.dropped)
    assert all(i.startswith("arc-challenge.") for i in ids)
    assert not set(ids) & set(o.prompt_ids)
    # prompt ids unique and never in both splits
    train_ids = set(o.prompt_ids[o.split == "train"])
    assert not train_ids & set(o.prompt_ids[o.split == "test"])
    # prompts are parsed from their python-list strings
    assert not any(p.startswith("['") for p in o.prompts)
    # two MBPP task descriptions occur in both splits (different tasks, same text): kept and reported
    shared = prompts_in_several_splits(o)
    assert sorted(sorted(v) for v in shared.values()) == [
        ["mbpp.dev.278", "mbpp.dev.58"], ["mbpp.dev.29", "mbpp.dev.87"]]
    assert Counter(o.tasks) == {"arc-challenge": 1456, "winogrande": 1267, "mbpp": 427}
    assert o.quality[:, o.model_index("gpt-4-1106-preview")[0]].mean() == pytest.approx(0.8794, abs=1e-4)


@pytest.mark.data
def test_routerbench_pickle_needs_trust(data_root: Path, tmp_path: Path) -> None:
    import pandas as pd

    csv = data_root / "routerdc" / "datasets" / "routerbench_zs" / "winograde_test.csv"
    pkl = tmp_path / "routerbench_0shot.pkl"
    pd.read_csv(csv).head(50).to_pickle(pkl)
    with pytest.raises(ConfigError, match=r"a pickle can run arbitrary code when loaded.*trust_pickle=True"):
        load_source("routerbench", path=pkl)
    o = load_source("routerbench", path=pkl, trust_pickle=True)
    ref = load_source("routerbench", path=csv)
    assert o.split is None and o.n_prompts == 50
    np.testing.assert_array_equal(o.quality, ref.quality[:50])
    np.testing.assert_array_equal(o.cost, ref.cost[:50])
    assert list(o.prompts) == list(ref.prompts[:50])


@pytest.mark.data
def test_routellm_contamination_and_mt_bench(data_root: Path) -> None:
    mmlu = load_source("routellm-mmlu")
    assert mmlu.quality.mean(axis=0) == pytest.approx([0.806, 0.681], abs=1e-3)
    assert len(set(mmlu.tasks)) == 57
    assert all("contaminated" in d.reason for d in mmlu.dropped)
    mt = load_source("routellm-mt-bench")
    assert [i for d in mt.dropped for i in d.ids] == [f"mt-bench/{q}" for q in (81, 88, 91, 92, 101, 104, 120, 122)]
    assert mt.quality.min() >= 0 and mt.quality.max() == 1.0
    # every answer is recovered from the turn-2 judge prompts (the fallback constant is never needed)
    from router.data.loaders.routellm import _answers_from_judge_prompt

    folder = data_root / "routellm" / "routellm" / "evals" / "mt_bench"
    turn2 = [j for j in map(json.loads, (folder / "judgements.jsonl").open()) if j["turn"] == 2]
    assert [len(_answers_from_judge_prompt(j["user_prompt"])) for j in turn2] == [2] * 160
    assert mt.output_tokens is not None and mt.output_tokens.std() > 0
    gsm = load_source("routellm-gsm8k")
    assert gsm.output_tokens is not None and gsm.output_tokens.std() > 0


@pytest.mark.data
def test_routerarena_drops_bad_metric_score(data_root: Path) -> None:
    o = load_source("routerarena")
    assert [d.ids for d in o.dropped] == [("NarrativeQA_4102",)]
    assert o.input_tokens is not None and o.output_tokens is not None
    assert o.cost.sum(axis=0) == pytest.approx([0.14207, 0.03833], abs=1e-4)


def test_loader_docstrings_say_what_quality_and_cost_mean() -> None:
    for mod in ("routerbench", "routellm", "routerarena", "llmrouter", "routerdc"):
        doc = importlib.import_module(f"router.data.loaders.{mod}").__doc__ or ""
        assert "Quality" in doc and "Cost" in doc, mod


# --------------------------------------------------------------------------- settings and registry
def test_data_dir_missing_says_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTING_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(SourceNotFoundError, match=r"Set the environment variable ROUTING_DATA_DIR"):
        data_dir()
    with pytest.raises(SourceNotFoundError, match=r"ROUTING_DATA_DIR"):
        load_source("routerbench")


def test_unknown_source_lists_registered_names() -> None:
    with pytest.raises(SourceNotFoundError, match=r"Unknown data source 'nope'.*Registered names: routerbench, "):
        load_source("nope")
    assert {"routerbench", "routellm-mmlu", "routellm-gsm8k", "routellm-mt-bench", "routerarena",
            "llmrouter", "routerdc", "synthetic", "demo"} <= set(SOURCES)


def test_synthetic_source() -> None:
    o = load_source("synthetic", n_prompts=50, seed=1)
    assert o.n_prompts == 50


# --------------------------------------------------------------------------- our long format
def _long_rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for p in ("p1", "p2", "p3"):
        for m, q, c in (("small", 0.0, 0.001), ("big", 1.0, 0.01)):
            rows.append({"prompt_id": p, "prompt": f"text {p}", "task": "qa", "model": m, "quality": q, "cost": c})
    return rows


def _write(tmp_path: Path, rows: list[dict[str, object]], fmt: str) -> Path:
    if fmt == "jsonl":
        path = tmp_path / "outcomes.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":
        path = tmp_path / "outcomes.csv"
        pl.DataFrame(rows, strict=False).write_csv(path)
    else:
        path = tmp_path / "outcomes.parquet"
        pl.DataFrame(rows, strict=False).write_parquet(path)
    return path


def _edit(index: int, **changes: object) -> list[dict[str, object]]:
    rows = _long_rows()
    rows[index] = {**rows[index], **changes}
    return rows


def _drop_column(name: str) -> list[dict[str, object]]:
    return [{k: v for k, v in r.items() if k != name} for r in _long_rows()]


BAD_OUTCOMES = [
    pytest.param(_drop_column("cost"), SchemaError, r"outcomes\.(jsonl|parquet): missing column\(s\) \['cost'\]",
                 id="missing-column"),
    pytest.param([{**r, "quality": str(r["quality"])} for r in _long_rows()], SchemaError,
                 r"outcomes\.(jsonl|parquet): row 0, column 'quality' has type String \(value '0\.0'\); "
                 r"expected a number\.", id="wrong-type"),
    pytest.param(_edit(3, quality=1.5), ValidationError,
                 r"outcomes\.(jsonl|parquet): row 3, column 'quality' = 1\.5: must be in \[0, 1\]\.",
                 id="quality-above-one"),
    pytest.param(_edit(0, quality=-0.1), ValidationError,
                 r"row 0, column 'quality' = -0\.1: must be in \[0, 1\]\.", id="quality-negative"),
    pytest.param(_edit(2, cost=-0.5), ValidationError,
                 r"outcomes\.(jsonl|parquet): row 2, column 'cost' = -0\.5: must be >= 0 \(USD\)\.",
                 id="negative-cost"),
    pytest.param(_edit(2, prompt_id="p1"), ValidationError,
                 r"duplicate \(prompt_id, model\) = \('p1', 'small'\) at rows \[0, 2\]", id="duplicate-ids"),
    pytest.param(_edit(1, quality=None), ValidationError, r"row 1, column 'quality' is empty or NaN",
                 id="missing-quality"),
    pytest.param(_edit(1, prompt="other text"), ValidationError,
                 r"prompt_id 'p1' has different 'prompt' values", id="inconsistent-prompt"),
]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
@pytest.mark.parametrize(("rows", "error", "message"), BAD_OUTCOMES)
def test_bad_outcomes_files(
    tmp_path: Path, fmt: str, rows: list[dict[str, object]], error: type[Exception], message: str
) -> None:
    path = _write(tmp_path, rows, fmt)
    with pytest.raises(error, match=message):
        load_source(str(path))


def _log_row(**changes: object) -> dict[str, object]:
    row: dict[str, object] = {"request_id": "r1", "timestamp": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                              "prompt": "hi", "chosen_model": "small", "propensity": 0.5, "cost": 0.001}
    row.update(changes)
    return row


BAD_LOGS = [
    pytest.param(_log_row(chosen_model="gpt-9"), {"known_models": ["small", "big"]}, ValidationError,
                 r"row 0, column 'chosen_model' = 'gpt-9': unknown model; known models are \['big', 'small'\]",
                 id="unknown-model"),
    pytest.param({k: v for k, v in _log_row().items() if k != "propensity"}, {}, ValidationError,
                 r"row 0, column 'propensity' = None: must be in \(0, 1\]", id="log-missing-column"),
    pytest.param(_log_row(cost=-1.0), {}, ValidationError, r"row 0, column 'cost' = -1\.0: must be present and >= 0",
                 id="log-negative-cost"),
    pytest.param(_log_row(quality=2.0), {}, ValidationError, r"row 0, column 'quality' = 2\.0: must be in \[0, 1\]",
                 id="log-quality-above-one"),
]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_every_bad_row_and_column_of_a_file_in_one_error(tmp_path: Path, fmt: str) -> None:
    rows = _long_rows()
    rows[1] = {**rows[1], "quality": 1.5}
    rows[2] = {**rows[2], "cost": -0.5}
    rows[4] = {**rows[4], "quality": None}
    rows.append({**rows[0], "prompt": "text p1"})  # (p1, small) twice
    path = _write(tmp_path, rows, fmt)
    with pytest.raises(ValidationError) as info:
        load_source(str(path))
    assert str(info.value) == (
        f"{path}: 4 problems:\n"
        "  duplicate (prompt_id, model) = ('p1', 'small') at rows [0, 6]; each model's outcome on a prompt must "
        "appear once. Drop or merge the duplicates.\n"
        "  row 1, column 'quality' = 1.5: must be in [0, 1].\n"
        "  row 2, column 'cost' = -0.5: must be >= 0 (USD).\n"
        "  row 4, column 'quality' is empty or NaN.")


def test_the_problem_list_is_capped_and_counted_per_column(tmp_path: Path) -> None:
    rows = [{"prompt_id": f"p{i}", "prompt": f"t{i}", "task": "qa", "model": "m", "quality": 2.0, "cost": -1.0}
            for i in range(30)]
    with pytest.raises(ValidationError) as info:
        load_source(str(_write(tmp_path, rows, "csv")))
    lines = str(info.value).splitlines()
    assert lines[0].endswith("outcomes.csv: 60 problems:") and len(lines) == 1 + 20 + 1
    assert lines[1:3] == ["  row 0, column 'quality' = 2.0: must be in [0, 1].",
                          "  row 0, column 'cost' = -1.0: must be >= 0 (USD)."]
    assert lines[-1] == "  ... 40 more not shown; problems per column: 'quality': 30, 'cost': 30."


def test_every_bad_row_of_a_traffic_log_in_one_error(tmp_path: Path) -> None:
    rows = [_log_row(request_id=f"r{i}") for i in range(4)]
    rows[1]["propensity"] = 0.0
    rows[3]["cost"] = -1.0
    rows[3]["chosen_model"] = "gpt-9"
    path = tmp_path / "log.csv"
    pl.DataFrame(rows).write_csv(path)
    with pytest.raises(ValidationError) as info:
        read_log(path, known_models=["small", "big"])
    assert str(info.value) == (
        f"{path}: 3 problems:\n"
        "  row 1, column 'propensity' = 0.0: must be in (0, 1]: it is the probability the logging policy gave the "
        "chosen model.\n"
        "  row 3, column 'cost' = -1.0: must be present and >= 0 (USD), and finite.\n"
        "  row 3, column 'chosen_model' = 'gpt-9': unknown model; known models are ['big', 'small']. Add it to the "
        "pool or filter these rows out.")


def test_csv_traffic_log_reads_like_jsonl(tmp_path: Path) -> None:
    rows = [_log_row(request_id=f"r{i}", prompt=f"00{i}") for i in range(3)]
    pl.DataFrame(rows).write_csv(tmp_path / "log.csv")
    append_log(rows, tmp_path / "log.jsonl")
    a, b = read_log(tmp_path / "log.csv"), read_log(tmp_path / "log.jsonl")
    assert a.select(b.columns).equals(b)
    assert a["prompt"].to_list() == ["000", "001", "002"]  # text stays text
    from router.errors import SchemaError as Schema

    with pytest.raises(Schema, match=r"CSV logs are read, not appended to; append to a \.jsonl file"):
        append_log(rows, tmp_path / "new.csv")


@pytest.mark.parametrize(("row", "kw", "error", "message"), BAD_LOGS)
def test_bad_traffic_logs(
    tmp_path: Path, row: dict[str, object], kw: dict[str, object], error: type[Exception], message: str
) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps({k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in row.items()}) + "\n")
    with pytest.raises(error, match=message):
        read_log(path, **kw)


def test_traffic_log_frame_missing_required_column() -> None:
    from router.data.validate import validate_traffic_log

    df = pl.DataFrame([{k: v for k, v in _log_row().items() if k != "propensity"}])
    with pytest.raises(SchemaError, match=r"log\.jsonl: missing required column\(s\) \['propensity'\]"):
        validate_traffic_log(df, source="log.jsonl")


def test_good_traffic_log_with_known_models(tmp_path: Path) -> None:
    append_log([_log_row()], tmp_path / "log.jsonl")
    assert read_log(tmp_path / "log.jsonl", known_models=["small"]).height == 1


def test_prompts_missing_some_models_are_dropped_visibly(tmp_path: Path) -> None:
    rows = [r for r in _long_rows() if not (r["prompt_id"] == "p2" and r["model"] == "big")]
    o = read_outcomes(_write(tmp_path, rows, "parquet"))
    assert list(o.prompt_ids) == ["p1", "p3"] and list(o.models) == ["small", "big"]
    assert [(d.count, d.ids) for d in o.dropped] == [(1, ("p2",))]
    assert "lacks outcomes for some of the 2 models" in o.dropped[0].reason


def test_options_on_a_path_are_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, _long_rows(), "parquet")
    with pytest.raises(ConfigError, match=r"options \['seed'\] apply to registered sources only"):
        load_source(str(path), seed=1)


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    o = Outcomes(prompt_ids=["a", "b"], prompts=["x", "y"], models=["m1", "m2"], quality=[[0.2, 1], [1, 0]],
                 cost=[[0.1, 0.2], [0.3, 0.4]], tasks=["t1", "t2"], latency=[[1, 2], [3, 4]],
                 input_tokens=[[10, 10], [20, 20]], output_tokens=[[5, 6], [7, 8]], split=["train", "test"],
                 source="mine", quality_kind="score", cost_kind="tokens",
                 dropped=(DroppedRows("why", 2, ("z", "w"), "f.csv"),))
    back = read_outcomes(save_outcomes(o, tmp_path / "dir"))
    assert back.content_hash() == o.content_hash()
    for name in ("latency", "input_tokens", "output_tokens"):
        np.testing.assert_array_equal(getattr(back, name), getattr(o, name))
    assert list(back.split) == ["train", "test"] and list(back.tasks) == ["t1", "t2"]
    assert (back.source, back.quality_kind, back.cost_kind) == ("mine", "score", "tokens")
    assert back.dropped == o.dropped


@pytest.mark.slow
@pytest.mark.data
def test_round_trip_real_data(data_root: Path, tmp_path: Path) -> None:
    o = load_source("routerbench")
    back = load_source(str(save_outcomes(o, tmp_path / "rb.parquet")))
    assert back.content_hash() == o.content_hash()
    assert list(back.prompts) == list(o.prompts) and list(back.split) == list(o.split)
    assert back.n_dropped == 28


# --------------------------------------------------------------------------- properties
_ids = st.lists(st.text(alphabet="abcdef0123", min_size=1, max_size=6), min_size=1, max_size=6, unique=True)
_models = st.lists(st.sampled_from(["m1", "m2", "m3", "m4"]), min_size=1, max_size=4, unique=True)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=_ids, models=_models, data=st.data())
def test_long_format_round_trip_property(tmp_path: Path, ids: list[str], models: list[str], data: st.DataObject) -> None:
    n, m = len(ids), len(models)
    unit = st.floats(0, 1, allow_nan=False)
    quality = np.array(data.draw(st.lists(unit, min_size=n * m, max_size=n * m))).reshape(n, m)
    cost = np.array(data.draw(st.lists(st.floats(0, 10, allow_nan=False), min_size=n * m, max_size=n * m)))
    o = Outcomes(prompt_ids=ids, prompts=[f"q {i}" for i in ids], models=models, quality=quality,
                 cost=cost.reshape(n, m), source="prop")
    back = read_outcomes(save_outcomes(o, tmp_path / f"{abs(hash((tuple(ids), tuple(models))))}.parquet"))
    assert back.content_hash() == o.content_hash()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=st.one_of(st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
                     st.floats(min_value=1 + 1e-9, allow_nan=False, allow_infinity=False)),
       row=st.integers(0, 5))
def test_quality_out_of_range_always_named(tmp_path: Path, bad: float, row: int) -> None:
    path = _write(tmp_path, _edit(row, quality=bad), "parquet")
    with pytest.raises(ValidationError, match=rf"row {row}, column 'quality' = .*: must be in \[0, 1\]"):
        read_outcomes(path)


def test_describe_error_names_file(tmp_path: Path) -> None:
    path = _write(tmp_path, _drop_column("model"), "parquet")
    with pytest.raises(SchemaError, match=re.escape(str(path))):
        load_source(str(path))
