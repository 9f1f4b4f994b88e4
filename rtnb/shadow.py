"""Shadow replays (Kappa): run the pipeline again with other Params, diff, promote.

:meth:`rtnb.Pipeline.replay` builds two copies of a pipeline from its recorded calls (the
code :meth:`~rtnb.Pipeline.export` writes, without sinks): a *baseline* at the live Params
and a *shadow* with the new values. Both are fed the same batches of the retained log, so
:meth:`ShadowRun.diff` compares like with like: which windows and alert transitions the new
settings add, remove or change. :meth:`ShadowRun.promote` then switches the live pipeline to
the new settings at a barrier between two batches. :meth:`ShadowRun.plot` draws the diff:
both runs of each window node (a line per key and run) and of each alert node (the
transitions per key) on one time axis, the added, removed and changed windows and
transitions marked (a :class:`rtnb.viz.DiffPlot`: Bokeh, loaded when it is called).

What the log is
    A :class:`~rtnb.pipeline.Recording` of the live pipeline (its input batches as they
    arrived), a folder or Parquet file recorded with ``Recording.save`` (``--output`` /
    ``--record``), a finite rtnb source frame (a broker stream from a position, bounded by
    ``max_events``), or by default the pipeline's own source rebuilt (a file or DataFrame
    replay reads its data again). ``since`` keeps the rows whose event time is at most that
    far before the newest event of the log (the same rows for both copies: a window that
    straddles the cut holds only its rows from the cut on, in both).

The end of the log
    When the log is complete (a file, a saved recording, a source that ended, or the
    Recording of a live run that has ended) both copies flush at its end, as a run that
    reaches the end of its source does: every window is in the diff. When the log is the
    Recording of a live run still going, the copies are left open, like the live run:
    the diff holds the windows that closed (by the watermark) within the replayed span,
    and :meth:`ShadowRun.promote` can take over from there.

The live output
    The baseline copy *is* the live output over the replayed span: the same graph, Params
    and batches (export parity, tested for every notebook). Comparing two copies rather than
    the live sinks' rows keeps the diff exact when the live run started before the span or
    had its Params moved meanwhile.

Promotion (:meth:`ShadowRun.promote`)
    The barrier is a point between two live batches (where a checkpoint is taken): no batch
    enters the live pipeline while it runs. The shadow first catches up with the batches
    the live run read since the replay ended; then the live Params take the new values
    (without the reconfiguration's own output) and every stateful node of the live pipeline
    takes the shadow's state. So:

    * outputs emitted before the barrier came from the old settings and stay as they were
      (nothing is re-emitted);
    * everything emitted after it is what a run with the new settings from the start of the
      log emits after that point: the live output equals the old run up to the barrier
      followed by the new run after it, batch for batch;
    * a window open at the barrier (not yet emitted) is emitted once, when it closes, with
      the new settings over all its rows, those before the barrier included; a window the
      new settings would have closed before the barrier (a shorter size) and the old
      settings had not emitted yet is not emitted (the new run emitted it before the
      barrier); every window of the new run whose end is after the barrier's watermark is
      emitted exactly once;
    * an alert continues from the new run's state per key: a key firing under the old
      settings and inactive under the new ones gets no ``resolved`` (the new run never
      fired it). :meth:`~ShadowRun.promote` returns those keys (old and new state) so
      nothing changes silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import pickle
import re
import runpy
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rtnb._time import format_duration, shown, to_timedelta
from rtnb.errors import ConfigError, ExportError, RtnbError

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame
    from rtnb.pipeline import Pipeline, Recording
    from rtnb.viz import DiffPlot

__all__ = ["Promotion", "ShadowRun", "cli", "diff_rows", "format_diff"]

log = logging.getLogger(__name__)

#: Columns of the alert transitions besides the ``by`` keys (see :func:`rtnb.alert`).
_ALERT_KEYS = ("time", "state")
_ALERT_VALUES = ("started", "value")


@dataclass(frozen=True)
class _Output:
    """A node whose rows the diff compares: its kind, identifying columns and values."""

    name: str
    kind: str  # "window" or "alert"
    keys: tuple[str, ...]
    values: tuple[str, ...]
    update: bool = False  # emit="update": a row is re-sent with new values, the last counts


@dataclass
class Promotion:
    """What :meth:`ShadowRun.promote` did.

    Attributes
    ----------
    params
        The Params it set on the live pipeline (name -> new value).
    batches
        Live input batches before the barrier (all of them with the old settings).
    caught_up
        Of those, the batches the shadow read at the barrier (after its replay ended).
    alerts
        Alert keys whose state at the barrier differs between the old and the new settings
        (``node``, the ``by`` keys, ``old_state``, ``new_state``): the new state holds from
        the barrier on, and no transition is emitted for the switch itself.
    """

    params: dict[str, Any]
    batches: int
    caught_up: int
    alerts: pd.DataFrame = field(repr=False)


class ShadowRun:
    """A shadow copy of a pipeline replayed with other Params (see :mod:`rtnb.shadow`).

    Built by :meth:`rtnb.Pipeline.replay`. In a notebook the replay runs as a task on the
    kernel's loop and yields after every batch; ``await shadow.wait()``. In a script,
    :meth:`run` blocks until it is done.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> events = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=6,
    ...                                                   freq="20s"),
    ...                        "cpu": [10.0, 50.0, 95.0, 97.0, 40.0, 30.0]})
    >>> src = rtnb.sources.replay(events, name="events", batch_size=2)
    >>> size = rtnb.Param("1min", min="10s", max="10min", name="size")
    >>> cpu = src.window(rtnb.tumbling(size)).agg(cpu=("cpu", "mean"))
    >>> shadow = rtnb.Pipeline(cpu).replay({"size": "2min"})
    >>> shadow.run()
    >>> shadow.diff()[["change", "window_start", "window_end", "old_cpu", "new_cpu"]].round(
    ...     {"old_cpu": 1, "new_cpu": 1})
        change        window_start          window_end  old_cpu  new_cpu
    0  removed 2026-01-01 00:00:00 2026-01-01 00:01:00     51.7      NaN
    1    added 2026-01-01 00:00:00 2026-01-01 00:02:00      NaN     53.7
    2  removed 2026-01-01 00:01:00 2026-01-01 00:02:00     55.7      NaN
    """

    def __init__(self, pipeline: Pipeline, params: Mapping[str, Any], *, since: Any = None,
                 source: Any = None, max_events: int | None = None) -> None:
        from rtnb.recording import Recording

        self.pipeline = pipeline
        known = {p.name: p for p in pipeline.params}
        self.params: dict[str, Any] = {}
        for name, value in params.items():
            if name not in known:
                msg = (f"replay(params=...): pipeline {pipeline.name!r} has no Param "
                       f"{name!r}; its Params: {sorted(known) or 'none'}")
                raise ConfigError(msg)
            try:
                self.params[name] = known[name].validate(value)
            except ConfigError as exc:
                msg = f"replay(params=...): {exc}"
                raise ConfigError(msg) from None
        self.since: pd.Timedelta | None = None
        self._since_text = str(since)
        if since is not None:
            self.since = to_timedelta(_days(since), name="since")
            if self.since <= pd.Timedelta(0):
                msg = f"replay(since=...) must be a positive duration; got {since!r}"
                raise ConfigError(msg)
        time = pipeline.root.time
        if time is None and self.since is not None:
            msg = (f"replay(since=...): the source {pipeline.root.name!r} has no event-time "
                   "column to count back in")
            raise ConfigError(msg)
        if max_events is not None and (isinstance(max_events, bool) or not isinstance(
                max_events, int) or max_events < 1):
            msg = f"replay(max_events=...) must be a positive int; got {max_events!r}"
            raise ConfigError(msg)
        if max_events is not None and source is not None:
            msg = ("replay(max_events=...) bounds the pipeline's own source; a source= given "
                   "is bounded where it is built (its own max_events)")
            raise ConfigError(msg)
        self._max_events = max_events
        self._time = time
        self._recording: Recording | None = None
        self._log: list[pd.DataFrame] | None = None
        self._source: StreamingFrame | None = None
        self._flush = True
        if isinstance(source, Recording):
            if "input" not in source.batches:
                msg = "replay(source=...): the Recording keeps no input batches (keep_input=False)"
                raise ConfigError(msg)
            self._recording = source
            self._log = list(source.batches["input"])
            # the live run goes on: its open windows are open in the copies too
            self._flush = source.pipeline.graph.closed or source.pipeline is not pipeline
        elif isinstance(source, str | Path):
            from rtnb.export.runtime import RecordedBatches

            self._log = list(RecordedBatches(source).batches)
        elif source is not None:
            from rtnb.frame import StreamingFrame

            if not isinstance(source, StreamingFrame) or source.source is None:
                msg = (f"replay(source=...) takes a Recording, a recorded folder or file, or "
                       f"an rtnb source frame; got {type(source).__name__}")
                raise ConfigError(msg)
            self._source = source
        self._cutoff: int | None = None
        if self._log is not None:
            self._cutoff = self._check_since(self._log)
        folder = Path(tempfile.mkdtemp(prefix="rtnb-shadow-"))
        try:  # the copies read their data files when they are built
            try:
                build = _builder(pipeline, folder)
            except ExportError as exc:
                msg = (f"replay(): pipeline {pipeline.name!r} cannot be rebuilt for a shadow "
                       f"copy (a shadow is built from the code export writes): {exc}")
                raise ExportError(msg) from exc
            #: The copy at the live Params (what the live run emits over the replayed span).
            self.baseline: Pipeline = build({})
            #: The copy with the new Params.
            self.shadow: Pipeline = build(dict(self.params))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if self._log is None and self._source is None:
            _refuse_shared_consumer(pipeline, self.baseline.root.source)
        self._outputs = _outputs(self.baseline)
        self._rows: dict[str, tuple[list[pd.DataFrame], list[pd.DataFrame]]] = {
            out.name: (self.baseline.node(out.name).collect(),
                       self.shadow.node(out.name).collect()) for out in self._outputs}
        self._fed = 0  # batches of the log fed to both copies
        self._done = False
        self._promoted = False
        self._task: asyncio.Task[None] | None = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._task = loop.create_task(self._arun(), name=f"rtnb:shadow:{pipeline.name}")
        self._task.add_done_callback(self._surface)

    def _surface(self, task: asyncio.Task[None]) -> None:
        """A replay that failed says so at once (also when nobody awaits it)."""
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("shadow replay of %r failed: %s: %s", self.pipeline.name,
                      type(exc).__name__, exc)

    def __repr__(self) -> str:
        state = "promoted" if self._promoted else "done" if self._done else "replaying"
        return (f"<ShadowRun of {self.pipeline.name!r} {self.params!r}: {state}, "
                f"{self._fed} batches>")

    # -- running --------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """Whether the replay has read the whole log."""
        return self._done

    def run(self) -> None:
        """Replay the log to its end, blocking (a script; in a notebook ``await wait()``)."""
        if self._done:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self._arun())
            return
        msg = ("ShadowRun.run() blocks, so it cannot be used inside a running event loop "
               "(a notebook): `await shadow.wait()`")
        raise RtnbError(msg)

    async def wait(self) -> None:
        """Wait until the replay has read the whole log (re-raises its error)."""
        if self._task is None:
            await self._arun()
            return
        await asyncio.shield(self._task)

    async def _arun(self) -> None:
        if self._done:
            return
        if self._log is None:
            self._log = await self._read_source()
            self._cutoff = self._check_since(self._log)
        for batch in self._log:
            self._feed(batch)
            await asyncio.sleep(0)  # the live run (and the notebook) go on between batches
        if self._flush:
            self.baseline.graph.close()
            self.shadow.graph.close()
        self._done = True

    async def _read_source(self) -> list[pd.DataFrame]:
        """Every batch of the (finite) log source: the one given, or the pipeline's own."""
        from rtnb.frame import StreamingFrame

        if self._source is not None:
            frame = self._source
            out = frame.collect()
            frame.start()
            await frame.wait()
            return out
        root = self.baseline.root
        source = root.source
        if source is None:  # pragma: no cover - export refuses a pipeline without a source
            msg = f"pipeline {self.pipeline.name!r} has no source to replay"
            raise ConfigError(msg)
        if self._max_events is not None:  # a broker's stream does not end by itself
            from rtnb.export.runtime import limit

            limit(source, self._max_events)
        into = StreamingFrame(root.example, time=root.time, name=f"{root.name}.log")
        out = into.collect()
        await source.run(into, asyncio.Event())
        return out

    def _check_since(self, log: Sequence[pd.DataFrame]) -> int | None:
        """The first event time kept (ns), or None; ConfigError if ``since`` is too long."""
        if self.since is None:
            return None
        assert self._time is not None
        times = [_times(b, self._time) for b in log if len(b)]
        if not times:
            msg = f"replay(since={self._since_text!r}): the log holds no events"
            raise ConfigError(msg)
        first = min(int(t.min()) for t in times)
        last = max(int(t.max()) for t in times)
        cutoff = last - int(self.since.value)
        if cutoff < first:
            msg = (f"replay(since={self._since_text!r}) reaches back to "
                   f"{pd.Timestamp(cutoff)}, but the log of {self.pipeline.name!r} starts at "
                   f"{pd.Timestamp(first)} (it holds {format_duration(last - first)} of event "
                   f"time, up to {pd.Timestamp(last)}); give a shorter since, or a longer log")
            raise ConfigError(msg)
        return cutoff

    def _feed(self, batch: pd.DataFrame) -> None:
        """One batch of the log into both copies (rows before the cut-off left out)."""
        self._fed += 1
        if self._cutoff is not None and self._time is not None and len(batch):
            batch = batch[_times(batch, self._time) >= self._cutoff]
        if not len(batch):
            return
        dtypes = self.baseline.root.example.dtypes.to_dict()
        batch = batch.reset_index(drop=True).astype(dtypes)
        self.baseline.root.emit(batch)
        self.shadow.root.emit(batch)

    def _require_done(self, what: str) -> None:
        if self._done:
            return
        if self._task is not None:
            if self._task.done() and self._task.exception() is not None:
                raise self._task.exception()  # type: ignore[misc]
            msg = f"the shadow replay is still running: `await shadow.wait()` before {what}()"
            raise RtnbError(msg)
        self.run()

    # -- the diff -------------------------------------------------------------------------
    def diff(self, node: str | None = None) -> pd.DataFrame:
        """Which windows and alert transitions change between the live and the new Params.

        Parameters
        ----------
        node
            Only this output node (default: every window and alert node).

        Returns
        -------
        pandas.DataFrame
            One row per change: ``node``, ``kind`` (``"window"`` or ``"alert"``),
            ``change`` (``"added"``: only with the new Params, ``"removed"``: only with the
            live ones, ``"changed"``: both, other values), the identifying columns (a
            window's ``window_start``, ``window_end`` and ``by`` keys; an alert's ``alert``,
            ``by`` keys, ``time`` and ``state``), then ``old_<column>`` and
            ``new_<column>`` for every value column (a window's aggregations, an alert's
            ``started`` and ``value``; missing on the side that has no such row). Rows are
            ordered by node, then by their identifying columns. Values are compared
            exactly (NaN equals NaN).
        """
        self._require_done("diff")
        outputs = [o for o in self._outputs if node is None or o.name == node]
        if node is not None and not outputs:
            msg = (f"diff(node={node!r}): not a window or alert node of "
                   f"{self.pipeline.name!r}; those are {[o.name for o in self._outputs]}")
            raise ConfigError(msg)
        parts = [self._diff_one(o) for o in outputs]
        filled = [p for p in parts if len(p)]
        if len(filled) == 1:
            return filled[0]
        if not filled:
            return parts[0] if len(parts) == 1 else pd.DataFrame(
                {"node": pd.Series([], dtype=str), "kind": pd.Series([], dtype=str),
                 "change": pd.Series([], dtype=str)})
        return pd.concat(filled, ignore_index=True)

    def plot(self, node: str | None = None, *, y: str | None = None,
             keys: Sequence[Any] | None = None, height: int = 300,
             width: int | None = None) -> DiffPlot:
        """The diff on plots: both runs of each node on a time axis, the changes marked.

        One figure per node (stacked, panning and zooming together). A window node shows
        each key's ``y`` over ``window_start`` as the live Params gave it (solid line, the
        diff's ``old_``) and as the new ones do (dashed, ``new_``); the windows
        :meth:`diff` lists are marked: *added* (green triangle at the new value),
        *removed* (red cross at the old value), *changed* (orange diamond at the new value,
        a segment from the old one). An alert node shows each key's transitions of both
        runs (a triangle where an alert fired, an inverted one where it resolved; the old
        run above the key's line, the new one below), the added, removed and changed ones
        ringed in the same colours. Hovering a mark shows the old and the new values.

        Parameters
        ----------
        node
            The window or alert node to draw (default: every one, as in :meth:`diff`).
        y
            The value column of the window nodes to draw (default: each node's first
            numeric one). Alert nodes have none: ``y`` with an alert node alone is an error.
        keys
            Which keys (the ``by`` values; tuples for several ``by`` columns; one key alone
            is a list of one) get lines and marks. Default: the keys that :meth:`diff`
            lists for that node (every key when none changes), so a plot of 200 hosts
            shows the few that change.
        height, width
            Size of each figure in pixels (``width=None``: the notebook's width).

        Returns
        -------
        rtnb.viz.DiffPlot
            Shown as a widget when it is a cell's last expression; ``.root`` is the Bokeh
            layout, ``.sources`` its data (the mark sources hold the diff's rows),
            ``.save(path)`` writes a standalone HTML file.

        Raises
        ------
        ConfigError
            For a node that is not a window or alert node, a ``y`` that is not a numeric
            value column of a window node drawn, or keys that neither run has (each message
            lists what exists).

        Examples
        --------
        >>> import pandas as pd, rtnb
        >>> events = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=6,
        ...                                                   freq="20s"),
        ...                        "cpu": [10.0, 50.0, 95.0, 97.0, 40.0, 30.0]})
        >>> src = rtnb.sources.replay(events, name="events", batch_size=2)
        >>> floor = rtnb.Param(0.0, min=0.0, max=100.0, name="floor")
        >>> cpu = src[src["cpu"] >= floor].window(rtnb.tumbling("1min"), name="cpu").agg(
        ...     cpu=("cpu", "mean"))
        >>> shadow = rtnb.Pipeline(cpu).replay({"floor": 45.0})
        >>> shadow.run()
        >>> plot = shadow.plot("cpu")
        >>> plot.sources["cpu:changed"].data["new_cpu"].tolist()  # the windows changed
        [72.5, 97.0]
        >>> plot.sources["cpu:old:cpu"].data["y"].round(1).tolist()  # the live run's line
        [51.7, 55.7]
        """
        self._require_done("plot")
        outputs = self._plotted(node)
        windows = [o for o in outputs if o.kind == "window"]
        if y is not None:
            if not windows:
                msg = (f"plot(y={y!r}): y is a value column of a window node; "
                       f"{node!r} is an alert node (drawn as its transitions)")
                raise ConfigError(msg)
            for out in windows:
                self._check_y(out, y)
        wanted = None if keys is None else [keys] if isinstance(keys, str | tuple) else \
            list(keys)
        parts = []
        for out in outputs:
            example = self.baseline.node(out.name).example
            old_rows, new_rows = self._rows[out.name]
            runs = (_rows(old_rows, example, out), _rows(new_rows, example, out),
                    self._diff_one(out))
            by = [k for k in out.keys if k not in ("window_start", "window_end", "alert",
                                                   *_ALERT_KEYS)]
            present = list(dict.fromkeys(k for run in runs for k in _keys_of(run, by)))
            parts.append((out, runs, by, present))
        chosen = self._check_keys(wanted, parts)
        from rtnb.frame import VIEWS_MODULE  # the views layer, loaded by name (as frame.plot)

        views = importlib.import_module(VIEWS_MODULE)
        plot: DiffPlot = views.DiffPlot(height=height, width=width)
        moved = ", ".join(f"{name} {shown(self._old_params[name])} → {shown(value)}"
                          for name, value in self.params.items())
        for out, (old, new, changes), by, present in parts:
            mine = chosen
            if by and mine is None:  # by default the keys that change (all if none does)
                changed = list(dict.fromkeys(_keys_of(changes, by)))
                mine = changed if 0 < len(changed) < len(present) else None
            if by and mine is not None:
                old, new, changes = (_with_keys(f, by, mine) for f in (old, new, changes))
            counts = changes["change"].value_counts()
            said = ", ".join(f"{counts.get(c, 0)} {c}" for c in ("added", "removed", "changed"))
            if by and mine is not None:
                said += f" · {sum(k in present for k in mine)} of {len(present)} keys"
            if out.kind == "window":
                column = y or self._default_y(out)
                plot.add_windows(out.name, old, new, changes, y=column, values=list(out.values),
                                 by=by, units=self.baseline.node(out.name).units,
                                 title=f"{out.name} · {column} · {moved}: {said}")
            else:
                plot.add_alerts(out.name, old, new, changes, by=by,
                                title=f"{out.name} · {moved}: {said}")
        return plot

    @property
    def _old_params(self) -> dict[str, Any]:
        return {p.name: p.value for p in self.baseline.params}

    def _check_keys(self, keys: list[Any] | None,
                    parts: list[tuple[_Output, Any, list[str], list[Any]]]) -> list[Any] | None:
        """The keys asked for, checked against the nodes drawn (``None``: not asked)."""
        if keys is None:
            return None
        keyed = [(out, by, present) for out, _, by, present in parts if by]
        if not keyed:
            names = [out.name for out, *_ in parts]
            msg = f"plot(keys=...): {names} have no key columns (no by=); leave keys out"
            raise ConfigError(msg)
        for out, by, _ in keyed:
            if len(by) > 1 and any(not isinstance(k, tuple) or len(k) != len(by) for k in keys):
                msg = (f"plot(keys=...): {out.name!r} has {len(by)} key columns {by}: give "
                       f"each key as a tuple of {len(by)} values; got {keys!r}")
                raise ConfigError(msg)
        known = sorted(dict.fromkeys(k for _, _, present in keyed for k in present), key=str)
        unknown = [k for k in keys if k not in known]
        if unknown:
            columns = sorted({c for _, by, _ in keyed for c in by})
            more = f" and {len(known) - 20} more" if len(known) > 20 else ""
            msg = (f"plot(keys=...): no key {unknown!r} ({', '.join(columns)}) in either run "
                   f"of {[out.name for out, _, _ in keyed]}; the keys: {known[:20]!r}{more}")
            raise ConfigError(msg)
        return keys

    def _plotted(self, node: str | None) -> list[_Output]:
        outputs = [o for o in self._outputs if node is None or o.name == node]
        if node is not None and not outputs:
            msg = (f"plot(node={node!r}): not a window or alert node of "
                   f"{self.pipeline.name!r}; those are {[o.name for o in self._outputs]}")
            raise ConfigError(msg)
        if not outputs:
            msg = f"plot(): pipeline {self.pipeline.name!r} has no window or alert node to draw"
            raise ConfigError(msg)
        return outputs

    def _numeric_values(self, out: _Output) -> list[str]:
        example = self.baseline.node(out.name).example
        return [v for v in out.values if pd.api.types.is_numeric_dtype(example[v].dtype)
                and not pd.api.types.is_bool_dtype(example[v].dtype)]

    def _check_y(self, out: _Output, y: str) -> None:
        if y not in out.values:
            msg = (f"plot(y={y!r}): the window node {out.name!r} has no value column {y!r}; "
                   f"its value columns: {list(out.values)}")
            raise ConfigError(msg)
        if y not in self._numeric_values(out):
            dtype = self.baseline.node(out.name).example[y].dtype
            msg = (f"plot(y={y!r}): column {y!r} of {out.name!r} is {dtype}, not numeric; "
                   f"numeric columns: {self._numeric_values(out)}")
            raise ConfigError(msg)

    def _default_y(self, out: _Output) -> str:
        numeric = self._numeric_values(out)
        if not numeric:
            msg = (f"plot(): the window node {out.name!r} has no numeric value column to draw; "
                   f"its value columns: {list(out.values)}")
            raise ConfigError(msg)
        return numeric[0]

    def _diff_one(self, out: _Output) -> pd.DataFrame:
        example = self.baseline.node(out.name).example
        old_rows, new_rows = self._rows[out.name]
        old = _rows(old_rows, example, out)
        new = _rows(new_rows, example, out)
        return diff_rows(old, new, keys=list(out.keys), values=list(out.values),
                         node=out.name, kind=out.kind)

    # -- promotion ------------------------------------------------------------------------
    def promote(self) -> Promotion:
        """Switch the live pipeline to the new Params at a barrier (see :mod:`rtnb.shadow`).

        Needs a shadow replayed from a :class:`~rtnb.pipeline.Recording` of the live
        pipeline (``pipeline.replay(..., source=recording)``) whose live run is still going.
        Call it from the notebook (the loop the live run is on): it runs between two live
        batches and returns before the next one. The new run is the new settings over what
        the recording holds: record from the live run's start for "as if it had always run
        with them" (``rtnb.pipeline.Recording(pipeline, [])`` before ``pipeline.start()``
        keeps the input batches only). After a replay with ``since=`` the state handed over
        was built from the rows after the cut (a warning says so): exact when no window,
        rolling span or alert timer open at the barrier began before the cut.

        Returns
        -------
        Promotion
            The Params set, where the barrier was and the alert keys whose state changed.

        Examples
        --------
        Windows closed before the barrier are the live settings' (1 min), those closed
        after it the new ones' (2 min), as if the new run had been live from the start:

        >>> import pandas as pd, rtnb
        >>> events = pd.DataFrame({
        ...     "timestamp": pd.date_range("2026-01-01", periods=12, freq="20s"),
        ...     "cpu": [10.0, 50, 95, 97, 40, 30, 20, 90, 60, 70, 10, 5]})
        >>> src = rtnb.sources.replay(events, name="events")
        >>> size = rtnb.Param("1min", min="10s", max="10min", name="size")
        >>> cpu = src.window(rtnb.tumbling(size)).agg(cpu=("cpu", "mean"))
        >>> out = cpu.collect()
        >>> pipeline = rtnb.Pipeline(cpu)
        >>> recording = pipeline.record()  # the live run's input, from its start
        >>> src.emit(events.iloc[:6])  # the live run so far (its source emits like this)
        >>> shadow = pipeline.replay({"size": "2min"}, source=recording)
        >>> shadow.run()
        >>> shadow.promote().params
        {'size': Timedelta('0 days 00:02:00')}
        >>> src.emit(events.iloc[6:]); src.graph.close()
        >>> pd.concat(out, ignore_index=True).round({"cpu": 1})
                 window_start          window_end   cpu
        0 2026-01-01 00:00:00 2026-01-01 00:01:00  51.7
        1 2026-01-01 00:00:00 2026-01-01 00:02:00  53.7
        2 2026-01-01 00:02:00 2026-01-01 00:04:00  42.5
        """
        if self._promoted:
            msg = "this shadow was promoted already"
            raise RtnbError(msg)
        rec = self._recording
        if rec is None or rec.pipeline.graph is not self.pipeline.graph:
            msg = ("promote() needs the shadow to have replayed the live run's own input: "
                   "`recording = pipeline.record()` when the live run starts, then "
                   "`pipeline.replay(params, source=recording)`")
            raise ConfigError(msg)
        if self._cutoff is not None:  # visible: the state handed over starts at the cut
            log.warning("promote() of %r: this replay began at since=%r (%s); the state handed "
                        "to the live run was built from the rows after that, so a window, "
                        "rolling span or alert timer open at the barrier that began before it "
                        "lacks the earlier rows (replay the whole recording, without since=, "
                        "when the pipeline's state reaches back further)", self.pipeline.name,
                        self._since_text, pd.Timestamp(self._cutoff))
        live = self.pipeline.graph
        if live.closed or self._flush:
            msg = (f"the live run of {self.pipeline.name!r} has ended (its windows are "
                   "flushed): there is nothing to promote; start it again with the new Params")
            raise RtnbError(msg)
        self._require_done("promote")
        from rtnb.frame import StatefulFrame

        # -- the barrier: nothing below awaits, so no live batch comes in until it returns
        batches = rec.batches["input"]
        caught_up = len(batches) - self._fed
        for batch in list(batches[self._fed:]):
            self._feed(batch)
        alerts = self._alert_states()
        stateful = list(live.stateful())
        states = {}
        for node in stateful:
            try:
                twin = self.shadow.graph.node(node.name)
            except KeyError:
                msg = (f"promote(): the live node {node.name!r} has no twin in the shadow "
                       "copy (the pipeline changed after replay()); replay again")
                raise RtnbError(msg) from None
            if not isinstance(twin, StatefulFrame):  # pragma: no cover - same code, same kind
                msg = f"promote(): the shadow's {node.name!r} holds no state"
                raise RtnbError(msg)
            # a copy: the shadow's objects stay the shadow's
            states[node.name] = pickle.loads(pickle.dumps(twin.snapshot(),
                                                          protocol=pickle.HIGHEST_PROTOCOL))
        params = {p.name: p for p in self.pipeline.params}
        with _muted(stateful):  # a reconfiguration's own output (open windows) is dropped
            for name, value in self.params.items():
                params[name].value = value
        for node in stateful:
            node.restore(states[node.name])
        self._promoted = True
        return Promotion(dict(self.params), self._fed, caught_up, alerts)

    def _alert_states(self) -> pd.DataFrame:
        """Alert keys whose last state differs between the baseline and the shadow copy."""
        parts = []
        for out in self._outputs:
            if out.kind != "alert":
                continue
            example = self.baseline.node(out.name).example
            by = [k for k in out.keys if k not in ("alert", *_ALERT_KEYS)]
            old_rows, new_rows = self._rows[out.name]
            old = _last_state(_rows(old_rows, example, out), by)
            new = _last_state(_rows(new_rows, example, out), by)
            both = old.merge(new, on=by, how="outer", suffixes=("_old", "_new")) if by else \
                pd.DataFrame({"state_old": old["state"].iloc[-1:].reset_index(drop=True),
                              "state_new": new["state"].iloc[-1:].reset_index(drop=True)})
            both = both.rename(columns={"state_old": "old_state", "state_new": "new_state"})
            both = both.fillna({"old_state": "inactive", "new_state": "inactive"})
            both = both[both["old_state"] != both["new_state"]]
            if len(both):
                parts.append(both.assign(node=out.name)[["node", *by, "old_state",
                                                         "new_state"]])
        if not parts:
            return pd.DataFrame({"node": pd.Series([], dtype=str),
                                 "old_state": pd.Series([], dtype=str),
                                 "new_state": pd.Series([], dtype=str)})
        return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]

    def close(self) -> None:
        """Drop the copies (their graphs forget their sources and hooks)."""
        for copy in (self.baseline, self.shadow):
            copy.graph.dispose()


def diff_rows(old: pd.DataFrame, new: pd.DataFrame, *, keys: list[str], values: list[str],
              node: str = "", kind: str = "window") -> pd.DataFrame:
    """The rows added, removed and changed from ``old`` to ``new`` (identified by ``keys``).

    Rows with the same keys are paired in their order; ``values`` are compared exactly
    (NaN equals NaN).

    Examples
    --------
    >>> old = pd.DataFrame({"k": ["a", "b", "c"], "v": [1.0, 2.0, 3.0]})
    >>> new = pd.DataFrame({"k": ["b", "c", "d"], "v": [2.0, 4.0, 5.0]})
    >>> diff_rows(old, new, keys=["k"], values=["v"], node="n")
      node    kind   change  k  old_v  new_v
    0    n  window  removed  a    1.0    NaN
    1    n  window  changed  c    3.0    4.0
    2    n  window    added  d    NaN    5.0
    """
    seq = "__occurrence__"

    def side(frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
        frame = frame[keys + values].reset_index(drop=True)
        frame = frame.assign(**{seq: frame.groupby(keys, dropna=False, sort=False).cumcount()})
        return frame.rename(columns={v: f"{prefix}{v}" for v in values})

    both = side(old, "old_").merge(side(new, "new_"), on=[*keys, seq], how="outer",
                                   indicator=True, sort=False)
    changed = np.zeros(len(both), dtype=bool)
    for v in values:
        a, b = both[f"old_{v}"], both[f"new_{v}"]
        same = (a == b).fillna(False).to_numpy(dtype=bool) | (a.isna() & b.isna()).to_numpy()
        changed |= ~same
    where = both["_merge"].astype(str).to_numpy()
    change = np.where(where == "left_only", "removed",
                      np.where(where == "right_only", "added", "changed"))
    keep = (where != "both") | changed
    out = both[keep].drop(columns=["_merge"])
    out.insert(0, "change", change[keep])
    out.insert(0, "kind", kind)
    out.insert(0, "node", node)
    out = out.sort_values([*keys, seq], kind="stable").drop(columns=[seq])
    columns = ["node", "kind", "change", *keys,
               *(f"{p}{v}" for v in values for p in ("old_", "new_"))]
    result: pd.DataFrame = out[columns].reset_index(drop=True)
    return result


# -- helpers -------------------------------------------------------------------------------------
def _refuse_shared_consumer(pipeline: Pipeline, source: Any) -> None:
    """ConfigError when the rebuilt own source would read in the live run's consumer state.

    A broker source that resumes from the broker (a Redis group, a NATS durable consumer,
    an AMQP queue, an MQTT session, a Kafka group) shares what it reads and acknowledges
    with the live run: a copy reading there takes (and acknowledges) the live run's
    messages. The replay needs a log of its own instead.
    """
    resume_kind = getattr(source, "resume_kind", None)
    try:
        kind = resume_kind() if resume_kind is not None else None
    except RtnbError:  # cannot resume (e.g. a Redis stream without a group): shares nothing
        return
    if kind == "broker":
        msg = (f"replay(): the source of {pipeline.name!r} ({type(source).__name__} "
               f"{getattr(source, 'name', '')!r}) reads in a consumer group, durable consumer, "
               "queue or session on its broker that the live run shares: a copy reading "
               "there would take and acknowledge the live run's messages. Give the log "
               "with source=: a Recording of the live run (pipeline.record(), or "
               "rtnb.recording.Recording(pipeline, []) for the input only), a recorded "
               "folder, or a source of its own bounded with max_events= (e.g. "
               "rtnb.sources.redis_stream(name, start='0', max_events=...) without a "
               "group); for an exported script, --input a recorded folder")
        raise ConfigError(msg)


def _builder(pipeline: Pipeline, folder: Path) -> Callable[[dict[str, Any]], Pipeline]:
    """``build(params)`` of the pipeline written as a script without sinks into ``folder``."""
    from rtnb.export.script import render_script

    text, data, _env = render_script(pipeline, names={}, title="shadow",
                                     origin="a shadow replay", data_dir="shadow_data",
                                     sinks=False)
    if data:
        (folder / "shadow_data").mkdir(exist_ok=True)
        for file_name, frame in data.items():
            frame.to_parquet(folder / "shadow_data" / file_name, index=False)
    script = folder / "shadow.py"
    script.write_text(text, encoding="utf-8")
    namespace = runpy.run_path(str(script), run_name="rtnb_shadow")
    build: Callable[[dict[str, Any]], Pipeline] = namespace["build"]
    return build


def _outputs(pipeline: Pipeline) -> list[_Output]:
    """The pipeline's window and alert nodes, with the columns that identify their rows."""
    from rtnb.detect.alerts import AlertLogic
    from rtnb.frame import StatefulFrame, WindowedFrame

    found = []
    for frame in pipeline.frames:
        if isinstance(frame, WindowedFrame):
            keys = tuple(frame.row_key)
            values = tuple(c for c in frame.columns if c not in keys)
            found.append(_Output(frame.name, "window", keys, values,
                                 update=frame.windowed.emit == "update"))
        elif isinstance(frame, StatefulFrame) and isinstance(frame.logic, AlertLogic):
            columns = list(frame.columns)
            by = columns[columns.index("alert") + 1:columns.index("state")]
            found.append(_Output(frame.name, "alert", ("alert", *by, *_ALERT_KEYS),
                                 _ALERT_VALUES))
    return found


def _rows(batches: list[pd.DataFrame], example: pd.DataFrame, out: _Output) -> pd.DataFrame:
    filled = [b for b in batches if len(b)]
    rows = pd.concat(filled, ignore_index=True) if filled else example.copy()
    if out.update:
        rows = rows.drop_duplicates(list(out.keys), keep="last")
    return rows.reset_index(drop=True)


def _keys_of(rows: pd.DataFrame, by: list[str]) -> list[Any]:
    """Each row's key: the ``by`` value, or a tuple of them for several columns."""
    if not by:
        return []
    if len(by) == 1:
        return list(rows[by[0]].tolist())
    return list(rows[by].itertuples(index=False, name=None))


def _with_keys(rows: pd.DataFrame, by: list[str], keys: list[Any]) -> pd.DataFrame:
    """The rows whose key is one of ``keys``."""
    wanted = set(keys)
    keep = np.array([k in wanted for k in _keys_of(rows, by)], dtype=bool)
    result: pd.DataFrame = rows[keep].reset_index(drop=True)
    return result


def _last_state(rows: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Each key's state after its last transition (``resolved`` counts as inactive)."""
    if not len(rows):
        return rows[[*by, "state"]]
    last = rows.sort_values("time", kind="stable").groupby(by, sort=False).tail(1) if by else \
        rows.iloc[-1:]
    last = last[[*by, "state"]].reset_index(drop=True)
    return last.assign(state=last["state"].replace({"resolved": "inactive"}))


def _times(batch: pd.DataFrame, column: str) -> np.ndarray[Any, Any]:
    values = pd.to_datetime(batch[column])
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return np.asarray(values.to_numpy(dtype="datetime64[ns]").view("int64"))


def _days(value: Any) -> Any:
    """``"7d"`` as ``"7 days"`` (pandas deprecates the unit ``d``; ``since`` is often days).

    >>> _days("7d"), _days("1d12h"), _days("30min"), _days(3)
    ('7 days', '1 days12h', '30min', 3)
    """
    if isinstance(value, str):
        return re.sub(r"(\d)\s*d(?![a-z])", r"\1 days", value, flags=re.IGNORECASE)
    return value


@contextlib.contextmanager
def _muted(nodes: Sequence[Any]) -> Any:
    """The nodes' streams emit nothing while inside (an instance ``_emit`` that drops)."""

    def drop(x: Any, metadata: Any = None) -> list[Any]:
        return []

    for node in nodes:
        node.stream._emit = drop
    try:
        yield
    finally:
        for node in nodes:
            vars(node.stream).pop("_emit", None)


# -- the exported script's ``replay`` command ------------------------------------------------
def cli(build: Callable[..., Pipeline], argv: Sequence[str], *, prog: str = "replay") -> None:
    """``python monitor.py replay ...``: a shadow replay from an exported script's command line.

    Options: ``--set NAME=VALUE`` (repeated; the Params' new values), ``--since 7d``,
    ``--input PATH`` (recorded batches; default: the script's own source, or
    ``--source``; ``--max-events N`` bounds it), ``--diff`` (print the diff as a table),
    ``--output FILE`` (write the diff: ``.csv`` or ``.parquet``). The baseline is the
    script's Params (as exported).
    Exits 0, or 2 for a bad option (an unknown Param, a refused value, a since longer
    than the log). Never returns.

    Examples
    --------
    >>> cli(lambda params=None, source=None: None, ["--help"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    SystemExit: 0
    """
    import typer

    app = typer.Typer(add_completion=False)

    # typer reads the options from the defaults: the annotations (strings under
    # ``from __future__ import annotations``) resolve in this module's namespace
    @app.command()
    def replay(
        set_: list[str] | None = typer.Option(  # noqa: B008
            None, "--set", metavar="NAME=VALUE", help="a Param's new value (repeat for more)"),
        since: str | None = typer.Option(
            None, help="how much event time to replay, back from the log's end, e.g. 7d"),
        diff: bool = typer.Option(
            False, "--diff", help="print the diff as a table"),
        input: Path | None = typer.Option(  # noqa: B008
            None, help="recorded batches (Pipeline.record() / --output / --record)"),
        output: Path | None = typer.Option(  # noqa: B008
            None, help="write the diff to this .csv or .parquet file"),
        source: str | None = typer.Option(
            None, help="file or URL of the source (default: as exported)"),
        max_events: int | None = typer.Option(
            None, help="read at most this many events of the source (a broker's stream "
                       "does not end by itself; not with --input)"),
    ) -> None:
        """Replay the log with other Param values; show which windows and alerts change."""
        if output is not None and output.suffix not in (".csv", ".parquet"):
            msg = f"--output must end in .csv or .parquet; got {str(output)!r}"
            raise typer.BadParameter(msg)
        try:
            pipeline = build({}, source)
        except ConfigError as exc:
            raise typer.BadParameter(str(exc)) from exc
        params: dict[str, Any] = {}
        known = {p.name: p for p in pipeline.params}
        try:
            for item in set_ or []:
                name, sep, text = item.partition("=")
                name = name.strip()
                if not sep or not name:
                    msg = f"--set takes NAME=VALUE; got {item!r}"
                    raise ConfigError(msg)
                if name not in known:
                    msg = (f"--set {item}: the pipeline has no Param {name!r}; its Params: "
                           f"{sorted(known) or 'none'}")
                    raise ConfigError(msg)
                params[name] = known[name].parse(text)
            shadow = pipeline.replay(params, since=since, source=input,
                                     max_events=max_events)
            shadow.run()
        except ConfigError as exc:
            raise typer.BadParameter(str(exc)) from exc
        table = shadow.diff()
        shadow.close()
        pipeline.graph.dispose()
        if output is not None:
            if output.suffix == ".csv":
                table.to_csv(output, index=False)
            else:
                table.to_parquet(output, index=False)
        if diff:
            typer.echo(format_diff(table))
        counts = table["change"].value_counts()
        typer.echo(f"{len(table)} changes: " + ", ".join(
            f"{counts.get(c, 0)} {c}" for c in ("added", "removed", "changed")), err=True)

    command = typer.main.get_command(app)
    command.main(args=list(argv), prog_name=prog)


def format_diff(table: pd.DataFrame) -> str:
    """The diff as the text table ``replay --diff`` prints (every row, every column).

    Examples
    --------
    >>> print(format_diff(pd.DataFrame({"node": ["n"], "change": ["added"]})))
    node change
       n  added
    """
    if not len(table):
        return "no window or alert changes"
    with pd.option_context("display.max_rows", None, "display.max_columns", None,
                           "display.width", None, "display.max_colwidth", None):
        return table.to_string(index=False)
