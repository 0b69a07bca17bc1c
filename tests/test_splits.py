"""Splits never leak a group across sides, are deterministic, and are stable when data grows."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.data.schema import Outcomes
from router.data.splits import grouped_split, kfold_groups, normalise_prompt, split_outcomes, time_split
from router.errors import ConfigError

_groups = st.lists(st.text(alphabet="abcdefgh ", min_size=0, max_size=4), min_size=1, max_size=60)
_fraction = st.floats(0.05, 0.95)
_seed = st.integers(0, 2**31 - 1)
_settings = settings(max_examples=60, deadline=None)


def _side(groups: list[str], test_fraction: float, seed: int) -> dict[str, bool]:
    """group key -> True when it went to test."""
    tr, te = grouped_split(groups, test_fraction=test_fraction, seed=seed)
    side: dict[str, bool] = {}
    for idx, is_test in ((tr, False), (te, True)):
        for i in idx:
            assert side.setdefault(groups[i], is_test) == is_test, f"group {groups[i]!r} on both sides"
    return side


# --------------------------------------------------------------------------- grouped_split
@_settings
@given(groups=_groups, test_fraction=_fraction, seed=_seed)
def test_grouped_split_partitions_rows_and_never_splits_a_group(groups: list[str], test_fraction: float,
                                                                 seed: int) -> None:
    tr, te = grouped_split(groups, test_fraction=test_fraction, seed=seed)
    assert tr.dtype.kind == "i" and te.dtype.kind == "i"
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(te) > 0)  # sorted, no repeats
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(len(groups)))  # every row exactly once
    assert not {groups[i] for i in tr} & {groups[i] for i in te}


@_settings
@given(groups=_groups, test_fraction=_fraction, seed=_seed)
def test_grouped_split_is_deterministic(groups: list[str], test_fraction: float, seed: int) -> None:
    a = grouped_split(groups, test_fraction=test_fraction, seed=seed)
    b = grouped_split(list(groups), test_fraction=test_fraction, seed=seed)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@_settings
@given(old=_groups, new=_groups, test_fraction=_fraction, seed=_seed)
def test_adding_rows_never_moves_existing_groups(old: list[str], new: list[str], test_fraction: float,
                                                 seed: int) -> None:
    before = _side(old, test_fraction, seed)
    after = _side(old + new, test_fraction, seed)
    assert {g: after[g] for g in before} == before
    shuffled = list(reversed(new)) + old  # row order does not matter either
    assert {g: _side(shuffled, test_fraction, seed)[g] for g in before} == before


def test_grouped_split_fraction_and_seed_matter() -> None:
    groups = [f"prompt {i}" for i in range(4000)]
    tr, te = grouped_split(groups, test_fraction=0.3, seed=0)
    assert abs(len(te) / len(groups) - 0.3) < 0.03
    _, te2 = grouped_split(groups, test_fraction=0.3, seed=1)
    assert set(te.tolist()) != set(te2.tolist())
    # a larger fraction only adds groups to test (same hash, higher threshold)
    _, te_big = grouped_split(groups, test_fraction=0.5, seed=0)
    assert set(te.tolist()) <= set(te_big.tolist())


def test_grouped_split_accepts_non_string_groups() -> None:
    tr, te = grouped_split([1, 2, 1, 3, 2, 1], test_fraction=0.5, seed=4)
    assert sorted([*tr, *te]) == list(range(6))
    groups = [1, 2, 1, 3, 2, 1]
    assert not {groups[i] for i in tr} & {groups[i] for i in te}


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_grouped_split_bad_fraction(fraction: float) -> None:
    with pytest.raises(ConfigError, match=r"test_fraction must be in \(0, 1\), got"):
        grouped_split(["a", "b"], test_fraction=fraction)


def test_grouped_split_empty_input() -> None:
    with pytest.raises(ConfigError, match="cannot split an empty data set"):
        grouped_split([], test_fraction=0.3)


# --------------------------------------------------------------------------- kfold_groups
@_settings
@given(groups=_groups, n_folds=st.integers(2, 6), seed=_seed)
def test_kfold_groups_partition(groups: list[str], n_folds: int, seed: int) -> None:
    if len(set(groups)) < n_folds:
        with pytest.raises(ConfigError, match=rf"need at least n_folds={n_folds} distinct groups"):
            kfold_groups(groups, n_folds=n_folds, seed=seed)
        return
    folds = kfold_groups(groups, n_folds=n_folds, seed=seed)
    assert len(folds) == n_folds
    valid_all = np.concatenate([va for _, va in folds])
    assert sorted(valid_all.tolist()) == list(range(len(groups)))  # validation folds partition the rows
    fold_of: dict[str, int] = {}
    for k, (tr, va) in enumerate(folds):
        assert sorted([*tr.tolist(), *va.tolist()]) == list(range(len(groups)))
        assert not {groups[i] for i in tr} & {groups[i] for i in va}
        for i in va:
            assert fold_of.setdefault(groups[i], k) == k, "a group in two validation folds"
        assert len(va) > 0
    assert set(fold_of) == set(groups)
    # equal-size folds in groups, +-1
    sizes = np.bincount(list(fold_of.values()), minlength=n_folds)
    assert sizes.max() - sizes.min() <= 1
    again = kfold_groups(groups, n_folds=n_folds, seed=seed)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))


@pytest.mark.parametrize(
    ("groups", "n_folds", "message"),
    [
        (["a", "b", "c"], 1, r"n_folds must be >= 2, got 1"),
        (["a", "a", "b"], 3, r"need at least n_folds=3 distinct groups, got 2"),
        ([], 2, r"need at least n_folds=2 distinct groups, got 0"),
    ],
)
def test_kfold_groups_errors(groups: list[str], n_folds: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        kfold_groups(groups, n_folds=n_folds)


# --------------------------------------------------------------------------- split_outcomes
def _outcomes(prompts: list[str], split: list[str] | None = None) -> Outcomes:
    n = len(prompts)
    return Outcomes(prompt_ids=[f"id{i}" for i in range(n)], prompts=prompts, models=["a", "b"],
                    quality=np.zeros((n, 2)), cost=np.zeros((n, 2)), split=split, source="t")


def test_normalise_prompt() -> None:
    assert normalise_prompt("  Hello\tWORLD \n again ") == "hello world again"
    assert normalise_prompt(12) == "12"


def test_split_outcomes_uses_the_source_split() -> None:
    o = _outcomes(["p0", "p1", "p2", "p3"], split=["train", "test", "train", "test"])
    tr, te = split_outcomes(o, test_fraction=0.9, seed=123)
    assert tr.prompt_ids.tolist() == ["id0", "id2"] and te.prompt_ids.tolist() == ["id1", "id3"]


def test_split_outcomes_without_train_and_test_groups_by_prompt() -> None:
    # a source split without both 'train' and 'test' is ignored
    o = _outcomes([f"p{i}" for i in range(200)], split=["all"] * 200)
    tr, te = split_outcomes(o, test_fraction=0.3, seed=0)
    assert tr.n_prompts + te.n_prompts == 200 and te.n_prompts > 0 and tr.n_prompts > 0
    assert not set(tr.prompt_ids) & set(te.prompt_ids)


@settings(max_examples=40, deadline=None)
@given(seed=_seed, test_fraction=_fraction)
def test_split_outcomes_keeps_same_prompt_text_together(seed: int, test_fraction: float) -> None:
    prompts = ["What is 2+2?", "  what IS 2+2? ", "Tell me a joke", "tell\tme a   JOKE", "unique one", "other"]
    o = _outcomes(prompts)
    tr, te = split_outcomes(o, test_fraction=test_fraction, seed=seed)
    side = {pid: "train" for pid in tr.prompt_ids} | {pid: "test" for pid in te.prompt_ids}
    assert len(side) == 6
    assert side["id0"] == side["id1"] and side["id2"] == side["id3"]
    # and matches grouped_split on the normalised text
    _, te_idx = grouped_split([normalise_prompt(p) for p in prompts], test_fraction=test_fraction, seed=seed)
    assert te.prompt_ids.tolist() == [f"id{i}" for i in te_idx]


def test_split_outcomes_bad_fraction() -> None:
    with pytest.raises(ConfigError, match=r"test_fraction must be in \(0, 1\)"):
        split_outcomes(_outcomes(["a", "b"]), test_fraction=1.0)


# --------------------------------------------------------------------------- time_split
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _log(minutes: list[int]) -> pl.DataFrame:
    return pl.DataFrame({
        "request_id": [f"r{i}" for i in range(len(minutes))],
        "timestamp": pl.Series([T0 + dt.timedelta(minutes=m) for m in minutes], dtype=pl.Datetime("us", "UTC")),
    })


_minutes = st.lists(st.integers(0, 50), min_size=1, max_size=80)


@_settings
@given(minutes=_minutes, test_fraction=_fraction)
def test_time_split_with_fraction(minutes: list[int], test_fraction: float) -> None:
    log = _log(minutes)
    tr, te = time_split(log, test_fraction=test_fraction)
    assert tr.height + te.height == log.height
    assert sorted([*tr["request_id"], *te["request_id"]]) == sorted(log["request_id"])
    assert te.height > 0  # the cut is an existing timestamp, so test is never empty
    if tr.height:
        assert tr["timestamp"].max() < te["timestamp"].min()
    assert tr["timestamp"].is_sorted() and te["timestamp"].is_sorted()


@_settings
@given(minutes=_minutes, cut=st.integers(-5, 55))
def test_time_split_with_cut(minutes: list[int], cut: int) -> None:
    at = T0 + dt.timedelta(minutes=cut)
    tr, te = time_split(_log(minutes), cut=at)
    assert tr.height + te.height == len(minutes)
    assert all(t < at for t in tr["timestamp"]) and all(t >= at for t in te["timestamp"])


def test_time_split_known_answer() -> None:
    log = _log([9, 0, 5, 1, 7, 3, 8, 2, 6, 4])  # unsorted input
    tr, te = time_split(log, test_fraction=0.2)
    assert [t.minute for t in te["timestamp"]] == [8, 9]
    assert [t.minute for t in tr["timestamp"]] == list(range(8))
    tr, te = time_split(log, cut=T0 + dt.timedelta(minutes=3), test_fraction=None)
    assert tr.height == 3 and te.height == 7


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 2.0, None])
def test_time_split_bad_fraction(fraction: float | None) -> None:
    with pytest.raises(ConfigError, match=r"test_fraction must be in \(0, 1\), got"):
        time_split(_log([1, 2, 3]), test_fraction=fraction)


def test_time_split_needs_timestamps_and_handles_empty_logs() -> None:
    with pytest.raises(ConfigError, match=r"time_split needs a 'timestamp' column"):
        time_split(pl.DataFrame({"request_id": ["r0"]}))
    tr, te = time_split(_log([]), test_fraction=0.2)
    assert tr.height == 0 and te.height == 0
