"""Broker sinks: NATS (core or JetStream), MQTT and AMQP; one message per row (JSON by default).

``encoder=`` picks the format: ``"json"``, ``"msgpack"``, ``"arrow"`` (one Arrow IPC stream
per batch), ``"avro"`` (one Avro object container per batch), or a format object of
:mod:`rtnb.formats` (``protobuf(Message)``, ``avro(schema)``: one message per row).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pandas as pd

from rtnb._formats import Format
from rtnb._net import mask_url, require, secret, tls_context
from rtnb.errors import ConfigError
from rtnb.sinks._core import Sink, make_encoder

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame

__all__ = ["AmqpSink", "MqttSink", "NatsSink", "to_amqp", "to_mqtt", "to_nats"]


class NatsSink(Sink):
    """Publishes every row to a subject.

    With ``jetstream`` each publish is acknowledged by the stream (a failed or missing ack
    fails the batch, which is retried).
    """

    kind = "nats"

    def __init__(self, frame: StreamingFrame, subject: str, url: str, *, jetstream: bool,
                 connect: dict[str, Any], encoder: str | Format = "json",
                 **options: Any) -> None:
        super().__init__(frame, **options)
        self.encoder = make_encoder(encoder, frame.example, f"nats sink {self.name!r}")
        self._nats = require("nats", "nats")
        self.subject, self.url, self.jetstream = subject, url, jetstream
        self._connect = connect
        self._nc: Any = None

    def __repr__(self) -> str:
        return f"<NatsSink {self.name!r} -> {mask_url(self.url)} {self.subject!r}>"

    async def _deliver(self, batch: pd.DataFrame, key: str) -> None:
        if self._nc is None or self._nc.is_closed:
            self._nc = await self._nats.connect(self.url, allow_reconnect=False,
                                                **self._connect)
        try:
            if self.jetstream:
                js = self._nc.jetstream()
                for message in self.messages(batch):
                    # Nats-Msg-Id: JetStream drops a repeat of the same row (a retry, a
                    # restart from a checkpoint) within its duplicate window
                    await js.publish(self.subject, message.payload,
                                     headers={"Nats-Msg-Id": message.id})
            else:
                for message in self.messages(batch):
                    await self._nc.publish(self.subject, message.payload)
                await self._nc.flush()
        except Exception:
            nc, self._nc = self._nc, None
            await nc.close()
            raise

    async def _close_target(self) -> None:
        if self._nc is not None:
            await self._nc.drain()
            self._nc = None


def to_nats(frame: StreamingFrame, subject: str, url: str = "nats://127.0.0.1:4222", *,
            jetstream: bool = False, user: str | None = None, password: str | None = None,
            password_env: str | None = None, token: str | None = None,
            token_env: str | None = None, tls: bool | ssl.SSLContext | None = None,
            ca: str | None = None, cert: str | None = None, key: str | None = None,
            encoder: str | Format = "json", name: str | None = None,
            **options: Any) -> NatsSink:
    """Publish every row as a message on a NATS subject (JSON unless ``encoder=``).

    ``jetstream=True`` waits for the stream's acks and de-duplicates retried batches through
    ``Nats-Msg-Id``. ``encoder``: ``"json"``, ``"msgpack"``, ``"arrow"``, ``"avro"`` or a
    format of :mod:`rtnb.formats` (the module docstring of :mod:`rtnb.sinks.brokers`).

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> sdf = rtnb.StreamingFrame(pd.DataFrame({"x": pd.Series([], dtype=float)}))
    >>> rtnb.sinks.to_nats(sdf, "alerts.cpu", jetstream=True)
    <NatsSink 'frame.nats' -> nats://127.0.0.1:4222 'alerts.cpu'>
    """
    connect: dict[str, Any] = {}
    if user is not None:
        connect["user"] = user
    pw = secret(password, password_env, f"nats sink {subject!r}")
    if pw is not None:
        connect["password"] = pw
    tok = secret(token, token_env, f"nats sink {subject!r}")
    if tok is not None:
        connect["token"] = tok
    context = tls_context(tls, ca=ca, cert=cert, key=key)
    if context is not None:
        connect["tls"] = context
    return NatsSink(frame, subject, url, jetstream=jetstream, connect=connect,
                    encoder=encoder, name=name or f"{frame.name}.nats", **options)


class MqttSink(Sink):
    """Publishes every row to a topic at ``qos`` (1: the broker acknowledges each message)."""

    kind = "mqtt"

    def __init__(self, frame: StreamingFrame, topic: str, url: str, *, qos: int,
                 retain: bool, connect: dict[str, Any], encoder: str | Format = "json",
                 **options: Any) -> None:
        super().__init__(frame, **options)
        self.encoder = make_encoder(encoder, frame.example, f"mqtt sink {self.name!r}")
        self._aiomqtt = require("aiomqtt", "mqtt")
        self.topic, self.url, self.qos, self.retain = topic, url, qos, retain
        self._connect = connect

    def __repr__(self) -> str:
        return f"<MqttSink {self.name!r} -> {mask_url(self.url)} {self.topic!r}>"

    async def _deliver(self, batch: pd.DataFrame, key: str) -> None:
        parts = urlsplit(self.url)
        async with self._aiomqtt.Client(parts.hostname or "127.0.0.1", parts.port or 1883,
                                        **self._connect) as client:
            for message in self.messages(batch):
                await client.publish(self.topic, message.payload, qos=self.qos,
                                     retain=self.retain)


def to_mqtt(frame: StreamingFrame, topic: str, url: str = "mqtt://127.0.0.1:1883", *,
            qos: int = 1, retain: bool = False, username: str | None = None,
            password: str | None = None, password_env: str | None = None,
            tls: bool | ssl.SSLContext | None = None, ca: str | None = None,
            cert: str | None = None, key: str | None = None, encoder: str | Format = "json",
            name: str | None = None, **options: Any) -> MqttSink:
    """Publish every row as a message on an MQTT topic (JSON unless ``encoder=``).

    ``encoder``: ``"json"``, ``"msgpack"``, ``"arrow"``, ``"avro"`` or a format of
    :mod:`rtnb.formats`.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> sdf = rtnb.StreamingFrame(pd.DataFrame({"x": pd.Series([], dtype=float)}))
    >>> rtnb.sinks.to_mqtt(sdf, "plant/alerts")
    <MqttSink 'frame.mqtt' -> mqtt://127.0.0.1:1883 'plant/alerts'>
    """
    if qos not in (0, 1, 2):
        msg = f"mqtt qos must be 0, 1 or 2; got {qos!r}"
        raise ConfigError(msg)
    connect: dict[str, Any] = {}
    if username is not None:
        connect["username"] = username
    pw = secret(password, password_env, f"mqtt sink {topic!r}")
    if pw is not None:
        connect["password"] = pw
    context = tls_context(tls, ca=ca, cert=cert, key=key)
    if context is not None:
        connect["tls_context"] = context
    return MqttSink(frame, topic, url, qos=qos, retain=retain, connect=connect,
                    encoder=encoder, name=name or f"{frame.name}.mqtt", **options)


class AmqpSink(Sink):
    """Publishes every row to an exchange (publisher confirms: each publish is confirmed)."""

    kind = "amqp"

    def __init__(self, frame: StreamingFrame, url: str, *, exchange: str, routing_key: str,
                 ssl_context: ssl.SSLContext | None, password: str | None,
                 encoder: str | Format = "json", **options: Any) -> None:
        super().__init__(frame, **options)
        self.encoder = make_encoder(encoder, frame.example, f"amqp sink {self.name!r}")
        self._aio_pika = require("aio_pika", "amqp")
        self.url, self.exchange, self.routing_key = url, exchange, routing_key
        self._ssl = ssl_context
        self._password = password
        self._connection: Any = None
        self._channel: Any = None

    def __repr__(self) -> str:
        target = self.exchange or "(default exchange)"
        return f"<AmqpSink {self.name!r} -> {mask_url(self.url)} {target} {self.routing_key!r}>"

    async def _deliver(self, batch: pd.DataFrame, key: str) -> None:
        aio_pika = self._aio_pika
        if self._channel is None:
            kwargs: dict[str, Any] = {}
            if self._password is not None:
                kwargs["password"] = self._password
            if self._ssl is not None:
                kwargs["ssl_context"] = self._ssl
            self._connection = await aio_pika.connect(self.url, **kwargs)
            self._channel = await self._connection.channel(publisher_confirms=True)
        try:
            exchange = (await self._channel.get_exchange(self.exchange) if self.exchange
                        else self._channel.default_exchange)
            for message in self.messages(batch):
                await exchange.publish(
                    aio_pika.Message(message.payload, content_type=self.encoder.content_type,
                                     message_id=message.id,
                                     delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=self.routing_key)
        except Exception:
            await self._close_target()
            raise

    async def _close_target(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            await connection.close()


def to_amqp(frame: StreamingFrame, url: str = "amqp://guest@127.0.0.1:5672/", *,
            exchange: str = "", routing_key: str, password: str | None = None,
            password_env: str | None = None, tls: bool | ssl.SSLContext | None = None,
            ca: str | None = None, cert: str | None = None, key: str | None = None,
            encoder: str | Format = "json", name: str | None = None,
            **options: Any) -> AmqpSink:
    """Publish every row as a persistent message to an AMQP exchange (JSON by default).

    The default exchange routes ``routing_key`` to the queue of that name. ``encoder``:
    ``"json"``, ``"msgpack"``, ``"arrow"``, ``"avro"`` or a format of
    :mod:`rtnb.formats`; the message's ``content_type`` says which.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> sdf = rtnb.StreamingFrame(pd.DataFrame({"x": pd.Series([], dtype=float)}))
    >>> rtnb.sinks.to_amqp(sdf, routing_key="alerts")
    <AmqpSink 'frame.amqp' -> amqp://guest@127.0.0.1:5672/ (default exchange) 'alerts'>
    """
    return AmqpSink(frame, url, exchange=exchange, routing_key=routing_key,
                    ssl_context=tls_context(tls, ca=ca, cert=cert, key=key),
                    password=secret(password, password_env, f"amqp sink {routing_key!r}"),
                    encoder=encoder, name=name or f"{frame.name}.amqp", **options)
