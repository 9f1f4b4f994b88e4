"""Helpers for testing a pipeline: feed it data, collect what its nodes emit, compare with pandas.

The helpers use the public API only (``emit``, ``close``, ``sink``, ``example``, ``name`` and
:class:`rtnb.Pipeline`), so a test written with them tests what users see. This module does
not import pytest: it is importable wherever rtnb is.

>>> import pandas as pd, rtnb
>>> from rtnb.testing import collect, feed
>>> data = pd.DataFrame({"t": pd.date_range("2026-01-01", periods=4, freq="s"),
...                      "cpu": [10.0, 60.0, 70.0, 20.0]})
>>> sdf = rtnb.StreamingFrame(data.iloc[:0], time="t", name="metrics")
>>> hot = collect(sdf[sdf["cpu"] > 50])
>>> feed(sdf, data, batch_size=2)
>>> len(hot), hot.frame()["cpu"].tolist()
(2, [60.0, 70.0])
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pandas.testing as tm

from rtnb import Pipeline, StreamingFrame
from rtnb._time import DurationLike
from rtnb.errors import ConfigError

__all__ = [
    "Collected",
    "assert_frame_equal_unordered",
    "collect",
    "collect_all",
    "feed",
    "pandas_windows",
    "random_splits",
]


# -- feeding --------------------------------------------------------------------------------
def feed(frame: StreamingFrame, data: pd.DataFrame | Sequence[pd.DataFrame], *,
         batch_size: int | None = None, splits: Sequence[int] | None = None,
         close: bool = True) -> None:
    """Emit ``data`` into the root frame ``frame`` batch by batch, then close it.

    Parameters
    ----------
    frame
        The root frame (a source or a ``StreamingFrame`` built from an example).
    data
        A DataFrame, cut into batches as ``batch_size`` or ``splits`` say (one batch if
        neither is given), or a list of DataFrames emitted as they are.
    batch_size
        Batches of this many rows (the last may be shorter); an empty frame emits nothing.
    splits
        Row positions where a new batch starts, in order, between 0 and ``len(data)``: ``k``
        positions make ``k + 1`` batches, empty ones included (a repeated position).
    close
        Close the stream after the last batch (windows flush); ``False`` to emit more later.

    Raises
    ------
    ConfigError
        ``batch_size`` and ``splits`` together, with a list of batches, or out of range.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> data = pd.DataFrame({"x": range(5)})
    >>> sdf = rtnb.StreamingFrame(data.iloc[:0], name="nums")
    >>> out = collect(sdf)
    >>> feed(sdf, data, splits=[1, 1, 4])
    >>> [b["x"].tolist() for b in out]
    [[0], [], [1, 2, 3], [4]]
    >>> sdf.closed
    True

    Slices get a fresh index, as a source's batches do:

    >>> out[2].index.tolist()
    [0, 1, 2]
    """
    batches = _batches(frame, data, batch_size, splits)
    for batch in batches:
        frame.emit(batch)
    if close:
        frame.close()


def _batches(frame: StreamingFrame, data: pd.DataFrame | Sequence[pd.DataFrame],
             batch_size: int | None, splits: Sequence[int] | None) -> list[pd.DataFrame]:
    where = f"feed() into {getattr(frame, 'name', frame)!r}"
    if batch_size is not None and splits is not None:
        msg = f"{where}: give `batch_size` or `splits`, not both"
        raise ConfigError(msg)
    if not isinstance(data, pd.DataFrame):
        batches = list(data)
        if not all(isinstance(b, pd.DataFrame) for b in batches):
            kinds = sorted({type(b).__name__ for b in batches})
            msg = f"{where} takes a DataFrame or a list of DataFrames; got a list of {kinds}"
            raise ConfigError(msg)
        if batch_size is not None or splits is not None:
            msg = (f"{where}: `batch_size` and `splits` cut one DataFrame; a list of batches "
                   f"is emitted as it is")
            raise ConfigError(msg)
        return batches
    n = len(data)
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            msg = f"{where}: `batch_size` must be a positive int; got {batch_size!r}"
            raise ConfigError(msg)
        splits = list(range(batch_size, n, batch_size))
        bounds = [0, *splits, n] if n else []
    elif splits is not None:
        bounds = [0, *splits, n]
        if any(not isinstance(b, int | np.integer) for b in splits) or any(
                lo > hi for lo, hi in itertools.pairwise(bounds)):
            msg = (f"{where}: `splits` must be row positions in order, between 0 and {n} "
                   f"(the rows of `data`); got {list(splits)!r}")
            raise ConfigError(msg)
    else:
        return [data]
    return [data.iloc[lo:hi].reset_index(drop=True) for lo, hi in itertools.pairwise(bounds)]


def random_splits(n: int, seed: int, cuts: int) -> list[int]:
    """``cuts`` random row positions for :func:`feed`'s ``splits``, the same for a ``seed``.

    Positions may repeat (an empty batch), as a source may emit empty batches.

    Parameters
    ----------
    n
        Rows of the data to split.
    seed
        Seed of the random generator (numpy ``default_rng``).
    cuts
        How many positions: the data is fed in ``cuts + 1`` batches.

    Examples
    --------
    >>> splits = random_splits(100, seed=7, cuts=5)
    >>> len(splits), splits == sorted(splits), all(0 <= s <= 100 for s in splits)
    (5, True, True)
    >>> splits == random_splits(100, seed=7, cuts=5)
    True
    """
    if n < 0 or cuts < 0:
        msg = f"random_splits(): `n` and `cuts` must be >= 0; got n={n!r}, cuts={cuts!r}"
        raise ConfigError(msg)
    rng = np.random.default_rng(seed)
    return sorted(int(p) for p in rng.integers(0, n + 1, size=cuts))


# -- collecting -----------------------------------------------------------------------------
class Collected(list[pd.DataFrame]):
    """The batches one node emitted, in arrival order: a list that fills as they arrive.

    Made by :func:`collect`; ``name`` and ``example`` are the node's.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> sdf = rtnb.StreamingFrame(pd.DataFrame({"x": pd.Series([], dtype="int64")}))
    >>> out = collect(sdf)
    >>> sdf.emit(pd.DataFrame({"x": [1, 2]}))
    >>> len(out), out[0]["x"].tolist()
    (1, [1, 2])
    """

    def __init__(self, name: str, example: pd.DataFrame) -> None:
        super().__init__()
        self.name = name
        self.example = example

    def frame(self, *, ignore_index: bool = True) -> pd.DataFrame:
        """Every batch in one DataFrame; the node's (empty) example if nothing came.

        Examples
        --------
        >>> import pandas as pd, rtnb
        >>> sdf = rtnb.StreamingFrame(pd.DataFrame({"x": pd.Series([], dtype="int64")}))
        >>> out = collect(sdf)
        >>> out.frame().dtypes.to_dict()
        {'x': dtype('int64')}
        >>> feed(sdf, [pd.DataFrame({"x": [1, 2]}), pd.DataFrame({"x": [3]})])
        >>> out.frame()["x"].tolist(), out.frame(ignore_index=False).index.tolist()
        ([1, 2, 3], [0, 1, 0])
        """
        if not self:
            return self.example.iloc[:0].copy()
        return pd.concat(self, ignore_index=ignore_index)

    def __repr__(self) -> str:
        rows = sum(len(b) for b in self)
        return f"<Collected {self.name!r}: {len(self)} batches, {rows} rows>"


def collect(frame: StreamingFrame) -> Collected:
    """Collect every batch ``frame`` emits from now on.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> sdf = rtnb.StreamingFrame(pd.DataFrame({"x": pd.Series([], dtype="int64")}),
    ...                           name="nums")
    >>> out = collect(sdf)
    >>> feed(sdf, pd.DataFrame({"x": [1, 2, 3]}), batch_size=2)
    >>> out
    <Collected 'nums': 2 batches, 3 rows>
    """
    if not isinstance(frame, StreamingFrame):
        msg = f"collect() takes a StreamingFrame; got {type(frame).__name__}"
        raise ConfigError(msg)
    out = Collected(frame.name, frame.example)
    frame.sink(out.append)
    return out


def collect_all(pipeline: Pipeline | StreamingFrame) -> dict[str, Collected]:
    """Collect every node of a pipeline (or of the pipeline a frame belongs to), by name.

    The nodes are those of :attr:`rtnb.Pipeline.frames` now: build the pipeline first.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> sdf = rtnb.StreamingFrame(pd.DataFrame({"x": pd.Series([], dtype="int64")}),
    ...                           name="nums")
    >>> big = sdf[sdf["x"] > 1]
    >>> outs = collect_all(sdf)
    >>> feed(sdf, pd.DataFrame({"x": [1, 2, 3]}))
    >>> {name: len(out.frame()) for name, out in outs.items()}
    {'nums': 3, 'nums.filter[(x > 1)]': 2}
    """
    if isinstance(pipeline, StreamingFrame):
        pipeline = Pipeline(pipeline)
    elif not isinstance(pipeline, Pipeline):
        msg = f"collect_all() takes a Pipeline or a StreamingFrame; got {type(pipeline).__name__}"
        raise ConfigError(msg)
    return {frame.name: collect(frame) for frame in pipeline.frames}


# -- comparing with pandas ------------------------------------------------------------------
def assert_frame_equal_unordered(result: pd.DataFrame, expected: pd.DataFrame, *,
                                 by: str | Sequence[str] | None = None,
                                 check_dtype: bool = True, **kwargs: Any) -> None:
    """Assert two DataFrames hold the same rows, in whatever order and index.

    Both are sorted (stable, missing values last) and given a fresh index, then compared by
    :func:`pandas.testing.assert_frame_equal`.

    Parameters
    ----------
    result, expected
        The frames to compare.
    by
        The columns to sort by; default every column of ``expected``, the non-float ones
        first (so float rounding rarely decides the order).
    check_dtype
        Passed to ``assert_frame_equal``, as is every other keyword (``rtol``, ``obj`` ...).

    Raises
    ------
    AssertionError
        The rows differ, or a frame lacks a column to sort by.

    Examples
    --------
    >>> import pandas as pd
    >>> result = pd.DataFrame({"host": ["b", "a"], "n": [2, 1]}, index=[7, 3])
    >>> assert_frame_equal_unordered(result, pd.DataFrame({"host": ["a", "b"], "n": [1, 2]}))
    >>> assert_frame_equal_unordered(result, pd.DataFrame({"host": ["a", "b"], "n": [1, 3]}))
    Traceback (most recent call last):
    ...
    AssertionError: DataFrame.iloc[:, 1] (column name="n") are different
    ...
    """
    for side, df in (("result", result), ("expected", expected)):
        if not isinstance(df, pd.DataFrame):
            msg = f"`{side}` must be a DataFrame; got {type(df).__name__}"
            raise AssertionError(msg)
    if by is None:
        floats = [pd.api.types.is_float_dtype(t) for t in expected.dtypes]
        keys = ([c for c, f in zip(expected.columns, floats, strict=True) if not f]
                + [c for c, f in zip(expected.columns, floats, strict=True) if f])
    else:
        keys = [by] if isinstance(by, str) else list(by)
    for side, df in (("result", result), ("expected", expected)):
        missing = [k for k in keys if k not in df.columns]
        if missing:
            msg = (f"{side} has no column(s) {missing!r} to sort by; result columns "
                   f"{list(result.columns)!r}, expected columns {list(expected.columns)!r}")
            raise AssertionError(msg)

    def ordered(df: pd.DataFrame) -> pd.DataFrame:
        if not keys:
            return df.reset_index(drop=True)
        return df.sort_values(keys, kind="stable", na_position="last", ignore_index=True)

    tm.assert_frame_equal(ordered(result), ordered(expected), check_dtype=check_dtype,
                          **kwargs)


def pandas_windows(df: pd.DataFrame, *, time: str, size: DurationLike,
                   every: DurationLike | None = None,
                   by: str | Sequence[str] | None = None,
                   aggs: Mapping[str, tuple[Any, ...]]) -> pd.DataFrame:
    """Tumbling or sliding windows of ``df`` computed by pandas on the whole frame.

    The reference for ``sdf.window(rtnb.tumbling(size) or rtnb.sliding(size, every),
    by=by).agg(**aggs)``: a window ``[s, s + size)`` for every multiple ``s`` of ``every``
    (of ``size`` for tumbling windows) since the epoch, one row per window and key that has
    rows, with the same columns: ``window_start``, ``window_end``, the keys, then ``aggs``.
    ``first`` and ``last`` follow event time (rows of equal time: ``df``'s order); rows
    without a time are left out (a frame sends them to its dead letters). Sorted by window
    and key.

    Parameters
    ----------
    df
        The whole data, in arrival order.
    time
        The event-time column.
    size, every
        Window length and step (``"10s"``, a ``Timedelta`` ...); ``every=None``: tumbling.
    by
        Key column(s), or ``None`` for one window per interval.
    aggs
        ``name=(column, how, *args)`` as ``agg()`` takes them: ``count``, ``sum``, ``mean``,
        ``var``, ``std``, ``min``, ``max``, ``first``, ``last``, ``median`` and
        ``("quantile", q)``.

    Raises
    ------
    ConfigError
        A non-positive ``size`` or ``every``, or an aggregation pandas has no match for.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"t": pd.to_datetime(["2026-01-01 00:00:01", "2026-01-01 00:00:04",
    ...                                          "2026-01-01 00:00:06"]),
    ...                    "host": ["a", "b", "a"], "cpu": [1.0, 2.0, 3.0]})
    >>> pandas_windows(df, time="t", size="5s", by="host", aggs={"n": ("cpu", "count")})
             window_start          window_end host  n
    0 2026-01-01 00:00:00 2026-01-01 00:00:05    a  1
    1 2026-01-01 00:00:00 2026-01-01 00:00:05    b  1
    2 2026-01-01 00:00:05 2026-01-01 00:00:10    a  1
    >>> pandas_windows(df, time="t", size="4s", every="2s", aggs={"hi": ("cpu", "max")})
             window_start          window_end   hi
    0 2025-12-31 23:59:58 2026-01-01 00:00:02  1.0
    1 2026-01-01 00:00:00 2026-01-01 00:00:04  1.0
    2 2026-01-01 00:00:02 2026-01-01 00:00:06  2.0
    3 2026-01-01 00:00:04 2026-01-01 00:00:08  3.0
    4 2026-01-01 00:00:06 2026-01-01 00:00:10  3.0
    """
    length = pd.Timedelta(size).value
    step = length if every is None else pd.Timedelta(every).value
    if length <= 0 or step <= 0:
        msg = f"pandas_windows(): `size` and `every` must be positive; got {size!r}, {every!r}"
        raise ConfigError(msg)
    keys = [] if by is None else [by] if isinstance(by, str) else list(by)
    missing = [c for c in [time, *keys] if c not in df.columns]
    if missing:
        msg = f"pandas_windows(): no column(s) {missing!r} in `df`; columns {list(df.columns)!r}"
        raise ConfigError(msg)
    named = {name: _pandas_agg(name, spec) for name, spec in aggs.items()}
    rows = df[df[time].notna()].sort_values(time, kind="stable")
    t = pd.DatetimeIndex(rows[time]).as_unit("ns").asi8
    # A row at t is in the windows that start at the multiples of `step` in (t - size, t];
    # the rows of a window are a slice of the rows in time order.
    newest = t // step * step
    starts = np.unique(np.concatenate([newest - k * step for k in range(-(-length // step))]))
    lo, hi = np.searchsorted(t, starts), np.searchsorted(t, starts + length)
    picked = np.concatenate([np.empty(0, np.intp),
                             *(np.arange(a, b) for a, b in zip(lo, hi, strict=True))])
    windowed = rows.iloc[picked].assign(
        window_start=pd.to_datetime(np.repeat(starts, hi - lo), unit="ns"))
    out = windowed.groupby(["window_start", *keys], sort=False, dropna=False).agg(**named)
    out = out.reset_index()
    out.insert(1, "window_end", out["window_start"] + pd.Timedelta(length))
    out = out.sort_values(["window_start", *keys], kind="stable", na_position="last",
                          ignore_index=True)
    return out[["window_start", "window_end", *keys, *aggs]]


_PANDAS_HOWS = ("count", "sum", "mean", "var", "std", "min", "max", "first", "last", "median")


def _pandas_agg(name: str, spec: tuple[Any, ...]) -> pd.NamedAgg:
    if not isinstance(spec, tuple) or len(spec) < 2:
        msg = f"pandas_windows(): aggs[{name!r}] must be (column, how, *args); got {spec!r}"
        raise ConfigError(msg)
    column, how, *args = spec
    if how == "quantile" and len(args) == 1:
        return pd.NamedAgg(column, _quantile(float(args[0])))
    if how in _PANDAS_HOWS and not args:
        return pd.NamedAgg(column, how)
    msg = (f"pandas_windows(): aggs[{name!r}] = {spec!r} has no pandas reference here; use "
           f"one of {', '.join(_PANDAS_HOWS)} or ('quantile', q)")
    raise ConfigError(msg)


def _quantile(q: float) -> Callable[[pd.Series], float]:
    def quantile(values: pd.Series) -> float:
        return float(values.quantile(q))
    return quantile
