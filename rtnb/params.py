"""Tunable settings that render as widgets and reconfigure a running pipeline.

A :class:`Param` is typed (duration, float, int, choice or bool), bounded and documented.
Anything that takes a setting (a window size, a lateness, a threshold) accepts a Param in
place of a plain value; the operator reads ``param.value`` and subscribes to changes, so a
slider moved in the notebook reconfigures the pipeline without restarting its source.
"""

from __future__ import annotations

import datetime as dt
import importlib
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeAlias

import numpy as np
import pandas as pd

from rtnb._time import format_duration, to_timedelta
from rtnb.errors import ConfigError

__all__ = ["Param", "ParamKind", "resolve"]

ParamKind: TypeAlias = Literal["duration", "float", "int", "choice", "bool"]
Watcher: TypeAlias = Callable[["Param", Any, Any], None]

_counter = itertools.count(1)

# Durations a duration slider offers between its bounds (plus the value itself).
_NICE_SECONDS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
    1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1200, 1800,
    2700, 3600, 7200, 10800, 21600, 43200, 86400,
)


class Param:
    """A typed, bounded, documented setting that can be tuned while a stream runs.

    Parameters
    ----------
    value
        The initial value. Its type picks the kind unless ``kind`` is given: ``bool`` ->
        ``"bool"``, ``int`` -> ``"int"``, ``float`` -> ``"float"``, a duration string or
        timedelta -> ``"duration"``; ``choices`` makes it a ``"choice"``.
    min, max
        Inclusive bounds (durations accept ``"1s"`` etc.). Required for numeric and duration
        kinds so a widget can be drawn; values outside them raise :class:`ConfigError`.
    step
        Slider step for int and float kinds.
    choices
        The allowed values of a ``"choice"`` Param.
    doc
        One line saying what the setting does; shown as the widget's tooltip.
    name
        Label of the widget and the option name in exported scripts.
    kind
        Force a kind instead of inferring it.

    Examples
    --------
    >>> size = Param("10s", min="1s", max="5min", name="window", doc="tumbling window size")
    >>> size
    Param(window='10s', kind='duration', min='1s', max='5min')
    >>> seen = []
    >>> _ = size.watch(lambda p, old, new: seen.append((old, new)))
    >>> size.value = "30s"
    >>> seen
    [(Timedelta('0 days 00:00:10'), Timedelta('0 days 00:00:30'))]
    >>> size.value = "1h"
    Traceback (most recent call last):
    ...
    rtnb.errors.ConfigError: Param 'window' must be between 1s and 5min; got 1h
    """

    def __init__(
        self,
        value: Any,
        *,
        min: Any = None,
        max: Any = None,
        step: float | None = None,
        choices: Sequence[Any] | None = None,
        doc: str = "",
        name: str | None = None,
        kind: ParamKind | None = None,
    ) -> None:
        self.name = name or f"param{next(_counter)}"
        self.doc = doc
        self.kind: ParamKind = kind or _infer_kind(value, choices, self.name)
        self.choices = tuple(choices) if choices is not None else None
        self.step = step
        if self.kind == "choice" and not self.choices:
            msg = f"Param {self.name!r} of kind 'choice' needs `choices`"
            raise ConfigError(msg)
        self.min = None if min is None else self._coerce(min, "min")
        self.max = None if max is None else self._coerce(max, "max")
        if self.kind in ("duration", "float", "int") and (self.min is None or self.max is None):
            msg = (
                f"Param {self.name!r} of kind {self.kind!r} needs both `min` and `max` "
                "so it can be drawn as a slider and checked"
            )
            raise ConfigError(msg)
        if self.min is not None and self.max is not None and self.min > self.max:
            msg = f"Param {self.name!r}: `min` ({min!r}) is greater than `max` ({max!r})"
            raise ConfigError(msg)
        self._value = self._check(value)
        self._watchers: list[Watcher] = []
        self._widget: Any = None
        self._syncing = False

    # -- value -------------------------------------------------------------------------------
    @property
    def value(self) -> Any:
        """The current value (a ``pd.Timedelta`` for durations)."""
        return self._value

    @value.setter
    def value(self, new: Any) -> None:
        new = self._check(new)
        old = self._value
        if _equal(old, new):
            return
        self._value = new
        if self._widget is not None:
            self._sync_widget()
        notified: list[Watcher] = []
        try:
            for watcher in list(self._watchers):
                watcher(self, old, new)
                notified.append(watcher)
        except ConfigError:
            # A consumer refused the value (e.g. a sliding window's `every` > `size`): put
            # the old value back everywhere, so Param, widget and pipeline agree.
            self._value = old
            if self._widget is not None:
                self._sync_widget()
            for watcher in notified:
                watcher(self, new, old)
            raise

    def watch(self, callback: Watcher) -> Callable[[], None]:
        """Call ``callback(param, old, new)`` after every change; return an unsubscribe function.

        Examples
        --------
        >>> p = Param(3.0, min=0.0, max=10.0)
        >>> unwatch = p.watch(lambda p, old, new: print(old, "->", new))
        >>> p.value = 4.5
        3.0 -> 4.5
        >>> unwatch()
        >>> p.value = 5.0
        """
        self._watchers.append(callback)

        def unwatch() -> None:
            if callback in self._watchers:
                self._watchers.remove(callback)

        return unwatch

    def validate(self, value: Any) -> Any:
        """``value`` as this Param would hold it, without changing the Param.

        Raises :class:`ConfigError` (naming the Param, its bounds and what arrived) for a
        value the Param refuses; nothing is notified.

        Examples
        --------
        >>> p = Param(3.0, min=0.0, max=10.0, name="threshold")
        >>> p.validate(4)
        4.0
        >>> p.validate(12.0)
        Traceback (most recent call last):
        ...
        rtnb.errors.ConfigError: Param 'threshold' must be between 0.0 and 10.0; got 12.0
        >>> p.value
        3.0
        """
        return self._check(value)

    def parse(self, text: str) -> Any:
        """The value ``text`` stands for (a command line's ``--set name=TEXT``), validated.

        Ints and floats are read as numbers, bools from ``true/false/1/0/yes/no``, durations
        as duration strings (``"30s"``), a choice as the choice whose ``str()`` is ``text``.

        Examples
        --------
        >>> Param(3.0, min=0.0, max=10.0).parse("4.5")
        4.5
        >>> Param("10s", min="1s", max="1min").parse("30s")
        Timedelta('0 days 00:00:30')
        >>> Param(True).parse("no")
        False
        >>> Param(2, min=0, max=5, name="n").parse("two")
        Traceback (most recent call last):
        ...
        rtnb.errors.ConfigError: Param 'n' is an int; got 'two'
        """
        raw = text.strip()
        value: Any = raw
        if self.kind == "int":
            try:
                value = int(raw)
            except ValueError:
                msg = f"Param {self.name!r} is an int; got {text!r}"
                raise ConfigError(msg) from None
        elif self.kind == "float":
            try:
                value = float(raw)
            except ValueError:
                msg = f"Param {self.name!r} is a float; got {text!r}"
                raise ConfigError(msg) from None
        elif self.kind == "bool":
            words = {"true": True, "1": True, "yes": True, "false": False, "0": False,
                     "no": False}
            if raw.lower() not in words:
                msg = f"Param {self.name!r} is a bool (true or false); got {text!r}"
                raise ConfigError(msg)
            value = words[raw.lower()]
        elif self.kind == "choice":
            assert self.choices is not None
            value = next((c for c in self.choices if str(c) == raw), raw)
        return self._check(value)

    def _coerce(self, value: Any, what: str) -> Any:
        kind = self.kind
        if kind == "duration":
            return to_timedelta(value, name=f"{self.name}.{what}")
        if kind == "bool":
            if not isinstance(value, bool | np.bool_):
                msg = f"Param {self.name!r} is a bool; got {value!r}"
                raise ConfigError(msg)
            return bool(value)
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                msg = f"Param {self.name!r} is an int; got {value!r} ({type(value).__name__})"
                raise ConfigError(msg)
            return int(value)
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                msg = f"Param {self.name!r} is a float; got {value!r} ({type(value).__name__})"
                raise ConfigError(msg)
            return float(value)
        return value

    def _check(self, value: Any) -> Any:
        value = self._coerce(value, "value")
        if self.kind == "choice":
            assert self.choices is not None
            if value not in self.choices:
                msg = f"Param {self.name!r} must be one of {list(self.choices)!r}; got {value!r}"
                raise ConfigError(msg)
        if self.min is not None and self.max is not None and not self.min <= value <= self.max:
            msg = (
                f"Param {self.name!r} must be between {self._fmt(self.min)} and "
                f"{self._fmt(self.max)}; got {self._fmt(value)}"
            )
            raise ConfigError(msg)
        return value

    def _fmt(self, value: Any) -> str:
        if isinstance(value, pd.Timedelta):
            return format_duration(int(value.value))
        return repr(value)

    def __repr__(self) -> str:
        parts = [f"{self.name}={self._fmt(self._value)!r}" if self.kind == "duration"
                 else f"{self.name}={self._value!r}", f"kind={self.kind!r}"]
        if self.min is not None:
            parts.append(f"min={self._fmt(self.min)!r}" if self.kind == "duration"
                         else f"min={self.min!r}")
            parts.append(f"max={self._fmt(self.max)!r}" if self.kind == "duration"
                         else f"max={self.max!r}")
        if self.choices is not None:
            parts.append(f"choices={list(self.choices)!r}")
        return f"Param({', '.join(parts)})"

    # -- widget ------------------------------------------------------------------------------
    @property
    def widget(self) -> Any:
        """The ipywidget that edits this Param (built on first use, kept in sync both ways)."""
        if self._widget is None:
            self._widget = self._build_widget()
        return self._widget

    def duration_options(self) -> list[tuple[str, pd.Timedelta]]:
        """The (label, value) steps a duration slider offers: round values within bounds.

        Examples
        --------
        >>> [label for label, _ in Param("10s", min="5s", max="1min").duration_options()]
        ['5s', '10s', '15s', '20s', '30s', '45s', '1min']
        """
        assert self.min is not None and self.max is not None
        values = {pd.Timedelta(seconds=s) for s in _NICE_SECONDS}
        values |= {self.min, self.max, self._value}
        chosen = sorted(v for v in values if self.min <= v <= self.max)
        return [(format_duration(int(v.value)), v) for v in chosen]

    def _build_widget(self) -> Any:
        # The widget layer is loaded by name on first use: the core never imports ipywidgets.
        w = importlib.import_module(WIDGETS_MODULE).param_widget(self)
        w.observe(self._on_widget, names="value")
        return w

    def _on_widget(self, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        try:
            self.value = change["new"]
        except ConfigError:
            # Refused: the slider jumps back to the value the pipeline uses.
            self._sync_widget()

    def _sync_widget(self) -> None:
        w = self._widget
        self._syncing = True
        try:
            if self.kind == "duration" and self._value not in [v for _, v in w.options]:
                w.options = self.duration_options()
            if not _equal(w.value, self._value):
                w.value = self._value
        finally:
            self._syncing = False

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


#: Builds a Param's ipywidget (``param_widget(param)``); imported on a widget's first use.
WIDGETS_MODULE = "rtnb.viz._params"


def _infer_kind(value: Any, choices: Sequence[Any] | None, name: str) -> ParamKind:
    if choices is not None:
        return "choice"
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, np.timedelta64):  # a numpy integer subclass: check it first
        return "duration"
    if isinstance(value, int | np.integer):
        return "int"
    if isinstance(value, float | np.floating):
        return "float"
    if isinstance(value, str | dt.timedelta | np.timedelta64):
        return "duration"
    msg = (
        f"cannot tell what kind of Param {name!r} is from {value!r}; pass kind= "
        "('duration', 'float', 'int', 'choice' or 'bool')"
    )
    raise ConfigError(msg)


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def resolve(value: Any) -> Any:
    """Return ``value.value`` for a :class:`Param`, else ``value`` itself.

    Examples
    --------
    >>> resolve(Param(2, min=0, max=5)), resolve(2)
    (2, 2)
    """
    return value.value if isinstance(value, Param) else value
