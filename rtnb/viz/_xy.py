"""x/y views: a live line, step, scatter or band per key, drawn from deltas.

:class:`XYView` (also named :data:`LineView`) keeps one ``ColumnDataSource`` per key and
sends new rows as ``.stream(rows, rollover=max_points)``; windows re-sent with new values
(``emit="update"``) as ``.patch`` of the points drawn. With ``span`` a fast raw feed is
decimated with :func:`m4`. What is drawn over the lines (the watermark, alerts) are
overlays (:mod:`rtnb.viz._overlays`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.models.annotations import Legend, Span, Title
from bokeh.plotting import figure

from rtnb import _record
from rtnb._time import DurationLike, to_ns
from rtnb.errors import ConfigError
from rtnb.frame import RollingFrame, WindowedFrame
from rtnb.viz._overlays import (
    ALERT_COLUMNS,
    LATE_COLOR,
    AlertOverlay,
    Overlay,
    WatermarkOverlay,
)
from rtnb.viz._view import (
    View,
    _browser_only,
    _check_positive_int,
    _color,
    _engine_frame,
    _ns,
    _writable,
)
from rtnb.windows.keys import norm_key

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame

__all__ = ["LineView", "XYView", "m4"]

_O = TypeVar("_O", WatermarkOverlay, AlertOverlay)


def _labelled(column: str, units: dict[str, str]) -> str:
    """An axis label: the column's name and its unit, if it has one.

    >>> _labelled("latency_ms", {"latency_ms": "ms"}), _labelled("n", {})
    ('latency_ms (ms)', 'n')
    """
    unit = units.get(column)
    return f"{column} ({unit})" if unit else column


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
        #: The time ``span`` drawn (ns), ``None`` without one; a dashboard shares the x range
        #: only between time plots of the same span.
        self.span_ns: int | None = None
        if span is not None:
            if not self._time_x:
                msg = f"`span` needs a time x axis; {x!r} of {frame.name!r} is not a datetime"
                raise ConfigError(msg)
            self.span_ns = to_ns(span, name="span")
            self._bucket = max(1, self.span_ns * 4 // max_points)
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
        # axis labels and tooltips carry the columns' units (``frame.units``)
        units = frame.units
        suffix = {c: f" {units[c]}" if c in units else "" for c in (x, y, lower, upper) if c}
        self.figure.xaxis.axis_label = _labelled(x, units)
        self.figure.yaxis.axis_label = _labelled(y, units) if y is not None else \
            f"{lower} - {upper}" + (f" ({units[lower]})" if lower in units else "")
        _browser_only(self.figure)
        # hover: the key (the line's name), x and the value(s), on the view's own lines only
        x_field = "@x{%F %T}" if self._time_x else "@x{0,0.[000]}" + suffix[x]
        values = [(y, "@y{0,0.[000]}" + suffix[y])] if y is not None else []
        if lower is not None and upper is not None:
            values += [(lower, "@lower{0,0.[000]}" + suffix[lower]),
                       (upper, "@upper{0,0.[000]}" + suffix[upper])]
        tips = [*([(by, "$name")] if by is not None else []), (x, x_field), *values]
        #: The hover tool (its ``renderers`` are the view's lines, added as keys appear).
        self.hover = HoverTool(renderers=[], tooltips=tips,
                               formatters={"@x": "datetime"} if self._time_x else {})
        self.figure.add_tools(self.hover)
        # Every view's legend (keys, a band's parts, alert marks) is outside the plot area, so
        # it never hides data (Bokeh would put one inside, over the lines); click an entry to
        # hide its line. Entries 14 px high (Bokeh's default glyph and label boxes are 20 px:
        # 12 rows ran 17 px past a 280 px plot in chromium), as many rows as the plot's height
        # holds less the title, margins and padding: more keys wrap into another column.
        legend = Legend(click_policy="hide", label_text_font_size="8pt", spacing=0,
                        glyph_height=14, label_height=14, glyph_width=16,
                        nrows=max(1, (height - 80) // 16))
        self.figure.add_layout(legend, "right")
        self.sources: dict[Any, ColumnDataSource] = {}
        self._overlays: list[Overlay] = []
        if show_watermark is not False:
            self._show_watermark(show_watermark)
        self._attach()

    # -- overlays: watermark, window boundaries, late events; alerts ------------------------
    @property
    def time_axis(self) -> bool:
        """Whether ``x`` is a datetime column (a time axis)."""
        return self._time_x

    @property
    def overlays(self) -> tuple[Overlay, ...]:
        """What is drawn over the lines (``show_watermark``, :meth:`mark`), in drawing order."""
        return tuple(self._overlays)

    def _add_overlay(self, overlay: Overlay) -> None:
        """Attach *overlay*: it draws in each update after the lines, detaches on close."""
        overlay.attach(self)
        self._overlays.append(overlay)

    def _show_watermark(self, show: bool | StreamingFrame) -> None:
        target = _engine_frame(self.frame) if show is True else show
        if not isinstance(target, WindowedFrame | RollingFrame):
            msg = (f"show_watermark needs a windowed frame: {self.frame.name!r} does not come "
                   "from a window; pass the windowed frame, show_watermark=agg")
            raise ConfigError(msg)
        if not self._time_x:
            msg = "show_watermark needs a time x axis"
            raise ConfigError(msg)
        self._add_overlay(WatermarkOverlay(target))

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
        >>> marks = view.overlays[-1]
        >>> len(marks.fired.data["x"]), len(marks.bands.data["x0"])
        (1, 1)
        """
        if not self._time_x:
            msg = "mark() needs a time x axis"
            raise ConfigError(msg)
        missing = set(ALERT_COLUMNS) - set(alerts.columns)
        if missing:
            msg = f"mark() takes the output of rtnb.alert(); {alerts.name!r} lacks {missing}"
            raise ConfigError(msg)
        self._add_overlay(AlertOverlay(alerts, color=color))
        return self

    def _detach(self) -> None:
        for overlay in self._overlays:
            overlay.detach()

    # Kept for the tests that read these before the overlays existed; use ``overlays``.
    @property
    def _late(self) -> ColumnDataSource:
        return self._overlay(WatermarkOverlay).late

    @property
    def _wm_span(self) -> Span:
        return self._overlay(WatermarkOverlay).span

    @property
    def _bounds(self) -> ColumnDataSource:
        return self._overlay(WatermarkOverlay).bounds

    @property
    def _fired(self) -> ColumnDataSource:
        return self._overlay(AlertOverlay).fired

    @property
    def _bands(self) -> ColumnDataSource:
        return self._overlay(AlertOverlay).bands

    def _overlay(self, kind: type[_O]) -> _O:
        found = [o for o in self._overlays if isinstance(o, kind)]
        if not found:
            msg = f"{self!r} has no overlay of that kind"
            raise AttributeError(msg)
        return found[-1]

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
        for overlay in self._overlays:
            overlay.render()

    def oldest_x(self) -> int | None:
        """The earliest x still drawn by any line (ns), ``None`` before the first row.

        Overlays drop the marks older than this, so marks go with the lines they belong to
        when those roll over.
        """
        firsts = [_ns(np.asarray(src.data["x"])[:1])[0] for src in self.sources.values()
                  if len(src.data["x"])]
        return int(min(firsts)) if firsts else None

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
        label = ("<missing>" if key is None else str(key)) if self.by is not None else \
            (self.y or "band")
        color = _color(label)
        fig = self.figure
        drawn: Any
        if self.kind == "line":
            drawn = fig.line("x", "y", source=source, color=color, line_width=1.6,
                             legend_label=label, name=label)
        elif self.kind == "step":
            drawn = fig.step("x", "y", source=source, color=color, line_width=1.6,
                             mode="after", legend_label=label, name=label)
        elif self.kind == "scatter":
            drawn = fig.scatter("x", "y", source=source, color=color, size=4, alpha=0.7,
                                legend_label=label, name=label)
        else:
            drawn = fig.varea(x="x", y1="lower", y2="upper", source=source, fill_color=color,
                              fill_alpha=0.2, legend_label=label, name=label)
            if self.y is not None:
                drawn = fig.line("x", "y", source=source, color=color, line_width=1.4,
                                 legend_label=label, name=label)
        self.hover.renderers = [*self.hover.renderers, drawn]
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
        # the title names the data drawn: once the stream has ended, a change that recomputes
        # nothing (no retained history) applies to no row, so the title keeps the old setting
        ended = self.frame.graph.state in ("finished", "stopped", "failed")
        if ended and getattr(frame, "_retained", None) is None:
            return
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
