"""The exported dashboard app, served by ``rtnb serve`` and checked in headless chromium.

The app is exported from a pipeline built here (the same API as a notebook), served on a free
loopback port, and opened in Debian's chromium: its plots render and keep updating, a Param
widget reaches the server's pipeline, and a websocket from an origin outside the allow-list is
refused.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

import rtnb

pytestmark = pytest.mark.browser

RTNB = Path(sys.executable).with_name("rtnb")

SOURCES = """() => {
  const doc = Bokeh.documents[0]; const out = {};
  for (const m of doc._all_models.values()) {
    if (m.type === 'ColumnDataSource') {
      const k = Object.keys(m.data)[0]; out[m.id] = k ? m.data[k].length : 0; } }
  return out; }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, Path]]:
    folder = tmp_path_factory.mktemp("app")
    window = rtnb.Param("30s", min="5s", max="10min", name="window", doc="tumbling window")
    limit = rtnb.Param(25.0, min=0.0, max=100.0, name="cpu limit")
    src = rtnb.sources.replay(rtnb.datasets.metrics_path(), speed=300, name="metrics")
    cpu = src.window(rtnb.tumbling(window), by="host", emit="update").agg(cpu=("cpu", "mean"))
    hot = rtnb.alert(cpu, cpu["cpu"] > limit, on="cpu", by="host", for_="1min", name="hot")
    rtnb.dashboard(window, limit, src.status(),
                   cpu.plot.line(x="window_start", y="cpu", by="host").mark(hot),
                   hot.plot.table(["host", "state", "time", "value"], rows=6), ncols=2)
    script = rtnb.Pipeline(hot).export_dashboard(folder / "fleet.py")
    port = free_port()
    log = (folder / "serve.log").open("w")
    # the whole bundled day (24 h at speed 300: 288 s), not the test suite's 20,000 rows,
    # which the app replays in ~6 s: less than a loaded page may take to render
    env = {**os.environ, "RTNB_REPLAY_MAX_EVENTS": "2000000"}
    with subprocess.Popen([str(RTNB), "serve", str(script), "--port", str(port)],
                          stdout=log, stderr=subprocess.STDOUT, env=env) as server:
        try:
            deadline = time.monotonic() + 60
            while "Bokeh app running" not in (folder / "serve.log").read_text():
                assert server.poll() is None, (folder / "serve.log").read_text()
                assert time.monotonic() < deadline, "bokeh serve did not start"
                time.sleep(0.2)
            yield f"http://127.0.0.1:{port}/fleet", port, folder / "serve.log"
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()


def test_app_is_bound_to_loopback_and_ruff_clean(app: tuple[str, int, Path]) -> None:
    _, port, log = app
    assert f"Bokeh app running at: http://127.0.0.1:{port}/fleet" in log.read_text()
    script = log.parent / "fleet.py"
    ruff = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", script.name],
                          capture_output=True, text=True, check=False, cwd=script.parent)
    assert ruff.returncode == 0, ruff.stdout


def test_plots_render_and_update(app: tuple[str, int, Path], browser: Browser) -> None:
    url, _, log = app
    page: Page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(url)
        page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0",
                               timeout=120_000)
        page.wait_for_selector(".bk-Canvas, canvas", timeout=60_000)
        first = page.evaluate(SOURCES)
        deadline = time.monotonic() + 60
        while True:  # every line (one source per host) keeps getting rows
            time.sleep(1)
            later = page.evaluate(SOURCES)
            grown = [k for k in first if later.get(k, 0) > first[k]]
            if len(grown) >= 12:
                break
            assert time.monotonic() < deadline, (first, later, log.read_text()[-2000:])
        status = page.evaluate(
            "() => [...Bokeh.documents[0]._all_models.values()]"
            ".filter(m => m.type === 'Div').map(m => m.text).join(' ')")
        assert "events in" in status and "running" in status  # the status lines
        hosts = page.evaluate(
            "() => [...Bokeh.documents[0]._all_models.values()]"
            ".filter(m => m.type === 'LegendItem').map(m => m.label.value)")
        assert sum(bool(re.fullmatch(r"web-0\d", str(h))) for h in hosts) == 6
        assert errors == [], errors
        # the window widget reaches the server's pipeline: the plot title follows it
        page.select_option("select", "1min")
        page.wait_for_function(
            "() => [...Bokeh.documents[0]._all_models.values()].some("
            "m => m.type === 'Title' && /tumbling 1min/.test(m.text))",
            timeout=30_000)
    finally:
        page.close()
    assert "Traceback" not in log.read_text()


def test_websocket_from_another_origin_is_refused(app: tuple[str, int, Path]) -> None:
    _, port, log = app
    request = (f"GET /fleet/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\nOrigin: http://evil.example\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request.encode())
        status = s.recv(4096).decode(errors="replace").split("\r\n", 1)[0]
    assert " 403 " in status, status
    deadline = time.monotonic() + 10
    while "Refusing websocket connection from Origin 'http://evil.example'" not in (
            log.read_text()):
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.1)
