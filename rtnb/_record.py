"""How each node of a pipeline was built, kept so :mod:`rtnb.export` can write it back as code.

Every public call that builds a node (a source, ``frame.window(...)``, ``rtnb.alert(...)``,
``rtnb.detect.ZScore(...)``, ``rtnb.tumbling(...)``) leaves a :class:`Call` on its result:
the callable, the object it was called on and the arguments exactly as the user passed them
(Params stay Params, so an export writes their current value and an option to override it).
Only the outermost rtnb call is recorded: a node that ``rtnb.alert`` builds internally is
rebuilt by the exported ``rtnb.alert(...)`` call, not written out separately.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

__all__ = ["ATTR", "CHAIN", "Call", "Code", "Recorded", "Value", "attribute", "call_of",
           "chain_of", "function", "method"]

#: Attribute that holds an object's :class:`Call`.
ATTR = "_rtnb_call"

F = TypeVar("F", bound=Callable[..., Any])

_depth = threading.local()


@dataclass(frozen=True)
class Call:
    """One recorded call.

    ``func(*args, **kwargs)`` (``kind="call"``), ``target.func(*args, **kwargs)``
    (``kind="method"``), ``target[args[0]]`` (``kind="index"``) or ``target.func``
    (``kind="attr"``).
    """

    kind: Literal["call", "method", "index", "attr"]
    func: Any
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    target: Any = None


@dataclass(frozen=True)
class Value:
    """A literal inside a :class:`Code` token list (rendered as a value, not as code)."""

    value: Any


#: Tokens of a column expression: ``str`` items are code, anything else is rendered by the
#: exporter (a frame as its variable, a :class:`Value` or Param as a value).
Code = tuple[Any, ...]


def call_of(obj: Any) -> Call | None:
    """The :class:`Call` that built ``obj``, if it was recorded."""
    found = getattr(obj, ATTR, None)
    return found if isinstance(found, Call) else None


def _set(obj: Any, call: Call) -> None:
    try:
        object.__setattr__(obj, ATTR, call)
    except (AttributeError, TypeError):  # pragma: no cover - slotted or builtin results
        pass


class _Outermost:
    """Context: true when no other recorded rtnb call is running on this thread."""

    def __enter__(self) -> bool:
        depth = getattr(_depth, "n", 0)
        _depth.n = depth + 1
        return depth == 0

    def __exit__(self, *exc: object) -> None:
        _depth.n -= 1


#: Attribute holding the calls made on an object that returned the object itself
#: (``view.mark(alerts)``): written after the object's own call, in order.
CHAIN = "_rtnb_chain"


def chain_of(obj: Any) -> list[Call]:
    """The calls recorded on ``obj`` that returned ``obj`` itself."""
    found = getattr(obj, CHAIN, None)
    return list(found) if isinstance(found, list) else []


def attribute(obj: Any, target: Any, name: str) -> None:
    """Record that ``obj`` is ``target.name`` (an accessor such as ``frame.plot``)."""
    _set(obj, Call("attr", name, target=target))


def method(fn: F) -> F:
    """Record ``self.fn(*args, **kwargs)`` on the object it returns (outermost calls only).

    A method that returns ``self`` (a fluent call) is added to the object's chain instead.
    """

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _Outermost() as outer:
            out = fn(self, *args, **kwargs)
        if outer:
            kind: Literal["method", "index"] = "index" if fn.__name__ == "__getitem__" else "method"
            call = Call(kind, fn.__name__, args, dict(kwargs), target=self)
            if out is self:
                try:
                    getattr(self, CHAIN).append(call)
                except AttributeError:
                    with contextlib.suppress(AttributeError, TypeError):
                        object.__setattr__(self, CHAIN, [call])
            else:
                _set(out, call)
        return out

    return wrapper  # type: ignore[return-value]


def function(fn: F) -> F:
    """Record ``fn(*args, **kwargs)`` on the object it returns (outermost calls only)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _Outermost() as outer:
            out = fn(*args, **kwargs)
        if outer:
            _set(out, Call("call", wrapper, args, dict(kwargs)))
        return out

    return wrapper  # type: ignore[return-value]


def _wrap_init(cls: type[Any]) -> None:
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        with _Outermost() as outer:
            original(self, *args, **kwargs)
        if outer:
            _set(self, Call("call", type(self), args, dict(kwargs)))

    cls.__init__ = __init__


class Recorded:
    """Mixin: instances remember their constructor call, ``Cls(*args, **kwargs)``.

    Every subclass that defines ``__init__`` is wrapped too, so the call recorded is the one
    the user wrote (the outermost constructor), with the class they named.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            _wrap_init(cls)
