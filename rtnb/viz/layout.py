"""Lay out live views and Param widgets together in one ipywidgets layout.

:func:`rtnb.dashboard` (defined in :mod:`rtnb.viz`, light) builds a :class:`Dashboard`.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from rtnb._time import shown
from rtnb.errors import ConfigError
from rtnb.params import Param
from rtnb.viz._bokeh import BatchedBokehModel, ensure_bokehjs
from rtnb.viz._schedule import Scheduler

__all__ = ["Dashboard"]


class Dashboard:
    """Views and controls in one layout: controls on top, plots in a grid of ``ncols``.

    All plots live in one Bokeh document shown by one widget, so they can share an x-range
    (pan and zoom together), and one timer updates them all: each tick sends every view's
    changes together (one PATCH-DOC) and is held while the page has not caught up
    (``model.max_unacked_updates``).
    """

    def __init__(self, items: tuple[Any, ...], *, ncols: int = 1, share_x: bool = True) -> None:
        from rtnb.viz.plots import View, XYView
        from rtnb.viz.status import Status

        if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
            msg = f"dashboard `ncols` must be a positive int; got {ncols!r}"
            raise ConfigError(msg)
        self.controls = [i for i in items
                         if isinstance(i, Param | Status) or _is_widget(i)]
        self.views = [i for i in items if isinstance(i, View)]
        unknown = [i for i in items if i not in self.controls and i not in self.views]
        if unknown:
            msg = f"dashboard() takes views, Params and ipywidgets; got {unknown!r}"
            raise ConfigError(msg)
        shown = [v for v in self.views if v.model is not None]
        if shown:
            msg = (f"{shown[0]!r} is already displayed on its own; a view can be shown alone "
                   "or in one dashboard, not both: build a new view for the dashboard")
            raise ConfigError(msg)
        timed: list[XYView] = [v for v in self.views if isinstance(v, XYView) and v.time_axis]
        if share_x:  # between time plots of the same span only (a 1 h plot beside a 10 min
            # one would be squeezed into a sixth of its width)
            by_span: dict[int | None, list[XYView]] = {}
            for view in timed:
                by_span.setdefault(view.span_ns, []).append(view)
            for group in by_span.values():
                for view in group[1:]:
                    view.figure.x_range = group[0].figure.x_range
        self.ncols = ncols
        self._widget: Any = None
        self.model: BatchedBokehModel | None = None
        self.scheduler: Scheduler | None = None
        if self.views:
            from bokeh.layouts import gridplot

            roots: list[Any] = [v.root for v in self.views]
            layout = gridplot(roots, ncols=ncols, sizing_mode="stretch_width",
                              merge_tools=False) if len(roots) > 1 else roots[0]
            self._layout: Any = layout
            self.model = BatchedBokehModel(layout)
            # One timer for the whole board: each tick is one numbered update of the
            # document, held while the page is behind (see rtnb.viz._schedule).
            self.scheduler = Scheduler("dashboard", self.model)
            for member in self.views:
                member.model = self.model
                member.schedule_with(self.scheduler)

    @property
    def widget(self) -> Any:
        """The ipywidgets container."""
        if self._widget is None:
            import ipywidgets as widgets

            ensure_bokehjs()
            controls = [c.widget if hasattr(c, "widget") else c for c in self.controls]
            children = ([widgets.HBox(controls, layout=widgets.Layout(flex_flow="row wrap"))]
                        if controls else []) + ([self.model] if self.model is not None else [])
            self._widget = widgets.VBox(children, layout=widgets.Layout(width="100%"))
        return self._widget

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)  # type: ignore[no-untyped-call]

    def save(self, path: str | Path, *, title: str = "rtnb dashboard") -> Path:
        """Write the dashboard as it is now to a standalone HTML file (BokehJS inline).

        Every view is brought up to date first; the file needs no kernel, server or network
        (pan, zoom, hover and legends work, the data stays as it was). Params are listed with
        their current values above the plots (sliders need a kernel).

        Examples
        --------
        >>> import pandas as pd, rtnb, tempfile, pathlib
        >>> ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
        ...                    "cpu": pd.Series([], dtype=float)})
        >>> sdf = rtnb.StreamingFrame(ex, time="t")
        >>> board = rtnb.dashboard(sdf.plot.line(x="t", y="cpu"))
        >>> sdf.emit(pd.DataFrame({"t": pd.to_datetime(["2026-01-01"]), "cpu": [42.0]}))
        >>> out = board.save(pathlib.Path(tempfile.mkdtemp()) / "board.html")
        >>> "cdn.bokeh.org" in out.read_text()  # BokehJS is inline
        False
        >>> board.close()
        """
        from bokeh.embed import file_html
        from bokeh.resources import INLINE

        target = Path(path)
        if not self.views:
            msg = "save() needs a dashboard with at least one plot or table"
            raise ConfigError(msg)
        for view in self.views:
            view.flush()
        page = file_html(self._layout, resources=INLINE, title=title)
        params = [c for c in self.controls if isinstance(c, Param)]
        if params:
            said = " · ".join(f"{html.escape(str(p.name))} = {html.escape(str(shown(p.value)))}"
                              for p in params)
            head, body = page.rsplit("<body>", 1)  # the page's tag (BokehJS's text has one too)
            page = f'{head}<body>\n<p class="rtnb-params">{said}</p>{body}'

        target.write_text(page, encoding="utf-8")
        return target

    def close(self) -> None:
        """Close every view (and status widget) of the dashboard."""
        from rtnb.viz.status import Status

        for view in self.views:
            view.close()
        for control in self.controls:
            if isinstance(control, Status):
                control.close()

    def _teardown(self) -> None:
        self.close()


def _is_widget(obj: Any) -> bool:
    try:
        import ipywidgets as widgets
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, widgets.Widget)

