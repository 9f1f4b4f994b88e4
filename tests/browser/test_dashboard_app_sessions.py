"""Browser sessions of a served dashboard app end cleanly (issue 18).

The app is exported from a pipeline built here and served by ``rtnb serve`` on a free loopback
port with a short ``--session-linger``; pages are opened in Debian's chromium and closed, one
after the other. Each closed page's session must end: its source stopped, its frames and Bokeh
models freed (the app logs both when they are garbage), the server idle again, and the log free
of "Failed sending message", MISSING_RENDERERS warnings and tracebacks.

The keyed line plot has no ``mark``: it has no renderer until its first key arrives, which is
what made Bokeh warn MISSING_RENDERERS for every session.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

import rtnb

pytestmark = pytest.mark.browser

RTNB = Path(sys.executable).with_name("rtnb")
SESSIONS = 4
LINGER_S = 3

ROWS = """() => {
  let n = 0;
  for (const m of Bokeh.documents[0]._all_models.values()) {
    if (m.type === 'ColumnDataSource') {
      const k = Object.keys(m.data)[0]; n += k ? m.data[k].length : 0; } }
  return n; }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads line in /proc/{pid}/status")


def sockets(pid: int) -> int:
    """Open sockets of process ``pid`` (listening ones and connections)."""
    fds = Path(f"/proc/{pid}/fd")
    return sum(os.readlink(fd).startswith("socket:") for fd in fds.iterdir())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, Path]]:
    folder = tmp_path_factory.mktemp("sessions")
    src = rtnb.sources.replay(rtnb.datasets.metrics_path(), speed=300, name="metrics")
    cpu = src.window(rtnb.tumbling("30s"), by="host", emit="update").agg(cpu=("cpu", "mean"))
    rtnb.dashboard(src.status(), cpu.plot.line(x="window_start", y="cpu", by="host"))
    script = rtnb.Pipeline(cpu).export_dashboard(folder / "fleet.py")
    port = free_port()
    log_path = folder / "serve.log"
    # the whole bundled day: each session's source runs until its page closes
    env = {**os.environ, "RTNB_REPLAY_MAX_EVENTS": "2000000"}
    with log_path.open("w") as log, subprocess.Popen(
            [str(RTNB), "serve", str(script), "--port", str(port),
             "--session-linger", str(LINGER_S)],
            stdout=log, stderr=subprocess.STDOUT, env=env) as proc:
        try:
            deadline = time.monotonic() + 60
            while "Bokeh app running" not in log_path.read_text():
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "bokeh serve did not start"
                time.sleep(0.2)
            yield f"http://127.0.0.1:{port}/fleet", proc.pid, log_path
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_closed_sessions_end_quietly_and_free_their_pipeline(
        server: tuple[str, int, Path], browser: Browser) -> None:
    url, pid, log_path = server
    idle_sockets = sockets(pid)
    began = time.monotonic()
    first_threads = 0
    for i in range(SESSIONS):
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(url)
            page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0",
                                   timeout=60_000)
            page.wait_for_function(f"() => ({ROWS})() > 0", timeout=30_000)  # data arrive
        finally:
            context.close()
        if i == 0:  # the first session starts the server's pools (pyarrow's threads)
            first_threads = threads(pid)
    opened = time.monotonic() - began

    def ended(what: str) -> int:
        return log_path.read_text().count(what)

    # the linger, then the server's cleanup; generous: the browser tests run beside the main
    # suite, whose Dask clusters and fault tests load both cores (a fresh make test missed a
    # 20 s margin once)
    deadline = time.monotonic() + LINGER_S + 90
    while (ended("session of pipeline 'metrics' ended") < SESSIONS
           or ended("freed the frames of session pipeline 'metrics'") < SESSIONS
           or ended("freed the Bokeh models of session pipeline 'metrics'") < SESSIONS):
        assert time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.2)
    text = log_path.read_text()
    assert text.count("WebSocket connection opened") == SESSIONS, text[-3000:]
    for noise in ("Failed sending message", "MISSING_RENDERERS", "Traceback", "ERROR"):
        assert noise not in text, (noise, text[-3000:])
    # every source stopped: the server idles (a running replay keeps a core busy)
    before = cpu_seconds(pid)
    time.sleep(2)
    assert cpu_seconds(pid) - before < 0.3, "the server still works after its pages closed"
    assert sockets(pid) == idle_sockets, (sockets(pid), idle_sockets)
    assert threads(pid) <= first_threads, (threads(pid), first_threads)  # none per session
    print(f"{SESSIONS} sessions opened and closed in {opened:.1f} s")
