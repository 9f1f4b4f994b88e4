"""What the window engines share: keys, value extraction, watermark, output frames."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from rtnb.aggregations import Aggregation
from rtnb.windows.keys import KeyRegistry

__all__ = ["NO_WATERMARK", "AggSpec", "KeyedEngine", "WindowOutput", "restore_attributes",
           "snapshot_attributes", "time_ns"]

NO_WATERMARK = int(np.iinfo(np.int64).min)
END_OF_STREAM = int(np.iinfo(np.int64).max)


@dataclass(frozen=True)
class AggSpec:
    """One output column: ``name = how(column)``."""

    name: str
    column: str
    agg: Aggregation


@dataclass
class WindowOutput:
    """What one batch produced: emitted windows (or ``None``) and late rows (or ``None``)."""

    windows: pd.DataFrame | None
    late: pd.DataFrame | None


def snapshot_attributes(engine: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """``names`` of ``engine`` and its key registry's snapshot, as a dict (for checkpoints)."""
    state = {name: getattr(engine, name) for name in names}
    state["keys"] = engine.keys.snapshot()
    return state


def restore_attributes(engine: Any, names: tuple[str, ...], state: dict[str, Any]) -> None:
    """Set ``names`` of ``engine`` from :func:`snapshot_attributes`'s ``state``."""
    missing = [n for n in (*names, "keys") if n not in state]
    if missing:
        msg = f"{type(engine).__name__} state lacks {missing!r}"
        raise ValueError(msg)
    for name in names:
        setattr(engine, name, state[name])
    engine.keys.restore(state["keys"])


def time_ns(series: pd.Series) -> npt.NDArray[np.int64]:
    """Event times as int64 nanoseconds, whatever the datetime64 unit (NaT -> int64 min)."""
    values = series.to_numpy()
    if values.dtype != "datetime64[ns]":
        values = values.astype("datetime64[ns]")
    return values.view(np.int64)


class KeyedEngine:
    """Shared state and helpers of the keyed window engines."""

    #: Attributes holding what the engine has seen (saved by :meth:`snapshot`); everything
    #: else is configuration, rebuilt from the spec and the Params. Subclasses extend it.
    STATE: ClassVar[tuple[str, ...]] = ("max_time", "_watermark", "_seq", "late_total",
                                        "emitted_total", "_floor")

    def __init__(self, *, time: str, by: list[str], aggs: list[AggSpec],
                 example: pd.DataFrame, allowed_lateness_ns: int = 0,
                 emit: str = "final") -> None:
        self.time = time
        self.by = by
        self.aggs = aggs
        self.emit = emit
        self.example = example
        self.allowed_lateness_ns = allowed_lateness_ns
        self.keys = KeyRegistry(by, example)
        self._plain = [a for a in aggs if not a.agg.holistic]
        self._holistic = [a for a in aggs if a.agg.holistic]
        self._raw_columns = sorted({a.column for a in self._holistic})
        self._numeric = {
            c: pd.api.types.is_numeric_dtype(example[c].dtype)
            and not pd.api.types.is_bool_dtype(example[c].dtype)
            for c in {a.column for a in aggs}
        }
        self.max_time: int = NO_WATERMARK
        self._watermark: int = NO_WATERMARK
        self._seq = 0
        self.late_total = 0
        self.emitted_total = 0
        # After a reconfigure flushed open windows early, rows older than the newest flushed
        # window end would land in windows overlapping emitted ones: they are late.
        self._floor: int = NO_WATERMARK

    # -- checkpoints -----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The engine's data state (numpy arrays and numbers, no Params), for a checkpoint.

        Examples
        --------
        >>> from rtnb.aggregations import Count
        >>> from rtnb.windows.engine import WindowAggregator
        >>> from rtnb.windows.specs import tumbling
        >>> df = pd.DataFrame({"t": pd.to_datetime(["2026-01-01 00:00:01"]), "x": [1.0]})
        >>> def fresh():
        ...     return WindowAggregator(tumbling("10s"), time="t", by=[],
        ...                             aggs=[AggSpec("n", "x", Count())], example=df.iloc[:0])
        >>> eng = fresh()
        >>> _ = eng.process(df)
        >>> again = fresh()
        >>> again.restore(eng.snapshot())
        >>> again.flush().windows["n"].tolist()
        [1]
        """
        return snapshot_attributes(self, self.STATE)

    def restore(self, state: dict[str, Any]) -> None:
        """Put a :meth:`snapshot` back into this (freshly built, identically configured) engine."""
        restore_attributes(self, self.STATE, state)

    # -- the interface every engine implements --------------------------------------------
    def process(self, batch: pd.DataFrame) -> WindowOutput:
        """Fold one micro-batch in; return emitted windows and late rows."""
        raise NotImplementedError

    def flush(self) -> WindowOutput:
        """End of stream: emit every open window."""
        raise NotImplementedError

    def reconfigure(self, spec: Any) -> pd.DataFrame | None:
        """Switch to a new window spec; open windows are emitted first."""
        raise NotImplementedError

    @property
    def open_windows(self) -> int:
        """How many windows (or held rows) are open."""
        raise NotImplementedError

    @property
    def watermark(self) -> pd.Timestamp | None:
        """The current watermark (``None`` before the first event)."""
        if self._watermark == NO_WATERMARK:
            return None
        if self._watermark == END_OF_STREAM:
            return pd.Timestamp.max
        return pd.Timestamp(self._watermark)

    def set_allowed_lateness(self, ns: int) -> None:
        """Change the allowed lateness; the watermark never moves backwards."""
        self.allowed_lateness_ns = ns

    def _advance(self, t: npt.NDArray[np.int64]) -> None:
        if len(t):
            self.max_time = max(self.max_time, int(t.max()))
            self._watermark = max(self._watermark, self.max_time - self.allowed_lateness_ns)

    def _read(self, batch: pd.DataFrame) -> tuple[
            npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.intp]]:
        """Event times (ns), arrival numbers and key codes of a non-empty batch's rows."""
        return time_ns(batch[self.time]), self._next_seq(len(batch)), self.keys.codes(batch)

    def _next_seq(self, n: int) -> npt.NDArray[np.int64]:
        seq = np.arange(self._seq, self._seq + n, dtype=np.int64)
        self._seq += n
        return seq

    def _values(self, batch: pd.DataFrame, column: str) -> npt.NDArray[np.float64]:
        series = batch[column]
        if self._numeric[column]:
            return series.to_numpy(dtype=np.float64, na_value=np.nan)
        # Non-numeric columns can only be counted: 1.0 where present, NaN where missing.
        return np.where(series.isna().to_numpy(), np.nan, 1.0)

    def _holistic_from_rows(self, pos: npt.NDArray[np.intp],
                            values: dict[str, npt.NDArray[np.float64]],
                            n: int) -> dict[str, npt.NDArray[Any]]:
        """Holistic results for ``n`` groups; raw row ``i`` is in group ``pos[i]`` (-1: none)."""
        results: dict[str, npt.NDArray[Any]] = {}
        for spec in self._holistic:
            v_all = values[spec.column]
            ok = (pos >= 0) & ~np.isnan(v_all)
            p, v = pos[ok], v_all[ok]
            # Sort by value, then stably by group: a small group index radix-sorts in O(n),
            # several times faster than lexsort((v, p)).
            by_value = np.argsort(v)
            group = p[by_value]
            if n <= np.iinfo(np.int16).max:
                group = group.astype(np.int16)
            order = by_value[np.argsort(group, kind="stable")]
            counts = np.bincount(p, minlength=n)
            starts = np.concatenate(([0], np.cumsum(counts)[:-1])) if n else counts
            results[spec.name] = spec.agg.result_sorted(v[order], starts, counts)
        return results

    def _frame(self, start: npt.NDArray[np.int64], end: npt.NDArray[np.int64],
               key: npt.NDArray[np.intp], results: dict[str, npt.NDArray[Any]]) -> pd.DataFrame:
        out: dict[str, Any] = {
            "window_start": start.view("datetime64[ns]"),
            "window_end": end.view("datetime64[ns]"),
        }
        for c in self.by:
            out[c] = self.keys.array(c, key)
        for spec in self.aggs:
            out[spec.name] = results[spec.name]
        self.emitted_total += len(start)
        # Arrays only (no Series to align) and the index given: the cheapest public build.
        return pd.DataFrame(out, index=pd.RangeIndex(len(start)), copy=False)
