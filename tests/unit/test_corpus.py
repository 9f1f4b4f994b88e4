"""The evaluation corpus of bench/corpus.py (issue 17): deterministic, labels where NAB puts
them, every anomaly kind, several scales and sampling rates; the bundled day in the same shape."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_corpus", BENCH / "corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module     # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


corpus = _load()


@pytest.fixture(scope="module")
def made() -> tuple[pd.DataFrame, pd.DataFrame]:
    return corpus.make_corpus(0)


def test_deterministic_and_shaped(made: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    data, labels = made
    again_data, again_labels = corpus.make_corpus(0)
    pd.testing.assert_frame_equal(data, again_data)
    pd.testing.assert_frame_equal(labels, again_labels)
    other, _ = corpus.make_corpus(1)
    assert not other["value"].head(1000).equals(data["value"].head(1000))

    assert list(data.columns) == ["time", "series", "value"]
    assert data["time"].dtype == "datetime64[ns]"
    assert data["value"].dtype == np.float64
    assert pd.api.types.is_string_dtype(data["series"])
    assert {"series", "start", "end"} <= set(labels.columns)
    result = data.sort_values(["series", "time"], kind="stable", ignore_index=True)
    pd.testing.assert_frame_equal(result, data)
    assert not data.duplicated(["series", "time"]).any()
    assert data["value"].notna().all()
    sizes = data.groupby("series").size()
    assert sizes.min() >= 2_000 and sizes.max() <= 12_000
    assert data["series"].nunique() == 48


def test_a_prefix_of_the_corpus_is_the_quick_corpus(
        made: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    data, _ = made
    quick, _ = corpus.make_corpus(0, n_series=12)
    first = sorted(data["series"].unique())[:12]
    expected = data[data["series"].isin(first)].reset_index(drop=True)
    pd.testing.assert_frame_equal(quick, expected)


def test_labels_inside_the_series_after_the_probationary_period(
        made: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    data, labels = made
    for name, rows in data.groupby("series"):
        times = rows["time"].reset_index(drop=True)
        mine = labels[labels["series"] == name].sort_values("start")
        probation_ends = times.iloc[int(np.ceil(0.15 * len(times)))]
        assert (mine["start"] >= probation_ends).all(), name
        assert (mine["end"] <= times.iloc[-1]).all(), name
        assert (mine["start"] < mine["end"]).all(), name
        assert (mine["start"].iloc[1:].to_numpy() > mine["end"].iloc[:-1].to_numpy()).all()
        if len(mine):   # NAB: 10 % of the rows, shared by the anomalies, in rows
            rows_per_window = [((times >= s) & (times <= e)).sum()
                               for s, e in zip(mine["start"], mine["end"], strict=True)]
            expected = round(0.1 * len(times) / len(mine))
            assert all(abs(r - expected) <= 1 for r in rows_per_window), name
    assert len(set(data["series"]) - set(labels["series"])) >= 1   # some have no anomaly
    assert labels.groupby("series").size().max() <= 3


def test_every_anomaly_kind_several_scales_and_rates(
        made: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    data, labels = made
    assert set(labels["kind"]) == set(corpus.ANOMALIES)
    assert labels["kind"].value_counts().min() >= 3
    quick_kinds = set(corpus.make_corpus(0, n_series=12)[1]["kind"])
    assert quick_kinds == set(corpus.ANOMALIES)

    steps = data.groupby("series")["time"].apply(lambda t: t.diff().median())
    assert set(steps) == set(corpus.STEPS.values())
    spread = data.groupby("series")["value"].std()
    assert spread.min() < 1e-1 and spread.max() > 1e4
    assert (data.groupby("series")["value"].max() < 0).any()           # negative offsets
    zeros = data.assign(zero=data["value"] == 0).groupby("series")["zero"].mean()
    assert (zeros > 0.5).any()                                          # mostly idle
    integral = data.groupby("series")["value"].apply(lambda v: bool((v % 1 == 0).all()))
    assert integral.sum() >= 3                                           # counts


def test_anomalies_change_the_data() -> None:
    """A labelled spike or dropout is visible in its window (the generator did inject it)."""
    data, labels = corpus.make_corpus(0)
    for kind in ("dropout", "spike"):
        label = labels[labels["kind"] == kind].iloc[0]
        rows = data[data["series"] == label["series"]]
        inside = rows[(rows["time"] >= label["start"]) & (rows["time"] <= label["end"])]
        before = rows[rows["time"] < label["start"]]
        if kind == "dropout":
            assert (inside["value"] == 0).any() and not (before["value"] == 0).any()
        else:
            med = before["value"].median()
            mad = (before["value"] - med).abs().median()
            assert (inside["value"] - med).abs().max() > 6 * mad


def test_bundled_day() -> None:
    data, labels = corpus.bundled_day()
    assert list(data.columns) == ["time", "series", "value"]
    assert data["time"].dtype == "datetime64[ns]"
    assert data["series"].nunique() == 36
    assert "web-03/cpu" in set(data["series"])
    assert set(labels["series"]) <= set(data["series"])
    assert {"web-03/cpu", "web-05/cpu", "db-01/latency_ms", "web-02/requests"} <= set(
        labels["series"])
    span = data.groupby("series")["time"].agg(["min", "max"])
    joined = labels.join(span, on="series")
    assert (joined["start"] >= joined["min"]).all() and (joined["end"] <= joined["max"]).all()
    assert (joined["start"] >= joined["min"] + 0.15 * (joined["max"] - joined["min"])).all()
