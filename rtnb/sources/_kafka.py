"""``rtnb.sources.kafka``: Apache Kafka through aiokafka, offsets committed after processing.

Tested against librdkafka's mock cluster (``test.mock.num.brokers``, inside the
``confluent-kafka`` wheel): a Kafka-protocol broker with consumer groups and offset commits,
started in the test process (``tests/integration/test_kafka.py``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd

from rtnb._net import require, secret
from rtnb._time import DurationLike
from rtnb.errors import ConfigError, SourceError
from rtnb.frame import StreamingFrame
from rtnb.sources._coerce import TimeUnit, as_example
from rtnb.sources._guard import DEFAULT_MAX_FUTURE
from rtnb.sources._options import DecoderLike, SourceOptions, TlsOptions
from rtnb.sources._runner import BufferedSource, attach

__all__ = ["KafkaSource", "kafka"]

log = logging.getLogger(__name__)

#: How often the reader asks the partitions' leaders for their end offsets (the lag, and
#: whether a broker still answers: aiokafka's fetches retry a lost cluster silently).
PROBE_EVERY_S = 1.0
#: No answer within this: the connection is lost (reconnect with backoff, or fail).
PROBE_TIMEOUT_S = 5.0
#: An offset commit not confirmed within this is retried with the next one.
COMMIT_TIMEOUT_S = 10.0


def check_partitions(partitions: object) -> list[int] | None:
    """``None`` (every partition of the topic) or a non-empty list of partition numbers.

    Examples
    --------
    >>> check_partitions([2, 0]), check_partitions(None)
    ([0, 2], None)
    """
    if partitions is None:
        return None
    if isinstance(partitions, int | str | bytes) or not isinstance(partitions, Sequence) \
            or not partitions or not all(
                isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in partitions):
        msg = (f"kafka partitions must be a non-empty list of partition numbers (ints >= 0) "
               f"or None for all of the topic's; got {partitions!r}")
        raise ConfigError(msg)
    return sorted(set(partitions))


class KafkaSource(BufferedSource):
    """Reads the partitions it is assigned; commits offsets for ``group`` after processing.

    The partitions are assigned by the caller (``partitions``, or every partition of the
    topic), with ``assign()``: no group membership, no rebalancing (DESIGN.md, scale-out:
    the driver assigns partitions). ``group`` only names where offsets are committed: a
    run starts from the group's committed offsets, or at ``start`` where it has none.
    Auto-commit is off. Without checkpoints the offsets of a batch are committed once it
    went through the pipeline. With checkpoints (``defer_acks``) positions are
    ``(partition, offset)`` and offsets are committed only by :meth:`ack` (after the
    checkpoint holding their effects is durable; after the run on a short consumer of its
    own). :meth:`resume_acks` commits the restored barrier's offsets once connected and
    skips them should the broker deliver them again. Kafka has no delivery window.

    The reader asks the leaders for the partitions' end offsets every ``PROBE_EVERY_S``
    (``stats.lag``); no answer within ``PROBE_TIMEOUT_S`` is a lost connection.
    """

    replayable = True

    def resume_kind(self) -> str:
        """The group's committed offsets: ``"broker"``."""
        return "broker"

    def __init__(self, topic: str, servers: str, *, group: str, start: str,
                 partitions: Sequence[int] | None = None,
                 ssl_context: ssl.SSLContext | None, username: str | None,
                 password: str | None, **options: Any) -> None:
        super().__init__(**options)
        self._aiokafka = require("aiokafka", "kafka")
        self._errors = require("aiokafka.errors", "kafka")
        self.retry_on = (OSError, asyncio.TimeoutError, self._errors.KafkaConnectionError)
        self.topic, self.servers, self.group, self.start = topic, servers, group, start
        self.partitions = check_partitions(partitions)
        self._part_index: dict[int, int] = {}  # partition id -> 0 .. n-1, once assigned
        self._ssl = ssl_context
        self._username, self._password = username, password
        self._consumer: Any = None
        self._floor: dict[int, int] = {}  # resume_acks(): last offset per partition, skipped
        self._uncommitted: dict[int, int] = {}  # a commit that failed: sent with the next
        self._next: dict[int, int] = {}  # per partition: the offset after the last one read

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

    def _new_consumer(self) -> Any:
        return self._aiokafka.AIOKafkaConsumer(
            bootstrap_servers=self.servers, group_id=self.group, enable_auto_commit=False,
            auto_offset_reset=self.start, **self._security())

    async def _connect(self) -> tuple[Any, list[Any]]:
        """A started consumer, assigned its partitions (``TopicPartition`` list)."""
        consumer = self._new_consumer()
        try:
            try:
                await consumer.start()
                # aiokafka has no public metadata call for one topic: the client's
                cluster = await consumer._client.fetch_all_metadata()
            except self._errors.KafkaError as exc:
                over = " over TLS (does the broker listen for TLS there?)" if self._ssl else ""
                msg = (f"source {self.name!r} could not connect to Kafka at "
                       f"{self.servers}{over}: {type(exc).__name__}: {exc}")
                raise self._errors.KafkaConnectionError(msg) from exc
            found = cluster.partitions_for_topic(self.topic)
            if not found:
                msg = (f"source {self.name!r}: topic {self.topic!r} does not exist on "
                       f"{self.servers} (create it before reading it)")
                raise SourceError(msg, source=self.name)
            wanted = self.partitions if self.partitions is not None else sorted(found)
            missing = sorted(set(wanted) - set(found))
            if missing:
                msg = (f"source {self.name!r}: topic {self.topic!r} has partitions "
                       f"{sorted(found)}; asked for {missing}")
                raise SourceError(msg, source=self.name)
            tps = [self._aiokafka.TopicPartition(self.topic, p) for p in wanted]
            consumer.assign(tps)
            # rows aligned in event time across the partitions (BufferedSource._align)
            self._part_index = {p: i for i, p in enumerate(wanted)}
            self.align_partitions = len(wanted) if len(wanted) > 1 else None
        except BaseException:
            await _release(consumer)  # release the client before retrying or giving up
            raise
        return consumer, tps

    async def _read(self, stop: asyncio.Event) -> None:
        consumer, tps = await self._connect()
        self._consumer = consumer
        self._connected()
        try:
            await self._consume(consumer, tps, stop)
        except asyncio.CancelledError:
            if _cancelled():
                raise
            # aiokafka lets the cancellation of a task of its own (a fetch on a lost
            # connection) out of its calls: not a stop asked for, a lost connection
            msg = f"source {self.name!r}: the Kafka client's connection to {self.servers} ended"
            raise self._errors.KafkaConnectionError(msg) from None
        finally:
            self._consumer = None
            await _release(consumer)

    async def _consume(self, consumer: Any, tps: list[Any], stop: asyncio.Event) -> None:
        """Read until ``stop``, the partitions' leaders probed every ``PROBE_EVERY_S``."""
        if self._resumed:  # the restored barrier's offsets: committed before reading
            resumed, self._resumed = self._resumed, []
            await self._ack(resumed)
        elif self._uncommitted:
            await self._commit({})
        probed = 0.0
        max_records = self.max_batch
        floor = self._floor
        while not stop.is_set():
            if time.monotonic() - probed >= PROBE_EVERY_S:
                await self._probe(consumer, tps)
                probed = time.monotonic()
            batches = await consumer.getmany(timeout_ms=200, max_records=max_records)
            n = 0
            for tp, messages in batches.items():
                partition = tp.partition
                low = floor.get(partition, -1)
                for message in messages:
                    offset = message.offset
                    if offset <= low:  # the restored barrier's: not again
                        continue
                    value = message.value
                    position = (partition, offset)
                    if not self._offer(value, position):
                        await self._put(value, position)
                n += len(messages)
                self._next[partition] = messages[-1].offset + 1
            if n < max_records:  # the broker had no more for now: cut the batch
                self._drained()

    async def _probe(self, consumer: Any, tps: list[Any]) -> None:
        """The partitions' end offsets (``stats.lag``); no answer: the connection is lost."""
        try:
            ends = await asyncio.wait_for(consumer.end_offsets(tps), PROBE_TIMEOUT_S)
        except (TimeoutError, self._errors.KafkaError) as exc:
            msg = (f"source {self.name!r}: no Kafka broker of {self.servers} answered within "
                   f"{PROBE_TIMEOUT_S:g} s ({type(exc).__name__}: {exc})")
            raise self._errors.KafkaConnectionError(msg) from exc
        lags: dict[str, int] = {}
        for tp, end in ends.items():
            done = self._next.get(tp.partition)
            if done is None:
                done = await consumer.position(tp)
            lags[f"{self.topic}:{tp.partition}"] = max(0, end - done)
        self.stats.lag = sum(lags.values()) + len(self.buffer)
        if len(lags) > 1:
            self.stats.partition_lag = lags

    def _partition(self, position: Any) -> int:
        return self._part_index[position[0]]

    def resume_acks(self, positions: list[Any]) -> None:
        """Skip the restored barrier's offsets; they are committed once connected."""
        super().resume_acks(positions)
        for partition, offset in positions:
            self._floor[int(partition)] = max(self._floor.get(int(partition), -1), int(offset))

    async def _ack(self, positions: list[Any]) -> None:
        if not positions:
            return
        last: dict[int, int] = {}
        for partition, offset in positions:
            last[partition] = max(last.get(partition, -1), offset, self._floor.get(partition, -1))
        offsets = {p: o + 1 for p, o in last.items()}
        if self._consumer is None:
            if self.defer_acks and not self._in_run:
                await self._commit_alone(offsets)
            elif self.defer_acks:
                self._retake(positions)  # reconnecting: the next barrier takes them again
            else:
                self._merge(offsets)  # committed once reconnected
            return
        await self._commit(offsets, positions)

    def _merge(self, offsets: dict[int, int]) -> None:
        for p, o in offsets.items():
            self._uncommitted[p] = max(self._uncommitted.get(p, -1), o)

    async def _commit(self, offsets: dict[int, int], positions: list[Any] | None = None) -> None:
        """Commit ``offsets`` (and any that failed before) on the reader's consumer.

        A commit that fails is sent again with the next one (Kafka's offsets are
        cumulative: a later commit covers it); deferred acks are also taken again by the
        next barrier, so a crash before then leaves them in the checkpoint.
        """
        self._merge(offsets)
        todo, self._uncommitted = self._uncommitted, {}
        tp = self._aiokafka.TopicPartition
        try:
            await asyncio.wait_for(
                self._consumer.commit({tp(self.topic, p): o for p, o in todo.items()}),
                COMMIT_TIMEOUT_S)
        except (TimeoutError, self._errors.KafkaError) as exc:
            self._merge(todo)
            if self.defer_acks and positions:
                self._retake(positions)
            log.warning("source %r could not commit offsets %s (%s: %s); they are sent again "
                        "with the next commit", self.name, todo, type(exc).__name__, exc)

    async def _commit_alone(self, offsets: dict[int, int]) -> None:
        """Commit after the run, as a consumer assigned the partitions (not a group member)."""
        consumer = self._new_consumer()
        tp = self._aiokafka.TopicPartition
        committed = {tp(self.topic, p): o for p, o in offsets.items()}
        try:
            await consumer.start()
            consumer.assign(list(committed))
            await asyncio.wait_for(consumer.commit(committed), COMMIT_TIMEOUT_S)
        except Exception as exc:  # the checkpoint holds them: resume_acks commits them
            log.warning("source %r could not commit offsets (%s: %s); the run resuming from "
                        "the checkpoint commits them", self.name, type(exc).__name__, exc)
        finally:
            await _release(consumer)


def _cancelled() -> bool:
    """Whether the running task was asked to stop (``Task.cancel()``)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _release(consumer: Any) -> None:
    """Stop an aiokafka consumer; what it raises on a lost cluster is not our error."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:  # aiokafka's own fetch task, cancelled by stop()
        if _cancelled():
            raise
    except Exception as exc:  # the error that made us stop it is the one to report
        log.debug("stopping the Kafka consumer: %s: %s", type(exc).__name__, exc)


def kafka(
    topic: str,
    servers: str = "127.0.0.1:9092",
    *,
    example: pd.DataFrame | dict[str, Any],
    time: str | None = None,
    group: str = "rtnb",
    start: str = "earliest",
    partitions: Sequence[int] | None = None,
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
    """A Kafka topic as a StreamingFrame (``pip install rtnb[kafka]``).

    Reads ``partitions`` (default: all of the topic's), assigned to this source (no group
    rebalancing), from ``group``'s committed offsets or, where the group has none, from
    ``start`` (``"earliest"`` or ``"latest"``); offsets are committed for ``group`` after
    the batch holding the messages went through the pipeline (with checkpoints: once the
    checkpoint holding their effects is durable). Messages of a partition arrive in order.
    SASL/PLAIN with ``username`` and ``password`` or ``password_env`` (the environment
    variable holding it). A broker that stops answering is a lost connection: the source
    reconnects with backoff, ``max_reconnects`` times at most.

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
    try:
        context = TlsOptions.of(locals()).context(owner=f"kafka {name!r}")
    except (OSError, ssl.SSLError) as exc:  # a file missing, unreadable, not PEM
        files = ", ".join(f"{k}={v!r}" for k, v in (("ca", ca), ("cert", cert), ("key", key))
                          if v is not None)
        msg = (f"kafka {name!r}: the TLS files could not be loaded ({files}): "
               f"{type(exc).__name__}: {exc}")
        raise ConfigError(msg) from exc
    source = KafkaSource(
        topic, servers, group=group, start=start, partitions=partitions, ssl_context=context,
        username=username, password=secret(password, password_env, f"kafka {name!r}"),
        name=name, example=schema, options=SourceOptions.of(locals()))
    return attach(source, time)
