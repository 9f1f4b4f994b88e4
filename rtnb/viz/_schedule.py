"""One update timer for all the views drawn into one Bokeh document, with a message budget.

A dashboard's views share a :class:`Scheduler`: one task on the running loop ticks at the
fastest view's ``max_fps`` and, in each tick, flushes every view that has something to send and
whose own period has passed, inside one :meth:`BatchedBokehModel.batch` (so one tick is one
numbered update for the page to acknowledge, and one PATCH-DOC once the page reported its
fix). While the page is too far behind (the model's ``max_unacked_updates`` numbered updates;
``max_unacked`` PATCH-DOCs while each change is its own), ticks send nothing: the views keep
merging what arrives into their pending queue (bounded by ``max_points``/``rows``) and the
next tick that may send carries all of it. A view that was never displayed, or shown alone,
has a scheduler of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

log = logging.getLogger("rtnb")

if TYPE_CHECKING:
    from rtnb.viz._bokeh import BatchedBokehModel
    from rtnb.viz.plots import View

__all__ = ["Scheduler"]

#: Slack when comparing a view's period with the time since its last update: the loop may
#: wake a timer up to its clock resolution early.
_SLACK_S = 1e-6


class Scheduler:
    """Flushes its views at most ``max_fps`` a second each, while the page keeps up.

    Without a running loop (a script, a thread) there is no timer: :meth:`poll`, called when a
    batch arrives, runs a tick.
    """

    def __init__(self, name: str, model: BatchedBokehModel | None = None) -> None:
        self.name = name
        self.model = model
        self.views: list[View] = []
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None
        self._last_tick = -float("inf")

    def add(self, view: View) -> None:
        """Schedule *view* here."""
        if view not in self.views:
            self.views.append(view)

    def discard(self, view: View) -> None:
        """Stop scheduling *view*; the timer ends with the last view."""
        if view in self.views:
            self.views.remove(view)
        if not self.views and self._task is not None:
            self._task.cancel()
            self._task = None

    @property
    def timed(self) -> bool:
        """Whether a timer task runs (or ran) on an event loop."""
        return self._task is not None

    @property
    def running(self) -> bool:
        """Whether the timer task is running now."""
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """Start the timer on the running loop if it is not running (none: no timer)."""
        if self.running or not self.views:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._task = None  # no loop (a script, a thread): poll() ticks as batches come
            return
        self._task = loop.create_task(self._run(), name=f"rtnb-views:{self.name}")

    def poll(self) -> None:
        """Without a timer: run a tick now (views whose period has not passed wait)."""
        if self._task is None:
            self.tick()

    @property
    def period(self) -> float:
        """Seconds between ticks: the period of the fastest view."""
        return min((v.period for v in self.views), default=1.0)

    def tick(self, now: float | None = None) -> int:
        """Flush every due view in one batch, if the page keeps up; return views flushed."""
        now = time.monotonic() if now is None else now
        self._last_tick = now
        due = [v for v in self.views if v.has_pending and not v.closed
               and now - v.last_flush >= v.period - _SLACK_S]
        if not due:
            return 0
        model = self.model
        if model is not None and not model.may_send(now):
            return 0
        batch = model.batch() if model is not None else contextlib.nullcontext()
        with batch:
            for view in due:
                try:
                    view._flush(now)
                except Exception as exc:  # keep the other views alive, say what failed
                    log.exception("%r failed to update: %s: %s", view, type(exc).__name__,
                                  exc)
        self.ticks += 1
        return len(due)

    async def _run(self) -> None:
        # Ticks on a fixed schedule; a tick that fell behind is skipped, not made up. After a
        # tick that sent, the next one waits a period from the end of the send, so that the
        # page never gets two updates less than a period apart (a slow flush lowers the rate
        # a little instead: 10 ticks a second become ~1 / (period + flush time)).
        loop = asyncio.get_running_loop()
        due = loop.time()
        while self.views:
            period = self.period
            # never two ticks less than a period apart (at most max_fps in any second)
            due = max(due + period, self._last_tick + period)
            await asyncio.sleep(max(0.0, due - loop.time()))
            if loop.time() - due > period:
                due = loop.time()
            try:
                if self.tick(loop.time()):
                    # the next tick a period after this one's changes left (not after it
                    # began): the sends, not only the ticks, are a period apart
                    self._last_tick = loop.time()
            except Exception as exc:  # keep the timer alive, say what failed
                log.exception("%r failed to tick: %s: %s", self, type(exc).__name__, exc)
            if all(v.closed or (v.frame.closed and not v.has_pending) for v in self.views):
                return

    def __repr__(self) -> str:
        return f"<Scheduler {self.name!r} of {len(self.views)} views>"
