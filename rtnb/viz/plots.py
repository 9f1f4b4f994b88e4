"""Live Bokeh views of a StreamingFrame that send only deltas, at most ``max_fps`` a second.

Every view follows one frame. Batches are queued as they arrive and sent to the browser by a
timer on the running event loop (at most ``max_fps`` updates a second, whatever the input
rate), inside one :meth:`BatchedBokehModel.batch`; the views of a dashboard share one timer
(:class:`rtnb.viz._schedule.Scheduler`), which holds their updates while the page has not
acknowledged enough of what it was sent. Held batches are merged in the queue into what one
update would draw (``max_points`` per line, each key's latest value), so it stays bounded.
New rows travel as
``ColumnDataSource.stream(rows, rollover=max_points)``; rows that replace earlier ones (an
``emit="update"`` window that changed, a key's latest value) travel as ``.patch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from bokeh.models import ColumnDataSource, FactorRange
from bokeh.models.annotations import Legend, Span, Title
from bokeh.models.widgets.tables import DataTable, DateFormatter, NumberFormatter, TableColumn
from bokeh.palettes import Category10_10, Category20_20
from bokeh.plotting import figure

from rtnb import _cells, _record
from rtnb._time import DurationLike, to_ns
from rtnb.errors import ConfigError
from rtnb.frame import RollingFrame, WindowedFrame
from rtnb.viz._bokeh import BatchedBokehModel, ensure_bokehjs
from rtnb.viz._schedule import Scheduler
from rtnb.windows.keys import norm_key
from rtnb.windows.specs import Sliding, Tumbling

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame

__all__ = ["BarView", "LineView", "PlotAccessor", "TableView", "View", "XYView"]

LATE_COLOR = "#d62728"
#: Rows a view's queue may hold before it is merged (see ``View._compact_pending``).
_COMPACT_MIN_ROWS = 50_000
#: Batches of watermark bounds, late rows or alerts queued before they are merged.
_COMPACT_SIDE = 64


def _browser_only(fig: Any) -> None:
    """Do not sync browser-side changes of the figure and its ranges back to the kernel.

    Auto-ranging moves ``x_range``/``y_range`` as data arrive and the layout sets the plot's
    inner sizes; nothing in the kernel uses them, so they need not travel back as comm
    messages while a stream runs.
    """
    for model in (fig, fig.x_range, fig.y_range):
        model.syncable = False


def _color(index: int) -> str:
    palette = Category10_10 if index < 10 else Category20_20
    return str(palette[index % len(palette)])


def _ns(values: Any) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.asarray(values).astype("datetime64[ns]").view(np.int64)


def _engine_frame(frame: StreamingFrame) -> WindowedFrame | RollingFrame | None:
    """The nearest frame computed by a window or rolling engine: the frame or an ancestor."""
    return next((f for f in frame.lineage() if isinstance(f, WindowedFrame | RollingFrame)),
                None)


def _latest(data: pd.DataFrame, by: str) -> pd.DataFrame:
    """The last row of each key, keys in order of first appearance."""
    codes, uniques = pd.factorize(data[by], use_na_sentinel=False)
    last = np.zeros(len(uniques), dtype=np.intp)
    np.maximum.at(last, codes, np.arange(len(codes), dtype=np.intp))
    return data.iloc[last]


def _writable(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return array if array.flags.writeable else array.copy()


def _check_positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        msg = f"`{name}` must be a positive int; got {value!r}"
        raise ConfigError(msg)


def m4(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any],
       bucket: int) -> np.ndarray[Any, np.dtype[np.intp]]:
    """Positions to keep so a line keeps its shape: first, last, min, max per x bucket (M4).

    ``x`` is int64 (nanoseconds for times) and sorted; ``bucket`` is the bucket width. NaN
    values are ignored for min/max. At most four points per bucket survive.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(10, dtype=np.int64)
    >>> y = np.array([0, 5, 1, 1, 1, -3, 1, 1, 1, 2], dtype=float)
    >>> m4(x, y, 10).tolist()  # one bucket: first, max, min, last
    [0, 1, 5, 9]
    """
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    ids = x // bucket
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], n] - 1
    filled = np.where(np.isnan(y), np.nan, y)
    lo = np.where(np.isnan(filled), np.inf, filled)
    hi = np.where(np.isnan(filled), -np.inf, filled)
    seg = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
    order_min = np.lexsort((np.arange(n), lo, seg))
    order_max = np.lexsort((np.arange(n), -hi, seg))
    first_of = np.r_[0, np.flatnonzero(seg[order_min][1:] != seg[order_min][:-1]) + 1]
    keep = np.concatenate([starts, ends, order_min[first_of], order_max[first_of]])
    return np.unique(keep)


class PlotAccessor:
    """``sdf.plot``: builds live views of a frame (line, step, scatter, band, bar, table)."""

    def __init__(self, frame: StreamingFrame) -> None:
        self._frame = frame

    @_record.method
    def line(self, x: str, y: str, *, by: str | None = None, **options: Any) -> XYView:
        """A live line per key (``by``) of ``y`` against ``x``; options: see :class:`XYView`.

        Examples
        --------
        >>> import pandas as pd, rtnb
        >>> ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
        ...                    "cpu": pd.Series([], dtype=float)})
        >>> rtnb.StreamingFrame(ex, time="t").plot.line(x="t", y="cpu")
        <XYView line 'cpu' vs 't' of 'frame'>
        """
        return XYView(self._frame, "line", x=x, y=y, by=by, **options)

    @_record.method
    def step(self, x: str, y: str, *, by: str | None = None, **options: Any) -> XYView:
        """Like :meth:`line`, drawn as steps (a window's value holds until the next window).

        Examples
        --------
        >>> import pandas as pd, rtnb
        >>> ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
        ...                    "n": pd.Series([], dtype="int64")})
        >>> rtnb.StreamingFrame(ex, time="t").plot.step(x="t", y="n").kind
        'step'
        """
        return XYView(self._frame, "step", x=x, y=y, by=by, **options)

    @_record.method
    def scatter(self, x: str, y: str, *, by: str | None = None, **options: Any) -> XYView:
        """Live markers per key of ``y`` against ``x``.

        Examples
        --------
        >>> import pandas as pd, rtnb
        >>> ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
        ...                    "cpu": pd.Series([], dtype=float)})
        >>> rtnb.StreamingFrame(ex, time="t").plot.scatter(x="t", y="cpu").kind
        'scatter'
        """
        return XYView(self._frame, "scatter", x=x, y=y, by=by, **options)

    @_record.method
    def band(self, x: str, lower: str, upper: str, *, y: str | None = None,
             by: str | None = None, **options: Any) -> XYView:
        """A shaded band between ``lower`` and ``upper`` per key, with a line for ``y``.

        Examples
        --------
        >>> import pandas as pd, rtnb
        >>> ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
        ...                    "lo": pd.Series([], dtype=float), "hi": pd.Series([], dtype=float)})
        >>> rtnb.StreamingFrame(ex, time="t").plot.band(x="t", lower="lo", upper="hi").kind
        'band'
        """
        return XYView(self._frame, "band", x=x, y=y, lower=lower, upper=upper, by=by,
                      **options)

    @_record.method
    def bar(self, y: str, *, by: str, **options: Any) -> BarView:
        """One bar per key (``by``) showing its latest ``y``; see :class:`BarView`.

        Examples
        --------
        >>> import pandas as pd, rtnb
        >>> ex = pd.DataFrame({"host": pd.Series([], dtype=str),
        ...                    "cpu": pd.Series([], dtype=float)})
        >>> rtnb.StreamingFrame(ex).plot.bar(y="cpu", by="host")
        <BarView 'cpu' by 'host' of 'frame'>
        """
        return BarView(self._frame, y=y, by=by, **options)

    @_record.method
    def table(self, columns: list[str] | None = None, *, by: str | None = None,
              **options: Any) -> TableView:
        """The latest rows (or the latest row per key) as a table; see :class:`TableView`.

        Examples
        --------
        >>> import pandas as pd, rtnb
        >>> ex = pd.DataFrame({"host": pd.Series([], dtype=str),
        ...                    "cpu": pd.Series([], dtype=float)})
        >>> rtnb.StreamingFrame(ex).plot.table(rows=5)
        <TableView ['host', 'cpu'] of 'frame'>
        """
        return TableView(self._frame, columns=columns, by=by, **options)


class View:
    """What every live view shares: queueing, coalesced flushes, display, teardown.

    Subclasses say which columns they need and how to render a coalesced batch
    (:meth:`_render`) into their Bokeh models.
    """

    kind = "view"

    def __init__(self, frame: StreamingFrame, *, columns: list[str], max_fps: float = 10.0,
                 title: str | None = None) -> None:
        for col in columns:
            if col not in frame.columns:
                msg = (f"plot of {frame.name!r}: no column {col!r}; columns: "
                       f"{list(frame.columns)}")
                raise ConfigError(msg)
        if isinstance(max_fps, bool) or not isinstance(max_fps, int | float) or not max_fps > 0:
            msg = f"`max_fps` must be a positive number; got {max_fps!r}"
            raise ConfigError(msg)
        self.frame = frame
        self.max_fps = float(max_fps)
        self._columns = list(dict.fromkeys(columns))
        self._fixed_title = title
        # The widget that shows the view: its own, or a dashboard's that holds several.
        self.model: BatchedBokehModel | None = None
        #: Coalesced updates sent, rows received and rows sent to the browser.
        self.updates = 0
        self.rows_in = 0
        self.rows_sent = 0
        self._pending: list[pd.DataFrame] = []
        self._pending_since = 0.0
        self._compact_at = _COMPACT_MIN_ROWS
        self._replace = False
        self._last_flush = 0.0
        self._closed = False
        self._scheduler = Scheduler(f"{frame.name}.{self.kind}")

    @property
    def period(self) -> float:
        """Seconds between two updates at most ``max_fps``."""
        return 1 / self.max_fps

    @property
    def last_flush(self) -> float:
        """When the view last sent an update (``time.monotonic()``)."""
        return self._last_flush

    @property
    def has_pending(self) -> bool:
        """Whether something waits to be sent."""
        return bool(self._pending) or self._replace

    def _attach(self) -> None:
        """Subscribe to the frame; call at the end of a subclass's ``__init__``."""
        frame = self.frame
        self._sink = frame.sink(self._on_batch)
        engine = _engine_frame(frame)
        if engine is not None:
            engine.on_reconfigure(self._on_reconfigure)
        graph = frame.graph
        self._unsubscribe = [graph.on_close(self._on_stream_end), graph.on_reset(self._on_reset),
                             graph.add_view(self)]
        self._scheduler.add(self)
        self._scheduler.wake()
        _cells.track(self)

    def _schedule_with(self, scheduler: Scheduler) -> None:
        """Be updated by *scheduler* (a dashboard's) instead of the current one."""
        self._scheduler.discard(self)
        self._scheduler = scheduler
        scheduler.add(self)
        scheduler.wake()

    # -- data in ---------------------------------------------------------------------------
    def _on_batch(self, batch: pd.DataFrame) -> None:
        if self._closed or not len(batch):
            return
        if not self._pending:
            self._pending_since = self.frame.graph.batch_arrival or time.monotonic()
        self._pending.append(batch[self._columns])
        self.rows_in += len(batch)
        if len(self._pending) > 1 and self.pending_rows > self._compact_at:
            self._compact_pending()
        self._scheduler.wake()
        self._scheduler.poll()

    def _compact_pending(self) -> None:
        """Merge the queue into what one flush of it would draw (rows kept: bounded).

        Held updates (the page is behind) accumulate here; rows that a flush would drop
        (beyond ``max_points`` per line, older than a key's latest value) are dropped now.
        """
        data = pd.concat(self._pending, ignore_index=True)
        data = self._compact(data, replace=self._replace)
        self._pending = [data]
        self._compact_at = max(_COMPACT_MIN_ROWS, 2 * len(data))

    def _compact(self, data: pd.DataFrame, *, replace: bool) -> pd.DataFrame:
        """The rows of *data* that one update of all of it would still draw (subclasses)."""
        return data

    def _on_stream_end(self) -> None:
        if not self._scheduler.timed:
            self.flush()

    def _on_reset(self, engine_frame: StreamingFrame) -> None:
        """The engine this view follows re-emits its history (what-if): replace, not add."""
        if engine_frame in self.frame.lineage():
            self._pending = []
            self._replace = True
            self._scheduler.wake()

    async def drain(self) -> None:
        """Wait until every row received so far has been sent (used by ``frame.wait()``)."""
        if not self._scheduler.running:
            self.flush()
            return
        while self.has_pending and not self._closed and self._scheduler.running:
            await asyncio.sleep(self.period / 2)
        if self.has_pending:
            self.flush()

    @property
    def pending_rows(self) -> int:
        """Rows received and not yet sent (the view's buffer)."""
        return sum(len(p) for p in self._pending)

    # -- data out --------------------------------------------------------------------------
    def flush(self) -> None:
        """Send what arrived since the last update to the browser, as one coalesced update."""
        self._flush(time.monotonic())

    def _flush(self, now: float) -> None:
        if self._closed or not self.has_pending:
            return
        if self._pending:
            data = pd.concat(self._pending, ignore_index=True) if len(self._pending) > 1 \
                else self._pending[0]
        else:
            data = self.frame.example[self._columns]
        self._pending = []
        self._compact_at = _COMPACT_MIN_ROWS
        replace, self._replace = self._replace, False
        self._last_flush = now
        batch = self.model.batch() if self.model is not None else contextlib.nullcontext()
        with batch:
            self._render(data, replace=replace)
        self.updates += 1
        if self._pending_since:
            self.frame.graph.record_latency(time.monotonic() - self._pending_since)
            self._pending_since = 0.0

    def _render(self, data: pd.DataFrame, *, replace: bool) -> None:
        raise NotImplementedError

    def data(self) -> pd.DataFrame:
        """What the view holds now, as a DataFrame."""
        raise NotImplementedError

    # -- titles and params -----------------------------------------------------------------
    def _title(self, default: str) -> str:
        if self._fixed_title is not None:
            return self._fixed_title
        engine = _engine_frame(self.frame)
        describe = getattr(engine, "describe", None)
        return f"{default} — {describe()}" if describe is not None else default

    def _on_reconfigure(self, frame: Any) -> None:
        pass

    # -- display and teardown --------------------------------------------------------------
    @property
    def root(self) -> Any:
        """The Bokeh model this view draws into (a figure, or a DataTable)."""
        raise NotImplementedError

    @property
    def widget(self) -> BatchedBokehModel:
        """The ipywidget showing the view (put it in your own ipywidgets layouts)."""
        ensure_bokehjs()
        if self.model is None:
            self.model = BatchedBokehModel(self.root)
            self._scheduler.model = self.model
        return self.model

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)  # type: ignore[no-untyped-call]

    def _detach(self) -> None:
        """Unsubscribe from anything besides the frame (subclasses)."""

    def close(self) -> None:
        """Stop updating: detach from the stream, stop the timer, close the widget."""
        if self._closed:
            return
        self._closed = True
        self._pending = []
        self._replace = False
        self._scheduler.discard(self)
        self._sink.destroy()
        self._detach()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        if self.model is not None:
            self.model.close()

    def _teardown(self) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether the view was closed."""
        return self._closed


class XYView(View):
    """A live Bokeh plot of ``y`` against ``x``, one line (or marker set, or band) per key.

    Rows reach the browser as deltas (``ColumnDataSource.stream(new_rows, rollover=...)``,
    one source per key), and updates are coalesced to at most ``max_fps`` per second
    whatever the input rate. A frame of ``emit="update"`` windows re-sends windows whose
    value changed: those reach the browser as ``.patch`` of the points already drawn. (One
    source with a column per key sends fewer messages, but BokehJS then redraws every line
    on each update: in headless chromium under load that froze the page, where a source per
    key kept it responsive.)

    Parameters
    ----------
    frame
        The frame to plot.
    kind
        ``"line"``, ``"step"``, ``"scatter"`` or ``"band"``.
    x, y
        Columns for the axes (a datetime ``x`` gives a time axis); ``y`` is optional for a band.
    lower, upper
        The band's edges (``kind="band"``).
    by
        Key column: one line (and legend entry) per distinct value.
    max_points
        Points kept per line, in the kernel and in the browser (Bokeh's ``rollover``).
    span
        With a time ``x``: the time the line should cover. Rows then arrive decimated to
        ``max_points`` over ``span`` (first, last, min and max of each of ``max_points / 4``
        time buckets, so spikes survive), which keeps a fast raw feed's history visible.
    max_fps
        Most updates sent to the browser per second.
    show_watermark
        Draw the watermark (dashed red), window boundaries (dotted grey) and late events (red
        crosses) of the window engine this frame comes from (``True``), or of the windowed
        frame given.
    title
        Plot title; for a windowed frame the default names the window and follows its Params.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
    ...                    "host": pd.Series([], dtype=str), "cpu": pd.Series([], dtype=float)})
    >>> sdf = rtnb.StreamingFrame(ex, time="t")
    >>> view = sdf.plot.line(x="t", y="cpu", by="host")
    >>> sdf.emit(pd.DataFrame({"t": pd.to_datetime(["2026-01-01", "2026-01-02"]),
    ...                        "host": ["a", "b"], "cpu": [1.0, 2.0]}))
    >>> view.flush()
    >>> {k: len(s.data["y"]) for k, s in view.sources.items()}
    {'a': 1, 'b': 1}
    >>> view.close()
    """

    def __init__(self, frame: StreamingFrame, kind: str = "line", *, x: str,
                 y: str | None = None, lower: str | None = None, upper: str | None = None,
                 by: str | None = None, max_points: int = 1_000, rollover: int | None = None,
                 span: DurationLike | None = None, max_fps: float = 10.0,
                 show_watermark: bool | StreamingFrame = False, title: str | None = None,
                 height: int = 320, width: int | None = None) -> None:
        if kind not in ("line", "step", "scatter", "band"):
            msg = f"plot kind must be line, step, scatter or band; got {kind!r}"
            raise ConfigError(msg)
        if kind == "band" and (lower is None or upper is None):
            msg = "a band needs `lower` and `upper` columns"
            raise ConfigError(msg)
        if kind != "band" and y is None:
            msg = f"a {kind} plot needs a `y` column"
            raise ConfigError(msg)
        if rollover is not None:  # Bokeh's name for it
            max_points = rollover
        _check_positive_int(max_points, "max_points")
        self.kind = kind
        self.x, self.y, self.by = x, y, by
        self.lower, self.upper = lower, upper
        # value columns of each key's ColumnDataSource -> frame columns
        self._values = {name: col for name, col in
                        (("y", y), ("lower", lower), ("upper", upper)) if col is not None}
        super().__init__(frame, columns=[x, *self._values.values(), *([by] if by else [])],
                         max_fps=max_fps, title=title)
        for name, col in self._values.items():
            dtype = frame.example[col].dtype
            if not pd.api.types.is_numeric_dtype(dtype):
                msg = (f"plot of {frame.name!r}: {name} column {col!r} must be numeric; "
                       f"it is {dtype}")
                raise ConfigError(msg)
        self.max_points = max_points
        self.rollover = max_points
        self._time_x = pd.api.types.is_datetime64_any_dtype(frame.example[x].dtype)
        self._bucket: int | None = None
        if span is not None:
            if not self._time_x:
                msg = f"`span` needs a time x axis; {x!r} of {frame.name!r} is not a datetime"
                raise ConfigError(msg)
            self._bucket = max(1, to_ns(span, name="span") * 4 // max_points)
        engine = _engine_frame(frame)
        windowed = getattr(engine, "windowed", None)
        # windows re-sent with new values (emit="update") patch the points already drawn
        self._upsert = windowed is not None and windowed.emit == "update" and \
            x in ("window_start", "window_end")
        kwargs: dict[str, Any] = {"height": height,
                                  "x_axis_type": "datetime" if self._time_x else "linear",
                                  "tools": "pan,wheel_zoom,box_zoom,reset,save",
                                  "output_backend": "canvas"}
        if width is None:
            kwargs["sizing_mode"] = "stretch_width"
        else:
            kwargs["width"] = width
        kwargs["title"] = self._title(y or f"{lower}-{upper}")
        self.figure = figure(**kwargs)
        self.figure.xaxis.axis_label = x
        self.figure.yaxis.axis_label = y or f"{lower} - {upper}"
        _browser_only(self.figure)
        if by is not None:
            # Outside the plot area, so it never hides data; click an entry to hide its line.
            legend = Legend(click_policy="hide", label_text_font_size="8pt", spacing=0)
            self.figure.add_layout(legend, "right")
        self.sources: dict[Any, ColumnDataSource] = {}
        self._watermark_of: Any = None
        if show_watermark is not False:
            self._setup_watermark(show_watermark)
        self._attach()

    # -- watermark, window boundaries, late events -----------------------------------------
    def _setup_watermark(self, show: bool | StreamingFrame) -> None:
        target = _engine_frame(self.frame) if show is True else show
        if not isinstance(target, WindowedFrame | RollingFrame):
            msg = (f"show_watermark needs a windowed frame: {self.frame.name!r} does not come "
                   "from a window; pass the windowed frame, show_watermark=agg")
            raise ConfigError(msg)
        if not self._time_x:
            msg = "show_watermark needs a time x axis"
            raise ConfigError(msg)
        self._watermark_of = target
        self._wm_span = Span(dimension="height", line_color=LATE_COLOR, line_dash="dashed",
                             line_width=1.5, location=None, name="watermark")
        self.figure.add_layout(self._wm_span)
        self._wm_sent: pd.Timestamp | None = None
        self._bounds = ColumnDataSource({"x": np.array([], dtype="datetime64[ns]")},
                                        name=f"{self.frame.name}:window-bounds")
        self.figure.vspan(x="x", source=self._bounds, line_color="#888888", line_alpha=0.5,
                          line_dash="dotted")
        self._bounds_pending: list[np.ndarray[Any, Any]] = []
        self._bound_max = np.iinfo(np.int64).min
        self._bound_sink = None
        spec = getattr(target, "spec", None)
        if isinstance(target, WindowedFrame) and isinstance(spec, Tumbling | Sliding):
            self._bound_sink = target.sink(self._on_windows)
        late_cols = list(target.late.columns)
        self._late_y = self.y if self.y in late_cols else None
        late_x = target.late.time
        self._late_x = late_x
        self._late = ColumnDataSource({"x": np.array([], dtype="datetime64[ns]"),
                                       "y": np.array([], dtype=np.float64)},
                                      name=f"{self.frame.name}:late")
        if self._late_y is not None:
            self.figure.scatter("x", "y", source=self._late, marker="x", size=9,
                                color=LATE_COLOR, legend_label="late")
        else:
            self.figure.vspan(x="x", source=self._late, line_color=LATE_COLOR, line_alpha=0.6)
        self._late_pending: list[pd.DataFrame] = []
        self._late_sink = target.late.sink(self._on_late)

    def _on_windows(self, windows: pd.DataFrame) -> None:
        if not self._closed and len(windows):
            self._bounds_pending.append(windows["window_end"].to_numpy())
            if len(self._bounds_pending) > _COMPACT_SIDE:  # held: keep what a flush draws
                ends = np.unique(_ns(np.concatenate(self._bounds_pending)))
                self._bounds_pending = [ends[-self.max_points:].view("datetime64[ns]")]

    def _on_late(self, rows: pd.DataFrame) -> None:
        if not self._closed and len(rows):
            cols = [c for c in (self._late_x, self._late_y) if c is not None]
            self._late_pending.append(rows[cols])
            if len(self._late_pending) > _COMPACT_SIDE:
                late = pd.concat(self._late_pending, ignore_index=True)
                self._late_pending = [late.iloc[-self.max_points:]]
            if not self._pending:  # late rows alone should reach the plot too
                self._pending.append(self.frame.example[self._columns])

    def _render_watermark(self) -> None:
        target = self._watermark_of
        wm = target.watermark
        if wm is not None and wm != self._wm_sent and wm < pd.Timestamp.max:
            self._wm_span.location = wm.value / 1e6  # ms since the epoch, as BokehJS uses
            self._wm_sent = wm
        if self._bounds_pending:
            ends = np.unique(_ns(np.concatenate(self._bounds_pending)))
            self._bounds_pending = []
            ends = ends[ends > self._bound_max]
            if len(ends):
                self._bound_max = int(ends[-1])
                self._bounds.stream({"x": ends.view("datetime64[ns]")},
                                    rollover=self.max_points)
        if self._late_pending:
            late = pd.concat(self._late_pending, ignore_index=True).iloc[-self.max_points:]
            self._late_pending = []
            y = late[self._late_y].to_numpy(dtype=np.float64, na_value=np.nan) \
                if self._late_y is not None else np.zeros(len(late))
            self._late.stream({"x": late[self._late_x].to_numpy(), "y": y},
                              rollover=self.max_points)

    def _detach(self) -> None:
        for name in ("_bound_sink", "_late_sink", "_alert_sink"):
            sink = getattr(self, name, None)
            if sink is not None:
                sink.destroy()

    # -- alerts ----------------------------------------------------------------------------
    @_record.method
    def mark(self, alerts: StreamingFrame, *, color: str = LATE_COLOR) -> XYView:
        """Draw an alert stream on this time plot: firing markers and episode bands.

        A triangle marks where an alert fired (at its ``value`` when it has one), a shaded
        band spans each episode from its start to its resolution. ``alerts`` is the output
        of :func:`rtnb.alert`. Returns the view, for chaining.

        Examples
        --------
        >>> import pandas as pd, rtnb
        >>> ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
        ...                    "cpu": pd.Series([], dtype=float)})
        >>> sdf = rtnb.StreamingFrame(ex, time="t")
        >>> view = sdf.plot.line(x="t", y="cpu").mark(rtnb.alert(sdf, sdf["cpu"] > 90,
        ...                                                       on="cpu"))
        >>> sdf.emit(pd.DataFrame({"t": pd.date_range("2026-01-01", periods=3, freq="s"),
        ...                        "cpu": [95.0, 96.0, 50.0]}))
        >>> view.flush()
        >>> len(view._fired.data["x"]), len(view._bands.data["x0"])
        (1, 1)
        """
        if not self._time_x:
            msg = "mark() needs a time x axis"
            raise ConfigError(msg)
        missing = {"state", "time", "started", "value"} - set(alerts.columns)
        if missing:
            msg = f"mark() takes the output of rtnb.alert(); {alerts.name!r} lacks {missing}"
            raise ConfigError(msg)
        self._fired = ColumnDataSource({"x": np.array([], dtype="datetime64[ns]"),
                                        "y": np.array([], dtype=np.float64)},
                                       name=f"{alerts.name}:fired")
        self._bands = ColumnDataSource({"x0": np.array([], dtype="datetime64[ns]"),
                                        "x1": np.array([], dtype="datetime64[ns]")},
                                       name=f"{alerts.name}:bands")
        self.figure.vstrip(x0="x0", x1="x1", source=self._bands, fill_color=color,
                           fill_alpha=0.12, line_alpha=0)
        self.figure.scatter("x", "y", source=self._fired, marker="triangle", size=10,
                            color=color, legend_label=alerts.name)
        self._alert_pending: list[pd.DataFrame] = []
        self._alert_sink = alerts.sink(self._on_alerts)
        return self

    def _on_alerts(self, events: pd.DataFrame) -> None:
        if not self._closed and len(events):
            self._alert_pending.append(events[["state", "time", "started", "value"]])
            if len(self._alert_pending) > _COMPACT_SIDE:  # the newest markers and bands
                merged = pd.concat(self._alert_pending, ignore_index=True)
                state = merged["state"]
                keep = np.zeros(len(merged), dtype=bool)
                for drawn in ("firing", "resolved"):
                    keep[np.flatnonzero(state.to_numpy() == drawn)[-self.max_points:]] = True
                self._alert_pending = [merged[keep]]
            if not self._pending:
                self._pending.append(self.frame.example[self._columns])

    def _render_alerts(self) -> None:
        events = pd.concat(self._alert_pending, ignore_index=True)
        self._alert_pending = []
        fired = events[events["state"] == "firing"]
        if len(fired):
            y = fired["value"].to_numpy(dtype=np.float64, na_value=np.nan)
            self._fired.stream({"x": _writable(fired["time"].to_numpy()), "y": _writable(y)},
                               rollover=self.max_points)
        done = events[events["state"] == "resolved"]
        if len(done):
            self._bands.stream({"x0": _writable(done["started"].to_numpy()),
                                "x1": _writable(done["time"].to_numpy())},
                               rollover=self.max_points)

    # -- rendering -------------------------------------------------------------------------
    def _render(self, data: pd.DataFrame, *, replace: bool) -> None:
        groups: list[tuple[Any, pd.DataFrame]]
        if self.by is None:
            groups = [(self.y or "band", data)]
        else:
            groups = [(norm_key(k), g) for k, g in data.groupby(self.by, sort=False, dropna=False)]
        if replace:
            seen = {k for k, _ in groups}
            empty = self.frame.example[self._columns]
            groups += [(k, empty) for k in self.sources if k not in seen]
        for key, rows in groups:
            source = self.sources.get(key)
            if source is None:
                if not len(rows):
                    continue
                source = self._add_key(key)
            if replace:
                self._replace_key(source, rows)
            elif self._upsert:
                self._upsert_key(source, rows)
            else:
                self._append_key(source, rows)
        if self._watermark_of is not None:
            self._render_watermark()
        if getattr(self, "_alert_pending", None):
            self._render_alerts()

    def _compact(self, data: pd.DataFrame, *, replace: bool) -> pd.DataFrame:
        """Per key, the rows one update would still draw, keys in order of first appearance.

        Appending: the last ``max_points`` rows (with ``span``: of the M4-decimated rows, as
        ``_append_key`` keeps them). Windows re-sent (``emit="update"``) or a replacement:
        each x once with its latest value, the ``max_points`` newest x (only the duplicates
        go with ``span``, where decimation decides which points are drawn).
        """
        if len(data) <= self.max_points:
            return data
        groups = [data] if self.by is None else \
            [g for _, g in data.groupby(self.by, sort=False, dropna=False)]
        kept = []
        for rows in groups:
            if self._upsert:
                rows = rows.drop_duplicates(self.x, keep="last").sort_values(self.x,
                                                                             kind="stable")
                if self._bucket is None or replace:
                    rows = self._decimate(rows).iloc[-self.max_points:]
            else:
                rows = self._decimate(rows).iloc[-self.max_points:]
            kept.append(rows)
        return pd.concat(kept, ignore_index=True)

    def _columns_of(self, rows: pd.DataFrame) -> dict[str, Any]:
        # Writable arrays: Bokeh keeps them as the source's columns and patches them in place
        # (pandas 3 hands out read-only views).
        cols: dict[str, Any] = {"x": _writable(rows[self.x].to_numpy())}
        for name, col in self._values.items():
            cols[name] = _writable(rows[col].to_numpy(dtype=np.float64, na_value=np.nan))
        return cols

    def _decimate(self, rows: pd.DataFrame) -> pd.DataFrame:
        if self._bucket is None or len(rows) <= 4:
            return rows
        x = _ns(rows[self.x].to_numpy())
        if np.any(x[1:] < x[:-1]):
            order = np.argsort(x, kind="stable")
            rows, x = rows.iloc[order], x[order]
        first = next(iter(self._values.values()))
        y = rows[first].to_numpy(dtype=np.float64, na_value=np.nan)
        return rows.iloc[m4(x, y, self._bucket)]

    def _append_key(self, source: ColumnDataSource, rows: pd.DataFrame) -> None:
        tail = self._decimate(rows).iloc[-self.max_points:]
        source.stream(self._columns_of(tail), rollover=self.max_points)
        self.rows_sent += len(tail)

    def _replace_key(self, source: ColumnDataSource, rows: pd.DataFrame) -> None:
        if self._upsert and len(rows):
            rows = rows.drop_duplicates(self.x, keep="last").sort_values(self.x, kind="stable")
        tail = self._decimate(rows).iloc[-self.max_points:]
        source.data = self._columns_of(tail)
        self.rows_sent += len(tail)

    def _upsert_key(self, source: ColumnDataSource, rows: pd.DataFrame) -> None:
        """Patch points whose x is drawn already, stream the newer ones (``emit="update"``)."""
        rows = rows.drop_duplicates(self.x, keep="last").sort_values(self.x, kind="stable")
        drawn = _ns(source.data["x"])
        x = _ns(rows[self.x].to_numpy())
        last = drawn[-1] if len(drawn) else np.iinfo(np.int64).min
        older = x <= last
        if older.any():
            pos = np.searchsorted(drawn, x[older])
            pos = np.minimum(pos, len(drawn) - 1)
            found = drawn[pos] == x[older]
            if not found.all():
                # A window older than the newest drawn one appeared (a key that was quiet):
                # redraw this key in order. Rare, and bounded by max_points.
                have = pd.DataFrame({self.x: drawn.view("datetime64[ns]") if self._time_x
                                     else source.data["x"],
                                     **{col: source.data[name]
                                        for name, col in self._values.items()}})
                if self.by is not None:
                    have[self.by] = rows[self.by].iloc[0]
                merged = pd.concat([have, rows[have.columns]], ignore_index=True)
                self._replace_key(source, merged)
                return
            values = self._columns_of(rows[older])
            source.patch({name: list(zip(pos[found].tolist(), values[name].tolist(),
                                         strict=True))
                          for name in self._values})
            self.rows_sent += int(found.sum())
        newer = rows[~older]
        if len(newer):
            self._append_key(source, newer)

    def _add_key(self, key: Any) -> ColumnDataSource:
        x_dtype = "datetime64[ns]" if self._time_x else np.float64
        data: dict[str, Any] = {"x": np.array([], dtype=x_dtype)}
        data.update({name: np.array([], dtype=np.float64) for name in self._values})
        source = ColumnDataSource(data, name=f"{self.frame.name}:{key}")
        color = _color(len(self.sources))
        label = ("<missing>" if key is None else str(key)) if self.by is not None else \
            (self.y or "band")
        fig = self.figure
        if self.kind == "line":
            fig.line("x", "y", source=source, color=color, line_width=1.6, legend_label=label)
        elif self.kind == "step":
            fig.step("x", "y", source=source, color=color, line_width=1.6, mode="after",
                     legend_label=label)
        elif self.kind == "scatter":
            fig.scatter("x", "y", source=source, color=color, size=4, alpha=0.7,
                        legend_label=label)
        else:
            fig.varea(x="x", y1="lower", y2="upper", source=source, fill_color=color,
                      fill_alpha=0.2, legend_label=label)
            if self.y is not None:
                fig.line("x", "y", source=source, color=color, line_width=1.4,
                         legend_label=label)
        self.sources[key] = source
        return source

    def data(self) -> pd.DataFrame:
        """What the plot holds now, long format: the ``by`` column (if any), ``x``, values.

        Examples
        --------
        >>> import pandas as pd, rtnb
        >>> ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
        ...                    "cpu": pd.Series([], dtype=float)})
        >>> sdf = rtnb.StreamingFrame(ex, time="t")
        >>> view = sdf.plot.line(x="t", y="cpu")
        >>> sdf.emit(pd.DataFrame({"t": pd.to_datetime(["2026-01-01 09:00"]), "cpu": [1.0]}))
        >>> view.flush()
        >>> view.data()
                            x    y
        0 2026-01-01 09:00:00  1.0
        """
        key = self.by or "key"
        names = list(self._values)
        parts = []
        for k, s in self.sources.items():
            x = np.asarray(s.data["x"])
            frame = pd.DataFrame({"x": x.astype("datetime64[ns]") if self._time_x else x,
                                  **{n: np.asarray(s.data[n]) for n in names}})
            if self.by is not None:
                frame.insert(0, key, k)
            parts.append(frame)
        if not parts:
            return pd.DataFrame(columns=[*([key] if self.by else []), "x", *names])
        return pd.concat(parts, ignore_index=True)

    # -- titles and params -----------------------------------------------------------------
    def _on_reconfigure(self, frame: Any) -> None:
        if not self._closed:
            title = self.figure.title
            if isinstance(title, Title):
                title.text = self._title(self.y or f"{self.lower}-{self.upper}")

    @property
    def root(self) -> Any:
        """The Bokeh figure."""
        return self.figure

    def __repr__(self) -> str:
        by = f" by {self.by!r}" if self.by else ""
        what = self.y if self.kind != "band" else f"{self.lower}..{self.upper}"
        return f"<XYView {self.kind} {what!r} vs {self.x!r}{by} of {self.frame.name!r}>"


#: The line view is the XY view (the name under which it first shipped).
LineView = XYView


class BarView(View):
    """One bar per key with its latest value: new keys are streamed, known keys patched.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> ex = pd.DataFrame({"host": pd.Series([], dtype=str), "cpu": pd.Series([], dtype=float)})
    >>> sdf = rtnb.StreamingFrame(ex)
    >>> bars = sdf.plot.bar(y="cpu", by="host")
    >>> sdf.emit(pd.DataFrame({"host": ["a", "b", "a"], "cpu": [1.0, 2.0, 3.0]}))
    >>> bars.flush()
    >>> bars.data()
      host  cpu
    0    a  3.0
    1    b  2.0
    """

    kind = "bar"

    def __init__(self, frame: StreamingFrame, *, y: str, by: str, max_fps: float = 10.0,
                 title: str | None = None, height: int = 320, width: int | None = None,
                 horizontal: bool = False) -> None:
        super().__init__(frame, columns=[by, y], max_fps=max_fps, title=title)
        self.y, self.by = y, by
        self.source = ColumnDataSource({"key": [], "y": np.array([], dtype=np.float64),
                                        "color": []}, name=f"{frame.name}:bars")
        self._index: dict[str, int] = {}
        kwargs: dict[str, Any] = {"height": height, "tools": "save", "title": self._title(y),
                                  "output_backend": "canvas"}
        if width is None:
            kwargs["sizing_mode"] = "stretch_width"
        else:
            kwargs["width"] = width
        self._horizontal = horizontal
        factors = FactorRange(factors=[])
        if horizontal:
            self.figure = figure(y_range=factors, **kwargs)
            self.figure.hbar(y="key", right="y", height=0.8, color="color", source=self.source)
        else:
            self.figure = figure(x_range=factors, **kwargs)
            self.figure.vbar(x="key", top="y", width=0.8, color="color", source=self.source)
            self.figure.xaxis.major_label_orientation = 0.8
        self._factors = factors
        for model in (self.figure, self.figure.x_range if horizontal else self.figure.y_range):
            model.syncable = False
        self._attach()

    def _compact(self, data: pd.DataFrame, *, replace: bool) -> pd.DataFrame:
        """Each key's latest row (keys in order of first appearance): what a flush draws."""
        return _latest(data, self.by)

    def _render(self, data: pd.DataFrame, *, replace: bool) -> None:
        latest = _latest(data, self.by)
        keys = ["<missing>" if norm_key(k) is None else str(k) for k in latest[self.by]]
        values = latest[self.y].to_numpy(dtype=np.float64, na_value=np.nan)
        if replace:
            self._index = {k: i for i, k in enumerate(keys)}
            self._factors.factors = list(keys)
            self.source.data = {"key": keys, "y": _writable(values),
                                "color": [_color(i) for i in range(len(keys))]}
            self.rows_sent += len(keys)
            return
        patches, new_keys, new_values = [], [], []
        for key, value in zip(keys, values.tolist(), strict=True):
            i = self._index.get(key)
            if i is None:
                new_keys.append(key)
                new_values.append(value)
            else:
                patches.append((i, value))
        if patches:
            self.source.patch({"y": patches})
        if new_keys:
            start = len(self._index)
            for offset, key in enumerate(new_keys):
                self._index[key] = start + offset
            self._factors.factors = [*self._factors.factors, *new_keys]
            self.source.stream({"key": new_keys, "y": np.array(new_values, dtype=np.float64),
                                "color": [_color(start + i) for i in range(len(new_keys))]})
        self.rows_sent += len(keys)

    def data(self) -> pd.DataFrame:
        """The bars now: one row per key with its latest value."""
        return pd.DataFrame({self.by: list(self.source.data["key"]),
                             self.y: np.asarray(self.source.data["y"], dtype=np.float64)})

    @property
    def root(self) -> Any:
        """The Bokeh figure."""
        return self.figure

    def _on_reconfigure(self, frame: Any) -> None:
        if not self._closed and isinstance(self.figure.title, Title):
            self.figure.title.text = self._title(self.y)

    def __repr__(self) -> str:
        return f"<BarView {self.y!r} by {self.by!r} of {self.frame.name!r}>"


class TableView(View):
    """The latest ``rows`` rows of a frame, or with ``by`` the latest row per key.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> ex = pd.DataFrame({"host": pd.Series([], dtype=str), "cpu": pd.Series([], dtype=float)})
    >>> sdf = rtnb.StreamingFrame(ex)
    >>> table = sdf.plot.table(by="host")
    >>> sdf.emit(pd.DataFrame({"host": ["a", "b", "a"], "cpu": [1.0, 2.0, 3.0]}))
    >>> table.flush()
    >>> table.data()
      host  cpu
    0    a  3.0
    1    b  2.0
    """

    kind = "table"

    def __init__(self, frame: StreamingFrame, *, columns: list[str] | None = None,
                 by: str | None = None, rows: int = 20, max_fps: float = 10.0,
                 title: str | None = None, height: int = 280,
                 width: int | None = None) -> None:
        cols = list(columns) if columns is not None else list(frame.columns)
        if by is not None and by not in cols:
            cols.insert(0, by)
        _check_positive_int(rows, "rows")
        super().__init__(frame, columns=cols, max_fps=max_fps, title=title)
        self.by = by
        self.rows = rows
        example = frame.example[self._columns]
        self._dtypes = example.dtypes
        self.source = ColumnDataSource(self._to_columns(example), name=f"{frame.name}:table")
        self._index: dict[Any, int] = {}
        table_columns = []
        for col, dtype in self._dtypes.items():
            formatter: Any = None
            if pd.api.types.is_datetime64_any_dtype(dtype):
                formatter = DateFormatter(format="%Y-%m-%d %H:%M:%S")
            elif pd.api.types.is_float_dtype(dtype):
                formatter = NumberFormatter(format="0,0.000")
            kwargs = {"formatter": formatter} if formatter is not None else {}
            table_columns.append(TableColumn(field=str(col), title=str(col), **kwargs))
        sizing: dict[str, Any] = {"width": width} if width is not None else \
            {"sizing_mode": "stretch_width"}
        self.table = DataTable(source=self.source, columns=table_columns, height=height,
                               index_position=None, **sizing)
        self.table.syncable = False
        self._attach()

    def _to_columns(self, rows: pd.DataFrame) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for col, dtype in self._dtypes.items():
            values = rows[col]
            if pd.api.types.is_datetime64_any_dtype(dtype) or \
                    pd.api.types.is_float_dtype(dtype):
                out[str(col)] = _writable(values.to_numpy())
            elif pd.api.types.is_integer_dtype(dtype) and not values.hasnans:
                out[str(col)] = _writable(values.to_numpy())
            else:
                out[str(col)] = ["" if norm_key(v) is None else str(v) for v in values]
        return out

    def _compact(self, data: pd.DataFrame, *, replace: bool) -> pd.DataFrame:
        """The last ``rows`` rows, or each key's latest row: what a flush draws."""
        return data.iloc[-self.rows:] if self.by is None else _latest(data, self.by)

    def _render(self, data: pd.DataFrame, *, replace: bool) -> None:
        if self.by is None:
            tail = data.iloc[-self.rows:]
            if replace:
                self.source.data = self._to_columns(tail)
            else:
                self.source.stream(self._to_columns(tail), rollover=self.rows)
            self.rows_sent += len(tail)
            return
        latest = _latest(data, self.by)
        keys = [norm_key(k) for k in latest[self.by]]
        if replace:
            self._index = {k: i for i, k in enumerate(keys)}
            self.source.data = self._to_columns(latest)
            self.rows_sent += len(latest)
            return
        known = np.array([k in self._index for k in keys], dtype=bool)
        if known.any():
            rows = latest[known]
            columns = self._to_columns(rows)
            positions = [self._index[k] for k, is_known in zip(keys, known, strict=True)
                         if is_known]
            self.source.patch({col: list(zip(positions, list(values), strict=True))
                               for col, values in columns.items() if col != self.by})
        if (~known).any():
            rows = latest[~known]
            start = len(self._index)
            for offset, key in enumerate(k for k, is_known in zip(keys, known, strict=True)
                                         if not is_known):
                self._index[key] = start + offset
            self.source.stream(self._to_columns(rows))
        self.rows_sent += len(latest)

    def data(self) -> pd.DataFrame:
        """The rows the table shows now."""
        frame = pd.DataFrame({c: list(v) if not isinstance(v, np.ndarray) else v
                              for c, v in self.source.data.items()})
        for col, dtype in self._dtypes.items():
            if pd.api.types.is_datetime64_any_dtype(dtype):
                frame[col] = np.asarray(frame[col]).astype("datetime64[ns]")
        return frame[[str(c) for c in self._dtypes.index]]

    @property
    def root(self) -> Any:
        """The Bokeh DataTable."""
        return self.table

    def __repr__(self) -> str:
        return f"<TableView {self._columns!r} of {self.frame.name!r}>"
