"""Stable integer codes for group keys, shared by window and rolling operators."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["KeyRegistry"]


class KeyRegistry:
    """Map the values of the ``by`` columns to dense int codes, in order of first appearance.

    Null keys (NaN, None, NA) are a key of their own, as ``groupby(dropna=False)``.
    Memory grows with the number of distinct keys, never with the stream's length.

    Examples
    --------
    >>> reg = KeyRegistry(["host"], pd.DataFrame({"host": pd.Series([], dtype=str)}))
    >>> reg.codes(pd.DataFrame({"host": ["b", "a", "b"]}))
    array([0, 1, 0])
    >>> reg.codes(pd.DataFrame({"host": ["a", "c"]}))
    array([1, 2])
    >>> reg.frame(np.array([2, 0]))
      host
    0    c
    1    b
    """

    def __init__(self, by: list[str], example: pd.DataFrame) -> None:
        self.by = by
        self._dtypes = {c: example[c].dtype for c in by}
        self._lookup: dict[Any, int] = {}
        self._values: list[list[Any]] = [[] for _ in by]
        self._cache: dict[str, Any] = {}
        self._index: pd.Index | None = None  # single key: known keys, position = code
        # single Arrow-backed string/integer key: the known keys as an Arrow lookup set
        self._arrow_lookup: pc.SetLookupOptions | None = None

    def __len__(self) -> int:
        return len(self._lookup) if self.by else 1

    def snapshot(self) -> dict[str, Any]:
        """The known keys and their codes, for a checkpoint.

        Examples
        --------
        >>> reg = KeyRegistry(["host"], pd.DataFrame({"host": pd.Series([], dtype=str)}))
        >>> _ = reg.codes(pd.DataFrame({"host": ["b", "a"]}))
        >>> again = KeyRegistry(["host"], pd.DataFrame({"host": pd.Series([], dtype=str)}))
        >>> again.restore(reg.snapshot())
        >>> again.codes(pd.DataFrame({"host": ["a", "c", "b"]}))
        array([1, 2, 0])
        """
        return {"lookup": dict(self._lookup), "values": [list(v) for v in self._values]}

    def restore(self, state: dict[str, Any]) -> None:
        """Put a :meth:`snapshot` back (the same ``by`` columns); lookup caches are rebuilt."""
        if len(state["values"]) != len(self._values):
            msg = f"key state has {len(state['values'])} key columns; this registry {self.by!r}"
            raise ValueError(msg)
        self._lookup = dict(state["lookup"])
        self._values = [list(v) for v in state["values"]]
        self._cache.clear()
        self._index = None
        self._arrow_lookup = None

    def codes(self, batch: pd.DataFrame) -> npt.NDArray[np.intp]:
        """Return the code of every row's key, registering new keys."""
        n = len(batch)
        if not self.by:
            return np.zeros(n, dtype=np.intp)
        if len(self.by) == 1:
            series = batch[self.by[0]]
            if self._arrow_lookup is not None and series.dtype == self._dtypes[self.by[0]]:
                # Fastest path: one hash probe per row in Arrow, when every key is known.
                found = pc.index_in(series.array.__arrow_array__(), options=self._arrow_lookup)
                if found.null_count == 0:
                    return np.asarray(found.to_numpy(), dtype=np.intp)
            local, uniques = pd.factorize(series, use_na_sentinel=False)
            if self._index is not None and len(uniques) <= len(self._index):
                # Fast path: every key of this batch is known already (the usual case).
                known = self._index.get_indexer(uniques)
                if (known >= 0).all():
                    return known[np.asarray(local, dtype=np.intp)]
            keys: list[Any] = [norm_key(u) for u in uniques]
        else:
            parts = [pd.factorize(batch[c], use_na_sentinel=False) for c in self.by]
            sizes = [len(u) for _, u in parts]
            flat = np.ravel_multi_index(tuple(c for c, _ in parts), sizes) if n else np.zeros(
                0, dtype=np.intp)
            local, combos = pd.factorize(flat)
            unravelled = np.unravel_index(combos, sizes)
            keys = [tuple(norm_key(parts[j][1][unravelled[j][i]]) for j in range(len(self.by)))
                    for i in range(len(combos))]
        mapping = np.empty(len(keys), dtype=np.intp)
        lookup = self._lookup
        for i, key in enumerate(keys):
            code = lookup.get(key)
            if code is None:
                code = len(lookup)
                lookup[key] = code
                values = key if len(self.by) > 1 else (key,)
                for col, v in zip(self._values, values, strict=True):
                    col.append(v)
                self._cache.clear()
            mapping[i] = code
        if len(self.by) == 1 and not any(k is None for k in keys):
            self._index = pd.Index(pd.array(self._values[0], dtype=self._dtypes[self.by[0]]))  # type: ignore[arg-type]
            if not self._index.is_unique:  # pragma: no cover - nulls are excluded above
                self._index = None
            self._arrow_lookup = _arrow_lookup(self._index)
        return mapping[np.asarray(local, dtype=np.intp)]

    def frame(self, codes: npt.NDArray[np.intp]) -> pd.DataFrame:
        """The ``by`` columns, with their example dtypes, for the given codes."""
        return pd.DataFrame({c: self.column(c, codes) for c in self.by})

    def column(self, col: str, codes: npt.NDArray[np.intp]) -> pd.Series:
        """One ``by`` column, with its example dtype, for the given codes."""
        return pd.Series(self.array(col, codes), copy=False)

    def array(self, col: str, codes: npt.NDArray[np.intp]) -> Any:
        """One ``by`` column as an array (no index), with its example dtype."""
        array = self._cache.get(col)
        if array is None:
            values = self._values[self.by.index(col)]
            array = pd.array(values, dtype=self._dtypes[col])  # type: ignore[arg-type]
            self._cache[col] = array
        return array.take(codes)


def _arrow_lookup(index: pd.Index | None) -> pc.SetLookupOptions | None:
    """An Arrow lookup set of ``index`` if its values are Arrow strings or integers."""
    to_arrow = getattr(index.array, "__arrow_array__", None) if index is not None else None
    if to_arrow is None:
        return None
    values = to_arrow()
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    kind = values.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or pa.types.is_integer(kind)) or values.null_count:
        return None
    return pc.SetLookupOptions(value_set=values)


def norm_key(value: Any) -> Any:
    """One representation per null, so NaN, None and NA are the same key."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and value != value:
        return None
    return value
