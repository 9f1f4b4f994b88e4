"""``rtnb.sources.kafka``: Apache Kafka through aiokafka, offsets committed after processing.

No Kafka broker can be run on the machine rtnb is developed on, so this source is tested only
up to the client (construction, refused connections); its broker behaviour follows aiokafka's
documented API and is NOT tested here. The other broker sources are tested against real
servers.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

import pandas as pd

from rtnb._net import require, secret, tls_context
from rtnb._time import DurationLike
from rtnb.errors import ConfigError
from rtnb.frame import StreamingFrame
from rtnb.sources._coerce import TimeUnit, as_example
from rtnb.sources._decode import Decoder, Payload
from rtnb.sources._runner import BufferedSource, attach

__all__ = ["KafkaSource", "kafka"]


class KafkaSource(BufferedSource):
    """Reads a topic as a consumer group member; commits offsets after processing."""

    replayable = True

    def resume_kind(self) -> str:
        """The consumer group's committed offsets: ``"broker"``."""
        return "broker"

    def __init__(self, topic: str, servers: str, *, group: str, start: str,
                 ssl_context: ssl.SSLContext | None, username: str | None,
                 password: str | None, **options: Any) -> None:
        super().__init__(**options)
        self._aiokafka = require("aiokafka", "kafka")
        errors = require("aiokafka.errors", "kafka")
        self.retry_on = (OSError, asyncio.TimeoutError, errors.KafkaConnectionError)
        self.topic, self.servers, self.group, self.start = topic, servers, group, start
        self._ssl = ssl_context
        self._username, self._password = username, password
        self._consumer: Any = None

    def __repr__(self) -> str:
        return f"<KafkaSource {self.name!r} {self.servers} {self.topic!r} group {self.group!r}>"

    async def _read(self, stop: asyncio.Event) -> None:
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.servers, "group_id": self.group,
            "enable_auto_commit": False, "auto_offset_reset": self.start}
        if self._ssl is not None:
            kwargs.update(security_protocol="SSL", ssl_context=self._ssl)
        if self._username is not None:
            kwargs.update(security_protocol="SASL_SSL" if self._ssl else "SASL_PLAINTEXT",
                          sasl_mechanism="PLAIN", sasl_plain_username=self._username,
                          sasl_plain_password=self._password)
        consumer = self._aiokafka.AIOKafkaConsumer(self.topic, **kwargs)
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()  # release the client before retrying or giving up
            raise
        self._consumer = consumer
        self._connected()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=1000)
                for tp, messages in batches.items():
                    for message in messages:
                        await self._put(message.value, (tp.partition, message.offset))
        finally:
            self._consumer = None
            await consumer.stop()

    async def _ack(self, positions: list[Any]) -> None:
        consumer = self._consumer
        if consumer is None or not positions:
            return  # uncommitted offsets are read again by the group: at least once
        from aiokafka import TopicPartition

        last: dict[int, int] = {}
        for partition, offset in positions:
            last[partition] = max(last.get(partition, -1), offset)
        await consumer.commit({TopicPartition(self.topic, p): o + 1 for p, o in last.items()})


def kafka(
    topic: str,
    servers: str = "127.0.0.1:9092",
    *,
    example: pd.DataFrame | dict[str, Any],
    time: str | None = None,
    group: str = "rtnb",
    start: str = "earliest",
    decoder: str | Decoder | Callable[[Payload], Any] = "json",
    username: str | None = None,
    password: str | None = None,
    password_env: str | None = None,
    tls: bool | ssl.SSLContext | None = None,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    max_batch: int = 10_000,
    max_delay: DurationLike = "50ms",
    buffer: int = 100_000,
    time_unit: TimeUnit = "s",
    max_events: int | None = None,
    max_reconnects: int | None = None,
    name: str = "kafka",
) -> StreamingFrame:
    """A Kafka topic as a StreamingFrame (``pip install rtnb[kafka]``; untested here: no broker).

    Reads as member ``group``, from the committed offsets or, for a new group, from
    ``start`` (``"earliest"`` or ``"latest"``); offsets are committed after the batch holding
    the messages went through the pipeline. SASL/PLAIN with ``username``/``password_env``,
    TLS with ``ca``/``cert``/``key``.

    Examples
    --------
    >>> import rtnb
    >>> rtnb.sources.kafka("metrics", example={"t": "datetime64[ns]", "cpu": "float64"}, time="t")
    <StreamingFrame 'kafka' [t: datetime64[ns], cpu: float64], time='t'>
    """
    if start not in ("earliest", "latest"):
        msg = f"kafka start must be 'earliest' or 'latest'; got {start!r}"
        raise ConfigError(msg)
    schema = as_example(example, f"kafka {name!r}")
    source = KafkaSource(
        topic, servers, group=group, start=start,
        ssl_context=tls_context(tls, ca=ca, cert=cert, key=key), username=username,
        password=secret(password, password_env, f"kafka {name!r}"), name=name,
        decoder=decoder, example=schema, max_batch=max_batch, max_delay=max_delay,
        buffer=buffer, time_unit=time_unit, max_events=max_events,
        max_reconnects=max_reconnects)
    return attach(source, time)
