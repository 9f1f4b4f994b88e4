"""Metric labels of an exported script use the notebook's names (issue 18, defect 10: the
``monitor.py`` exported from notebook 03 labelled its metrics ``window_2``)."""

from __future__ import annotations

import runpy
import urllib.request
from pathlib import Path

import pytest

import rtnb
from rtnb.errors import ConfigError
from rtnb.export import runtime


def scrape(pipeline: rtnb.Pipeline) -> dict[str, float]:
    """``rtnb_rows_total`` by ``node`` label, after running the pipeline to its end."""
    counts = runtime._Counts(pipeline.frames)
    server, port = runtime.serve_metrics(pipeline, counts, 0)
    try:
        pipeline.run()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    rows = {}
    for line in text.splitlines():
        if line.startswith("rtnb_rows_total{"):
            labels, value = line.rsplit(" ", 1)
            rows[labels.split('node="', 1)[1].split('"', 1)[0]] = float(value)
    return rows


def build() -> tuple[rtnb.StreamingFrame, rtnb.StreamingFrame, rtnb.StreamingFrame]:
    src = rtnb.sources.replay(rtnb.datasets.metrics_path(), max_events=3_000, name="metrics")
    busy = src[src["cpu"] > 20]
    cpu = busy.window(rtnb.tumbling("1min"), by="host").agg(mean=("cpu", "mean"))
    lat = src.window(rtnb.tumbling("1min"), by="host").agg(p99=("latency_ms", "quantile", 0.99))
    return src, cpu, lat


def test_exported_script_labels_metrics_with_the_notebook_names(tmp_path: Path) -> None:
    src, cpu, lat = build()
    script = rtnb.Pipeline(cpu, lat).export(tmp_path / "monitor.py",
                                            names={"cpu": cpu, "lat": lat, "src": src})
    text = script.read_text()
    assert "labels={'src': src, 'cpu': cpu, 'lat': lat}" in text
    rebuilt = runpy.run_path(str(script), run_name="labels_test")["build"]()
    rows = scrape(rebuilt)
    # the two windows and the source by their notebook names; the unnamed filter by its path
    assert set(rows) == {"src", "cpu", "lat", "metrics.filter[(cpu > 20)]"}
    assert rows["src"] == 3_000
    assert 0 < rows["cpu"] and 0 < rows["lat"]


def test_without_labels_metrics_keep_the_node_paths() -> None:
    src, cpu, lat = build()
    rows = scrape(rtnb.Pipeline(cpu, lat))
    assert set(rows) == {f.name for f in (src, cpu, lat)} | {"metrics.filter[(cpu > 20)]"}


def test_a_label_must_name_a_frame_of_the_pipeline() -> None:
    _, cpu, _ = build()
    other, _, _ = build()
    with pytest.raises(ConfigError, match="'x' must name a frame of this pipeline"):
        rtnb.Pipeline(cpu, labels={"x": other})
