"""``sdf.plot``: the accessor that builds a frame's live views."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rtnb import _record
from rtnb.viz._bar import BarView
from rtnb.viz._table import TableView
from rtnb.viz._xy import XYView

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame

__all__ = ["PlotAccessor"]


class PlotAccessor:
    """``sdf.plot``: builds live views of a frame (line, step, scatter, band, bar, table)."""

    def __init__(self, frame: StreamingFrame) -> None:
        self._frame = frame

    @_record.method
    def line(self, x: str, y: str, *, by: str | None = None, **options: Any) -> XYView:
        """A live line per key (``by``) of ``y`` against ``x``; options: see :class:`XYView`.

        Examples
        --------
        >>> import pandas as pd, rtnb
        >>> ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
        ...                    "cpu": pd.Series([], dtype=float)})
        >>> rtnb.StreamingFrame(ex, time="t").plot.line(x="t", y="cpu")
        <XYView line 'cpu' vs 't' of 'frame'>
        """
        return XYView(self._frame, "line", x=x, y=y, by=by, **options)

    @_record.method
    def step(self, x: str, y: str, *, by: str | None = None, **options: Any) -> XYView:
        """Like :meth:`line`, drawn as steps (a window's value holds until the next window).

        Examples
        --------
        >>> import pandas as pd, rtnb
        >>> ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
        ...                    "n": pd.Series([], dtype="int64")})
        >>> rtnb.StreamingFrame(ex, time="t").plot.step(x="t", y="n").kind
        'step'
        """
        return XYView(self._frame, "step", x=x, y=y, by=by, **options)

    @_record.method
    def scatter(self, x: str, y: str, *, by: str | None = None, **options: Any) -> XYView:
        """Live markers per key of ``y`` against ``x``.

        Examples
        --------
        >>> import pandas as pd, rtnb
        >>> ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
        ...                    "cpu": pd.Series([], dtype=float)})
        >>> rtnb.StreamingFrame(ex, time="t").plot.scatter(x="t", y="cpu").kind
        'scatter'
        """
        return XYView(self._frame, "scatter", x=x, y=y, by=by, **options)

    @_record.method
    def band(self, x: str, lower: str, upper: str, *, y: str | None = None,
             by: str | None = None, **options: Any) -> XYView:
        """A shaded band between ``lower`` and ``upper`` per key, with a line for ``y``.

        Examples
        --------
        >>> import pandas as pd, rtnb
        >>> ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
        ...                    "lo": pd.Series([], dtype=float), "hi": pd.Series([], dtype=float)})
        >>> rtnb.StreamingFrame(ex, time="t").plot.band(x="t", lower="lo", upper="hi").kind
        'band'
        """
        return XYView(self._frame, "band", x=x, y=y, lower=lower, upper=upper, by=by,
                      **options)

    @_record.method
    def bar(self, y: str, *, by: str, **options: Any) -> BarView:
        """One bar per key (``by``) showing its latest ``y``; see :class:`BarView`.

        Examples
        --------
        >>> import pandas as pd, rtnb
        >>> ex = pd.DataFrame({"host": pd.Series([], dtype=str),
        ...                    "cpu": pd.Series([], dtype=float)})
        >>> rtnb.StreamingFrame(ex).plot.bar(y="cpu", by="host")
        <BarView 'cpu' by 'host' of 'frame'>
        """
        return BarView(self._frame, y=y, by=by, **options)

    @_record.method
    def table(self, columns: list[str] | None = None, *, by: str | None = None,
              **options: Any) -> TableView:
        """The latest rows (or the latest row per key) as a table; see :class:`TableView`.

        Examples
        --------
        >>> import pandas as pd, rtnb
        >>> ex = pd.DataFrame({"host": pd.Series([], dtype=str),
        ...                    "cpu": pd.Series([], dtype=float)})
        >>> rtnb.StreamingFrame(ex).plot.table(rows=5)
        <TableView ['host', 'cpu'] of 'frame'>
        """
        return TableView(self._frame, columns=columns, by=by, **options)
