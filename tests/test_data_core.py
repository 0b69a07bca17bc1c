"""The two typed forms of the toolkit: :class:`Outcomes` and traffic logs (read, append, validate).

Bad input is tested from tables (error type + message fragment); every value error names its row and
column. Loader-level file errors live in ``test_loaders.py`` and are not repeated here.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from router.data.logs import append_log, conform_log, read_log, scan_log
from router.data.schema import TRAFFIC_LOG_REQUIRED, TRAFFIC_LOG_SCHEMA, DroppedRows, Outcomes
from router.data.validate import validate_traffic_log
from router.errors import DataError, SchemaError, SourceNotFoundError, UnknownModelError, ValidationError

UTC = dt.UTC


# =========================================================================== Outcomes
def _outcomes_kwargs(**changes: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "prompt_ids": ["a", "b", "c"],
        "prompts": ["x", "y", "z"],
        "models": ["small", "big"],
        "quality": [[0.0, 1.0], [1.0, 1.0], [0.0, 0.5]],
        "cost": [[0.001, 0.01], [0.001, 0.01], [0.002, 0.02]],
        "tasks": ["qa", "math", "qa"],
        "source": "tiny",
    }
    kw.update(changes)
    return kw


def _with_cell(name: str, r: int, c: int, value: Any) -> list[list[Any]]:
    grid = [list(row) for row in _outcomes_kwargs()[name]]
    grid[r][c] = value
    return grid


_GRID_2x2 = [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]


def _grid(r: int, c: int, value: Any) -> list[list[Any]]:
    grid = [list(row) for row in _GRID_2x2]
    grid[r][c] = value
    return grid


#: (changes to a valid Outcomes, error type, message fragment)
BAD_OUTCOMES = [
    pytest.param({"quality": _with_cell("quality", 1, 0, "high")}, SchemaError,
                 r"Outcomes\.quality: row 1, column 'small' has 'high'; expected a number\.", id="wrong-type-quality"),
    pytest.param({"cost": _with_cell("cost", 2, 1, "$0.02")}, SchemaError,
                 r"Outcomes\.cost: row 2, column 'big' has '\$0\.02'; expected a number\.", id="wrong-type-cost"),
    pytest.param({"quality": _with_cell("quality", 2, 1, 1.5)}, ValidationError,
                 r"tiny: quality must be \[0, 1\]; row 2 \(prompt_id 'c'\), column 'big' has .*1\.5",
                 id="quality-above-one"),
    pytest.param({"quality": _with_cell("quality", 0, 0, -0.01)}, ValidationError,
                 r"tiny: quality must be \[0, 1\]; row 0 \(prompt_id 'a'\), column 'small' has .*-0\.01",
                 id="quality-negative"),
    pytest.param({"quality": _with_cell("quality", 1, 1, math.nan)}, ValidationError,
                 r"tiny: quality is missing or not finite at row 1 \(prompt_id 'b'\), column 'big'; drop or fill these rows",
                 id="quality-nan"),
    pytest.param({"cost": _with_cell("cost", 1, 0, -0.5)}, ValidationError,
                 r"tiny: cost must be >= 0; row 1 \(prompt_id 'b'\), column 'small' has .*-0\.5", id="negative-cost"),
    pytest.param({"cost": _with_cell("cost", 2, 0, math.inf)}, ValidationError,
                 r"tiny: cost is missing or not finite at row 2 \(prompt_id 'c'\), column 'small'", id="infinite-cost"),
    pytest.param({"latency": _grid(1, 1, -2.0)}, ValidationError,
                 r"tiny: latency must be finite and >= 0; row 1 \(prompt_id 'b'\), column 'big'",
                 id="negative-latency"),
    pytest.param({"output_tokens": _grid(2, 0, math.nan)}, ValidationError,
                 r"tiny: output_tokens must be finite and >= 0; row 2 \(prompt_id 'c'\), column 'small'",
                 id="nan-tokens"),
    pytest.param({"prompt_ids": ["a", "b", "a"]}, ValidationError,
                 r"tiny: duplicate prompt_id \['a'\] \(first repeat at row 2\); prompt ids must be unique",
                 id="duplicate-prompt-ids"),
    pytest.param({"models": ["big", "big"]}, ValidationError,
                 r"Outcomes\.models has duplicate names \['big'\]; model names must be unique", id="duplicate-models"),
    pytest.param({"models": []}, SchemaError, r"Outcomes\.models is empty", id="no-models"),
    pytest.param({"quality": [[0.0, 1.0, 1.0]] * 3}, SchemaError,
                 r"Outcomes\.quality must have shape \(n_prompts, n_models\) = \(3, 2\), got \(3, 3\)",
                 id="quality-wrong-shape"),
    pytest.param({"cost": [0.1, 0.2, 0.3]}, SchemaError,
                 r"Outcomes\.cost must have shape \(n_prompts, n_models\) = \(3, 2\), got \(3,\)",
                 id="cost-one-dimensional"),
    pytest.param({"latency": [[1.0, 1.0]]}, SchemaError, r"Outcomes\.latency must have shape .* got \(1, 2\)",
                 id="latency-wrong-shape"),
    pytest.param({"prompts": ["x", "y"]}, SchemaError,
                 r"Outcomes\.prompts must have shape \(3,\) like prompt_ids, got \(2,\)", id="prompts-wrong-length"),
    pytest.param({"prompt_ids": [["a", "b", "c"]]}, SchemaError,
                 r"Outcomes\.prompt_ids must be one-dimensional, got shape \(1, 3\)", id="prompt-ids-2d"),
    pytest.param({"tasks": ["qa"]}, SchemaError, r"Outcomes\.tasks must have shape \(3,\), got \(1,\)",
                 id="tasks-wrong-length"),
    pytest.param({"split": ["train", "test"]}, SchemaError, r"Outcomes\.split must have shape \(3,\)",
                 id="split-wrong-length"),
    pytest.param({"timestamps": ["2026-01-01"]}, SchemaError, r"Outcomes\.timestamps must have shape \(3,\)",
                 id="timestamps-wrong-length"),
    pytest.param({"messages": [None]}, SchemaError, r"Outcomes\.messages must have shape \(3,\)",
                 id="messages-wrong-length"),
    pytest.param({"quality_kind": "percent"}, SchemaError, r"quality_kind must be 'binary' or 'score', got 'percent'",
                 id="bad-quality-kind"),
    pytest.param({"cost_kind": "guessed"}, SchemaError, r"cost_kind must be 'logged', 'tokens' or 'estimated'",
                 id="bad-cost-kind"),
]


@pytest.mark.parametrize(("changes", "error", "message"), BAD_OUTCOMES)
def test_bad_outcomes(changes: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message) as info:
        Outcomes(**_outcomes_kwargs(**changes))
    assert isinstance(info.value, DataError)  # one exception tree: callers catch DataError


@pytest.mark.parametrize(
    ("name", "r", "c"), [("quality", 0, 1), ("quality", 2, 0), ("cost", 1, 1), ("cost", 2, 0)]
)
def test_outcomes_value_errors_name_row_and_column(name: str, r: int, c: int) -> None:
    bad = -1.0 if name == "cost" else 2.0
    with pytest.raises(ValidationError) as info:
        Outcomes(**_outcomes_kwargs(**{name: _with_cell(name, r, c, bad)}))
    msg = str(info.value)
    assert f"row {r} (prompt_id {'abc'[r]!r})" in msg
    assert f"column {['small', 'big'][c]!r}" in msg


@pytest.fixture()
def outcomes() -> Outcomes:
    return Outcomes(**_outcomes_kwargs(split=["train", "test", "test"], latency=[[1, 2], [3, 4], [5, 6]],
                                       timestamps=np.array(["2026-01-01", "2026-01-02", "2026-01-03"],
                                                           dtype="datetime64[us]"),
                                       dropped=(DroppedRows("no answer", 2, ("q", "r"), "raw.csv"),)))


def test_outcomes_arrays_are_read_only_copies(outcomes: Outcomes) -> None:
    for name in ("prompt_ids", "prompts", "quality", "cost", "tasks", "latency", "split", "timestamps"):
        arr = getattr(outcomes, name)
        assert not arr.flags.writeable, name
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = arr[0]
    src = np.array([[0.0, 1.0], [1.0, 1.0]])
    o = Outcomes(prompt_ids=["a", "b"], prompts=["x", "y"], models=["s", "b"], quality=src, cost=np.zeros((2, 2)))
    src[0, 0] = 1.0  # the caller's array stays writable and is not aliased
    assert o.quality[0, 0] == 0.0 and src.flags.writeable
    assert isinstance(o.models, tuple)


def test_outcomes_basic_views(outcomes: Outcomes) -> None:
    assert (outcomes.n_prompts, outcomes.n_models, len(outcomes)) == (3, 2, 3)
    assert outcomes.n_dropped == 2
    assert outcomes.dropped[0].as_dict() == {"reason": "no answer", "count": 2, "ids": ["q", "r"], "file": "raw.csv"}
    assert "source='tiny'" in repr(outcomes) and "dropped=2" in repr(outcomes)
    assert Outcomes(prompt_ids=["a"], prompts=["x"], models=["m"], quality=[[1]], cost=[[0]]).tasks.tolist() == [
        "unknown"
    ]


def test_model_index(outcomes: Outcomes) -> None:
    assert outcomes.model_index("big").tolist() == [1]
    assert outcomes.model_index(["big", "small"]).tolist() == [1, 0]
    with pytest.raises(UnknownModelError, match=r"Unknown model\(s\) \['gpt-9'\]; this data has models \['small', 'big'\]"):
        outcomes.model_index(["small", "gpt-9"])
    with pytest.raises(KeyError):  # UnknownModelError is also a KeyError
        outcomes.model_index("gpt-9")


def test_subset_rows_mask_and_models(outcomes: Outcomes) -> None:
    sub = outcomes.subset([2, 0], models=["big"])
    assert sub.prompt_ids.tolist() == ["c", "a"] and sub.models == ("big",)
    assert sub.quality.tolist() == [[0.5], [1.0]] and sub.cost.tolist() == [[0.02], [0.01]]
    assert sub.latency.tolist() == [[6.0], [2.0]] and sub.split.tolist() == ["test", "train"]
    assert sub.tasks.tolist() == ["qa", "qa"] and sub.timestamps.shape == (2,)
    assert sub.source == "tiny" and sub.dropped == outcomes.dropped
    by_mask = outcomes.subset(np.array([False, True, True]))
    assert by_mask.prompt_ids.tolist() == ["b", "c"] and by_mask.models == ("small", "big")
    assert outcomes.subset().content_hash() == outcomes.content_hash()
    assert outcomes.quality.shape == (3, 2)  # the original is untouched
    with pytest.raises(UnknownModelError):
        outcomes.subset(models=["nope"])


def test_where_split(outcomes: Outcomes) -> None:
    assert outcomes.where_split("test").prompt_ids.tolist() == ["b", "c"]
    assert outcomes.where_split("train").prompt_ids.tolist() == ["a"]
    with pytest.raises(SchemaError, match=r"tiny: no rows in split 'valid'; splits present: \['test', 'train'\]"):
        outcomes.where_split("valid")
    with pytest.raises(SchemaError, match=r"tiny: this data has no source-given split; .*grouped_split"):
        replace(outcomes, split=None).where_split("test")


def test_oracle_and_best_single_model_known_answer() -> None:
    # row 0: only big is right; row 1: both right -> the cheaper small; row 2: both wrong -> cheaper small
    o = Outcomes(prompt_ids=["a", "b", "c"], prompts=["x", "y", "z"], models=["small", "big"],
                 quality=[[0, 1], [1, 1], [0, 0]], cost=[[1.0, 10.0], [1.0, 10.0], [2.0, 20.0]])
    assert o.oracle() == pytest.approx({"quality": 2 / 3, "cost": (10.0 + 1.0 + 2.0) / 3})
    assert o.best_single_model() == "big"
    tie = Outcomes(prompt_ids=["a", "b"], prompts=["x", "y"], models=["pricey", "cheap"],
                   quality=[[1, 0], [0, 1]], cost=[[5.0, 1.0], [5.0, 1.0]])
    assert tie.best_single_model() == "cheap"  # equal mean quality: the cheaper one
    frame = o.per_model_frame()
    assert frame["model"].to_list() == ["small", "big"] and frame["mean_quality"].to_list() == pytest.approx([1 / 3, 2 / 3])
    long = o.to_long_frame()
    assert long.height == 6 and long["model"].to_list()[:2] == ["small", "big"]


def test_content_hash_stable_and_sensitive() -> None:
    a, b = Outcomes(**_outcomes_kwargs()), Outcomes(**_outcomes_kwargs())
    assert a.content_hash() == b.content_hash()
    assert len(a.content_hash()) == 64
    changed = [
        {"quality": _with_cell("quality", 2, 1, 0.75)},
        {"cost": _with_cell("cost", 0, 0, 0.0015)},
        {"prompt_ids": ["a", "b", "d"]},
        {"models": ["small", "large"]},
    ]
    hashes = {Outcomes(**_outcomes_kwargs(**c)).content_hash() for c in changed}
    assert a.content_hash() not in hashes and len(hashes) == len(changed)


# =========================================================================== traffic logs
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)


def _row(i: int = 0, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"request_id": f"r{i}", "timestamp": T0 + dt.timedelta(minutes=i), "prompt": f"hi {i}",
                           "chosen_model": "small", "propensity": 0.5, "cost": 0.001, "quality": 1.0}
    row.update(changes)
    return row


def _rows(n: int = 3, at: int | None = None, drop: str | None = None, **changes: Any) -> list[dict[str, Any]]:
    """``n`` good rows; ``changes`` are applied to row ``at`` and ``drop`` removes a key from every row."""
    rows = [_row(i, **(changes if i == at else {})) for i in range(n)]
    if drop is not None:
        rows = [{k: v for k, v in r.items() if k != drop} for r in rows]
    return rows


ALL = ("append-jsonl", "append-parquet", "read-jsonl", "validate")
NO_NAN_JSON = ("append-jsonl", "append-parquet", "validate")  # NaN / inf is not JSON: checked before writing

#: (rows, options, where it applies, error type, message fragment). Row and column are always named.
BAD_LOGS = [
    pytest.param(_rows(drop="chosen_model"), {}, ALL, ValidationError,
                 r"row 0, column 'chosen_model' = None: is empty; log the model that answered", id="missing-model-column"),
    pytest.param(_rows(drop="request_id"), {}, ALL, ValidationError,
                 r"row 0, column 'request_id' = None: is empty; every request needs an id", id="missing-id-column"),
    pytest.param(_rows(drop="timestamp"), {}, ALL, ValidationError,
                 r"row 0, column 'timestamp' = None: is empty; log when the request arrived", id="missing-timestamp"),
    pytest.param(_rows(at=1, timestamp=None), {}, ALL, ValidationError,
                 r"row 1, column 'timestamp' = None: is empty", id="null-timestamp"),
    pytest.param(_rows(drop="cost"), {}, ALL, ValidationError,
                 r"row 0, column 'cost' = None: must be present and >= 0 \(USD\)", id="missing-cost-column"),
    pytest.param([{**r, "propensity": str(r["propensity"])} for r in _rows(at=2, propensity="abc")], {},
                 ("append-jsonl", "append-parquet", "read-jsonl"), SchemaError,
                 r"row 2, column 'propensity' has type String \(value 'abc'\); expected Float64", id="wrong-type"),
    pytest.param([{**r, "timestamp": r["timestamp"].isoformat()} for r in _rows(at=1, timestamp=T0)][:1]
                 + [_row(1, timestamp="yesterday")], {}, ("append-jsonl", "append-parquet", "read-jsonl"),
                 SchemaError, r"row 1, column 'timestamp' has type String \(value 'yesterday'\)",
                 id="unparsable-timestamp"),
    pytest.param(_rows(at=1, propensity=0.0), {}, ALL, ValidationError,
                 r"row 1, column 'propensity' = 0\.0: must be in \(0, 1\]", id="propensity-zero"),
    pytest.param(_rows(at=2, propensity=1.5), {}, ALL, ValidationError,
                 r"row 2, column 'propensity' = 1\.5: must be in \(0, 1\]", id="propensity-above-one"),
    pytest.param(_rows(at=0, propensity=-0.2), {}, ALL, ValidationError,
                 r"row 0, column 'propensity' = -0\.2: must be in \(0, 1\]", id="propensity-negative"),
    pytest.param(_rows(at=1, propensity=None), {}, ALL, ValidationError,
                 r"row 1, column 'propensity' = None: must be in \(0, 1\]", id="propensity-null"),
    pytest.param(_rows(at=1, quality=1.01), {}, ALL, ValidationError,
                 r"row 1, column 'quality' = 1\.01: must be in \[0, 1\] \(or null while feedback is pending\)",
                 id="quality-above-one"),
    pytest.param(_rows(at=2, quality=-1.0), {}, ALL, ValidationError,
                 r"row 2, column 'quality' = -1\.0: must be in \[0, 1\]", id="quality-negative"),
    pytest.param(_rows(at=1, quality=math.nan), {}, NO_NAN_JSON, ValidationError,
                 r"row 1, column 'quality' = nan: must be in \[0, 1\]", id="quality-nan"),
    pytest.param(_rows(at=2, cost=-0.01), {}, ALL, ValidationError,
                 r"row 2, column 'cost' = -0\.01: must be present and >= 0 \(USD\)", id="negative-cost"),
    pytest.param(_rows(at=1, cost=math.nan), {}, NO_NAN_JSON, ValidationError,
                 r"row 1, column 'cost' = nan: must be present and >= 0 \(USD\), and finite", id="nan-cost"),
    pytest.param(_rows(at=0, cost=math.inf), {}, NO_NAN_JSON, ValidationError,
                 r"row 0, column 'cost' = inf: must be present and >= 0", id="infinite-cost"),
    pytest.param(_rows(at=1, latency_s=-1.0), {}, ALL, ValidationError,
                 r"row 1, column 'latency_s' = -1\.0: must be finite and >= 0", id="negative-latency"),
    pytest.param(_rows(at=2, latency_s=math.nan), {}, NO_NAN_JSON, ValidationError,
                 r"row 2, column 'latency_s' = nan: must be finite and >= 0", id="nan-latency"),
    pytest.param(_rows(at=1, output_tokens=-5), {}, ALL, ValidationError,
                 r"row 1, column 'output_tokens' = -5: must be finite and >= 0", id="negative-tokens"),
    pytest.param(_rows(at=2, request_id="r0"), {}, ALL, ValidationError,
                 r"duplicate request_id 'r0' \(first at row 0, 1 duplicated id\(s\)\); request ids must be unique",
                 id="duplicate-request-ids"),
    pytest.param(_rows(at=1, prompt=None, messages=None), {}, ALL, ValidationError,
                 r"row 1: both 'prompt' and 'messages' are empty; log the request text", id="no-prompt-no-messages"),
    pytest.param(_rows(at=2, chosen_model="gpt-9"), {"known_models": ["small", "big"]}, ("read-jsonl", "validate"),
                 ValidationError,
                 r"row 2, column 'chosen_model' = 'gpt-9': unknown model; known models are \['big', 'small'\]",
                 id="unknown-model"),
]


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in row.items()}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(_jsonable(r)) + "\n" for r in rows))
    return path


#: every bad log through every entry point it applies to
BAD_LOG_CASES = [
    pytest.param(entry, rows, options, error, message, id=f"{case.id}-{entry}")
    for case in BAD_LOGS
    for rows, options, applies, error, message in [case.values]
    for entry in applies
]


@pytest.mark.parametrize(("entry", "rows", "options", "error", "message"), BAD_LOG_CASES)
def test_bad_traffic_logs(tmp_path: Path, entry: str, rows: list[dict[str, Any]], options: dict[str, Any],
                          error: type[Exception], message: str) -> None:
    if entry == "validate":
        df = conform_log(pl.DataFrame(rows)).collect()
        with pytest.raises(error, match=message):
            validate_traffic_log(df, source="mylog", **options)
        return
    path = tmp_path / ("log.jsonl" if entry.endswith("jsonl") else "log.parquet.d")
    if entry == "read-jsonl":
        _write_jsonl(path, rows)
        with pytest.raises(error, match=message) as info:
            read_log(path, **options)
    else:
        with pytest.raises(error, match=message) as info:
            append_log(rows, path)
        assert not path.exists(), "a batch with a bad row must write nothing"
    assert str(info.value).startswith(f"{path}: "), "the error names the file"


def test_validate_missing_required_column_and_text_columns() -> None:
    good = conform_log(pl.DataFrame(_rows())).collect()
    for col in TRAFFIC_LOG_REQUIRED:
        with pytest.raises(SchemaError, match=rf"mylog: missing required column\(s\) \['{col}'\]"):
            validate_traffic_log(good.drop(col), source="mylog")
    with pytest.raises(SchemaError, match=r"a traffic log needs a 'prompt' or a 'messages' column"):
        validate_traffic_log(good.drop("prompt", "messages"))
    # messages instead of prompt is fine
    chat = good.with_columns(prompt=pl.lit(None, pl.String), messages=pl.lit('[{"role": "user", "content": "hi"}]'))
    validate_traffic_log(chat)
    validate_traffic_log(good, known_models=["small"])


def test_validate_row_offset_shifts_row_numbers() -> None:
    df = conform_log(pl.DataFrame(_rows(at=1, propensity=2.0))).collect()
    with pytest.raises(ValidationError, match=r"row 101, column 'propensity' = 2\.0"):
        validate_traffic_log(df, row_offset=100)


def test_validate_never_changes_the_frame() -> None:
    df = conform_log(pl.DataFrame(_rows())).collect()
    before = df.clone()
    validate_traffic_log(df, known_models=["small"])
    assert df.equals(before)


# --------------------------------------------------------------------------- appending
def test_append_jsonl_never_rewrites(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "log.jsonl"
    assert append_log(_rows(2), path) == 2
    first = path.read_bytes()
    assert append_log([_row(5), _row(6)], path) == 2
    after = path.read_bytes()
    assert after.startswith(first) and len(after) > len(first)
    assert after.count(b"\n") == 4
    with pytest.raises(ValidationError):
        append_log([_row(7, propensity=0.0)], path)
    assert path.read_bytes() == after  # a failing batch writes nothing
    log = read_log(path)
    assert log["request_id"].to_list() == ["r0", "r1", "r5", "r6"]
    assert append_log([], path) == 0 and path.read_bytes() == after


def test_append_parquet_adds_parts_and_keeps_earlier_ones(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet.d"
    append_log(pl.DataFrame(_rows(2)), path)
    (part1,) = sorted(path.glob("*.parquet"))
    bytes1, mtime1 = part1.read_bytes(), part1.stat().st_mtime_ns
    append_log([_row(5)], path)
    parts = sorted(path.glob("*.parquet"))
    assert len(parts) == 2 and parts[0] == part1
    assert part1.read_bytes() == bytes1 and part1.stat().st_mtime_ns == mtime1
    listing = sorted(p.name for p in path.iterdir())
    with pytest.raises(ValidationError, match=r"row 1, column 'cost'"):
        append_log([_row(8), _row(9, cost=-1.0)], path)
    assert sorted(p.name for p in path.iterdir()) == listing  # no new part, no temporary file left
    log = read_log(path)
    assert sorted(log["request_id"].to_list()) == ["r0", "r1", "r5"]
    assert log.schema["timestamp"] == pl.Datetime("us", "UTC")


def test_append_parquet_to_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "single.parquet"
    conform_log(pl.DataFrame(_rows(1))).collect().write_parquet(path)
    before = path.read_bytes()
    with pytest.raises(SchemaError, match=r"single\.parquet: Parquet logs are appended as directories of parts"):
        append_log([_row(3)], path)
    assert path.read_bytes() == before
    assert read_log(path).height == 1


def test_duplicate_request_ids_across_appends_are_caught_on_read(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    append_log([_row(0)], path)
    append_log([_row(0)], path)  # append validates one batch; the whole log is checked on read
    with pytest.raises(ValidationError, match=r"duplicate request_id 'r0' \(first at row 0"):
        read_log(path)


# --------------------------------------------------------------------------- reading
def test_scan_log_is_lazy_and_typed(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "log.jsonl", [_row(i, chosen_model="big" if i % 2 else "small") for i in range(40)])
    lf = scan_log(path)
    assert isinstance(lf, pl.LazyFrame)
    schema = lf.collect_schema()
    assert {k: schema[k] for k in TRAFFIC_LOG_SCHEMA} == TRAFFIC_LOG_SCHEMA
    picked = lf.filter(pl.col("chosen_model") == "big").collect().sample(n=5, seed=3)
    assert picked.height == 5 and set(picked["chosen_model"]) == {"big"}
    a = read_log(path, where=pl.col("chosen_model") == "big", sample=5, seed=3)
    b = read_log(path, where=pl.col("chosen_model") == "big", sample=5, seed=3)
    assert a.equals(b) and a.height == 5 and set(a["chosen_model"]) == {"big"}
    assert read_log(path, sample=100).height == 40


def test_scan_log_parquet_directory(tmp_path: Path) -> None:
    path = tmp_path / "logdir"
    append_log(_rows(3), path)
    append_log([_row(10), _row(11)], path)
    lf = scan_log(path)
    assert isinstance(lf, pl.LazyFrame)
    assert lf.filter(pl.col("request_id").is_in(["r1", "r10"])).collect().height == 2


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda p: p / "absent.jsonl", SourceNotFoundError, r"absent\.jsonl: no such log file or directory"),
        (lambda p: (p / "empty.d").mkdir() or p / "empty.d", SourceNotFoundError, r"has no \.parquet parts yet"),
        (lambda p: (p / "log.txt").write_text("a\n") and p / "log.txt", SchemaError, r"unknown log format"),
    ],
    ids=["missing", "empty-dir", "unknown-format"],
)
def test_scan_log_errors(tmp_path: Path, make: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        scan_log(make(tmp_path))


def test_unreadable_jsonl_is_a_schema_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps(_jsonable(_row(0))) + "\n" + '{"request_id": "r1", "cost": NaN}\n')
    with pytest.raises(SchemaError, match=r"log\.jsonl: cannot read the log as the traffic-log schema"):
        read_log(path)


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-03-01T12:30:00", dt.datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ("2026-03-01T12:30:00Z", dt.datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ("2026-03-01T12:30:00+02:00", dt.datetime(2026, 3, 1, 10, 30, tzinfo=UTC)),
        ("2026-03-01T12:30:00.250000", dt.datetime(2026, 3, 1, 12, 30, 0, 250000, tzinfo=UTC)),
    ],
)
def test_iso_timestamps_are_read_as_utc(tmp_path: Path, stamp: str, expected: dt.datetime) -> None:
    path = _write_jsonl(tmp_path / "log.jsonl", [_row(0, timestamp=stamp)])
    log = read_log(path)
    assert log.schema["timestamp"] == pl.Datetime("us", "UTC")
    assert log["timestamp"][0] == expected


def test_datetime_columns_are_converted_to_utc(tmp_path: Path) -> None:
    naive = pl.DataFrame(_rows(1)).with_columns(pl.col("timestamp").dt.replace_time_zone(None))
    paris = pl.DataFrame(_rows(1)).with_columns(pl.col("timestamp").dt.convert_time_zone("Europe/Paris"))
    for name, frame in (("naive", naive), ("paris", paris)):
        path = tmp_path / f"{name}.parquet"
        frame.write_parquet(path)
        log = read_log(path)
        assert log.schema["timestamp"] == pl.Datetime("us", "UTC")
        assert log["timestamp"][0] == T0, name


def test_append_then_read_round_trip_keeps_values(tmp_path: Path) -> None:
    rows = [_row(0, latency_s=1.25, input_tokens=12, output_tokens=40, tenant="acme", policy_version="v1",
                 task="qa", prompt_id="p0", extra_field="kept"),
            _row(1, prompt=None, messages='[{"role": "user", "content": "hi"}]', quality=None)]
    for path in (tmp_path / "log.jsonl", tmp_path / "log.parquet.d"):
        append_log(rows, path)
        log = read_log(path, known_models=["small"])
        assert log.columns[: len(TRAFFIC_LOG_SCHEMA)] == list(TRAFFIC_LOG_SCHEMA)
        first, second = log.row(0, named=True), log.row(1, named=True)
        assert first["timestamp"] == T0 and first["latency_s"] == 1.25 and first["input_tokens"] == 12
        assert first["tenant"] == "acme" and first["prompt_id"] == "p0" and first["extra_field"] == "kept"
        assert second["quality"] is None and second["prompt"] is None and "content" in second["messages"]
