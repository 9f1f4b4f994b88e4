"""Exported scripts never hold a secret: credential query parameters, credential headers and
URL passwords become environment variables the script documents and reads at run time.

Each pipeline is exported, its text searched for the secret, and the script rebuilt in-process
(``build()``) with the variables set: the source's and sinks' URLs and headers must be the
ones the notebook used. One script runs for real against a local WebSocket feed and webhook
receiver that accept only the right token, key and headers.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import rtnb
from rtnb._net import mask_url

SECRET = "s3cr3t"
EXAMPLE = {"timestamp": "datetime64[ns]", "host": "str", "cpu": "float64"}
WS_URL = f"ws://127.0.0.1:1/feed?token={SECRET}&x=1"
SSE_HEADERS = {"X-Auth": SECRET, "Accept": "text/event-stream"}
HOOK_URL = f"http://127.0.0.1:1/hook?api_key={SECRET}&channel=ops"
REDIS_URL = f"redis://alice:{SECRET}@127.0.0.1:6379/0"


def docstring_variables(text: str) -> dict[str, str]:
    """``{variable: what}`` from the script's docstring."""
    doc = text.split('"""')[1]
    assert "Secrets are never written here" in doc
    found = {}
    for line in doc.splitlines():
        if line.startswith("    ") and ":" in line:
            variable, _, what = line.strip().partition(": ")
            found[variable] = what
    return found


def rebuild(script: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The pipeline the script's build() makes with ``env`` set (in this process)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    namespace = runpy.run_path(str(script), run_name="rtnb_secrets_test")
    return namespace["build"]()


def help_of(script: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", str(script), "--help"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})},
                          check=False)


def assert_no_secret(script: Path) -> str:
    text = script.read_text()
    assert SECRET not in text
    for data in script.parent.rglob("*"):  # nor in anything written next to it
        if data.is_file():
            assert SECRET.encode() not in data.read_bytes(), data
    return text


# -- each place a URL or headers enter ------------------------------------------------------
def test_websocket_query_token_and_webhook_api_key(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ws = rtnb.sources.websocket(WS_URL, example=EXAMPLE, time="timestamp", name="feed")
    rtnb.sinks.to_webhook(ws, HOOK_URL, name="hook")
    script = rtnb.Pipeline(ws).export(tmp_path / "monitor.py")
    text = assert_no_secret(script)
    variables = docstring_variables(text)
    assert variables == {
        "RTNB_FEED_TOKEN": "query parameter 'token' of the URL of 'feed'",
        "RTNB_HOOK_API_KEY": "query parameter 'api_key' of the URL of 'hook'"}
    done = help_of(script)
    assert done.returncode == 0, done.stderr
    assert "RTNB_FEED_TOKEN" in done.stdout and "RTNB_HOOK_API_KEY" in done.stdout
    pipeline = rebuild(script, dict.fromkeys(variables, SECRET), monkeypatch)
    try:
        assert pipeline.root.source.url == WS_URL  # the same URL, parameters in order
        (hook,) = pipeline.sinks
        assert hook.url == HOOK_URL
        assert SECRET not in repr(pipeline.root.source) + repr(hook)
    finally:
        pipeline.root.graph.dispose()


def test_sse_credential_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sse = rtnb.sources.sse("http://127.0.0.1:1/events", example=EXAMPLE, time="timestamp",
                           headers=SSE_HEADERS, name="events")
    script = rtnb.Pipeline(sse).export(tmp_path / "events.py")
    text = assert_no_secret(script)
    assert "'Accept': 'text/event-stream'" in text  # a plain header stays as it was
    variables = docstring_variables(text)
    assert variables == {"RTNB_EVENTS_X_AUTH": "header 'X-Auth' of 'events'"}
    assert help_of(script).returncode == 0
    pipeline = rebuild(script, {"RTNB_EVENTS_X_AUTH": SECRET}, monkeypatch)
    try:
        assert pipeline.root.source.url == "http://127.0.0.1:1/events"
        assert pipeline.root.source._headers == SSE_HEADERS
    finally:
        pipeline.root.graph.dispose()


@pytest.mark.parametrize("header", ["Authorization", "X-Api-Key", "Cookie", "x-session-id",
                                    "X-Token"])
def test_every_credential_header_of_a_sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           header: str) -> None:
    src = rtnb.sources.replay(rtnb.datasets.metrics().iloc[:50], name="m")
    rtnb.sinks.to_webhook(src, "http://127.0.0.1:1/hook", headers={header: SECRET},
                          name="hook")
    script = rtnb.Pipeline(src).export(tmp_path / "m.py")
    (variable,) = docstring_variables(assert_no_secret(script))
    pipeline = rebuild(script, {variable: SECRET}, monkeypatch)
    try:
        assert pipeline.sinks[0]._headers == {header: SECRET}
    finally:
        pipeline.root.graph.dispose()


def test_redis_url_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = rtnb.sources.redis_stream("in", REDIS_URL, example=EXAMPLE, time="timestamp",
                                    name="events")
    rtnb.sinks.to_redis_stream(src, "out", f"redis://:{SECRET}@127.0.0.1:6379/1?key={SECRET}",
                               name="out")
    script = rtnb.Pipeline(src).export(tmp_path / "r.py")
    variables = docstring_variables(assert_no_secret(script))
    assert variables == {"RTNB_EVENTS_PASSWORD": "password of 'events'",
                         "RTNB_OUT_PASSWORD": "password of 'out'",
                         "RTNB_OUT_KEY": "query parameter 'key' of the URL of 'out'"}
    assert help_of(script).returncode == 0
    pipeline = rebuild(script, dict.fromkeys(variables, SECRET), monkeypatch)
    try:
        source, sink = pipeline.root.source, pipeline.sinks[0]
        # the client takes the password beside the URL (password_env), not inside it
        assert (source.url, source._password) == ("redis://alice@127.0.0.1:6379/0", SECRET)
        assert sink.url == f"redis://127.0.0.1:6379/1?key={SECRET}"
        assert sink._password == SECRET
        assert SECRET not in repr(source) + repr(sink)
    finally:
        pipeline.root.graph.dispose()


def test_broker_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nats")
    src = rtnb.sources.nats("in", f"nats://{SECRET}@127.0.0.1:4222/?auth={SECRET}",
                            example=EXAMPLE, time="timestamp", name="events")
    rtnb.sinks.to_nats(src, "out", f"nats://bob:{SECRET}@127.0.0.1:4222", name="out")
    script = rtnb.Pipeline(src).export(tmp_path / "n.py")
    variables = docstring_variables(assert_no_secret(script))
    assert set(variables) == {"RTNB_EVENTS_TOKEN", "RTNB_EVENTS_AUTH", "RTNB_OUT_PASSWORD"}
    assert help_of(script).returncode == 0
    pipeline = rebuild(script, dict.fromkeys(variables, SECRET), monkeypatch)
    try:
        assert pipeline.root.source.url == f"nats://127.0.0.1:4222/?auth={SECRET}"
        assert pipeline.root.source._token == SECRET
        assert pipeline.sinks[0].url == "nats://bob@127.0.0.1:4222"
    finally:
        pipeline.root.graph.dispose()


def test_webhook_url_password_goes_back_into_the_url(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    src = rtnb.sources.replay(rtnb.datasets.metrics().iloc[:50], name="m")
    url = f"https://ops:{SECRET}@hooks.example/in?sig={SECRET}&v=2"
    rtnb.sinks.to_webhook(src, url, name="hook")
    script = rtnb.Pipeline(src).export(tmp_path / "m.py")
    variables = docstring_variables(assert_no_secret(script))
    assert set(variables) == {"RTNB_HOOK_URL_PASSWORD", "RTNB_HOOK_SIG"}
    pipeline = rebuild(script, dict.fromkeys(variables, SECRET), monkeypatch)
    try:
        assert pipeline.sinks[0].url == url
    finally:
        pipeline.root.graph.dispose()


def test_a_credential_in_the_fragment_is_refused(tmp_path: Path) -> None:
    ws = rtnb.sources.websocket(f"ws://127.0.0.1:1/f#access_token={SECRET}", example=EXAMPLE,
                                time="timestamp", name="feed")
    with pytest.raises(rtnb.ExportError, match="fragment holds a credential"):
        rtnb.Pipeline(ws).export(tmp_path / "x.py")


def test_a_missing_variable_is_named(tmp_path: Path) -> None:
    ws = rtnb.sources.websocket(WS_URL, example=EXAMPLE, time="timestamp", name="feed")
    script = rtnb.Pipeline(ws).export(tmp_path / "monitor.py")
    done = subprocess.run([sys.executable, "-I", str(script), "--max-events", "1"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={k: v for k, v in os.environ.items() if not k.startswith("RTNB_")})
    assert done.returncode == 2
    assert "RTNB_FEED_TOKEN" in done.stderr and "not set" in done.stderr


def test_source_option_gets_the_secret_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = rtnb.sources.websocket(WS_URL, example=EXAMPLE, time="timestamp", name="feed")
    script = rtnb.Pipeline(ws).export(tmp_path / "monitor.py")
    monkeypatch.setenv("RTNB_FEED_TOKEN", SECRET)
    build = runpy.run_path(str(script), run_name="rtnb_secrets_test")["build"]
    for given, expected in [("ws://other:2/f", f"ws://other:2/f?token={SECRET}"),
                            ("ws://other:2/f?token=&y=1", f"ws://other:2/f?token={SECRET}&y=1"),
                            ("ws://other:2/f?token=mine", "ws://other:2/f?token=mine")]:
        pipeline = build(None, given)
        try:
            assert pipeline.root.source.url == expected
        finally:
            pipeline.root.graph.dispose()


def test_dashboard_app_reads_secrets_from_the_environment(tmp_path: Path) -> None:
    pytest.importorskip("bokeh")
    ws = rtnb.sources.websocket(WS_URL, example=EXAMPLE, time="timestamp",
                                headers={"Authorization": f"Bearer {SECRET}"}, name="feed")
    ws.plot.line(x="timestamp", y="cpu")
    app = rtnb.Pipeline(ws).export_dashboard(tmp_path / "app.py")
    variables = docstring_variables(assert_no_secret(app))
    assert set(variables) == {"RTNB_FEED_TOKEN", "RTNB_FEED_AUTHORIZATION"}
    # the app's last line hands build to dashboard.serve: catch it there and call it
    code = ("import runpy, sys\n"
            "from rtnb.export import dashboard\n"
            "dashboard.serve = lambda doc, build, title: print(*describe(build()[0]))\n"
            "def describe(p):\n"
            "    return p.root.source.url, p.root.source._headers['Authorization']\n"
            "runpy.run_path(sys.argv[1], run_name='bokeh_app')\n")
    env = {**os.environ, **dict.fromkeys(variables, SECRET)}
    env["RTNB_FEED_AUTHORIZATION"] = f"Bearer {SECRET}"
    done = subprocess.run([sys.executable, "-I", "-c", code, str(app)], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [WS_URL, "Bearer", SECRET]


def test_the_written_script_passes_ruff(tmp_path: Path) -> None:
    ws = rtnb.sources.websocket(WS_URL, example=EXAMPLE, time="timestamp",
                                headers=SSE_HEADERS, name="feed")
    rtnb.sinks.to_webhook(ws, f"https://u:{SECRET}@h.example/?api_key={SECRET}")
    script = rtnb.Pipeline(ws).export(tmp_path / "monitor.py")
    ruff = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", script.name],
                          cwd=tmp_path, capture_output=True, text=True, check=False)
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr


# -- a real run -----------------------------------------------------------------------------
N = 40


class _Seen:
    def __init__(self) -> None:
        self.ws: list[tuple[str, dict[str, str]]] = []
        self.hook: list[tuple[str, dict[str, str], int]] = []


@pytest.fixture
def servers() -> Iterator[tuple[int, int, _Seen]]:
    """A WebSocket feed and a webhook receiver that refuse requests without the secrets."""
    from websockets.http11 import Response
    from websockets.sync.server import ServerConnection, serve

    seen = _Seen()
    rows = [{"timestamp": (pd.Timestamp("2024-01-01") + pd.Timedelta(seconds=i)).isoformat(),
             "host": f"h{i % 3}", "cpu": float(i)} for i in range(N)]

    def check(conn: ServerConnection, request: Any) -> Response | None:
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        seen.ws.append((request.path, headers))
        if request.path != f"/feed?token={SECRET}&x=1" or headers.get("x-auth") != SECRET:
            return conn.respond(403, "no\n")
        return None

    def feed(conn: ServerConnection) -> None:
        for row in rows:
            conn.send(json.dumps(row))
        try:
            conn.recv()  # stay open until the client goes
        except Exception:
            pass

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            seen.hook.append((self.path, headers, len(json.loads(body))))
            ok = (self.path == f"/hook?api_key={SECRET}&channel=ops"
                  and headers.get("authorization") == f"Bearer {SECRET}")
            self.send_response(200 if ok else 403)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    ws_server = serve(feed, "127.0.0.1", 0, process_request=check)
    hook_server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threads = [threading.Thread(target=ws_server.serve_forever, daemon=True),
               threading.Thread(target=hook_server.serve_forever, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        yield ws_server.socket.getsockname()[1], hook_server.server_address[1], seen
    finally:
        ws_server.shutdown()
        hook_server.shutdown()
        hook_server.server_close()


def test_exported_script_runs_with_the_secrets_from_the_environment(
        tmp_path: Path, servers: tuple[int, int, _Seen]) -> None:
    ws_port, hook_port, seen = servers
    ws = rtnb.sources.websocket(f"ws://127.0.0.1:{ws_port}/feed?token={SECRET}&x=1",
                                example=EXAMPLE, time="timestamp",
                                headers={"X-Auth": SECRET}, name="feed")
    rtnb.sinks.to_webhook(ws, f"http://127.0.0.1:{hook_port}/hook?api_key={SECRET}&channel=ops",
                          headers={"Authorization": f"Bearer {SECRET}"}, name="hook")
    script = rtnb.Pipeline(ws).export(tmp_path / "monitor.py", check=False)
    variables = docstring_variables(assert_no_secret(script))
    assert set(variables) == {"RTNB_FEED_TOKEN", "RTNB_FEED_X_AUTH", "RTNB_HOOK_API_KEY",
                              "RTNB_HOOK_AUTHORIZATION"}
    env = {**os.environ, **dict.fromkeys(variables, SECRET)}
    env["RTNB_HOOK_AUTHORIZATION"] = f"Bearer {SECRET}"
    done = subprocess.run([sys.executable, "-I", str(script), "--max-events", str(N),
                           "--output", str(tmp_path / "out")], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert SECRET not in done.stdout + done.stderr  # nor in the logs
    assert seen.ws and seen.ws[0][0] == f"/feed?token={SECRET}&x=1"
    assert seen.hook and all(path == f"/hook?api_key={SECRET}&channel=ops"
                             and h["authorization"] == f"Bearer {SECRET}"
                             for path, h, _ in seen.hook)
    assert sum(n for _, _, n in seen.hook) == N
    out = pd.read_parquet(tmp_path / "out" / json.loads(
        (tmp_path / "out" / "manifest.json").read_text())["feed"])
    assert len(out) == N


# -- mask_url --------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "masked"), [
    ("wss://h/ws?token=abc&x=1", "wss://h/ws?token=***&x=1"),
    ("https://h/in?api_key=abc", "https://h/in?api_key=***"),
    ("https://h/in?APIKEY=abc&Signature=d&sig=e&auth=f&passwd=g&password=h&secret=i",
     "https://h/in?APIKEY=***&Signature=***&sig=***&auth=***&passwd=***&password=***&secret=***"),
    ("https://h/in?access_token=abc&key=k&page=2", "https://h/in?access_token=***&key=***&page=2"),
    ("redis://alice:pw@127.0.0.1:6379/0", "redis://alice:***@127.0.0.1:6379/0"),
    ("nats://tok@127.0.0.1:4222", "nats://***@127.0.0.1:4222"),
])
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_reprs_mask_credential_query_parameters() -> None:
    ws = rtnb.sources.websocket(WS_URL, example=EXAMPLE, time="timestamp", name="feed")
    sink = rtnb.sinks.to_webhook(ws, HOOK_URL, name="hook")
    assert SECRET not in repr(ws.source) + repr(sink) + repr(ws)
    assert "token=***" in repr(ws.source) and "api_key=***" in repr(sink)


def test_a_refused_connection_logs_no_secret(tmp_path: Path,
                                             servers: tuple[int, int, _Seen]) -> None:
    ws_port, _, seen = servers
    ws = rtnb.sources.websocket(f"ws://127.0.0.1:{ws_port}/feed?token={SECRET}&x=1",
                                example=EXAMPLE, time="timestamp",
                                headers={"X-Auth": SECRET}, name="feed")
    script = rtnb.Pipeline(ws).export(tmp_path / "monitor.py", check=False)
    wrong = "wr0ng-t0ken"
    env = {**os.environ, "RTNB_FEED_TOKEN": wrong, "RTNB_FEED_X_AUTH": wrong}
    done = subprocess.run([sys.executable, "-I", str(script), "--max-events", str(N)],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    assert done.returncode != 0
    assert seen.ws and seen.ws[0][0] == f"/feed?token={wrong}&x=1"
    assert "403" in done.stderr and "token=***" in done.stderr
    assert wrong not in done.stdout + done.stderr
