"""Coercion: decoded records into the columns and dtypes of a frame's ``example``.

Each column is converted in one vectorised step when its values are clean (the fast path);
otherwise row by row where needed, with a reason for every row that does not fit (the
general path). Both give the same result.
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import Any, Literal, TypeAlias

import numpy as np
import pandas as pd

from rtnb import _formats, _frames
from rtnb.errors import ConfigError
from rtnb.sources._decode import Record

__all__ = ["TIME_RANGE", "TimeUnit", "as_example", "coerce"]

TimeUnit: TypeAlias = Literal["s", "ms", "us", "ns"]


def as_example(example: pd.DataFrame | dict[str, Any], what: str) -> pd.DataFrame:
    """An empty frame with the schema: a DataFrame, or ``{"column": dtype}``.

    Examples
    --------
    >>> as_example({"t": "datetime64[ns]", "host": "str", "cpu": "float64"}, "feed").dtypes
    t       datetime64[ns]
    host               str
    cpu            float64
    dtype: object
    """
    if isinstance(example, pd.DataFrame):
        return _no_empty_categories(example.iloc[:0], what)
    if isinstance(example, dict) and example:
        try:
            frame = pd.DataFrame({c: pd.Series([], dtype=t) for c, t in example.items()})
        except (TypeError, ValueError) as exc:
            msg = f"{what}: bad schema {example!r}: {exc}"
            raise ConfigError(msg) from exc
        return _no_empty_categories(frame, what)
    msg = (f"{what} needs `example`: an empty DataFrame with the columns and dtypes of the "
           f"records, or a dict such as {{'timestamp': 'datetime64[ns]', 'cpu': 'float64'}}; "
           f"got {example!r}")
    raise ConfigError(msg)


def _no_empty_categories(example: pd.DataFrame, what: str) -> pd.DataFrame:
    """``example``, unless a categorical column has no categories.

    Such a column could hold no value: every record would lose it.
    """
    for col, dtype in example.dtypes.items():
        if isinstance(dtype, pd.CategoricalDtype) and not len(dtype.categories):
            msg = (f"{what}: column {col!r} is categorical with no categories, so no value "
                   f"could be stored in it; give them (pd.CategoricalDtype(['a', 'b'])) or "
                   f"use 'str'")
            raise ConfigError(msg)
    return example


# What datetime64[ns] holds; pandas parses times beyond it (microseconds), rtnb keeps ns.
_TIME_MIN, _TIME_MAX = pd.Timestamp.min, pd.Timestamp.max
TIME_RANGE = f"{_TIME_MIN:%Y-%m-%d} .. {_TIME_MAX:%Y-%m-%d}"
_UNIT_NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


def _outside_ns(times: pd.Series) -> np.ndarray[Any, Any]:
    """Where a parsed (naive) time is outside what ``datetime64[ns]`` holds."""
    return ((times < _TIME_MIN) | (times > _TIME_MAX)).to_numpy()


def _to_time(values: pd.Series,
             time_unit: TimeUnit) -> tuple[pd.Series, np.ndarray[Any, Any]]:
    """Times as ``datetime64[ns]`` (NaT where not a time), and where a time was out of range.

    Numbers are epoch ``time_unit``; other values are parsed as ISO 8601. A time that is
    one but does not fit in ``datetime64[ns]`` (``"9999-12-31"``, ``2**40`` seconds) is NaT
    with ``True`` in the mask.
    """
    numeric, huge = _to_number(values)
    as_number = numeric.notna() | huge
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    outside = huge.copy()
    if as_number.any():
        numbers = numeric[as_number]
        floats = numbers.to_numpy(dtype=float, na_value=np.nan)
        scale = _UNIT_NS[time_unit]
        beyond = np.isfinite(floats) & ((floats < _TIME_MIN.value / scale) |
                                        (floats > _TIME_MAX.value / scale))
        parsed = pd.Series(pd.to_datetime(numbers.where(~beyond), unit=time_unit,
                                          errors="coerce"), index=numbers.index)
        beyond = beyond | _outside_ns(parsed)
        out[as_number] = parsed.where(~beyond).astype("datetime64[ns]")
        outside[np.flatnonzero(as_number.to_numpy())] |= beyond
    rest = values.notna() & ~as_number
    if rest.any():
        parsed = pd.to_datetime(pd.Series(values[rest].astype(str)), format="ISO8601",
                                errors="coerce", utc=True).dt.tz_localize(None)
        beyond = _outside_ns(parsed)
        out[rest] = parsed.where(~beyond).astype("datetime64[ns]")
        outside[np.flatnonzero(rest.to_numpy())] |= beyond
    return out, outside


def _to_number(values: pd.Series) -> tuple[pd.Series, np.ndarray[Any, Any]]:
    """``pd.to_numeric(errors="coerce")`` as float or int, and where a value overflowed.

    An integer too large for a float (JSON allows any) makes ``pd.to_numeric`` raise; such
    values come back as NaN with ``True`` in the mask, every other value as pandas gives it,
    except booleans: JSON's ``true`` is not the number 1 (nor an epoch second), so a boolean
    comes back as NaN (not a number) instead of pandas' 1.0.
    """
    if values.dtype.kind == "b" or (values.dtype == object and any(
            isinstance(v, bool | np.bool_) for v in values)):
        flags = values.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(dtype=bool)
        values = values.astype(object).where(~flags, "")  # "": not a number, not missing
    try:
        return pd.to_numeric(values, errors="coerce"), np.zeros(len(values), dtype=bool)
    except OverflowError:
        pass
    huge = np.array([isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2 ** 1023
                     for v in values], dtype=bool)
    rest = values.where(~huge, None)
    return pd.to_numeric(rest, errors="coerce").astype(float), huge


def _exact_int(value: Any) -> int | None:
    """The integer a number (or a numeric string) stands for, without a float's rounding.

    ``None`` for an infinity.
    """
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value.strip())
    elif isinstance(value, int | np.integer):
        return int(value)
    number = float(value)
    return int(number) if math.isfinite(number) else None


_ABSENT = object()  # a field a record does not have
_ISO_HEADS = re.compile(r"(?:[0-9]{4}-)*")  # "YYYY-" x n: never a number


def _fast_column(values: list[Any], dtype: Any, time_unit: TimeUnit) -> Any:
    """One column of clean values as an array of ``dtype``, without a per-row Python step.

    A numpy array or a pandas ExtensionArray (no Series built: a batch of 100 records then
    costs tens of microseconds, not a millisecond); ``None`` when the column needs the
    general path (other types, anything bad).
    """
    kinds = set(map(type, values))
    if pd.api.types.is_datetime64_any_dtype(dtype):
        if kinds == {str}:
            # to_numeric would try every string first; "YYYY-..." can't be a number
            heads = "".join([v[:5] for v in values])
            if len(heads) != 5 * len(values) or not _ISO_HEADS.fullmatch(heads):
                return None
            parsed = pd.DatetimeIndex(pd.to_datetime(np.array(values, dtype=object),
                                                     format="ISO8601", errors="coerce",
                                                     utc=True)).tz_localize(None)
        elif kinds and kinds <= {int, float}:
            numbers = np.array(values)
            if numbers.dtype.kind not in "if" or (numbers.dtype.kind == "f"
                                                  and np.isnan(numbers).any()):
                return None
            parsed = pd.DatetimeIndex(pd.to_datetime(numbers, unit=time_unit, errors="coerce"))
        else:
            return None
        # NaT, or a time beyond datetime64[ns]: the general path names the values
        if parsed.hasnans or (len(parsed) and (parsed.min() < _TIME_MIN
                                               or parsed.max() > _TIME_MAX)):
            return None
        ns = parsed.as_unit("ns")  # naive UTC instants
        if dtype == _NS:
            return ns.to_numpy()
        if isinstance(dtype, pd.DatetimeTZDtype):
            return ns.tz_localize("UTC").tz_convert(dtype.tz).as_unit(dtype.unit).array
        return ns.astype(dtype).array
    if pd.api.types.is_bool_dtype(dtype):
        if kinds != {bool}:
            return None
        flags = np.array(values, dtype=bool)
        return flags if dtype == np.dtype(bool) else pd.array(flags, dtype=dtype)
    if pd.api.types.is_integer_dtype(dtype):
        if kinds != {int}:
            return None
        try:
            ints = np.array(values, dtype=np.int64)
        except OverflowError:
            return None
        limits = np.iinfo(getattr(dtype, "numpy_dtype", dtype))
        if len(ints) and (ints.min() < limits.min or ints.max() > limits.max):
            return None  # the general path names the values out of range
        return ints.astype(dtype) if isinstance(dtype, np.dtype) else pd.array(ints, dtype=dtype)
    if pd.api.types.is_float_dtype(dtype):
        if not kinds or not kinds <= {int, float, type(None)}:
            return None
        try:
            floats = np.array(values, dtype=np.float64)
        except OverflowError:
            return None
        if np.isinf(floats).any():
            return None  # an infinity that arrived as a value: the general path refuses it
        if isinstance(dtype, np.dtype):
            return floats if dtype == np.float64 else floats.astype(dtype)
        return pd.array(floats, dtype=dtype)
    if kinds == {str}:
        if dtype == np.dtype(object):
            return np.array(values, dtype=object)
        if isinstance(dtype, pd.CategoricalDtype):
            codes = dtype.categories.get_indexer(pd.Index(values, dtype=object))
            if (codes < 0).any():
                return None  # not one of the categories: the general path says which
            return pd.Categorical.from_codes(codes, dtype=dtype)
        return pd.array(values, dtype=dtype)
    return None


_NS = np.dtype("datetime64[ns]")


def _fit_column(values: pd.Series, dtype: Any, time_unit: TimeUnit) -> Any:
    """A decoded (typed) column as an array of ``dtype``; ``None`` unless every value fits.

    The binary formats' fast path: typed arrays are converted as wholes. ``None`` sends the
    batch to the row-by-row path, which names each value that does not fit.
    """
    kind = values.dtype
    if isinstance(kind, pd.CategoricalDtype):
        if kind == dtype:
            return values.array
        values = values.astype(object)
        kind = values.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        if pd.api.types.is_datetime64_any_dtype(kind):
            if values.hasnans:
                return None  # a missing time: the source's own message
            if isinstance(kind, pd.DatetimeTZDtype):
                values = values.dt.tz_convert("UTC").dt.tz_localize(None)
            if len(values) and (values.min() < _TIME_MIN or values.max() > _TIME_MAX):
                return None
            ns = pd.DatetimeIndex(values).as_unit("ns")
            if dtype == _NS:
                return ns.to_numpy()
            if isinstance(dtype, pd.DatetimeTZDtype):
                return ns.tz_localize("UTC").tz_convert(dtype.tz).as_unit(dtype.unit).array
            return ns.astype(dtype).array
        if kind.kind in "iu" or (kind.kind == "f" and not values.hasnans):
            return _fast_column(values.tolist(), dtype, time_unit)
        return None
    if pd.api.types.is_bool_dtype(dtype):
        if not pd.api.types.is_bool_dtype(kind):
            return None
        if values.hasnans and isinstance(dtype, np.dtype):
            return None  # a missing value in a numpy bool column: the row is bad
        return values.to_numpy(dtype=bool) if isinstance(dtype, np.dtype) else \
            values.astype(dtype).array
    if pd.api.types.is_integer_dtype(dtype):
        if kind.kind == "f":  # a nullable int read as floats: exact while integral
            floats = values.to_numpy(dtype=np.float64)
            present = floats[~np.isnan(floats)]
            if not len(present) or (np.mod(present, 1) != 0).any() or \
                    np.abs(present).max() >= 2 ** 53:
                return None
            values = pd.Series(pd.array(floats, dtype="Int64"))
            kind = values.dtype
        if not pd.api.types.is_integer_dtype(kind):
            return None
        if values.hasnans and isinstance(dtype, np.dtype):
            return None
        limits = np.iinfo(getattr(dtype, "numpy_dtype", dtype))
        # (min and max skip missing values; of missing values only they are <NA>, which
        # does not compare: nothing out of range then)
        lo = values.min() if len(values) else pd.NA
        if lo is not pd.NA and (lo < limits.min or values.max() > limits.max):
            return None
        return values.to_numpy(dtype=dtype) if isinstance(dtype, np.dtype) else \
            values.astype(dtype).array
    if pd.api.types.is_float_dtype(dtype):
        if kind.kind not in "iuf" and not (pd.api.types.is_integer_dtype(kind)
                                           or pd.api.types.is_float_dtype(kind)):
            return None
        floats = values.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isinf(floats).any():
            return None
        return floats.astype(dtype) if isinstance(dtype, np.dtype) else \
            pd.array(floats, dtype=dtype)
    # strings and categories: text (or a missing value) only
    if not (pd.api.types.is_string_dtype(kind) and
            pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty")):
        return None
    if isinstance(dtype, pd.CategoricalDtype):
        missing = values.isna().to_numpy()
        codes = dtype.categories.get_indexer(pd.Index(values.to_numpy(dtype=object),
                                                      dtype=object))
        if ((codes < 0) & ~missing).any():
            return None
        codes[missing] = -1
        return pd.Categorical.from_codes(codes, dtype=dtype)
    if dtype == np.dtype(object):
        return values.to_numpy(dtype=object)
    return values.astype(dtype).array


def _coerce_columns(frame: pd.DataFrame, example: pd.DataFrame,
                    time_unit: TimeUnit) -> pd.DataFrame | None:
    """:func:`coerce` of decoded columns when every value fits; ``None`` otherwise."""
    if not len(frame) and not len(frame.columns):
        return example.iloc[:0].reset_index(drop=True)
    types = _frames.dtypes(example)
    arrays = []
    for col, dtype in zip(example.columns, types, strict=True):
        name = str(col)
        if name not in frame.columns:
            return None
        array = _fit_column(frame[name].reset_index(drop=True), dtype, time_unit)
        if array is None:
            return None
        arrays.append(array)
    out = _frames.from_arrays(example.columns, arrays)
    if _frames.dtypes(out) != types:
        out = pd.DataFrame({str(c): pd.Series(a).astype(t) for c, a, t in
                            zip(example.columns, arrays, types, strict=True)})
    return out


def coerce(records: list[Record] | _formats.Columns, example: pd.DataFrame, *,
           time_unit: TimeUnit = "s") -> tuple[pd.DataFrame, np.ndarray[Any, Any], list[str]]:
    """Build the example's columns from decoded records; say which rows do not fit and why.

    Numbers arriving as strings are converted (``"2.5"``, ``"7"``); a value that cannot be
    converted, a missing value in an integer or boolean column, or a missing field, makes
    its row bad (pandas' nullable ``Int64`` ... and ``boolean`` columns hold it as
    ``<NA>``). Booleans are not numbers: ``true`` in a number or time column is bad, not
    1. Datetime columns accept ISO 8601 strings and numbers (epoch ``time_unit``) within
    what ``datetime64[ns]`` holds (1677-09-21 .. 2262-04-11); a missing time is left to the
    caller (a source makes it a dead letter with the message). In float columns ``None``,
    no field and a NaN value (JSON's ``NaN``, as pandas writes missing values) are missing
    values (NaN), while an infinity (``Infinity``, ``1e400``, ``"inf"``) is not a
    measurement: its row is bad. String columns take numbers and booleans as their text;
    an object, a list or bytes is bad (its text would be Python's repr). Fields that are
    not in the example are ignored. Returns the coerced frame of the good rows, the boolean
    mask of bad rows (over ``records``) and the reason for each bad row.

    Examples
    --------
    >>> import pandas as pd
    >>> ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
    ...                    "n": pd.Series([], dtype="int64")})
    >>> good, bad, reasons = coerce([{"t": "2026-01-01T00:00:00Z", "n": "3"},
    ...                              {"t": 0, "n": "x"}], ex)
    >>> good
               t  n
    0 2026-01-01  3
    >>> bad.tolist(), reasons
    ([False, True], ["column 'n' (int64): 'x' is not a number"])

    ``records`` may also be :class:`~rtnb._formats.Columns` (what a binary format decodes):
    each column is then converted as a whole when its values fit (typed arrays, no Python
    object per value), and otherwise as the same records as dicts would be.
    """
    if isinstance(records, _formats.Columns):
        whole = _coerce_columns(records.frame, example, time_unit)
        if whole is not None:
            return whole, np.zeros(len(whole), dtype=bool), []
        records = records.records()
    n = len(records)
    if n:
        arrays = []
        types = _frames.dtypes(example)
        for col, dtype in zip(example.columns, types, strict=True):
            name = str(col)
            column = _fast_column([r.get(name, _ABSENT) for r in records], dtype, time_unit)
            if column is None:
                break
            arrays.append(column)
        else:  # every column clean and every row good
            frame = _frames.from_arrays(example.columns, arrays)
            if _frames.dtypes(frame) != types:  # an array type pandas would store otherwise
                frame = pd.DataFrame({str(c): pd.Series(a).astype(t) for c, a, t in
                                      zip(example.columns, arrays, types, strict=True)})
            return frame, np.zeros(n, dtype=bool), []
    return _coerce_general(records, example, time_unit)


def _coerce_general(records: list[Record], example: pd.DataFrame,
                    time_unit: TimeUnit) -> tuple[pd.DataFrame, np.ndarray[Any, Any], list[str]]:
    """:func:`coerce` for any records: row by row where needed, with the reasons."""
    n = len(records)
    raw = pd.DataFrame.from_records(records, columns=list(example.columns)) if n else \
        pd.DataFrame(columns=list(example.columns))
    raw.index = pd.RangeIndex(n)
    bad = np.zeros(n, dtype=bool)
    why: dict[int, str] = {}
    out: dict[str, Any] = {}

    def mark(mask: Any, col: str, dtype: Any, problem: str) -> None:
        idx = np.flatnonzero(np.asarray(mask, dtype=bool) & ~bad)
        for i in idx:
            value = records[int(i)].get(col)  # as it arrived, not as pandas inferred it
            if isinstance(value, np.generic):  # the reason shows 2.5, not np.float64(2.5)
                value = value.item()
            text = repr(value)
            if len(text) > 60:
                text = f"{text[:40]}...({len(text)} characters)"
            why[int(i)] = (f"column {col!r} ({dtype}): missing" if problem == "missing" else
                           f"column {col!r} ({dtype}): {text} {problem}")
        bad[idx] = True

    present = {c for r in records for c in r} if n else set()
    for col, dtype in example.dtypes.items():
        name = str(col)
        values = raw[name]
        if name not in present:
            values = pd.Series([None] * n, index=raw.index, dtype=object)
        missing = values.isna().to_numpy()
        if pd.api.types.is_datetime64_any_dtype(dtype):
            conv, outside = _to_time(values, time_unit)
            mark(outside, name, dtype, f"is out of range for datetime64[ns] ({TIME_RANGE})")
            mark(conv.isna().to_numpy() & ~missing, name, dtype, "is not a time")
            # naive UTC instants; a zone-aware column gets them in its zone
            out[name] = conv.dt.tz_localize("UTC").dt.tz_convert(dtype.tz).astype(dtype) \
                if isinstance(dtype, pd.DatetimeTZDtype) else conv.astype(dtype)
        elif pd.api.types.is_bool_dtype(dtype):
            # True == 1 and False == 0 as dict keys, so the booleans cover the ints 1 and 0
            mapping = {True: True, False: False, "true": True, "false": False, "True": True,
                       "False": False, "1": True, "0": False}
            conv = values.map(lambda v, m=mapping: m.get(v) if isinstance(v, bool | int | str)
                              else None)
            nullable = not isinstance(dtype, np.dtype)  # pandas' "boolean" holds <NA>
            if not nullable:
                mark(missing, name, dtype, "missing")
            mark(conv.isna().to_numpy() & ~(missing & nullable), name, dtype,
                 "is not a boolean")
            out[name] = conv
        elif pd.api.types.is_integer_dtype(dtype):
            conv, huge = _to_number(values)
            nullable = not isinstance(dtype, np.dtype)  # pandas' Int64 ... hold <NA>
            if not nullable:
                mark(missing, name, dtype, "missing")
            limits = np.iinfo(getattr(dtype, "numpy_dtype", dtype))
            as_float = conv.fillna(0).to_numpy(dtype=float)
            if conv.dtype.kind in "iu":
                outside = (conv.to_numpy() < limits.min) | (conv.to_numpy() > limits.max)
            else:  # beyond 2**53 a float is not the integer that arrived: take it exactly
                outside = (as_float < limits.min) | (as_float > limits.max)
                big = np.flatnonzero(np.abs(as_float) >= 2 ** 53)
                if len(big):
                    conv = conv.astype(object)
                    for i in big.tolist():
                        exact = _exact_int(values.iloc[i])
                        conv.iloc[i] = exact
                        outside[i] = exact is None or not limits.min <= exact <= limits.max
            mark(huge | outside, name, dtype, f"is out of range for {dtype}")
            mark(conv.isna().to_numpy() & ~(missing & nullable), name, dtype,
                 "is not a number")
            finite = np.where(np.isfinite(as_float), as_float, 0.0)  # infinities: above
            mark(conv.notna().to_numpy() & (np.mod(finite, 1) != 0), name, dtype,
                 "is not an integer")
            out[name] = conv
        elif pd.api.types.is_float_dtype(dtype):
            conv, huge = _to_number(values)
            mark(huge, name, dtype, f"is out of range for {dtype}")
            mark(conv.isna().to_numpy() & ~missing, name, dtype, "is not a number")
            # None, no field and a NaN value (JSON's NaN, as pandas writes missing values) are
            # missing values; an infinity (JSON's Infinity, 1e400, "inf") is not a measurement
            floats = conv.to_numpy(dtype=float, na_value=np.nan)
            mark(np.isinf(floats), name, dtype, "is not a finite number")
            out[name] = conv
        else:
            # numbers and booleans become their text; an object, a list or bytes (whose
            # text would be Python's repr, not what was sent) is not a string
            mark(values.map(lambda v: isinstance(v, dict | list | tuple | bytes | bytearray))
                 .to_numpy(dtype=bool), name, dtype, "is not a string")
            if isinstance(dtype, pd.CategoricalDtype):  # else it would become NaN silently
                known = set(dtype.categories.astype(str))
                mark(values.map(lambda v, k=known: v is not None and v == v and str(v) not in k)
                     .to_numpy(dtype=bool), name, dtype, "is not one of the column's categories")
            out[name] = values.map(lambda v: v if v is None or isinstance(v, str)
                                   or (isinstance(v, float) and np.isnan(v)) else str(v))
    good = ~bad
    frame = pd.DataFrame({c: pd.Series(v).iloc[np.flatnonzero(good)].reset_index(drop=True)
                          for c, v in out.items()})
    for col, dtype in example.dtypes.items():
        frame[col] = frame[col].astype(dtype)
    return frame, bad, [why[i] for i in sorted(why)]
