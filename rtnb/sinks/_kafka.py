"""``rtnb.sinks.to_kafka``: every row a Kafka message, through confluent-kafka's Producer.

The producer is idempotent (``enable.idempotence``: librdkafka's own retries neither repeat
nor reorder a message within a partition) and waits for every message's delivery report
before a batch counts as delivered. Tested against librdkafka's mock cluster
(``tests/integration/test_kafka_sink.py``).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from rtnb._formats import Format
from rtnb._net import require, secret
from rtnb._time import DurationLike, to_ns
from rtnb.errors import ConfigError
from rtnb.sinks._core import Sink, make_encoder

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame

__all__ = ["ID_HEADER", "KafkaSink", "to_kafka"]

log = logging.getLogger(__name__)

#: The message header holding the row's id (:meth:`Sink.row_ids`).
ID_HEADER = "rtnb_id"
#: How much longer than the delivery timeout a batch waits for its last delivery reports.
_REPORT_MARGIN_S = 5.0


class _LibrdkafkaLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """librdkafka's own log lines, at DEBUG.

    A lost broker is logged on every connection attempt; what matters reaches the sink's
    ``stats.last_error`` (delivery reports, librdkafka's errors).
    """

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG, msg, *args, **kwargs)


def _key_bytes(value: Any) -> bytes | None:
    """A message key: text as UTF-8, bytes as they are, anything else its ``str()``.

    The bytes :func:`rtnb.partition_of` hashes, so Kafka's murmur2 partitioner puts the row
    where ``partition_of(value, n)`` says. A missing value is no key.
    """
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, bytes):
        return value
    return (value if isinstance(value, str) else str(value)).encode("utf-8")


class KafkaSink(Sink):
    """Produces every row to a topic; a batch is delivered once each row's report came back.

    A report with an error fails the batch, which is retried (backoff, circuit breaker,
    spool, as for every sink). A retry sends only the rows whose reports failed; a batch read
    back from the spool is sent whole. Each message carries its row's id in the header
    ``rtnb_id``: a row sent again (a retry after a lost report, a restart from a checkpoint)
    has the same id, so a consumer can drop the repeat. With checkpoints: at-least-once
    (Kafka transactions are not used).
    """

    kind = "kafka"

    def __init__(self, frame: StreamingFrame, topic: str, bootstrap: str, *, key: str | None,
                 encoder: str | Format, config: dict[str, Any], **options: Any) -> None:
        super().__init__(frame, **options)
        self._ck = require("confluent_kafka", "kafka")
        self.encoder = make_encoder(encoder, frame.example, f"kafka sink {self.name!r}")
        self.topic, self.bootstrap, self.key = topic, bootstrap, key
        self._config = config
        self.timeout_s = config["message.timeout.ms"] / 1000
        self._producer: Any = None
        #: Delivery reports received: without an error, and with one.
        self.acknowledged_messages = 0
        self.failed_messages = 0
        #: librdkafka's last error not tied to a message (a broker refusing connections),
        #: named in a failed batch's error; cleared by a delivered batch.
        self.broker_error: str | None = None
        # The batch being retried and its rows already acknowledged (a retry skips them).
        self._partial: tuple[pd.DataFrame, set[int]] | None = None

    def __repr__(self) -> str:
        keyed = f" keyed by {self.key!r}" if self.key is not None else ""
        return f"<KafkaSink {self.name!r} -> {self.bootstrap} {self.topic!r}{keyed}>"

    def _new_producer(self) -> Any:
        def on_error(error: Any) -> None:  # librdkafka's global errors (brokers down ...)
            self.broker_error = error.str()
            log.debug("kafka sink %r: %s", self.name, error.str())

        return self._ck.Producer({**self._config, "error_cb": on_error,
                                  "logger": _LibrdkafkaLog(log, {})})

    async def _deliver(self, batch: pd.DataFrame, key: str) -> None:
        if self._producer is None:
            self._producer = self._new_producer()
        producer = self._producer
        if self._partial is None or self._partial[0] is not batch:
            self._partial = (batch, set())
        done = self._partial[1]  # of the messages (a row each, or a group of rows of a key)
        column = batch[self.key].tolist() if self.key is not None else None
        messages = self.messages(batch, by=column)
        keys = [_key_bytes(column[m.first]) if column is not None else None for m in messages]
        reports: list[tuple[int, Any]] = []  # appended by librdkafka's callbacks (in flush)

        def report(i: int) -> Any:
            return lambda error, _message: reports.append((i, error))

        for i, (message, message_key) in enumerate(zip(messages, keys, strict=True)):
            if i in done:
                continue
            while True:
                try:
                    producer.produce(self.topic, value=message.payload, key=message_key,
                                     headers=[(ID_HEADER, message.id.encode())],
                                     on_delivery=report(i))
                    break
                except BufferError:  # librdkafka's queue is full: let it drain
                    await asyncio.to_thread(producer.poll, 0.05)
        left = await asyncio.to_thread(producer.flush, self.timeout_s + _REPORT_MARGIN_S)
        errors = [error for i, error in reports if error is not None]
        done.update(i for i, error in reports if error is None)
        self.acknowledged_messages += len(reports) - len(errors)
        self.failed_messages += len(errors)
        if len(done) == len(messages):
            self._partial, self.broker_error = None, None
            return
        if any(error.fatal() for error in errors):  # this producer can send no more
            self._producer = None
            await asyncio.to_thread(producer.flush, 0)
        first = f"{errors[0].str()} ({errors[0].name()})" if errors else \
            f"no delivery report within {self.timeout_s + _REPORT_MARGIN_S:g} s ({left} queued)"
        msg = (f"kafka sink {self.name!r}: {len(messages) - len(done)} of {len(messages)} messages "
               f"to topic {self.topic!r} at {self.bootstrap} not delivered: {first}")
        if self.broker_error is not None:
            msg += f"; librdkafka: {self.broker_error}"
        raise OSError(msg)

    async def _close_target(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            # every batch waited for its reports: nothing is left to flush but a failed batch's
            await asyncio.to_thread(producer.flush, 0)


def _file(path: str | None, what: str, where: str) -> str | None:
    if path is not None and not Path(path).is_file():
        msg = f"{where}: the TLS {what} file {path!r} does not exist"
        raise ConfigError(msg)
    return path


def to_kafka(frame: StreamingFrame, topic: str, bootstrap: str = "127.0.0.1:9092", *,
             key: str | None = None, encoder: str | Format = "json",
             timeout: DurationLike = "30s", linger: DurationLike = "5ms",
             username: str | None = None, password: str | None = None,
             password_env: str | None = None, sasl_mechanism: str = "PLAIN",
             tls: bool | None = None, ca: str | None = None, cert: str | None = None,
             tls_key: str | None = None, name: str | None = None,
             **options: Any) -> KafkaSink:
    """Produce every row as a message on a Kafka topic (``pip install rtnb[kafka]``).

    Each row is one JSON (or MessagePack) record, with its row id in the header ``rtnb_id``
    (the same on a retry and in every run: de-duplicate on it). The producer is idempotent;
    a batch counts as delivered once every message's delivery report came back without an
    error (``acknowledged_messages`` / ``failed_messages`` count the reports). A report with
    an error fails the batch: retried, then spooled, held or dropped as for every sink
    (``retries``, ``spool``, ``on_failure``: :class:`rtnb.sinks.Sink`). Messages of one
    partition arrive in order, but for rows sent again after a failed report.

    Parameters
    ----------
    key
        A column whose value becomes the message key (text as UTF-8, other values their
        ``str()``; a missing value: no key). The producer uses Kafka's murmur2 partitioner
        (Java's default), so every row of a key lands in partition
        ``rtnb.partition_of(row[key], n)`` of an ``n``-partition topic, where
        ``rtnb.sources.kafka(topic, partitions=[p])`` reads it.
    encoder
        ``"json"`` (default) or ``"msgpack"``: how a row becomes a message's value; times as
        ISO 8601 text, missing values as null. ``"arrow"`` (an Arrow IPC stream) or
        ``"avro"`` (an Avro object container): one message per batch, or with ``key`` one
        per key of the batch (its rows); a format of :mod:`rtnb.formats`
        (``protobuf(Message)``, ``avro(schema)``): one message per row.
    timeout
        How long librdkafka tries to deliver a message (``message.timeout.ms``) before its
        report says it failed: a broker that went away fails a batch after this.
    linger
        How long the producer waits to fill a request (``linger.ms``).
    username, password, password_env, sasl_mechanism
        SASL (``PLAIN`` by default, or ``SCRAM-SHA-256`` / ``SCRAM-SHA-512``); the password
        from the environment variable ``password_env`` (an exported script always reads it
        from there).
    tls, ca, cert, tls_key
        TLS: ``tls=True`` with the system's CAs, or ``ca`` a CA file; ``cert`` and
        ``tls_key`` a client certificate and its key (mutual TLS). Files, not an
        ``ssl.SSLContext``: librdkafka reads them itself.

    Raises
    ------
    ConfigError
        ``key`` not a column of the frame, an unknown ``encoder`` or ``sasl_mechanism``, a
        TLS file missing, ``password`` without ``username``.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> sdf = rtnb.StreamingFrame(pd.DataFrame({"host": pd.Series([], dtype=str),
    ...                                         "cpu": pd.Series([], dtype=float)}))
    >>> rtnb.sinks.to_kafka(sdf, "metrics", key="host")
    <KafkaSink 'frame.kafka' -> 127.0.0.1:9092 'metrics' keyed by 'host'>
    """
    sink_name = name or f"{frame.name}.kafka"
    where = f"kafka sink {sink_name!r}"
    if not isinstance(topic, str) or not topic:
        msg = f"{where}: `topic` must be a non-empty str; got {topic!r}"
        raise ConfigError(msg)
    if not isinstance(bootstrap, str) or not bootstrap:
        msg = (f"{where}: `bootstrap` must be the brokers as 'host:port[,host:port...]'; "
               f"got {bootstrap!r}")
        raise ConfigError(msg)
    if key is not None and key not in frame.columns:
        msg = (f"{where}: key {key!r} is not a column of frame {frame.name!r}; "
               f"columns {list(frame.columns)!r}")
        raise ConfigError(msg)
    if sasl_mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        msg = (f"{where}: `sasl_mechanism` must be 'PLAIN', 'SCRAM-SHA-256' or "
               f"'SCRAM-SHA-512'; got {sasl_mechanism!r}")
        raise ConfigError(msg)
    if tls is not None and not isinstance(tls, bool):
        msg = (f"{where}: `tls` must be True or False (librdkafka reads its TLS files itself: "
               f"pass them as ca=, cert=, tls_key=); got {type(tls).__name__}")
        raise ConfigError(msg)
    timeout_ms = to_ns(timeout, name="timeout") // 1_000_000
    if timeout_ms < 1:
        msg = f"{where}: `timeout` must be at least 1 ms; got {timeout!r}"
        raise ConfigError(msg)
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap, "client.id": f"rtnb-{sink_name}",
        "enable.idempotence": True, "acks": "all", "partitioner": "murmur2_random",
        "message.timeout.ms": timeout_ms,
        "linger.ms": to_ns(linger, name="linger") / 1e6}
    pw = secret(password, password_env, where)
    if pw is not None and username is None:
        msg = f"{where}: a password needs `username` (SASL {sasl_mechanism})"
        raise ConfigError(msg)
    secure = bool(tls) or ca is not None or cert is not None
    if username is not None:
        config.update({"security.protocol": "SASL_SSL" if secure else "SASL_PLAINTEXT",
                       "sasl.mechanism": sasl_mechanism, "sasl.username": username,
                       "sasl.password": pw or ""})
    elif secure:
        config["security.protocol"] = "SSL"
    for setting, path, what in (("ssl.ca.location", ca, "CA"),
                                ("ssl.certificate.location", cert, "certificate"),
                                ("ssl.key.location", tls_key, "key")):
        if _file(path, what, where) is not None:
            config[setting] = path
    return KafkaSink(frame, topic, bootstrap, key=key, encoder=encoder, config=config,
                     name=sink_name, **options)
