"""What runs on a Dask worker: one partition's reader, the pipeline's prefix and its state.

A :class:`PartitionTask` is the state of one partition. It lives in its worker process
under a *lease* (a name the driver gives it: run, partition, generation), in a registry of
that process, not as a Dask future: the driver installs it (:func:`install_task`), then
every tick submits :func:`run_step` for the lease, a task with no dependency whose small
result is the step's :class:`StepOutput`. Dask keeps no lineage of the steps, so it never
runs a step again after a worker left (it would re-run the partition's history from its
first step on another worker, reading and acknowledging entries nobody handled); a lease
that is not on the worker a step runs on raises :class:`StaleStep`, and the driver rebuilds
the partition from its checkpoint. A partition moves between workers by
:func:`export_task` (the old worker hands the task over) and :func:`adopt_task` (the new
one takes it under a new lease). A step

1. acknowledges what the previous step read (the driver has handled its output),
2. reads up to ``max_rows`` messages of its partition (without blocking),
3. decodes and coerces them (bad ones become dead letters with their reason),
4. runs the stateless nodes between the source and each *split* node (the first stateful
   node on each path) and the split node's logic: a window engine in held mode, whose
   windows the driver's watermark closed leave as partial states; any other logic
   (session windows, rolling, detectors) runs as in one process, for the keys of its
   partition,
5. returns a :class:`StepOutput`, small: partials, rows, late rows, dead letters, the
   partition's newest event time and its lag.
"""
from __future__ import annotations

import time as _time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from rtnb import _frames
from rtnb.windows.base import END_OF_STREAM, NO_WATERMARK

__all__ = ["PartitionTask", "SplitPlan", "StaleStep", "StepOutput", "adopt_task", "export_task",
           "install_task", "make_task", "release_task", "run_step", "step", "take_output"]


#: Messages a catching-up step reads at a time when its quota is 0 (the end of a run).
REPLAY_ROWS = 1_000


class StaleStep(RuntimeError):
    """A step found no task to run on: not at the step before it, or not on this worker.

    A step changes its partition's task (reader position, state) as it runs, so it must
    run once, on the task the driver means: a task already past that step, or a lease
    this worker does not hold (its worker was restarted, the partition moved or was
    rebuilt elsewhere), refuses, and the driver rebuilds the partition from its checkpoint.
    """


#: The partition tasks living in this worker process, by lease (see the module docstring).
_LIVE: dict[str, PartitionTask] = {}


@dataclass
class SplitPlan:
    """How one split node runs on a worker: its prefix and its logic."""

    #: the split node's name on the driver
    name: str
    #: ``(frame name, batch function)`` from the source's first derived frame to the split
    #: node's parent
    prefix: list[tuple[str, Any]]
    #: a fresh copy of the node's logic (pickled by Dask)
    logic: Any
    #: the logic is a window engine whose closed windows merge on the driver
    merged: bool
    #: the engine's allowed lateness (merged only)
    lateness_ns: int = 0


@dataclass
class StepOutput:
    """What a step sends back to the driver."""

    partition: int
    #: the step's number in this task's life (0, 1, ...)
    number: int = 0
    #: messages read and rows that passed decoding (re-read ones not counted)
    read: int = 0
    rows: int = 0
    #: the partition's newest event time (ns) so far; ``NO_WATERMARK`` before any
    max_time: int = NO_WATERMARK
    #: per split node: a partial (merged nodes) or output rows (others), or ``None``
    outputs: dict[str, Any] = field(default_factory=dict)
    #: per split node: late rows, if any
    late: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: ``(payload, reason, position)`` of every message that became a dead letter
    dead: list[tuple[Any, str, Any]] = field(default_factory=list)
    #: entries the broker has not delivered yet (``None``: unknown)
    lag: int | None = None
    #: the newest position whose effects are in this output (``None``: none yet)
    position: Any = None
    #: a checkpoint was asked for: every split node's logic snapshot, by node name
    snapshot: dict[str, Any] | None = None
    #: still re-reading what a lost task had handled (see :attr:`PartitionTask.replay_until`):
    #: no window closed, the driver's merge waits
    replaying: bool = False
    #: the partition's broker could not be reached (a connection error): what happened,
    #: while the task waits to try again; ``failed``: this step's attempt failed
    error: str | None = None
    failed: bool = False
    #: the worker that ran the step
    worker: str | None = None
    #: seconds the step took on the worker
    seconds: float = 0.0


@dataclass
class PartitionTask:
    """One partition's reader and state, living on a worker between steps.

    Acknowledgements follow the checkpoints: what a step reads stays unacknowledged
    (``unacked``) until a step takes a checkpoint, whose snapshot the driver keeps; the
    step after it acknowledges those entries (``covered``). A task rebuilt from that
    snapshot after its worker was lost re-reads exactly the unacknowledged entries (a
    consumer's pending entries come first); those up to ``replay_until`` (the newest
    position whose output the driver had handled) only rebuild the state: their output,
    late rows, dead letters and the windows they close were sent already.
    """

    partition: int
    reader: Any
    #: the source's decoding of the partition's messages
    #: (``BufferedSource.partition_decoder``)
    decode: Any
    time: str | None
    splits: list[SplitPlan]
    max_time: int = NO_WATERMARK
    unacked: list[Any] = field(default_factory=list)
    covered: list[Any] = field(default_factory=list)
    replay_until: Any = None
    #: positions up to this one are in the restored snapshot: skipped (and acknowledged)
    skip_until: Any = None
    #: with ``replay_until``: the frontier of the last step of this partition whose output
    #: the driver handled (its partials of the windows closed by then are on the driver)
    replay_frontier: int = NO_WATERMARK
    position: Any = None
    output: StepOutput | None = None
    events: int = 0
    steps: int = 0
    #: the worker's copies of the Params the splits use, and the values last applied
    params: list[Any] = field(default_factory=list)
    param_values: tuple[Any, ...] | None = None
    #: connection errors in a row, the time (monotonic) of the next try, the last error
    failures: int = 0
    retry_at: float = 0.0
    error: str | None = None
    #: after a reconnection, the entries up to this position were read before: skipped
    resume_after: Any = None

    def convert(self, items: list[tuple[Any, Any]]) -> tuple[pd.DataFrame, list[tuple[Any, str,
                                                                                    Any]]]:
        """Decode and coerce; the good rows and the dead letters (payload, reason, position)."""
        good, dead = self.decode(items)
        return good, dead


def make_task(partition: int, reader: Any, decode: Any, time: str | None,
              splits: list[SplitPlan], snapshot: dict[str, Any] | None = None,
              replay_until: Any = None, replay_frontier: int = NO_WATERMARK) -> PartitionTask:
    """A partition's task, run on its worker (the logic objects are unpickled there).

    ``snapshot``: a checkpoint's state of the split nodes (by name) to start from, with
    ``replay_until``: the newest position the driver has handled, and ``replay_frontier``:
    the frontier of the partition's last step the driver handled (a rebuilt task).
    """
    max_time = NO_WATERMARK
    for split in splits:
        if snapshot is not None:
            saved = snapshot["logic"][split.name]
            split.logic.restore(saved)
        if split.merged:
            split.logic.hold()
    skip_until = None
    if snapshot is not None:
        max_time = snapshot["max_time"]
        skip_until = snapshot["position"]
    return PartitionTask(partition, reader, decode, time, splits, max_time=max_time,
                         replay_until=replay_until, skip_until=skip_until,
                         replay_frontier=replay_frontier)


def step(task: PartitionTask, number: int, frontier: int, max_rows: int, final: bool,
         checkpoint: bool = False, ack: bool = True,
         params: tuple[Any, ...] | None = None) -> PartitionTask:
    """One tick of one partition (see the module docstring); returns the task.

    ``frontier`` is the driver's event-time frontier (the minimum newest event time over
    the partitions that are not idle): a merged engine's watermark is the frontier less
    its allowed lateness. ``final``: the end of the run: nothing is read, every window
    closes and every logic flushes. ``checkpoint``: snapshot the split nodes' state into
    the output; the entries read so far are acknowledged by the next step. ``number``:
    the step's number in the task's life; a step run on a task at another one (Dask ran it
    again) raises :class:`StaleStep`. ``ack``: acknowledge the entries the last checkpoint
    covers (the driver says so once that checkpoint is durable, with ``--checkpoint``).
    ``params``: the current values of the Params in ``task.params`` (a widget moved on the
    driver): set on the worker's copies before this step reads.
    """
    if task.steps != number:
        msg = (f"partition {task.partition}: step {number} ran on its task at step "
               f"{task.steps} (Dask ran it again after losing its result)")
        raise StaleStep(msg)
    task.steps += 1
    if params is not None and params != task.param_values:
        for param, value in zip(task.params, params, strict=True):
            param.value = value
        task.param_values = params
    started = _time.perf_counter()
    out = StepOutput(task.partition, number)
    catching_up = task.replay_until is not None or task.skip_until is not None
    # re-reading what a lost task had read is no new data: not bound by max_rows' quota
    want = max_rows if max_rows > 0 or not catching_up else REPLAY_ROWS
    items: list[tuple[Any, Any]] = []
    if _reachable(task, out):  # else the broker went away: wait, then try again
        try:
            if ack:
                task.reader.ack(task.covered)
                task.covered = []
            if not (final and not catching_up) and want > 0:
                items = _resumed(task, task.reader.read(want, None), want)
        except _retryable(task.reader) as exc:
            _lost_connection(task, out, exc)
        else:
            task.failures, task.error = 0, None
    if out.error is not None:  # nothing read: the windows close on, a catch-up waits
        out.replaying = catching_up
        if not catching_up:
            _process(task, [], frontier, final, out)
        return _finish(task, out, final, checkpoint, started)
    if task.skip_until is not None:  # already in the restored snapshot
        bound = task.reader.order(task.skip_until)
        seen = [item for item in items if task.reader.order(item[1]) <= bound]
        task.covered = [position for _, position in seen]
        items = items[len(seen):]
        if items or len(seen) < want:  # past the snapshot's entries (or none left)
            task.skip_until = None
        elif task.replay_until is not None:  # more may follow: read on first
            out.replaying = True
    if items:
        task.unacked.extend(position for _, position in items)
        task.position = items[-1][1]
    if task.replay_until is not None and not out.replaying:
        bound = task.reader.order(task.replay_until)
        again = [item for item in items if task.reader.order(item[1]) <= bound]
        _replay(task, again)
        items = items[len(again):]
        if items or len(again) < want:  # past the handled entries (or none left)
            task.replay_until = None
            for split in task.splits:  # the windows the driver had emitted: sent already
                if split.merged:
                    split.logic.take_closed()
        else:  # more to re-read: close nothing yet (the state is not whole)
            out.replaying = True
    out.read = len(items)
    if not out.replaying:
        _process(task, items, frontier, final, out)
    return _finish(task, out, final, checkpoint, started, lag=final or checkpoint
                   or task.steps % 10 == 1 or not items)  # lag: an XINFO/offsets query


def _finish(task: PartitionTask, out: StepOutput, final: bool, checkpoint: bool,
            started: float, *, lag: bool = False) -> PartitionTask:
    """A step's checkpoint, last acknowledgement and lag; the output kept on the task."""
    if checkpoint or final:
        out.snapshot = {"logic": {split.name: split.logic.snapshot() for split in task.splits},
                        "max_time": task.max_time, "position": task.position}
        task.covered, task.unacked = task.covered + task.unacked, []
    if final and task.error is None:
        try:
            task.reader.ack(task.covered)
            task.covered = []
        except _retryable(task.reader) as exc:  # they stay pending: a restart re-reads them
            task.error = out.error = f"{type(exc).__name__}: {exc}"
    out.max_time = task.max_time
    out.position = task.position
    if lag and task.error is None:
        try:
            out.lag = task.reader.lag()
        except _retryable(task.reader):
            out.lag = None
    out.seconds = _time.perf_counter() - started
    try:
        from distributed import get_worker

        out.worker = get_worker().address
    except (ImportError, ValueError):
        out.worker = None
    task.output = out
    return task


def _retryable(reader: Any) -> tuple[type[BaseException], ...]:
    """The reader's errors that mean "the broker cannot be reached now" (retried)."""
    return tuple(getattr(reader, "retry_on", ()))


def _reachable(task: PartitionTask, out: StepOutput) -> bool:
    """Whether this step may talk to the broker (not waiting to retry a lost connection)."""
    if task.error is not None and _time.monotonic() < task.retry_at:
        out.error = task.error
        return False
    return True


def _lost_connection(task: PartitionTask, out: StepOutput, exc: BaseException) -> None:
    """A connection error: back off (0.1 s doubling to 5 s), reconnect on the next try.

    The reader starts again from what the broker delivered but this task did not
    acknowledge (a reply lost with the connection is among it); what the task had read
    already (up to its position) is skipped then, so nothing is lost or read twice.
    """
    import random

    task.failures += 1
    backoff = min(5.0, 0.1 * 2 ** (task.failures - 1)) * random.uniform(0.5, 1.0)
    task.retry_at = _time.monotonic() + backoff
    task.error = out.error = f"{type(exc).__name__}: {exc}"
    out.failed = True
    reconnect = getattr(task.reader, "reconnect", None)
    if reconnect is not None:
        reconnect()
        if task.position is not None:
            task.resume_after = task.position


def _resumed(task: PartitionTask, items: list[tuple[Any, Any]], want: int
             ) -> list[tuple[Any, Any]]:
    """``items`` without those read before a reconnection (see :func:`_lost_connection`)."""
    if task.resume_after is None:
        return items
    bound = task.reader.order(task.resume_after)
    fresh = [item for item in items if task.reader.order(item[1]) > bound]
    if fresh or len(items) < want:  # past what was read before (or nothing more yet)
        task.resume_after = None
    return fresh


def _replay(task: PartitionTask, items: list[tuple[Any, Any]]) -> None:
    """Rebuild state from entries whose output was sent already; nothing leaves.

    Merged engines run at the watermark of the partition's last step the driver handled
    (``replay_frontier``): rows of the windows closed by then are late here, as this
    partition's part of those windows reached the driver already (merged, or waiting in its
    stash for the other partitions' parts: replaying at an older frontier, say that of the
    last complete merge, sent those parts twice); every later window gets its rows back.
    """
    for split in task.splits:
        if split.merged:
            split.logic.advance_to(_watermark(task.replay_frontier, split.lateness_ns))
    if not items:
        return
    batch, _ = task.convert(items)
    if len(batch) and task.time is not None:
        task.max_time = max(task.max_time, int(_frames.times_ns(batch, task.time).max()))
    cache: dict[str, pd.DataFrame] = {}
    for split in task.splits:
        part = batch
        for name, func in split.prefix:
            hit = cache.get(name)
            part = hit if hit is not None else func(part)
            cache[name] = part
        if len(part):
            split.logic.process(part)


def _process(task: PartitionTask, items: list[tuple[Any, Any]], frontier: int, final: bool,
             out: StepOutput) -> None:
    """Decode ``items``, run the prefix and the split nodes; results into ``out``."""
    batch: pd.DataFrame | None = None
    if items:
        batch, out.dead = task.convert(items)
        out.rows = len(batch)
        task.events += len(batch)
        if len(batch) and task.time is not None:
            newest = _frames.times_ns(batch, task.time).max()
            task.max_time = max(task.max_time, int(newest))
    cache: dict[str, pd.DataFrame] = {}
    for split in task.splits:
        logic = split.logic
        rows: Any = None
        if batch is not None and len(batch):
            part = batch
            for name, func in split.prefix:
                hit = cache.get(name)
                part = hit if hit is not None else func(part)
                cache[name] = part
            if split.merged:
                logic.advance_to(_watermark(frontier, split.lateness_ns))
            if len(part):
                result = logic.process(part)
                if result.late is not None and len(result.late):
                    out.late[split.name] = result.late
                rows = None if split.merged else result.rows
        if split.merged:
            logic.advance_to(END_OF_STREAM if final else _watermark(frontier, split.lateness_ns))
            rows = logic.take_closed(everything=final)
        elif final:
            flushed = logic.flush().rows
            rows = flushed if rows is None else pd.concat([rows, flushed], ignore_index=True)
        if rows is not None:
            out.outputs[split.name] = rows


def take_output(task: PartitionTask, number: int) -> StepOutput:
    """The output of step ``number`` (a small task: only this travels to the driver).

    Raises :class:`StaleStep` if the task has gone past that step (Dask ran this again).
    """
    out = task.output
    if out is None or out.number != number:
        msg = (f"partition {task.partition}: the output of step {number} is gone (the task "
               f"is at step {task.steps})")
        raise StaleStep(msg)
    return out


def install_task(lease: str, task: PartitionTask) -> None:
    """Keep ``task`` in this worker process under ``lease`` (a lease is installed once)."""
    if lease in _LIVE:
        msg = f"partition {task.partition}: lease {lease!r} is installed already"
        raise StaleStep(msg)
    _LIVE[lease] = task


def _leased(lease: str) -> PartitionTask:
    task = _LIVE.get(lease)
    if task is None:
        msg = (f"no partition task under lease {lease!r} on this worker (it was restarted, "
               "or the partition moved or was rebuilt elsewhere)")
        raise StaleStep(msg)
    return task


def run_step(lease: str, number: int, frontier: int, max_rows: int, final: bool,
             checkpoint: bool = False, ack: bool = True,
             params: tuple[Any, ...] | None = None) -> StepOutput:
    """:func:`step` on the task under ``lease``; its output (what travels to the driver)."""
    task = _leased(lease)
    step(task, number, frontier, max_rows, final, checkpoint, ack, params)
    return take_output(task, number)


def export_task(lease: str) -> PartitionTask:
    """Hand the task under ``lease`` over (the partition moves to another worker).

    It leaves this worker's registry and its connection closes here (the copy opens its
    own where it is adopted; what it read and did not acknowledge stays pending there).
    """
    task = _leased(lease)
    del _LIVE[lease]
    task.reader.close()
    return task


def adopt_task(task: PartitionTask, lease: str) -> None:
    """Keep a task :func:`export_task` handed over, under its new ``lease``."""
    install_task(lease, task)


def release_task(lease: str) -> None:
    """Drop the task under ``lease`` and close its connection (the end of a run)."""
    task = _LIVE.pop(lease, None)
    if task is not None:
        task.reader.close()


def _watermark(frontier: int, lateness_ns: int) -> int:
    if frontier == NO_WATERMARK:
        return NO_WATERMARK
    return frontier - lateness_ns
