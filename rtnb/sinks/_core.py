"""What every sink shares: a bounded queue, retries with backoff, a circuit breaker, a spool.

A sink subscribes to a frame. Batches are queued (the frame's emit never waits on the
network); a writer task on the running loop delivers them in order. A delivery that fails is
retried with exponential backoff and jitter; after ``failures`` consecutive failed batches the
circuit opens: nothing is attempted for ``reset_after``, then one probe batch is tried
(half-open), which closes the circuit on success. A batch that cannot be delivered is spooled
to disk (``spool=`` a folder; retried, oldest first, once deliveries succeed again) or, without
a spool, held: the sink presses on the pipeline (sources wait) and retries until the target
answers again, so nothing is dropped unless asked (``on_failure="drop"``: counted in
``stats.undeliverable_rows``, logged, and the exported script exits 1). Delivery is at least
once: a batch whose acknowledgement was lost is sent again, and every row carries an id
derived from what identifies it (:meth:`Sink.row_ids`: ``Nats-Msg-Id`` for JetStream, AMQP
``message_id``, ``rtnb_id`` in webhook records; webhooks also send an ``Idempotency-Key``),
so the receiver can drop the repeat, also after a restart. A batch format (Arrow IPC, an Avro
object container) sends one message per group of rows, whose id is made of its rows' ids: a
restart that cuts the batches elsewhere sends groups with other ids, so a receiver
de-duplicating on message ids sees those rows again (use a per-row format where the receiver
de-duplicates). When the queue holds ``max_queue``
batches the sink presses on the pipeline: sources wait before their next batch until it
has caught up.

Checkpoints (the exported script's ``--checkpoint``) make a sink *transactional*: at each
checkpoint barrier :meth:`Sink.prepare_commit` delivers everything queued before the barrier
and returns the sink's transaction state, stored in the checkpoint; once the checkpoint is
durable :meth:`Sink.commit` makes that output final; a restarted run first calls
:meth:`Sink.recover` with the restored checkpoint's state, which undoes what was written
after it (the run then writes it again). Each sink says what this gives in ``delivery``:
``"exactly-once"`` (the output equals an uninterrupted run's after any number of crashes) or
``"at-least-once"`` (repeats carry the same key).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias

import numpy as np
import pandas as pd

from rtnb import _formats
from rtnb._net import Backoff, require
from rtnb._time import DurationLike, to_ns
from rtnb.errors import CheckpointError, ConfigError, SchemaError

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame

__all__ = ["CircuitBreaker", "EncoderLike", "Message", "Sink", "SinkStats", "make_encoder"]

log = logging.getLogger(__name__)


class CircuitBreaker:
    """Closed -> open after ``failures`` failures in a row -> half-open after ``reset_after``.

    Examples
    --------
    >>> cb = CircuitBreaker(failures=2, reset_after_s=60)
    >>> cb.record(False); cb.state
    'closed'
    >>> cb.record(False); cb.state, cb.allow()
    ('open', False)
    >>> cb.opened_at -= 61; cb.allow(), cb.state
    (True, 'half-open')
    >>> cb.record(True); cb.state
    'closed'
    """

    def __init__(self, failures: int = 5, reset_after_s: float = 5.0) -> None:
        self.failures = failures
        self.reset_after_s = reset_after_s
        self.state: Literal["closed", "open", "half-open"] = "closed"
        self.consecutive = 0
        self.opened_at = 0.0
        self.opens = 0

    def allow(self) -> bool:
        """Whether a delivery may be attempted now (open turns half-open when it is time)."""
        if self.state == "open" and time.monotonic() - self.opened_at >= self.reset_after_s:
            self.state = "half-open"
        return self.state != "open"

    def record(self, ok: bool) -> None:
        """The outcome of an attempt."""
        if ok:
            self.state, self.consecutive = "closed", 0
            return
        self.consecutive += 1
        if self.state == "half-open" or self.consecutive >= self.failures:
            if self.state != "open":
                self.opens += 1
            self.state, self.opened_at = "open", time.monotonic()


# -- encoders ---------------------------------------------------------------------------------
class _Json(_formats.Format):
    """One JSON record per row: times as ISO 8601 text, missing values as null."""

    name = "json"
    content_type = "application/json"

    def encode(self, batch: pd.DataFrame) -> list[bytes]:
        return [json.dumps(r).encode() for r in _formats.records(batch)]


class _Msgpack(_formats.Format):
    """One MessagePack map per row (the JSON record's values)."""

    name = "msgpack"
    content_type = "application/msgpack"

    def __init__(self) -> None:
        self._msgpack = require("msgpack", "msgpack")

    def encode(self, batch: pd.DataFrame) -> list[bytes]:
        pack = self._msgpack.packb
        return [pack(r) for r in _formats.records(batch)]


#: ``"json"``, ``"msgpack"``, ``"arrow"``, ``"avro"``, or a format of :mod:`rtnb.formats`.
EncoderLike: TypeAlias = str | _formats.Format
_ENCODERS = ("json", "msgpack", "arrow", "avro")


def make_encoder(encoder: EncoderLike, example: pd.DataFrame, where: str) -> _formats.Format:
    """The encoder a sink named ``where`` writes its messages with, checked against ``example``.

    ``"avro"`` writes an Avro object container per batch (the schema from the example, in
    the container's header); ``"arrow"`` an Arrow IPC stream per batch; a format object
    (``rtnb.formats.protobuf(Message)``, ``rtnb.formats.avro(schema)``) as it is
    configured.

    Examples
    --------
    >>> import pandas as pd
    >>> ex = pd.DataFrame({"x": pd.Series([], dtype=float)})
    >>> make_encoder("json", ex, "sink 's'").encode(pd.DataFrame({"x": [1.5]}))
    [b'{"x": 1.5}']
    >>> make_encoder("xml", ex, "sink 's'")
    Traceback (most recent call last):
    ...
    rtnb.errors.ConfigError: sink 's': `encoder` must be 'json', 'msgpack', ... got 'xml'
    """
    if isinstance(encoder, _formats.Format):
        found = encoder
    elif encoder == "json":
        found = _Json()
    elif encoder == "msgpack":
        found = _Msgpack()
    elif encoder == "arrow":
        found = _formats.ArrowFormat()
    elif encoder == "avro":
        found = _formats.AvroFormat()
    else:
        msg = (f"{where}: `encoder` must be {', '.join(map(repr, _ENCODERS))} or a format "
               f"of rtnb.formats (protobuf(Message), avro(schema)); got {encoder!r}")
        raise ConfigError(msg)
    try:
        return found.bind(example)
    except ConfigError as exc:
        msg = f"{where}: {exc}"
        raise ConfigError(msg) from exc


@dataclass(frozen=True)
class Message:
    """One message a sink sends: its encoded ``payload``, its ``id``, the rows it holds.

    ``first`` is the position of its first row in the batch (its key, its partition).
    """

    payload: bytes
    id: str
    first: int


@dataclass
class SinkStats:
    """What a sink counts."""

    delivered_rows: int = 0
    delivered_batches: int = 0
    failed_attempts: int = 0
    spooled_rows: int = 0
    respooled_rows: int = 0
    undeliverable_rows: int = 0
    queued_max: int = 0
    last_error: str | None = None


class Sink:
    """Base class: subclasses implement ``async _deliver(batch)`` (raise to report failure)."""

    kind = "sink"
    #: How a message-sending sink encodes rows (``encoder=``; JSON by default).
    encoder: _formats.Format = _Json()
    #: What a run with checkpoints guarantees for this sink (see the module docstring).
    delivery: ClassVar[str] = "at-least-once"
    #: Whether ``_deliver`` sends the batch's key (:meth:`key_of`); others get ``""``.
    uses_key: ClassVar[bool] = False

    def __init__(self, frame: StreamingFrame, *, name: str, retries: int = 3,
                 max_queue: int = 64, failures: int = 5,
                 reset_after: DurationLike = "5s", spool: str | Path | None = None,
                 on_failure: Literal["block", "drop"] = "block") -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            msg = f"sink {name!r}: `retries` must be a non-negative int; got {retries!r}"
            raise ConfigError(msg)
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            msg = f"sink {name!r}: `max_queue` must be a positive int; got {max_queue!r}"
            raise ConfigError(msg)
        if on_failure not in ("block", "drop"):
            msg = f"sink {name!r}: `on_failure` must be 'block' or 'drop'; got {on_failure!r}"
            raise ConfigError(msg)
        self.on_failure = on_failure
        self.frame = frame
        self.name = name
        self.retries = retries
        self.max_queue = max_queue
        self.breaker = CircuitBreaker(failures, to_ns(reset_after, name="reset_after") / 1e9)
        self.spool = Path(spool) if spool is not None else None
        if self.spool is not None:
            self.spool.mkdir(parents=True, exist_ok=True)
        self.stats = SinkStats()
        self.backoff = Backoff(base=0.05, cap=2.0)
        self._queue: list[tuple[str, pd.DataFrame]] = []
        self._seq = 0  # batches queued so far
        self._handled = 0  # of them, delivered, spooled or dropped
        self._progress = asyncio.Event()
        self._blocked = False
        self._hold: int | None = None  # a barrier: deliver no batch queued after it
        #: Set by the exported runtime when it checkpoints (see prepare_commit).
        self.transactional = False
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._spooled: list[Path] = sorted(self.spool.glob("*.parquet")) if self.spool else []
        self._sink_node = frame.sink(self._enqueue)
        self._unregister = frame.graph.add_sink(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} of {self.frame.name!r}>"

    # -- queue -----------------------------------------------------------------------------
    def _enqueue(self, batch: pd.DataFrame) -> None:
        if self._closed or not len(batch):
            return
        self._seq += 1
        # The key hashes every row: only sinks that send it (and spool files named by it)
        # pay for it on the hot path.
        key = self.key_of(batch) if self.uses_key or self.spool is not None else ""
        self._queue.append((key, batch))
        self.stats.queued_max = max(self.stats.queued_max, len(self._queue))
        if len(self._queue) >= self.max_queue:
            self.frame.graph.press(self)
        self._ensure_writer()
        if self._wakeup is not None:
            self._wakeup.set()

    def _row_hashes(self, batch: pd.DataFrame) -> pd.Series:
        """One 64-bit digest per row of what identifies it.

        A window of an ``emit="final"`` frame is identified by its window and key (it is
        emitted once); any other row by its values, floats rounded to 30 bits of mantissa
        (about 9 significant digits): a sum recomputed after a restart over other batch
        boundaries may differ in its last bits and is still the same row.
        """
        identity = getattr(self.frame, "row_key", None)
        windowed = getattr(self.frame, "windowed", None)
        if identity is not None and getattr(windowed, "emit", None) == "final":
            return pd.util.hash_pandas_object(batch[identity], index=False)
        floats = [str(c) for c, t in batch.dtypes.items() if pd.api.types.is_float_dtype(t)]
        if floats:
            mantissa, exponent = np.frexp(batch[floats].to_numpy(dtype=np.float64))
            rounded = np.ldexp(np.round(mantissa * 2.0**30) / 2.0**30, exponent)
            batch = batch.assign(**{c: rounded[:, i] for i, c in enumerate(floats)})
        return pd.util.hash_pandas_object(batch, index=False)

    def key_of(self, batch: pd.DataFrame) -> str:
        """The batch's delivery key: the sink's name and a digest of its rows' identities.

        The same rows give the same key in every run (a restart re-sends them with it, even
        when their float values were recomputed over other batch boundaries), so a receiver
        can drop a repeat.

        Examples
        --------
        >>> import pandas as pd, rtnb
        >>> sdf = rtnb.StreamingFrame(pd.DataFrame({"x": pd.Series([], dtype=float)}))
        >>> sink = rtnb.sinks.to_log(sdf, "/dev/null")
        >>> sink.key_of(pd.DataFrame({"x": [1.0]})) == sink.key_of(pd.DataFrame({"x": [1.0]}))
        True
        """
        hashed = self._row_hashes(batch).to_numpy()
        digest = hashlib.blake2b(hashed.tobytes(), digest_size=12).hexdigest()
        return f"{self.name}-{digest}"

    def row_ids(self, batch: pd.DataFrame) -> list[str]:
        """A deterministic id per row: the sink's node and a digest of the row's identity.

        The same row gets the same id in every run, however the stream was cut into batches
        (a restart re-sends it with it): brokers and receivers de-duplicate on it
        (``Nats-Msg-Id``, AMQP ``message_id``, the ``id`` field of Redis entries). Equal rows
        in one batch are numbered (``-1``, ``-2`` ...); equal rows in different batches share
        an id (window outputs never repeat: each window and key is one row).

        Examples
        --------
        >>> import pandas as pd, rtnb
        >>> sdf = rtnb.StreamingFrame(pd.DataFrame({"x": pd.Series([], dtype=float)}),
        ...                           name="cpu")
        >>> sink = rtnb.sinks.to_log(sdf, "/dev/null")
        >>> a, b = sink.row_ids(pd.DataFrame({"x": [1.0, 2.0]}))
        >>> a.startswith("cpu:") and a != b and sink.row_ids(pd.DataFrame({"x": [2.0]})) == [b]
        True
        """
        hashed = self._row_hashes(batch)
        repeat = hashed.groupby(hashed.to_numpy()).cumcount().to_numpy()
        node = self.frame.name
        return [f"{node}:{h:016x}" if k == 0 else f"{node}:{h:016x}-{k}"
                for h, k in zip(hashed.tolist(), repeat.tolist(), strict=True)]

    def messages(self, batch: pd.DataFrame,
                 by: Sequence[Any] | None = None) -> list[Message]:
        """The messages of ``batch`` in the sink's :attr:`encoder`.

        One per row (JSON, MessagePack, Protobuf, schemaless Avro), with the row's id
        (:meth:`row_ids`); or, for a batch format (Arrow, an Avro object container), one
        per group of rows that share their value of ``by`` (a key or a partition, in order
        of first appearance; the whole batch without ``by``), with an id made of its rows'
        identities (the same rows grouped the same way: the same id).

        Examples
        --------
        >>> import pandas as pd, rtnb
        >>> sdf = rtnb.StreamingFrame(pd.DataFrame({"k": pd.Series([], dtype=str)}),
        ...                           name="cpu")
        >>> sink = rtnb.sinks.to_redis_stream(sdf, "out", encoder="arrow")
        >>> [m.first for m in sink.messages(pd.DataFrame({"k": ["a", "b", "a"]}),
        ...                                 by=["a", "b", "a"])]
        [0, 1]
        """
        encoder = self.encoder
        if encoder.per_row:
            return [Message(payload, row_id, i) for i, (payload, row_id) in
                    enumerate(zip(self._encode(batch), self.row_ids(batch), strict=True))]
        if by is None:
            groups = [np.arange(len(batch))]
        else:
            labels = pd.factorize(pd.Series(list(by), dtype=object), use_na_sentinel=False)[0]
            groups = [np.flatnonzero(labels == g) for g in range(int(labels.max()) + 1)]
        out = []
        for rows in groups:
            part = batch.iloc[rows].reset_index(drop=True) if len(groups) > 1 else batch
            digest = hashlib.blake2b(self._row_hashes(part).to_numpy().tobytes(),
                                     digest_size=12).hexdigest()
            (payload,) = self._encode(part)
            out.append(Message(payload, f"{self.frame.name}:{digest}", int(rows[0])))
        return out

    def _encode(self, batch: pd.DataFrame) -> list[bytes]:
        """The encoder's payloads; SchemaError naming the sink when it cannot encode.

        Not a delivery failure: retrying would fail the same way, so :meth:`_attempt`
        does not retry it and the pipeline fails with this error (what arrived is named).
        """
        try:
            return list(self.encoder.encode(batch))
        except Exception as exc:
            columns = ", ".join(f"{c}: {t}" for c, t in batch.dtypes.items())
            msg = (f"sink {self.name!r} cannot encode a batch of {len(batch)} rows "
                   f"({columns}) with its encoder {self.encoder!r}: "
                   f"{type(exc).__name__}: {exc}")
            raise SchemaError(msg) from exc

    def _ensure_writer(self) -> None:
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (plain emit() in a script): deliver now
            asyncio.run(self._drain_once())
            return
        self._wakeup = asyncio.Event()
        self._task = loop.create_task(self._writer(), name=f"rtnb-sink:{self.name}")
        self._task.add_done_callback(self._writer_done)

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        """Supervision: a writer that dies (not a failed delivery: a bug) fails the pipeline."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        assert error is not None
        self._closed = True
        self._progress.set()  # a checkpoint waiting on this sink sees it closed
        self.frame.graph.fail(error, where=f"sink {self.name!r}")

    async def _writer(self) -> None:
        assert self._wakeup is not None
        while not self._closed:
            if not self._queue or self._held():
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._drain_once()

    def _held(self) -> bool:
        """The next batch was queued after a barrier whose transaction is being prepared."""
        return self._hold is not None and self._handled >= self._hold

    async def _drain_once(self) -> None:
        while self._queue and not self._held():
            key, batch = self._queue[0]
            await self._handle(key, batch)
            self._queue.pop(0)
            self._handled += 1
            self._progress.set()
            if len(self._queue) < max(1, self.max_queue // 2):
                self.frame.graph.relieve(self)

    # -- delivery --------------------------------------------------------------------------
    async def _attempt(self, key: str, batch: pd.DataFrame) -> bool:
        for attempt in range(self.retries + 1):
            if not self.breaker.allow():
                return False
            try:
                await self._deliver(batch, key)
            except SchemaError:  # the batch cannot be encoded: no retry makes it deliverable
                raise
            except Exception as exc:  # any failure of the target counts
                self.stats.failed_attempts += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                self.breaker.record(False)
                if attempt < self.retries and self.breaker.allow():
                    await asyncio.sleep(self.backoff.next())
                continue
            self.breaker.record(True)
            self.backoff.reset()
            return True
        return False

    async def _handle(self, key: str, batch: pd.DataFrame) -> None:
        while True:
            if self._spooled and self.breaker.allow():
                await self._retry_spool()
            if not self._spooled and await self._attempt(key, batch):
                self.stats.delivered_rows += len(batch)
                self.stats.delivered_batches += 1
                if self._blocked:
                    self._blocked = False
                    log.warning("sink %r delivers again", self.name)
                return
            if self.spool is not None:
                path = self.spool / f"{time.time_ns()}_{key}.parquet"
                batch.to_parquet(path.with_suffix(".tmp"))
                path.with_suffix(".tmp").rename(path)
                self._spooled.append(path)
                self.stats.spooled_rows += len(batch)
                return
            if self.on_failure == "drop" or self._closed:
                self.stats.undeliverable_rows += len(batch)
                log.error("sink %r dropped %d rows it could not deliver (%s); circuit %s",
                          self.name, len(batch), self.stats.last_error, self.breaker.state)
                return
            # on_failure="block": hold the sources (they wait before their next batch) and
            # try again when the circuit lets us; nothing is dropped.
            if not self._blocked:
                self._blocked = True
                log.warning("sink %r cannot deliver (%s); holding the sources until it "
                            "answers again", self.name, self.stats.last_error)
            self.frame.graph.press(self)
            if self.breaker.state == "open":
                wait = self.breaker.reset_after_s - (time.monotonic() - self.breaker.opened_at)
            else:
                wait = self.backoff.next()
            await asyncio.sleep(max(0.05, wait))

    async def _retry_spool(self) -> None:
        while self._spooled:
            path = self._spooled[0]
            batch = pd.read_parquet(path)
            if not await self._attempt(path.stem.partition("_")[2], batch):
                return
            self.stats.delivered_rows += len(batch)
            self.stats.delivered_batches += 1
            self.stats.respooled_rows += len(batch)
            self.stats.spooled_rows -= len(batch)
            path.unlink()
            self._spooled.pop(0)

    async def _deliver(self, batch: pd.DataFrame, key: str) -> None:
        """Deliver one batch (raise on failure).

        ``key`` (:meth:`key_of`, ``""`` unless ``uses_key``) is the same on every retry.
        """
        raise NotImplementedError

    # -- checkpoints ----------------------------------------------------------------------
    def barrier(self) -> int:
        """Mark the checkpoint barrier: the batches queued so far belong to this checkpoint."""
        return self._seq

    async def prepare_commit(self, barrier: int) -> Any:
        """Deliver every batch queued before ``barrier``; return the transaction state.

        The state is stored in the checkpoint; :meth:`commit` receives it once the
        checkpoint is durable, :meth:`recover` after a restart from that checkpoint.
        """
        self._hold = barrier
        try:
            while self._handled < barrier and not self._closed:
                self._ensure_writer()
                self._progress.clear()
                if self._handled >= barrier:
                    break
                await self._progress.wait()
            if self._handled < barrier:
                msg = (f"sink {self.name!r} was closed before it delivered the batches of this "
                       "checkpoint; the checkpoint is not written")
                raise CheckpointError(msg)
            return await self._pre_commit()
        finally:
            self._hold = None
            if self._wakeup is not None:
                self._wakeup.set()

    async def _pre_commit(self) -> Any:
        """Make what was delivered durable; the transaction state (subclasses)."""
        return None

    async def commit(self, state: Any) -> None:
        """The checkpoint holding ``state`` is durable: make its output final (subclasses)."""

    async def recover(self, state: Any) -> None:
        """Before a run restarted from a checkpoint: undo what was written after ``state``.

        ``state`` is what :meth:`prepare_commit` returned for that checkpoint; the output is
        brought back to exactly that point, its pending part committed (subclasses).
        """

    def abandon(self) -> None:
        """Give up on what cannot be delivered (a second stop signal): drop it, counted."""
        self._closed = True
        self._progress.set()

    # -- end -------------------------------------------------------------------------------
    async def flush(self) -> None:
        """Wait until every queued batch was delivered, spooled or counted undeliverable.

        Spooled batches get one more chance (after the circuit's ``reset_after``); what is
        still undelivered stays in the spool folder, which the next run reads first.
        """
        while self._queue and not self._closed:
            if self._task is None or self._task.done():
                await self._drain_once()
                break
            await asyncio.sleep(0.01)
        for _ in range(self.retries + 1):
            if not self._spooled or self._closed:
                break
            if not self.breaker.allow():
                wait = self.breaker.reset_after_s - (time.monotonic() - self.breaker.opened_at)
                await asyncio.sleep(max(0.0, wait))
            await self._retry_spool()
        await self._close_target()

    async def _close_target(self) -> None:
        """Release connections (subclasses)."""

    def close(self) -> None:
        """Stop delivering (what is queued is dropped; call ``await flush()`` first)."""
        self._closed = True
        self._sink_node.destroy()
        self.frame.graph.relieve(self)
        if self._task is not None:
            self._task.cancel()
        self._unregister()
