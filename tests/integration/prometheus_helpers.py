"""A private Prometheus server for the Prometheus source's tests.

Debian's ``prometheus`` binary (``tools/ensure-prometheus.sh`` installs it for ``make test``)
runs on 127.0.0.1 on a free port with its own data directory and a 1 s scrape interval. It
scrapes targets whose ports are chosen before it starts (the exported scripts then listen
there with ``--metrics-port``) and is stopped by its PID at the end.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PrometheusServer", "free_port", "start_prometheus"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrometheusServer:
    """A running private server: its URL, the ports it scrapes, its process."""

    url: str
    port: int
    targets: list[int]
    process: subprocess.Popen[bytes]
    log: Path
    data: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET ``/api/v1/<path>`` and its JSON (errors too: the body says what)."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                return dict(json.loads(reply.read()))
        except urllib.error.HTTPError as exc:
            return dict(json.loads(exc.read()))

    def wait_for_sample(self, query: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until ``query`` gives at least one series; the response."""
        deadline = time.monotonic() + timeout
        while True:
            reply = self.api("query", query=query)
            if reply.get("status") == "success" and reply["data"]["result"]:
                return reply
            if time.monotonic() > deadline:
                msg = f"no sample of {query!r} within {timeout} s: {reply}"
                raise AssertionError(msg)
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) by its PID."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_prometheus(folder: Path, targets: list[int], *, port: int | None = None,
                     tls: tuple[Path, Path, Path] | None = None) -> PrometheusServer:
    """Start ``prometheus`` scraping ``127.0.0.1:<target>`` for each target every second.

    ``tls``: ``(ca, cert, key)``: the server answers HTTPS only, with that certificate.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        msg = "no prometheus binary (tools/ensure-prometheus.sh installs Debian's package)"
        raise FileNotFoundError(msg)
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: rtnb\n    static_configs:\n"
        f"      - targets: {json.dumps([f'127.0.0.1:{t}' for t in targets])}\n")
    data = folder / "tsdb"
    log = folder / "prometheus.log"
    args = [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={data}", "--log.level=warn"]
    context = None
    if tls is not None:
        ca, cert, key = tls
        web = folder / "web.yml"
        web.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
        args.append(f"--web.config.file={web}")
        context = ssl.create_default_context(cafile=str(ca))
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=folder)
    scheme = "https" if tls is not None else "http"
    server = PrometheusServer(f"{scheme}://127.0.0.1:{port}", port, targets, process, log,
                              data)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            msg = f"prometheus exited with {process.returncode}: {log.read_text()[-2000:]}"
            raise RuntimeError(msg)
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2,
                                        context=context) as reply:
                if reply.status == 200:
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            msg = f"prometheus not ready within 60 s: {log.read_text()[-2000:]}"
            raise RuntimeError(msg)
        time.sleep(0.2)
