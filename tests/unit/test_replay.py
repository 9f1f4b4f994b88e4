"""rtnb.sources.replay: files and DataFrames replayed in event-time order, paced or not."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest

import rtnb
from rtnb import ConfigError, SourceError
from rtnb.sources._replay import MAX_EVENTS_ENV
from rtnb.testing import collect

T0 = pd.Timestamp("2026-01-01")


def recorded(secs: list[float] | None = None) -> pd.DataFrame:
    secs = [0, 0.5, 1, 1.5, 2] if secs is None else secs
    n = len(secs)
    return pd.DataFrame({
        "timestamp": (T0 + pd.to_timedelta(secs, unit="s")).astype("datetime64[ns]"),
        "host": pd.Series(["a", "b"] * (n // 2) + ["a"] * (n % 2), dtype=str),
        "cpu": np.arange(n, dtype=float) * 10,
        "requests": np.arange(n, dtype=np.int64),
    })


@pytest.fixture(autouse=True)
def _no_env_cap(monkeypatch):
    monkeypatch.delenv(MAX_EVENTS_ENV, raising=False)


# -- sources of data -----------------------------------------------------------------------------
def test_replay_a_dataframe():
    df = recorded()
    src = rtnb.sources.replay(df)
    out = collect(src)
    src.run()
    result = out.frame()
    expected = df
    tm.assert_frame_equal(result, expected)
    assert (src.name, src.time) == ("replay", "timestamp")
    assert src.closed


def test_replay_does_not_modify_the_input():
    df = recorded([2, 0, 1])
    before = df.copy()
    rtnb.sources.replay(df).run()
    tm.assert_frame_equal(df, before)


def test_replay_parquet(tmp_path):
    df = recorded()
    path = tmp_path / "metrics.parquet"
    df.to_parquet(path)
    src = rtnb.sources.replay(path)
    out = collect(src)
    src.run()
    result = out.frame()
    expected = df
    tm.assert_frame_equal(result, expected)


@pytest.mark.parametrize("filename", ["metrics.csv", "metrics.csv.gz"])
def test_replay_csv(tmp_path, filename):
    df = recorded()
    df.loc[2, "cpu"] = np.nan
    path = tmp_path / filename
    df.to_csv(path, index=False)
    src = rtnb.sources.replay(str(path))
    out = collect(src)
    src.run()
    result = out.frame()
    expected = df
    tm.assert_frame_equal(result, expected)


def test_time_column_of_another_unit_becomes_ns():
    df = recorded()
    src = rtnb.sources.replay(df.assign(timestamp=df["timestamp"].astype("datetime64[us]")))
    out = collect(src)
    src.run()
    assert src.dtypes["timestamp"] == np.dtype("datetime64[ns]")
    tm.assert_frame_equal(out.frame(), df)


def test_the_bundled_sample_replays_into_windows():
    # The first minute of the sample (replaying the whole file reads and sorts 1M rows: ~1 s).
    first_minute = pd.read_parquet(rtnb.datasets.metrics_path(), filters=[
        ("timestamp", "<", pd.Timestamp("2026-01-05 00:01"))])
    src = rtnb.sources.replay(first_minute.sample(frac=1, random_state=0), batch_size=100)
    agg = src.window(rtnb.tumbling("10s"), by="host").agg(n=("cpu", "count"))
    out = collect(agg)
    src.run()
    result = out.frame()
    assert len(result) == 6 * 12  # six 10 s windows for each of the 12 hosts
    assert (result["n"] == 10).all()


# -- order, batches and filters ----------------------------------------------------------------
def test_unsorted_input_is_replayed_in_stable_event_time_order():
    df = pd.DataFrame({
        "timestamp": (T0 + pd.to_timedelta([3, 1, 2, 1, 3, 1], unit="s")).astype("datetime64[ns]"),
        "host": pd.Series(["d", "a", "c", "b", "e", "z"], dtype=str),
        "cpu": np.arange(6, dtype=float),
        "requests": np.arange(6, dtype=np.int64),
    })
    src = rtnb.sources.replay(df, batch_size=2)
    out = collect(src)
    src.run()
    result = out.frame()
    expected = df.sort_values("timestamp", kind="stable", ignore_index=True)
    tm.assert_frame_equal(result, expected)
    assert result["host"].tolist() == ["a", "b", "z", "c", "d", "e"]


def test_batch_size_splits_the_replay():
    df = recorded()
    src = rtnb.sources.replay(df, batch_size=2)
    out = collect(src)
    src.run()
    assert [len(b) for b in out] == [2, 2, 1]
    assert [b.index.tolist() for b in out] == [[0, 1], [0, 1], [0]]
    tm.assert_frame_equal(out.frame(), df)


def test_start_and_end_select_a_half_open_interval():
    df = recorded()
    src = rtnb.sources.replay(df, start=T0 + pd.Timedelta("0.5s"), end="2026-01-01 00:00:01.5")
    out = collect(src)
    src.run()
    result = out.frame()
    expected = df.iloc[1:3].reset_index(drop=True)
    tm.assert_frame_equal(result, expected)


def test_nothing_left_after_filtering_closes_at_once():
    src = rtnb.sources.replay(recorded(), start="2027-01-01")
    agg = src.window(rtnb.tumbling("1s")).agg(n=("cpu", "count"))
    out, windows = src.collect(), agg.collect()
    src.run()
    assert out == [] and windows == []
    assert src.closed


def test_max_events():
    df = recorded()
    src = rtnb.sources.replay(df, max_events=3, batch_size=2)
    out = collect(src)
    src.run()
    tm.assert_frame_equal(out.frame(), df.iloc[:3])


def test_max_events_counts_from_start():
    df = recorded()
    src = rtnb.sources.replay(df, start="2026-01-01 00:00:01", max_events=2)
    out = collect(src)
    src.run()
    tm.assert_frame_equal(out.frame(), df.iloc[2:4].reset_index(drop=True))


def test_max_events_from_the_environment(monkeypatch):
    monkeypatch.setenv(MAX_EVENTS_ENV, "2")
    src = rtnb.sources.replay(recorded())
    out = collect(src)
    src.run()
    tm.assert_frame_equal(out.frame(), recorded().iloc[:2])
    assert MAX_EVENTS_ENV == "RTNB_REPLAY_MAX_EVENTS"


def test_empty_max_events_variable_means_no_cap(monkeypatch):
    monkeypatch.setenv(MAX_EVENTS_ENV, "")
    src = rtnb.sources.replay(recorded())
    out = collect(src)
    src.run()
    assert len(out.frame()) == 5


def test_max_events_variable_must_be_an_integer(monkeypatch):
    monkeypatch.setenv(MAX_EVENTS_ENV, "lots")
    with pytest.raises(ConfigError, match="RTNB_REPLAY_MAX_EVENTS must be an integer; got 'lots'"):
        rtnb.sources.replay(recorded())


def test_negative_max_events_raises():
    with pytest.raises(ConfigError, match="max_events"):
        rtnb.sources.replay(recorded(), max_events=-1)


def test_rows_without_time_go_to_dead_letters():
    df = recorded()
    df.loc[1, "timestamp"] = pd.NaT
    src = rtnb.sources.replay(df, batch_size=2)
    out, dead = collect(src), collect(src.dead_letters)
    src.run()
    tm.assert_frame_equal(out.frame(), df.drop(index=1).reset_index(drop=True))
    assert dead.frame()["cpu"].tolist() == [10.0]
    assert src.counters.dead_letters == 1


def test_describe_source():
    assert rtnb.sources.replay(recorded(), name="rec").describe_source() == \
        "<Replay 'rec': 5 rows, as fast as possible>"
    assert rtnb.sources.replay(recorded(), speed=60).describe_source() == \
        "<Replay 'replay': 5 rows, 60x real time>"


# -- bad arguments -----------------------------------------------------------------------------
@pytest.mark.parametrize("speed", [0, -1, -0.5, True])
def test_speed_must_be_positive(speed):
    with pytest.raises(ConfigError, match=re.escape(
            f"replay `speed` must be a positive multiple of real time or None; got {speed!r}")):
        rtnb.sources.replay(recorded(), speed=speed)


@pytest.mark.parametrize("batch_size", [0, -5, 2.5, True])
def test_batch_size_must_be_a_positive_int(batch_size):
    with pytest.raises(ConfigError, match=re.escape(
            f"replay `batch_size` must be a positive int; got {batch_size!r}")):
        rtnb.sources.replay(recorded(), batch_size=batch_size)


def test_interval_must_be_a_duration():
    with pytest.raises(ConfigError, match="`interval` must be a duration such as '10s'"):
        rtnb.sources.replay(recorded(), interval="fast")


def test_missing_file_is_a_source_error(tmp_path):
    path = tmp_path / "nope.parquet"
    with pytest.raises(SourceError, match=re.escape(f"replay: no such file {str(path)!r}")) as info:
        rtnb.sources.replay(path, name="rec")
    assert info.value.source == "rec"


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("{}")
    with pytest.raises(ConfigError, match=re.escape(
            "replay reads .parquet or .csv files; got 'metrics.json'")):
        rtnb.sources.replay(path)


def test_missing_time_column_in_a_dataframe():
    with pytest.raises(ConfigError, match=re.escape(
            "replay: the DataFrame has no time column 'ts'; has ['timestamp', 'host', 'cpu', "
            "'requests']")):
        rtnb.sources.replay(recorded(), time="ts")


def test_missing_time_column_in_a_parquet_file(tmp_path):
    path = tmp_path / "metrics.parquet"
    recorded().to_parquet(path)
    with pytest.raises(ConfigError, match=re.escape(
            "replay: metrics.parquet has no time column 'ts'; columns: ['timestamp', 'host', "
            "'cpu', 'requests']")):
        rtnb.sources.replay(path, time="ts")


def test_missing_time_column_in_a_csv_file(tmp_path):
    path = tmp_path / "metrics.csv"
    recorded().to_csv(path, index=False)
    with pytest.raises(ConfigError,
                       match=re.escape("replay: metrics.csv has no time column 'ts'")):
        rtnb.sources.replay(path, time="ts")


# -- paced replay --------------------------------------------------------------------------------
def test_paced_replay_delivers_everything_in_order_and_closes():
    # 2 s of data at 3600x real time: about a millisecond of pacing, plus the ticks.
    df = recorded([0, 0.25, 0.5, 1, 1, 1.5, 2, 2])
    src = rtnb.sources.replay(df, speed=3600, interval="5ms", batch_size=3)
    out = collect(src)
    agg = src.window(rtnb.tumbling("1s")).agg(n=("cpu", "count"))
    windows = collect(agg)

    async def main() -> None:
        task = src.start()
        assert not src.closed
        await src.wait()
        assert task.done()

    asyncio.run(main())
    result = out.frame()
    expected = df
    tm.assert_frame_equal(result, expected)
    assert all(len(b) <= 3 for b in out)
    assert src.closed
    assert windows.frame()["n"].tolist() == [3, 3, 2]


def test_stop_ends_a_paced_replay_early_and_still_closes():
    df = pd.DataFrame({
        "timestamp": pd.date_range(T0, periods=3600, freq="s").astype("datetime64[ns]"),
        "cpu": 1.0,
    })
    src = rtnb.sources.replay(df, speed=1.0)  # an hour at real time: only stop() can end it
    agg = src.window(rtnb.tumbling("1h")).agg(n=("cpu", "count"))
    windows = collect(agg)
    delivered: list[int] = []

    def stop_after_first(batch: pd.DataFrame) -> None:
        delivered.append(len(batch))
        src.stop()

    src.sink(stop_after_first)
    asyncio.run(src.arun())
    assert 0 < sum(delivered) < len(df)
    assert src.closed
    assert windows.frame()["n"].tolist() == [sum(delivered)]


def test_stop_ends_an_unpaced_replay_after_the_current_batch():
    src = rtnb.sources.replay(recorded(), batch_size=2)
    out = src.collect()
    src.sink(lambda batch: src.stop())
    asyncio.run(src.arun())
    assert [len(b) for b in out] == [2]
    assert src.closed


def test_stop_before_start_does_nothing():
    src = rtnb.sources.replay(recorded())
    src.stop()
    out = collect(src)
    src.run()
    assert len(out.frame()) == 5
