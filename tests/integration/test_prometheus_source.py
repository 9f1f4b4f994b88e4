"""rtnb monitoring rtnb: the Prometheus sources against a real Prometheus server.

A private Prometheus (Debian's binary, 127.0.0.1, a free port, its own data dir, a 1 s scrape
interval; ``prometheus_helpers``) scrapes an exported rtnb script's ``--metrics-port``. The
script tails a file the test appends rows to in three phases; after each, the test waits
until the script's own ``/metrics`` shows them (its counters, read by the test itself) and
lets the counters stand still for a few scrapes. ``rtnb.sources.prometheus`` reads the
history (a range query) and then goes live (instant queries) while the phases go on: its
values must equal the script's own counters at the same times, and each (series, time) must
come once, as a range query over the same span read afterwards gives it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_helpers import PrometheusServer, free_port, start_prometheus

import rtnb
from rtnb import SourceError, metrics

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("prometheus") is None and os.environ.get("CI") != "true",
                       reason="no prometheus binary (tools/ensure-prometheus.sh installs it)"),
]

STEP = 0.25  # seconds between evaluations of the live run
PHASES = (100, 250, 50)  # rows appended in each phase
STILL = 3.5  # seconds the counters stand still after each phase (3 scrapes and more)
SCRAPE_SLACK = 1.6  # a scrape (every 1 s) after the counters settled is in by then


def frames(out: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(out, ignore_index=True)


def seconds(times: pd.Series) -> np.ndarray[Any, Any]:
    """Naive UTC times as float seconds since the epoch (as ``time.time()`` gives them)."""
    return times.to_numpy().astype("datetime64[ns]").astype(np.int64) / 1e9


def own_scrape(url: str) -> tuple[str, dict[str, float]]:
    """The script's exposition text and its rtnb_rows_total by node (parsed here)."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    rows = {s.labels["node"]: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "rtnb_rows_total"}
    return text, rows


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            msg = f"{what}: not within {timeout} s"
            raise AssertionError(msg)
        await asyncio.sleep(0.05)


@dataclass
class Phase:
    pushed: float  # time.time() just before the rows were appended
    confirmed: float  # time.time() once the script's own counters showed them
    counters: dict[str, float]  # rtnb_rows_total by node, read by the test from the script


@dataclass
class Monitored:
    """The timeline: the script, the server, the phases, what prometheus() read."""

    server: PrometheusServer
    metrics_url: str
    data: pd.DataFrame  # every row appended, in order
    phases: list[Phase] = field(default_factory=list)
    rows: pd.DataFrame | None = None
    source: Any = None
    start: float = 0.0
    end: float = 0.0
    text: str = ""
    scraped: pd.DataFrame | None = None


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    """An exported script scraped by a private Prometheus, fed in three phases."""
    folder = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    server = start_prometheus(folder / "server", [port])
    feed = folder / "feed.jsonl"
    feed.touch()
    src = rtnb.sources.tail(feed, example={"t": "datetime64[ns]", "host": "str",
                                           "cpu": "float64"}, time="t", name="feed")
    src.query("cpu > 50", name="hot")
    script = rtnb.Pipeline(src, name="watched").export(folder / "watched.py")
    log = (folder / "script.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-I", str(script), "--metrics-port", str(port)],
                            cwd=folder, stderr=log, stdout=log)
    url = f"http://127.0.0.1:{port}/metrics"
    rng = np.random.default_rng(20)
    data = pd.DataFrame({"host": [f"h{i % 3}" for i in range(sum(PHASES))],
                         "cpu": rng.uniform(0, 100, sum(PHASES)).round(2)})
    state = Monitored(server, url, data)

    async def phase(lo: int, hi: int) -> None:
        pushed = time.time()
        now = pd.Timestamp.now("UTC").tz_localize(None)
        with feed.open("a") as out:
            for row in data.iloc[lo:hi].itertuples():
                out.write(json.dumps({"t": now.isoformat(), "host": row.host,
                                      "cpu": row.cpu}) + "\n")
        while True:
            _, rows = await asyncio.to_thread(own_scrape, url)
            if rows.get("feed") == hi:
                break
            await asyncio.sleep(0.02)
        state.phases.append(Phase(pushed, time.time(), rows))

    async def timeline() -> None:
        def up() -> bool:
            try:
                own_scrape(url)
            except OSError:
                return False
            return True

        await wait_until(up, 60, "the script's /metrics")
        await asyncio.to_thread(server.wait_for_sample,
                                f'rtnb_rows_total{{instance="127.0.0.1:{port}"}}')
        state.start = time.time()
        await phase(0, PHASES[0])
        await asyncio.sleep(STILL)
        rows = rtnb.sources.prometheus(
            "rtnb_rows_total", url=server.url, step=f"{int(STEP * 1000)}ms",
            since=pd.Timestamp(state.start - 2, unit="s"), delay="1500ms",
            labels=["node", "pipeline", "job", "instance"], name="rows")
        out = rows.collect()
        rows.start()
        lo = PHASES[0]
        for n in PHASES[1:]:
            await phase(lo, lo + n)
            lo += n
            await asyncio.sleep(STILL)
        state.end = time.time()
        await wait_until(lambda: rows.source.next_ns > state.end * 1e9, 30,
                         "prometheus() reaching the end of the timeline")
        rows.stop()
        await rows.wait()
        state.rows, state.source = frames(out), rows.source
        # scrape() of the script, idle now, next to the test's own read of the same endpoint
        scraped = rtnb.sources.scrape(url, every="1s", name="scraped")
        got = scraped.collect()
        scraped.start()
        await wait_until(lambda: len(got) > 0, 30, "a scrape")
        scraped.stop()
        await scraped.wait()
        state.text, _ = await asyncio.to_thread(own_scrape, url)
        state.scraped = got[0]

    try:
        asyncio.run(timeline())
        yield state
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        server.stop()


def test_values_equal_the_scripts_own_counters_at_the_same_times(monitored):
    rows = monitored.rows
    phases = monitored.phases
    # the script's own counters (read by the test) are what the data says
    total = 0
    for n, ph in zip(PHASES, phases, strict=True):
        hot = int((monitored.data.cpu.iloc[total:total + n] > 50).sum())
        total += n
        assert ph.counters["feed"] == total
        assert ph.counters["feed.hot"] - (phases[phases.index(ph) - 1].counters["feed.hot"]
                                          if phases.index(ph) else 0) == hot
    assert set(rows.node) == {"feed", "feed.hot"}
    assert set(rows.pipeline) == {"watched"}
    for node, series in rows.groupby("node"):
        t = seconds(series.time)
        value = series.value.to_numpy()
        assert (np.diff(value) >= 0).all(), node  # a counter of a run without restarts
        for i, ph in enumerate(phases):
            until = phases[i + 1].pushed if i + 1 < len(phases) else monitored.end
            settled = (t >= ph.confirmed + SCRAPE_SLACK) & (t < until - 0.2)
            assert settled.sum() >= 4, (node, i, settled.sum())
            assert (value[settled] == ph.counters[node]).all(), (node, i, value[settled])
        assert value[-1] == phases[-1].counters[node]
    # history (range queries) and then live (instant queries), both used
    assert monitored.source.range_queries >= 1
    assert monitored.source.instant_queries >= 10


def test_history_then_live_gives_each_series_and_time_exactly_once(monitored):
    rows = monitored.rows
    step_ns = int(STEP * 1e9)
    # the watermark never goes back: rows arrive in event-time order
    assert rows.time.is_monotonic_increasing
    for _, series in rows.groupby("node"):
        ns = series.time.to_numpy().astype(np.int64)
        assert len(np.unique(ns)) == len(ns)
        assert (np.diff(ns) == step_ns).all()  # no gap, no overlap
        assert ns[0] % step_ns == 0
    # what the run read live equals the same span read afterwards as history only, in
    # pieces of 7 points (many range queries) instead of one
    first, last = rows.time.min(), rows.time.max()
    # the whole span must be older than now - delay, or its end is asked as live (instant)
    wait = (last + pd.Timedelta("2s") - pd.Timestamp.now("UTC").tz_localize(None)).total_seconds()
    time.sleep(max(0.0, wait))
    again = rtnb.sources.prometheus(
        "rtnb_rows_total", url=monitored.server.url, step=f"{int(STEP * 1000)}ms",
        since=first, until=last, labels=["node", "pipeline", "job", "instance"],
        delay="1500ms", max_points=7, name="again")
    out = again.collect()
    again.run()
    assert again.source.exhausted and again.source.instant_queries == 0
    assert again.source.range_queries == -(-(len(rows) // 2) // 7)
    tm.assert_frame_equal(frames(out), rows)


def test_a_long_history_is_read_in_pieces_below_prometheus_limit(monitored):
    server = monitored.server
    end = pd.Timestamp(int(time.time()) - 60, unit="s")
    start = end - pd.Timedelta("12s")  # 12,001 points at 1 ms: over 11,000
    refused = server.api("query_range", query="time()", start=str(start.value / 1e9),
                         end=str(end.value / 1e9), step="0.001")
    assert refused["status"] == "error" and "11,000" in refused["error"]
    clock = rtnb.sources.prometheus("time()", url=server.url, step="1ms", since=start,
                                    until=end, labels=[], name="clock")
    out = clock.collect()
    clock.run()
    got = frames(out)
    start_ms = start.value // 1_000_000  # time() is the evaluation time in ms / 1000
    expected = pd.DataFrame({"time": pd.date_range(start, end, freq="1ms").as_unit("ns"),
                             "value": (np.arange(12_001) + start_ms) / 1000})
    tm.assert_frame_equal(got, expected, check_freq=False)
    assert clock.source.range_queries == 2  # 11,000 + 1,001 points


def test_scrape_equals_prometheus_clients_parse_of_the_same_text(monitored):
    got = monitored.scraped.drop(columns="time").reset_index(drop=True)
    samples = [s for family in text_string_to_metric_families(monitored.text)
               for s in family.samples]
    labels = [c for c in got.columns if c not in ("name", "value")]
    expected = pd.DataFrame({
        "name": pd.Series([s.name for s in samples], dtype="str"),
        **{c: pd.Series([s.labels.get(c) for s in samples], dtype="str") for c in labels},
        "value": [float(s.value) for s in samples]})
    assert {"pipeline", "node"} <= set(labels)
    assert "rtnb_rows_total" in set(got.name)
    tm.assert_frame_equal(got, expected)


class _Exposition(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


EXPOSITION = """\
# HELP req Requests.
# TYPE req counter
req_total{path="/a",code="200"} 3
req_created{path="/a",code="200"} 1.7e+09
req_total{path="/b \\"q\\"",code="500"} 1.5
# TYPE lat histogram
lat_bucket{le="0.1"} 1
lat_bucket{le="+Inf"} 4
lat_sum 2.5
lat_count 4
# TYPE temp gauge
temp{name="x",value="y"} NaN
temp{name="z"} -Inf
"""


def test_scrape_reads_counters_histograms_and_odd_labels_as_the_parser_does():
    handler = type("Handler", (_Exposition,), {"body": EXPOSITION.encode()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/metrics"
        src = rtnb.sources.scrape(url, every="100ms", max_events=27, name="odd")
        out = src.collect()
        src.run()
    finally:
        httpd.shutdown()
        httpd.server_close()
    got = frames(out)
    assert list(got.columns) == ["time", "name", "code", "le", "label_name", "path",
                                 "label_value", "value"]
    assert len(got) == 27 and got.time.nunique() == 3  # three scrapes of 9 samples
    assert got.time.is_monotonic_increasing
    samples = [s for family in text_string_to_metric_families(EXPOSITION)
               for s in family.samples]
    first = got[got.time == got.time.iloc[0]].drop(columns="time").reset_index(drop=True)
    expected = pd.DataFrame({
        "name": pd.Series([s.name for s in samples], dtype="str"),
        **{col: pd.Series([s.labels.get(label) for s in samples], dtype="str")
           for col, label in (("code", "code"), ("le", "le"), ("label_name", "name"),
                              ("path", "path"), ("label_value", "value"))},
        "value": [float(s.value) for s in samples]})
    tm.assert_frame_equal(first, expected)
    assert first.name.tolist()[:2] == ["req_total", "req_created"]
    assert first.path.iloc[2] == '/b "q"'


def test_a_token_in_the_scraped_urls_query_stays_out_of_the_error():
    """The endpoint refuses (401) while scrape() looks for the label columns: the error
    says why, with the URL's token masked (httpx puts the whole URL in its message)."""
    class Refusing(_Exposition):
        def do_GET(self) -> None:
            self.send_response(401)
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/metrics?token=s3cret-token"
        with pytest.raises(SourceError) as info:
            rtnb.sources.scrape(url, name="guarded")
    finally:
        httpd.shutdown()
        httpd.server_close()
    message = str(info.value)
    assert "401" in message and "token=***" in message
    assert "s3cret" not in message


class _Guarded(_Exposition):
    """The exposition text for ``Authorization: Bearer s3cret-token`` only, else 401; the
    Authorization header of every request is kept in ``seen``."""

    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        got = self.headers.get("Authorization")
        self.seen.append(got)
        if got != "Bearer s3cret-token":
            self.send_response(401)
            self.end_headers()
            return
        super().do_GET()

    do_POST = do_GET  # the Prometheus source's queries are POSTs


def test_scrape_and_prometheus_send_the_token_from_the_environment(monkeypatch):
    """The token named by ``token_env`` goes as ``Authorization: Bearer``: an endpoint that
    wants it serves the scrape; without it the same endpoint's 401 is a clear error. The
    Prometheus source sends it on its queries the same way (the server here refuses them
    after checking: the header that arrived is what is asserted)."""
    monkeypatch.setenv("RTNB_TEST_SCRAPE_TOKEN", "s3cret-token")
    handler = type("Handler", (_Guarded,), {"body": EXPOSITION.encode(), "seen": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        src = rtnb.sources.scrape(f"{base}/metrics", every="100ms", max_events=9,
                                  token_env="RTNB_TEST_SCRAPE_TOKEN", name="guarded")
        out = src.collect()
        src.run()
        with pytest.raises(SourceError, match="401"):
            rtnb.sources.scrape(f"{base}/metrics", name="no_token")
        handler.seen.clear()
        with pytest.raises(SourceError):  # the fake server is no Prometheus API
            rtnb.sources.prometheus("up", url=base, token_env="RTNB_TEST_SCRAPE_TOKEN",
                                    name="prom").run()
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert len(frames(out)) == 9
    assert handler.seen and set(handler.seen) == {"Bearer s3cret-token"}


def test_a_scrape_that_does_not_parse_is_a_dead_letter_with_the_reason():
    handler = type("Handler", (_Exposition,), {"body": b"up 1\nnot { a metric\n"})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    async def scenario() -> tuple[list[pd.DataFrame], list[pd.DataFrame], Any]:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/metrics"
        src = rtnb.sources.scrape(url, every="50ms", labels=[], name="broken")
        out, dead = src.collect(), src.dead_letters.collect()
        src.start()
        await wait_until(lambda: src.source.stats.dead_letters >= 2, 30, "dead letters")
        src.stop()
        await src.wait()
        return out, dead, src.source

    try:
        out, dead, source = asyncio.run(scenario())
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert sum(map(len, out)) == 0  # a body that does not parse gives no row at all
    letters = frames(dead)
    assert len(letters) == source.stats.dead_letters >= 2
    # the reason (the parser's error) and the raw body, as the other sources keep them
    assert letters.dead_letter_reason.str.startswith(
        "broken could not read the response: ValueError: ").all()
    assert (letters.dead_letter_node == "broken").all()
    assert all(bytes(raw) == b"up 1\nnot { a metric\n" for raw in letters.dead_letter_raw)


def test_a_bad_query_is_a_clear_error_naming_the_source_and_the_query(monitored):
    url = monitored.server.url
    bad = rtnb.sources.prometheus("sum(rtnb_rows_total", url=url, step="1s", since="5s",
                                  labels=[], name="broken")
    with pytest.raises(SourceError, match=r"source 'broken': the Prometheus server at "
                       r"http://127\.0\.0\.1:\d+ refused the query 'sum\(rtnb_rows_total': "
                       r"bad_data: .*parse error"):
        bad.run()
    ranged = rtnb.sources.prometheus("rtnb_rows_total[1m]", url=url, step="1s",
                                     since="5s", labels=[], name="ranged")
    with pytest.raises(SourceError, match=r"'ranged'.*'rtnb_rows_total\[1m\]'"):
        ranged.run()
    # with the columns found from the server, the error comes when the source is built
    with pytest.raises(SourceError, match=r"prometheus 'found'.*refused the query 'sum\('"):
        rtnb.sources.prometheus("sum(", url=url, name="found")
    # a query with no series now has no labels to find: later series would lose theirs
    with pytest.raises(rtnb.ConfigError, match=r"'rtnb_no_such_metric' gives no series now.*"
                       r"give labels=\[\.\.\.\]"):
        rtnb.sources.prometheus("rtnb_no_such_metric", url=url, name="empty")


def test_the_server_going_away_is_retried_and_shown_nothing_lost_or_repeated(
        tmp_path, caplog):
    port = free_port()
    server = start_prometheus(tmp_path / "b", [], port=port)
    step_ns = 100_000_000

    async def scenario() -> tuple[pd.DataFrame, Any, list[Any]]:
        clock = rtnb.sources.prometheus("time()", url=server.url, step="100ms", since="1s",
                                        delay="0s", labels=[], name="clock")
        out = clock.collect()
        clock.start()
        stats = clock.source.stats
        await wait_until(lambda: stats.events >= 15, 30, "rows before the outage")
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        await wait_until(lambda: stats.reconnects >= 2, 30, "reconnects")
        seen = [stats.connected, stats.last_error, clock.source.next_ns]
        # what the status widget and an exported script's /metrics read
        assert metrics.snapshot(clock.graph).source.reconnects >= 2
        restarted = start_prometheus(tmp_path / "b", [], port=port)
        try:
            await wait_until(lambda: stats.connected and clock.source.next_ns > time.time_ns()
                             - step_ns * 2, 30, "caught up after the restart")
            clock.stop()
            await clock.wait()
        finally:
            restarted.stop()
        return frames(out), clock.source, seen

    with caplog.at_level(logging.WARNING, logger="rtnb.sources._runner"):
        try:
            got, source, (connected, error, stalled_at) = asyncio.run(scenario())
        finally:
            server.stop()
    assert connected is False and error is not None
    assert "ConnectError" in error or "Connection refused" in error
    assert any("'clock' lost its connection" in r.getMessage() for r in caplog.records)
    ns = got.time.to_numpy().astype(np.int64)
    assert (np.diff(ns) == step_ns).all()  # every evaluation time once, across the outage
    assert ns[0] < stalled_at <= ns[-1]
    assert (got.value.to_numpy() * 1e9).round().astype(np.int64).tolist() == ns.tolist()
    assert source.range_queries >= 2  # the outage was caught up with a range query


def test_a_pipeline_reading_prometheus_exports_to_a_script(monitored, tmp_path):
    until = pd.Timestamp(int(time.time()) - 30, unit="s")
    since = until - pd.Timedelta("3s")
    clock = rtnb.sources.prometheus("time()", url=monitored.server.url, step="100ms",
                                    since=since.isoformat(), until=until.isoformat(),
                                    labels=[], token="s3cret-token", name="clock")
    late = clock.query("value > 0", name="positive")
    pipeline = rtnb.Pipeline(clock, name="clocked")
    script = pipeline.export(tmp_path / "clocked.py")
    text = script.read_text()
    assert "rtnb.sources.prometheus(" in text and "'time()'" in text
    assert "s3cret-token" not in text and "RTNB_CLOCK_TOKEN" in text
    out = late.collect()
    pipeline.run()
    done = subprocess.run(
        [sys.executable, "-I", str(script), "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
        env={**os.environ, "RTNB_CLOCK_TOKEN": "s3cret-token"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "s3cret-token" not in done.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    got = pd.read_parquet(tmp_path / "out" / manifest["clock.positive"])
    expected = frames(out)
    assert len(expected) == 31
    tm.assert_frame_equal(got.drop(columns="__batch__", errors="ignore"), expected)
    scraper = rtnb.sources.scrape(monitored.metrics_url, every="2s", labels=["node"],
                                  name="scraper")
    scraped = rtnb.Pipeline(scraper).export(tmp_path / "scraper.py").read_text()
    assert "rtnb.sources.scrape(" in scraped and "every='2s'" in scraped


def test_a_run_resumes_at_its_position_with_nothing_lost_or_repeated(monitored):
    until = pd.Timestamp(int(time.time()) - 20, unit="s")
    since = until - pd.Timedelta("2s")

    def clock() -> rtnb.StreamingFrame:
        return rtnb.sources.prometheus("time()", url=monitored.server.url, step="100ms",
                                       since=since, until=until, labels=[], max_points=5,
                                       name="clock")

    whole = clock()
    expected = whole.collect()
    whole.run()
    first = clock()
    first.source.limit(10)  # two responses of 5 points, then the run stops
    part1 = first.collect()
    first.run()
    position = first.source.position
    assert position == since.value + 10 * 100_000_000
    assert first.source.progress() == 10 / 21  # what hybrid() shows as the backfill share
    assert first.source.resume_kind() == "replay"
    second = clock()
    second.source.skip(position)
    part2 = second.collect()
    second.run()
    tm.assert_frame_equal(frames(part1 + part2), frames(expected))
    assert len(frames(expected)) == 21
    with pytest.raises(rtnb.ConfigError, match="resumes at an evaluation time"):
        second.source.skip(position + 1)


def test_tls_with_a_ca_made_by_the_test(tmp_path, certs):
    server = start_prometheus(tmp_path / "tls", [], tls=(certs.ca, certs.cert, certs.key))
    try:
        assert server.url.startswith("https://")
        until = pd.Timestamp(int(time.time()), unit="s")
        clock = rtnb.sources.prometheus("time()", url=server.url, step="1s",
                                        since=until - pd.Timedelta("4s"), until=until,
                                        labels=None, ca=str(certs.ca), delay="0s",
                                        name="clock")
        out = clock.collect()
        clock.run()
        assert len(frames(out)) == 5 and list(frames(out).columns) == ["time", "value"]
        scraped = rtnb.sources.scrape(f"{server.url}/metrics", every="1s",
                                      ca=str(certs.ca), max_events=1, name="own")
        assert "version" in scraped.columns or "label_version" in scraped.columns
        scraped.run()
        # without the CA the certificate is not trusted: asked again (here: not at all)
        untrusted = rtnb.sources.prometheus("time()", url=server.url, step="1s", since="3s",
                                            delay="0s", labels=[], max_reconnects=0,
                                            name="untrusted")
        with pytest.raises(Exception, match=r"(?i)certificate verify failed"):
            untrusted.run()
    finally:
        server.stop()
