"""Live Bokeh views of a StreamingFrame that send only deltas, at most ``max_fps`` a second.

The views are written in private modules, one per seam; this module is where their public
names are imported from:

- :mod:`rtnb.viz._view`: :class:`View`, what every view shares (queueing, coalesced updates
  on a shared timer, drain, display, teardown);
- :mod:`rtnb.viz._xy`: :class:`XYView` (:data:`LineView`), lines, steps, markers and bands;
- :mod:`rtnb.viz._overlays`: what is drawn over an x/y view, one :class:`Overlay` each: the
  watermark, window boundaries and late events; the alert marks;
- :mod:`rtnb.viz._bar` and :mod:`rtnb.viz._table`: :class:`BarView`, :class:`TableView`;
- :mod:`rtnb.viz._accessor`: :class:`PlotAccessor`, the ``sdf.plot`` that builds them.
"""

from __future__ import annotations

from rtnb.viz._accessor import PlotAccessor
from rtnb.viz._bar import BarView
from rtnb.viz._overlays import AlertOverlay, Overlay, WatermarkOverlay
from rtnb.viz._table import TableView
from rtnb.viz._view import View
from rtnb.viz._xy import LineView, XYView, m4

__all__ = ["AlertOverlay", "BarView", "LineView", "Overlay", "PlotAccessor", "TableView",
           "View", "WatermarkOverlay", "XYView", "m4"]
