"""Broker sources over TLS: every test starts its own broker with a certificate of the test CA.

Each broker listens on a spare loopback port with TLS only and requires a client
certificate signed by the test CA (mutual TLS). Every test checks three things: records in
== records out through the source over TLS; a client that trusts another CA refuses the
server ("certificate verify failed"); a client without a certificate is refused by the
server. The shared plain-text brokers (``../shared/SERVICES.md``) are not touched.
"""

from __future__ import annotations

import asyncio
import gc
import json
import ssl
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pandas.testing as tm
import pytest
from integration_helpers import (
    Certs,
    ClientCert,
    ServerProcess,
    free_port,
    require_binary,
)

import rtnb

pytestmark = pytest.mark.integration

N = 300
EXAMPLE = {"t": "datetime64[ns]", "host": "str", "cpu": "float64", "i": "int64"}


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    data = rtnb.datasets.metrics().iloc[:N].reset_index(drop=True)
    return pd.DataFrame({"t": data["timestamp"], "host": data["host"], "cpu": data["cpu"],
                         "i": range(N)}).astype(EXAMPLE)


def payloads(rows: pd.DataFrame) -> list[bytes]:
    return [json.dumps({"t": t.isoformat(), "host": h, "cpu": c, "i": i}).encode()
            for t, h, c, i in rows.itertuples(index=False)]


def client_context(ca: Path, client: ClientCert | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


def chain_text(exc: BaseException) -> str:
    parts = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 10:
        parts.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts)


def collected(out: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


async def read_all(src: rtnb.StreamingFrame) -> pd.DataFrame:
    out = src.collect()
    await asyncio.wait_for(src.arun(), 60)
    return collected(out)


async def refused(src: rtnb.StreamingFrame) -> str:
    """Run a source that must fail to connect (``max_reconnects=0``); why it failed."""
    out = src.collect()
    with pytest.raises(Exception) as failed:  # the client library's TLS error type
        await asyncio.wait_for(src.arun(), 60)
    assert not out  # nothing was read
    return chain_text(failed.value)


def untrusted(text: str) -> bool:
    return "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text


# -- Redis -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_tls(certs: Certs, client_cert: ClientCert,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = require_binary("redis-server")
    d = tmp_path_factory.mktemp("redis-tls")
    port = free_port()
    cmd = [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
           "--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key),
           "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "yes",
           "--save", "", "--appendonly", "no", "--dir", str(d)]
    with ServerProcess(cmd, port, cwd=d):
        yield port


def test_redis_stream_over_mutual_tls(redis_tls, certs, client_cert, other_certs, rows):
    import redis

    port, key = redis_tls, f"tls-{uuid.uuid4().hex[:8]}"
    loader = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(certs.ca),
                         ssl_certfile=str(client_cert.cert), ssl_keyfile=str(client_cert.key))
    for p in payloads(rows):
        loader.xadd(key, {"data": p})
    loader.close()
    url = f"rediss://127.0.0.1:{port}/0"

    def source(ca: Path, client: ClientCert | None) -> rtnb.StreamingFrame:
        return rtnb.sources.redis_stream(key, url, example=EXAMPLE, time="t", ca=str(ca),
                                         cert=client and str(client.cert),
                                         key=client and str(client.key), max_events=N,
                                         max_reconnects=0)

    async def scenario() -> tuple[pd.DataFrame, str, str]:
        got = await read_all(source(certs.ca, client_cert))
        return (got, await refused(source(other_certs.ca, client_cert)),
                await refused(source(certs.ca, None)))

    got, wrong_ca, no_cert = asyncio.run(scenario())
    tm.assert_frame_equal(got, rows)
    assert untrusted(wrong_ca), wrong_ca
    assert no_cert  # the server requires a client certificate (the text is the client's)


# -- NATS ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nats_tls(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = require_binary("nats-server", "/usr/sbin/nats-server")
    d = tmp_path_factory.mktemp("nats-tls")
    port = free_port()
    cmd = [binary, "-a", "127.0.0.1", "-p", str(port), "--tls", "--tlscert", str(certs.cert),
           "--tlskey", str(certs.key), "--tlscacert", str(certs.ca), "--tlsverify", "-js",
           "-sd", str(d / "js"), "-l", str(d / "nats.log")]
    with ServerProcess(cmd, port, cwd=d):
        yield port


def test_nats_jetstream_over_mutual_tls(nats_tls, certs, client_cert, other_certs, rows):
    import nats

    port, tag = nats_tls, uuid.uuid4().hex[:8]
    stream, subject = f"TLS_{tag}", f"tls.{tag}"
    url = f"tls://127.0.0.1:{port}"

    async def load() -> None:
        nc = await nats.connect(url, tls=client_context(certs.ca, client_cert))
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[subject])
        for p in payloads(rows):
            await js.publish(subject, p)
        await nc.close()

    def source(ca: Path, client: ClientCert | None) -> rtnb.StreamingFrame:
        return rtnb.sources.nats(subject, url, example=EXAMPLE, time="t", stream=stream,
                                 durable="tls-reader", ca=str(ca),
                                 cert=client and str(client.cert),
                                 key=client and str(client.key), max_events=N,
                                 max_reconnects=0)

    async def scenario() -> tuple[pd.DataFrame, str, str]:
        await load()
        got = await read_all(source(certs.ca, client_cert))
        return (got, await refused(source(other_certs.ca, client_cert)),
                await refused(source(certs.ca, None)))

    got, wrong_ca, no_cert = asyncio.run(scenario())
    tm.assert_frame_equal(got, rows)
    assert untrusted(wrong_ca), wrong_ca
    assert no_cert


# -- MQTT (Mosquitto) ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mqtt_tls(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = require_binary("mosquitto", "/usr/sbin/mosquitto")
    d = tmp_path_factory.mktemp("mqtt-tls")
    port = free_port()
    conf = d / "mosquitto.conf"
    # `user root`: run as the user that started it (not `mosquitto`, who cannot read the
    # test's private temporary directory)
    conf.write_text(f"user root\nlistener {port} 127.0.0.1\ncafile {certs.ca}\n"
                    f"certfile {certs.cert}\nkeyfile {certs.key}\n"
                    "require_certificate true\nallow_anonymous true\npersistence false\n"
                    "log_dest stdout\n")
    with ServerProcess([binary, "-c", str(conf)], port, cwd=d):
        yield port


# paho drops its socket without closing it when the server answers the handshake with
# "certificate required" (the client without a certificate, below); the GC reports it
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <ssl.SSLSocket:pytest.PytestUnraisableExceptionWarning")
def test_mqtt_over_mutual_tls(mqtt_tls, certs, client_cert, other_certs, rows):
    import paho.mqtt.client as paho

    port, topic = mqtt_tls, f"tls/{uuid.uuid4().hex[:8]}"
    url = f"mqtts://127.0.0.1:{port}"

    def source(ca: Path, client: ClientCert | None) -> rtnb.StreamingFrame:
        return rtnb.sources.mqtt(topic, url, example=EXAMPLE, time="t", qos=1, ca=str(ca),
                                 cert=client and str(client.cert),
                                 key=client and str(client.key), max_events=N,
                                 max_reconnects=0)

    def publish() -> None:
        pub = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        pub.tls_set_context(client_context(certs.ca, client_cert))
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        info = None
        for p in payloads(rows):
            info = pub.publish(topic, p, qos=1)
        assert info is not None
        info.wait_for_publish(timeout=30)
        pub.disconnect()
        pub.loop_stop()

    async def scenario() -> tuple[pd.DataFrame, str, str]:
        src = source(certs.ca, client_cert)
        out = src.collect()
        src.start()
        deadline = time.monotonic() + 30
        while not src.source.stats.connected:  # subscribed: what is published now arrives
            assert time.monotonic() < deadline, "the MQTT source did not connect over TLS"
            await asyncio.sleep(0.02)
        await asyncio.get_running_loop().run_in_executor(None, publish)
        await asyncio.wait_for(src.wait(), 60)
        return (collected(out), await refused(source(other_certs.ca, client_cert)),
                await refused(source(certs.ca, None)))

    got, wrong_ca, no_cert = asyncio.run(scenario())
    tm.assert_frame_equal(got, rows)
    assert untrusted(wrong_ca), wrong_ca
    assert no_cert


# -- AMQP (RabbitMQ) -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def amqp_tls(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A second RabbitMQ node (own name, data, distribution port) with a TLS listener only.

    It runs ``/usr/lib/rabbitmq/bin/rabbitmq-server`` in the foreground as this user; the
    script stops the node when terminated. It starts in a few seconds.
    """
    script = require_binary("/usr/lib/rabbitmq/bin/rabbitmq-server")
    d = tmp_path_factory.mktemp("amqp-tls")
    port, dist = free_port(), free_port()
    (d / "rabbitmq.conf").write_text(
        f"listeners.tcp = none\nlisteners.ssl.1 = 127.0.0.1:{port}\n"
        f"ssl_options.cacertfile = {certs.ca}\nssl_options.certfile = {certs.cert}\n"
        f"ssl_options.keyfile = {certs.key}\nssl_options.verify = verify_peer\n"
        "ssl_options.fail_if_no_peer_cert = true\n")
    (d / "enabled_plugins").write_text("[].\n")
    (d / "env.conf").write_text("")
    env = {"RABBITMQ_NODENAME": f"rtnb-tls-{port}@localhost",
           "RABBITMQ_CONF_ENV_FILE": str(d / "env.conf"),
           "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"),
           "RABBITMQ_MNESIA_BASE": str(d / "mnesia"), "RABBITMQ_LOG_BASE": str(d / "log"),
           "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
           "RABBITMQ_PID_FILE": str(d / "pid"), "RABBITMQ_DIST_PORT": str(dist),
           "ERL_EPMD_ADDRESS": "127.0.0.1",
           "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}"}
    with ServerProcess([script], port, cwd=d, env=env, startup_s=60):
        yield port


# aiormq leaves the socket of a refused TLS handshake to the garbage collector (the two refused
# connections below): collected during this test, pytest reports the ResourceWarning as
# unraisable; collected later, it fails whatever test runs then (seen twice under load in a
# fresh make test, in this test and in a Redis test after it). The test collects it itself.
# The socket is aiormq's, not rtnb's: rtnb's own sockets are closed (no such warning elsewhere).
@pytest.mark.filterwarnings("ignore:Exception ignored in. <ssl.SSLSocket:"
                            "pytest.PytestUnraisableExceptionWarning")
def test_amqp_over_mutual_tls(amqp_tls, certs, client_cert, other_certs, rows, monkeypatch):
    import aio_pika

    monkeypatch.setenv("RTNB_TEST_AMQP_PASSWORD", "guest")
    port, queue = amqp_tls, f"tls-{uuid.uuid4().hex[:8]}"
    url = f"amqps://guest@127.0.0.1:{port}/"

    async def load() -> None:
        connection = await aio_pika.connect(f"amqps://guest:guest@127.0.0.1:{port}/",
                                            ssl_context=client_context(certs.ca, client_cert))
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
        for p in payloads(rows):
            await channel.default_exchange.publish(aio_pika.Message(p), routing_key=queue)
        await connection.close()

    def source(ca: Path, client: ClientCert | None) -> rtnb.StreamingFrame:
        return rtnb.sources.amqp(url, queue=queue, example=EXAMPLE, time="t",
                                 password_env="RTNB_TEST_AMQP_PASSWORD", ca=str(ca),
                                 cert=client and str(client.cert),
                                 key=client and str(client.key), max_events=N,
                                 max_reconnects=0)

    async def scenario() -> tuple[pd.DataFrame, str, str]:
        await load()
        got = await read_all(source(certs.ca, client_cert))
        return (got, await refused(source(other_certs.ca, client_cert)),
                await refused(source(certs.ca, None)))

    got, wrong_ca, no_cert = asyncio.run(scenario())
    with warnings.catch_warnings():  # collect aiormq's leaked sockets here, not in a later test
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    tm.assert_frame_equal(got, rows)
    assert untrusted(wrong_ca), wrong_ca
    assert no_cert
