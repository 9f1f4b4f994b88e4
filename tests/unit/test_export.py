"""Pipelines and export: the graph a user builds, written as a script that does the same thing.

The exported scripts run as real subprocesses (``python -I``); their output is compared with
the in-process pipeline fed the same batches, and with pandas.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import rtnb
from rtnb.pipeline import Pipeline

ROWS = 6_000
FACTOR = 2.0


def scale(batch: pd.DataFrame) -> pd.DataFrame:
    """A user function with a module global and a constant: both must travel with it."""
    return batch.assign(cpu=np.round(batch["cpu"] * FACTOR, 3))


def build_pipeline(window: str = "10s") -> tuple[rtnb.StreamingFrame, dict[str, object]]:
    src = rtnb.sources.replay(rtnb.datasets.metrics_path(), max_events=ROWS, batch_size=700,
                              name="metrics")
    size = rtnb.Param(window, min="1s", max="5min", name="window", doc="tumbling window")
    limit = rtnb.Param(50.0, min=0.0, max=200.0, name="cpu limit")
    busy = src[(src["requests"] > 0) & src["host"].isin(["web-01", "web-02", "db-01"])]
    scaled = busy.map_batches(scale)
    cpu = scaled.window(rtnb.tumbling(size), by="host", allowed_lateness="2s").agg(
        mean=("cpu", "mean"), n=("cpu", "count"))
    hot = cpu.assign(hot=cpu["mean"] > limit)
    alerts = rtnb.alert(hot, "hot", on="mean", by="host", for_="20s", name="hot_alert")
    smooth = busy.rolling("1min", by="host")["latency_ms"].mean()
    names = {"src": src, "busy": busy, "scaled": scaled, "cpu": cpu, "hot": hot,
             "alerts": alerts, "smooth": smooth}
    return src, names


def export(tmp_path: Path, **kwargs: object) -> tuple[Path, Pipeline, dict[str, object]]:
    src, names = build_pipeline(**kwargs)  # type: ignore[arg-type]
    pipeline = rtnb.Pipeline(src)
    script = pipeline.export(tmp_path / "monitor.py", names=names)
    return script, pipeline, names


def run_script(script: Path, *args: str, cwd: Path | None = None,
               env: dict[str, str] | None = None, timeout: float = 120,
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", str(script), *args], cwd=cwd or script.parent,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)


def read_folder(folder: Path) -> dict[str, pd.DataFrame]:
    manifest = json.loads((folder / "manifest.json").read_text())
    return {node: pd.read_parquet(folder / file) for node, file in manifest.items()}


# -- the graph ------------------------------------------------------------------------------
def test_pipeline_lists_nodes_kinds_inputs_and_params() -> None:
    src, names = build_pipeline()
    pipeline = rtnb.Pipeline(names["alerts"])  # type: ignore[arg-type]
    assert pipeline.root is src
    table = pipeline.describe()
    assert table["kind"].tolist() == ["source", "filter", "map_batches", "window", "assign",
                                      "alert", "rolling"]
    by_node = table.set_index("node")
    alert_name = names["alerts"].name  # type: ignore[attr-defined]
    assert by_node.loc[alert_name, "inputs"] == names["hot"].name  # type: ignore[attr-defined]
    assert by_node.loc[names["cpu"].name, "params"] == "window"  # type: ignore[attr-defined]
    assert [p.name for p in pipeline.params] == ["window", "cpu limit"]
    assert pipeline.leaves() == [names["alerts"], names["smooth"]]
    svg = pipeline.visualize()._repr_svg_()
    assert svg.startswith("<svg") and svg.count("<rect") == 7 and "alert" in svg


def test_pipeline_of_frames_from_two_sources_is_refused() -> None:
    a = rtnb.sources.replay(rtnb.datasets.metrics_path(), name="a")
    b = rtnb.sources.replay(rtnb.datasets.metrics_path(), name="b")
    with pytest.raises(rtnb.ConfigError, match="does not come from the source 'a'"):
        rtnb.Pipeline(a, b)


# -- the script -----------------------------------------------------------------------------
def test_script_is_readable_and_passes_ruff(tmp_path: Path) -> None:
    script, _, _ = export(tmp_path)
    text = script.read_text()
    # notebook variable names, the tuned Param values, the user function and its globals
    for line in ("busy = src[((src['requests'] > 0) & src['host'].isin(['web-01', 'web-02', "
                 "'db-01']))]", "scaled = busy.map_batches(scale)", "'window': '10s',",
                 "FACTOR = 2.0", "import numpy as np", "def scale(batch"):
        assert line in text, line
    assert "lambda" not in text
    # where it is written, with ruff's default rules (as a user would run it)
    ruff = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", script.name],
                          capture_output=True, text=True, check=False, cwd=script.parent)
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr
    help_text = run_script(script, "--help")
    assert help_text.returncode == 0, help_text.stderr
    for option in ("--window", "--cpu-limit", "--until", "--max-events", "--metrics-port",
                   "--log-format", "--input", "--output", "--source"):
        assert option in help_text.stdout, option


def test_exported_script_reproduces_the_pipeline_exactly(tmp_path: Path) -> None:
    """Same input batches -> the same output batches in every node, byte for byte in value."""
    script, pipeline, names = export(tmp_path)
    recording = pipeline.record()
    pipeline.run()
    expected = read_folder(recording.save(tmp_path / "notebook"))
    done = run_script(script, "--input", str(tmp_path / "notebook"), "--output",
                      str(tmp_path / "script"))
    assert done.returncode == 0, done.stderr
    got = read_folder(tmp_path / "script")
    assert set(got) == set(expected)
    assert len(expected) == 10  # input, 7 nodes, the late outputs of the window and rolling
    for node, frame in expected.items():
        pd.testing.assert_frame_equal(got[node], frame, obj=node)
    assert len(expected[names["alerts"].name]) > 0  # type: ignore[attr-defined]
    assert len(expected[names["cpu"].name]) > 0  # type: ignore[attr-defined]


def test_param_option_changes_the_result_as_pandas_says(tmp_path: Path) -> None:
    script, _, names = export(tmp_path)
    done = run_script(script, "--window", "1min", "--output", str(tmp_path / "out"),
                      "--log-format", "console")
    assert done.returncode == 0, done.stderr
    cpu_name = names["cpu"].name  # type: ignore[attr-defined]
    got = read_folder(tmp_path / "out")[cpu_name].drop(columns="__batch__")
    df = rtnb.datasets.metrics().iloc[:ROWS]
    df = df[(df["requests"] > 0) & df["host"].isin(["web-01", "web-02", "db-01"])]
    df = df.assign(cpu=np.round(df["cpu"] * FACTOR, 3))
    expected = (df.groupby(["host", pd.Grouper(key="timestamp", freq="1min")])["cpu"]
                .agg(["mean", "count"]).reset_index())
    got = got.sort_values(["host", "window_start"], ignore_index=True)
    assert (got["window_end"] - got["window_start"] == pd.Timedelta("1min")).all()
    assert got["window_start"].tolist() == expected["timestamp"].tolist()
    np.testing.assert_allclose(got["mean"], expected["mean"], rtol=1e-12)
    assert got["n"].tolist() == expected["count"].tolist()


@pytest.mark.parametrize(("args", "message"), [
    (["--window", "10h"], "window"),
    (["--cpu-limit", "abc"], "cpu-limit"),
    (["--until", "soon"], "until"),
    (["--log-format", "xml"], "log-format"),
    (["--input", "nowhere"], "no recording"),
])
def test_bad_options_exit_2_naming_the_option(tmp_path: Path, args: list[str],
                                              message: str) -> None:
    script, _, _ = export(tmp_path)
    done = run_script(script, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr


def test_max_events_bounds_the_run(tmp_path: Path) -> None:
    script, _, _ = export(tmp_path)
    done = run_script(script, "--max-events", "1234", "--output", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert len(read_folder(tmp_path / "out")["input"]) == 1234
    stop = json.loads(done.stderr.strip().splitlines()[-1])
    assert stop["event"] == "stop" and stop["events"] == 1234


def test_sigterm_stops_flushes_windows_and_exits_0(tmp_path: Path) -> None:
    """A paced replay that would take hours: SIGTERM ends it, open windows are flushed."""
    src = rtnb.sources.replay(rtnb.datasets.metrics_path(), speed=5, name="metrics")
    src.window(rtnb.tumbling("1h"), by="host").agg(n=("cpu", "count"))
    script = rtnb.Pipeline(src).export(tmp_path / "slow.py")
    with subprocess.Popen([sys.executable, "-I", str(script), "--output",
                           str(tmp_path / "out"), "--metrics-port", "0"],
                          cwd=tmp_path, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        lines = [json.loads(proc.stderr.readline()) for _ in range(2)]
        url = next(line["url"] for line in lines if line["event"] == "metrics")
        assert url.startswith("http://127.0.0.1:")
        deadline = time.monotonic() + 60
        while True:  # wait until some rows went through, as a scrape shows
            with urllib.request.urlopen(url, timeout=5) as reply:
                body = reply.read().decode()
            rows = [line for line in body.splitlines()
                    if line.startswith('rtnb_rows_total{node="metrics",pipeline="metrics"}')]
            if rows and float(rows[0].split()[-1]) > 0:
                break
            assert time.monotonic() < deadline, body[-2000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, rest
    events = [json.loads(line) for line in rest.splitlines()]
    assert [e["event"] for e in events][-3:] == ["signal", "output", "stop"]
    out = read_folder(tmp_path / "out")
    read = len(out["input"])
    windows = out["metrics.window"]
    assert read > 0
    assert windows["n"].sum() == read  # the open 1 h windows were flushed on the way out


def test_metrics_count_every_node() -> None:
    """Each node's rtnb_rows_total equals the rows it emitted (collected independently)."""
    from rtnb.export import runtime

    src, names = build_pipeline()
    pipeline = rtnb.Pipeline(src)
    collected = {f.name: f.collect() for f in pipeline.frames}
    counts = runtime._Counts(pipeline.frames)
    server, port = runtime.serve_metrics(pipeline, counts, 0)
    try:
        pipeline.run()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    scraped = {}
    for line in text.splitlines():
        if line.startswith("rtnb_rows_total{"):
            labels, value = line.rsplit(" ", 1)
            node = labels.split('node="', 1)[1].split('"', 1)[0]
            scraped[node] = float(value)
    expected = {name: float(sum(len(b) for b in batches)) for name, batches in collected.items()}
    assert scraped == expected
    assert expected["metrics"] == ROWS
    assert expected[names["alerts"].name] > 0  # type: ignore[attr-defined]
    assert 'rtnb_late_events_total{node="' in text
    assert 'rtnb_pipeline_failed{pipeline="metrics"} 0.0' in text


# -- what export refuses and what it never writes -------------------------------------------
def test_lambda_is_refused_naming_the_node(tmp_path: Path) -> None:
    src = rtnb.sources.replay(rtnb.datasets.metrics_path(), name="metrics")
    src.map_batches(lambda df: df, name="passthrough")
    with pytest.raises(rtnb.ExportError, match=r"node 'metrics.passthrough': got a lambda; "
                                               r"define it with `def`"):
        rtnb.Pipeline(src).export(tmp_path / "x.py")


def test_closure_is_refused(tmp_path: Path) -> None:
    def make(k: float):  # type: ignore[no-untyped-def]
        def times_k(df: pd.DataFrame) -> pd.DataFrame:
            return df.assign(cpu=df["cpu"] * k)
        return times_k

    src = rtnb.sources.replay(rtnb.datasets.metrics_path(), name="metrics")
    src.map_batches(make(3.0))
    with pytest.raises(rtnb.ExportError, match=r"closure over \['k'\]"):
        rtnb.Pipeline(src).export(tmp_path / "x.py")


def test_frame_without_source_is_refused(tmp_path: Path) -> None:
    frame = rtnb.StreamingFrame(rtnb.datasets.metrics().iloc[:0], time="timestamp")
    frame.query("cpu > 1")
    with pytest.raises(rtnb.ExportError, match="has no source"):
        rtnb.Pipeline(frame).export(tmp_path / "x.py")


def test_secrets_are_read_from_the_environment_never_written(tmp_path: Path) -> None:
    example = {"timestamp": "datetime64[ns]", "host": "str", "cpu": "float64"}
    ws = rtnb.sources.websocket("wss://feed.example/ws", example=example, time="timestamp",
                                token="tok-SECRET-1", name="feed")
    rtnb.sinks.to_redis_stream(ws, "out", "redis://alice:pw-SECRET-2@127.0.0.1:6379/0")
    script = rtnb.Pipeline(ws).export(tmp_path / "monitor.py", check=False)
    text = script.read_text()
    assert "SECRET" not in text
    assert "token_env='RTNB_FEED_TOKEN'" in text
    assert "redis://alice@127.0.0.1:6379/0" in text and "password_env=" in text
    doc = text.split('"""')[1]
    assert "RTNB_FEED_TOKEN: token of 'feed'" in doc
    # the script builds with the secrets taken from the environment
    env = {"RTNB_FEED_TOKEN": "from-env", "RTNB_FEED_LOG_PASSWORD": "x"}
    names = [line.split(":")[0].strip() for line in doc.splitlines() if line.startswith("    ")]
    env.update(dict.fromkeys(names, "from-env"))
    code = ("import runpy, sys; ns = runpy.run_path(sys.argv[1]); p = ns['build']();"
            "print([f.name for f in p.frames], len(p.sinks))")
    done = subprocess.run([sys.executable, "-I", "-c", code, str(script)], capture_output=True,
                          text=True, env={**os.environ, **env}, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['feed'] 1"


def test_credential_header_is_read_from_the_environment(tmp_path: Path) -> None:
    # (more in test_export_secrets.py: query parameters, headers, URL passwords)
    example = {"timestamp": "datetime64[ns]", "cpu": "float64"}
    ws = rtnb.sources.websocket("ws://127.0.0.1:1/", example=example, time="timestamp",
                                headers={"Authorization": "Bearer x-SECRET"}, name="feed")
    text = rtnb.Pipeline(ws).export(tmp_path / "x.py", check=False).read_text()
    assert "SECRET" not in text
    assert "headers={'Authorization': env_secret('RTNB_FEED_AUTHORIZATION')}" in text


def test_replayed_dataframe_travels_as_a_parquet_file(tmp_path: Path) -> None:
    df = rtnb.datasets.metrics().iloc[:500]
    src = rtnb.sources.replay(df, name="recorded")
    src.window(rtnb.tumbling("1min")).agg(mean=("cpu", "mean"))
    script = rtnb.Pipeline(src).export(tmp_path / "app.py")
    stored = pd.read_parquet(tmp_path / "app_data" / "recorded.parquet")
    pd.testing.assert_frame_equal(stored, df.reset_index(drop=True))
    done = run_script(script, "--output", str(tmp_path / "out"), cwd=Path("/"))
    assert done.returncode == 0, done.stderr
    got = read_folder(tmp_path / "out")["recorded.window"]
    expected = df.groupby(pd.Grouper(key="timestamp", freq="1min"))["cpu"].mean()
    np.testing.assert_allclose(got["mean"], expected.to_numpy(), rtol=1e-12)


def test_a_script_without_sinks_says_it_discards_its_results(tmp_path: Path) -> None:
    """Issue 18, defect 10: the monitor.py exported from notebook 03 has no sinks (its views
    stay in the notebook), so a headless run computed and discarded without a word."""
    script, _, _ = export(tmp_path)  # build_pipeline has no sink
    quiet = run_script(script, "--max-events", "2000")
    assert quiet.returncode == 0, quiet.stderr
    logged = quiet.stdout + quiet.stderr
    assert '"event": "no sinks"' in logged and "computed and discarded" in logged
    kept = run_script(script, "--max-events", "2000", "--output", str(tmp_path / "out"))
    assert kept.returncode == 0, kept.stderr
    assert '"event": "no sinks"' not in kept.stdout + kept.stderr
