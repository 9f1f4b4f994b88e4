"""One snapshot of a pipeline's counters and latencies, read by every consumer.

The status widget (:class:`rtnb.viz.Status`) and the exported script's Prometheus endpoint
both read :func:`snapshot`, so a figure means the same everywhere. Rates are not part of a
snapshot: a reader derives them from two snapshots (the widget over its last 5 s,
Prometheus with ``rate()``).

Examples
--------
>>> import pandas as pd, rtnb
>>> sdf = rtnb.StreamingFrame(pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
...                                         "x": pd.Series([], dtype=float)}), time="t")
>>> agg = sdf.window(rtnb.tumbling("10s")).agg(n=("x", "count"))
>>> sdf.emit(pd.DataFrame({"t": pd.to_datetime(["2026-01-01 00:00:30", None]), "x": 1.0}))
>>> sdf.emit(pd.DataFrame({"t": pd.to_datetime(["2026-01-01 00:00:01"]), "x": 1.0}))
>>> snap = snapshot(sdf.graph)
>>> snap.events_in, snap.late, snap.dead_letters, snap.watermark
(2, 1, 1, Timestamp('2026-01-01 00:00:30'))
>>> snap.nodes["frame.window"].events
2
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from rtnb.graph import Graph

__all__ = ["NodeCounts", "Snapshot", "snapshot"]


@dataclass(frozen=True)
class NodeCounts:
    """One node's counters (see ``StreamingFrame.counters``)."""

    batches: int
    events: int
    late: int
    dead_letters: int
    recomputes: int


@dataclass(frozen=True)
class Snapshot:
    """What a pipeline has done so far, and how it is doing now."""

    state: str
    #: Why the source failed (``"SourceError: ..."``) when ``state`` is ``failed``.
    error: str | None
    events_in: int
    late: int
    dead_letters: int
    #: The lowest watermark of the window and rolling nodes (``None`` before any event).
    watermark: pd.Timestamp | None
    #: Event time the source has reached (wall clock for live feeds, a replay's position).
    source_clock: pd.Timestamp | None
    latency_p50_s: float | None
    latency_p99_s: float | None
    rows_to_views: int
    view_updates: int
    view_queue_rows: int
    whatif_rows: int
    whatif_fill: float
    #: The source's own counters (``None`` for replays and ``emit()``): messages, bytes,
    #: reconnects, dropped, lag, dead letters ...
    source: Any
    source_buffer_fill: float
    nodes: dict[str, NodeCounts] = field(default_factory=dict)
    #: Per sink name: its stats object (delivered, undeliverable, spooled rows ...).
    sinks: dict[str, Any] = field(default_factory=dict)
    #: A backfilling source's phase (``"history"`` / ``"live"``; ``None``: not one), the
    #: share of its history read (0..1) and the seconds left at its rate so far.
    phase: str | None = None
    backfill: float | None = None
    backfill_eta_s: float | None = None


def snapshot(graph: Graph, *, latencies: int = 200) -> Snapshot:
    """Read every counter of ``graph`` once (latency percentiles over the last updates)."""
    nodes = graph.nodes
    root = graph.root
    source = graph.source
    recent = list(graph.latencies)[-latencies:]
    marks = [w for n in graph.stateful()
             if (w := n.watermark) is not None and w < pd.Timestamp.max]
    retained = [r for n in graph.stateful() if (r := n.retained) is not None]
    clock_of = getattr(source, "event_clock", None)
    clock = clock_of() if clock_of is not None else None
    if clock is None and source is not None and graph.task is not None:
        clock = pd.Timestamp.now("UTC").tz_localize(None)
    views = graph.views
    error = graph.error
    backfill = getattr(source, "backfill", None)  # a hybrid source (rtnb.sources.hybrid)
    share, eta = backfill() if callable(backfill) else (None, None)
    return Snapshot(
        state=graph.state,
        error=None if error is None else f"{type(error).__name__}: {error}",
        events_in=root.counters.events,
        late=sum(n.counters.late for n in nodes),
        dead_letters=sum(n.counters.dead_letters for n in nodes),
        watermark=min(marks) if marks else None,
        source_clock=clock,
        latency_p50_s=float(np.percentile(recent, 50)) if recent else None,
        latency_p99_s=float(np.percentile(recent, 99)) if recent else None,
        rows_to_views=sum(v.rows_sent for v in views),
        view_updates=sum(v.updates for v in views),
        view_queue_rows=sum(v.pending_rows for v in views),
        whatif_rows=sum(r.rows for r in retained),
        whatif_fill=max((r.fill for r in retained), default=0.0),
        source=getattr(source, "stats", None),
        source_buffer_fill=float(getattr(getattr(source, "buffer", None), "fill", 0.0)),
        nodes={n.name: NodeCounts(**dataclasses.asdict(n.counters)) for n in nodes},
        sinks={str(getattr(s, "name", type(s).__name__)): s.stats for s in graph.sinks},
        phase=getattr(source, "phase", None) if callable(backfill) else None,
        backfill=share,
        backfill_eta_s=eta,
    )
