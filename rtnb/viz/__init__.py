"""Live notebook views: Bokeh plots through jupyter_bokeh, laid out with ipywidgets."""

from rtnb.viz.layout import Dashboard, dashboard
from rtnb.viz.plots import LineView, PlotAccessor

__all__ = ["Dashboard", "LineView", "PlotAccessor", "dashboard"]
