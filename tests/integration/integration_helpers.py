"""Helpers for integration tests: free ports, broker checks, a test CA."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path) -> Certs:
    """A CA made for this run and a server certificate for 127.0.0.1 signed by it."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=rtnb test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout",
            "server.key", "-out", "server.csr", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem", cwd=d)
    return Certs(ca=d / "ca.pem", cert=d / "server.pem", key=d / "server.key")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_or_skip(port: int, what: str) -> None:
    """Fail under CI, skip elsewhere, when a broker is not listening on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(1.0)
        if s.connect_ex(("127.0.0.1", port)) == 0:
            return
    reason = f"{what} is not running on 127.0.0.1:{port} (`make services` starts it)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


# -- TLS brokers: a client certificate, a second CA, servers started by a test ----------------
@dataclass
class ClientCert:
    cert: Path
    key: Path


def make_client_cert(certs: Certs, d: Path) -> ClientCert:
    """A client certificate (CN ``rtnb-test-client``) signed by ``certs``' CA."""
    ca_key = certs.ca.parent / "ca.key"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=rtnb-test-client",
            "-keyout", "client.key", "-out", "client.csr", cwd=d)
    (d / "client-ext.cnf").write_text("extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", "client.csr", "-CA", str(certs.ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-extfile", "client-ext.cnf", "-out",
            "client.pem", cwd=d)
    return ClientCert(cert=d / "client.pem", key=d / "client.key")


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def require_binary(name: str, *fallbacks: str) -> str:
    """The path of a server binary; fail under CI, skip (with the reason) elsewhere."""
    import shutil

    for candidate in (name, *fallbacks):
        found = shutil.which(candidate) or (candidate if Path(candidate).exists() else None)
        if found:
            return found
    reason = f"{name} is not installed on this machine"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)
    raise AssertionError  # unreachable: skip raises


class ServerProcess:
    """A broker started by a test on a spare loopback port; stopped by its process id."""

    def __init__(self, cmd: list[str], port: int, *, cwd: Path, env: dict[str, str] | None
                 = None, startup_s: float = 20.0) -> None:
        self.cmd, self.port, self.cwd = cmd, port, cwd
        self.env = env
        self.startup_s = startup_s
        self.log = cwd / f"server-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        import time

        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, stdout=out,
                                         stderr=subprocess.STDOUT,
                                         env=None if self.env is None
                                         else {**os.environ, **self.env})
        deadline = time.monotonic() + self.startup_s
        while not listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                text = self.log.read_text(errors="replace")[-2000:]
                msg = f"{self.cmd[0]} did not start on port {self.port}:\n{text}"
                raise RuntimeError(msg)
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Poll ``cond`` (every 10 ms) until it holds; past ``timeout`` seconds, fail with ``what``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            msg = f"not reached in {timeout} s: {what}"
            raise AssertionError(msg)
        await asyncio.sleep(0.01)
