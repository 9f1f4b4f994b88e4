"""Checkpoints: a stopped and restarted exported script gives the output of one uninterrupted run.

The scripts run as real subprocesses (``python -I``), as in test_export.py; the per-node
outputs (``--output``) of the stopped run followed by those of the resumed run are compared
with an uninterrupted run's.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import rtnb
from rtnb.state import Checkpoint
from rtnb.testing import assert_frame_equal_unordered, collect_all, feed

ROWS = 6_000  # 12 hosts x 500 s
BATCH = 240


def build(speed: float | None = None, window: str | rtnb.Param = "30s"
          ) -> tuple[rtnb.StreamingFrame, dict[str, object]]:
    """Tumbling window by host, rolling mean, ZScore detector and an alert on it."""
    src = rtnb.sources.replay(rtnb.datasets.metrics_path(), max_events=ROWS, batch_size=BATCH,
                              speed=speed, interval="50ms", name="metrics")
    cpu = src.window(rtnb.tumbling(window), by="host").agg(mean=("cpu", "mean"),
                                                           n=("cpu", "count"))
    smooth = src.rolling("20s", by="host")["latency_ms"].mean()
    scored = src.detect(rtnb.detect.ZScore(window="1min", threshold=2.5), on="cpu", by="host")
    alerts = rtnb.alert(scored, "is_anomaly", on="cpu", by="host", for_="3s", name="cpu_alert")
    return src, {"src": src, "cpu": cpu, "smooth": smooth, "scored": scored, "alerts": alerts}


def export(path: Path, **kwargs: object) -> Path:
    src, names = build(**kwargs)  # type: ignore[arg-type]
    return rtnb.Pipeline(src).export(path, names=names)


def run_script(script: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", str(script), *args], cwd=script.parent,
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
                          check=False)


def read_folder(folder: Path) -> dict[str, pd.DataFrame]:
    manifest = json.loads((folder / "manifest.json").read_text())
    return {node: pd.read_parquet(folder / file).drop(columns="__batch__")
            for node, file in manifest.items()}


def joined(*folders: Path) -> dict[str, pd.DataFrame]:
    """Each node's outputs of several runs, one after the other."""
    parts = [read_folder(f) for f in folders]
    return {node: pd.concat([p[node] for p in parts], ignore_index=True) for node in parts[0]}


def events(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def unpaced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, pd.DataFrame]]:
    """The exported script and its uninterrupted output."""
    folder = tmp_path_factory.mktemp("unpaced")
    script = export(folder / "monitor.py")
    done = run_script(script, "--output", str(folder / "full"))
    assert done.returncode == 0, done.stderr
    full = read_folder(folder / "full")
    assert len(full["metrics"]) == ROWS
    assert len(full["metrics.detect.cpu_alert"]) > 0 and full["metrics.detect"]["is_anomaly"].any()
    return script, full


# -- exactness ------------------------------------------------------------------------------
@pytest.mark.parametrize("stop_at", [2_400, 2_455])  # on a batch boundary, and inside a batch
def test_stop_by_max_events_then_resume_equals_uninterrupted(
        tmp_path: Path, unpaced: tuple[Path, dict[str, pd.DataFrame]], stop_at: int) -> None:
    script, full = unpaced
    db = str(tmp_path / "state.db")
    first = run_script(script, "--checkpoint", db, "--max-events", str(stop_at),
                       "--output", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    saved = [e for e in events(first.stderr) if e["event"] == "checkpoint"]
    assert saved[0]["action"] == "fresh"
    assert saved[-1]["action"] == "saved" and saved[-1]["reason"] == "stop"
    assert saved[-1]["position"] == stop_at
    second = run_script(script, "--checkpoint", db, "--output", str(tmp_path / "b"))
    assert second.returncode == 0, second.stderr
    restored = next(e for e in events(second.stderr) if e["event"] == "checkpoint")
    assert restored["action"] == "restored" and restored["position"] == stop_at
    got = joined(tmp_path / "a", tmp_path / "b")
    assert set(got) == set(full)
    for node, expected in full.items():
        if stop_at % BATCH == 0:  # the same batches: the same rows in the same order
            pd.testing.assert_frame_equal(got[node], expected, obj=node)
        else:  # a batch was cut in two: rolling rows leave in another order
            assert_frame_equal_unordered(got[node], expected, obj=node)
    # the first run did not flush its open windows: they came out of the second run only
    first_windows = read_folder(tmp_path / "a")["metrics.window"]
    assert first_windows["window_end"].max() <= pd.Timestamp("2026-01-05") + pd.Timedelta(
        seconds=stop_at // 12)
    # the stream has ended: a third run emits nothing and keeps the checkpoint finished
    third = run_script(script, "--checkpoint", db, "--output", str(tmp_path / "c"))
    assert third.returncode == 0, third.stderr
    assert all(len(frame) == 0 for frame in read_folder(tmp_path / "c").values())


def test_sigterm_at_any_batch_then_resume_equals_uninterrupted(
        tmp_path: Path, unpaced: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    """A paced run stopped by SIGTERM once some rows went through, then resumed."""
    _, full = unpaced
    script = export(tmp_path / "paced.py", speed=100.0)  # 500 s of events in about 5 s
    db = str(tmp_path / "state.db")
    with subprocess.Popen([sys.executable, "-I", str(script), "--checkpoint", db,
                           "--checkpoint-every", "200ms", "--output", str(tmp_path / "a"),
                           "--metrics-port", "0"],
                          cwd=tmp_path, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        url = None
        while url is None:
            line = json.loads(proc.stderr.readline())
            url = line.get("url")
        deadline = time.monotonic() + 60
        while True:  # wait until a checkpoint was saved between batches
            with urllib.request.urlopen(str(url), timeout=5) as reply:
                body = reply.read().decode()
            saved = [float(line.split()[-1]) for line in body.splitlines()
                     if line.startswith("rtnb_checkpoints_total{")]
            if saved and saved[0] >= 1:
                break
            assert time.monotonic() < deadline, body[-2000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, rest
    stop = [e for e in events(rest) if e["event"] == "checkpoint"][-1]
    assert stop["reason"] == "stop", rest
    assert 0 < int(stop["position"]) < ROWS  # type: ignore[call-overload]
    second = run_script(script, "--checkpoint", db, "--output", str(tmp_path / "b"))
    assert second.returncode == 0, second.stderr
    got = joined(tmp_path / "a", tmp_path / "b")
    for node, expected in full.items():
        assert_frame_equal_unordered(got[node], expected, obj=node, check_exact=False,
                                     rtol=1e-9)


# -- what is refused -------------------------------------------------------------------------
def test_checkpoint_of_another_pipeline_exits_2_naming_the_difference(tmp_path: Path) -> None:
    size = rtnb.Param("30s", min="1s", max="5min", name="window")
    script = export(tmp_path / "monitor.py", window=size)
    db = str(tmp_path / "state.db")
    done = run_script(script, "--checkpoint", db, "--max-events", "500")
    assert done.returncode == 0, done.stderr
    # the same pipeline with another Param value
    other = run_script(script, "--checkpoint", db, "--window", "1min")
    assert other.returncode == 2
    refused = [e for e in events(other.stderr) if e["event"] == "checkpoint"][-1]
    assert refused["action"] == "refused"
    assert "written by a different pipeline 'metrics'" in str(refused["error"])
    assert "Param 'window' is 1min here and was 30s in the checkpoint" in str(
        refused["error"])
    # another graph behind a source of the same name
    src = rtnb.sources.replay(rtnb.datasets.metrics_path(), max_events=ROWS, name="metrics")
    src.window(rtnb.tumbling("30s"), by="host").agg(n=("cpu", "count"))
    small = rtnb.Pipeline(src).export(tmp_path / "small.py")
    done = run_script(small, "--checkpoint", db)
    assert done.returncode == 2
    error = str(events(done.stderr)[-1]["error"])
    assert "nodes only in the checkpoint: ['metrics.rolling'," in error


def test_corrupt_checkpoint_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    script = export(tmp_path / "monitor.py")
    db = tmp_path / "state.db"
    db.write_bytes(b"this is not a database" * 100)
    done = run_script(script, "--checkpoint", str(db))
    assert done.returncode == 2
    error = str(events(done.stderr)[-1]["error"])
    assert "is not a readable rtnb checkpoint (corrupt or another kind of file)" in error


def test_corrupt_state_blob_is_a_checkpoint_error(tmp_path: Path) -> None:
    src, _ = build()
    pipeline = rtnb.Pipeline(src)
    store = Checkpoint(tmp_path / "state.db")
    store.save(pipeline)
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.execute("UPDATE rtnb_checkpoints SET state = ?", (b"\x80garbage",))
    conn.close()
    with pytest.raises(rtnb.CheckpointError, match="of pipeline 'metrics' is corrupt"):
        store.restore(rtnb.Pipeline(build()[0]))


def test_tail_source_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    src = rtnb.sources.tail(log, example={"timestamp": "datetime64[ns]", "x": "float64"},
                            time="timestamp", name="logs")
    with pytest.raises(rtnb.CheckpointError, match="tail cannot resume at a file offset"):
        Checkpoint(tmp_path / "state.db").save(rtnb.Pipeline(src))


# -- every kind of stateful node, in process -----------------------------------------------
def build_all(data: pd.DataFrame) -> tuple[rtnb.StreamingFrame, list[rtnb.StreamingFrame]]:
    src = rtnb.sources.replay(data, name="m")
    nodes = [
        src.window(rtnb.sliding("20s", every="5s"), by="host").agg(
            q=("cpu", "quantile", 0.9), last=("cpu", "last")),
        src.window(rtnb.session("2s"), by="host").agg(n=("cpu", "count")),
        src.window(rtnb.rows(7), by="host", emit="final").agg(s=("cpu", "sum")),
        src.window(rtnb.tumbling("10s"), by="host", emit="update", retain="1min").agg(
            m=("cpu", "max")),
        src.rolling("30s", by="host", allowed_lateness="2s")["cpu"].agg("std", "max"),
        src.detect(rtnb.detect.EWMA(0.3), on="cpu", by="host"),
        rtnb.detect.absence(src, "3s", by="host"),
    ]
    nodes.append(rtnb.alert(nodes[5], "is_anomaly", on="cpu", by="host", for_="2s",
                            allowed_lateness="1s"))
    return src, nodes


def test_every_stateful_node_resumes_exactly_in_process(tmp_path: Path) -> None:
    data = rtnb.datasets.metrics().iloc[:3_000]
    data = data[data["host"].isin(["web-01", "db-01", "cache-01"])].reset_index(drop=True)
    quiet = (data["timestamp"].dt.second // 10 == 3) & (data["host"] == "db-01")
    data = data[~quiet]  # db-01 is silent for 10 s every minute (absence)
    # a little disorder within the lateness
    rng = np.random.default_rng(0)
    data = data.iloc[np.argsort(data.index + rng.integers(0, 3, len(data)), kind="stable")]
    data = data.reset_index(drop=True)
    cuts = np.linspace(0, len(data), 14).astype(int)
    batches = [data.iloc[lo:hi].reset_index(drop=True) for lo, hi in itertools.pairwise(cuts)]

    src, nodes = build_all(data)
    expected = collect_all(src)  # the source and every node
    feed(src, batches)

    src_a, _ = build_all(data)
    got = collect_all(src_a)
    feed(src_a, batches[:6], close=False)
    Checkpoint(tmp_path / "s.db").save(rtnb.Pipeline(src_a))
    src_b, _ = build_all(data)
    pipeline_b = rtnb.Pipeline(src_b)
    assert Checkpoint(tmp_path / "s.db").restore(pipeline_b)
    for name, out in got.items():  # the resumed run adds to what the stopped one emitted
        pipeline_b.node(name).sink(out.append)
    feed(src_b, batches[6:])
    assert list(got) == list(expected) == [src.name, *(n.name for n in nodes)]
    for name, want in expected.items():
        assert len(want.frame()) > 0, name
        pd.testing.assert_frame_equal(got[name].frame(), want.frame(), obj=name)
    assert src_b.counters.events == len(data)
