"""The driver of a partitioned run: plans the split, submits steps, merges, emits.

See :mod:`rtnb.distributed` for the model. The driver replaces the source's own runner
(``graph.start(runner=...)``): the graph's lifecycle (stop, pause, failure, close) and
everything downstream of the split nodes stay as in one process.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import time as _time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from rtnb._time import DurationLike, to_ns
from rtnb.distributed._worker import (
    SplitPlan,
    StaleStep,
    StepOutput,
    adopt_task,
    export_task,
    install_task,
    make_task,
    release_task,
    run_step,
)
from rtnb.errors import ConfigError, RtnbError, SourceError
from rtnb.params import Param
from rtnb.windows.base import NO_WATERMARK

if TYPE_CHECKING:
    from rtnb.frame import StatefulFrame, StreamingFrame
    from rtnb.pipeline import Pipeline

__all__ = ["ClusterLike", "ClusterRunner", "plan_splits"]

log = logging.getLogger(__name__)

#: What ``cluster=`` accepts: a ``distributed`` cluster object (``LocalCluster``, any
#: ``Cluster``), a ``Client``, a scheduler address (``"tcp://host:8786"``) or ``"local:N"``
#: / an int N (a ``LocalCluster`` of N single-threaded worker processes, closed at the end).
ClusterLike = Any


@dataclass
class Split:
    """A split node on the driver and how it runs on the workers."""

    frame: StatefulFrame
    prefix: list[tuple[str, Any]]
    merged: bool


def _require_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - the dask extra is part of dev
        from rtnb.errors import MissingExtraError

        package = "dask.distributed"
        raise MissingExtraError(package, extra="dask") from exc
    return distributed


def plan_splits(root: StreamingFrame) -> list[Split]:
    """The split nodes of ``root``'s graph: the first stateful node on each path.

    Everything between the source and a split node (filters, ``assign``, ``map_batches``,
    column selections) runs on the workers; nothing there may be read on the driver (a
    view, a sink, ``collect()``), since no row reaches the driver before a split node.
    """
    from streamz.core import map as stream_map

    from rtnb.windows.engine import WindowAggregator

    graph = root.graph
    splits: list[Split] = []
    prefix_frames: dict[str, StreamingFrame] = {}
    for node in graph.stateful():
        chain: list[tuple[str, Any]] = []
        frame = node.parent
        upstream_stateful = False
        while frame is not None and frame is not root:
            if frame.stateful:
                upstream_stateful = True
                break
            if not isinstance(frame.stream, stream_map) or frame.stream.args or \
                    frame.stream.kwargs:
                msg = (f"node {frame.name!r} cannot run on a Dask worker (only filters, "
                       "assign, map_batches and column selections run there before the "
                       "first window, rolling or detector)")
                raise ConfigError(msg)
            chain.append((frame.name, frame.stream.func))
            prefix_frames[frame.name] = frame
            frame = frame.parent
        if upstream_stateful or frame is None:
            continue
        logic: Any = node.logic
        merged = isinstance(logic, WindowAggregator)
        if merged and logic.emit != "final":
            msg = (f"window {node.name!r} has emit='update'; on a cluster windows are merged "
                   "from the partitions when they close: use emit='final' (the default)")
            raise ConfigError(msg)
        splits.append(Split(node, chain[::-1], merged))
    if not splits:
        msg = (f"nothing to run on the cluster: no window, rolling or detector follows "
               f"frame {root.name!r}")
        raise ConfigError(msg)
    allowed = {id(f.stream) for f in prefix_frames.values()} | \
        {id(s.frame.stream) for s in splits}
    for frame in [root, *prefix_frames.values()]:
        for down in list(frame.stream.downstreams):
            if id(down) not in allowed:
                msg = (f"frame {frame.name!r} runs on the Dask workers, but something on the "
                       f"driver reads it ({type(down).__name__}: a view, sink or collect()); "
                       "read the outputs of its windows or detectors instead, or run "
                       "without a cluster")
                raise ConfigError(msg)
    return splits


# -- what may travel to the workers ----------------------------------------------------------
def _series_state(series: Any) -> tuple[Any, ...]:
    state = dict(series.__dict__, frame=None, code=())
    return (_rebuild, (type(series), state))


def _rebuild(cls: type, state: dict[str, Any]) -> Any:
    obj: Any = object.__new__(cls)
    obj.__dict__.update(state)
    return obj


def _refuse_frame(frame: Any) -> Any:
    msg = (f"a function of the pipeline refers to frame {frame.name!r}, which cannot be sent "
           "to a Dask worker: compute from the batch the function gets")
    raise ConfigError(msg)


def _param_state(param: Param) -> tuple[Any, ...]:
    # the copy on a worker: no watchers (the driver's nodes, views) and no widget
    state = {k: v for k, v in param.__dict__.items() if k not in ("_watchers", "_widget")}
    return (_rebuild, (type(param), dict(state, _watchers=[], _widget=None, _syncing=False)))


def _pickler(params: list[Param] | None = None) -> Any:
    """cloudpickle, taught to send expressions without their frame and to refuse frames.

    Params travel without their watchers and widget; each one pickled is appended to
    ``params`` (once), so the driver knows which of them the workers' copies use.
    """
    import cloudpickle

    from rtnb.frame import StreamingFrame
    from rtnb.series import StreamingSeries

    class Pickler(cloudpickle.CloudPickler):  # type: ignore[misc]
        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, StreamingSeries):
                return _series_state(obj)
            if isinstance(obj, StreamingFrame):
                _refuse_frame(obj)
            if isinstance(obj, Param):
                if params is not None and all(obj is not q for q in params):
                    params.append(obj)
                return _param_state(obj)
            return super().reducer_override(obj)

    class Dumps:
        @staticmethod
        def dumps(obj: Any) -> bytes:
            buffer = io.BytesIO()
            Pickler(buffer, protocol=5).dump(obj)
            return buffer.getvalue()

    return Dumps


class ClusterRunner:
    """Runs a partitioned source's pipeline on a Dask cluster (``graph.start(runner=...)``).

    Parameters
    ----------
    pipeline
        The pipeline (its root's source must be partitioned).
    cluster
        See :data:`ClusterLike`.
    max_rows
        Messages a partition reads per step at most. While the partitions have a backlog
        (their lags, as the steps report them, above ``max_rows``), the most behind one reads
        ``max_rows`` and the others in proportion to their lags, so that the backlogs drain
        together (see ``_quotas``).
    tick
        How long the driver waits before the next steps when the last ones read nothing.
    checkpoint_every
        How often the partitions' state is checkpointed (kept by the driver): a partition
        whose worker dies is rebuilt from it on another worker and re-reads what came after
        it, so its output loses and repeats nothing.
    durable
        With a durable checkpoint (an exported script's ``--checkpoint``): awaited with the
        partitions' state (``{"partitions": {p: snapshot}}``) after every checkpoint tick in
        which every partition's part merged; it writes the checkpoint (the driver's own
        nodes with it) and says whether it could. Entries are acknowledged only after one
        was written, and a stop saves a checkpoint instead of closing the open windows
        (the resumed run closes them).
    restored
        What ``durable`` saved, read back by a new run: each partition starts from its
        state there and skips the entries it holds.
    """

    def __init__(self, pipeline: Pipeline, cluster: ClusterLike, *, max_rows: int = 10_000,
                 tick: DurationLike = "50ms", checkpoint_every: DurationLike = "2s",
                 durable: Callable[[dict[str, Any]], Awaitable[bool]] | None = None,
                 restored: dict[str, Any] | None = None) -> None:
        self.pipeline = pipeline
        self.root = pipeline.root
        self.source: Any = self.root.source
        partitions = getattr(self.source, "partitions", None)
        if partitions is None or not hasattr(self.source, "partition_reader"):
            msg = (f"source {getattr(self.source, 'name', self.root.name)!r} is not "
                   "partitioned: a cluster run needs a partitioned source, e.g. "
                   "rtnb.sources.redis_stream(name, partitions=8, group=...)")
            raise ConfigError(msg)
        if not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows < 1:
            msg = f"max_rows must be a positive int; got {max_rows!r}"
            raise ConfigError(msg)
        self.partitions: int = partitions
        self.cluster = cluster
        self.max_rows = max_rows
        self.tick_s = to_ns(tick, name="tick") / 1e9
        self.splits = plan_splits(self.root)
        _require_distributed()
        #: the worker of each partition (addresses), once started
        self.workers: dict[int, str] = {}
        #: the event-time frontier (ns): the minimum newest event time over the partitions
        #: that are not idle
        self.frontier = NO_WATERMARK
        #: the Dask dashboard's address, once connected
        self.dashboard_link: str | None = None
        #: seconds between checkpoints of the partitions' state (what a lost worker's
        #: partitions are rebuilt from; entries are acknowledged once a checkpoint holds them)
        self.checkpoint_s = to_ns(checkpoint_every, name="checkpoint_every") / 1e9
        #: partitions rebuilt after their worker was lost
        self.recoveries = 0
        #: ticks run (one step per partition each) and the tick of the last checkpoint
        self.ticks = 0
        self.checkpoint_tick: int | None = None
        self._own_cluster: Any = None
        # each partition's task lives on its worker under a lease (run, partition,
        # generation): a new one whenever it is created, rebuilt or moved
        self._run = uuid.uuid4().hex[:12]
        self._generation = 0
        self._leases: dict[int, str] = {}
        # the future of the Dask task that installed or adopted each partition's task, its
        # key the lease: released, the worker drops the task (:class:`LeaseKeeper`)
        self._holds: dict[int, Any] = {}
        self._blob = b""
        self._snapshots: dict[int, dict[str, Any]] = {}
        self._handled: dict[int, Any] = {}
        self._stash: dict[str, list[Any]] = {}
        self._steps: dict[int, int] = {}
        # per partition: the frontier of the last step whose output the driver handled
        # (its partials of the windows closed by then are merged or in the stash)
        self._handled_frontier: dict[int, int] = {}
        #: every partition was idle at the end of the last tick (caught up)
        self.quiet = False
        #: each partition's newest event time (ns) as its last step reported it
        self.newest: dict[int, int] = {}
        self.durable = durable
        #: the stream was stopped into a durable checkpoint: the open windows live on there
        self.suspended = False
        #: partitions started from a durable checkpoint's state (``restored``)
        self.restored_partitions = 0
        if restored is not None:
            self._snapshots = {int(p): snap for p, snap in restored["partitions"].items()}
            self.restored_partitions = len(self._snapshots)
        # messages read by partition since the last look at the workers, and smoothed
        self._recent: dict[int, int] = {}
        self._load: dict[int, float] = {}
        # each partition's backlog (messages not read yet) as its step last reported it,
        # less what it read since: the per-tick quotas share a backlog out (``_quotas``)
        self._lags: dict[int, int] = {}
        #: the partitions not read in the last tick: more than the source's ``max_drift``
        #: ahead of the frontier (the broker keeps their messages meanwhile)
        self.held: set[int] = set()
        # the Params the workers' copies use, their current values, and our watchers
        self._params: list[Param] = []
        self._param_values: tuple[Any, ...] = ()
        self._unwatch: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return (f"<ClusterRunner {self.source.name!r} x{self.partitions} partitions, "
                f"{len(self.splits)} split node(s)>")

    # -- connection ----------------------------------------------------------------------
    async def _connect(self) -> Any:
        distributed = _require_distributed()
        cluster = self.cluster
        if isinstance(cluster, str) and cluster.startswith("local:"):
            cluster = int(cluster.split(":", 1)[1])
        if isinstance(cluster, int) and not isinstance(cluster, bool):
            if cluster < 1:
                msg = f"a local cluster needs at least 1 worker; got {cluster}"
                raise ConfigError(msg)
            self._own_cluster = await distributed.LocalCluster(
                n_workers=cluster, threads_per_worker=1, processes=True, asynchronous=True,
                host="127.0.0.1", dashboard_address="127.0.0.1:0")
            address = self._own_cluster.scheduler_address
        elif isinstance(cluster, str):
            address = cluster
        elif isinstance(cluster, distributed.Client):
            address = cluster.scheduler.address
        elif hasattr(cluster, "scheduler_address"):
            address = cluster.scheduler_address
        else:
            msg = (f"cluster= takes a dask.distributed cluster or Client, a scheduler address "
                   f"or 'local:N'; got {type(cluster).__name__}")
            raise ConfigError(msg)
        client = await distributed.Client(address, asynchronous=True,
                                          name=f"rtnb-{self.source.name}")
        self.dashboard_link = client.dashboard_link
        from rtnb.distributed._plugin import LeaseKeeper

        await client.register_plugin(LeaseKeeper())
        return client

    # -- the run -------------------------------------------------------------------------
    async def run(self, frame: StreamingFrame, stop: asyncio.Event) -> None:
        """Run until ``stop`` (or ``max_events``); every window closes at the end."""
        client = await self._connect()
        try:
            await self._start(client)
            await self._loop(client, stop)
        finally:
            for unwatch in self._unwatch:
                unwatch()
            self._unwatch = []
            if self._leases:
                closing = [client.submit(release_task, lease, pure=False,
                                         workers=[self.workers[p]])
                           for p, lease in self._leases.items()]
                try:
                    await asyncio.wait_for(client.gather(closing, errors="skip"), 10)
                except Exception as exc:  # the run's own error matters more
                    log.warning("closing the partitions' connections failed: %s", exc)
            await client.close()
            if self._own_cluster is not None:
                await self._own_cluster.close()
            self.source.stats.connected = False

    async def _live_workers(self, client: Any) -> list[str]:
        """The workers the scheduler knows now (waits up to a minute for one)."""
        info = await client.scheduler.identity()
        workers = sorted(info.get("workers", {}))
        if not workers:
            await client.wait_for_workers(1, timeout=60)
            workers = sorted((await client.scheduler.identity()).get("workers", {}))
        return workers

    async def _start(self, client: Any) -> None:
        src = self.source
        workers = await self._live_workers(client)
        plans = [SplitPlan(s.frame.name, s.prefix, None, s.merged,
                           getattr(s.frame.logic, "allowed_lateness_ns", 0))
                 for s in self.splits]
        logics = [s.frame.logic for s in self.splits]
        params: list[Param] = []
        try:
            _pickler(params).dumps((plans, logics))  # which Params the workers use
            self._blob = _pickler().dumps((plans, logics, params))
        except RtnbError:
            raise
        except Exception as exc:
            msg = (f"the pipeline of {src.name!r} cannot be sent to the Dask workers: "
                   f"{type(exc).__name__}: {exc}")
            raise ConfigError(msg) from exc
        self._watch_params(params)
        await self._install(client, {p: workers[p % len(workers)]
                                     for p in range(self.partitions)})
        src.stats.connected = True
        src.stats.started = _time.monotonic()

    def _watch_params(self, params: list[Param]) -> None:
        """Send the workers' Params' changes with the next steps; refuse the structural ones.

        A Param a split node reconfigures itself on (a window's size, a rolling window,
        an allowed lateness) would need every partition's engine rebuilt at the same
        event time: on a cluster a change of it is refused (the Param keeps its value).
        The others (a filter's threshold, a detector's) are read as each batch runs: the
        workers' copies take the new value from the next step of each partition.
        """
        split_frames = {id(s.frame) for s in self.splits}
        self._params = params
        self._param_values = tuple(p.value for p in params)

        def changed(param: Param, old: Any, new: Any) -> None:
            self._param_values = tuple(p.value for p in params)

        for param in params:
            owners = [getattr(w, "__self__", None) for w in param._watchers]
            nodes = [o.name for o in owners if o is not None and id(o) in split_frames]
            if nodes:
                def refuse(param: Param, old: Any, new: Any, nodes: list[str] = nodes) -> None:
                    msg = (f"Param {param.name!r} reconfigures {', '.join(map(repr, nodes))}, "
                           "which run on the Dask workers: it cannot change during a cluster "
                           f"run (it stays {old!r}); stop the run, set it, and start again")
                    raise ConfigError(msg)

                self._unwatch.append(param.watch(refuse))
            else:
                self._unwatch.append(param.watch(changed))

    def _lease(self, p: int, worker: str) -> str:
        """A new lease for partition ``p``'s task, which will live on ``worker``."""
        self._generation += 1
        lease = self._leases[p] = f"rtnb-{self._run}-{p}-{self._generation}"
        self.workers[p] = worker
        self.source.stats.partition_worker = {self._partition_name(q): w
                                              for q, w in sorted(self.workers.items())}
        return lease

    def _hold(self, p: int, future: Any) -> None:
        """Hold partition ``p``'s new lease; the one it replaces is released."""
        old = self._holds.get(p)
        self._holds[p] = future
        if old is not None:
            old.release()

    async def _install(self, client: Any, placed: dict[int, str]) -> None:
        """Create the partitions' tasks on their workers, each from its checkpoint if any.

        A partition whose worker is lost before its task is installed goes to another
        live worker (a few times at most: then the run fails, naming the partition).
        """
        src = self.source
        for attempt in range(5):
            installs = {}
            for p, worker in placed.items():
                lease = self._lease(p, worker)
                self._steps[p] = 0
                installs[p] = client.submit(
                    _install_task, lease, p, src.partition_reader(p),
                    src.partition_decoder(self.root.time), self.root.time, self._blob,
                    self._snapshots.get(p), self._handled.get(p),
                    self._handled_frontier.get(p, NO_WATERMARK),
                    key=lease, workers=[worker], allow_other_workers=False)
                self._hold(p, installs[p])
            _, lost = await self._settle(client, installs)
            if not lost:
                return
            if attempt < 4:
                workers = await self._live_workers(client)
                placed = {p: workers[p % len(workers)] for p in sorted(lost)}
        names = ", ".join(repr(self._partition_name(p)) for p in sorted(lost))
        msg = (f"source {src.name!r}: partitions {names} could not be started: their "
               "workers were lost 5 times in a row")
        raise SourceError(msg, source=src.name)

    def _partition_name(self, p: int) -> str:
        name = getattr(self.source, "partition_name", None)
        return str(name(p)) if name is not None else str(p)

    async def _loop(self, client: Any, stop: asyncio.Event) -> None:
        src, graph = self.source, self.root.graph
        idle_s = float(getattr(src, "idle_timeout_s", 5.0))
        # idleness: ``heard`` the last sign of life of each partition (rows, a re-read, a
        # broker error, or a tick it was not asked to read in), ``probed`` the start of its
        # latest step that was asked to read and brought nothing
        heard: dict[int, float] = {}
        probed: dict[int, float] = {}
        newest = self.newest
        final = False
        ack = True  # acknowledge what the last checkpoint covers (durable: once written)
        stopping = False  # durable: the last checkpoint is being taken, nothing is read
        last_checkpoint = last_look = _time.monotonic()
        placed_by_lag = False
        while not final:
            await graph.wait_running()
            now = _time.monotonic()
            # the first time every lag shows a backlog, the partitions are placed by it at once
            first_backlog = not placed_by_lag and self._paced() is not None
            if now - last_look >= 1.0 or first_backlog:
                # workers joined or left, or the partitions' loads changed: partitions move
                last_look = now
                placed_by_lag = placed_by_lag or first_backlog
                dropped = await self._rebalance(client)
                if dropped:  # a worker of a move was lost during it
                    await self._recover(client, {}, dropped)
                    for p in dropped:
                        heard.pop(p, None)
                        probed.pop(p, None)
            remaining = None if src.max_events is None else src.max_events - src.stats.events
            final = stop.is_set() or (remaining is not None and remaining <= 0)
            if final and self.durable is not None:
                # no flush: the open windows go into a last checkpoint, then the acks
                final, stopping = False, True
                if self.suspended:  # checkpointed; this tick acknowledges, then the end
                    final = True
            began = now
            quota = [0] * self.partitions if stopping else self._quotas(remaining)
            self.held = self._ahead(newest)
            for p in self.held:
                quota[p] = 0
            for p, q in enumerate(quota):
                if q == 0 and p in heard:
                    # not asked to read (held ahead, or no share of the last max_events):
                    # not silent either, it still counts in the frontier
                    heard[p] = now
            checkpoint = now - last_checkpoint >= self.checkpoint_s or \
                (stopping and not self.suspended)
            if checkpoint:
                last_checkpoint = now
            self.ticks += 1
            outs: dict[int, Any] = {}
            used = self.frontier
            for p in range(self.partitions):
                worker, number = self.workers[p], self._steps[p]
                self._steps[p] += 1
                outs[p] = client.submit(run_step, self._leases[p], number, used, quota[p],
                                        final and self.durable is None, checkpoint, ack,
                                        self._param_values, workers=[worker],
                                        allow_other_workers=False, pure=False)
            results, lost = await self._settle(client, outs)
            now = _time.monotonic()
            # windows merge once every partition's part of them is in: not in a tick where
            # a partition was lost or is still re-reading (their parts wait in the stash)
            complete = not lost and not any(out.replaying for out in results)
            read = self._handle(results, complete)
            if self.quiet and any(out.rows for out in results):
                # rows again after every partition went quiet: each partition gets a whole
                # idle_timeout from now to bring its part (a producer writes the partitions
                # one after the other; the first one read must not make the others' rows late)
                heard.update(dict.fromkeys(heard, now))
                probed.clear()
            for out in results:
                self._recent[out.partition] = self._recent.get(out.partition, 0) + out.read
                if out.lag is not None:
                    self._lags[out.partition] = out.lag
                elif out.partition in self._lags and not out.replaying:
                    self._lags[out.partition] = max(0, self._lags[out.partition] - out.read)
                # a partition that cannot reach its broker is not idle: its rows are unknown
                if out.rows or out.replaying or out.error is not None or \
                        out.partition not in heard:
                    heard[out.partition] = now
                elif quota[out.partition] > 0:
                    probed[out.partition] = began
                newest[out.partition] = out.max_time
                if not out.replaying:
                    # a re-reading step's position is behind what was handled, and it
                    # closed no window: a rebuild replays up to here, at this frontier
                    if out.position is not None:
                        self._handled[out.partition] = out.position
                    self._handled_frontier[out.partition] = used
                if out.snapshot is not None:
                    self._snapshots[out.partition] = out.snapshot
                    self.checkpoint_tick = self.ticks
            if self.durable is not None:
                ack = False
                if checkpoint and complete and len(results) == self.partitions and \
                        all(out.snapshot is not None for out in results):
                    # written: the next steps acknowledge what it covers; not written: the
                    # entries wait for the next one (a stop does not wait: the restart reads
                    # them again from the last checkpoint that was written)
                    ack = await self.durable({"partitions": dict(self._snapshots)})
                    if stopping:
                        self.suspended = True
            if lost:
                await self._recover(client, outs, lost)
                for p in lost:
                    heard.pop(p, None)  # not idle before its first step
                    probed.pop(p, None)
            if not complete:
                final = False  # rebuilt or catching-up partitions still have to finish
            self._advance(newest, heard, probed, idle_s)
            if not read and not final and not lost and not stopping:
                try:
                    await asyncio.wait_for(stop.wait(), self.tick_s)
                except TimeoutError:
                    pass
        if self.suspended:
            graph.suspend()  # the stream ends without the end-of-stream flush

    def _ahead(self, newest: dict[int, int]) -> set[int]:
        """The partitions more than the source's ``max_drift`` ahead of the frontier.

        They read nothing this tick, so that what the workers hold open (windows the
        frontier has not passed yet) stays bounded when one partition runs far ahead of the
        others in event time, as :meth:`BufferedSource._ahead` bounds it in one process.
        A held partition keeps counting as active (it is not silent): when the partitions
        behind it go idle, the frontier moves up to it and it reads again. Before the
        frontier is known (a partition not yet heard from, not idle yet), every partition
        that sent a row is ahead of it.
        """
        drift = getattr(self.source, "max_drift_ns", None)
        if drift is None:
            return set()
        if self.frontier == NO_WATERMARK:
            return {p for p, t in newest.items() if t != NO_WATERMARK}
        return {p for p, t in newest.items() if t - self.frontier > drift}

    #: share a backlog out by the partitions' lags (``_quotas``); off: every
    #: partition reads up to ``max_rows`` a tick
    pace = True

    def _paced(self) -> list[int] | None:
        """Each partition's share of a backlog (see ``_quotas``).

        ``None`` when the partitions are caught up, or a lag is not known yet.
        """
        lags = self._lags
        if not self.pace or len(lags) < self.partitions:
            return None
        top = max(lags.values())
        if top <= self.max_rows:
            return None
        floor = max(1, self.max_rows // 4)
        return [max(floor, -(-self.max_rows * lags[p] // top)) for p in range(self.partitions)]

    def _quotas(self, remaining: int | None) -> list[int]:
        """Messages each partition may read this tick.

        ``max_rows`` while the partitions are caught up. With a backlog (a partition more
        than ``max_rows`` behind, by the lags the steps report), the most behind partition
        reads ``max_rows`` and each other one its share in proportion to its lag (at least
        a quarter of ``max_rows``), so that the backlogs drain together: the same rows read
        in the same number of ticks, spread evenly over the ticks and so over the workers,
        and the partitions move through event time together (a partition with a small
        backlog does not run ahead of the frontier and then sit out the ticks that read the
        large ones alone). With ``max_events``, the rest is shared out so that a tick never
        reads past it (the odd ones rotate over the partitions).
        """
        lags = self._lags
        quota = self._paced() or [self.max_rows] * self.partitions
        if remaining is None:
            return quota
        remaining = max(0, remaining)
        n = self.partitions
        if not self.pace or remaining < n:
            # the odd ones rotate over the partitions: each is asked in turn, whatever the
            # lags say (a stale lag must not leave the last messages unread)
            share, odd = divmod(remaining, n)
            return [min(quota[p], share + ((p + self.ticks) % n < odd)) for p in range(n)]
        if sum(quota) <= remaining:
            return quota
        # one message each (every partition is asked, whatever the lags say), the rest in
        # proportion to the quotas, those of partitions with nothing left by their lags
        # weighing one message: the last rows are not read a few at a time
        weights = quota if len(lags) < n else \
            [min(q, max(1, lags[p])) for p, q in enumerate(quota)]
        total, rest = sum(weights), remaining - n
        shares = [min(q, 1 + w * rest // total) for q, w in zip(quota, weights, strict=True)]
        left = remaining - sum(shares)
        # the odd ones: to the partitions with the most left first, ties rotating
        order = sorted(range(n), key=lambda p: (-weights[p], (p - self.ticks) % n))
        for p in order:
            if left <= 0:
                break
            if shares[p] < quota[p]:
                shares[p] += 1
                left -= 1
        return shares

    async def _settle(self, client: Any, outs: dict[int, Any],
                      watch: dict[int, set[str]] | None = None) -> tuple[list[Any], set[int]]:
        """The partitions' task results, and the partitions whose worker was lost on the way.

        A task that raised fails the run (the error names the partition and its worker); a
        task whose worker died (the scheduler no longer has it, or Dask reports the task
        lost) is a lost partition, rebuilt from its checkpoint by :meth:`_recover`.
        ``watch``: the workers each partition's task needs (default: its own worker).
        """
        distributed = _require_distributed()
        src = self.source
        waiting = {p: asyncio.ensure_future(_result(fut)) for p, fut in outs.items()}
        results: list[StepOutput] = []
        lost: set[int] = set()
        try:
            while waiting:
                done, _ = await asyncio.wait(waiting.values(), timeout=0.5)
                for p, waiter in list(waiting.items()):
                    if waiter not in done:
                        continue
                    del waiting[p]
                    exc = None if waiter.cancelled() else waiter.exception()
                    if exc is None and not waiter.cancelled():
                        results.append(waiter.result())
                    elif waiter.cancelled() or isinstance(exc, _lost_errors(distributed)):
                        lost.add(p)
                    else:
                        msg = (f"source {src.name!r}: partition {self._partition_name(p)!r} "
                               f"failed on worker {self.workers[p]}: {type(exc).__name__}: "
                               f"{exc}")
                        raise SourceError(msg, source=src.name) from exc
                if waiting:
                    alive = set((await client.scheduler.identity()).get("workers", {}))
                    for p in list(waiting):
                        needed = {self.workers[p]} if watch is None else watch[p]
                        if not needed <= alive:
                            waiting.pop(p).cancel()
                            lost.add(p)
        finally:
            for waiter in waiting.values():
                waiter.cancel()
        return results, lost

    async def _recover(self, client: Any, outs: dict[int, Any], lost: set[int]) -> None:
        """Rebuild the lost partitions' tasks on live workers from their checkpoints.

        Each re-reads its unacknowledged entries (all of them since the checkpoint, which
        acknowledged what it covered): those up to the last position whose output this
        driver handled only rebuild the state; the rest is processed as new. A lost task
        still held by a live worker (a step refused as stale) is dropped there when its
        lease is released (``LeaseKeeper``, a worker plugin).
        """
        await client.cancel([outs[p] for p in lost if p in outs], force=True)
        workers = await self._live_workers(client)
        placed: dict[int, str] = {}
        for p in sorted(lost):
            gone = self.workers[p]
            placed[p] = worker = workers[p % len(workers)]
            self.recoveries += 1
            age = "no checkpoint yet: from the start" if p not in self._snapshots else \
                "its last checkpoint"
            log.warning("partition %r was lost with worker %s; rebuilt on %s from %s, "
                        "re-reading its unacknowledged entries", self._partition_name(p),
                        gone, worker, age)
        await self._install(client, placed)

    async def _rebalance(self, client: Any) -> set[int]:
        """Spread the partitions over the live workers by their load (Dask moves the tasks).

        A partition's load is its per-tick quota while the partitions work off a backlog
        (``_paced``: what it will read, known from the lags as soon as the first steps
        report them, so the first look places the partitions by backlog), else the messages
        it read lately (smoothed over the last looks); plus one, so idle partitions spread by
        count. Starting from where the partitions
        are, the busiest worker gives a partition to the least busy one while that lowers
        the busier of the two by at least a tenth: few moves (each ships the partition's
        state), no back and forth on noise; a worker that joins gets partitions, those of a
        lost worker were placed by :meth:`_recover` and are balanced from there. Returns
        the partitions whose move failed with a lost worker (to rebuild).
        """
        workers = await self._live_workers(client)
        for q, recent in self._recent.items():
            self._load[q] = 0.5 * self._load.get(q, recent) + 0.5 * recent
        self._recent = dict.fromkeys(range(self.partitions), 0)
        placed = {q: w for q, w in self.workers.items() if w in workers}  # lost: rebuilt next
        paced = self._paced()
        load = {q: (self._load.get(q, 0.0) if paced is None else paced[q]) + 1.0
                for q in placed}
        busy = dict.fromkeys(workers, 0.0)
        for q, w in placed.items():
            busy[w] += load[q]
        for _ in range(self.partitions):
            high = max(workers, key=lambda w: busy[w])
            low = min(workers, key=lambda w: busy[w])
            gap = busy[high] - busy[low]
            movable = [q for q, w in placed.items() if w == high and load[q] < gap]
            if not movable:
                break
            q = min(movable, key=lambda r: abs(load[r] - gap / 2))
            if busy[high] - max(busy[high] - load[q], busy[low] + load[q]) < 0.1 * busy[high]:
                break
            placed[q] = low
            busy[high] -= load[q]
            busy[low] += load[q]
        moves = {q: (self.workers[q], w) for q, w in placed.items() if w != self.workers[q]}
        if not moves:
            return set()
        # the old worker hands each task over, the new one adopts it under a new lease;
        # Dask ships it between them (its connection reopens on the new worker)
        adopted = {}
        for q, (old, new) in moves.items():
            exported = client.submit(export_task, self._leases[q], workers=[old],
                                     allow_other_workers=False, pure=False)
            lease = self._lease(q, new)
            adopted[q] = client.submit(adopt_task, exported, lease, key=lease,
                                       workers=[new], allow_other_workers=False)
        _, lost = await self._settle(client, adopted,
                                     watch={q: set(pair) for q, pair in moves.items()})
        for q, future in adopted.items():
            if q in lost:  # rebuilt by the caller
                future.release()
            else:  # the old lease goes only now: its task had to be exported first
                self._hold(q, future)
        return lost

    def _advance(self, newest: dict[int, int], heard: dict[int, float],
                 probed: dict[int, float], idle_s: float) -> None:
        """The frontier: the minimum newest event time over the partitions not idle.

        A partition is idle when a read of it that began at least ``idle_timeout`` after its
        last sign of life (``heard``) found nothing: the evidence is a read, not the clock,
        so slow ticks (a loaded machine, ticks longer than the timeout) do not make a
        partition with unread rows idle. One still starting (not heard from) holds the
        frontier. When every partition is idle (the sources are caught up), the minimum
        over those that ever sent a row: a partition never heard from holds nothing back
        once idle.
        """
        active = [p for p in range(self.partitions)
                  if p not in heard or probed.get(p, -math.inf) - heard[p] < idle_s]
        self.quiet = not active
        if not active:
            active = [p for p in range(self.partitions)
                      if newest.get(p, NO_WATERMARK) != NO_WATERMARK]
        if not active:
            return
        times = [newest.get(p, NO_WATERMARK) for p in active]
        if NO_WATERMARK in times:
            return
        frontier = min(times)
        if frontier > self.frontier:
            self.frontier = frontier
            for split in self.splits:
                if split.merged:
                    logic: Any = split.frame.logic
                    logic.advance_to(frontier - logic.allowed_lateness_ns)

    def _handle(self, results: list[StepOutput], complete: bool = True) -> int:
        """Dead letters, merged windows and rows into the driver's graph; returns rows read."""
        src, root = self.source, self.root
        stats = src.stats
        dead = [d for out in results for d in out.dead]
        if dead:
            stats.dead_letters += len(dead)
            root.dead_letter_messages([d[0] for d in dead], [d[1] for d in dead],
                                      [d[2] for d in dead], node=src.name)
        rows = sum(out.rows for out in results)
        read = sum(out.read for out in results)
        if rows:
            stats.events += rows
            stats.batches += 1
            root.counters.events += rows
            root.counters.batches += 1
        stats.messages += read
        counts = dict(stats.partition_messages or {})
        for out in results:
            name = self._partition_name(out.partition)
            counts[name] = counts.get(name, 0) + out.read
        stats.partition_messages = counts
        failing = {self._partition_name(out.partition): out.error for out in results
                   if out.error is not None}
        for out in results:
            if out.failed:
                stats.reconnects += 1
                log.warning("source %r: partition %r cannot reach its broker (%s); retrying",
                            src.name, self._partition_name(out.partition), out.error)
        if failing:
            stats.last_error = "; ".join(f"partition {name!r}: {error}"
                                         for name, error in failing.items())
        stats.connected = not failing
        lags = {self._partition_name(out.partition): out.lag for out in results
                if out.lag is not None}
        if lags:
            merged_lag = dict(stats.partition_lag or {})
            merged_lag.update(lags)
            stats.partition_lag = merged_lag
            stats.lag = sum(merged_lag.values())
        for split in self.splits:
            name = split.frame.name
            node = split.frame
            late = [out.late[name] for out in results if name in out.late]
            if late:
                late_rows = pd.concat(late, ignore_index=True)
                node.counters.late += len(late_rows)
                try:
                    late_out = node.late
                except AttributeError:
                    late_out = None
                if late_out is not None:
                    late_out.stream.emit(late_rows)
            parts = [out.outputs.get(name) for out in results]
            if split.merged:
                parts = self._stash.pop(name, []) + parts
                if not complete:
                    self._stash[name] = parts
                    continue
                logic: Any = node.logic
                out_rows = logic.merge_closed(parts)
            else:
                frames = [p for p in parts if p is not None and len(p)]
                out_rows = pd.concat(frames, ignore_index=True) if len(frames) > 1 else \
                    (frames[0] if frames else None)
            if out_rows is not None and len(out_rows):
                node.counters.batches += 1
                node.stream.emit(out_rows)
        return read


async def _result(future: Any) -> Any:
    return await future


def _lost_errors(distributed: Any) -> tuple[type[BaseException], ...]:
    """What Dask raises for a task whose worker died (not the task's own error)."""
    from distributed.comm.core import CommClosedError

    return (distributed.KilledWorker, CommClosedError, asyncio.CancelledError, StaleStep)


def _install_task(lease: str, partition: int, reader: Any, decode: Any, time: str | None,
                  blob: bytes, snapshot: dict[str, Any] | None, replay_until: Any,
                  replay_frontier: int) -> None:
    """Build a partition's task on its worker and keep it there under ``lease``.

    The splits' plans and logic copies are unpickled here, then :func:`make_task`.
    """
    import cloudpickle

    plans, logics, params = cloudpickle.loads(blob)
    for plan, logic in zip(plans, logics, strict=True):
        plan.logic = logic
    task = make_task(partition, reader, decode, time, plans, snapshot, replay_until,
                     replay_frontier)
    task.params = params
    install_task(lease, task)
