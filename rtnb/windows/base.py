"""What the window engines share: keys, value extraction, watermark, output frames."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pandas as pd
from pandas._libs.internals import BlockPlacement  # type: ignore[import-not-found]
from pandas.api.extensions import ExtensionArray
from pandas.arrays import DatetimeArray
from pandas.core.internals.blocks import (  # type: ignore[import-not-found]
    DatetimeLikeBlock,
    NumpyBlock,
    get_block_type,
    new_block,
)
from pandas.core.internals.managers import BlockManager  # type: ignore[import-not-found]

from rtnb._frames import ColumnReader, column, from_manager, manager
from rtnb.aggregations import Aggregation
from rtnb.windows.keys import KeyRegistry

__all__ = ["NOTHING", "NO_WATERMARK", "AggSpec", "FrameLayout", "KeyedEngine", "WindowOutput",
           "build_frame", "restore_attributes", "snapshot_attributes", "time_ns"]

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

    @property
    def rows(self) -> pd.DataFrame | None:
        """The emitted windows: what every stateful operator's output calls ``rows``."""
        return self.windows


#: A batch that emitted nothing and had no late row (shared: an output is never changed).
NOTHING = WindowOutput(None, None)


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


#: numpy dtypes a block holds as they are (what ``pd.DataFrame`` would keep unchanged)
_PLAIN_DTYPES = frozenset(np.dtype(d) for d in (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float32", "float64", "datetime64[ns]"))
_NS = np.dtype("datetime64[ns]")
#: key arrays an engine keeps per ``by`` column for repeated emissions (see _key_array)
_KEY_CACHE = 8
_KEY_CACHE_CODES = 4096


def build_frame(columns: dict[str, Any], n: int) -> pd.DataFrame:
    """A frame of ``n`` rows from 1-d arrays, with a ``RangeIndex``; no copy, no inference.

    ``pd.DataFrame(dict)`` spends most of a small frame's time inferring and checking dtypes
    (~200 us for 7 columns, whatever the rows). When every name is a string and every array a
    numpy bool/number/datetime64[ns] array or a pandas extension array, the arrays go straight
    into blocks (one per column, ~15 us); anything else takes the ``pd.DataFrame`` path. The
    frame is the same either way, except that a ``NumpyExtensionArray`` keeps its dtype
    (``object`` keys stay ``object``).

    Examples
    --------
    >>> build_frame({"a": np.array([1, 2]), "b": pd.array(["x", None], dtype=str)}, 2)
       a    b
    0  1    x
    1  2  NaN
    """
    blocks = []
    for i, (name, values) in enumerate(columns.items()):
        if not isinstance(name, str) or getattr(values, "shape", (-1,))[-1] != n:
            break
        if type(values) is pd.arrays.NumpyExtensionArray:
            # an array that says its dtype (object keys stay object; pd.DataFrame would
            # infer ``str`` from an object ndarray of strings)
            values = values.to_numpy().reshape(1, n)
        elif isinstance(values, np.ndarray):
            if values.dtype not in _PLAIN_DTYPES or values.ndim != 1:
                break
            values = values.reshape(1, n)
            if values.dtype == _NS:
                values = DatetimeArray._simple_new(values, dtype=_NS)  # type: ignore[attr-defined]
        elif not isinstance(values, ExtensionArray):
            break
        blocks.append(new_block(values, BlockPlacement(slice(i, i + 1)), ndim=2))
    else:
        if blocks:
            mgr = BlockManager(tuple(blocks), [_columns(tuple(columns)), pd.RangeIndex(n)],
                               verify_integrity=False)
            frame: pd.DataFrame = pd.DataFrame._from_mgr(  # type: ignore[attr-defined]
                mgr, axes=mgr.axes)
            return frame
    return pd.DataFrame(columns, index=pd.RangeIndex(n), copy=False)


@functools.lru_cache(maxsize=256)
def _column_index(names: tuple[str, ...]) -> pd.Index:
    return pd.Index(list(names))


def _columns(names: tuple[str, ...]) -> pd.Index:
    """``pd.Index(list(names))``, built once per set of names (a new view each call)."""
    return _column_index(names).view()


def _block_values(values: Any, n: int) -> Any:
    """``values`` (1-d, ``n`` long) as one block holds them, or ``None`` (see build_frame)."""
    if type(values) is pd.arrays.NumpyExtensionArray:
        return values.to_numpy().reshape(1, n)
    if isinstance(values, np.ndarray):
        if values.dtype not in _PLAIN_DTYPES or values.shape != (n,):
            return None
        values = values.reshape(1, n)
        if values.dtype == _NS:
            return DatetimeArray._simple_new(values, dtype=_NS)  # type: ignore[attr-defined]
        return values
    if isinstance(values, ExtensionArray) and values.ndim == 1 and len(values) == n and \
            not isinstance(values, DatetimeArray | pd.arrays.TimedeltaArray):
        return values
    return None


class FrameLayout:
    """The blocks of a window engine's output frame, planned once per engine.

    The columns are ``window_start``, ``window_end``, the ``by`` columns, then the
    aggregations' ``names``; ``floats`` and ``ints`` name the float64 and int64 results that
    come as rows of one 2-d array each (in column order). :meth:`frame` puts the two window
    bounds in one datetime block, each key column and every other result in a block of its
    own, and the float and int results in one block each: a 7-column frame in ~6 us, where
    :func:`build_frame` (one block per column) takes ~15 us. The frame equals what
    :func:`build_frame` makes of the same columns.
    """

    def __init__(self, by: list[str], names: list[str], floats: list[str],
                 ints: list[str]) -> None:
        self.names = ["window_start", "window_end", *by, *names]
        self.by = by
        self.floats = floats
        self.ints = ints
        # duplicated or non-string labels: build_frame's dict decides (it keeps the last)
        self.usable = len(set(self.names)) == len(self.names) and all(
            isinstance(c, str) for c in self.names)
        self.columns = pd.Index(self.names)
        at = {c: i for i, c in enumerate(self.names)}
        self._times = BlockPlacement(slice(0, 2))
        self._floats = BlockPlacement(np.array([at[c] for c in floats], dtype=np.intp))
        self._ints = BlockPlacement(np.array([at[c] for c in ints], dtype=np.intp))
        self._one = {c: BlockPlacement(slice(i, i + 1)) for c, i in at.items()}
        self._sizes: tuple[int, pd.RangeIndex] = (0, pd.RangeIndex(0))

    def __reduce__(self) -> tuple[Any, ...]:
        # pandas' BlockPlacement does not pickle: a copy is planned again from the names
        return (FrameLayout, (self.by, self.names[2 + len(self.by):], self.floats, self.ints))

    def frame(self, times: npt.NDArray[np.int64], keys: list[Any],
              floats: npt.NDArray[np.float64], ints: npt.NDArray[np.int64],
              others: dict[str, Any]) -> pd.DataFrame:
        """The frame of ``n = times.shape[1]`` rows.

        ``times`` rows: window starts and ends (int64 ns); ``keys``: one array per ``by``
        column; ``floats``/``ints``: the results named in ``floats``/``ints``, one row each;
        ``others``: every other result, a 1-d array by name. The arrays are the frame's
        afterwards (not copied).
        """
        n = times.shape[1]
        blocks = []
        if self.usable:
            # the blocks built as new_block builds them (its block type for the keys and
            # other results), the known ones without its dtype dispatch
            blocks.append(DatetimeLikeBlock(DatetimeArray._simple_new(  # type: ignore[attr-defined]
                times.view(_NS), dtype=_NS), self._times, 2))
            for c, values in zip(self.by, keys, strict=True):
                block = _block_values(values, n)
                if block is None:
                    break
                blocks.append(get_block_type(block.dtype)(block, self._one[c], 2))
            else:
                if self.floats:
                    blocks.append(NumpyBlock(floats, self._floats, 2))
                if self.ints:
                    blocks.append(NumpyBlock(ints, self._ints, 2))
                for c, values in others.items():
                    block = _block_values(values, n)
                    if block is None:
                        break
                    blocks.append(get_block_type(block.dtype)(block, self._one[c], 2))
                else:
                    if self._sizes[0] != n:
                        self._sizes = (n, pd.RangeIndex(n))
                    return from_manager(manager(blocks, [self.columns.view(),
                                                         self._sizes[1].view()]))
        columns: dict[str, Any] = {"window_start": times[0].view(_NS),
                                   "window_end": times[1].view(_NS)}
        columns.update(zip(self.by, keys, strict=True))
        results = {**dict(zip(self.floats, floats, strict=True)),
                   **dict(zip(self.ints, ints, strict=True)), **others}
        for c in self.names[2 + len(self.by):]:
            columns[c] = results[c]
        return build_frame(columns, n)


def time_values_ns(values: Any) -> npt.NDArray[np.int64]:
    """Event times as int64 nanoseconds from a column array (see :func:`rtnb._frames.column`).

    >>> time_values_ns(pd.array(pd.to_datetime(["1970-01-01 00:00:01"])))
    array([1000000000])
    """
    if isinstance(values, DatetimeArray) and values.dtype == _NS:
        ns: npt.NDArray[np.int64] = values._ndarray.view(np.int64)
        return ns
    if isinstance(values, np.ndarray) and values.dtype == _NS:
        return values.view(np.int64)
    return time_ns(pd.Series(values, copy=False))


def time_ns(series: pd.Series) -> npt.NDArray[np.int64]:
    """Event times as int64 nanoseconds, whatever the datetime64 unit (NaT -> int64 min)."""
    if isinstance(series.dtype, np.dtype) and series.dtype == _NS:
        # tz-naive nanoseconds (the usual case): ``.values`` is the cheapest view
        ns: npt.NDArray[np.int64] = np.asarray(series.values).view(np.int64)
        return ns
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
        # columns read from the block remembered for the batches' layout (_frames.ColumnReader)
        tz_naive_ns = time in example.columns and example[time].dtype == _NS
        self._time_reader = ColumnReader(time, times=True) if tz_naive_ns else None
        self._value_readers = {c: ColumnReader(c) for c in {a.column for a in aggs}}
        self.max_time: int = NO_WATERMARK
        self._watermark: int = NO_WATERMARK
        self._seq = 0
        self.late_total = 0
        self.emitted_total = 0
        # After a reconfigure flushed open windows early, rows older than the newest flushed
        # window end would land in windows overlapping emitted ones: they are late.
        self._floor: int = NO_WATERMARK
        self._key_cache: dict[str, dict[bytes, Any]] = {}

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
        self._key_cache = {}

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
        return (self._times(batch), self._next_seq(len(batch)), self.keys.codes(batch))

    def _times(self, batch: pd.DataFrame) -> npt.NDArray[np.int64]:
        """The batch's event times as int64 nanoseconds (a view where the layout allows)."""
        reader = self._time_reader
        if reader is not None:
            ns: npt.NDArray[np.int64] = reader(batch)
            return ns
        return time_values_ns(column(batch, self.time))

    def _next_seq(self, n: int) -> npt.NDArray[np.int64]:
        seq = np.arange(self._seq, self._seq + n, dtype=np.int64)
        self._seq += n
        return seq

    def _values(self, batch: pd.DataFrame, name: str) -> npt.NDArray[np.float64]:
        reader = self._value_readers.get(name)
        values = reader(batch) if reader is not None else column(batch, name)
        if isinstance(values, np.ndarray) and values.dtype == np.float64:
            return values  # NaN is float64's own missing value: nothing to convert
        if self._numeric[name]:
            return pd.Series(values, copy=False).to_numpy(dtype=np.float64, na_value=np.nan)
        # Non-numeric columns can only be counted: 1.0 where present, NaN where missing.
        return np.where(pd.isna(values), np.nan, 1.0)

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

    def _key_array(self, col: str, key: npt.NDArray[np.intp]) -> Any:
        """``self.keys.array(col, key)``, reused (as a copy) when ``key`` repeats earlier codes.

        Tumbling windows close all keys' windows together, so emission after emission asks
        for the same few code sequences (every key of one window start, of two ...); taking
        from an Arrow string array costs ~10-40 us, a copy of an earlier result ~1 us (the
        frame gets its own array, so writing into it changes nothing here). The last
        :data:`_KEY_CACHE` sequences of each column are kept, by their bytes (sequences of up
        to :data:`_KEY_CACHE_CODES` codes: a large one costs more to compare than to take).
        """
        if len(key) > _KEY_CACHE_CODES:
            return self.keys.array(col, key)
        cache = self._key_cache.get(col)
        if cache is None:
            cache = self._key_cache[col] = {}
        codes = key.tobytes()
        hit = cache.get(codes)
        if hit is not None:
            return hit.copy()
        array = self.keys.array(col, key)
        if len(cache) >= _KEY_CACHE:
            del cache[next(iter(cache))]  # the oldest
        cache[codes] = array.copy()
        return array

    def _frame(self, start: npt.NDArray[np.int64], end: npt.NDArray[np.int64],
               key: npt.NDArray[np.intp], results: dict[str, npt.NDArray[Any]]) -> pd.DataFrame:
        out: dict[str, Any] = {
            "window_start": start.view("datetime64[ns]"),
            "window_end": end.view("datetime64[ns]"),
        }
        for c in self.by:
            out[c] = self._key_array(c, key)
        for spec in self.aggs:
            out[spec.name] = results[spec.name]
        self.emitted_total += len(start)
        return build_frame(out, len(start))
