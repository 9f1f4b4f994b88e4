"""Table views: the latest rows of a frame, or the latest row per key."""

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


class TableView(View):
    """The latest ``rows`` rows of a frame, or with ``by`` the latest row per key.

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
        table_columns = []
        for col, dtype in self._dtypes.items():
            formatter: Any = None
            if pd.api.types.is_datetime64_any_dtype(dtype):
                formatter = DateFormatter(format="%Y-%m-%d %H:%M:%S")
            elif pd.api.types.is_float_dtype(dtype):
                formatter = NumberFormatter(format="0,0.000")
            kwargs = {"formatter": formatter} if formatter is not None else {}
            table_columns.append(TableColumn(field=str(col), title=str(col), **kwargs))
        sizing: dict[str, Any] = {"width": width} if width is not None else \
            {"sizing_mode": "stretch_width"}
        self.table = DataTable(source=self.source, columns=table_columns, height=height,
                               index_position=None, **sizing)
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

    def _render(self, data: pd.DataFrame, *, replace: bool) -> None:
        if self.by is None:
            tail = data.iloc[-self.rows:]
            if replace:
                self.source.data = self._to_columns(tail)
            else:
                self.source.stream(self._to_columns(tail), rollover=self.rows)
            self.rows_sent += len(tail)
            return
        latest = _latest(data, self.by)
        keys = [norm_key(k) for k in latest[self.by]]
        if replace:
            self._index = {k: i for i, k in enumerate(keys)}
            self.source.data = self._to_columns(latest)
            self.rows_sent += len(latest)
            return
        known = np.array([k in self._index for k in keys], dtype=bool)
        if known.any():
            rows = latest[known]
            columns = self._to_columns(rows)
            positions = [self._index[k] for k, is_known in zip(keys, known, strict=True)
                         if is_known]
            self.source.patch({col: list(zip(positions, list(values), strict=True))
                               for col, values in columns.items() if col != self.by})
        if (~known).any():
            rows = latest[~known]
            start = len(self._index)
            for offset, key in enumerate(k for k, is_known in zip(keys, known, strict=True)
                                         if not is_known):
                self._index[key] = start + offset
            self.source.stream(self._to_columns(rows))
        self.rows_sent += len(latest)

    def data(self) -> pd.DataFrame:
        """The rows the table shows now."""
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
