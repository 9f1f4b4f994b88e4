"""Bar views: one bar per key showing its latest value."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from bokeh.models import ColumnDataSource, FactorRange
from bokeh.models.annotations import Title
from bokeh.plotting import figure

from rtnb.viz._view import View, _color, _latest, _writable
from rtnb.windows.keys import norm_key

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame

__all__ = ["BarView"]


class BarView(View):
    """One bar per key with its latest value: new keys are streamed, known keys patched.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> ex = pd.DataFrame({"host": pd.Series([], dtype=str), "cpu": pd.Series([], dtype=float)})
    >>> sdf = rtnb.StreamingFrame(ex)
    >>> bars = sdf.plot.bar(y="cpu", by="host")
    >>> sdf.emit(pd.DataFrame({"host": ["a", "b", "a"], "cpu": [1.0, 2.0, 3.0]}))
    >>> bars.flush()
    >>> bars.data()
      host  cpu
    0    a  3.0
    1    b  2.0
    """

    kind = "bar"

    def __init__(self, frame: StreamingFrame, *, y: str, by: str, max_fps: float = 10.0,
                 title: str | None = None, height: int = 320, width: int | None = None,
                 horizontal: bool = False) -> None:
        super().__init__(frame, columns=[by, y], max_fps=max_fps, title=title)
        self.y, self.by = y, by
        self.source = ColumnDataSource({"key": [], "y": np.array([], dtype=np.float64),
                                        "color": []}, name=f"{frame.name}:bars")
        self._index: dict[str, int] = {}
        kwargs: dict[str, Any] = {"height": height, "tools": "save", "title": self._title(y),
                                  "output_backend": "canvas"}
        if width is None:
            kwargs["sizing_mode"] = "stretch_width"
        else:
            kwargs["width"] = width
        self._horizontal = horizontal
        factors = FactorRange(factors=[])
        if horizontal:
            self.figure = figure(y_range=factors, **kwargs)
            self.figure.hbar(y="key", right="y", height=0.8, color="color", source=self.source)
        else:
            self.figure = figure(x_range=factors, **kwargs)
            self.figure.vbar(x="key", top="y", width=0.8, color="color", source=self.source)
            self.figure.xaxis.major_label_orientation = 0.8
        unit = frame.units.get(y)
        if unit:  # the value axis says what the bars measure
            (self.figure.xaxis if horizontal else self.figure.yaxis).axis_label = f"{y} ({unit})"
        self._factors = factors
        for model in (self.figure, self.figure.x_range if horizontal else self.figure.y_range):
            model.syncable = False
        self._attach()

    def _compact(self, data: pd.DataFrame, *, replace: bool) -> pd.DataFrame:
        """Each key's latest row (keys in order of first appearance): what a flush draws."""
        return _latest(data, self.by)

    def _render(self, data: pd.DataFrame, *, replace: bool) -> None:
        latest = _latest(data, self.by)
        keys = ["<missing>" if norm_key(k) is None else str(k) for k in latest[self.by]]
        values = latest[self.y].to_numpy(dtype=np.float64, na_value=np.nan)
        if replace:
            self._index = {k: i for i, k in enumerate(keys)}
            self._factors.factors = list(keys)
            self.source.data = {"key": keys, "y": _writable(values),
                                "color": [_color(k) for k in keys]}
            self.rows_sent += len(keys)
            return
        patches, new_keys, new_values = [], [], []
        for key, value in zip(keys, values.tolist(), strict=True):
            i = self._index.get(key)
            if i is None:
                new_keys.append(key)
                new_values.append(value)
            else:
                patches.append((i, value))
        if patches:
            self.source.patch({"y": patches})
        if new_keys:
            start = len(self._index)
            for offset, key in enumerate(new_keys):
                self._index[key] = start + offset
            self._factors.factors = [*self._factors.factors, *new_keys]
            self.source.stream({"key": new_keys, "y": np.array(new_values, dtype=np.float64),
                                "color": [_color(k) for k in new_keys]})
        self.rows_sent += len(keys)

    def data(self) -> pd.DataFrame:
        """The bars now: one row per key with its latest value."""
        return pd.DataFrame({self.by: list(self.source.data["key"]),
                             self.y: np.asarray(self.source.data["y"], dtype=np.float64)})

    @property
    def root(self) -> Any:
        """The Bokeh figure."""
        return self.figure

    def _on_reconfigure(self, frame: Any) -> None:
        if not self._closed and isinstance(self.figure.title, Title):
            self.figure.title.text = self._title(self.y)

    def __repr__(self) -> str:
        return f"<BarView {self.y!r} by {self.by!r} of {self.frame.name!r}>"
