"""A live status widget for a pipeline: rates, latency, watermark lag, losses; pause/stop."""

from __future__ import annotations

import asyncio
import html
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from rtnb import _cells, metrics
from rtnb.errors import ConfigError

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame
    from rtnb.pipeline import Pipeline

__all__ = ["Status"]

_RATE_WINDOW_S = 5.0


_STATE_WORDS = {"idle": "Not started", "running": "Running", "paused": "Paused",
                "stopping": "Stopping", "stopped": "Stopped", "finished": "Finished",
                "failed": "Failed"}


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}/s" if x >= 10 else f"{x:,.1f}/s"


def _fmt_lag(seconds: float) -> str:
    """A lag for people: 850 ms, 12.3 s, 4.5 min, 2.1 h.

    Examples
    --------
    >>> [_fmt_lag(x) for x in (0.85, 12.34, 270.0, 7560.0)]
    ['850 ms', '12.3 s', '4.5 min', '2.1 h']
    """
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _fmt_eta(seconds: float) -> str:
    """Seconds left, rounded for people: 40 s, 4.5 min, 2.1 h.

    Examples
    --------
    >>> [_fmt_eta(x) for x in (0.4, 39.6, 270.0, 7560.0)]
    ['0 s', '40 s', '4.5 min', '2.1 h']
    """
    return f"{seconds:.0f} s" if seconds < 60 else _fmt_lag(seconds)


def _phase_text(snap: dict[str, Any]) -> str | None:
    """A backfilling source's phase: ``backfilling 63 % (ETA 40 s)``, then ``live``.

    Examples
    --------
    >>> _phase_text({"phase": "history", "progress": 0.634, "eta_s": 40.2})
    'backfilling 63 % (ETA 40 s)'
    >>> _phase_text({"phase": "history", "progress": None, "eta_s": None})
    'backfilling'
    >>> _phase_text({"phase": "live", "progress": None, "eta_s": None})
    'live'
    >>> _phase_text({"phase": None}) is None
    True
    """
    phase = snap.get("phase")
    if phase is None:
        return None
    if phase != "history":
        return str(phase)
    progress, eta = snap.get("progress"), snap.get("eta_s")
    if progress is None:
        return "backfilling"
    return f"backfilling {progress * 100:.0f} %" + ("" if eta is None else
                                                    f" (ETA {_fmt_eta(eta)})")


def _fmt_seconds(s: float | None) -> str:
    if s is None or not np.isfinite(s):
        return "-"
    return f"{s * 1e3:,.0f} ms" if s < 10 else f"{s:,.1f} s"


class _Markup(str):
    """A status cell that is HTML already (a link), not text to escape."""

    __slots__ = ()


def _link(url: str, text: str) -> str:
    """``url`` as a link opening in a new tab; anything but http(s) stays plain text.

    Examples
    --------
    >>> _link("http://127.0.0.1:8787/status", "Dask dashboard")
    '<a href="http://127.0.0.1:8787/status" target="_blank" rel="noopener">Dask dashboard</a>'
    >>> _link("javascript:alert(1)", "x")
    'javascript:alert(1)'
    """
    if not url.startswith(("http://", "https://")):
        return html.escape(url)
    return (f'<a href="{html.escape(url, quote=True)}" target="_blank" rel="noopener">'
            f"{html.escape(text)}</a>")


def _partitions(lag: dict[str, int] | None, worker: dict[str, str] | None,
                rate: dict[str, float] | None = None) -> str:
    """Each partition's rate (messages/s), its lag and, on a cluster, the worker reading it.

    Examples
    --------
    >>> _partitions({"m:0": 1200, "m:1": 0}, {"m:0": "tcp://127.0.0.1:4001",
    ...                                       "m:1": "tcp://127.0.0.1:4002"},
    ...             {"m:0": 2500.0, "m:1": 0.0})
    'm:0 2,500/s lag 1,200 on 127.0.0.1:4001 · m:1 0.0/s lag 0 on 127.0.0.1:4002'
    >>> _partitions({"m:0": 5}, None)
    'm:0 lag 5'
    >>> _partitions(None, {"m:0": "tcp://127.0.0.1:4001"})
    'm:0 lag - on 127.0.0.1:4001'
    """
    lag, worker, rate = lag or {}, worker or {}, rate or {}
    parts = []
    for p in sorted({*lag, *worker, *rate}):
        n = lag.get(p)
        text = f"{p} " + (f"{_fmt_rate(rate[p])} " if p in rate else "")
        text += "lag " + ("-" if n is None else f"{n:,}")
        if p in worker:
            text += f" on {worker[p].removeprefix('tcp://')}"
        parts.append(text)
    return " · ".join(parts)


def _page_lag(views: list[Any]) -> dict[str, Any]:
    """How far the pages showing *views* are behind (the worst document); None: no page acks.

    ``page_lag_updates``: numbered updates sent and not acknowledged; ``page_lag_messages``:
    the PATCH-DOCs in them; ``page_held_updates``: updates held back because the page was
    behind; ``page_ack_timeouts``: times the acknowledgements stopped while updates were held.
    """
    models = [m for m in {id(v.model): v.model for v in views if v.model is not None}.values()]
    lags = [lag for m in models if (lag := m.page_lag) is not None]
    return {"page_lag_updates": max(lag[0] for lag in lags) if lags else None,
            "page_lag_messages": max(lag[1] for lag in lags) if lags else None,
            "page_held_updates": sum(m.held_ticks for m in models),
            "page_ack_timeouts": sum(m.ack_timeouts for m in models)}


class Status:
    """What a running pipeline is doing, refreshed about once a second, with pause/stop buttons.

    Shows events/s into the root frame and rows/s out to the views, the latency from a batch
    entering the pipeline to a view sending it (p50/p99 of the last updates), the watermark
    and how far it trails the source's clock (event time the source has reached: wall clock
    for live feeds, the replay position for replays), late and dead-lettered rows, and the
    fill of the views' queues and of the what-if buffers; for message sources also bytes/s,
    the source buffer's fill, reconnects, dropped messages and the broker's lag where it
    reports one; for a partitioned source each partition's lag and, when the pipeline runs
    on a Dask cluster, the worker reading it and a link to the Dask dashboard; once a page
    acknowledges the plots' updates, how many updates (and Bokeh messages) the page is
    behind; for a :func:`~rtnb.sources.hybrid` source its phase, ``backfilling 63 % (ETA
    40 s)`` while it reads its history, then ``live``. :meth:`snapshot` returns the same
    figures as a dict.

    Parameters
    ----------
    frame
        A frame of the pipeline (its root's figures are shown).
    interval
        Seconds between refreshes of the widget.
    pipeline
        The :class:`~rtnb.Pipeline` of ``frame``, if it runs on a cluster
        (``pipeline.start(cluster=...)``): its runner's Dask dashboard link is shown.
        Without it the link comes from the frame's graph (``graph.runner``), the same
        runner once the pipeline started.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> sdf = rtnb.sources.replay(pd.DataFrame({"timestamp": pd.date_range(
    ...     "2026-01-01", periods=5, freq="s"), "x": 1.0}))
    >>> status = sdf.status()
    >>> sdf.run()
    >>> snap = status.snapshot()
    >>> snap["state"], snap["events_in"]
    ('finished', 5)
    >>> status.close()
    """

    def __init__(self, frame: StreamingFrame, *, interval: float = 1.0,
                 pipeline: Pipeline | None = None) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            msg = f"status `interval` must be a positive number of seconds; got {interval!r}"
            raise ConfigError(msg)
        if pipeline is not None and getattr(pipeline, "root", None) is not frame.root:
            msg = (f"status `pipeline` must be the pipeline of frame {frame.name!r} (its "
                   f"source); got {pipeline!r:.80}")
            raise ConfigError(msg)
        self.frame = frame
        self.root = frame.root
        self.interval = float(interval)
        self.pipeline = pipeline
        self._samples: deque[tuple[float, int, int]] = deque()
        self._bytes: deque[tuple[float, int]] = deque()
        self._partition_messages: deque[tuple[float, dict[str, int]]] = deque()
        self._widget: Any = None
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._task = loop.create_task(self._refresh_loop(), name=f"rtnb-status:{frame.name}")
        _cells.track(self)

    # -- figures ---------------------------------------------------------------------------
    def _state(self) -> str:
        state = self.root.graph.state
        return "not started" if state == "idle" else state

    def _progress(self, rate: float) -> tuple[float | None, float | None]:
        """A finite replay's share done and the seconds left at ``rate`` (else ``None``)."""
        replay = self.root.graph.source
        position = getattr(replay, "position", None)
        data = getattr(replay, "data", None)
        if position is None or data is None:
            return None, None
        end = getattr(replay, "offset", 0) + len(data)
        if end <= 0:
            return None, None
        done = min(1.0, position / end)
        left = (end - position) / rate if rate > 0 and done < 1 else None
        return done, left

    def _dashboard_link(self) -> str | None:
        """The Dask dashboard of the cluster the pipeline runs on (``None``: not on one)."""
        runner = self.frame.root.graph.runner if self.pipeline is None else \
            self.pipeline.runner
        link = getattr(runner, "dashboard_link", None)
        return link if isinstance(link, str) and link else None

    def snapshot(self) -> dict[str, Any]:
        """The figures the widget shows, as a dict (rates over the last 5 s)."""
        snap = metrics.snapshot(self.root.graph)
        now = time.monotonic()
        events_in = snap.events_in
        rows_out = snap.rows_to_views
        samples = self._samples
        samples.append((now, events_in, rows_out))
        while len(samples) > 2 and now - samples[1][0] >= _RATE_WINDOW_S:
            samples.popleft()
        t0, in0, out0 = samples[0]
        span = now - t0
        rate_in = (events_in - in0) / span if span > 0 else 0.0
        rate_out = (rows_out - out0) / span if span > 0 else 0.0
        state = self._state()
        watermark, clock = snap.watermark, snap.source_clock
        lag = None
        if watermark is not None and clock is not None and state in ("running", "paused"):
            lag = max(0.0, (clock - watermark).total_seconds())
        source = snap.source
        bytes_in = source.bytes if source is not None else 0
        self._bytes.append((now, bytes_in))
        while len(self._bytes) > 2 and now - self._bytes[1][0] >= _RATE_WINDOW_S:
            self._bytes.popleft()
        b_span = now - self._bytes[0][0]
        by_partition = getattr(source, "partition_messages", None) if source is not None \
            else None
        partition_rate = None
        if by_partition:
            self._partition_messages.append((now, dict(by_partition)))
            while len(self._partition_messages) > 2 and \
                    now - self._partition_messages[1][0] >= _RATE_WINDOW_S:
                self._partition_messages.popleft()
            then, before = self._partition_messages[0]
            span = now - then
            partition_rate = {k: (v - before.get(k, 0)) / span if span > 0 else 0.0
                              for k, v in by_partition.items()}
        graph = self.root.graph
        progress, eta = self._progress(rate_in)
        if snap.phase is not None:  # a hybrid source: its history's share, not a replay's
            progress, eta = (snap.backfill, snap.backfill_eta_s) if snap.phase == "history" \
                else (None, None)
        return {
            "phase": snap.phase,
            "dashboard_link": self._dashboard_link(),
            "progress": progress,
            "eta_s": eta,
            "source_bytes_per_s": (bytes_in - self._bytes[0][1]) / b_span if b_span > 0 else 0.0,
            "source_reconnects": source.reconnects if source is not None else 0,
            "source_dropped": source.dropped if source is not None else 0,
            "source_lag": source.lag if source is not None else None,
            "source_partition_lag": getattr(source, "partition_lag", None)
            if source is not None else None,
            "source_partition_worker": getattr(source, "partition_worker", None)
            if source is not None else None,
            "source_partition_rate": partition_rate,
            "source_buffer_fill": snap.source_buffer_fill,
            "state": state,
            "error": snap.error,
            "events_in": events_in,
            "events_in_per_s": rate_in,
            "rows_out": rows_out,
            "rows_out_per_s": rate_out,
            "latency_p50_s": snap.latency_p50_s,
            "latency_p99_s": snap.latency_p99_s,
            "watermark": watermark,
            "watermark_lag_s": lag,
            "late": snap.late,
            "dead_letters": snap.dead_letters,
            "view_queue_rows": snap.view_queue_rows,
            "whatif_rows": snap.whatif_rows,
            "whatif_fill": snap.whatif_fill,
            "updates": snap.view_updates,
            **_page_lag(list(graph.views)),
        }

    def html(self, snap: dict[str, Any]) -> str:
        """The status table for ``snap`` (a :meth:`snapshot`) as HTML (also the served app's)."""
        wm = snap["watermark"]
        lag = snap["watermark_lag_s"]
        cells = [
            ("state", snap["state"] if snap["error"] is None
             else f"{snap['state']}: {snap['error']}"),
            *([("phase", phase)] if (phase := _phase_text(snap)) is not None else []),
            ("events in", f"{snap['events_in']:,} · {_fmt_rate(snap['events_in_per_s'])}"),
            ("rows to views", f"{snap['rows_out']:,} · {_fmt_rate(snap['rows_out_per_s'])}"),
            ("latency p50 / p99", f"{_fmt_seconds(snap['latency_p50_s'])} / "
                                  f"{_fmt_seconds(snap['latency_p99_s'])}"),
            ("watermark", "-" if wm is None else f"{wm:%Y-%m-%d %H:%M:%S}"
             + ("" if lag is None else f" (lag {_fmt_lag(lag)})")),
            ("late / dead letters", f"{snap['late']:,} / {snap['dead_letters']:,}"),
            *([("progress", f"{snap['progress']:.0%}" + (
                "" if snap.get("eta_s") is None else f" · {_fmt_lag(snap['eta_s'])} left"))]
              if snap.get("progress") is not None else []),
            ("buffers", f"views {snap['view_queue_rows']:,} rows · what-if "
                        f"{snap['whatif_rows']:,} rows ({snap['whatif_fill']:.0%})"),
        ]
        if snap["page_lag_updates"] is not None or snap["page_ack_timeouts"]:
            lag_text = "-" if snap["page_lag_updates"] is None else \
                f"{snap['page_lag_updates']:,} updates · {snap['page_lag_messages']:,} messages"
            cells.append(("page lag", f"{lag_text} · held {snap['page_held_updates']:,} · "
                                      f"ack timeouts {snap['page_ack_timeouts']}"))
        if getattr(self.root.source, "stats", None) is not None:
            lag = snap["source_lag"]
            cells.append(("source", f"{snap['source_bytes_per_s'] / 1e3:,.1f} kB/s · buffer "
                                    f"{snap['source_buffer_fill']:.0%} · reconnects "
                                    f"{snap['source_reconnects']} · dropped "
                                    f"{snap['source_dropped']:,}"
                                    + ("" if lag is None else f" · broker lag {lag:,}")))
            by_partition = snap.get("source_partition_lag")
            workers = snap.get("source_partition_worker")
            if by_partition or workers or snap.get("source_partition_rate"):
                cells.append(("partitions", _partitions(by_partition, workers,
                                                        snap.get("source_partition_rate"))))
        link = snap.get("dashboard_link")
        if link:
            cells.append(("dashboard", _Markup(_link(link, f"Dask dashboard ({link})"))))
        body = "".join(
            f'<tr><th style="text-align:left;padding-right:1em">{html.escape(k)}</th>'
            f'<td class="rtnb-status-{k.split()[0]}">'
            f"{v if isinstance(v, _Markup) else html.escape(str(v))}</td></tr>"
            for k, v in cells)
        page_lag = snap["page_lag_messages"]
        return (f'<div class="rtnb-status-summary">{html.escape(self.summary(snap))}</div>'
                '<details><summary style="cursor:pointer;font-size:90%">details</summary>'
                f'<table class="rtnb-status" data-events-in="{snap["events_in"]}" '
                f'data-updates="{snap["updates"]}" data-state="{snap["state"]}" '
                f'data-page-lag="{"" if page_lag is None else page_lag}">'
                f"{body}</table></details>")

    @staticmethod
    def summary(snap: dict[str, Any]) -> str:
        """The status in one plain sentence (the table with every figure is one click away).

        Examples
        --------
        >>> Status.summary({"state": "running", "error": None, "events_in": 12000,
        ...     "events_in_per_s": 1500.0, "latency_p50_s": 0.25, "late": 0, "dead_letters": 2,
        ...     "page_lag_updates": 0})
        'Running: 12,000 events so far, 1,500/s; plots follow 250 ms behind the data; no late rows; 2 records could not be read (dead letters).'
        """  # noqa: E501
        state = snap["state"]
        said = _STATE_WORDS.get(state, state[:1].upper() + state[1:])
        if snap.get("error") is not None:
            return f"{said}: {snap['error']}"
        live = state in ("running", "paused")
        phase = _phase_text(snap) if live else None
        parts = [] if phase is None else [phase]
        parts += [f"{snap['events_in']:,} events" + (" so far" if live else "")
                 + (f", {_fmt_rate(snap['events_in_per_s'])}" if state == "running" else "")]
        p50 = snap.get("latency_p50_s")
        if p50 is not None and np.isfinite(p50) and state == "running":
            parts.append(f"plots follow {_fmt_lag(p50)} behind the data")
        progress = snap.get("progress")
        if progress is not None and live and phase is None:
            eta = snap.get("eta_s")
            parts.append(f"{progress:.0%} of the replay"
                         + ("" if eta is None else f" (about {_fmt_lag(eta)} left)"))
        late = snap.get("late", 0)
        parts.append("no late rows" if not late else f"{late:,} rows came too late")
        dead = snap.get("dead_letters", 0)
        if dead:
            parts.append(f"{dead:,} records could not be read (dead letters)")
        behind = snap.get("page_lag_updates")
        if behind and live:  # once the stream ended, the page catches up with the last ones
            parts.append(f"the page is {behind:,} updates behind")
        return f"{said}: " + "; ".join(parts) + "."

    # -- widget ----------------------------------------------------------------------------
    @property
    def widget(self) -> Any:
        """The ipywidgets box: the figures and pause / resume / stop buttons."""
        if self._widget is None:
            import ipywidgets as widgets

            self._html_widget = widgets.HTML(self.html(self.snapshot()))
            self._pause = widgets.Button(description="pause", icon="pause",
                                         layout=widgets.Layout(width="90px"))
            self._resume = widgets.Button(description="resume", icon="play",
                                          layout=widgets.Layout(width="90px"))
            self._stop = widgets.Button(description="stop", icon="stop",
                                        button_style="danger",
                                        layout=widgets.Layout(width="90px"))
            self._pause.on_click(lambda _: self._act(self.root.pause))
            self._resume.on_click(lambda _: self._act(self.root.resume))
            self._stop.on_click(lambda _: self._act(self.root.stop))
            self._sync_buttons()
            buttons = widgets.HBox([self._pause, self._resume, self._stop])
            self._widget = widgets.VBox([self._html_widget, buttons],
                                        layout=widgets.Layout(min_width="360px"))
            self._widget.add_class("rtnb-status-box")
        return self._widget

    def _act(self, action: Callable[[], None]) -> None:
        """A button's action, shown at once (not at the next refresh)."""
        action()
        self.refresh()

    def _sync_buttons(self) -> None:
        state = self._state()
        self._pause.disabled = state != "running"
        self._resume.disabled = state != "paused"
        self._stop.disabled = state not in ("running", "paused")

    def refresh(self) -> None:
        """Recompute the figures and update the widget now."""
        if self._widget is None or self._closed:
            return
        text = self.html(self.snapshot())
        if text != self._html_widget.value:
            self._html_widget.value = text
        self._sync_buttons()

    async def _refresh_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.interval)
            self.refresh()
            root = self.root
            if root.closed and not root.running and not any(
                    v.pending_rows for v in root.graph.views):
                self.refresh()
                return

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Stop refreshing and close the widget (the pipeline keeps running)."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        if self._widget is not None:
            for w in (self._html_widget, self._pause, self._resume, self._stop, self._widget):
                w.close()

    def _teardown(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Status of {self.root.name!r}: {self._state()}>"
