"""Compiled probing of Arrow string keys (``rtnb.windows.keys``).

A batch's keys are found in a hash table of the known keys straight from the Arrow buffers
(offsets and UTF-8 bytes), without building a Python string per row; emitted windows' key
columns are built from the known keys' bytes the same way. Imported on first use (it loads
numba).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from rtnb._jit import jit

__all__ = ["build", "gather", "probe"]

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@jit
def _hash(data: npt.NDArray[np.uint8], a: int, b: int) -> np.uint64:
    h = _FNV_OFFSET
    for i in range(a, b):
        h = (h ^ np.uint64(data[i])) * _FNV_PRIME
    return h


@jit
def build(key_offsets: npt.NDArray[np.int64], key_data: npt.NDArray[np.uint8],
          size: int) -> npt.NDArray[np.int64]:
    """An open-addressing table of ``size`` slots (a power of two) of the known keys.

    Each key's code (its position) sits in the slot its FNV-1a hash leads to (or the next
    free one); empty slots hold ``-1``.
    """
    slots = np.full(size, -1, dtype=np.int64)
    mask = np.uint64(size - 1)
    for code in range(len(key_offsets) - 1):
        j = _hash(key_data, key_offsets[code], key_offsets[code + 1]) & mask
        while slots[j] >= 0:
            j = (j + np.uint64(1)) & mask
        slots[j] = code
    return slots


@jit
def probe(offsets: npt.NDArray[np.int64], data: npt.NDArray[np.uint8], start: int, n: int,
          slots: npt.NDArray[np.int64], key_offsets: npt.NDArray[np.int64],
          key_data: npt.NDArray[np.uint8], out: npt.NDArray[np.intp]) -> bool:
    """Write the code of each of ``n`` strings into ``out``; ``False`` at an unknown one.

    The strings are those from position ``start`` of Arrow ``offsets`` into ``data``.
    """
    mask = np.uint64(len(slots) - 1)
    for i in range(n):
        a = offsets[start + i]
        b = offsets[start + i + 1]
        j = _hash(data, a, b) & mask
        while True:
            code = slots[j]
            if code < 0:
                return False
            ka = key_offsets[code]
            if key_offsets[code + 1] - ka == b - a:
                same = True
                for k in range(b - a):
                    if data[a + k] != key_data[ka + k]:
                        same = False
                        break
                if same:
                    out[i] = code
                    break
            j = (j + np.uint64(1)) & mask
    return True


@jit
def gather(codes: npt.NDArray[np.intp], key_offsets: npt.NDArray[np.int64],
           key_data: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64]
           ) -> npt.NDArray[np.uint8]:
    """The known keys at ``codes`` as Arrow string buffers: the UTF-8 bytes (returned).

    ``offsets`` (``n + 1``) is filled with the large-string offsets; ``offsets[0]`` is
    ``-1`` if a code is not a known key's.
    """
    n = len(codes)
    m = len(key_offsets) - 1
    total = 0
    offsets[0] = 0
    for i in range(n):
        c = codes[i]
        if c < 0 or c >= m:
            offsets[0] = -1
            return np.empty(0, dtype=np.uint8)
        total += key_offsets[c + 1] - key_offsets[c]
        offsets[i + 1] = total
    data = np.empty(total, dtype=np.uint8)
    for i in range(n):
        c = codes[i]
        a = key_offsets[c]
        o = offsets[i]
        for k in range(key_offsets[c + 1] - a):
            data[o + k] = key_data[a + k]
    return data
