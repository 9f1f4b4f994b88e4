"""The view base: what every live view of a StreamingFrame shares.

Every view follows one frame. Batches are queued as they arrive and sent to the browser by a
timer on the running event loop (at most ``max_fps`` updates a second, whatever the input
rate), inside one :meth:`BatchedBokehModel.batch`; the views of a dashboard share one timer
(:class:`rtnb.viz._schedule.Scheduler`), which holds their updates while the page has not
acknowledged enough of what it was sent. Held batches are merged in the queue into what one
update would draw (``max_points`` per line, each key's latest value), so it stays bounded.
New rows travel as
``ColumnDataSource.stream(rows, rollover=max_points)``; rows that replace earlier ones (an
``emit="update"`` window that changed, a key's latest value) travel as ``.patch``. Tables
without ``by`` replace their few rows (the last ``rows``) on each update and nudge the grid
to redraw (Bokeh 3.9's ``DataTable`` redraws only when its row count changes).

Kinds of views subclass :class:`View` (:mod:`rtnb.viz._xy`, :mod:`rtnb.viz._bar`,
:mod:`rtnb.viz._table`); this module also holds the small helpers they share.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from bokeh.palettes import Category20_20, Category20b_20, Category20c_20

from rtnb import _cells
from rtnb.errors import ConfigError
from rtnb.frame import RollingFrame, WindowedFrame
from rtnb.viz._bokeh import BatchedBokehModel, ensure_bokehjs
from rtnb.viz._schedule import Scheduler

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame

__all__ = ["View"]

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


#: 60 distinct colours: Category20's ten strong colours (Category10), its ten light ones,
#: then Category20b and Category20c.
PALETTE: tuple[str, ...] = tuple(dict.fromkeys(
    [*Category20_20[::2], *Category20_20[1::2], *Category20b_20, *Category20c_20]))

_KEY_COLORS: dict[str, str] = {}


def _color(key: Any) -> str:
    """The colour of ``key`` (its label) in every view of the session.

    A key gets the next colour of :data:`PALETTE` the first time any view draws it and keeps
    it, so a host is the same colour in a line plot, a bar chart and after a what-if
    re-ordered the bars; after 60 keys the colours repeat.

    Examples
    --------
    >>> _color("web-01") == _color("web-01")
    True
    >>> len(set(PALETTE))
    60
    """
    label = str(key)
    color = _KEY_COLORS.get(label)
    if color is None:
        color = _KEY_COLORS[label] = PALETTE[len(_KEY_COLORS) % len(PALETTE)]
    return color


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
        graph = frame.graph
        self._unsubscribe = [graph.on_close(self._on_stream_end), graph.on_reset(self._on_reset),
                             graph.add_view(self)]
        engine = _engine_frame(frame)
        if engine is not None:
            self._unsubscribe.append(engine.on_reconfigure(self._on_reconfigure))
        self._scheduler.add(self)
        self._scheduler.wake()
        _cells.track(self)

    def schedule_with(self, scheduler: Scheduler) -> None:
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

    def request_update(self) -> None:
        """Have the next tick update the view even if no row came (an overlay has news)."""
        if not self._pending:
            self._pending.append(self.frame.example[self._columns])

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
