"""Window specifications: what a window is, not how it is computed.

Sizes accept ``"10s"``, ``"5min"``, a ``timedelta`` or a :class:`~rtnb.Param` (the window
then follows the Param while the stream runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from rtnb import _record
from rtnb._time import DurationLike, format_duration, to_ns
from rtnb.errors import ConfigError
from rtnb.params import Param, resolve

__all__ = [
    "Rows",
    "Session",
    "Sliding",
    "Tumbling",
    "WindowSpec",
    "rows",
    "session",
    "sliding",
    "tumbling",
]

DurationParam: TypeAlias = DurationLike | Param


def _positive_ns(value: DurationParam, name: str) -> int:
    ns = to_ns(resolve(value), name=name)
    if ns <= 0:
        msg = f"window `{name}` must be positive; got {resolve(value)!r}"
        raise ConfigError(msg)
    return ns


@dataclass(frozen=True)
class Tumbling:
    """Fixed-size, non-overlapping windows ``[start, start + size)``, aligned to epoch + offset.

    Examples
    --------
    >>> tumbling("10s")
    Tumbling(size='10s')
    >>> tumbling("10s").bounds_ns()
    (10000000000, 10000000000, 0)
    """

    size: DurationParam
    offset: DurationParam = "0s"

    def __post_init__(self) -> None:
        self.bounds_ns()

    def bounds_ns(self) -> tuple[int, int, int]:
        """Return ``(size, every, offset)`` in nanoseconds at the Params' current values."""
        size = _positive_ns(self.size, "size")
        offset = to_ns(resolve(self.offset), name="offset")
        if not 0 <= offset < size:
            msg = (f"tumbling window `offset` must be in [0, size); got offset="
                   f"{format_duration(offset)} with size={format_duration(size)}")
            raise ConfigError(msg)
        return size, size, offset

    def params(self) -> list[Param]:
        """The Params this spec follows."""
        return [v for v in (self.size, self.offset) if isinstance(v, Param)]

    def check(self) -> None:
        """Raise ConfigError if the Params' current values make an invalid window."""
        self.bounds_ns()

    def describe(self) -> str:
        """Short human text, e.g. for a plot title."""
        return f"tumbling {format_duration(self.bounds_ns()[0])}"

    def __repr__(self) -> str:
        size, _, offset = self.bounds_ns()
        extra = f", offset={format_duration(offset)!r}" if offset else ""
        return f"Tumbling(size={format_duration(size)!r}{extra})"


@dataclass(frozen=True)
class Sliding:
    """Windows of length ``size`` starting every ``every``; an event is in ``size / every`` of them.

    Examples
    --------
    >>> sliding("1min", "10s")
    Sliding(size='1min', every='10s')
    >>> sliding("10s", "1min")
    Traceback (most recent call last):
    ...
    rtnb.errors.ConfigError: sliding window `every` (1min) can't be longer than `size` (10s); ...
    """

    size: DurationParam
    every: DurationParam
    offset: DurationParam = "0s"

    def __post_init__(self) -> None:
        self.bounds_ns()

    def bounds_ns(self) -> tuple[int, int, int]:
        """Return ``(size, every, offset)`` in nanoseconds at the Params' current values."""
        size = _positive_ns(self.size, "size")
        every = _positive_ns(self.every, "every")
        offset = to_ns(resolve(self.offset), name="offset")
        if every > size:
            msg = (f"sliding window `every` ({format_duration(every)}) can't be longer than "
                   f"`size` ({format_duration(size)}); there would be gaps no window covers")
            raise ConfigError(msg)
        if not 0 <= offset < every:
            msg = (f"sliding window `offset` must be in [0, every); got offset="
                   f"{format_duration(offset)} with every={format_duration(every)}")
            raise ConfigError(msg)
        return size, every, offset

    def params(self) -> list[Param]:
        """The Params this spec follows."""
        return [v for v in (self.size, self.every, self.offset) if isinstance(v, Param)]

    def check(self) -> None:
        """Raise ConfigError if the Params' current values make an invalid window."""
        self.bounds_ns()

    def describe(self) -> str:
        """Short human text, e.g. for a plot title."""
        size, every, _ = self.bounds_ns()
        return f"sliding {format_duration(size)} every {format_duration(every)}"

    def __repr__(self) -> str:
        size, every, offset = self.bounds_ns()
        extra = f", offset={format_duration(offset)!r}" if offset else ""
        return (f"Sliding(size={format_duration(size)!r}, every={format_duration(every)!r}"
                f"{extra})")


@dataclass(frozen=True)
class Session:
    """Per-key windows of activity separated by at least ``gap`` without events.

    Examples
    --------
    >>> session("5min")
    Session(gap='5min')
    """

    gap: DurationParam

    def __post_init__(self) -> None:
        _positive_ns(self.gap, "gap")

    def gap_ns(self) -> int:
        """The gap in nanoseconds at the Param's current value."""
        return _positive_ns(self.gap, "gap")

    def params(self) -> list[Param]:
        """The Params this spec follows."""
        return [self.gap] if isinstance(self.gap, Param) else []

    def check(self) -> None:
        """Raise ConfigError if the Param's current value makes an invalid window."""
        self.gap_ns()

    def describe(self) -> str:
        """Short human text, e.g. for a plot title."""
        return f"session gap {format_duration(self.gap_ns())}"

    def __repr__(self) -> str:
        return f"Session(gap={format_duration(self.gap_ns())!r})"


@dataclass(frozen=True)
class Rows:
    """Count windows: every ``n`` consecutive events of a key (in event-time order).

    Examples
    --------
    >>> rows(100)
    Rows(n=100)
    """

    n: int | Param

    def __post_init__(self) -> None:
        value = resolve(self.n)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            msg = f"rows window `n` must be a positive int; got {value!r}"
            raise ConfigError(msg)

    def params(self) -> list[Param]:
        """The Params this spec follows."""
        return [self.n] if isinstance(self.n, Param) else []

    def check(self) -> None:
        """Raise ConfigError if the Param's current value makes an invalid window."""
        self.__post_init__()

    def describe(self) -> str:
        """Short human text, e.g. for a plot title."""
        return f"every {resolve(self.n)} rows"

    def __repr__(self) -> str:
        return f"Rows(n={resolve(self.n)!r})"


WindowSpec: TypeAlias = Tumbling | Sliding | Session | Rows


@_record.function
def tumbling(size: DurationParam, *, offset: DurationParam = "0s") -> Tumbling:
    """Fixed, non-overlapping windows of ``size`` (see :class:`Tumbling`).

    Examples
    --------
    >>> tumbling("1min", offset="30s")
    Tumbling(size='1min', offset='30s')
    """
    return Tumbling(size, offset)


@_record.function
def sliding(size: DurationParam, every: DurationParam, *,
            offset: DurationParam = "0s") -> Sliding:
    """Overlapping windows of ``size`` that start every ``every`` (see :class:`Sliding`).

    Examples
    --------
    >>> sliding("30s", "10s").describe()
    'sliding 30s every 10s'
    """
    return Sliding(size, every, offset)


@_record.function
def session(gap: DurationParam) -> Session:
    """Session windows closed by ``gap`` of inactivity per key (see :class:`Session`).

    Examples
    --------
    >>> session("30s").describe()
    'session gap 30s'
    """
    return Session(gap)


@_record.function
def rows(n: int | Param) -> Rows:
    """Count windows of ``n`` events per key (see :class:`Rows`).

    Examples
    --------
    >>> rows(10).describe()
    'every 10 rows'
    """
    return Rows(n)


