"""``rtnb.sources.kafka``: Apache Kafka through aiokafka, offsets committed after processing.

In one process the source reads through aiokafka. On a Dask cluster
(``pipeline.run(cluster=...)``, :mod:`rtnb.distributed`) each partition is read on a worker
by a :class:`KafkaPartitionReader`, a blocking confluent-kafka (librdkafka) consumer
assigned that one partition by the driver (no group rebalancing).

Tested against librdkafka's mock cluster (``test.mock.num.brokers``, inside the
``confluent-kafka`` wheel): a Kafka-protocol broker with consumer groups and offset commits,
started in the test process (``tests/integration/test_kafka.py``,
``tests/integration/test_kafka_distributed.py``).
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
from rtnb._time import DurationLike, to_ns
from rtnb.errors import ConfigError, SourceError
from rtnb.frame import StreamingFrame
from rtnb.sources._coerce import TimeUnit, as_example
from rtnb.sources._guard import DEFAULT_MAX_FUTURE
from rtnb.sources._options import DecoderLike, SourceOptions, TlsOptions
from rtnb.sources._runner import BufferedSource, attach

__all__ = ["KafkaPartitionReader", "KafkaSource", "kafka"]

log = logging.getLogger(__name__)

#: How often the reader asks the partitions' leaders for their end offsets (the lag, and
#: whether a broker still answers: aiokafka's fetches retry a lost cluster silently).
PROBE_EVERY_S = 1.0
#: No answer within this: the connection is lost (reconnect with backoff, or fail).
PROBE_TIMEOUT_S = 5.0
#: An offset commit not confirmed within this is retried with the next one.
COMMIT_TIMEOUT_S = 10.0
#: How long a partition reader (and the partitions' discovery) waits for the brokers'
#: metadata, a group's committed offset or a partition's end offset.
METADATA_TIMEOUT_S = 10.0
#: How long a non-blocking read of a partition reader waits, at most, for librdkafka's
#: fetches while the partition has messages not fetched yet (and for the first after opening).
FETCH_WAIT_S = 2.0


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

    On a Dask cluster (:mod:`rtnb.distributed`) :attr:`partitions` (how many) and
    :attr:`streams` (``"topic:p"``) say what the driver assigns, one
    :meth:`partition_reader` per partition.
    """

    replayable = True

    def resume_kind(self) -> str:
        """The group's committed offsets: ``"broker"``."""
        return "broker"

    def __init__(self, topic: str, servers: str, *, group: str, start: str,
                 partitions: Sequence[int] | None = None,
                 ssl_context: ssl.SSLContext | None, username: str | None,
                 password: str | None, tls_options: TlsOptions | None = None,
                 **options: Any) -> None:
        super().__init__(**options)
        self._aiokafka = require("aiokafka", "kafka")
        self._errors = require("aiokafka.errors", "kafka")
        self.retry_on = (OSError, asyncio.TimeoutError, self._errors.KafkaConnectionError)
        self.topic, self.servers, self.group, self.start = topic, servers, group, start
        #: The partitions asked for (``None``: every partition of the topic).
        self.partition_ids = check_partitions(partitions)
        self._found: list[int] | None = None  # every partition, once discovered for a cluster
        self._part_index: dict[int, int] = {}  # partition id -> 0 .. n-1, once assigned
        self._ssl = ssl_context
        self.tls_options = tls_options
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
            wanted = self.partition_ids if self.partition_ids is not None else sorted(found)
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
            if self.max_drift_ns is not None and self.align_partitions is not None:
                self._hold_ahead(consumer, tps)
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
            elif self.max_drift_ns is not None and self.align_partitions is not None:
                # prefetched records come back without waiting: let the batcher align what
                # was read (which tells which partitions are ahead) before reading on
                await asyncio.sleep(0)

    def _hold_ahead(self, consumer: Any, tps: list[Any]) -> None:
        """Pause the partitions ``max_drift`` ahead of the others, resume the rest.

        A paused partition is not fetched (the broker keeps its messages), so what the
        alignment holds back stays bounded (:meth:`BufferedSource._ahead`).
        """
        paused = set(consumer.paused())
        ahead = {tp for i, tp in enumerate(tps) if self._ahead(i)}
        if ahead - paused:
            consumer.pause(*(ahead - paused))
        if paused - ahead:
            consumer.resume(*(paused - ahead))

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

    # -- on a Dask cluster (rtnb.distributed) ------------------------------------------------
    @property
    def partitions(self) -> int:
        """How many partitions a cluster run reads: those asked for, or the topic's.

        With ``partitions=None`` the topic's partitions are found from the brokers'
        metadata on first use (once: a cluster run assigns them at its start).
        """
        return len(self._assigned())

    @property
    def streams(self) -> list[str]:
        """The partitions a cluster run reads, named ``"topic:p"`` (as in ``partition_lag``)."""
        return [f"{self.topic}:{p}" for p in self._assigned()]

    def _assigned(self) -> list[int]:
        if self.partition_ids is not None:
            return self.partition_ids
        if self._found is None:
            self._found = self._discover()
        return self._found

    def _discover(self) -> list[int]:
        """Every partition of the topic, from the brokers' metadata (confluent-kafka)."""
        ck = require("confluent_kafka", "kafka")
        config = {**self.librdkafka_config(), "logger": _LibrdkafkaLog(log, {})}
        if self._password is not None:
            config["sasl.password"] = self._password
        consumer = ck.Consumer(config)
        try:
            return sorted(_topic_partitions(consumer, self.topic, self.servers, self.name))
        finally:
            consumer.close()

    def librdkafka_config(self) -> dict[str, Any]:
        """The consumer settings of a partition reader, the SASL password left out.

        TLS from the files given to :func:`kafka` (librdkafka reads them where it runs);
        an ``ssl.SSLContext`` cannot be used there and is refused.
        """
        config: dict[str, Any] = {
            "bootstrap.servers": self.servers, "group.id": self.group,
            "client.id": f"rtnb-{self.name}", "enable.auto.commit": False,
            "enable.auto.offset.store": False, "auto.offset.reset": self.start,
            "allow.auto.create.topics": False}
        if self._ssl is not None:
            tls = self.tls_options
            if tls is None or isinstance(tls.tls, ssl.SSLContext):
                msg = (f"source {self.name!r}: an ssl.SSLContext cannot be used by a "
                       "partition reader (librdkafka on a Dask worker reads its TLS files "
                       "itself); give tls=True with ca=/cert=/key= files to run on a cluster")
                raise ConfigError(msg)
            for setting, path in (("ssl.ca.location", tls.ca),
                                  ("ssl.certificate.location", tls.cert),
                                  ("ssl.key.location", tls.key)):
                if path is not None:
                    config[setting] = path
        if self._username is not None:
            config.update({"security.protocol": "SASL_SSL" if self._ssl else "SASL_PLAINTEXT",
                           "sasl.mechanism": "PLAIN", "sasl.username": self._username})
        elif self._ssl is not None:
            config["security.protocol"] = "SSL"
        return config

    def partition_reader(self, partition: int) -> KafkaPartitionReader:
        """A reader of the ``partition``-th partition read, to run on a Dask worker.

        ``partition`` counts the partitions read (``0 .. partitions - 1``): with
        ``partitions=[1, 3]`` reader 0 reads Kafka partition 1. It is picklable (its
        consumer opens on first use, where it runs) and reads with blocking calls,
        committing offsets for this source's group on :meth:`KafkaPartitionReader.ack`.
        """
        assigned = self._assigned()
        if isinstance(partition, bool) or not isinstance(partition, int) or \
                not 0 <= partition < len(assigned):
            msg = (f"source {self.name!r} has no partition {partition!r} (it reads "
                   f"{len(assigned)}: {self.streams})")
            raise ConfigError(msg)
        return KafkaPartitionReader(
            topic=self.topic, partition=assigned[partition], servers=self.servers,
            start=self.start, config=self.librdkafka_config(), password=self._password,
            owner=self.name)


class KafkaPartitionReader:
    """One partition of a :class:`KafkaSource`, read blocking through confluent-kafka.

    Made by :meth:`KafkaSource.partition_reader` and sent to a Dask worker, where the first
    :meth:`read` opens a ``Consumer`` (auto-commit off) and assigns it this one
    partition, at the group's committed offset or, where the group has none, at the
    source's ``start``. A reader that read already goes on after what it read when it is
    reopened, or pickled and moved to another worker (Dask moving its task). Positions are
    ``(partition, offset)``, as in one process; :meth:`ack` commits the offset after the
    highest acknowledged one, synchronously (a commit that fails is logged and sent again
    with the next: Kafka's offsets are cumulative). The SASL password travels inside the
    pickled reader to the worker (Dask's connections; use TLS between scheduler and
    workers when that network is not trusted) and is never shown by ``repr``.

    Examples
    --------
    >>> import pickle
    >>> r = KafkaPartitionReader(topic="metrics", partition=3, servers="127.0.0.1:9092",
    ...                          start="earliest", config={}, password="s3cret", owner="k")
    >>> r, "s3cret" in repr(pickle.loads(pickle.dumps(r)))
    (<KafkaPartitionReader 127.0.0.1:9092 'metrics:3'>, False)
    """

    def __init__(self, *, topic: str, partition: int, servers: str, start: str,
                 config: dict[str, Any], password: str | None, owner: str) -> None:
        self.topic, self.partition, self.servers, self.start = topic, partition, servers, start
        #: The partition's name, as in the source's ``streams`` and ``partition_lag``.
        self.stream = f"{topic}:{partition}"
        self.owner = owner
        self._config, self._password = config, password
        self._consumer: Any = None
        self._next: int | None = None  # the offset after the last one read, once known
        self._committed = -1  # the last offset committed by this reader
        self._uncommitted: int | None = None  # a commit that failed: sent with the next
        self._error: str | None = None  # a fatal error of librdkafka's, not tied to a message
        self._reading = False  # the consumer is assigned the partition
        self._fresh = False  # assigned, nothing read yet

    def __repr__(self) -> str:
        return f"<KafkaPartitionReader {self.servers} {self.stream!r}>"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_consumer=None, _reading=False, _fresh=False)  # a connection stays
        return state

    def _tp(self, offset: int | None = None) -> Any:
        ck = require("confluent_kafka", "kafka")
        if offset is None:
            return ck.TopicPartition(self.topic, self.partition)
        return ck.TopicPartition(self.topic, self.partition, offset)

    def _open(self) -> Any:
        if self._consumer is not None:
            return self._consumer
        ck = require("confluent_kafka", "kafka")

        def on_error(error: Any) -> None:  # librdkafka's global errors (brokers down ...)
            if error.fatal():
                self._error = f"{error.str()} ({error.name()})"
            log.debug("kafka %r %s: %s", self.owner, self.stream, error.str())

        config = {**self._config, "error_cb": on_error,
                  "logger": _LibrdkafkaLog(log, {})}
        if self._password is not None:
            config["sasl.password"] = self._password
        consumer = ck.Consumer(config)
        try:
            found = _topic_partitions(consumer, self.topic, self.servers, self.owner)
            if self.partition not in found:
                msg = (f"source {self.owner!r}: topic {self.topic!r} has partitions "
                       f"{sorted(found)}; asked for [{self.partition}]")
                raise SourceError(msg, source=self.owner)
            if self._next is None:  # a new reader: where the group's offset says
                try:
                    (committed,) = consumer.committed([self._tp()],
                                                      timeout=METADATA_TIMEOUT_S)
                except ck.KafkaException as exc:
                    msg = (f"source {self.owner!r}: the committed offset of {self.stream!r} "
                           f"for group {self._config.get('group.id')!r} could not be read "
                           f"from {self.servers}: {exc}")
                    raise SourceError(msg, source=self.owner) from exc
                if committed.offset >= 0:
                    self._next = committed.offset
                    self._committed = max(self._committed, committed.offset - 1)
        except BaseException:
            consumer.close()
            raise
        self._consumer, self._reading = consumer, False
        return consumer

    def _reader(self) -> Any:
        """The consumer, assigned the partition (once) where reading goes on."""
        consumer = self._open()
        if not self._reading:
            ck = require("confluent_kafka", "kafka")
            offset = self._next if self._next is not None else \
                (ck.OFFSET_BEGINNING if self.start == "earliest" else ck.OFFSET_END)
            consumer.assign([self._tp(offset)])
            self._reading, self._fresh = True, True
        return consumer

    def read(self, count: int, block_ms: int | None) -> list[tuple[bytes, tuple[int, int]]]:
        """Up to ``count`` messages as ``(value, (partition, offset))``; waits up to ``block_ms``.

        ``block_ms=None``: no wait for new messages, but librdkafka fetches in the background,
        so a read gets fewer than ``count`` only when the partition has no more (as far as
        the last fetch response tells): while its end is past what was read (and on the
        first read after opening) the read waits for the next fetch, ``FETCH_WAIT_S`` at
        most. The driver takes an empty read for a silent partition and a short one for
        the end of what there is.
        """
        consumer = self._reader()
        messages = consumer.consume(num_messages=count,
                                    timeout=0 if block_ms is None else block_ms / 1000)
        if self._error is not None:  # this consumer can read no more
            msg = (f"source {self.owner!r}: reading {self.stream!r} from {self.servers} "
                   f"failed: {self._error}")
            raise SourceError(msg, source=self.owner)
        items = self._items(messages)
        if block_ms is None:
            deadline = time.monotonic() + FETCH_WAIT_S
            while len(items) < count and self._behind(consumer):
                left = deadline - time.monotonic()
                first = consumer.poll(left) if left > 0 else None
                if first is None:
                    break
                more = [first]
                if count - len(items) > 1:
                    more.extend(consumer.consume(num_messages=count - len(items) - 1,
                                                 timeout=0))
                items.extend(self._items(more))
        return items

    def _items(self, messages: list[Any]) -> list[tuple[bytes, tuple[int, int]]]:
        """``(value, position)`` of each message; an error that ends reading is raised."""
        ck = require("confluent_kafka", "kafka")
        items: list[tuple[bytes, tuple[int, int]]] = []
        partition = self.partition
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == ck.KafkaError._PARTITION_EOF:
                    continue
                if error.fatal() or not error.retriable():
                    msg = (f"source {self.owner!r}: reading {self.stream!r} from "
                           f"{self.servers} failed: {error.str()} ({error.name()})")
                    raise SourceError(msg, source=self.owner)
                log.warning("kafka %r %s: %s (retried)", self.owner, self.stream, error.str())
                continue
            offset = message.offset()
            value = message.value()
            items.append((b"" if value is None else value, (partition, offset)))
            self._next = offset + 1
        return items

    def _behind(self, consumer: Any) -> bool:
        """Whether the partition has messages librdkafka has not fetched yet, as far as known.

        The first read after opening: yes (nothing fetched yet). Later: the end offset of the
        last fetch response (no request) is past the position.
        """
        if self._fresh:
            self._fresh = False
            return True
        try:
            low, high = consumer.get_watermark_offsets(self._tp(), cached=True)
        except Exception:  # no fetch response yet
            return False
        position = self._next if self._next is not None else \
            (low if self.start == "earliest" else high)
        return bool(high >= 0 and position >= 0 and high > position)

    @staticmethod
    def order(position: tuple[int, int]) -> int:
        """A position's place in the partition: its offset."""
        return int(position[1])

    def ack(self, positions: list[Any]) -> None:
        """Commit the offset after the highest of ``positions`` for the group, synchronously.

        Positions not read yet (a rebuilt reader told what a checkpoint covers) are skipped:
        reading goes on after them.
        """
        if not positions and self._uncommitted is None:
            return
        last = max((int(offset) for _, offset in positions), default=-1)
        todo = max(last + 1, self._uncommitted or 0)
        if todo <= self._committed + 1:
            return
        ck = require("confluent_kafka", "kafka")
        consumer = self._open()
        try:
            (result,) = consumer.commit(offsets=[self._tp(todo)], asynchronous=False)
            if result.error is not None:
                raise ck.KafkaException(result.error)
        except ck.KafkaException as exc:
            self._uncommitted = todo
            log.warning("source %r could not commit offset %d of %s (%s); it is sent again "
                        "with the next commit", self.owner, todo, self.stream, exc)
            return
        self._committed, self._uncommitted = todo - 1, None
        if self._next is None or self._next < todo:  # acknowledged before read: skip them
            self._next = todo
            if self._reading:
                consumer.seek(self._tp(todo))

    def lag(self) -> int | None:
        """Messages of the partition not yet read: its end offset less the position.

        The end offset of the last fetch response (librdkafka fetches continuously); asked
        of the leader only before the first one (a request waits behind a fetch's long
        poll, up to ``fetch.wait.max.ms``).
        """
        ck = require("confluent_kafka", "kafka")
        consumer = self._open()
        try:
            low, high = consumer.get_watermark_offsets(self._tp(), cached=True)
            if high < 0:
                low, high = consumer.get_watermark_offsets(
                    self._tp(), timeout=PROBE_TIMEOUT_S, cached=False)
        except ck.KafkaException:
            return None
        position = self._next
        if position is None:  # nothing read, nothing committed: the start of the partition
            position = low if self.start == "earliest" else high
        return max(0, int(high) - int(position))

    def close(self) -> None:
        """Commit what failed to commit, then close the consumer.

        A later read reopens it and goes on after what was read.
        """
        consumer = self._consumer
        if consumer is None:
            return
        try:
            if self._uncommitted is not None:
                self.ack([])
        finally:
            self._consumer, self._reading = None, False
            try:
                consumer.close()
            except Exception as exc:  # closing what a lost cluster left: not our error
                log.debug("closing the Kafka consumer of %s: %s", self.stream, exc)


def _topic_partitions(consumer: Any, topic: str, servers: str, owner: str) -> set[int]:
    """The partitions of ``topic`` (a SourceError when it does not exist or no broker answers)."""
    ck = require("confluent_kafka", "kafka")
    try:
        meta = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S)
    except ck.KafkaException as exc:
        msg = f"source {owner!r} could not connect to Kafka at {servers}: {exc}"
        raise SourceError(msg, source=owner) from exc
    found = meta.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        msg = (f"source {owner!r}: topic {topic!r} does not exist on {servers} "
               "(create it before reading it)")
        raise SourceError(msg, source=owner)
    return set(found.partitions)


class _LibrdkafkaLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """librdkafka's own log lines, at DEBUG (what matters reaches the reader's errors)."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG, msg, *args, **kwargs)


def _cancelled() -> bool:
    """Whether the running task was asked to stop (``Task.cancel()``)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _release(consumer: Any) -> None:
    """Stop an aiokafka consumer and close its connections (errors on a lost cluster: logged).

    ``stop()`` closes the client's connections last: when a step before raises (the
    fetcher awaits the pending tasks it cancelled, so their cancellation escapes; the
    coordinator's errors on a lost cluster), the sockets stayed open until garbage
    collection closed them, with a ResourceWarning wherever that happened. The client is
    closed here whatever ``stop()`` did (closing it twice is harmless).
    """
    try:
        try:
            await consumer.stop()
        finally:
            client = getattr(consumer, "_client", None)
            if client is not None:
                await client.close()
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
    idle_timeout: DurationLike = "5s",
    max_drift: DurationLike | None = None,
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

    On a Dask cluster (``pipeline.run(cluster=...)``, :mod:`rtnb.distributed`) each of
    these partitions (with ``partitions=None``: every partition the brokers' metadata lists
    at the start) is read on a worker by a confluent-kafka consumer assigned it by the
    driver, from the same committed offsets of ``group``; TLS then takes files
    (``tls=True``, ``ca``, ``cert``, ``key``), not an ``ssl.SSLContext``.

    With several partitions, rows are aligned in event time across them (each partition is
    in order; a row goes on once every partition not silent for ``idle_timeout`` has sent
    one at least as new, Flink's minimum watermark over its inputs); ``max_drift`` (event
    time) bounds how far a partition may run ahead of the others before it is paused (not
    fetched) until they catch up; on a cluster the driver holds it back the same way.

    Other Parameters
    ----------------
    decoder, time_unit, max_batch, max_delay, buffer, max_events, max_reconnects, max_future
        As for every message source: :class:`~rtnb.sources.SourceOptions`.
    tls, ca, cert, key
        TLS: :class:`~rtnb.sources.TlsOptions`.
    idle_timeout, max_drift
        As for ``redis_stream(..., partitions=N)``.

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
        tls_options=TlsOptions.of(locals()), name=name, example=schema,
        options=SourceOptions.of(locals()))
    source.idle_timeout_s = to_ns(idle_timeout, name="idle_timeout") / 1e9
    if max_drift is not None:
        source.max_drift_ns = to_ns(max_drift, name="max_drift")
    return attach(source, time)
