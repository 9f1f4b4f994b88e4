"""The runtime graph of a pipeline: its nodes and edges, lifecycle, flow control and hooks.

Every frame derived from one root shares one :class:`Graph` (``frame.graph``). Everything
that needs "the pipeline" (views, sinks, checkpoints, export, status, metrics) asks the graph
through the public methods below; nobody reads another object's private attributes.

- **Topology.** streamz edges carry the data; the graph keeps the nodes (for unique names and
  lookup) and each node's input (:meth:`Graph.inputs`), nothing else.
- **Lifecycle.** ``idle -> running <-> paused -> stopping -> stopped | finished | failed``.
  :meth:`Graph.start` runs the attached source as one supervised task on the running loop; a
  source that raises makes the graph ``failed``: the error is logged, kept in
  :attr:`Graph.error` and re-raised by :meth:`Graph.wait`.
- **Flow control.** Sources ``await graph.wait_running()`` before every batch; a sink that
  falls behind calls :meth:`Graph.press` and later :meth:`Graph.relieve`.
- **Hooks** (end of stream, what-if reset, views, sinks) return an :data:`Unsubscribe`
  handle: call it to undo the subscription.

Examples
--------
>>> import pandas as pd, rtnb
>>> sdf = rtnb.StreamingFrame(pd.DataFrame({"x": pd.Series([], dtype=float)}), name="nums")
>>> big = sdf[sdf["x"] > 1]
>>> graph = sdf.graph
>>> [n.name for n in graph.nodes], graph.state
(['nums', 'nums.filter[(x > 1)]'], 'idle')
>>> [n.name for n in graph.inputs(big)]
['nums']
>>> ended = []
>>> unsubscribe = graph.on_close(lambda: ended.append(True))
>>> sdf.close(); ended, graph.state
([True], 'finished')
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time as _time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast

if TYPE_CHECKING:
    from rtnb.frame import StatefulFrame, StreamingFrame

__all__ = ["START_HOOKS", "Graph", "GraphState", "Unsubscribe"]

log = logging.getLogger("rtnb")

#: Undo a subscription (a hook, a view, a sink); calling it twice does nothing.
Unsubscribe: TypeAlias = Callable[[], None]

GraphState: TypeAlias = Literal["idle", "running", "paused", "stopping", "stopped", "finished",
                                "failed"]


#: Called with a root frame just before its source starts (``rtnb export`` records and bounds
#: the pipelines a notebook runs through this).
START_HOOKS: list[Callable[[StreamingFrame], None]] = []


def _remover(items: list[Any], item: Any) -> Unsubscribe:
    def unsubscribe() -> None:
        for i, x in enumerate(items):
            if x is item:
                del items[i]
                return

    return unsubscribe



class SourceTask(asyncio.Task[None]):
    """The task ``start()`` returns: an :class:`asyncio.Task` that shows nothing in a notebook.

    As the last expression of a cell, ``src.start()`` would print ``<Task pending ...>``;
    this one displays nothing (the dashboard and status widget show the run). It is a task
    like any other: ``await`` it, ``cancel()`` it, ``done()``.
    """

    def _ipython_display_(self) -> None:
        return None


class Graph:
    """The runtime graph shared by every frame derived from one root (``frame.graph``).

    Built by the root frame; users reach it as ``frame.graph`` (or through
    :class:`rtnb.Pipeline`).
    """

    def __init__(self) -> None:
        self._names: set[str] = set()
        self._nodes: list[StreamingFrame] = []
        self._close_hooks: list[Callable[[], None]] = []
        self._reset_hooks: list[Callable[[StreamingFrame], None]] = []
        self._views: list[Any] = []
        self._sinks: list[Any] = []
        self._boards: list[Any] = []
        self._closed = False
        self._running: asyncio.Event | None = None
        self._pressure: set[Any] = set()
        self._relieved: asyncio.Event | None = None
        self._source: Any = None
        self._runner: Any = None
        self._failure: BaseException | None = None  # a sink's or another task's fatal error
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        #: ``time.monotonic()`` when the batch now flowing through the graph entered the root.
        self.batch_arrival: float = 0.0
        #: Seconds from a batch entering the root to a view sending it (latest 2,048 updates).
        self.latencies: deque[float] = deque(maxlen=2048)

    def __repr__(self) -> str:
        root = self._nodes[0].name if self._nodes else "?"
        return f"<Graph {root!r}: {len(self._nodes)} nodes, {self.state}>"

    # -- topology ---------------------------------------------------------------------------
    def unique(self, base: str) -> str:
        """Reserve and return ``base``, or ``base_2``, ``base_3`` ... if it is taken."""
        if base not in self._names:
            self._names.add(base)
            return base
        for i in itertools.count(2):
            name = f"{base}_{i}"
            if name not in self._names:
                self._names.add(name)
                return name
        raise AssertionError  # pragma: no cover

    def release(self, name: str) -> None:
        """Give a reserved name back (a node that will register under it next)."""
        self._names.discard(name)

    def add(self, node: StreamingFrame) -> None:
        """Register a node (frames do this when they are built)."""
        self._nodes.append(node)

    @property
    def nodes(self) -> tuple[StreamingFrame, ...]:
        """Every node, in the order built (the root first), side outputs included."""
        return tuple(self._nodes)

    @property
    def root(self) -> StreamingFrame:
        """The node batches are emitted into."""
        return self._nodes[0]

    def node(self, name: str) -> StreamingFrame:
        """The node called ``name`` (``KeyError`` naming the nodes there are)."""
        for node in self._nodes:
            if node.name == name:
                return node
        msg = f"no node {name!r}; nodes: {[n.name for n in self._nodes]}"
        raise KeyError(msg)

    def inputs(self, node: StreamingFrame) -> list[StreamingFrame]:
        """The nodes ``node`` is computed from."""
        parent = node.parent
        return [] if parent is None else [parent]

    def outputs(self, node: StreamingFrame) -> list[StreamingFrame]:
        """The nodes computed from ``node``."""
        return [n for n in self._nodes if n.parent is node]

    def edges(self) -> list[tuple[str, str]]:
        """``(input name, node name)`` for every edge."""
        return [(n.parent.name, n.name) for n in self._nodes if n.parent is not None]

    def stateful(self) -> Iterator[StatefulFrame]:
        """The nodes that hold state between batches (what a checkpoint saves)."""
        return (cast("StatefulFrame", n) for n in self._nodes if n.stateful)

    # -- the source and the lifecycle -----------------------------------------------------------
    @property
    def source(self) -> Any:
        """The source feeding the root (``None`` for a frame fed with ``emit()``)."""
        return self._source

    def attach_source(self, source: Any) -> None:
        """Feed the root from ``source`` (sources call it when they build their frame)."""
        self._source = source

    @property
    def state(self) -> GraphState:
        """``idle``, ``running``, ``paused``, ``stopping``, ``stopped``, ``finished`` or ``failed``.

        ``failed``: the source raised; the error is :attr:`error`.
        """
        task = self._task
        if self._failure is not None and (task is None or task.done()):
            return "failed"
        if task is None:
            return "finished" if self._closed else "idle"
        if not task.done():
            if self._stop is not None and self._stop.is_set():
                return "stopping"
            return "paused" if self.paused else "running"
        if task.cancelled():
            return "stopped"
        if self.error is not None:
            return "failed"
        return "stopped" if self._stop is not None and self._stop.is_set() else "finished"

    @property
    def error(self) -> BaseException | None:
        """The error that stopped the source (state ``failed``), else ``None``."""
        if self._failure is not None:
            return self._failure
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    @property
    def running(self) -> bool:
        """Whether the source's task is running (paused counts as running)."""
        return self._task is not None and not self._task.done()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task running the source (``None`` before :meth:`start`)."""
        return self._task

    @property
    def runner(self) -> Any:
        """What runs the source now (``None`` before a start).

        The source itself, or the runner ``start`` was given: a
        :class:`rtnb.distributed.ClusterRunner` on a cluster.
        """
        return self._runner

    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`stop` was called for the current run."""
        return self._stop is not None and self._stop.is_set()

    def start(self, *, runner: Any = None) -> asyncio.Task[None]:
        """Run the source as a supervised task on the running loop; see ``frame.start()``.

        ``runner``: what runs the source instead of its own ``run(frame, stop)`` (an object
        with that method: :class:`rtnb.distributed.ClusterRunner` runs it on a cluster).
        """
        from rtnb.errors import RtnbError

        root = self.root
        if self._source is None:
            msg = f"frame {root.name!r} has no source to start; feed it with emit()"
            raise RtnbError(msg)
        if self.running:
            msg = f"the source of frame {root.name!r} is already running"
            raise RtnbError(msg)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            msg = ("start() needs a running event loop (as in a notebook); in a script call "
                   f"{root.name}.run() instead")
            raise RtnbError(msg) from None
        for hook in list(START_HOOKS):
            hook(root)
        self._stop = asyncio.Event()
        self._runner = runner if runner is not None else self._source
        self._task = SourceTask(self._run_source(), loop=loop, name=f"rtnb:{root.name}")
        self._task.add_done_callback(self._supervise)
        return self._task

    async def _run_source(self) -> None:
        assert self._source is not None and self._stop is not None
        try:
            await self._runner.run(self.root, self._stop)
        finally:
            self.close()

    def _supervise(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("source of %r failed: %s: %s", self.root.name, type(exc).__name__, exc)

    def fail(self, error: BaseException, *, where: str) -> None:
        """A task of the pipeline other than the source (a sink's writer) died of ``error``.

        The source is stopped, the state becomes ``failed``, the error is logged and
        :meth:`wait` re-raises it: no silent stall.
        """
        if self._failure is None:
            self._failure = error
            log.error("%s failed: %s: %s", where, type(error).__name__, error)
        self.stop()

    def stop(self) -> None:
        """Ask the running source to stop after its current batch (the stream then ends)."""
        if self._stop is not None:
            self._stop.set()
        self.resume()  # a paused source must wake up to see the stop

    async def wait(self) -> None:
        """Wait until the source has finished (re-raises its error), then drain views/sinks."""
        from rtnb.errors import RtnbError

        if self._task is None:
            msg = f"the source of frame {self.root.name!r} was not started; call start() first"
            raise RtnbError(msg)
        await asyncio.shield(self._task)
        # Let live views send the last windows, and sinks deliver them, before returning.
        for view in list(self._views):
            await view.drain()
        for sink in list(self._sinks):
            if self._failure is not None:
                break
            await sink.flush()
        if self._failure is not None:
            raise self._failure

    @property
    def paused(self) -> bool:
        """Whether the source is paused."""
        return self._running is not None and not self._running.is_set()

    def pause(self) -> None:
        """Hold the source between batches (windows, views and Params keep working)."""
        if self._running is None:
            self._running = asyncio.Event()
        self._running.clear()

    def resume(self) -> None:
        """Let a paused source go on."""
        if self._running is not None:
            self._running.set()

    @property
    def closed(self) -> bool:
        """Whether the stream has ended (or was suspended for a checkpoint)."""
        return self._closed

    def suspend(self) -> None:
        """End the stream *without* the end-of-stream flush.

        A checkpoint keeps the open windows and pending rows; the run resumed from it emits
        them.
        """
        self._closed = True

    def close(self) -> None:
        """End of stream: every close hook runs once (windows flush); closing twice is a no-op."""
        if self._closed:
            return
        self._closed = True
        self.batch_arrival = _time.monotonic()  # what the end of stream emits is new now
        for hook in list(self._close_hooks):
            hook()

    def dispose(self) -> None:
        """Forget the source and every hook: a graph built only to be inspected, never run."""
        self._close_hooks.clear()
        self._reset_hooks.clear()
        self._source = None

    # -- flow control ---------------------------------------------------------------------------
    @property
    def pressure(self) -> frozenset[Any]:
        """The sinks that are behind (over their queue's high-water mark)."""
        return frozenset(self._pressure)

    async def wait_running(self) -> None:
        """Return at once unless paused or a sink is behind; else when that is over.

        Sources call it before every batch: this is how a slow sink pauses them.
        """
        while True:
            if self._running is not None and not self._running.is_set():
                await self._running.wait()
                continue
            if self._pressure:
                if self._relieved is None:
                    self._relieved = asyncio.Event()
                self._relieved.clear()
                await self._relieved.wait()
                continue
            return

    def press(self, who: Any) -> None:
        """``who`` (a sink) is behind: sources wait before their next batch."""
        self._pressure.add(who)

    def relieve(self, who: Any) -> None:
        """``who`` caught up."""
        self._pressure.discard(who)
        if not self._pressure and self._relieved is not None:
            self._relieved.set()

    # -- hooks and members ------------------------------------------------------------------------
    def on_close(self, hook: Callable[[], None]) -> Unsubscribe:
        """Call ``hook()`` at the end of the stream (before the end is visible downstream)."""
        self._close_hooks.append(hook)
        return _remover(self._close_hooks, hook)

    def on_reset(self, hook: Callable[[StreamingFrame], None]) -> Unsubscribe:
        """Call ``hook(node)`` before ``node`` re-emits its whole output (a what-if)."""
        self._reset_hooks.append(hook)
        return _remover(self._reset_hooks, hook)

    def reset(self, node: StreamingFrame) -> None:
        """Tell the subscribers that ``node`` is about to re-emit its whole output."""
        for hook in list(self._reset_hooks):
            hook(node)

    def add_view(self, view: Any) -> Unsubscribe:
        """Register a live view (drained by :meth:`wait`, counted by metrics)."""
        self._views.append(view)
        return _remover(self._views, view)

    @property
    def views(self) -> tuple[Any, ...]:
        """The live views drawn from this graph's nodes."""
        return tuple(self._views)

    def add_sink(self, sink: Any) -> Unsubscribe:
        """Register a sink (flushed by :meth:`wait`, exported with the pipeline)."""
        self._sinks.append(sink)
        return _remover(self._sinks, sink)

    @property
    def sinks(self) -> tuple[Any, ...]:
        """The sinks attached to this graph's nodes."""
        return tuple(self._sinks)

    def add_board(self, board: Any) -> Unsubscribe:
        """Remember a dashboard built from this graph's views (an export serves the last)."""
        self._boards.append(board)
        return _remover(self._boards, board)

    @property
    def boards(self) -> tuple[Any, ...]:
        """Dashboards built from this graph's views."""
        return tuple(self._boards)

    def record_latency(self, seconds: float) -> None:
        """A view sent rows ``seconds`` after their batch entered the root."""
        self.latencies.append(seconds)
