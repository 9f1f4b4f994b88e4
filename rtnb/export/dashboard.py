"""What an exported dashboard app runs inside ``bokeh serve``: the same views, served.

``Pipeline.export_dashboard("app.py")`` writes an app whose last line is
``dashboard.serve(curdoc(), build)``. For each browser session :func:`serve` builds the
pipeline, lays out its views (the very Bokeh figures the notebook showed) with a Bokeh widget
per Param and a status line, starts the source on the server's event loop and stops it when
the session ends.

Bokeh server documents may only be changed while their lock is held, that is inside a
callback the document runs: the views are therefore not updated by their own timer here but by
one periodic document callback, at the fastest view's ``max_fps``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rtnb.errors import ConfigError
from rtnb.params import Param
from rtnb.viz import Scheduler

if TYPE_CHECKING:
    from rtnb.pipeline import Pipeline

__all__ = ["Board", "param_widget", "serve"]


class Board:
    """The layout of an exported dashboard: Params, status widgets and views, in ``ncols``.

    Examples
    --------
    >>> import rtnb
    >>> from rtnb.export.dashboard import Board
    >>> size = rtnb.Param("10s", min="1s", max="1min", name="window")
    >>> Board(size, ncols=2).ncols
    2
    """

    def __init__(self, *items: Any, ncols: int = 1) -> None:
        from rtnb.viz.plots import View
        from rtnb.viz.status import Status

        if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
            msg = f"Board `ncols` must be a positive int; got {ncols!r}"
            raise ConfigError(msg)
        self.params = [i for i in items if isinstance(i, Param)]
        self.statuses = [i for i in items if isinstance(i, Status)]
        self.views = [i for i in items if isinstance(i, View)]
        other = [i for i in items if not isinstance(i, Param | Status | View)]
        if other:
            msg = f"Board takes Params, status widgets and views; got {other!r}"
            raise ConfigError(msg)
        self.ncols = ncols


class _DocumentScheduler(Scheduler):
    """A scheduler without a timer of its own: the document's periodic callback ticks it.

    It counts as timed and running while the session lives, so views never flush from the
    source's task (at the end of the stream, or when draining): only a tick, under the
    document's lock, changes the document.
    """

    alive = True

    @property
    def timed(self) -> bool:
        return True

    @property
    def running(self) -> bool:
        return self.alive and bool(self.views)

    def wake(self) -> None:
        return

    def poll(self) -> None:
        return


def param_widget(param: Param) -> Any:
    """A Bokeh widget that edits ``param`` (a refused value puts the widget back)."""
    from bokeh.models.widgets import Checkbox, Select, Slider

    widget: Any
    to_value: Callable[[Any], Any]
    to_widget: Callable[[Any], Any]
    if param.kind == "duration":
        options = param.duration_options()
        labels = {label: value for label, value in options}
        current = next(label for label, value in options if value == param.value)
        widget = Select(title=param.name, options=list[Any](labels), value=current)

        def duration_value(new: Any) -> Any:
            return labels[new]

        def duration_label(value: Any) -> Any:
            fresh = param.duration_options()
            labels.clear()
            labels.update(fresh)
            widget.options = list(labels)
            return next(label for label, v in fresh if v == value)

        to_value, to_widget = duration_value, duration_label
    elif param.kind in ("int", "float"):
        assert param.min is not None and param.max is not None
        step = param.step or (1 if param.kind == "int" else (param.max - param.min) / 100)
        widget = Slider(title=param.name, start=param.min, end=param.max, step=step,
                        value=param.value)
        to_value = int if param.kind == "int" else float
        to_widget = float
    elif param.kind == "choice":
        choices = [str(c) for c in param.choices or ()]
        by_label = dict(zip(choices, param.choices or (), strict=True))
        widget = Select(title=param.name, options=list[Any](choices), value=str(param.value))
        to_value = by_label.__getitem__
        to_widget = str
    else:
        widget = Checkbox(label=param.name, active=bool(param.value))
        to_value = to_widget = bool
    attr = "active" if param.kind == "bool" else "value"
    syncing = [False]

    def on_widget(_attr: str, _old: Any, new: Any) -> None:
        if syncing[0]:
            return
        try:
            param.value = to_value(new)
        except ConfigError:
            on_param(param, None, param.value)

    def on_param(_param: Param, _old: Any, new: Any) -> None:
        syncing[0] = True
        try:
            setattr(widget, attr, to_widget(new))
        finally:
            syncing[0] = False

    widget.on_change(attr, on_widget)
    param.watch(on_param)
    if param.doc:
        widget.description = param.doc
    return widget


def _status_html(status: Any) -> str:
    return str(status.html(status.snapshot()))


def layout(board: Board) -> tuple[Any, Callable[[], None]]:
    """The Bokeh layout of ``board`` and a function that refreshes its status lines."""
    from bokeh.layouts import column, gridplot, row
    from bokeh.models.widgets import Div

    controls: list[Any] = [param_widget(p) for p in board.params]
    divs = [Div(text=_status_html(s), sizing_mode="stretch_width") for s in board.statuses]
    roots = [v.root for v in board.views]
    timed: list[Any] = [v for v in board.views if getattr(v, "time_axis", False)]
    if len(timed) > 1:
        shared = timed[0].figure.x_range
        for view in timed[1:]:
            view.figure.x_range = shared
    children: list[Any] = []
    if controls:
        children.append(row(*controls, sizing_mode="stretch_width"))
    children.extend(divs)
    if roots:
        children.append(gridplot(roots, ncols=board.ncols, sizing_mode="stretch_width",
                                 merge_tools=False) if len(roots) > 1 else roots[0])

    def refresh() -> None:
        for div, status in zip(divs, board.statuses, strict=True):
            div.text = _status_html(status)

    return column(*children, sizing_mode="stretch_width"), refresh


def serve(doc: Any, build: Callable[[], tuple[Pipeline, Board]], *, title: str = "rtnb") -> None:
    """Build the pipeline for this session, show its board in ``doc`` and start the source."""
    pipeline, board = build()
    root, refresh_status = layout(board)
    doc.title = title
    doc.add_root(root)
    scheduler = _DocumentScheduler(f"app:{pipeline.name}")
    for view in board.views:
        view.schedule_with(scheduler)
    period_ms = max(20, int(1000 * min((v.period for v in board.views), default=0.1)))
    doc.add_periodic_callback(scheduler.tick, period_ms)
    doc.add_periodic_callback(refresh_status, 1000)

    def start() -> None:
        pipeline.start()

    def stop(_context: Any) -> None:
        scheduler.alive = False
        with contextlib.suppress(Exception):
            pipeline.stop()

    doc.add_next_tick_callback(start)
    doc.on_session_destroyed(stop)
