"""What is drawn over an x/y view from streams of its own: the watermark, alerts.

An :class:`Overlay` is attached to one :class:`~rtnb.viz.XYView`: it adds its glyphs to the
view's figure and subscribes to its streams (:meth:`~Overlay.attach`), queues what arrives,
draws it when the view flushes (:meth:`~Overlay.render`, after the view's own rows, inside
the same update) and unsubscribes when the view closes (:meth:`~Overlay.detach`). What an
overlay queues is bounded the way the view's own queue is: while the page is behind, only
what one update would draw is kept.

- :class:`WatermarkOverlay` (``show_watermark=``): the watermark of a window or rolling
  engine (dashed red), the last :data:`BOUNDS_SHOWN` window boundaries (dotted grey: the
  windows closing near the watermark, not a mesh over the whole plot) and the late events
  (red crosses).
- :class:`AlertOverlay` (``view.mark(alerts)``): a triangle where an alert fired and a shaded
  band over each episode.

Marks older than the earliest point the view's lines still draw are dropped at each update
(:meth:`XYView.oldest_x <rtnb.viz.XYView.oldest_x>`): they go when their lines roll over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
from bokeh.models import ColumnDataSource
from bokeh.models.annotations import Span

from rtnb.frame import RollingFrame, WindowedFrame
from rtnb.viz._view import _COMPACT_SIDE, _ns, _writable
from rtnb.windows.specs import Sliding, Tumbling

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame
    from rtnb.viz._xy import XYView

__all__ = ["ALERT_COLUMNS", "BOUNDS_SHOWN", "LATE_COLOR", "AlertOverlay", "Overlay",
           "WatermarkOverlay"]

LATE_COLOR = "#d62728"

#: Window boundaries drawn: the newest ones (a plot of 1,000 windows would be a grey mesh).
BOUNDS_SHOWN = 12

#: The columns of :func:`rtnb.alert`'s output that :class:`AlertOverlay` draws.
ALERT_COLUMNS = ["state", "time", "started", "value"]


class Overlay(Protocol):
    """Something drawn over an x/y view from a stream of its own.

    :meth:`XYView._add_overlay <rtnb.viz.XYView>` calls :meth:`attach` once; the view then
    calls :meth:`render` in each of its updates and :meth:`detach` when it closes.
    """

    def attach(self, view: XYView) -> None:
        """Add the glyphs to ``view.figure`` and subscribe to the overlay's streams."""

    def render(self) -> None:
        """Draw what arrived since the last update (inside the view's update)."""

    def detach(self) -> None:
        """Unsubscribe from every stream (the view closes)."""


class WatermarkOverlay:
    """The watermark, window boundaries and late events of a window or rolling engine.

    Parameters
    ----------
    engine
        The windowed (or rolling) frame whose watermark is drawn: the view's frame or one of
        its ancestors, or another frame on the same time axis.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
    ...                    "cpu": pd.Series([], dtype=float)})
    >>> sdf = rtnb.StreamingFrame(ex, time="t")
    >>> agg = sdf.window(rtnb.tumbling("10s")).agg(n=("cpu", "count"))
    >>> view = agg.plot.line(x="window_start", y="n", show_watermark=True)
    >>> view.overlays
    (<WatermarkOverlay of 'frame.window'>,)
    >>> view.close()
    """

    def __init__(self, engine: WindowedFrame | RollingFrame) -> None:
        self.engine = engine
        self._sinks: list[Any] = []

    def attach(self, view: XYView) -> None:
        """Draw on ``view`` (a time axis): a watermark span, window boundaries, late events."""
        target = self.engine
        self.view = view
        fig = view.figure
        #: The watermark (a vertical dashed line).
        self.span = Span(dimension="height", line_color=LATE_COLOR, line_dash="dashed",
                         line_width=1.5, location=None, name="watermark")
        fig.add_layout(self.span)
        self._sent: pd.Timestamp | None = None
        #: The ends of the closed windows (tumbling and sliding windows).
        self.bounds = ColumnDataSource({"x": np.array([], dtype="datetime64[ns]")},
                                       name=f"{view.frame.name}:window-bounds")
        fig.vspan(x="x", source=self.bounds, line_color="#888888", line_alpha=0.5,
                  line_dash="dotted")
        self._bounds_pending: list[np.ndarray[Any, Any]] = []
        self._bound_max = np.iinfo(np.int64).min
        spec = getattr(target, "spec", None)
        if isinstance(target, WindowedFrame) and isinstance(spec, Tumbling | Sliding):
            self._sinks.append(target.sink(self._on_windows))
        late_cols = list(target.late.columns)
        self._late_y = view.y if view.y in late_cols else None
        self._late_x = target.late.time
        #: The late events: at their ``y`` when the late rows have the view's ``y`` column.
        self.late = ColumnDataSource({"x": np.array([], dtype="datetime64[ns]"),
                                      "y": np.array([], dtype=np.float64)},
                                     name=f"{view.frame.name}:late")
        if self._late_y is not None:
            fig.scatter("x", "y", source=self.late, marker="x", size=9, color=LATE_COLOR,
                        legend_label="late")
        else:
            fig.vspan(x="x", source=self.late, line_color=LATE_COLOR, line_alpha=0.6)
        self._late_pending: list[pd.DataFrame] = []
        self._sinks.append(target.late.sink(self._on_late))

    def _on_windows(self, windows: pd.DataFrame) -> None:
        if not self.view.closed and len(windows):
            self._bounds_pending.append(windows["window_end"].to_numpy())
            if len(self._bounds_pending) > _COMPACT_SIDE:  # held: keep what a flush draws
                ends = np.unique(_ns(np.concatenate(self._bounds_pending)))
                self._bounds_pending = [ends[-self.view.max_points:].view("datetime64[ns]")]

    def _on_late(self, rows: pd.DataFrame) -> None:
        if not self.view.closed and len(rows):
            cols = [c for c in (self._late_x, self._late_y) if c is not None]
            self._late_pending.append(rows[cols])
            if len(self._late_pending) > _COMPACT_SIDE:
                late = pd.concat(self._late_pending, ignore_index=True)
                self._late_pending = [late.iloc[-self.view.max_points:]]
            self.view.request_update()  # late rows alone should reach the plot too

    def render(self) -> None:
        """Move the watermark; stream the new window ends and late events."""
        max_points = self.view.max_points
        wm = self.engine.watermark
        if wm is not None and wm != self._sent and wm < pd.Timestamp.max:
            self.span.location = wm.value / 1e6  # ms since the epoch, as BokehJS uses
            self._sent = wm
        if self._bounds_pending:
            ends = np.unique(_ns(np.concatenate(self._bounds_pending)))
            self._bounds_pending = []
            ends = ends[ends > self._bound_max]
            if len(ends):
                self._bound_max = int(ends[-1])
                self.bounds.stream({"x": ends[-BOUNDS_SHOWN:].view("datetime64[ns]")},
                                   rollover=BOUNDS_SHOWN)
        if self._late_pending:
            late = pd.concat(self._late_pending, ignore_index=True).iloc[-max_points:]
            self._late_pending = []
            y = late[self._late_y].to_numpy(dtype=np.float64, na_value=np.nan) \
                if self._late_y is not None else np.zeros(len(late))
            self.late.stream({"x": late[self._late_x].to_numpy(), "y": y},
                             rollover=max_points)
        _trim(self.late, "x", self.view.oldest_x())

    def detach(self) -> None:
        """Unsubscribe from the windows and the late rows."""
        for sink in self._sinks:
            sink.destroy()
        self._sinks = []

    def __repr__(self) -> str:
        return f"<WatermarkOverlay of {self.engine.name!r}>"


def _trim(source: ColumnDataSource, column: str, oldest: int | None) -> None:
    """Drop the rows of ``source`` whose ``column`` is before ``oldest`` (ns), if any."""
    if oldest is None or not len(source.data[column]):
        return
    keep = _ns(source.data[column]) >= oldest
    if not keep.all():
        source.data = {str(name): _writable(np.asarray(values)[keep])
                       for name, values in source.data.items()}


class AlertOverlay:
    """An alert stream drawn on a time plot: firing markers and episode bands.

    A triangle marks where an alert fired (at its ``value`` when it has one), a shaded band
    spans each episode from its start to its resolution. Built by :meth:`XYView.mark
    <rtnb.viz.XYView.mark>`.

    Parameters
    ----------
    alerts
        The output of :func:`rtnb.alert`.
    color
        Color of the markers and bands.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
    ...                    "cpu": pd.Series([], dtype=float)})
    >>> sdf = rtnb.StreamingFrame(ex, time="t")
    >>> hot = rtnb.alert(sdf, sdf["cpu"] > 90, on="cpu")
    >>> view = sdf.plot.line(x="t", y="cpu").mark(hot)
    >>> view.overlays
    (<AlertOverlay of 'frame.alert'>,)
    >>> view.close()
    """

    def __init__(self, alerts: StreamingFrame, *, color: str = LATE_COLOR) -> None:
        self.alerts = alerts
        self.color = color
        self._sink: Any = None

    def attach(self, view: XYView) -> None:
        """Draw on ``view`` (a time axis): a band per resolved episode, a triangle per firing."""
        alerts = self.alerts
        self.view = view
        #: Where alerts fired (``x`` their time, ``y`` their value).
        self.fired = ColumnDataSource({"x": np.array([], dtype="datetime64[ns]"),
                                       "y": np.array([], dtype=np.float64)},
                                      name=f"{alerts.name}:fired")
        #: The resolved episodes (``x0`` their start, ``x1`` their resolution).
        self.bands = ColumnDataSource({"x0": np.array([], dtype="datetime64[ns]"),
                                       "x1": np.array([], dtype="datetime64[ns]")},
                                      name=f"{alerts.name}:bands")
        view.figure.vstrip(x0="x0", x1="x1", source=self.bands, fill_color=self.color,
                           fill_alpha=0.12, line_alpha=0)
        # the legend says the alert's own name (``rtnb.alert(..., name="host_anomaly")``),
        # not the node path ("replay.window.detect.host_anomaly")
        view.figure.scatter("x", "y", source=self.fired, marker="triangle", size=10,
                            color=self.color, legend_label=alerts.name.rsplit(".", 1)[-1])
        self._pending: list[pd.DataFrame] = []
        self._sink = alerts.sink(self._on_alerts)

    def _on_alerts(self, events: pd.DataFrame) -> None:
        if not self.view.closed and len(events):
            self._pending.append(events[ALERT_COLUMNS])
            if len(self._pending) > _COMPACT_SIDE:  # the newest markers and bands
                merged = pd.concat(self._pending, ignore_index=True)
                state = merged["state"]
                keep = np.zeros(len(merged), dtype=bool)
                for drawn in ("firing", "resolved"):
                    keep[np.flatnonzero(state.to_numpy() == drawn)[-self.view.max_points:]] = \
                        True
                self._pending = [merged[keep]]
            self.view.request_update()

    def render(self) -> None:
        """Stream the new firings and the newly resolved episodes; drop the rolled-over ones."""
        if self._pending:
            self._stream_pending()
        oldest = self.view.oldest_x()
        _trim(self.fired, "x", oldest)
        _trim(self.bands, "x1", oldest)  # a band goes once it ended before the lines begin

    def _stream_pending(self) -> None:
        max_points = self.view.max_points
        events = pd.concat(self._pending, ignore_index=True)
        self._pending = []
        fired = events[events["state"] == "firing"]
        if len(fired):
            y = fired["value"].to_numpy(dtype=np.float64, na_value=np.nan)
            self.fired.stream({"x": _writable(fired["time"].to_numpy()), "y": _writable(y)},
                              rollover=max_points)
        done = events[events["state"] == "resolved"]
        if len(done):
            self.bands.stream({"x0": _writable(done["started"].to_numpy()),
                               "x1": _writable(done["time"].to_numpy())},
                              rollover=max_points)

    def detach(self) -> None:
        """Unsubscribe from the alert stream."""
        if self._sink is not None:
            self._sink.destroy()
            self._sink = None

    def __repr__(self) -> str:
        return f"<AlertOverlay of {self.alerts.name!r}>"
