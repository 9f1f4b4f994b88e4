"""Stable integer codes for group keys, shared by window and rolling operators."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
from pandas._libs import hashtable as ht  # type: ignore[attr-defined]  # not in pandas-stubs

from rtnb._frames import ColumnReader, column

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
        # single key: how a batch's key array is turned into codes without pandas (see
        # _plan_for), and the hash table of the known keys (position = code) it probes
        self._plan = _plan_for(column(example, by[0])) if len(by) == 1 else None
        self._read = ColumnReader(by[0]) if len(by) == 1 else None
        self._table: Any = None
        self._table_size = 0
        #: How many keys are known (``len(self)``, kept as a number: engines compare it with
        #: their per-key arrays on every batch).
        self.size = 0 if by else 1

    def __len__(self) -> int:
        return self.size

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a registry pickled before ``size`` existed counts its keys again
        self.__dict__.update(state)
        if "size" not in state:
            self.size = len(self._lookup) if self.by else 1

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
        self.size = len(self._lookup) if self.by else 1
        self._cache.clear()
        self._table = None

    def _probe(self, values: Any) -> npt.NDArray[np.intp] | None:
        assert self._plan is not None
        return self._plan.probe(self._table, values)

    def codes(self, batch: pd.DataFrame) -> npt.NDArray[np.intp]:
        """Return the code of every row's key, registering new keys."""
        if not self.by:
            return np.zeros(len(batch), dtype=np.intp)
        if self._read is not None:
            values = self._read(batch)
            if self._table is not None:
                found = self._probe(values)
                if found is not None:
                    return found
            local, uniques = pd.factorize(values, use_na_sentinel=False)
            keys: list[Any] = [norm_key(u) for u in uniques]
        else:
            n = len(batch)
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
                parts_of_key = key if len(self.by) > 1 else (key,)
                for col, v in zip(self._values, parts_of_key, strict=True):
                    col.append(v)
                self.size = len(lookup)
                self._cache.clear()
            mapping[i] = code
        if self._plan is not None and (self._table is None or len(lookup) > self._table_size):
            self._table = self._plan.table(self._values[0])
            self._table_size = len(lookup)
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
        if self._plan is not None and self._table is not None and \
                self._table_size == len(self._lookup):
            # Arrow strings: built from the known keys' bytes (pyarrow's take: ~13 us for
            # 100 keys, this ~4 us)
            gathered = self._plan.gather(self._table, array, codes)
            if gathered is not None:
                return gathered
        return array.take(codes)


class _Plan:
    """How one key dtype is coded: a hash table of the known keys, probed per batch.

    Built once per registry from the example's key array; :meth:`probe` returns ``None``
    whenever the batch needs the general path (an unknown or null key, another array type),
    which registers new keys and rebuilds the table.

    Object arrays (``object`` columns, ``string[python]``) are probed in pandas' hash table
    of UTF-8 strings when every known key is a ``str`` (what ``pd.factorize`` does for an
    all-string array): ~13 us for 1,000 rows here where the table of Python objects took
    ~24 us (it calls each key's ``__eq__``). A value that is not a ``str`` is not found
    there (the table holds no null key then), so it takes the general path, as does a
    string UTF-8 cannot encode (lone surrogates).
    """

    def __init__(self, array_type: type[Any]) -> None:
        self.array_type = array_type

    def table(self, known: list[Any]) -> Any:
        """The lookup structure for ``known`` keys (position = code), or ``None``."""
        if all(type(k) is str for k in known):
            strings = ht.StringHashTable(len(known))
            try:
                strings.map_locations(_object_keys(known))
            except UnicodeEncodeError:
                pass
            else:
                return strings
        table = ht.PyObjectHashTable(len(known))
        table.map_locations(_object_keys(known))
        return table

    def gather(self, table: Any, array: Any, codes: npt.NDArray[np.intp]) -> Any:
        """``array.take(codes)`` built from ``table``, or ``None``: ``take`` does it.

        ``array`` holds the known keys (position = code).
        """
        return None

    def probe(self, table: Any, values: Any) -> npt.NDArray[np.intp] | None:
        """The codes of ``values`` if every one is a known, non-null key, else ``None``."""
        if type(values) is not self.array_type:
            return None
        return _lookup(table, values._ndarray)


class _IntPlan(_Plan):
    """Integer numpy keys: an int64 (or uint64) hash table."""

    def __init__(self, dtype: np.dtype[Any]) -> None:
        super().__init__(np.ndarray)
        self.dtype = dtype
        self.wide = np.dtype(np.uint64) if dtype.kind == "u" else np.dtype(np.int64)

    def table(self, known: list[Any]) -> Any:
        if any(k is None for k in known):
            return None
        table = (ht.UInt64HashTable if self.wide.kind == "u" else ht.Int64HashTable)(len(known))
        table.map_locations(np.asarray(known, dtype=self.wide))
        return table

    def probe(self, table: Any, values: Any) -> npt.NDArray[np.intp] | None:
        if type(values) is not np.ndarray or values.dtype != self.dtype:
            return None
        return _all_found(table.lookup(values.astype(self.wide, copy=False)))


class _ObjectPlan(_Plan):
    """Object numpy keys (a frame's ``object`` column is a plain ndarray): probed as they are."""

    def __init__(self) -> None:
        super().__init__(np.ndarray)

    def probe(self, table: Any, values: Any) -> npt.NDArray[np.intp] | None:
        if type(values) is not np.ndarray or values.dtype != _OBJECT:
            return None
        return _lookup(table, values)


class _ArrowStringPlan(_Plan):
    """Arrow-backed strings (pandas 3 ``str``, ``string[pyarrow]``).

    A batch's keys are probed straight from its Arrow buffers (offsets and UTF-8 bytes) in
    a compiled hash table of the known keys (:mod:`rtnb.windows._key_kernels`): no Python
    string per row: ``KeyRegistry.codes`` of a 100-row batch of 100 known hosts took 4.9 us
    here, 9.7 us when the keys were first converted to Python strings and probed in a
    pandas hash table. The numpy views of the buffers (offsets widened to int64) are kept
    for the last parent array: row slices of one frame share its buffers, so a batch cut
    from it pays for no conversion (~2.5 us less per 100-row batch). A batch with a null
    key, or more than one chunk, takes the general path.
    """

    def __init__(self, array_type: type[Any]) -> None:
        super().__init__(array_type)
        # the last buffers seen: (offsets buffer, data buffer, offsets int64, data uint8);
        # holding the buffers keeps their memory, so equal addresses mean the same bytes
        self._buffers: tuple[Any, Any, npt.NDArray[np.int64], npt.NDArray[np.uint8]] | None \
            = None

    def __getstate__(self) -> dict[str, Any]:
        # a copy (a checkpoint, a worker's logic) keeps no buffers of batches seen here
        return {**self.__dict__, "_buffers": None}

    def table(self, known: list[Any]) -> Any:
        return _ArrowTable(known)

    def gather(self, table: Any, array: Any, codes: npt.NDArray[np.intp]) -> Any:
        return table.gather(array, codes)

    def probe(self, table: Any, values: Any) -> npt.NDArray[np.intp] | None:
        if type(values) is not self.array_type:
            return None
        chunks = values._pa_array
        if chunks.num_chunks != 1:
            return None
        chunk = chunks.chunk(0)
        if chunk.null_count or table.slots is None:
            return None
        n = len(chunk)
        _, offsets_buf, data_buf = chunk.buffers()
        seen = self._buffers
        # the same memory as the buffers kept (both buffers: address and size)
        if seen is None or data_buf is None or seen[1] is None or \
                offsets_buf.address != seen[0].address or offsets_buf.size != seen[0].size \
                or data_buf.address != seen[1].address or data_buf.size != seen[1].size:
            # the buffers are the whole parent array's; this chunk's n + 1 offsets start at
            # its offset
            wide = pa.types.is_large_string(chunk.type)
            offsets: Any = np.frombuffer(offsets_buf, dtype=np.int64 if wide else np.int32)
            if not wide:
                offsets = offsets.astype(np.int64)
            data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else \
                _NO_BYTES
            seen = self._buffers = (offsets_buf, data_buf, offsets, data)
        out = np.empty(n, dtype=np.intp)
        if not table.kernels.probe(seen[2], seen[3], chunk.offset, n, table.slots,
                                   table.key_offsets, table.key_data, out):
            return None
        return out


_NO_BYTES = np.zeros(0, dtype=np.uint8)


class _ArrowTable:
    """The known string keys as UTF-8 bytes and a compiled open-addressing table of them."""

    def __init__(self, known: list[Any]) -> None:
        from rtnb.windows import _key_kernels

        self.kernels = _key_kernels
        self.slots: npt.NDArray[np.int64] | None = None
        if any(not isinstance(k, str) for k in known):  # the null key: general path only
            return
        encoded = [k.encode("utf-8") for k in known]
        self.key_offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self.key_offsets[1:])
        self.key_data = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded and \
            self.key_offsets[-1] else _NO_BYTES
        size = 8
        while size < 4 * max(1, len(encoded)):
            size *= 2
        self.slots = _key_kernels.build(self.key_offsets, self.key_data, size)

    def gather(self, array: Any, codes: npt.NDArray[np.intp]) -> Any:
        """``array.take(codes)`` for ``array`` of the known keys (position = code), or ``None``.

        ``None``: a null key among the known ones, or codes that are no key's.
        """
        if self.slots is None or not isinstance(array, pd.arrays.ArrowStringArray):
            return None
        codes = np.ascontiguousarray(codes, dtype=np.intp)
        n = len(codes)
        offsets = np.empty(n + 1, dtype=np.int64)
        data = self.kernels.gather(codes, self.key_offsets, self.key_data, offsets)
        if offsets[0] < 0:
            return None
        values = pa.Array.from_buffers(pa.large_string(), n,
                                       [None, pa.py_buffer(offsets), pa.py_buffer(data)])
        wrapper: Any = array
        return wrapper._from_pyarrow_array(values)


class _CategoryPlan(_Plan):
    """Categorical keys: the batch's category codes mapped through a cached table per dtype."""

    def table(self, known: list[Any]) -> Any:
        return _CategoryTable({norm_key(k): i for i, k in enumerate(known)})

    def probe(self, table: Any, values: Any) -> npt.NDArray[np.intp] | None:
        if type(values) is not self.array_type:
            return None
        mapping = table.mapping(values.dtype)
        codes = values.codes
        if len(codes) and codes.min() < 0:
            return None
        return _all_found(mapping[codes])


class _CategoryTable:
    def __init__(self, lookup: dict[Any, int]) -> None:
        self.lookup = lookup
        self._dtype: Any = None
        self._mapping = np.zeros(0, dtype=np.intp)

    def mapping(self, dtype: pd.CategoricalDtype) -> npt.NDArray[np.intp]:
        """Registry code of every category of ``dtype`` (-1: not known), cached per dtype."""
        if dtype is not self._dtype and dtype != self._dtype:
            get = self.lookup.get
            self._mapping = np.fromiter((get(norm_key(c), -1) for c in dtype.categories),
                                        dtype=np.intp, count=len(dtype.categories))
        self._dtype = dtype
        return self._mapping


def _plan_for(example: Any) -> _Plan | None:
    """The coding plan for a key column like ``example`` (``None``: the general path only)."""
    if isinstance(example, np.ndarray):
        if example.dtype == np.dtype(object):
            return _ObjectPlan()
        return _IntPlan(example.dtype) if example.dtype.kind in "iu" else None
    if isinstance(example, pd.Categorical):
        return _CategoryPlan(pd.Categorical)
    if isinstance(example, pd.arrays.ArrowStringArray):
        return _ArrowStringPlan(type(example))
    if isinstance(example, pd.arrays.StringArray) or (isinstance(
            example, pd.arrays.NumpyExtensionArray) and example.dtype == np.dtype(object)):
        return _Plan(type(example))
    return None


def _object_keys(known: list[Any]) -> npt.NDArray[np.object_]:
    """The known keys as an object array, the null key replaced by a value nothing equals."""
    keys = np.empty(len(known), dtype=object)
    keys[:] = [_NOTHING if k is None else k for k in known]
    return keys


class _Nothing:
    """Stands for the null key in a hash table: no batch value equals it."""

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


_NOTHING = _Nothing()


_OBJECT = np.dtype(object)


def _lookup(table: Any, values: npt.NDArray[np.object_]) -> npt.NDArray[np.intp] | None:
    """The positions of object ``values`` in ``table``, or ``None`` if one is not found."""
    try:
        found = table.lookup(values)
    except UnicodeEncodeError:  # a lone surrogate in a table of UTF-8 strings
        return None
    return _all_found(found)


def _all_found(found: npt.NDArray[np.intp]) -> npt.NDArray[np.intp] | None:
    """``found`` if no position is -1 (a missing key), else ``None``."""
    if len(found) and found.min() < 0:
        return None
    return found


def norm_key(value: Any) -> Any:
    """One representation per null, so NaN, None and NA are the same key."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and value != value:
        return None
    return value
