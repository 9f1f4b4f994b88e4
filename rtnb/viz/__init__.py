"""Live Bokeh views, dashboards and status widgets for notebooks."""

from rtnb.viz.layout import Dashboard, dashboard
from rtnb.viz.plots import BarView, LineView, PlotAccessor, TableView, View, XYView
from rtnb.viz.status import Status

__all__ = ["BarView", "Dashboard", "LineView", "PlotAccessor", "Status", "TableView", "View",
           "XYView", "dashboard"]
