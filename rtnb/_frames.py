"""Column reads, row takes and column appends on micro-batches, without pandas' call overhead.

A 100-row micro-batch makes pandas' fixed costs the whole bill: ``df[col]`` builds a Series
(~20 us), ``df[mask]`` or ``df.take`` ~100-150 us, ``df.assign(a=..., b=...)`` ~200-300 us,
``df.dtypes`` ~30 us, whatever the number of rows. These functions do the same work on the
frame's blocks (as ``pandas.api.internals.create_dataframe_from_blocks``, the low-level
constructor pandas publishes for this purpose, does, without its integrity checks) in a few
microseconds, and return ordinary DataFrames equal to what the pandas call returns
(``tests/unit/test_frames.py`` checks each against pandas on every dtype a batch can hold).

pandas is pinned to 3.1.x (pyproject): ``_get_column_array``, ``_mgr`` and the block
constructors are used here and nowhere else, so a pandas upgrade has one module to check.
Frames built here share the input's arrays the way pandas' own results do (Copy-on-Write
references are kept), so writing into either frame later never changes the other.

Examples
--------
>>> import numpy as np, pandas as pd
>>> df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "k": ["a", "b", "a"]})
>>> column(df, "x").tolist()
[1.0, 2.0, 3.0]
>>> take(df, np.array([True, False, True]))["k"].tolist()
['a', 'a']
>>> with_columns(df, ["y"], [np.array([1, 2, 3])]).columns.tolist()
['x', 'k', 'y']
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
from pandas._libs.internals import BlockPlacement  # type: ignore[import-not-found]
from pandas.core.flags import Flags as _Flags  # type: ignore[import-not-found]
from pandas.core.internals.api import _make_block  # type: ignore[import-not-found]
from pandas.core.internals.blocks import (  # type: ignore[import-not-found]
    ExtensionBlock,
    NumpyBlock,
    new_block,
)
from pandas.core.internals.managers import BlockManager  # type: ignore[import-not-found]

_manager_new = BlockManager.__new__

__all__ = ["Appender", "ColumnReader", "Schema", "column", "column_at", "dtypes", "empty",
           "floats", "from_arrays", "from_manager", "manager", "same_labels", "same_schema",
           "select", "take", "times_ns", "with_columns"]

# pandas' private constructors, untyped in its stubs
_DataFrame: Any = pd.DataFrame
_Index: Any = pd.Index
_new = object.__new__
_set = object.__setattr__
_weakref = weakref.ref


def from_manager(mgr: Any) -> pd.DataFrame:
    """``DataFrame._from_mgr(mgr, axes=mgr.axes)`` without the classmethod and axes lookups.

    What ``_from_mgr`` does in pandas 3.1: a bare ``DataFrame`` given its manager, empty
    ``attrs`` and default ``flags`` as ``NDFrame.__init__`` sets them (inlined, the
    ``Flags`` given its two attributes as its ``__init__`` sets them, without the call:
    ~0.6 us instead of ~0.95 us; ``tests/unit/test_small_batch_frames.py`` checks it
    against ``_from_mgr``).
    """
    obj = _new(_DataFrame)
    _set(obj, "_mgr", mgr)
    _set(obj, "_attrs", {})
    flags = _new(_Flags)
    flags._allows_duplicate_labels = True
    flags._obj = _weakref(obj)
    _set(obj, "_flags", flags)
    return obj  # type: ignore[no-any-return]


def manager(blocks: Sequence[Any], axes: list[Any]) -> Any:
    """``BlockManager(blocks, axes, verify_integrity=False)`` without its Python ``__init__``.

    pandas' ``BlockManager.__init__`` only verifies when asked; the manager is set up by
    its Cython base (blocks, a copy of the axes, the lookups left to build on first use),
    which ``__new__`` runs (~0.3 us instead of ~0.5 us).
    """
    return _manager_new(BlockManager, blocks, axes, False)


def column(df: pd.DataFrame, name: Any) -> Any:
    """The values of column ``name`` (a numpy array or an ExtensionArray), no Series built.

    The array is the frame's own (not a copy): do not change it in place.
    """
    loc = df.columns.get_loc(name)
    if not isinstance(loc, int):
        return df[name].array  # duplicated column labels: let pandas complain or choose
    frame: Any = df
    return frame._get_column_array(loc)


def column_at(df: pd.DataFrame, loc: int) -> Any:
    """The values of the column at position ``loc`` (see :func:`column`)."""
    frame: Any = df
    return frame._get_column_array(loc)


def times_ns(df: pd.DataFrame, name: Any) -> npt.NDArray[np.int64]:
    """Datetime column ``name`` as int64 nanoseconds since the epoch (NaT: int64 min).

    Any unit; tz-aware columns give their UTC instants. A view, not a copy, for the usual
    tz-naive nanoseconds.
    """
    loc = df.columns.get_loc(name)
    if isinstance(loc, int):
        # the usual tz-naive nanoseconds: a view of the block's row (no DatetimeArray built)
        mgr: Any = df._mgr
        values = mgr.blocks[mgr.blknos[loc]].values
        if getattr(values, "ndim", 1) == 2 and values.dtype == _NS:
            return values._ndarray[mgr.blklocs[loc]].view(np.int64)  # type: ignore[no-any-return]
    values = column(df, name)
    if isinstance(values, np.ndarray):
        raw = values
    else:
        if getattr(values, "tz", None) is not None:
            values = values.tz_convert("UTC").tz_localize(None)
        raw = values._ndarray if hasattr(values, "_ndarray") else np.asarray(values)
    if raw.dtype != _NS:
        raw = raw.astype(_NS)
    return raw.view(np.int64)


def floats(df: pd.DataFrame, name: Any) -> npt.NDArray[np.float64]:
    """Numeric column ``name`` as float64 (missing values of nullable dtypes: NaN)."""
    values = column(df, name)
    if isinstance(values, np.ndarray):
        return values if values.dtype == np.float64 else values.astype(np.float64)
    return np.asarray(values.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


_NS = np.dtype("datetime64[ns]")


def same_labels(a: pd.Index, b: pd.Index) -> bool:
    """``a.equals(b)``, answered by identity when both share one labels array (~0.1 us).

    Row slices of one frame have column indexes of their own over the same labels array.
    """
    x: Any = a
    y: Any = b
    if x is y or (type(x) is _Index and type(y) is _Index and x._data is y._data):
        return True
    return a.equals(b)


def dtypes(df: pd.DataFrame) -> list[Any]:
    """The column dtypes, in column order, as a list (no Series built)."""
    return list(df._mgr.get_dtypes())


def same_schema(df: pd.DataFrame, columns: pd.Index, types: Sequence[Any]) -> bool:
    """Whether ``df`` has exactly these column labels (in order) and dtypes."""
    cols = df.columns
    if cols is not columns and not cols.equals(columns):
        return False
    got = df._mgr.get_dtypes()
    return len(got) == len(types) and all(a == b for a, b in zip(got, types, strict=True))


class Schema:
    """The column labels and dtypes every batch of a frame must have, checked in ~1 us.

    :meth:`matches` compares a batch with :func:`same_schema` (~5 us) the first time its
    layout is seen. Afterwards a batch whose column index shares its labels array with an
    accepted batch's and whose blocks have that batch's placements (the same objects: row
    slices of one frame share them, as do batches a source cuts from one frame) and dtypes
    matches without comparing the labels or building the dtypes again.

    Examples
    --------
    >>> df = pd.DataFrame({"t": pd.to_datetime([0, 1]), "x": [1.0, 2.0]})
    >>> schema = Schema(df.iloc[:0], time="t")
    >>> schema.matches(df.iloc[:1]), schema.matches(df.iloc[1:])
    (True, True)
    >>> schema.matches(df.astype({"x": "float32"}))
    False
    >>> schema.times_ns(df.iloc[1:]).tolist()
    [1]
    """

    def __init__(self, example: pd.DataFrame, *, time: Any = None) -> None:
        self.example = example
        self.columns = example.columns
        self.types = dtypes(example)
        self.time = time
        self._labels: Any = None  # the labels array of an accepted batch's columns
        self._layout: tuple[tuple[Any, Any], ...] = ()  # its blocks' (placement, dtype)
        self._time: tuple[int, int, Any] | None = None  # time column: block, row, placement

    def matches(self, df: pd.DataFrame) -> bool:
        """Whether ``df`` has exactly the example's column labels (in order) and dtypes."""
        cols: Any = df.columns
        if type(cols) is _Index and cols._data is self._labels:
            blocks = df._mgr.blocks
            layout = self._layout
            if len(blocks) == len(layout):
                for block, (placement, dtype) in zip(blocks, layout, strict=True):
                    if block._mgr_locs is not placement:
                        break
                    got = block.dtype
                    if got is not dtype and got != dtype:
                        break
                else:
                    return True
        if not same_schema(df, self.columns, self.types):
            return False
        if type(cols) is _Index:
            self._accept(df)
        return True

    def known_times(self, df: pd.DataFrame) -> npt.NDArray[np.int64] | None:
        """:meth:`matches` and :meth:`times_ns` in one step for a batch laid out as one seen.

        The time column of ``df`` (int64 ns, a view of its block) when ``df`` shares an
        accepted batch's labels array, block placements and dtypes and the time column is a
        tz-naive nanosecond block row; ``None`` otherwise (then :meth:`matches` decides).
        """
        at = self._time
        cols: Any = df.columns
        if at is None or type(cols) is not _Index or cols._data is not self._labels:
            return None
        blocks = df._mgr.blocks
        layout = self._layout
        if len(blocks) != len(layout):
            return None
        for block, (placement, dtype) in zip(blocks, layout, strict=True):
            if block._mgr_locs is not placement:
                return None
            got = block.dtype
            if got is not dtype and got != dtype:
                return None
        # the layout matched, so block ``at[0]`` is the accepted time block
        return blocks[at[0]].values._ndarray[at[1]].view(np.int64)  # type: ignore[no-any-return]

    def _accept(self, df: pd.DataFrame) -> None:
        mgr: Any = df._mgr
        self._labels = df.columns._data  # type: ignore[attr-defined]
        self._layout = tuple((b._mgr_locs, b.dtype) for b in mgr.blocks)
        self._time = None
        if self.time is not None:
            loc = df.columns.get_loc(self.time)
            if isinstance(loc, int):
                i = int(mgr.blknos[loc])
                block = mgr.blocks[i]
                if block.dtype == _NS and getattr(block.values, "ndim", 1) == 2:
                    self._time = (i, int(mgr.blklocs[loc]), block._mgr_locs)

    def times_ns(self, df: pd.DataFrame) -> npt.NDArray[np.int64]:
        """The time column of ``df`` (a batch :meth:`matches` accepted), as :func:`times_ns`."""
        at = self._time
        if at is not None:
            i, row, placement = at
            blocks = df._mgr.blocks
            if i < len(blocks) and blocks[i]._mgr_locs is placement:
                return blocks[i].values._ndarray[row].view(np.int64)  # type: ignore[no-any-return]
        return times_ns(df, self.time)


class ColumnReader:
    """One named column of each batch: :func:`column`, or :func:`times_ns` (``times=True``).

    ~0.3 us for a batch laid out like the last one read: the block holding the column and its
    row in it are remembered with the batch's labels array and the block's placement; a
    batch sharing both (row slices of one frame do) is read from that block directly, any
    other through :func:`column` / :func:`times_ns` (~1-1.5 us; a datetime column through
    :func:`column` builds a ``DatetimeArray``, ~3 us).

    Examples
    --------
    >>> df = pd.DataFrame({"t": pd.to_datetime([0, 5]), "x": [1.0, 2.0], "k": ["a", "b"]})
    >>> x, k, t = ColumnReader("x"), ColumnReader("k"), ColumnReader("t", times=True)
    >>> [(x(b).tolist(), k(b).tolist(), t(b).tolist()) for b in (df.iloc[:1], df.iloc[1:])]
    [([1.0], ['a'], [0]), ([2.0], ['b'], [5])]
    """

    __slots__ = ("_block", "_labels", "_placement", "_row", "name", "times")

    def __init__(self, name: Any, *, times: bool = False) -> None:
        self.name = name
        self.times = times
        self._labels: Any = None  # labels array of the batch the position was found in
        self._placement: Any = None  # placement of the block holding the column
        self._block = 0  # the block's position in the manager
        self._row = -1  # the column's row in a 2-d block (-1: a 1-d extension array)

    def __reduce__(self) -> tuple[Any, ...]:
        # what is remembered holds pandas' BlockPlacement, which does not pickle: a copy
        # finds the column again
        return (ColumnReader, (self.name,), (None, {"times": self.times}))

    def __call__(self, df: pd.DataFrame) -> Any:
        """The column's values in ``df`` (the frame's own array: do not change it)."""
        cols: Any = df.columns
        if type(cols) is _Index and cols._data is self._labels:
            blocks = df._mgr.blocks
            i = self._block
            if i < len(blocks):
                block = blocks[i]
                if block._mgr_locs is self._placement:
                    values = block.values
                    row = self._row
                    if row < 0:
                        return values
                    if self.times:
                        return values._ndarray[row].view(np.int64)
                    return values[row]
        return self._find(df)

    def _find(self, df: pd.DataFrame) -> Any:
        name = self.name
        cols: Any = df.columns
        loc = cols.get_loc(name)
        self._labels = None
        if isinstance(loc, int) and type(cols) is _Index:
            mgr: Any = df._mgr
            i = int(mgr.blknos[loc])
            block = mgr.blocks[i]
            values = block.values
            ndim = getattr(values, "ndim", 1)
            if self.times:
                usable = ndim == 2 and values.dtype == _NS  # tz-naive ns: a view of the block
            else:  # numpy rows and 1-d extension arrays (2-d datetimes build an array)
                usable = isinstance(values, np.ndarray) or ndim == 1
            if usable:
                self._labels, self._placement, self._block = cols._data, block._mgr_locs, i
                self._row = int(mgr.blklocs[loc]) if ndim == 2 else -1
        return times_ns(df, name) if self.times else column(df, name)


def take(df: pd.DataFrame, rows: npt.NDArray[Any]) -> pd.DataFrame:
    """The rows of ``df`` at integer positions ``rows`` (or where boolean ``rows`` is True).

    Same result as ``df.take(positions)`` / ``df[mask]``, index labels included; a mask
    that keeps every row returns ``df`` itself (frames are never changed in place here).
    """
    mgr: Any = df._mgr
    if rows.dtype == bool:
        # the rows from the manager's index axis (len(df) goes through pandas' index)
        n = len(mgr.axes[1])
        if len(rows) != n:
            msg = f"boolean mask of length {len(rows)} for a frame of {n} rows"
            raise IndexError(msg)
        if np.count_nonzero(rows) == n:  # ~0.3 us; rows.all() ~1.5 us
            return df
        positions = np.flatnonzero(rows)
        ascending = True
        mask: npt.NDArray[Any] | None = rows
    else:
        positions = np.asarray(rows, dtype=np.intp)
        ascending = False
        mask = None
    arrow_mask = None  # the mask as an Arrow array, made once for every string column
    blocks = []
    for block in mgr.blocks:
        values = block.values
        if isinstance(values, np.ndarray):
            values = values[:, positions]
        elif getattr(values, "ndim", 1) == 2:  # datetimes, timedeltas: numpy-backed arrays
            values = values.take(positions, axis=1)
        elif type(values) is _ArrowStrings and mask is not None:
            # Arrow's own filter on the chunks, nulls and several chunks included: 50 of 100
            # strings in ~4-8 us where the gather of the buffers below took ~8-12 us in the
            # same harness (and pandas' take ~15 us)
            if arrow_mask is None:
                arrow_mask = pa.array(mask, type=pa.bool_())
            strings: Any = values
            values = strings._from_pyarrow_array(strings._pa_array.filter(arrow_mask))
        else:
            taken = _take_strings(values, positions, ascending) if type(
                values) is _ArrowStrings else None
            values = values.take(positions) if taken is None else taken
        # a take keeps the dtype, so the block's own class holds the result (new_block's
        # dtype dispatch costs ~0.7 us a block)
        blocks.append(type(block)(values, block._mgr_locs, 2))
    return from_manager(_manager_new(BlockManager, blocks,
                                     [df.columns, _take_index(df.index, positions, ascending)],
                                     False))


_ArrowStrings = pd.arrays.ArrowStringArray
_RangeIndex = pd.RangeIndex
_NO_BYTES = np.zeros(0, dtype=np.uint8)


def _take_strings(values: Any, positions: npt.NDArray[np.intp], ascending: bool) -> Any:
    """``values.take(positions)`` for Arrow strings without nulls, from their buffers.

    pyarrow's ``take`` (through pandas) took ~15 us for 50 of 100 strings, ~36 us with the
    garbage collections its temporary objects set off in a stream of batches; this gathers
    the offsets and bytes with numpy (~6 us). ``None``: let ``take`` do it (nulls, several
    chunks, negative positions).
    """
    chunks = values._pa_array
    if chunks.num_chunks != 1:
        return None
    chunk = chunks.chunk(0)
    n = len(positions)
    if chunk.null_count or not pa.types.is_large_string(chunk.type) or not n or (
            not ascending and positions.min() < 0):
        return None
    _, offsets_buf, data_buf = chunk.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[chunk.offset:chunk.offset
                                                         + len(chunk) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else _NO_BYTES
    starts = offsets[positions]
    lengths = offsets[positions + 1] - starts
    new_offsets = np.empty(n + 1, dtype=np.int64)
    new_offsets[0] = 0
    np.cumsum(lengths, out=new_offsets[1:])
    # byte j of the result is byte (start of its string) + (j - its new offset)
    where = np.repeat(starts - new_offsets[:-1], lengths)
    where += np.arange(len(where))
    taken = pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(new_offsets),
                                                         pa.py_buffer(data[where])])
    return values._from_pyarrow_array(taken)


def from_arrays(columns: pd.Index, arrays: Sequence[Any]) -> pd.DataFrame:
    """A frame with one column per array, of the arrays' own dtypes, and a default index.

    Each array is a 1-D numpy array (numbers, booleans, ``datetime64[ns]``) or a pandas
    ExtensionArray, all of one length, used as it is (no copy, no inference): the frame
    owns them afterwards, so pass arrays nothing else holds. ~30 us where
    ``pd.DataFrame(dict)`` costs ~170 us on seven columns.
    """
    n = len(arrays[0]) if len(arrays) else 0
    blocks = []
    for i, values in enumerate(arrays):
        if len(values) != n:
            msg = f"column {columns[i]!r} has {len(values)} values, the first has {n}"
            raise ValueError(msg)
        if isinstance(values, np.ndarray):
            values = values.reshape(1, -1)
        # pandas' helper for these blocks: the block type, 2-D datetimes as DatetimeArray
        blocks.append(_make_block(values, np.array([i], dtype=np.intp)))
    mgr = BlockManager(blocks, [columns, pd.RangeIndex(n)], verify_integrity=False)
    return from_manager(mgr)


def select(df: pd.DataFrame, positions: Sequence[int], columns: pd.Index) -> pd.DataFrame:
    """``df.iloc[:, positions]`` with column labels ``columns``: views of ``df``'s arrays.

    The sharing is registered with pandas (Copy-on-Write references), so a later write into
    either frame copies first, as with ``df[cols]``.
    """
    mgr = df._mgr
    blknos, blklocs, blocks = mgr.blknos, mgr.blklocs, mgr.blocks
    out = []
    for i, p in enumerate(positions):
        block = blocks[blknos[p]]
        values = block.values
        if getattr(values, "ndim", 1) == 2:
            loc = blklocs[p]
            values = values[loc:loc + 1]
        out.append(new_block(values, BlockPlacement(slice(i, i + 1)), ndim=2, refs=block.refs))
    new = BlockManager(out, [columns, df.index], verify_integrity=False)
    return from_manager(new)


def empty(example: pd.DataFrame) -> pd.DataFrame:
    """A new frame with ``example``'s columns and dtypes and no rows (~4x ``copy()``)."""
    if len(example):
        example = example.iloc[:0]
    blocks = [new_block(b.values, b.mgr_locs, ndim=2) for b in example._mgr.blocks]
    mgr = BlockManager(blocks, [example.columns, pd.RangeIndex(0)], verify_integrity=False)
    return from_manager(mgr)


def _take_index(index: pd.Index, positions: npt.NDArray[np.intp], ascending: bool) -> pd.Index:
    """``index.take(positions)``; ``ascending``: the positions are a mask's (none negative)."""
    if type(index) is _RangeIndex:
        span: range = index._range  # type: ignore[attr-defined]  # start/step properties: ~0.3 us each
        if span.step == 1 and (ascending or not len(positions) or positions.min() >= 0):
            # what pandas gives for a default index: the kept labels as int64 (a mask's
            # positions are a new array of ours: used as they are when the index starts at 0)
            start = span.start
            if start:
                labels = positions.astype(np.int64) + start
            elif ascending and positions.dtype == np.int64:
                labels = positions
            else:
                labels = positions.astype(np.int64)
            return _Index._simple_new(labels, name=index.name)  # type: ignore[no-any-return]
    return index.take(positions)


def with_columns(df: pd.DataFrame, names: Sequence[Any], arrays: Sequence[Any], *,
                 columns: pd.Index | None = None) -> pd.DataFrame:
    """``df.assign(**dict(zip(names, arrays)))`` for new 1-D arrays of ``len(df)`` rows.

    New numeric or boolean numpy columns and pandas string arrays take the fast path; names
    already in ``df`` (which replace that column) and other arrays go through ``assign``.
    ``columns`` is the result's column index when the caller has it cached: ``df.columns``
    followed by ``names``, which the caller has checked are not in ``df.columns`` (a cached
    plan checks once, not per batch).

    The fast path builds the result's blocks directly: each of ``df``'s blocks again over
    the same values, registered with pandas' Copy-on-Write references (what
    ``Block.copy(deep=False)`` does, without its array view), then one block per new
    column: ~6 us for a 3-column batch and two new columns, where copying the blocks and
    ``new_block`` took ~14 us.
    """
    existing = df.columns
    if (columns is None and any(name in existing for name in names)) or not all(
            (isinstance(v, np.ndarray) and v.dtype.kind in "biuf")
            or isinstance(v, _STRING_ARRAYS) for v in arrays):
        return df.assign(**{str(k): v for k, v in zip(names, arrays, strict=True)})
    n = len(df)
    width = len(existing)
    # the frame's blocks over the same arrays, their sharing tracked by pandas (writing into
    # either frame later copies first), then one block per new column
    blocks = [type(b)(b.values, b._mgr_locs, 2, b.refs) for b in df._mgr.blocks]
    for i, values in enumerate(arrays):
        if len(values) != n:
            msg = f"column {names[i]!r} has {len(values)} values for a frame of {n} rows"
            raise ValueError(msg)
        if isinstance(values, np.ndarray):
            blocks.append(NumpyBlock(values.reshape(1, -1), _one(width + i), 2))
        else:  # a 1-D extension array (strings)
            blocks.append(ExtensionBlock(values, _one(width + i), 2))
    if columns is None:
        columns = existing.append(pd.Index(list(names)))
    mgr = BlockManager(tuple(blocks), [columns, df.index], verify_integrity=False)
    return from_manager(mgr)


_STRING_ARRAYS = (pd.arrays.StringArray, pd.arrays.ArrowStringArray)


class Appender:
    """:func:`with_columns` of the same ``names`` on every batch of a stream, planned once.

    The output's column index and the new columns' placements are worked out for the first
    batch of a column layout (its labels array) and reused while batches share that array
    (row slices of one frame do, as do the batches a source cuts from one frame or builds
    with the example's columns); a name that is a column of the batch already (it is
    replaced) and arrays other than 1-D numeric or boolean numpy arrays or pandas string
    arrays go through :func:`with_columns`. ~3 us for a 3-column batch and two new
    columns, where :func:`with_columns` took ~5 us (its per-call checks and the index).

    Examples
    --------
    >>> df = pd.DataFrame({"x": [1.0, 2.0], "k": ["a", "b"]})
    >>> append = Appender(["score", "flag"])
    >>> out = append(df.iloc[1:], [np.array([0.5]), np.array([True])])
    >>> out.columns.tolist(), out["score"].tolist(), out.index.tolist()
    (['x', 'k', 'score', 'flag'], [0.5], [1])
    """

    __slots__ = ("_columns", "_labels", "_places", "names")

    def __init__(self, names: Sequence[Any]) -> None:
        self.names = list(names)
        self._labels: Any = None  # the labels array of the layout planned for
        self._columns: pd.Index | None = None  # its output columns (None: a name clashes)
        self._places: list[Any] = []  # the new columns' placements

    def __reduce__(self) -> tuple[Any, ...]:
        return (Appender, (self.names,))  # a copy plans again (placements do not pickle)

    def __call__(self, df: pd.DataFrame, arrays: Sequence[Any]) -> pd.DataFrame:
        """``df`` with ``arrays`` appended as columns ``names``."""
        cols: Any = df.columns
        if type(cols) is not _Index or cols._data is not self._labels:
            self._plan(cols)
        columns = self._columns
        if columns is None:
            return with_columns(df, self.names, arrays)
        index = df.index
        shape = (len(index),)
        # the frame's blocks over the same arrays, their sharing tracked by pandas (writing
        # into either frame later copies first), then one block per new column
        blocks = [type(b)(b.values, b._mgr_locs, 2, b.refs) for b in df._mgr.blocks]
        if len(arrays) != len(self._places):
            msg = f"{len(arrays)} arrays for the {len(self._places)} columns {self.names!r}"
            raise ValueError(msg)
        for values, place in zip(arrays, self._places):  # noqa: B905  # lengths checked
            if type(values) is np.ndarray and values.shape == shape and \
                    values.dtype.kind in "biuf":
                blocks.append(NumpyBlock(values.reshape(1, -1), place, 2))
            elif isinstance(values, _STRING_ARRAYS) and len(values) == shape[0]:
                blocks.append(ExtensionBlock(values, place, 2))
            else:  # let with_columns decide (assign, or the error it raises)
                return with_columns(df, self.names, arrays, columns=columns)
        return from_manager(_manager_new(BlockManager, blocks, [columns, index], False))

    def _plan(self, cols: Any) -> None:
        names = self.names
        self._labels = cols._data if type(cols) is _Index else None
        clash = any(name in cols for name in names)
        self._columns = None if clash else cols.append(pd.Index(names))
        width = len(cols)
        self._places = [_one(width + i) for i in range(len(names))]


_PLACEMENTS: list[Any] = []


def _one(i: int) -> Any:
    """The placement of one column at position ``i`` (shared: placements never change)."""
    if i >= len(_PLACEMENTS):
        _PLACEMENTS.extend(BlockPlacement(slice(j, j + 1)) for j in range(len(_PLACEMENTS),
                                                                          i + 1))
    return _PLACEMENTS[i]
