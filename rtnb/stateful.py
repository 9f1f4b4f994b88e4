"""One protocol for every stateful operator, run by one generic streamz node.

Windows, rolling aggregations, detectors, alert rules and absence are all *logic objects*:

``process(batch) -> Output``
    fold one micro-batch in; ``Output.rows`` is what goes downstream (or ``None``) and
    ``Output.late`` the input rows that came after their window closed (or ``None``);
``flush() -> Output``
    end of stream: emit what is still held;
``watermark``
    event time up to which the output is complete (``None`` when the logic has none);
``snapshot() -> state`` / ``restore(state)``
    the data state (no configuration) for checkpoints: a restored logic object built with
    the same settings goes on exactly where the saved one was.

Aggregations add ``merge(a, b)`` of partial states (see :mod:`rtnb.aggregations`). A new
operator is one logic object: :class:`StatefulNode` (``stream.stateful(logic)``, registered
with :meth:`streamz.Stream.register_api`) emits its rows, and checkpoints, what-if
recomputes and export work for it without new code.

Examples
--------
>>> import pandas as pd
>>> from streamz import Stream
>>> class RunningCount:
...     def __init__(self): self.n = 0
...     watermark = None
...     def process(self, batch):
...         self.n += len(batch)
...         return Output(pd.DataFrame({"n": [self.n]}))
...     def flush(self): return Output(None)
...     def snapshot(self): return self.n
...     def restore(self, state): self.n = state
>>> source = Stream()
>>> out = source.stateful(RunningCount()).sink_to_list()
>>> source.emit(pd.DataFrame({"x": [1, 2]})); source.emit(pd.DataFrame({"x": [3]}))
>>> [int(o["n"].iloc[0]) for o in out]
[2, 3]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from inspect import isawaitable as _isawaitable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import pandas as pd
from streamz import Stream
from streamz.core import map as _stream_map
from streamz.orderedweakset import OrderedSet as _OrderedSet
from streamz.sinks import sink as _stream_sink

from rtnb.errors import RtnbError

__all__ = ["Logic", "Output", "StatefulNode"]


class Output(NamedTuple):
    """What a logic object produced: rows for downstream and late input rows (or ``None``)."""

    rows: pd.DataFrame | None
    late: pd.DataFrame | None = None


@runtime_checkable
class Logic(Protocol):
    """A stateful operator: see the module docstring."""

    def process(self, batch: pd.DataFrame) -> Any:
        """Fold one batch in; return an object with ``rows`` and ``late``."""
        ...

    def flush(self) -> Any:
        """End of stream: return what is still held (``rows`` and ``late``)."""
        ...

    @property
    def watermark(self) -> pd.Timestamp | None:
        """Event time up to which the output is complete."""
        ...

    def snapshot(self) -> Any:
        """The data state, for a checkpoint."""
        ...

    def restore(self, state: Any) -> None:
        """Put a :meth:`snapshot` back."""
        ...


def _lean_emit(self: Any, x: Any, metadata: Any = None) -> list[Any]:
    """``Stream._emit`` for a batch without metadata (every batch of rtnb's frames).

    streamz iterates the downstreams' ``WeakSet`` under its iteration guard (~2.5 us per
    hop, more than a 100-row node's own work in places); this takes a snapshot of its
    weak references instead (the keys of the ordered set's dict, read in C: its Python
    ``__iter__`` and ``__len__`` cost ~0.3 us a hop). Same calls, same order, same result;
    a batch with metadata goes through streamz's own ``_emit``.
    """
    if metadata:
        return Stream._emit(self, x, metadata=metadata)  # type: ignore[no-any-return]
    self.current_value = x
    self.current_metadata = metadata
    metadata = []
    data = self.downstreams.data
    refs = list(data._od if type(data) is _OrderedSet else data)
    if len(refs) == 1:  # the usual chain: one downstream, its result is the hop's
        downstream = refs[0]()
        if downstream is None:  # collected meanwhile: WeakSet iteration skips it too
            return []
        r = downstream.update(x, self, metadata)  # positional: streamz's update(x, who, metadata)
        if type(r) is list:
            return [element for element in r if element is not None] if r else []
        return [] if r is None else [r]
    result: list[Any] = []
    for ref in refs:
        downstream = ref()
        if downstream is None:
            continue
        r = downstream.update(x, who=self, metadata=metadata)
        if type(r) is list:
            result.extend(r)
        else:
            result.append(r)
    return [element for element in result if element is not None]


class LeanStream(Stream):  # type: ignore[misc]  # streamz is untyped
    """A plain ``streamz.Stream`` (a frame's root) with the leaner ``_emit``."""

    _emit = _lean_emit


class LeanMap(_stream_map):  # type: ignore[misc]
    """``streamz.core.map`` (a stateless frame node) with the leaner ``_emit``."""

    _emit = _lean_emit


class LeanSink(_stream_sink):  # type: ignore[misc]
    """``streamz.sinks.sink`` for ``frame.collect()`` and ``frame.sink(func)``.

    A function returning ``None`` is answered without ``isawaitable`` (~0.4 us: its ABC
    check; tornado's ``gen.isawaitable``, which streamz calls, is ``inspect``'s). Anything
    else the function returns is treated as streamz does: an awaitable is handed upstream
    (backpressure), other values are dropped.
    """

    def __init__(self, upstream: Any, func: Callable[..., Any], *args: Any,
                 **kwargs: Any) -> None:
        super().__init__(upstream, func, *args, **kwargs)
        # the function with its extra arguments bound once (no argument unpacking per batch)
        self._call = functools.partial(func, *args, **self.kwargs) if args or self.kwargs \
            else func

    def update(self, x: Any, who: Any = None, metadata: Any = None) -> Any:
        """Call the function on ``x``."""
        result = self._call(x)
        if result is not None and _isawaitable(result):
            return result
        return []


@Stream.register_api(attribute_name="stateful")
class StatefulNode(Stream):  # type: ignore[misc]  # streamz is untyped
    """The streamz node that runs a :class:`Logic` object on every batch.

    Parameters
    ----------
    upstream
        The stream of input batches.
    logic
        The operator; replace it with :meth:`swap` (a Param change, a what-if).
    on_late
        Called with the late rows of a batch (a side output), if any.
    on_input
        Called with every input batch before it is processed (what-if history).
    """

    def __init__(self, upstream: Stream, logic: Any, *,
                 on_late: Callable[[pd.DataFrame], None] | None = None,
                 on_input: Callable[[pd.DataFrame], None] | None = None,
                 **kwargs: Any) -> None:
        self.logic = logic
        self.on_late = on_late
        self.on_input = on_input
        Stream.__init__(self, upstream, **kwargs)

    _emit = _lean_emit

    def update(self, x: pd.DataFrame, who: Any = None, metadata: Any = None) -> Any:
        """Process one batch; emit its rows downstream."""
        if self.on_input is not None:
            self.on_input(x)
        try:
            out = self.logic.process(x)
        except RtnbError:
            raise
        except Exception as exc:
            msg = (f"node {self.name!r} failed on a batch of {len(x)} rows (columns "
                   f"{list(x.columns)!r}): {type(exc).__name__}: {exc}")
            raise RtnbError(msg) from exc
        # what _out does, inlined (one call less per batch)
        late = out.late
        if late is not None and len(late) and self.on_late is not None:
            self.on_late(late)
        rows = out.rows
        if rows is not None:
            return self._emit(rows, metadata)
        return None

    def flush(self) -> Any:
        """End of stream: emit what the logic still holds."""
        return self._out(self.logic.flush(), None)

    def _out(self, out: Any, metadata: Any) -> Any:
        late = out.late
        if late is not None and len(late) and self.on_late is not None:
            self.on_late(late)
        rows = out.rows
        if rows is not None:
            return self._emit(rows, metadata=metadata)
        return None
