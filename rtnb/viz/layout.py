"""Lay out live views and Param widgets together in one ipywidgets layout."""

from __future__ import annotations

from typing import Any

from rtnb.errors import ConfigError
from rtnb.params import Param
from rtnb.viz._bokeh import BatchedBokehModel, ensure_bokehjs

__all__ = ["Dashboard", "dashboard"]


class Dashboard:
    """Views and controls in one layout: controls on top, plots in a grid of ``ncols``.

    All plots live in one Bokeh document shown by one widget, so they can share an x-range
    (pan and zoom together) and the page holds a single Bokeh root.
    """

    def __init__(self, items: tuple[Any, ...], *, ncols: int = 1, share_x: bool = True) -> None:
        from rtnb.viz.plots import LineView

        if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
            msg = f"dashboard `ncols` must be a positive int; got {ncols!r}"
            raise ConfigError(msg)
        self.controls = [i for i in items if isinstance(i, Param) or _is_widget(i)]
        self.views = [i for i in items if isinstance(i, LineView)]
        unknown = [i for i in items if i not in self.controls and i not in self.views]
        if unknown:
            msg = f"dashboard() takes views, Params and ipywidgets; got {unknown!r}"
            raise ConfigError(msg)
        shown = [v for v in self.views if v.model is not None]
        if shown:
            msg = (f"{shown[0]!r} is already displayed on its own; a view can be shown alone "
                   "or in one dashboard, not both: build a new view for the dashboard")
            raise ConfigError(msg)
        if share_x and len(self.views) > 1:
            shared = self.views[0].figure.x_range
            for view in self.views[1:]:
                view.figure.x_range = shared
        self.ncols = ncols
        self._widget: Any = None
        self.model: BatchedBokehModel | None = None
        if self.views:
            from bokeh.layouts import gridplot

            figures: list[Any] = [v.figure for v in self.views]
            layout = gridplot(figures, ncols=ncols, sizing_mode="stretch_width",
                              merge_tools=False) if len(figures) > 1 else figures[0]
            self.model = BatchedBokehModel(layout)
            for view in self.views:
                view.model = self.model

    @property
    def widget(self) -> Any:
        """The ipywidgets container."""
        if self._widget is None:
            import ipywidgets as widgets

            ensure_bokehjs()
            controls = [c.widget if isinstance(c, Param) else c for c in self.controls]
            children = ([widgets.HBox(controls)] if controls else []) + (
                [self.model] if self.model is not None else [])
            self._widget = widgets.VBox(children, layout=widgets.Layout(width="100%"))
        return self._widget

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Close every view of the dashboard."""
        for view in self.views:
            view.close()


def _is_widget(obj: Any) -> bool:
    try:
        import ipywidgets as widgets
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, widgets.Widget)


def dashboard(*items: Any, ncols: int = 1, share_x: bool = True) -> Dashboard:
    """Show live views with the Params that tune them, in one layout.

    Parameters
    ----------
    *items
        Views (``sdf.plot.line(...)``), :class:`~rtnb.Param` s and ipywidgets.
    ncols
        Plots per row.
    share_x
        Pan and zoom all plots together.

    Examples
    --------
    >>> import rtnb
    >>> size = rtnb.Param("10s", min="1s", max="1min", name="window")
    >>> board = rtnb.dashboard(size)
    >>> board.controls
    [Param(window='10s', kind='duration', min='1s', max='1min')]
    """
    return Dashboard(items, ncols=ncols, share_x=share_x)
