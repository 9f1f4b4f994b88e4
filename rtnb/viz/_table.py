"""Table views: the latest rows of a frame, or the latest row per key.

Why a table tells its grid to redraw
------------------------------------
BokehJS 3.9.2's ``DataTable`` redraws its grid only when the ``CDSView`` of its source
changes. The view recomputes its row indices after every change of the source, but signals a
change only when the indices differ, i.e. when the *number* of rows changed (bokeh/bokeh#15328,
"DataTable does not refresh": fine in 3.8.2, broken in 3.9.1 and 3.9.2). So
``ColumnDataSource.stream(..., rollover=rows)`` on a full table, a row patched in place and new
data of the same length all reach the page's source while the grid keeps drawing the rows it
drew last: once full, a live table froze on its first rows (checked in chromium with a plain
Bokeh page for all three). After an update that leaves the number of rows unchanged, a
:class:`TableView` therefore bumps a counter in its ``CDSView``'s ``tags``: one small
``ModelChanged`` event (~70 bytes) in the same PATCH-DOC, after the data, and the grid redraws
from the source. A Bokeh whose table listens to its source again just redraws twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from bokeh.models import ColumnDataSource
from bokeh.models.widgets.tables import DataTable, DateFormatter, NumberFormatter, TableColumn

from rtnb.viz._view import View, _check_positive_int, _latest, _writable
from rtnb.windows.keys import norm_key

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame

__all__ = ["TableView"]

#: The grid in JupyterLab's theme colours (its CSS variables reach into BokehJS's shadow DOM),
#: each with the grid's own light colour as the fallback where no theme defines them (a
#: saved dashboard, classic Notebook): a live table is not a white block in a dark theme.
THEME_CSS = """
:host {
  --odd: var(--jp-rendermime-table-row-background, #f0f0f0);
  --special: var(--jp-layout-color2, #f5f5f5);
  --selected: var(--jp-rendermime-table-row-hover-background, #f0f8ff);
  --muted-text: var(--jp-ui-font-color2, #909090);
  color: var(--jp-ui-font-color1, inherit);
}
.slick-row { background: var(--jp-layout-color0, white); }
.slick-row.odd { background: var(--odd); }
.slick-header-columns, .slick-header-column {
  background: var(--jp-layout-color1, #fafafa);
  color: var(--jp-ui-font-color1, inherit);
  border-color: var(--jp-border-color2, silver);
}
.slick-cell { border-color: var(--jp-border-color3, silver); }
"""


def _join(old: Any, new: Any) -> Any:
    """Column *old* followed by column *new* (numpy arrays, or lists).

    >>> _join(np.array([1, 2]), np.array([3]))
    array([1, 2, 3])
    >>> _join(["a"], ["b"])
    ['a', 'b']
    """
    if isinstance(old, np.ndarray) and isinstance(new, np.ndarray):
        return np.concatenate((old, new))
    return [*old, *new]


class TableView(View):
    """The latest ``rows`` rows of a frame, or with ``by`` the latest row per key.

    Order: without ``by``, the rows are those of ``frame.tail(rows)`` over everything
    received, oldest first (the newest row is the last one); every update replaces the
    table's data with them (at most ``rows`` rows travel per update, at most ``max_fps``
    updates a second). With ``by``, one row per key, keys in the order they first appeared,
    each showing its latest values: a key's row is patched in place, new keys are appended.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> ex = pd.DataFrame({"host": pd.Series([], dtype=str), "cpu": pd.Series([], dtype=float)})
    >>> sdf = rtnb.StreamingFrame(ex)
    >>> table = sdf.plot.table(by="host")
    >>> sdf.emit(pd.DataFrame({"host": ["a", "b", "a"], "cpu": [1.0, 2.0, 3.0]}))
    >>> table.flush()
    >>> table.data()
      host  cpu
    0    a  3.0
    1    b  2.0
    >>> latest = sdf.plot.table(rows=2)
    >>> sdf.emit(pd.DataFrame({"host": ["c", "d", "e"], "cpu": [4.0, 5.0, 6.0]}))
    >>> latest.flush()
    >>> latest.data()
      host  cpu
    0    d  5.0
    1    e  6.0
    """

    kind = "table"

    def __init__(self, frame: StreamingFrame, *, columns: list[str] | None = None,
                 by: str | None = None, rows: int = 20, max_fps: float = 10.0,
                 title: str | None = None, height: int = 280,
                 width: int | None = None) -> None:
        cols = list(columns) if columns is not None else list(frame.columns)
        if by is not None and by not in cols:
            cols.insert(0, by)
        _check_positive_int(rows, "rows")
        super().__init__(frame, columns=cols, max_fps=max_fps, title=title)
        self.by = by
        self.rows = rows
        example = frame.example[self._columns]
        self._dtypes = example.dtypes
        self.source = ColumnDataSource(self._to_columns(example), name=f"{frame.name}:table")
        self._index: dict[Any, int] = {}
        #: Times the view told the page's grid to redraw (see the module docstring).
        self.redraws = 0
        table_columns = []
        units = frame.units
        for col, dtype in self._dtypes.items():
            formatter: Any = None
            if pd.api.types.is_datetime64_any_dtype(dtype):
                formatter = DateFormatter(format="%Y-%m-%d %H:%M:%S")
            elif pd.api.types.is_float_dtype(dtype):
                formatter = NumberFormatter(format="0,0.000")
            kwargs = {"formatter": formatter} if formatter is not None else {}
            unit = units.get(str(col))
            title = f"{col} ({unit})" if unit else str(col)
            table_columns.append(TableColumn(field=str(col), title=title, **kwargs))
        sizing: dict[str, Any] = {"width": width} if width is not None else \
            {"sizing_mode": "stretch_width"}
        self.table = DataTable(source=self.source, columns=table_columns, height=height,
                               index_position=None, stylesheets=[THEME_CSS], **sizing)
        self.table.syncable = False
        self._attach()

    def _to_columns(self, rows: pd.DataFrame) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for col, dtype in self._dtypes.items():
            values = rows[col]
            if pd.api.types.is_datetime64_any_dtype(dtype) or \
                    pd.api.types.is_float_dtype(dtype):
                out[str(col)] = _writable(values.to_numpy())
            elif pd.api.types.is_integer_dtype(dtype) and not values.hasnans:
                out[str(col)] = _writable(values.to_numpy())
            else:
                out[str(col)] = ["" if norm_key(v) is None else str(v) for v in values]
        return out

    def _compact(self, data: pd.DataFrame, *, replace: bool) -> pd.DataFrame:
        """The last ``rows`` rows, or each key's latest row: what a flush draws."""
        return data.iloc[-self.rows:] if self.by is None else _latest(data, self.by)

    def _length(self) -> int:
        """Rows in the table's source now."""
        data: Any = self.source.data  # a dict of columns (Bokeh types it loosely)
        return len(next(iter(data.values()), ()))

    def _render(self, data: pd.DataFrame, *, replace: bool) -> None:
        before = self._length()
        changed = self._render_rows(data, replace=replace) if self.by is None else \
            self._render_latest(data, self.by, replace=replace)
        if changed and self._length() == before:
            self._redraw()

    def _render_rows(self, data: pd.DataFrame, *, replace: bool) -> bool:
        """Show the last ``rows`` rows of what was shown and *data*; whether it changed."""
        if not len(data) and not replace:
            return False  # nothing new (an overlay asked for an update)
        tail = data.iloc[-self.rows:]
        columns = self._to_columns(tail)
        kept = self.rows - len(tail)  # rows shown now that stay in the table
        if not replace and kept > 0 and self._length():
            shown: Any = self.source.data
            columns = {col: _join(shown[col][-kept:], new) for col, new in columns.items()}
        self.source.data = columns
        self.rows_sent += self._length()
        return True

    def _render_latest(self, data: pd.DataFrame, by: str, *, replace: bool) -> bool:
        """Patch each key's row, append new keys; whether anything changed."""
        latest = _latest(data, by)
        keys = [norm_key(k) for k in latest[by]]
        if replace:
            self._index = {k: i for i, k in enumerate(keys)}
            self.source.data = self._to_columns(latest)
            self.rows_sent += len(latest)
            return True
        known = np.array([k in self._index for k in keys], dtype=bool)
        if known.any():
            rows = latest[known]
            columns = self._to_columns(rows)
            positions = [self._index[k] for k, is_known in zip(keys, known, strict=True)
                         if is_known]
            self.source.patch({col: list(zip(positions, list(values), strict=True))
                               for col, values in columns.items() if col != by})
        if (~known).any():
            rows = latest[~known]
            start = len(self._index)
            for offset, key in enumerate(k for k, is_known in zip(keys, known, strict=True)
                                         if not is_known):
                self._index[key] = start + offset
            self.source.stream(self._to_columns(rows))
        self.rows_sent += len(latest)
        return bool(len(latest))

    def _redraw(self) -> None:
        """Have the page's grid redraw from its source (see the module docstring)."""
        self.redraws += 1
        self.table.view.tags = [self.redraws]

    def data(self) -> pd.DataFrame:
        """The rows the table shows now (see the class docstring for their order)."""
        frame = pd.DataFrame({c: list(v) if not isinstance(v, np.ndarray) else v
                              for c, v in self.source.data.items()})
        for col, dtype in self._dtypes.items():
            if pd.api.types.is_datetime64_any_dtype(dtype):
                frame[col] = np.asarray(frame[col]).astype("datetime64[ns]")
        return frame[[str(c) for c in self._dtypes.index]]

    @property
    def root(self) -> Any:
        """The Bokeh DataTable."""
        return self.table

    def __repr__(self) -> str:
        return f"<TableView {self._columns!r} of {self.frame.name!r}>"
