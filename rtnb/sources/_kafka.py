"""``rtnb.sources.kafka``: Apache Kafka through aiokafka, offsets committed after processing.

No Kafka broker can be run on the machine rtnb is developed on, so this source is tested only
up to the client (construction, refused connections); its broker behaviour follows aiokafka's
documented API and is NOT tested here. The other broker sources are tested against real
servers.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import pandas as pd

from rtnb._net import require, secret
from rtnb._time import DurationLike
from rtnb.errors import ConfigError
from rtnb.frame import StreamingFrame
from rtnb.sources._coerce import TimeUnit, as_example
from rtnb.sources._guard import DEFAULT_MAX_FUTURE
from rtnb.sources._options import DecoderLike, SourceOptions, TlsOptions
from rtnb.sources._runner import BufferedSource, attach

__all__ = ["KafkaSource", "kafka"]

log = logging.getLogger(__name__)


class KafkaSource(BufferedSource):
    """Reads a topic as a consumer group member; commits offsets after processing.

    Auto-commit is off. With checkpoints (``defer_acks``) positions are ``(partition,
    offset)`` and offsets are committed only by :meth:`ack` (after the checkpoint holding
    their effects is durable; after the run on a short consumer of its own that is assigned
    the partitions). :meth:`resume_acks` skips the restored barrier's offsets and commits
    them with the next ack. Kafka has no delivery window. Untested against a broker.
    """

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
        self._floor: dict[int, int] = {}  # resume_acks(): last offset per partition, skipped

    def _security(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self._ssl is not None:
            kwargs.update(security_protocol="SSL", ssl_context=self._ssl)
        if self._username is not None:
            kwargs.update(security_protocol="SASL_SSL" if self._ssl else "SASL_PLAINTEXT",
                          sasl_mechanism="PLAIN", sasl_plain_username=self._username,
                          sasl_plain_password=self._password)
        return kwargs

    def __repr__(self) -> str:
        return f"<KafkaSource {self.name!r} {self.servers} {self.topic!r} group {self.group!r}>"

    async def _read(self, stop: asyncio.Event) -> None:
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.servers, "group_id": self.group,
            "enable_auto_commit": False, "auto_offset_reset": self.start, **self._security()}
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
                    floor = self._floor.get(tp.partition, -1)
                    for message in messages:
                        if message.offset <= floor:  # the restored barrier's: not again
                            continue
                        await self._put(message.value, (tp.partition, message.offset))
        finally:
            self._consumer = None
            await consumer.stop()

    def resume_acks(self, positions: list[Any]) -> None:
        """Skip the restored barrier's offsets; they are committed with the next ack."""
        super().resume_acks(positions)
        for partition, offset in positions:
            self._floor[int(partition)] = max(self._floor.get(int(partition), -1), int(offset))

    async def _ack(self, positions: list[Any]) -> None:
        if not positions:
            return
        from aiokafka import TopicPartition

        last: dict[int, int] = {}
        for partition, offset in positions:
            last[partition] = max(last.get(partition, -1), offset, self._floor.get(partition, -1))
        offsets = {TopicPartition(self.topic, p): o + 1 for p, o in last.items()}
        consumer = self._consumer
        if consumer is None:
            if self.defer_acks and not self._in_run:
                await self._commit_alone(offsets)
            elif self.defer_acks:
                self._retake(positions)  # reconnecting: the next barrier takes them again
            return  # uncommitted offsets are read again by the group: at least once
        await consumer.commit(offsets)

    async def _commit_alone(self, offsets: dict[Any, int]) -> None:
        """Commit after the run, as a consumer assigned the partitions (not a group member)."""
        consumer = self._aiokafka.AIOKafkaConsumer(
            bootstrap_servers=self.servers, group_id=self.group, enable_auto_commit=False,
            **self._security())
        try:
            await consumer.start()
            consumer.assign(list(offsets))
            await consumer.commit(offsets)
        except Exception as exc:  # the checkpoint holds them: resume_acks commits them
            log.warning("source %r could not commit offsets (%s: %s); the run resuming from "
                        "the checkpoint commits them", self.name, type(exc).__name__, exc)
        finally:
            await consumer.stop()


def kafka(
    topic: str,
    servers: str = "127.0.0.1:9092",
    *,
    example: pd.DataFrame | dict[str, Any],
    time: str | None = None,
    group: str = "rtnb",
    start: str = "earliest",
    decoder: DecoderLike = "json",
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
    max_future: DurationLike | None = DEFAULT_MAX_FUTURE,
    name: str = "kafka",
) -> StreamingFrame:
    """A Kafka topic as a StreamingFrame (``pip install rtnb[kafka]``; untested here: no broker).

    Reads as member ``group``, from the committed offsets or, for a new group, from
    ``start`` (``"earliest"`` or ``"latest"``); offsets are committed after the batch holding
    the messages went through the pipeline. SASL/PLAIN with ``username`` and ``password``
    or ``password_env`` (the environment variable holding it).

    Other Parameters
    ----------------
    decoder, time_unit, max_batch, max_delay, buffer, max_events, max_reconnects, max_future
        As for every message source: :class:`~rtnb.sources.SourceOptions`.
    tls, ca, cert, key
        TLS: :class:`~rtnb.sources.TlsOptions`.

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
        topic, servers, group=group, start=start, ssl_context=TlsOptions.of(locals()).context(),
        username=username, password=secret(password, password_env, f"kafka {name!r}"),
        name=name, example=schema, options=SourceOptions.of(locals()))
    return attach(source, time)
