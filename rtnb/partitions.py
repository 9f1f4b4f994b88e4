"""Which partition a key belongs to: Kafka's default partitioner, for every broker.

A partitioned pipeline (issue 19) reads a broker's partitions: Kafka's own, or N Redis
streams ``name:{p}``, N NATS subjects ``subject.{p}``. Every row of a key must land in the
same partition, so producers and rtnb must agree on the mapping. :func:`partition_of` is the
one Kafka producers use by default (murmur2 of the key's bytes, positive, modulo N: Java's
``Utils.toPositive(Utils.murmur2(key)) % N``, librdkafka's ``murmur2`` partitioner): rows a
standard Kafka producer keyed by host land where ``partition_of(host, n)`` says, and a producer
in any language can compute it. Text keys are their UTF-8 bytes; other keys their ``str()``.
"""

from __future__ import annotations

from typing import Any, overload

import numpy as np
import numpy.typing as npt
import pandas as pd

from rtnb.errors import ConfigError

__all__ = ["murmur2", "partition_of"]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 hash of ``data`` (seed ``0x9747b28c``), as an unsigned int.

    Examples
    --------
    >>> murmur2(b""), murmur2(b"kafka")
    (275646681, 3496464228)
    """
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    end = length - length % 4
    for i in range(0, end, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length % 4
    if extra == 3:
        h ^= data[end + 2] << 16
    if extra >= 2:
        h ^= data[end + 1] << 8
    if extra >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def _key_bytes(key: Any) -> bytes:
    if isinstance(key, bytes):
        return key
    return (key if isinstance(key, str) else str(key)).encode("utf-8")


def _one(key: Any, n: int) -> int:
    return (murmur2(_key_bytes(key)) & 0x7FFFFFFF) % n


@overload
def partition_of(key: str | bytes | int, n: int) -> int: ...  # type: ignore[overload-overlap]


@overload
def partition_of(key: pd.Series | pd.Index | npt.ArrayLike, n: int) -> npt.NDArray[np.int64]: ...


def partition_of(key: Any, n: int) -> int | npt.NDArray[np.int64]:
    """The partition (``0 .. n-1``) of ``key``, or of every key of an array or Series.

    The mapping of Kafka's default partitioner (see the module docstring), so a keyed Kafka
    producer and ``rtnb replay --partitions`` put a key's rows where this says. An array is
    hashed once per distinct key. A missing key (``None``, NaN) is refused: a row needs a
    key to have a partition.

    Examples
    --------
    >>> import pandas as pd
    >>> partition_of("web-01", 8), partition_of(b"abc", 1000)
    (3, 107)
    >>> partition_of(pd.Series(["web-01", "db-01", "web-01"]), 8).tolist()
    [3, 2, 3]
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        msg = f"partition_of: the number of partitions must be a positive int; got {n!r}"
        raise ConfigError(msg)
    n = int(n)
    if isinstance(key, str | bytes | int | np.integer):
        return _one(key, n)
    codes, uniques = pd.factorize(np.asarray(key, dtype=object) if not isinstance(
        key, pd.Series | pd.Index) else key, use_na_sentinel=True)
    if len(codes) and codes.min() < 0:
        msg = "partition_of: a key is missing (None or NaN); every row needs a key"
        raise ConfigError(msg)
    table = np.fromiter((_one(u, n) for u in uniques), dtype=np.int64, count=len(uniques))
    return table[codes]
