"""Kernel side of the live-view benchmark (``bench/views.py``); also the naive view it compares.

``bench/views.py`` starts an ipykernel and executes ``import _views_kernel as vk;
vk.start(...)`` in it. :func:`start` builds a ``StreamingFrame``, two views of it (one line, and
one line per key of 12 hosts), displays both (which opens their widget comms) and starts a
time-paced feeder task on the kernel's running loop; the cell returns at once and the kernel
stays free. :func:`snapshot` reports the kernel-side counters as JSON (read through
``user_expressions``), :func:`stop` ends the feed.

The views are either rtnb's (``sdf.plot.line``: deltas through ``cds.stream``) or
:class:`NaiveView`: a plain ``jupyter_bokeh.BokehModel`` whose ``ColumnDataSource.data`` is
replaced with the whole visible history of each changed line at every update, at the same pace
(``max_fps``) and with the same number of points kept (``rollover``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import traceback
from typing import Any

import numpy as np
import pandas as pd
from bokeh.models import ColumnDataSource
from bokeh.palettes import Category20_20
from bokeh.plotting import figure
from jupyter_bokeh import BokehModel

import rtnb

N_KEYS = 12
HOSTS = np.array([f"host-{i:02d}" for i in range(N_KEYS)])
T0 = pd.Timestamp("2026-01-01").value  # ns
POOL_BATCHES = 64  # the feeder cycles through this many batches' worth of hosts and values
LATE_S = 0.1  # a batch emitted this much after it was due counts as late


def example() -> pd.DataFrame:
    """The schema of the feed: event time, host (12 keys), cpu."""
    return pd.DataFrame({
        "t": pd.Series([], dtype="datetime64[ns]"),
        "host": pd.Series([], dtype=str),
        "cpu": pd.Series([], dtype="float64"),
    })


class Feeder:
    """Emit ``rate`` synthetic events per second into ``frame`` in ``batch_rows``-row batches.

    Time-paced on the running loop: batch ``k`` is due ``k * batch_rows / rate`` seconds after
    the start; a feeder that falls behind catches up (at most 10 batches before it yields to the
    loop), so the achieved rate shows whether the kernel kept up. Event time advances at
    ``rate`` events per second, at irregular (random) instants; hosts (12, uniform), values and
    time offsets cycle through a pre-generated pool, so generating a batch costs only the
    DataFrame construction.
    """

    def __init__(self, frame: rtnb.StreamingFrame, *, rate: float, batch_rows: int,
                 seed: int = 0) -> None:
        self.frame = frame
        self.rate = rate
        self.batch_rows = batch_rows
        self.period = batch_rows / rate
        rng = np.random.default_rng(seed)
        pool = POOL_BATCHES * batch_rows
        self._hosts = pd.array(HOSTS[rng.integers(0, N_KEYS, pool)], dtype=str)
        self._cpu = rng.normal(50.0, 15.0, pool)
        # event time: a batch spans batch_rows / rate seconds; the rows fall at random
        # (sorted) instants inside it, so times are irregular as in a real feed
        span = round(batch_rows / rate * 1e9)
        self._offsets = np.sort(rng.integers(0, span, (POOL_BATCHES, batch_rows)), axis=1)
        self._span = span
        self.events = 0
        self.batches = 0
        self.max_behind = 0  # most batches overdue at one time
        self.late = 0  # batches emitted more than LATE_S after they were due
        self.started = 0.0
        self.stopped = False

    def next_batch(self) -> pd.DataFrame:
        """The next batch (counted as fed, not emitted)."""
        n = self.batch_rows
        k = self.batches % POOL_BATCHES
        at = k * n
        ts = T0 + self.batches * self._span + self._offsets[k]
        self.batches += 1
        self.events += n
        return pd.DataFrame({"t": ts.view("datetime64[ns]"),
                             "host": self._hosts[at:at + n],
                             "cpu": self._cpu[at:at + n]})

    async def run(self, max_seconds: float) -> None:
        """Feed until :meth:`stop` or ``max_seconds`` (a guard; the client stops it first)."""
        self.started = time.monotonic()
        while not self.stopped:
            elapsed = time.monotonic() - self.started
            if elapsed > max_seconds:
                return
            due = int(elapsed / self.period) + 1
            self.max_behind = max(self.max_behind, due - self.batches - 1)
            for _ in range(min(due - self.batches, 10)):
                if elapsed - self.batches * self.period > LATE_S:
                    self.late += 1
                self.frame.emit(self.next_batch())
            wait = self.started + self.batches * self.period - time.monotonic()
            await asyncio.sleep(max(wait, 0.0))

    def stop(self) -> None:
        """End the feed at the next step."""
        self.stopped = True


class NaiveView:
    """The naive live plot: every update replaces each changed line's ``source.data``.

    One ``ColumnDataSource`` per key (as rtnb's ``LineView``), shown by a plain
    ``jupyter_bokeh.BokehModel`` (which sends numpy arrays as binary buffers). Rows received
    since the last update are appended to the line's history, the history is cut to the last
    ``rollover`` points, and ``source.data = {"x": history_x, "y": history_y}`` sends all of it.
    With a running loop a task updates it every ``1 / max_fps`` s, as rtnb's views; without
    one, call :meth:`flush`.
    """

    def __init__(self, frame: rtnb.StreamingFrame | None, *, x: str, y: str,
                 by: str | None = None, rollover: int = 1_000, max_fps: float = 10.0) -> None:
        self.x, self.y, self.by = x, y, by
        self.rollover = rollover
        self.max_fps = max_fps
        self.figure = figure(x_axis_type="datetime", height=320, sizing_mode="stretch_width",
                             tools="pan,wheel_zoom,box_zoom,reset,save",
                             output_backend="canvas")
        self.sources: dict[Any, ColumnDataSource] = {}
        self.history: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
        self.pending: list[pd.DataFrame] = []
        self.updates = 0
        self.replacements = 0  # data assignments: one PATCH-DOC each
        self.widget = BokehModel(self.figure)
        self._task: asyncio.Task[None] | None = None
        if frame is not None:
            frame.sink(self.on_batch)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._task = loop.create_task(self._pump(), name="naive-view")

    def on_batch(self, batch: pd.DataFrame) -> None:
        """Keep a batch for the next update."""
        self.pending.append(batch[[self.x, self.y, *([self.by] if self.by else [])]])

    async def _pump(self) -> None:
        while True:
            await asyncio.sleep(1 / self.max_fps)
            self.flush()

    def flush(self) -> None:
        """Replace the data of every line that got rows since the last update."""
        if not self.pending:
            return
        data = pd.concat(self.pending, ignore_index=True) if len(self.pending) > 1 \
            else self.pending[0]
        self.pending = []
        groups: Any = [(self.y, data)] if self.by is None else data.groupby(self.by, sort=False)
        for key, rows in groups:
            empty = np.array([], dtype=np.float64)
            old_x, old_y = self.history.get(key, (empty.astype("datetime64[ns]"), empty))
            hist_x = np.concatenate([old_x, rows[self.x].to_numpy()])[-self.rollover:]
            hist_y = np.concatenate([old_y, rows[self.y].to_numpy(dtype=np.float64)]
                                    )[-self.rollover:]
            self.history[key] = (hist_x, hist_y)
            source = self.sources.get(key)
            if source is None:
                source = ColumnDataSource({"x": hist_x[:0], "y": hist_y[:0]})
                color = Category20_20[len(self.sources) % 20]
                self.figure.line("x", "y", source=source, color=color, legend_label=str(key))
                self.sources[key] = source
            source.data = {"x": hist_x, "y": hist_y}
            self.replacements += 1
        self.updates += 1

    def close(self) -> None:
        """Stop updating and close the widget."""
        if self._task is not None:
            self._task.cancel()
        self.widget.close()


# -- the state of the run in the kernel ------------------------------------------------------
STATE: dict[str, Any] = {}


def _keep_error(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        STATE["error"] = "".join(traceback.format_exception(exc))


def _time_updates(name: str, view: Any) -> None:
    """Record how long each update of ``view`` takes on the kernel's loop (instance wrapper).

    rtnb's views are updated by their scheduler through ``_flush(now)`` (``flush()`` calls
    it too); the naive view through ``flush()``.
    """
    attr = "_flush" if hasattr(view, "_flush") else "flush"
    flush = getattr(view, attr)
    durations: list[float] = STATE.setdefault("update_ms", {}).setdefault(name, [])

    def timed_flush(*args: Any) -> None:
        before = view.updates
        start = time.perf_counter()
        flush(*args)
        if view.updates != before:
            durations.append((time.perf_counter() - start) * 1e3)

    setattr(view, attr, timed_flush)


def report_page_fix(model: Any, how: str) -> None:
    """Set ``PageAck.fixed`` as a page does: a change coming from the page (not echoed)."""
    event = {"event": "jsevent", "kind": "ModelChanged", "model": {"id": model.ack.id},
             "attr": "fixed", "new": how}
    model._sync_model(model, event, [])


def start(kind: str, *, rate: float = 100_000, batch_rows: int = 1_000, rollover: int = 1_000,
          max_fps: float = 10.0, max_seconds: float = 3_600.0, page_fix: str = "") -> str:
    """Build the feed and its two views (``kind``: ``"rtnb"`` or ``"naive"``), display them
    and start feeding on the running loop; return :func:`snapshot`.

    ``page_fix``: what the rtnb views are told a page reported (``PageAck.fixed``; no page
    runs here).
    """
    from IPython.display import display

    sdf = rtnb.StreamingFrame(example(), time="t", name="feed")
    views: dict[str, Any] = {}
    if kind == "rtnb":
        views["one line"] = sdf.plot.line(x="t", y="cpu", rollover=rollover, max_fps=max_fps)
        views["12 keys"] = sdf.plot.line(x="t", y="cpu", by="host", rollover=rollover,
                                         max_fps=max_fps)
        for view in views.values():
            display(view)  # type: ignore[no-untyped-call]
            report_page_fix(view.model, page_fix)
    elif kind == "naive":
        from bokeh.io import output_notebook
        from bokeh.resources import INLINE

        output_notebook(INLINE, hide_banner=True)
        views["one line"] = NaiveView(sdf, x="t", y="cpu", rollover=rollover, max_fps=max_fps)
        views["12 keys"] = NaiveView(sdf, x="t", y="cpu", by="host", rollover=rollover,
                                     max_fps=max_fps)
        for view in views.values():
            display(view.widget)  # type: ignore[no-untyped-call]
    else:
        msg = f"kind must be 'rtnb' or 'naive'; got {kind!r}"
        raise ValueError(msg)
    STATE["update_ms"] = {}
    for name, view in views.items():
        _time_updates(name, view)
    feeder = Feeder(sdf, rate=rate, batch_rows=batch_rows)
    task = asyncio.get_running_loop().create_task(feeder.run(max_seconds), name="bench-feed")
    task.add_done_callback(_keep_error)
    STATE.update(kind=kind, frame=sdf, views=views, feeder=feeder, task=task, error=None)
    return snapshot()


def snapshot(reset_peak: bool = False) -> str:
    """Kernel-side counters as JSON: feed, views (updates, messages, bytes, comm ids).

    ``max_behind`` (most batches the feeder was overdue) and the update durations cover the
    time since the start or since the last ``snapshot(reset_peak=True)``; ``late`` counts
    batches emitted more than ``LATE_S`` after they were due, since the start.
    """
    feeder: Feeder = STATE["feeder"]
    views: dict[str, Any] = {}
    for name, view in STATE["views"].items():
        took = STATE["update_ms"][name]
        timing = {"update_ms_p50": float(np.percentile(took, 50)) if took else None,
                  "update_ms_p99": float(np.percentile(took, 99)) if took else None,
                  "update_ms_max": max(took, default=None)}
        if reset_peak:
            took.clear()
        if STATE["kind"] == "rtnb":
            model = view.model
            views[name] = {"updates": view.updates, "patch_docs": model.messages_sent,
                           "comm_messages": model.comm_messages_sent,
                           "payload_bytes": model.bytes_sent, "rows_sent": view.rows_sent,
                           "lines": len(view.sources), "comm_id": model.comm.comm_id,
                           **timing}
        else:
            views[name] = {"updates": view.updates, "patch_docs": view.replacements,
                           "lines": len(view.sources), "comm_id": view.widget.comm.comm_id,
                           **timing}
    out = json.dumps({
        "time": time.time(), "pid": os.getpid(), "python": sys.executable,
        "events": feeder.events, "batches": feeder.batches, "max_behind": feeder.max_behind,
        "late": feeder.late,
        "batch_period": feeder.period, "views": views, "error": STATE.get("error"),
    })
    if reset_peak:
        feeder.max_behind = 0
    return out


def stop() -> str:
    """Stop the feed and the views; return the last :func:`snapshot`."""
    STATE["feeder"].stop()
    last = snapshot()
    for view in STATE["views"].values():
        view.close()
    return last
