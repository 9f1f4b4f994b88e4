"""StreamingSeries: a column, or an expression of columns, of a StreamingFrame, per batch."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd

from rtnb import _record
from rtnb.errors import ConfigError
from rtnb.params import Param, resolve

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame

__all__ = ["StreamingSeries"]


class StreamingSeries:
    """A column (or an expression of columns) of a :class:`StreamingFrame`, evaluated per batch.

    Comparisons and arithmetic build new expressions lazily; use them as masks
    (``sdf[sdf["cpu"] > 90]``) or in :meth:`StreamingFrame.assign`.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> sdf = rtnb.StreamingFrame(pd.DataFrame({"x": pd.Series([], dtype=float)}))
    >>> expr = (sdf["x"] * 2 > 3) & (sdf["x"] < 10)
    >>> expr.name
    '(((x * 2) > 3) & (x < 10))'
    """

    __hash__ = None  # type: ignore[assignment]  # == builds an expression, as in pandas

    def __init__(self, frame: StreamingFrame, func: Callable[[pd.DataFrame], pd.Series],
                 name: str, code: _record.Code = ()) -> None:
        self.frame = frame
        self.func = func
        self.name = name
        #: The expression as code tokens (for export): the frame, code strings and values.
        self.code: _record.Code = code or (frame, f"[{name!r}]")

    def __repr__(self) -> str:
        return f"<StreamingSeries {self.name!r} of {self.frame.name!r}>"

    def __bool__(self) -> bool:
        msg = (f"the truth value of the expression {self.name!r} is only known per batch: "
               "combine conditions with & and | (not `and`/`or`) and write a < x < b as "
               "(x > a) & (x < b)")
        raise ValueError(msg)

    def _binary(self, other: Any, op: Callable[[Any, Any], Any], sym: str,
                reflected: bool = False) -> StreamingSeries:
        f = self.func
        if isinstance(other, StreamingSeries):
            if other.frame is not self.frame:
                msg = "both sides of an expression must come from the same frame"
                raise ConfigError(msg)
            g = other.func
            other_name = other.name
            if reflected:
                return StreamingSeries(self.frame, lambda df: op(g(df), f(df)),
                                       f"({other_name} {sym} {self.name})",
                                       ("(", *other.code, f" {sym} ", *self.code, ")"))
            return StreamingSeries(self.frame, lambda df: op(f(df), g(df)),
                                   f"({self.name} {sym} {other_name})",
                                   ("(", *self.code, f" {sym} ", *other.code, ")"))
        value = other
        literal = _record.Value(value)
        if reflected:
            return StreamingSeries(self.frame, lambda df: op(resolve(value), f(df)),
                                   f"({_label(value)} {sym} {self.name})",
                                   ("(", literal, f" {sym} ", *self.code, ")"))
        return StreamingSeries(self.frame, lambda df: op(f(df), resolve(value)),
                               f"({self.name} {sym} {_label(value)})",
                               ("(", *self.code, f" {sym} ", literal, ")"))

    def __gt__(self, other: Any) -> StreamingSeries:
        return self._binary(other, operator.gt, ">")

    def __ge__(self, other: Any) -> StreamingSeries:
        return self._binary(other, operator.ge, ">=")

    def __lt__(self, other: Any) -> StreamingSeries:
        return self._binary(other, operator.lt, "<")

    def __le__(self, other: Any) -> StreamingSeries:
        return self._binary(other, operator.le, "<=")

    def __eq__(self, other: Any) -> StreamingSeries:  # type: ignore[override]
        return self._binary(other, operator.eq, "==")

    def __ne__(self, other: Any) -> StreamingSeries:  # type: ignore[override]
        return self._binary(other, operator.ne, "!=")

    def __and__(self, other: Any) -> StreamingSeries:
        return self._binary(other, operator.and_, "&")

    def __or__(self, other: Any) -> StreamingSeries:
        return self._binary(other, operator.or_, "|")

    def __add__(self, other: Any) -> StreamingSeries:
        return self._binary(other, operator.add, "+")

    def __radd__(self, other: Any) -> StreamingSeries:
        return self._binary(other, operator.add, "+", reflected=True)

    def __sub__(self, other: Any) -> StreamingSeries:
        return self._binary(other, operator.sub, "-")

    def __rsub__(self, other: Any) -> StreamingSeries:
        return self._binary(other, operator.sub, "-", reflected=True)

    def __mul__(self, other: Any) -> StreamingSeries:
        return self._binary(other, operator.mul, "*")

    def __rmul__(self, other: Any) -> StreamingSeries:
        return self._binary(other, operator.mul, "*", reflected=True)

    def __truediv__(self, other: Any) -> StreamingSeries:
        return self._binary(other, operator.truediv, "/")

    def __invert__(self) -> StreamingSeries:
        f = self.func
        return StreamingSeries(self.frame, lambda df: ~f(df), f"~{self.name}",
                               ("~", *self.code))

    def isin(self, values: Iterable[Any]) -> StreamingSeries:
        """Membership test, as ``Series.isin``."""
        items = list(values)
        f = self.func
        return StreamingSeries(self.frame, lambda df: f(df).isin(items),
                               f"{self.name}.isin({items!r})",
                               (*self.code, ".isin(", _record.Value(items), ")"))

    def isna(self) -> StreamingSeries:
        """Missing values, as ``Series.isna``."""
        f = self.func
        return StreamingSeries(self.frame, lambda df: f(df).isna(), f"{self.name}.isna()",
                               (*self.code, ".isna()"))

    def notna(self) -> StreamingSeries:
        """Present values, as ``Series.notna``."""
        f = self.func
        return StreamingSeries(self.frame, lambda df: f(df).notna(), f"{self.name}.notna()",
                               (*self.code, ".notna()"))

    def between(self, left: Any, right: Any) -> StreamingSeries:
        """Values in ``[left, right]``, as ``Series.between``."""
        f = self.func
        return StreamingSeries(self.frame,
                               lambda df: f(df).between(resolve(left), resolve(right)),
                               f"{self.name}.between({_label(left)}, {_label(right)})",
                               (*self.code, ".between(", _record.Value(left), ", ",
                                _record.Value(right), ")"))

    def collect(self) -> list[pd.Series]:
        """Return a list that fills with this expression's value for every batch."""
        out: list[pd.Series] = []
        f = self.func
        self.frame.stream.map(f).sink(out.append)
        return out


def _label(value: Any) -> str:
    if isinstance(value, Param):
        return value.name
    return repr(value)
