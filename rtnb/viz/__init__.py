"""Live Bokeh views, dashboards and status widgets for notebooks.

Importing this package loads no Bokeh, ipywidgets or IPython: its names are loaded on first
use (PEP 562), so ``import rtnb`` stays free of plotting and an exported headless script never
pays for it. :func:`dashboard` is defined here, light, and imports the layout when called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rtnb import _record

if TYPE_CHECKING:
    from rtnb.viz._diff import DiffPlot
    from rtnb.viz._schedule import Scheduler
    from rtnb.viz.layout import Dashboard
    from rtnb.viz.plots import BarView, LineView, PlotAccessor, TableView, View, XYView
    from rtnb.viz.status import Status

__all__ = ["BarView", "Dashboard", "DiffPlot", "LineView", "PlotAccessor", "Scheduler",
           "Status", "TableView", "View", "XYView", "dashboard"]

#: Where each name is defined; the module is imported the first time the name is asked for.
_LAZY = {"BarView": "rtnb.viz.plots", "Dashboard": "rtnb.viz.layout",
         "DiffPlot": "rtnb.viz._diff",
         "LineView": "rtnb.viz.plots", "PlotAccessor": "rtnb.viz.plots",
         "Scheduler": "rtnb.viz._schedule",
         "Status": "rtnb.viz.status", "TableView": "rtnb.viz.plots", "View": "rtnb.viz.plots",
         "XYView": "rtnb.viz.plots"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'rtnb.viz' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


@_record.function
def dashboard(*items: Any, ncols: int = 1, share_x: bool = True) -> Dashboard:
    """Show live views with the Params that tune them, in one layout.

    Parameters
    ----------
    *items
        Views (``sdf.plot.line(...)``), :class:`~rtnb.Param` s and ipywidgets.
    ncols
        Plots per row.
    share_x
        Pan and zoom the time plots together (those with the same ``span``: a 1 h plot keeps
        its own x range beside 10 min ones).

    Returns
    -------
    Dashboard
        The layout; display it (the last expression of a cell) to show it.

    Examples
    --------
    >>> import rtnb
    >>> size = rtnb.Param("10s", min="1s", max="1min", name="window")
    >>> board = rtnb.dashboard(size)
    >>> board.controls
    [Param(window='10s', kind='duration', min='1s', max='1min')]
    """
    from rtnb.viz.layout import Dashboard

    board = Dashboard(items, ncols=ncols, share_x=share_x)
    for graph in {id(v.frame.graph): v.frame.graph for v in board.views}.values():
        graph.add_board(board)  # Pipeline.export_dashboard serves this layout
    return board
