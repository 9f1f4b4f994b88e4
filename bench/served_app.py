"""Served dashboard app: server memory and log after browser sessions open and close (issue 18).

The fleet dashboard (a replay of the bundled day at speed 300, a 30 s tumbling mean per host,
a keyed line plot marked by an alert, the alert's table, the source's status line and two
Param widgets) is exported with ``Pipeline.export_dashboard`` and served by ``rtnb serve`` with
its defaults. Debian's chromium (Playwright) opens the page, waits until plotted rows arrive,
keeps it open ``HOLD_S`` seconds and closes it; then the next one. The server's resident
memory (``/proc/PID/status`` VmRSS) is read once the first session has ended (the app logs
when its frames and Bokeh models are freed) and once the last one has; its log is searched
for "Failed sending message", MISSING_RENDERERS and tracebacks.

Usage::

    .venv/bin/python bench/run.py --only served_app           # 20 sessions
    .venv/bin/python bench/run.py --only served_app --quick   # 5 sessions
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

TITLE = "Served app: server memory and log noise after browser sessions close (issue 18)"

SESSIONS = 20
SESSIONS_QUICK = 5
HOLD_S = 2.0
RSS_RATIO = 1.2  # RSS after the last session ended <= RSS_RATIO x after the first
ENDED = "freed the frames of session pipeline 'metrics'"
NOISE = ("Failed sending message", "MISSING_RENDERERS", "Traceback")

Log = Callable[[str], None]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def export_app(folder: Path) -> Path:
    """The fleet dashboard of the browser test, written as a Bokeh server app."""
    import rtnb

    window = rtnb.Param("30s", min="5s", max="10min", name="window")
    limit = rtnb.Param(25.0, min=0.0, max=100.0, name="cpu limit")
    src = rtnb.sources.replay(rtnb.datasets.metrics_path(), speed=300, name="metrics")
    cpu = src.window(rtnb.tumbling(window), by="host", emit="update").agg(cpu=("cpu", "mean"))
    hot = rtnb.alert(cpu, cpu["cpu"] > limit, on="cpu", by="host", for_="1min", name="hot")
    rtnb.dashboard(window, limit, src.status(),
                   cpu.plot.line(x="window_start", y="cpu", by="host").mark(hot),
                   hot.plot.table(["host", "state", "time", "value"], rows=6), ncols=2)
    return rtnb.Pipeline(hot).export_dashboard(folder / "fleet.py")


def _wait_for(log_path: Path, text: str, count: int, timeout: float) -> float:
    """Wait until ``text`` is in the log ``count`` times; return the seconds waited."""
    began = time.monotonic()
    while log_path.read_text().count(text) < count:
        if time.monotonic() - began > timeout:
            msg = f"{text!r} not {count} times in the server log after {timeout:.0f} s"
            raise TimeoutError(msg)
        time.sleep(0.2)
    return time.monotonic() - began


def measure(sessions: int, log: Log) -> dict[str, float | int]:
    """Serve the app, open and close ``sessions`` pages; RSS and log counts."""
    from playwright.sync_api import sync_playwright

    out: dict[str, float | int] = {}
    with tempfile.TemporaryDirectory(prefix="rtnb-bench-served-") as tmp:
        script = export_app(Path(tmp))
        port = _free_port()
        log_path = Path(tmp) / "serve.log"
        env = {**os.environ, "RTNB_REPLAY_MAX_EVENTS": "2000000"}  # the whole bundled day
        rtnb_cli = Path(sys.executable).with_name("rtnb")
        with log_path.open("w") as server_log, subprocess.Popen(
                [str(rtnb_cli), "serve", str(script), "--port", str(port)],
                stdout=server_log, stderr=subprocess.STDOUT, env=env) as proc:
            try:
                _wait_for(log_path, "Bokeh app running", 1, 60)
                out["rss_idle"] = rss_mib(proc.pid)
                url = f"http://127.0.0.1:{port}/fleet"
                began = time.monotonic()
                with sync_playwright() as pw:
                    browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                                 args=["--no-sandbox"])
                    try:
                        for i in range(1, sessions + 1):
                            _one_session(browser, url)
                            if i == 1:
                                _wait_for(log_path, ENDED, 1, 60)
                                out["rss_first"] = rss_mib(proc.pid)
                                log(f"  session 1 ended: server RSS {out['rss_first']:.0f} "
                                    "MiB")
                            elif i % 5 == 0:
                                log(f"  {i} sessions opened and closed: server RSS "
                                    f"{rss_mib(proc.pid):.0f} MiB")
                    finally:
                        browser.close()
                out["open_close_s"] = time.monotonic() - began
                out["end_wait_s"] = _wait_for(log_path, ENDED, sessions, 120)
                out["rss_last"] = rss_mib(proc.pid)
                text = log_path.read_text()
                out["sessions"] = sessions
                out["connections"] = text.count("WebSocket connection opened")
                out["ended"] = text.count("session of pipeline 'metrics' ended")
                out["freed_frames"] = text.count(ENDED)
                out["freed_models"] = text.count("freed the Bokeh models")
                for noise in NOISE:
                    out[noise] = text.count(noise)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    return out


def _one_session(browser: object, url: str) -> None:
    context = browser.new_context()  # type: ignore[attr-defined]
    try:
        page = context.new_page()
        page.goto(url)
        page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0",
                               timeout=60_000)
        page.wait_for_function(
            "() => [...Bokeh.documents[0]._all_models.values()].some(m => "
            "m.type === 'ColumnDataSource' && Object.values(m.data).some(c => c.length > 0))",
            timeout=60_000)
        time.sleep(HOLD_S)
    finally:
        context.close()


def run(quick: bool, log: Log) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Run the benchmark; return (markdown lines, target rows)."""
    sessions = SESSIONS_QUICK if quick else SESSIONS
    log(f"served app: {sessions} browser sessions, each open until data arrive + {HOLD_S} s")
    try:
        r = measure(sessions, log)
    except Exception as exc:  # no chromium, no playwright: a result, not a crash of the run
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        log(f"  not measured: {why}")
        return ([f"## {TITLE}", "", f"Not measured: {why}", ""],
                [(f"RSS after {SESSIONS} sessions <= {RSS_RATIO}x after the first", why, "n/a")])
    ratio = float(r["rss_last"]) / float(r["rss_first"])
    noise = sum(int(r[n]) for n in NOISE)
    log(f"  RSS idle {r['rss_idle']:.0f} MiB, after 1 session {r['rss_first']:.0f} MiB, after "
        f"{sessions} {r['rss_last']:.0f} MiB ({ratio:.2f}x); noise lines {noise}")
    rows = [(f"RSS after {SESSIONS} sessions <= {RSS_RATIO}x after the first",
             f"{r['rss_first']:.0f} -> {r['rss_last']:.0f} MiB ({ratio:.2f}x)"
             + (f" [quick: {sessions} sessions]" if quick else ""),
             "n/a" if quick else ("PASS" if ratio <= RSS_RATIO else "FAIL")),
            ("no 'Failed sending message', MISSING_RENDERERS or traceback in the server log",
             f"{noise} lines",
             "PASS" if noise == 0 else "FAIL"),
            ("every closed session's pipeline stopped and freed",
             f"{r['freed_frames']} of {sessions}",
             "PASS" if r["freed_frames"] == r["ended"] == sessions else "FAIL")]
    md = [f"## {TITLE}", "",
          f"`rtnb serve` of the exported fleet dashboard with its defaults; {sessions} pages "
          f"opened in chromium one after the other, each closed {HOLD_S:.0f} s after its "
          f"first plotted rows ({r['open_close_s']:.0f} s in all); then "
          f"{r['end_wait_s']:.0f} s until the last session ended (the unused-session linger).",
          "",
          "| measure | value |", "| --- | ---: |",
          f"| server RSS before any session | {r['rss_idle']:.0f} MiB |",
          f"| server RSS once session 1 ended | {r['rss_first']:.0f} MiB |",
          f"| server RSS once session {sessions} ended | {r['rss_last']:.0f} MiB |",
          f"| ratio | {ratio:.2f} |",
          f"| websocket connections / sessions ended / frames freed / models freed | "
          f"{r['connections']} / {r['ended']} / {r['freed_frames']} / {r['freed_models']} |",
          *[f"| log lines with {n!r} | {r[n]} |" for n in NOISE],
          ""]
    return md, rows


if __name__ == "__main__":
    print("run the benchmark with `make bench` (bench/run.py --only served_app)",
          file=sys.stderr)
    sys.exit(2)
