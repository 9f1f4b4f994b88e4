"""Live Bokeh views of a StreamingFrame that send only new rows, at most ``max_fps`` a second."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from bokeh.models import ColumnDataSource
from bokeh.models.annotations import Legend, Title
from bokeh.palettes import Category10_10, Category20_20
from bokeh.plotting import figure

from rtnb.errors import ConfigError
from rtnb.viz._bokeh import BatchedBokehModel, ensure_bokehjs
from rtnb.windows.keys import _norm

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame

__all__ = ["LineView", "PlotAccessor"]


def _browser_only(fig: Any) -> None:
    """Do not sync browser-side changes of the figure and its ranges back to the kernel.

    Auto-ranging moves ``x_range``/``y_range`` as data arrive and the layout sets the plot's
    inner sizes; nothing in the kernel uses them, so they need not travel back as comm
    messages while a stream runs.
    """
    for model in (fig, fig.x_range, fig.y_range):
        model.syncable = False


def _x_values(values: Any, time_axis: bool) -> Any:
    array = np.asarray(values)
    return array.astype("datetime64[ns]") if time_axis else array


class PlotAccessor:
    """``sdf.plot``: builds live views of a frame."""

    def __init__(self, frame: StreamingFrame) -> None:
        self._frame = frame

    def line(self, x: str, y: str, *, by: str | None = None, rollover: int = 1_000,
             max_fps: float = 10.0, title: str | None = None, height: int = 320,
             width: int | None = None) -> LineView:
        """A live line per key (``by``) of ``y`` against ``x``; see :class:`LineView`."""
        return LineView(self._frame, x=x, y=y, by=by, rollover=rollover, max_fps=max_fps,
                        title=title, height=height, width=width)


class LineView:
    """A live Bokeh line plot of a frame, one line per key.

    Rows reach the browser as deltas (``ColumnDataSource.stream(new_rows, rollover=...)``,
    one source per key), and updates are coalesced to at most ``max_fps`` per second
    whatever the input rate. Memory is bounded by ``rollover`` points per line. (One source
    with a column per key sends fewer messages, but BokehJS then redraws every line on each
    update: in headless chromium under load that froze the page, where a source per key
    kept it responsive.)

    Parameters
    ----------
    frame
        The frame to plot.
    x, y
        Columns for the axes (a datetime ``x`` gives a time axis).
    by
        Key column: one line (and legend entry) per distinct value.
    rollover
        Points kept per line, in the kernel and in the browser.
    max_fps
        Most updates sent to the browser per second.
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

    def __init__(self, frame: StreamingFrame, *, x: str, y: str, by: str | None = None,
                 rollover: int = 1_000, max_fps: float = 10.0, title: str | None = None,
                 height: int = 320, width: int | None = None) -> None:
        for col in (x, y, *([by] if by else [])):
            if col not in frame.columns:
                msg = f"plot of {frame.name!r}: no column {col!r}; columns: {list(frame.columns)}"
                raise ConfigError(msg)
        if not max_fps > 0:
            msg = f"`max_fps` must be positive; got {max_fps!r}"
            raise ConfigError(msg)
        if isinstance(rollover, bool) or not isinstance(rollover, int) or rollover <= 0:
            msg = f"`rollover` must be a positive int; got {rollover!r}"
            raise ConfigError(msg)
        self.frame = frame
        self.x, self.y, self.by = x, y, by
        self.rollover = rollover
        self.max_fps = max_fps
        self._fixed_title = title
        time_axis = pd.api.types.is_datetime64_any_dtype(frame.example[x].dtype)
        kwargs: dict[str, Any] = {"height": height, "title": self._title(),
                                  "x_axis_type": "datetime" if time_axis else "linear",
                                  "tools": "pan,wheel_zoom,box_zoom,reset,save",
                                  "output_backend": "canvas"}
        if width is None:
            kwargs["sizing_mode"] = "stretch_width"
        else:
            kwargs["width"] = width
        self.figure = figure(**kwargs)
        self.figure.xaxis.axis_label = x
        self.figure.yaxis.axis_label = y
        _browser_only(self.figure)
        if by is not None:
            # Outside the plot area, so it never hides data; click an entry to hide its line.
            legend = Legend(click_policy="hide", label_text_font_size="8pt", spacing=0)
            self.figure.add_layout(legend, "right")
        self.sources: dict[Any, ColumnDataSource] = {}
        self._time_x = time_axis
        # The widget that shows the figure: its own, or a dashboard's that holds several.
        self.model: BatchedBokehModel | None = None
        self.updates = 0
        self.rows_sent = 0
        self._pending: list[pd.DataFrame] = []
        self._last_flush = 0.0
        self._closed = False
        self._sink = frame.sink(self._on_batch)
        self._task: asyncio.Task[None] | None = None
        on_reconfigure = getattr(frame, "on_reconfigure", None)
        if on_reconfigure is not None:
            on_reconfigure(self._on_reconfigure)
        frame._graph.close_hooks.append(self._on_stream_end)
        frame._graph.views.append(self)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._task = loop.create_task(self._pump(), name=f"rtnb-view:{frame.name}")

    # -- data in ---------------------------------------------------------------------------
    def _on_batch(self, batch: pd.DataFrame) -> None:
        if self._closed or not len(batch):
            return
        cols = [self.x, self.y] + ([self.by] if self.by else [])
        self._pending.append(batch[cols])
        if self._task is None and time.monotonic() - self._last_flush >= 1 / self.max_fps:
            self.flush()

    def _on_stream_end(self) -> None:
        if self._task is None:
            self.flush()

    async def _pump(self) -> None:
        period = 1 / self.max_fps
        while not self._closed:
            await asyncio.sleep(period)
            self.flush()
            if self.frame.closed and not self._pending:
                return

    async def drain(self) -> None:
        """Wait until every row received so far has been sent (used by ``frame.wait()``)."""
        if self._task is None or self._task.done():
            self.flush()
            return
        while self._pending and not self._closed:
            await asyncio.sleep(1 / self.max_fps / 2)

    # -- data out --------------------------------------------------------------------------
    def flush(self) -> None:
        """Send the rows received since the last update to the plot."""
        if not self._pending or self._closed:
            return
        data = pd.concat(self._pending, ignore_index=True) if len(self._pending) > 1 \
            else self._pending[0]
        self._pending = []
        self._last_flush = time.monotonic()
        batch = self.model.batch() if self.model is not None else contextlib.nullcontext()
        with batch:
            self._flush_per_key(data)
        self.updates += 1

    def _flush_per_key(self, data: pd.DataFrame) -> None:
        groups: list[tuple[Any, pd.DataFrame]]
        if self.by is None:
            groups = [(self.y, data)]
        else:
            groups = [(_norm(k), g) for k, g in data.groupby(self.by, sort=False, dropna=False)]
        for key, rows in groups:
            source = self.sources.get(key)
            if source is None:
                source = self._add_line(key)
            tail = rows.iloc[-self.rollover:]
            source.stream({"x": tail[self.x].to_numpy(),
                           "y": tail[self.y].to_numpy(dtype=np.float64, na_value=np.nan)},
                          rollover=self.rollover)
            self.rows_sent += len(tail)

    def _draw_line(self, key: Any, y: str, source: ColumnDataSource, index: int) -> None:
        palette = Category10_10 if index < 10 else Category20_20
        color = palette[index % len(palette)]
        label = ("<missing>" if key is None else str(key)) if self.by is not None else self.y
        self.figure.line("x", y, source=source, color=color, line_width=1.6, legend_label=label)

    def _empty_x(self) -> Any:
        x_dtype = self.frame.example[self.x].dtype
        return np.array([], dtype="datetime64[ns]") if pd.api.types.is_datetime64_any_dtype(
            x_dtype) else np.array([], dtype=np.float64)

    def _add_line(self, key: Any) -> ColumnDataSource:
        source = ColumnDataSource({"x": self._empty_x(), "y": np.array([], dtype=np.float64)},
                                  name=f"{self.frame.name}:{key}")
        self._draw_line(key, "y", source, len(self.sources))
        self.sources[key] = source
        return source

    def data(self) -> pd.DataFrame:
        """What the plot holds now, long format: the ``by`` column (if any), ``x``, ``y``.

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
        parts = []
        for k, s in self.sources.items():
            x = _x_values(s.data["x"], self._time_x)
            frame = pd.DataFrame({"x": x, "y": s.data["y"]})
            if self.by is not None:
                frame.insert(0, key, k)
            parts.append(frame)
        if not parts:
            return pd.DataFrame(columns=[*([key] if self.by else []), "x", "y"])
        return pd.concat(parts, ignore_index=True)

    # -- titles and params -----------------------------------------------------------------
    def _title(self) -> str:
        if self._fixed_title is not None:
            return self._fixed_title
        describe = getattr(self.frame, "describe", None)
        return f"{self.y} — {describe()}" if describe is not None else self.y

    def _on_reconfigure(self, frame: Any) -> None:
        if not self._closed:
            title = self.figure.title
            if isinstance(title, Title):
                title.text = self._title()

    # -- display and teardown --------------------------------------------------------------
    @property
    def widget(self) -> BatchedBokehModel:
        """The ipywidget showing the plot (put it in your own ipywidgets layouts)."""
        ensure_bokehjs()
        if self.model is None:
            self.model = BatchedBokehModel(self.figure)
        return self.model

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Stop updating: detach from the stream, stop the timer, close the widget."""
        if self._closed:
            return
        self._closed = True
        self._sink.destroy()
        if self in self.frame._graph.views:
            self.frame._graph.views.remove(self)
        if self._task is not None:
            self._task.cancel()
        if self.model is not None:
            self.model.close()

    def __repr__(self) -> str:
        by = f" by {self.by!r}" if self.by else ""
        return f"<LineView {self.y!r} vs {self.x!r}{by} of {self.frame.name!r}>"
