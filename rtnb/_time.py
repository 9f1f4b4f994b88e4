"""Durations: ``"10s"``, ``"5min"``, ``timedelta`` or ``pd.Timedelta`` -> nanoseconds."""

from __future__ import annotations

import datetime as dt
from typing import TypeAlias

import numpy as np
import pandas as pd

from rtnb.errors import ConfigError

__all__ = ["DurationLike", "duration_code", "format_duration", "shown", "to_ns", "to_timedelta"]

DurationLike: TypeAlias = str | dt.timedelta | pd.Timedelta | np.timedelta64


def to_timedelta(value: DurationLike, *, name: str = "duration") -> pd.Timedelta:
    """Parse a duration, naming the argument in the error.

    Examples
    --------
    >>> to_timedelta("90s")
    Timedelta('0 days 00:01:30')
    >>> to_timedelta("soon", name="size")
    Traceback (most recent call last):
    ...
    rtnb.errors.ConfigError: `size` must be a duration such as '10s', '5min' ...; got 'soon'
    """
    if isinstance(value, bool | int | float):
        msg = (
            f"`{name}` must be a duration with a unit such as '10s' or '5min'; got the bare "
            f"number {value!r} (write '{value}s' for seconds)"
        )
        raise ConfigError(msg)
    try:
        td = pd.Timedelta(value)
    except (ValueError, TypeError):
        msg = f"`{name}` must be a duration such as '10s', '5min' or a timedelta; got {value!r}"
        raise ConfigError(msg) from None
    if pd.isna(td):
        msg = f"`{name}` must be a duration, got NaT"
        raise ConfigError(msg)
    return td


def to_ns(value: DurationLike, *, name: str = "duration") -> int:
    """Return a duration as integer nanoseconds.

    Examples
    --------
    >>> to_ns("1ms")
    1000000
    """
    return int(to_timedelta(value, name=name).value)


def format_duration(ns: int) -> str:
    """Format nanoseconds the short way people write durations.

    Examples
    --------
    >>> format_duration(10_000_000_000), format_duration(90_000_000_000), format_duration(1_500_000)
    ('10s', '90s', '1.5ms')
    >>> format_duration(3_600_000_000_000)
    '1h'
    """
    units = [("h", 3_600_000_000_000), ("min", 60_000_000_000), ("s", 1_000_000_000),
             ("ms", 1_000_000), ("us", 1_000), ("ns", 1)]
    if ns == 0:
        return "0s"
    for i, (unit, size) in enumerate(units):
        if ns % size == 0:
            if i > 0 and abs(ns) // size >= 1000:
                bigger, bigger_size = units[i - 1]
                return f"{ns / bigger_size:g}{bigger}"
            return f"{ns // size}{unit}"
    return f"{ns}ns"  # pragma: no cover - the ns unit always divides


def duration_code(td: pd.Timedelta) -> str:
    """The shortest exact duration string: ``"30s"``, ``"2min"``, ``"1500ms"``."""
    ns = int(td.value)
    if ns == 0:
        return "0s"
    for unit, size in (("d", 86_400 * 10**9), ("h", 3600 * 10**9), ("min", 60 * 10**9),
                       ("s", 10**9), ("ms", 10**6), ("us", 10**3)):
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"


def shown(value: object) -> object:
    """A Param value as logs and reports show it (durations as ``"30s"``)."""
    return duration_code(value) if isinstance(value, pd.Timedelta) else value
