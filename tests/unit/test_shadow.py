"""Shadow replays: the diff against two independent runs, promotion at a barrier, bad input.

The oracles are independent of rtnb's engines: windows are pandas on the whole input, alert
transitions are recomputed from those windows with the rule written out in plain Python.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest

import rtnb
from rtnb.errors import ConfigError

BATCH = 97
START = pd.Timestamp("2026-03-01 10:00:00")


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 1_080  # 3 hosts, every 5 s, 30 min
    return pd.DataFrame({
        "timestamp": (START + pd.to_timedelta(np.arange(n) // 3 * 5, unit="s")).astype(
            "datetime64[ns]"),
        "host": np.tile(["a", "b", "c"], n // 3),
        "cpu": rng.uniform(0, 100, n).round(1),
    })


def build(data: pd.DataFrame, size: str = "1min",
          limit: float = 55.0) -> tuple[rtnb.StreamingFrame, Any, Any]:
    src = rtnb.sources.replay(data, name="events", batch_size=BATCH)
    size_p = rtnb.Param(size, min="10s", max="10min", name="size")
    limit_p = rtnb.Param(limit, min=0.0, max=100.0, name="limit")
    cpu = src.window(rtnb.tumbling(size_p), by="host").agg(cpu=("cpu", "mean"),
                                                          n=("cpu", "count"))
    hot = rtnb.alert(cpu, cpu["cpu"] > limit_p, on="cpu", by="host", name="hot")
    return src, cpu, hot


# -- independent oracles ------------------------------------------------------------------------
def pandas_windows(data: pd.DataFrame, size: str) -> pd.DataFrame:
    start = data["timestamp"].dt.floor(size)
    out = (data.assign(window_start=start).groupby(["window_start", "host"], sort=True)["cpu"]
           .agg(cpu="mean", n="count").reset_index())
    out.insert(1, "window_end", out["window_start"] + pd.Timedelta(size))
    return out


def pandas_alerts(windows: pd.DataFrame, limit: float) -> pd.DataFrame:
    """Prometheus rule with for_=0: firing when the condition rises, resolved when it falls."""
    rows = []
    for host, g in windows.sort_values("window_start").groupby("host", sort=True):
        firing, started = False, None
        for t, value in zip(g["window_start"], g["cpu"], strict=True):
            if value > limit and not firing:
                firing, started = True, t
                rows.append((host, "firing", t, started, value))
            elif value <= limit and firing:
                firing = False
                rows.append((host, "resolved", t, started, value))
    return pd.DataFrame(rows, columns=["host", "state", "time", "started", "value"]).assign(
        alert="hot")


def expected_diff(old: pd.DataFrame, new: pd.DataFrame, keys: list[str],
                  values: list[str]) -> pd.DataFrame:
    both = old.merge(new, on=keys, how="outer", suffixes=("_old", "_new"), indicator=True)
    differs = np.zeros(len(both), dtype=bool)
    for v in values:
        differs |= ~np.isclose(both[f"{v}_old"].astype(float), both[f"{v}_new"].astype(float),
                               rtol=1e-9, equal_nan=True) if v != "started" else \
            ~(both[f"{v}_old"] == both[f"{v}_new"]).to_numpy()
    change = both["_merge"].map({"left_only": "removed", "right_only": "added",
                                 "both": "changed"}).astype(str)
    keep = (both["_merge"] != "both").to_numpy() | differs
    out = both[keep].assign(change=change[keep])
    out = out.rename(columns={f"{v}_{s}": f"{s}_{v}" for v in values for s in ("old", "new")})
    return out[["change", *keys, *(f"{s}_{v}" for v in values for s in ("old", "new"))]] \
        .sort_values(keys).reset_index(drop=True)


def check_diff(result: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert len(result) == len(expected)
    result = result.drop(columns=["node", "kind"]).sort_values(
        [c for c in expected.columns if not c.startswith(("old_", "new_", "change"))]
    ).reset_index(drop=True)
    for column in expected.columns:
        if pd.api.types.is_datetime64_dtype(expected[column]):
            expected[column] = expected[column].astype("datetime64[ns]")
    tm.assert_frame_equal(result[expected.columns], expected, check_dtype=False,
                          check_exact=False, rtol=1e-9)


# -- the diff -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("params", "since"), [
    ({"limit": 45.0}, None),
    ({"size": "2min", "limit": 50.0}, "20min"),
], ids=["threshold", "size+since"])
@pytest.mark.parametrize("log", ["own", "folder"])
def test_diff_equals_two_independent_runs(events: pd.DataFrame, tmp_path: Any,
                                          params: dict[str, Any], since: str | None,
                                          log: str) -> None:
    _, cpu, hot = build(events)
    pipeline = rtnb.Pipeline(hot)
    source: Any = None
    if log == "folder":
        recording = pipeline.record()
        pipeline.run()
        source = recording.save(tmp_path / "rec")
    shadow = pipeline.replay(params, since=since, source=source)
    shadow.run()
    assert shadow.done

    data = events
    if since is not None:
        data = events[events["timestamp"] >= events["timestamp"].max() - pd.Timedelta(since)]
    old_w = pandas_windows(data, "1min")
    new_w = pandas_windows(data, params.get("size", "1min"))
    keys = ["window_start", "window_end", "host"]
    check_diff(shadow.diff(cpu.name), expected_diff(old_w, new_w, keys, ["cpu", "n"]))

    old_a = pandas_alerts(old_w, 55.0)
    new_a = pandas_alerts(new_w, params["limit"])
    result = shadow.diff(hot.name)
    assert set(result["change"]) <= {"added", "removed", "changed"}
    check_diff(result, expected_diff(old_a, new_a, ["alert", "host", "time", "state"],
                                     ["started", "value"]))
    # one table for both nodes, windows first
    both = shadow.diff()
    assert both["node"].tolist() == [cpu.name] * len(shadow.diff(cpu.name)) + [hot.name] * len(
        result)
    assert set(both["kind"]) == {"alert"} | ({"window"} if len(shadow.diff(cpu.name)) else set())
    shadow.close()


def test_the_shadow_never_touches_the_live_sinks(events: pd.DataFrame, tmp_path: Any) -> None:
    _, _, hot = build(events)
    rtnb.sinks.to_parquet(hot, tmp_path / "alerts", name="alerts")
    pipeline = rtnb.Pipeline(hot)
    shadow = pipeline.replay({"limit": 45.0})
    shadow.run()
    assert len(shadow.diff()) > 0
    assert [s.name for s in pipeline.sinks] == ["alerts"]
    assert pipeline.sinks[0].stats.delivered_rows == 0
    assert not (tmp_path / "alerts").exists() or not any((tmp_path / "alerts").iterdir())
    assert shadow.baseline.sinks == [] and shadow.shadow.sinks == []  # collectors instead


def test_same_params_give_an_empty_diff(events: pd.DataFrame) -> None:
    _, _, hot = build(events)
    shadow = rtnb.Pipeline(hot).replay({"limit": 55.0})
    shadow.run()
    assert shadow.diff().empty


# -- promotion ----------------------------------------------------------------------------------
def run_tagged(data: pd.DataFrame, batches: list[pd.DataFrame], **settings: Any,
               ) -> dict[str, pd.DataFrame]:
    """An uninterrupted run, fed by hand: each output row tagged with its input batch."""
    src, cpu, hot = build(data, **settings)
    outs = {"cpu": cpu.collect(), "hot": hot.collect()}
    tags: dict[str, list[int]] = {k: [] for k in outs}

    def step(i: int, action: Any) -> None:
        before = {k: len(v) for k, v in outs.items()}
        action()
        for k, v in outs.items():
            tags[k] += [i] * (len(v) - before[k])

    for i, batch in enumerate(batches):
        step(i, lambda b=batch: src.emit(b))
    step(len(batches), src.graph.close)
    return {k: _tag(v, tags[k]) for k, v in outs.items()}


def _tag(parts: list[pd.DataFrame], tags: list[int]) -> pd.DataFrame:
    tagged = [p.assign(batch=t) for p, t in zip(parts, tags, strict=True) if len(p)]
    return pd.concat(tagged, ignore_index=True)


@pytest.mark.parametrize("params", [{"limit": 45.0}, {"size": "2min", "limit": 50.0},
                                    {"size": "30s", "limit": 50.0}],
                         ids=["threshold", "size", "shorter size"])
def test_promotion_loses_and_repeats_nothing(events: pd.DataFrame,
                                             params: dict[str, Any]) -> None:
    batches = [events.iloc[i:i + BATCH].reset_index(drop=True)
               for i in range(0, len(events), BATCH)]
    replayed, barrier = 4, 7  # the shadow replays 4 batches, catches up 3 at the barrier
    src, cpu, hot = build(events)
    pipeline = rtnb.Pipeline(hot)
    outs = {"cpu": cpu.collect(), "hot": hot.collect()}
    tags: dict[str, list[int]] = {k: [] for k in outs}
    recording = pipeline.record()

    def step(i: int, action: Any) -> None:
        before = {k: len(v) for k, v in outs.items()}
        action()
        for k, v in outs.items():
            tags[k] += [i] * (len(v) - before[k])

    for i in range(replayed):
        step(i, lambda b=batches[i]: src.emit(b))
    shadow = pipeline.replay(params, source=recording)
    shadow.run()
    for i in range(replayed, barrier):
        step(i, lambda b=batches[i]: src.emit(b))
    promotion = shadow.promote()
    assert (promotion.batches, promotion.caught_up) == (barrier, barrier - replayed)
    assert {p.name: p.value for p in pipeline.params} == {
        "size": pd.Timedelta(params.get("size", "1min")), "limit": params["limit"]}
    for i in range(barrier, len(batches)):
        step(i, lambda b=batches[i]: src.emit(b))
    step(len(batches), src.graph.close)
    live = {k: _tag(v, tags[k]) for k, v in outs.items()}

    old = run_tagged(events, batches)
    new = run_tagged(events, batches, **params)
    for k in ("cpu", "hot"):
        expected = pd.concat([old[k][old[k]["batch"] < barrier],
                              new[k][new[k]["batch"] >= barrier]], ignore_index=True)
        tm.assert_frame_equal(live[k], expected)
    # every window exactly once: before the barrier the old ones, after it the new ones
    keys = ["window_start", "window_end", "host"]
    assert not live["cpu"].duplicated(keys).any()
    with pytest.raises(rtnb.RtnbError, match="promoted already"):
        shadow.promote()


def test_promotion_reports_alerts_whose_state_switches(events: pd.DataFrame) -> None:
    src, _, hot = build(events, limit=50.0)
    pipeline = rtnb.Pipeline(hot)
    recording = rtnb.pipeline.Recording(pipeline, [])  # the input batches only
    read = events.iloc[:600]  # up to 10:16:35: the windows up to 10:16 are closed
    src.emit(read)
    shadow = pipeline.replay({"limit": 99.0}, source=recording)
    shadow.run()
    promotion = shadow.promote()
    # at limit 99 nothing fires: every host firing under 50 at the barrier switches off
    closed = pandas_windows(read, "1min")
    closed = closed[closed["window_end"] <= read["timestamp"].max()]
    last = pandas_alerts(closed, 50.0).groupby("host")["state"].last()
    expected = pd.DataFrame({"node": hot.name, "host": last[last == "firing"].index,
                             "old_state": "firing", "new_state": "inactive"})
    assert len(expected) > 0
    tm.assert_frame_equal(promotion.alerts.sort_values("host").reset_index(drop=True),
                          expected, check_dtype=False)


def test_promoting_a_replay_cut_by_since_says_where_its_state_begins(
        events: pd.DataFrame, caplog: pytest.LogCaptureFixture) -> None:
    """A replay with since= saw only the end of the recording: the state it hands over
    begins at the cut, which a warning names (exact for windows shorter than the span)."""
    src, _, hot = build(events, limit=50.0)
    pipeline = rtnb.Pipeline(hot)
    recording = rtnb.pipeline.Recording(pipeline, [])
    src.emit(events.iloc[:600])
    shadow = pipeline.replay({"limit": 99.0}, source=recording, since="5min")
    shadow.run()
    with caplog.at_level("WARNING", logger="rtnb.shadow"):
        shadow.promote()
    assert any("since='5min'" in r.getMessage() and "lacks the earlier rows" in r.getMessage()
               for r in caplog.records), caplog.text


# -- in a running loop --------------------------------------------------------------------------
def test_replay_runs_beside_the_live_run_on_one_loop(events: pd.DataFrame) -> None:
    async def main() -> tuple[bool, int, pd.DataFrame]:
        src, _, hot = build(events)
        pipeline = rtnb.Pipeline(hot)
        live = hot.collect()
        pipeline.start()
        shadow = pipeline.replay({"limit": 45.0})
        started_done = shadow.done  # a task on the loop: nothing ran yet
        with pytest.raises(rtnb.RtnbError, match="still running"):
            shadow.diff()
        await asyncio.gather(shadow.wait(), src.wait())
        return started_done, len(live), shadow.diff(hot.name)

    started_done, live_batches, diff = asyncio.run(main())
    assert not started_done
    assert live_batches > 0
    assert len(diff) > 0


def test_promotion_while_the_live_source_runs(events: pd.DataFrame) -> None:
    """The notebook's way: the live source runs on the loop; replay, wait, promote."""
    batches = [events.iloc[i:i + BATCH].reset_index(drop=True)
               for i in range(0, len(events), BATCH)]

    async def main() -> tuple[dict[str, pd.DataFrame], int]:
        src, cpu, hot = build(events)
        pipeline = rtnb.Pipeline(hot)
        recording = rtnb.pipeline.Recording(pipeline, [])
        seen = recording.batches["input"]
        outs: dict[str, list[pd.DataFrame]] = {"cpu": [], "hot": []}
        for key, frame in (("cpu", cpu), ("hot", hot)):
            # emitted while the root handles batch i: the recording (a later downstream of
            # the root) holds i batches then
            frame.stream.sink(lambda b, k=key: outs[k].append(b.assign(batch=len(seen))))
        pipeline.start()
        while len(seen) < 3:
            await asyncio.sleep(0)
        shadow = pipeline.replay({"limit": 45.0, "size": "2min"}, source=recording)
        await shadow.wait()
        promotion = shadow.promote()
        await src.wait()
        return ({k: pd.concat([b for b in v if len(b)], ignore_index=True)
                 for k, v in outs.items()}, promotion.batches)

    live, barrier = asyncio.run(main())
    assert 3 <= barrier < len(batches)
    old = run_tagged(events, batches)
    new = run_tagged(events, batches, size="2min", limit=45.0)
    for k in ("cpu", "hot"):
        expected = pd.concat([old[k][old[k]["batch"] < barrier],
                              new[k][new[k]["batch"] >= barrier]], ignore_index=True)
        tm.assert_frame_equal(live[k], expected)


# -- bad input ----------------------------------------------------------------------------------
def test_bad_input_is_refused_with_clear_errors(events: pd.DataFrame, tmp_path: Any) -> None:
    _, _, hot = build(events)
    pipeline = rtnb.Pipeline(hot)
    with pytest.raises(ConfigError, match=r"has no Param 'treshold'; its Params: "
                                          r"\['limit', 'size'\]"):
        pipeline.replay({"treshold": 4.0})
    with pytest.raises(ConfigError, match=r"Param 'limit' must be between 0.0 and 100.0; "
                                          r"got 150.0"):
        pipeline.replay({"limit": 150.0})
    with pytest.raises(ConfigError, match="Param 'size' must be between 10s and 10min; got 1h"):
        pipeline.replay({"size": "1h"})
    recording = pipeline.record()
    pipeline.run()
    folder = recording.save(tmp_path / "rec")
    with pytest.raises(ConfigError, match=r"replay\(since='1d'\) reaches back to .* but the "
                                          r"log of 'events' starts at 2026-03-01 10:00:00 "
                                          r"\(it holds 29.9167min of event time, up to "
                                          r"2026-03-01 10:29:55\); give a shorter since"):
        pipeline.replay({"limit": 40.0}, since="1d", source=folder)
    with pytest.raises(ConfigError, match=r"since=\.\.\.\) must be a positive duration"):
        pipeline.replay({"limit": 40.0}, since="0s", source=folder)
    with pytest.raises(ConfigError, match="no recording at"):
        pipeline.replay({"limit": 40.0}, source=tmp_path / "nothing")
    # the own source is read when the replay runs: the same error, from run()
    shadow = pipeline.replay({"limit": 40.0}, since="7d")
    with pytest.raises(ConfigError, match="reaches back to"):
        shadow.run()
    shadow = pipeline.replay({"limit": 40.0}, source=folder)
    with pytest.raises(ConfigError, match=r"promote\(\) needs the shadow to have replayed the "
                                          "live run's own input"):
        shadow.promote()
    with pytest.raises(ConfigError, match="not a window or alert node"):
        shadow.diff("events")



def test_max_events_bounds_the_own_source(events: pd.DataFrame, tmp_path: Any) -> None:
    _, _, hot = build(events)
    pipeline = rtnb.Pipeline(hot)
    bounded = pipeline.replay({"limit": 45.0}, max_events=500)
    bounded.run()
    events.iloc[:500].assign(__batch__=0).to_parquet(tmp_path / "head.parquet")
    expected = pipeline.replay({"limit": 45.0}, source=tmp_path / "head.parquet")
    expected.run()
    assert len(expected.diff()) > 0
    tm.assert_frame_equal(bounded.diff(), expected.diff())
    with pytest.raises(ConfigError, match="must be a positive int; got 0"):
        pipeline.replay({"limit": 45.0}, max_events=0)
    with pytest.raises(ConfigError, match="bounds the pipeline's own source"):
        pipeline.replay({"limit": 45.0}, max_events=5, source=tmp_path / "head.parquet")


def test_a_pipeline_export_cannot_write_cannot_be_replayed(events: pd.DataFrame) -> None:
    src = rtnb.sources.replay(events, name="events")
    out = src.map_batches(lambda df: df, name="passthrough")
    with pytest.raises(rtnb.ExportError, match=r"replay\(\): pipeline 'events' cannot be "
                                               r"rebuilt for a shadow copy .*lambda"):
        rtnb.Pipeline(out).replay()
