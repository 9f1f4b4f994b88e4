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

import asyncio
import contextlib
import gc
import logging
import sys
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rtnb.errors import ConfigError
from rtnb.params import Param
from rtnb.viz import Scheduler

if TYPE_CHECKING:
    from rtnb.pipeline import Pipeline

__all__ = ["Board", "param_widget", "serve"]

log = logging.getLogger(__name__)


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


def param_widget(param: Param, *, unwatch: list[Callable[[], None]] | None = None) -> Any:
    """A Bokeh widget that edits ``param`` (a refused value puts the widget back).

    The function that stops the widget following ``param`` is appended to ``unwatch``.
    """
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
    stop_watching = param.watch(on_param)
    if unwatch is not None:
        unwatch.append(stop_watching)
    if param.doc:
        widget.description = param.doc
    return widget


def _status_html(status: Any) -> str:
    return str(status.html(status.snapshot()))


def layout(board: Board, unwatch: list[Callable[[], None]] | None = None,
           ) -> tuple[Any, Callable[[], None]]:
    """The Bokeh layout of ``board`` and a function that refreshes its status lines.

    The functions that stop its widgets following their Params are appended to ``unwatch``.
    """
    from bokeh.layouts import column, gridplot, row
    from bokeh.models.widgets import Div

    controls: list[Any] = [param_widget(p, unwatch=unwatch) for p in board.params]
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


class _Session:
    """What one browser session built, and how it is let go when the session ends.

    Bokeh keeps a session whose page went away for the server's unused-session lifetime
    (``rtnb serve`` makes it short), then destroys its document and calls :meth:`end`. Until
    then the views are not updated and the source is paused: nothing is sent to a page that
    is gone (while the first page loads, the document is kept up to date). :meth:`end`
    stops the source, closes the views and status lines, unwatches the Params and drops
    every reference, so that the pipeline, its frames and the Bokeh models are freed
    (checked by ``tests/browser/test_dashboard_app_sessions.py``).
    """

    def __init__(self, doc: Any, pipeline: Pipeline, board: Board,
                 scheduler: _DocumentScheduler, unwatch: list[Callable[[], None]],
                 refresh_status: Callable[[], None]) -> None:
        # The document's callbacks hold this object (Bokeh may hold them a little after the
        # session ended): all it built is reached from here, and end() lets go of it.
        self.doc: Any = doc
        self.pipeline: Pipeline | None = pipeline
        self.board: Board | None = board
        self.refresh_status: Callable[[], None] | None = refresh_status
        self.scheduler = scheduler
        self.unwatch = unwatch
        self.held = False  # the source was paused here because its page went away
        self.seen = False  # a page has connected (before that the source runs: page loading)
        self.task: asyncio.Task[None] | None = None

    def connected(self) -> bool:
        """Whether a page is connected to the session (before the first one: no)."""
        context = self.doc.session_context if self.doc is not None else None
        # Bokeh's ServerSession (None while the app builds the document): its connection
        # count has no public accessor on the session context
        session = getattr(context, "_session", None)
        return session is not None and not session.destroyed and session.connection_count > 0

    def start(self) -> None:
        if self.pipeline is not None:
            self.task = self.pipeline.start()

    def page_here(self) -> bool:
        """Whether a page is connected or still loading; hold the source once it went away.

        Before the first page connects, the document is built up with no one to send it to
        (the page gets it whole when it connects).
        """
        pipeline = self.pipeline
        if pipeline is None:
            return False
        if not self.connected():
            if not self.seen:
                return True
            if not self.held and pipeline.root.running and not pipeline.root.paused:
                pipeline.root.pause()
                self.held = True
            return False
        self.seen = True
        if self.held:
            self.held = False
            pipeline.root.resume()
        return True

    def tick(self) -> None:
        """Update the views, unless their page went away."""
        if self.page_here():
            self.scheduler.tick()

    def refresh(self) -> None:
        """Refresh the status lines, unless their page went away."""
        if self.page_here() and self.refresh_status is not None:
            self.refresh_status()

    def end(self, session_context: Any) -> None:
        """Stop the source, close the views, unwatch the Params and drop every reference."""
        pipeline, board = self.pipeline, self.board
        self.pipeline = self.board = self.doc = self.refresh_status = None
        self.scheduler.alive = False
        for unwatch in self.unwatch:
            unwatch()
        self.unwatch.clear()
        if board is not None:
            for view in board.views:
                with contextlib.suppress(Exception):
                    view.close()
            for status in board.statuses:
                with contextlib.suppress(Exception):
                    status.close()
        self.scheduler.views.clear()
        task = self.task
        self.task = None
        if pipeline is not None:
            with contextlib.suppress(Exception):
                pipeline.root.resume()  # a paused source would never see the stop
                pipeline.stop()
        name = pipeline.name if pipeline is not None else "?"
        if task is not None and not task.done():
            # the source stops after its current batch; its frames can go once it has
            task.add_done_callback(lambda _task: _released(name))
        else:
            _released(name)


def _released(name: str) -> None:
    """Collect what a finished session built and give its memory back to the system.

    Its frames and Bokeh models form reference cycles: collected now, not at some later
    collection. The replayed data went through Arrow, whose memory pool keeps freed blocks
    for reuse; they are returned (``release_unused``), else each session would leave its
    data's worth of memory in the pool.
    """
    gc.collect()
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        with contextlib.suppress(Exception):
            pyarrow.default_memory_pool().release_unused()
    log.info("rtnb: session of pipeline %r ended: source stopped, views closed", name)


def serve(doc: Any, build: Callable[[], tuple[Pipeline, Board]], *, title: str = "rtnb") -> None:
    """Build the pipeline for this session, show its board in ``doc`` and start the source.

    The views are updated by one periodic document callback, skipped while no page is
    connected; the session's end (:meth:`_Session.end`) stops and releases everything.
    """
    _log_like_bokeh()
    pipeline, board = build()
    unwatch: list[Callable[[], None]] = []
    root, refresh_status = layout(board, unwatch)
    # say when the session's source frame (it holds the data) and layout are garbage
    weakref.finalize(pipeline.root, log.info, "rtnb: freed the frames of session pipeline %r",
                     pipeline.name)
    weakref.finalize(root, log.info, "rtnb: freed the Bokeh models of session pipeline %r",
                     pipeline.name)
    doc.title = title
    doc.add_root(root)
    _quiet_validation(doc, board)
    scheduler = _DocumentScheduler(f"app:{pipeline.name}")
    for view in board.views:
        view.schedule_with(scheduler)
    session = _Session(doc, pipeline, board, scheduler, unwatch, refresh_status)
    period_ms = max(20, int(1000 * min((v.period for v in board.views), default=0.1)))
    doc.add_periodic_callback(session.tick, period_ms)
    doc.add_periodic_callback(session.refresh, 1000)
    doc.add_next_tick_callback(session.start)
    doc.on_session_destroyed(session.end)


def _log_like_bokeh() -> None:
    """Log like ``bokeh serve``: this module's session lines at its level, no closed-page noise.

    Bokeh sends a document change as one websocket message per event and awaits them one by
    one; a page that closes while a tick's messages are on their way makes Bokeh warn
    "Failed sending message as connection was closed" once per message left (20 to 30 for a
    dashboard). Nothing is lost (the page is gone) and Bokeh cleans up the connection
    itself; after that the session sends nothing more (:meth:`_Session.tick`). Those lines
    are logged at debug level instead.
    """
    if log.level == logging.NOTSET:
        log.setLevel(logging.getLogger("bokeh").getEffectiveLevel())
    ws_log = logging.getLogger("bokeh.server.views.ws")
    if not any(isinstance(f, _ClosedPageFilter) for f in ws_log.filters):
        ws_log.addFilter(_ClosedPageFilter(ws_log))


class _ClosedPageFilter(logging.Filter):
    """Demote Bokeh's warning for a message sent to a page that has just closed to debug."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and record.getMessage() == _CLOSED_PAGE:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self.logger.isEnabledFor(logging.DEBUG)
        return True


_CLOSED_PAGE = "Failed sending message as connection was closed"


def _quiet_validation(doc: Any, board: Board) -> None:
    """Validate ``doc`` without MISSING_RENDERERS for views that draw once data arrive.

    Bokeh validates each session's document right after the app built it, before any row
    arrived: a keyed line plot (a line per key, added as keys appear) has no renderer yet
    and would log ``W-1000 (MISSING_RENDERERS)`` for every browser session. That warning is
    silenced for this document's validation only, and only when every plot of the document
    is a view's figure (a Board holds nothing else); other warnings are logged as before.
    """
    from bokeh.core.validation import check
    from bokeh.core.validation.warnings import MISSING_RENDERERS
    from bokeh.models import Plot

    figures = {id(f) for f in (getattr(v, "figure", None) for v in board.views) if f is not None}
    validate = doc.validate

    def validate_quietly() -> None:
        plots = [m for m in doc.models if isinstance(m, Plot)]
        if check.is_silenced(MISSING_RENDERERS) or any(id(p) not in figures for p in plots):
            validate()
            return
        with check.silenced(MISSING_RENDERERS):
            validate()

    doc.validate = validate_quietly
