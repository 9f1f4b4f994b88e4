"""What every sink shares: a bounded queue, retries with backoff, a circuit breaker, a spool.

A sink subscribes to a frame. Batches are queued (the frame's emit never waits on the
network); a writer task on the running loop delivers them in order. A delivery that fails is
retried with exponential backoff and jitter; after ``failures`` consecutive failed batches the
circuit opens: nothing is attempted for ``reset_after``, then one probe batch is tried
(half-open), which closes the circuit on success. A batch that cannot be delivered is spooled
to disk (``spool=`` a folder; retried, oldest first, once deliveries succeed again) or, without
a spool, counted in ``stats.undeliverable_rows``. Delivery is at least once: a batch whose
acknowledgement was lost is sent again, with the same key (``Idempotency-Key`` for
webhooks), so the receiver can drop the repeat. When the queue holds ``max_queue`` batches the
sink presses on the pipeline: sources wait before their next batch until it has caught up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pandas as pd

from rtnb._net import Backoff
from rtnb._time import DurationLike, to_ns
from rtnb.errors import ConfigError

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame

__all__ = ["CircuitBreaker", "Sink", "SinkStats"]

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

    def __init__(self, frame: StreamingFrame, *, name: str, retries: int = 3,
                 max_queue: int = 64, failures: int = 5,
                 reset_after: DurationLike = "5s", spool: str | Path | None = None) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            msg = f"sink {name!r}: `retries` must be a non-negative int; got {retries!r}"
            raise ConfigError(msg)
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            msg = f"sink {name!r}: `max_queue` must be a positive int; got {max_queue!r}"
            raise ConfigError(msg)
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
        self._seq = 0
        #: Identifies this run's batches: ``<sink name>-<run>-<n>``, the idempotency key.
        self._run = f"{name}-{time.time_ns():x}"
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
        self._queue.append((f"{self._run}-{self._seq}", batch))
        self.stats.queued_max = max(self.stats.queued_max, len(self._queue))
        if len(self._queue) >= self.max_queue:
            self.frame.graph.press(self)
        self._ensure_writer()
        if self._wakeup is not None:
            self._wakeup.set()

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

    async def _writer(self) -> None:
        assert self._wakeup is not None
        while not self._closed:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._drain_once()

    async def _drain_once(self) -> None:
        while self._queue:
            key, batch = self._queue[0]
            await self._handle(key, batch)
            self._queue.pop(0)
            if len(self._queue) < max(1, self.max_queue // 2):
                self.frame.graph.relieve(self)

    # -- delivery --------------------------------------------------------------------------
    async def _attempt(self, key: str, batch: pd.DataFrame) -> bool:
        for attempt in range(self.retries + 1):
            if not self.breaker.allow():
                return False
            try:
                await self._deliver(batch, key)
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
        if self._spooled and self.breaker.allow():
            await self._retry_spool()
        if not self._spooled and await self._attempt(key, batch):
            self.stats.delivered_rows += len(batch)
            self.stats.delivered_batches += 1
            return
        if self.spool is not None:
            path = self.spool / f"{time.time_ns()}_{key}.parquet"
            batch.to_parquet(path.with_suffix(".tmp"))
            path.with_suffix(".tmp").rename(path)
            self._spooled.append(path)
            self.stats.spooled_rows += len(batch)
        else:
            self.stats.undeliverable_rows += len(batch)
            log.warning("sink %r could not deliver %d rows (%s); circuit %s", self.name,
                        len(batch), self.stats.last_error, self.breaker.state)

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
        """Deliver one batch (raise on failure); ``key`` is the same on every retry of it."""
        raise NotImplementedError

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
