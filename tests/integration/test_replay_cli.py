"""An exported script's ``replay`` command: the same diff as the notebook API, clear errors.

The script runs as a real subprocess for the diff (printed table and ``--output`` file) and
for the script's own command line, which must work as before. Bad options are checked in
this process through the script's ``build`` (the same code path, without a process each).
"""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
import redis
from integration_helpers import service_or_skip

import rtnb
from rtnb.shadow import cli, format_diff


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, rtnb.Pipeline]:
    folder = tmp_path_factory.mktemp("replay_cli")
    rng = np.random.default_rng(11)
    n = 900
    events = pd.DataFrame({
        "timestamp": pd.Timestamp("2026-03-01 10:00") + pd.to_timedelta(
            np.arange(n) // 3 * 6, unit="s"),
        "host": np.tile(["a", "b", "c"], n // 3),
        "cpu": rng.uniform(0, 100, n).round(1),
    }).astype({"timestamp": "datetime64[ns]"})
    src = rtnb.sources.replay(events, name="events", batch_size=128)
    limit = rtnb.Param(55.0, min=0.0, max=100.0, name="limit", doc="alert above this mean")
    size = rtnb.Param("1min", min="10s", max="10min", name="size")
    cpu = src.window(rtnb.tumbling(size), by="host").agg(cpu=("cpu", "mean"))
    hot = rtnb.alert(cpu, cpu["cpu"] > limit, on="cpu", by="host", name="hot")
    pipeline = rtnb.Pipeline(hot)
    pipeline.export(folder / "monitor.py", names={"src": src, "cpu": cpu, "hot": hot})
    recording = pipeline.record()
    pipeline.run()
    recording.save(folder / "rec")
    events.to_parquet(folder / "events.parquet")
    return folder, pipeline


def script(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "monitor.py", *args], capture_output=True,
                          text=True, timeout=300, check=False, cwd=folder)


def test_replay_prints_and_writes_the_notebooks_diff(exported: tuple[Path, Any]) -> None:
    folder, pipeline = exported
    shadow = pipeline.replay({"limit": 40.0, "size": "2min"}, since="20min",
                             source=folder / "rec")
    shadow.run()
    expected = shadow.diff()
    assert {"added", "removed"} <= set(expected["change"])  # windows of another size

    done = script(folder, "replay", "--since", "20min", "--set", "limit=40", "--set",
                  "size=2min", "--diff", "--input", "rec", "--output", "diff.parquet")
    assert done.returncode == 0, done.stderr
    assert done.stdout == format_diff(expected) + "\n"
    tm.assert_frame_equal(pd.read_parquet(folder / "diff.parquet"), expected)
    counts = expected["change"].value_counts()
    assert (f"{len(expected)} changes: {counts['added']} added, {counts['removed']} removed, "
            f"{counts.get('changed', 0)} changed") in done.stderr


def test_the_scripts_command_line_is_unchanged(exported: tuple[Path, Any]) -> None:
    folder, _ = exported
    done = script(folder, "--limit", "40", "--input", "rec", "--output", "out",
                  "--log-format", "console")
    assert done.returncode == 0, done.stderr
    rows = pd.read_parquet(folder / "out" / "events_window_hot.parquet")
    assert len(rows) > 0
    main = runpy.run_path(str(folder / "monitor.py"), run_name="replay_cli_test")["main"]
    assert "replay --since 7d --set NAME=VALUE --diff" in main.__doc__  # what --help shows


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "treshold=4"], "the pipeline has no Param 'treshold'; its Params: "
                              "['limit', 'size']"),
    (["--set", "limit=400"], "Param 'limit' must be between 0.0 and 100.0; got 400.0"),
    (["--set", "limit=high"], "Param 'limit' is a float; got 'high'"),
    (["--set", "limit"], "--set takes NAME=VALUE; got 'limit'"),
    (["--set", "limit=40", "--since", "7d"], "replay(since='7d') reaches back to "
                                             "2026-02-22 10:29:54, but the log of 'events' "
                                             "starts at 2026-03-01 10:00:00"),
    (["--output", "diff.txt"], "--output must end in .csv or .parquet"),
])
def test_bad_options_exit_2_with_a_clear_message(exported: tuple[Path, Any], args: list[str],
                                                 message: str, capsys: Any,
                                                 monkeypatch: Any) -> None:
    folder, _ = exported
    monkeypatch.chdir(folder)
    build = runpy.run_path(str(folder / "monitor.py"), run_name="replay_cli_test")["build"]
    with pytest.raises(SystemExit) as exit_info:
        cli(build, ["--input", "rec", *args])
    assert exit_info.value.code == 2
    assert message in " ".join(capsys.readouterr().err.replace("│", " ").split())


def test_replay_from_a_redis_stream_position(exported: tuple[Path, Any]) -> None:
    """A broker stream from a position is a log: the diff over it equals the diff over the
    same rows recorded in a file."""
    service_or_skip(6379, "Redis")
    folder, pipeline = exported
    events = pd.read_parquet(folder / "events.parquet")
    client = redis.Redis(host="127.0.0.1", port=6379)
    stream = f"rtnb-shadow-{uuid.uuid4().hex[:10]}"
    try:
        pipe = client.pipeline()
        for r in events.itertuples(index=False):
            pipe.xadd(stream, {"data": json.dumps({"timestamp": r.timestamp.isoformat(),
                                                   "host": r.host, "cpu": r.cpu})})
        ids = [i.decode() for i in pipe.execute()]
        start = 300  # replay from entry 300 on
        src = rtnb.sources.redis_stream(
            stream, example={"timestamp": "datetime64[ns]", "host": "str", "cpu": "float64"},
            time="timestamp", start=ids[start - 1],  # XREAD: the entries after this id
            max_events=len(events) - start, name="log")
        from_redis = pipeline.replay({"limit": 45.0}, source=src)
        from_redis.run()
    finally:
        client.delete(stream)
    rows = events.iloc[start:].assign(__batch__=0)
    rows.to_parquet(folder / "tail.parquet", index=False)
    from_file = pipeline.replay({"limit": 45.0}, source=folder / "tail.parquet")
    from_file.run()
    expected = from_file.diff()
    assert len(expected) > 0
    tm.assert_frame_equal(from_redis.diff(), expected)


def test_replaying_the_live_runs_own_consumer_group_is_refused() -> None:
    """The default log is the pipeline's own source rebuilt: for a Redis stream read in a
    consumer group the copy would read (and acknowledge) in the live run's group, taking
    its entries. Refused, saying what to give instead; the group is left untouched."""
    service_or_skip(6379, "Redis")
    client = redis.Redis(host="127.0.0.1", port=6379)
    stream = f"rtnb-shadow-{uuid.uuid4().hex[:10]}"
    try:
        for i in range(5):
            client.xadd(stream, {"data": json.dumps(
                {"timestamp": f"2026-03-01T10:00:0{i}", "host": "a", "cpu": 1.0})})
        client.xgroup_create(stream, "live", id="0")  # the live run's group, nothing read yet
        src = rtnb.sources.redis_stream(
            stream, example={"timestamp": "datetime64[ns]", "host": "str", "cpu": "float64"},
            time="timestamp", group="live", start="0", name="live")
        limit = rtnb.Param(55.0, min=0.0, max=100.0, name="limit")
        cpu = src.window(rtnb.tumbling("1min"), by="host").agg(cpu=("cpu", "mean"))
        hot = rtnb.alert(cpu, cpu["cpu"] > limit, on="cpu", by="host", name="hot")
        with pytest.raises(rtnb.ConfigError, match=r"consumer group.*source="):
            rtnb.Pipeline(hot).replay({"limit": 1.0}, max_events=5)
        (group,) = client.xinfo_groups(stream)
        assert group["pending"] == 0 and group["lag"] == 5  # nothing read from it
    finally:
        client.delete(stream)
