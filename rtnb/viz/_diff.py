"""The diff of a shadow replay on a plot: the two runs on one time axis, the changes marked.

:meth:`rtnb.shadow.ShadowRun.plot` builds a :class:`DiffPlot` from plain DataFrames (the rows
of the baseline and the shadow copy, and :meth:`~rtnb.shadow.ShadowRun.diff`): this module
knows nothing of replays. The plot is static (the replay has ended): one Bokeh figure per
node, stacked on a shared time axis, shown in a notebook as a widget like the live views.

- A window node: per key, the old run's ``y`` (solid) and the new run's (dashed) over
  ``window_start``; the windows *added* (green triangles, at the new value), *removed* (red
  crosses, at the old value) and *changed* (orange diamonds at the new value, a segment from
  the old one).
- An alert node: one row per key, the old run's transitions above its line, the new run's
  below (a triangle where an alert fired, an inverted one where it resolved); the added,
  removed and changed transitions ringed in the same colours.

Hovering a mark shows the old and the new values of every value column. Each mark source
holds the diff's rows of its kind, all their columns, plus ``x``, ``y`` and ``key``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bokeh.core.properties import field
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, FactorRange, HoverTool
from bokeh.models.annotations import Legend
from bokeh.plotting import figure
from bokeh.transform import dodge

from rtnb.errors import ConfigError
from rtnb.viz._bokeh import BatchedBokehModel, ensure_bokehjs
from rtnb.viz._view import _browser_only, _color, _writable
from rtnb.viz._xy import _labelled

__all__ = ["CHANGE_COLORS", "DiffPlot"]

#: The colour of each kind of change (also the order of the legend).
CHANGE_COLORS = {"added": "#2ca02c", "removed": "#d62728", "changed": "#ff7f0e"}
_WINDOW_MARKERS = {"added": "triangle", "removed": "x", "changed": "diamond"}
_STATE_MARKERS = {"firing": "triangle", "resolved": "inverted_triangle"}
#: Where each run's alert transitions sit around their key's line (categorical offsets).
_SIDE_OFFSET = {"old": 0.18, "new": -0.18}


def key_label(value: Any) -> str:
    """The label of a key (a value, or a tuple of several ``by`` columns' values).

    >>> key_label("web-01"), key_label(("eu", "web-01")), key_label(None)
    ('web-01', 'eu / web-01', '<missing>')
    """
    parts = value if isinstance(value, tuple) else (value,)
    return " / ".join("<missing>" if v is None or (isinstance(v, float) and np.isnan(v))
                      else str(v) for v in parts)


def _labels(rows: pd.DataFrame, by: Sequence[str], default: str) -> np.ndarray[Any, Any]:
    """Each row's key label (``default`` when there is no key column)."""
    if not by:
        return np.full(len(rows), default, dtype=object)
    keys = rows[list(by)].itertuples(index=False, name=None) if len(by) > 1 else \
        rows[by[0]].tolist()
    return np.array([key_label(k) for k in keys], dtype=object)


def _column(values: pd.Series[Any]) -> np.ndarray[Any, Any]:
    """A column as Bokeh takes it: times as naive UTC ``datetime64[ns]``, numbers as float."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return _writable(values.to_numpy(dtype="datetime64[ns]"))
    if pd.api.types.is_bool_dtype(values.dtype):
        return _writable(values.to_numpy(dtype=object))
    if pd.api.types.is_numeric_dtype(values.dtype):
        return _writable(values.to_numpy(dtype=np.float64, na_value=np.nan))
    return _writable(values.astype(object).to_numpy())


def _data(rows: pd.DataFrame, **extra: np.ndarray[Any, Any]) -> dict[str, Any]:
    """Every column of ``rows`` (as :func:`_column` converts them), and ``extra``."""
    data: dict[str, Any] = {str(c): _column(rows[c]) for c in rows.columns}
    data.update(extra)
    return data


def _tip(column: str, time: bool) -> str:
    return f"@{{{column}}}{{%F %T}}" if time else f"@{{{column}}}{{0,0.[000]}}"


class DiffPlot:
    """The two runs of a shadow replay and their diff, one figure per node on a time axis.

    Built by :meth:`rtnb.shadow.ShadowRun.plot`, which says what is drawn. Display it (the
    last expression of a cell) to show it; :attr:`root` is the Bokeh layout,
    :attr:`sources` its data.

    Parameters
    ----------
    height
        Height of each figure in pixels.
    width
        Width in pixels; ``None`` stretches to the notebook's width.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.to_datetime(["2026-01-01 00:00", "2026-01-01 00:01"])
    >>> old = pd.DataFrame({"window_start": t, "host": ["a", "a"], "cpu": [1.0, 2.0]})
    >>> new = pd.DataFrame({"window_start": t[:1], "host": ["a"], "cpu": [1.5]})
    >>> diff = pd.DataFrame({"change": ["changed", "removed"], "window_start": t,
    ...                      "host": ["a", "a"], "old_cpu": [1.0, 2.0],
    ...                      "new_cpu": [1.5, float("nan")]})
    >>> plot = DiffPlot()
    >>> fig = plot.add_windows("cpu", old, new, diff, y="cpu", values=["cpu"], by=["host"])
    >>> plot.sources["cpu:removed"].data["old_cpu"].tolist()
    [2.0]
    >>> plot
    <DiffPlot of ['cpu']>
    """

    def __init__(self, *, height: int = 300, width: int | None = None) -> None:
        for value, name in ((height, "height"), (width, "width")):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 100):
                msg = f"plot `{name}` must be an int of at least 100 pixels; got {value!r}"
                raise ConfigError(msg)
        self.height = height
        self.width = width
        #: The figure of each node, in the order they were added.
        self.figures: dict[str, Any] = {}
        #: Every data source by name: ``"<node>:old:<key>"`` and ``"<node>:new:<key>"``
        #: (a window node's lines), ``"<node>:old"`` and ``"<node>:new"`` (an alert node's
        #: transitions), ``"<node>:added"``, ``"<node>:removed"`` and ``"<node>:changed"``
        #: (the diff's rows of that kind, with ``x``, ``y`` and ``key``).
        self.sources: dict[str, ColumnDataSource] = {}
        self._time_axis: dict[str, bool] = {}
        self._root: Any = None
        self._model: BatchedBokehModel | None = None

    def _figure(self, node: str, title: str, *, y_range: Any = None, time: bool = True) -> Any:
        if self._root is not None:
            msg = "this DiffPlot is laid out already (its root was used); build a new one"
            raise ConfigError(msg)
        if node in self.figures:
            msg = f"node {node!r} is on this plot already"
            raise ConfigError(msg)
        kwargs: dict[str, Any] = {"height": self.height,
                                  "x_axis_type": "datetime" if time else "linear",
                                  "title": title, "tools": "pan,wheel_zoom,box_zoom,reset,save"}
        if y_range is not None:
            kwargs["y_range"] = y_range
        if self.width is None:
            kwargs["sizing_mode"] = "stretch_width"
        else:
            kwargs["width"] = self.width
        same = [self.figures[n] for n, t in self._time_axis.items() if t == time]
        if same:  # pan and zoom together (time axes with time axes)
            kwargs["x_range"] = same[0].x_range
        fig = figure(**kwargs)
        _browser_only(fig)
        fig.add_layout(Legend(click_policy="hide", label_text_font_size="8pt", spacing=0,
                              glyph_height=14, label_height=14, glyph_width=16,
                              nrows=max(1, (self.height - 80) // 16)), "right")
        self.figures[node] = fig
        self._time_axis[node] = time
        return fig

    def _keep(self, name: str, data: dict[str, Any]) -> ColumnDataSource:
        """A named data source, kept in :attr:`sources`."""
        source = ColumnDataSource(data, name=name)
        self.sources[name] = source
        return source

    def add_windows(self, node: str, old: pd.DataFrame, new: pd.DataFrame,
                    changes: pd.DataFrame, *, y: str, values: Sequence[str],
                    by: Sequence[str] = (), x: str = "window_start", title: str | None = None,
                    units: dict[str, str] | None = None) -> Any:
        """Add a window node's figure: both runs' ``y`` per key over ``x``, the diff marked.

        ``old`` and ``new`` are the two runs' windows, ``changes`` the diff's rows of this
        node (``change``, ``x``, the ``by`` columns, ``old_<v>`` and ``new_<v>`` for each of
        ``values``). Returns the figure.
        """
        units = units or {}
        time = pd.api.types.is_datetime64_any_dtype(old[x].dtype)
        fig = self._figure(node, title or f"{node} · {y}", time=time)
        fig.xaxis.axis_label = x
        fig.yaxis.axis_label = _labelled(y, units)
        unit = f" {units[y]}" if y in units else ""
        lines = []
        labels_drawn = sorted({k for f in (old, new) for k in _labels(f, by, y)})
        for side, rows, dash, width, alpha in (("old", old, "solid", 2.0, 0.55),
                                               ("new", new, "dashed", 1.6, 0.95)):
            rows = rows.sort_values(x, kind="stable")
            labels = _labels(rows, by, y)
            for label in labels_drawn:
                mine = rows[labels == label]
                source = self._keep(f"{node}:{side}:{label}",
                                    {"x": _column(mine[x]), "y": _column(mine[y])})
                legend = f"{label} {side}" if by else side
                lines.append(fig.line("x", "y", source=source, color=_color(label),
                                      line_dash=dash, line_width=width, line_alpha=alpha,
                                      legend_label=legend, name=legend))
        fig.add_tools(HoverTool(renderers=lines, formatters={"@x": "datetime"} if time else {},
                                tooltips=[("run", "$name"), (x, _tip("x", time)),
                                          (y, "@y{0,0.[000]}" + unit)]))
        marks = []
        for change, color in CHANGE_COLORS.items():
            rows = changes[changes["change"] == change]
            at = f"old_{y}" if change == "removed" else f"new_{y}"
            source = self._keep(f"{node}:{change}", _data(
                rows, x=_column(rows[x]), y=_column(rows[at]), key=_labels(rows, by, y)))
            if change == "changed":
                fig.segment(x0="x", y0=f"old_{y}", x1="x", y1=f"new_{y}", source=source,
                            color=color, line_width=1.5)
            # a dark outline sets the marks apart from a key's line of the same colour (the
            # keys keep their session colours, and those include green, red and orange)
            outline = {"line_color": color, "line_width": 2.5} if change == "removed" else \
                {"fill_color": color, "line_color": "#222222", "line_width": 1}
            marks.append(fig.scatter("x", "y", source=source, marker=_WINDOW_MARKERS[change],
                                     size=12, legend_label=f"{change} ({len(rows)})",
                                     **outline))
        tips = [("change", "@change"), *([("key", "@key")] if by else []), (x, _tip(x, time))]
        if "window_end" in changes.columns and x != "window_end":
            tips.append(("window_end", _tip("window_end", time)))
        tips += [(v, f"{_tip(f'old_{v}', False)} → {_tip(f'new_{v}', False)}")
                 for v in values]
        fig.add_tools(HoverTool(renderers=marks, tooltips=tips, formatters={
            f"@{{{c}}}": "datetime" for c in (x, "window_end")} if time else {}))
        return fig

    def add_alerts(self, node: str, old: pd.DataFrame, new: pd.DataFrame,
                   changes: pd.DataFrame, *, by: Sequence[str] = (),
                   title: str | None = None) -> Any:
        """Add an alert node's figure: both runs' transitions per key, the diff ringed.

        ``old`` and ``new`` are the two runs' transitions (the output of
        :func:`rtnb.alert`: ``state``, ``time``, ``started``, ``value`` and the ``by``
        columns), ``changes`` the diff's rows of this node. Returns the figure.
        """
        name = node.rsplit(".", 1)[-1]
        keys = sorted({k for f in (old, new, changes) for k in _labels(f, by, name)})
        # the first key on top (a categorical axis runs upwards)
        fig = self._figure(node, title or node,
                           y_range=FactorRange(factors=keys[::-1] or [name]))
        fig.xaxis.axis_label = "time"
        fig.yaxis.axis_label = " / ".join(by) if by else "alert"
        points = []
        for side, rows, color in (("old", old, "#7f7f7f"), ("new", new, "#1f77b4")):
            markers = rows["state"].map(_STATE_MARKERS).fillna("circle")
            source = self._keep(f"{node}:{side}", _data(
                rows, x=_column(rows["time"]), key=_labels(rows, by, name),
                marker=np.asarray(markers.to_numpy(), dtype=object)))
            points.append(fig.scatter("x", dodge("key", _SIDE_OFFSET[side], range=fig.y_range),
                                      source=source, marker=field("marker"), size=9,
                                      color=color, alpha=0.85,
                                      legend_label=f"{side} run ({len(rows)})"))
        fig.add_tools(HoverTool(renderers=points, formatters={
            "@{time}": "datetime", "@{started}": "datetime"}, tooltips=[
                ("key", "@key"), ("state", "@state"), ("time", _tip("time", True)),
                ("started", _tip("started", True)), ("value", _tip("value", False))]))
        marks = []
        for change, color in CHANGE_COLORS.items():
            rows = changes[changes["change"] == change]
            side = "old" if change == "removed" else "new"
            source = self._keep(f"{node}:{change}", _data(
                rows, x=_column(rows["time"]), y=_column(rows[f"{side}_value"]),
                key=_labels(rows, by, name)))
            marks.append(fig.scatter("x", dodge("key", _SIDE_OFFSET[side], range=fig.y_range),
                                     source=source, marker="circle", size=18, fill_alpha=0,
                                     line_color=color, line_width=2.5,
                                     legend_label=f"{change} ({len(rows)})"))
        fig.add_tools(HoverTool(renderers=marks, formatters={
            "@{time}": "datetime", "@{old_started}": "datetime", "@{new_started}": "datetime"},
            tooltips=[("change", "@change"), ("key", "@key"), ("state", "@state"),
                      ("time", _tip("time", True)),
                      ("started", f"{_tip('old_started', True)} → {_tip('new_started', True)}"),
                      ("value", f"{_tip('old_value', False)} → {_tip('new_value', False)}")]))
        return fig

    # -- showing ---------------------------------------------------------------------------
    @property
    def root(self) -> Any:
        """The Bokeh layout: the figure, or a column of them (x ranges shared)."""
        if self._root is None:
            if not self.figures:
                msg = "this DiffPlot has no figure yet"
                raise ConfigError(msg)
            figures = list(self.figures.values())
            self._root = figures[0] if len(figures) == 1 else column(
                figures, sizing_mode="stretch_width" if self.width is None else "fixed")
        return self._root

    @property
    def widget(self) -> BatchedBokehModel:
        """The ipywidget showing the plot (put it in your own ipywidgets layouts)."""
        ensure_bokehjs()
        if self._model is None:
            self._model = BatchedBokehModel(self.root)
        return self._model

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)  # type: ignore[no-untyped-call]

    def save(self, path: str | Path, *, title: str = "rtnb shadow replay") -> Path:
        """Write the plot to a standalone HTML file (BokehJS inline: no kernel, no network).

        Examples
        --------
        >>> import pandas as pd, pathlib, tempfile
        >>> rows = pd.DataFrame({"window_start": pd.to_datetime(["2026-01-01"]),
        ...                      "cpu": [1.0]})
        >>> none = pd.DataFrame({"change": pd.Series([], dtype=str),
        ...                      "window_start": rows["window_start"].iloc[:0],
        ...                      "old_cpu": [], "new_cpu": []})
        >>> plot = DiffPlot()
        >>> _ = plot.add_windows("cpu", rows, rows, none, y="cpu", values=["cpu"])
        >>> out = plot.save(pathlib.Path(tempfile.mkdtemp()) / "diff.html")
        >>> "cdn.bokeh.org" in out.read_text()
        False
        """
        from bokeh.embed import file_html
        from bokeh.resources import INLINE

        target = Path(path)
        target.write_text(file_html(self.root, resources=INLINE, title=title), encoding="utf-8")
        return target

    def close(self) -> None:
        """Close the widget, if it was shown."""
        if self._model is not None:
            self._model.close()

    def __repr__(self) -> str:
        return f"<DiffPlot of {list(self.figures)}>"
