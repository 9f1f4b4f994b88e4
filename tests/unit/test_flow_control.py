"""Browser -> kernel flow control: a board holds and merges its updates while the page is behind.

The page is simulated: every PATCH-DOC the board's widget sends is applied to a copy of the
page's document (as BokehJS does), and the page's acknowledgement reaches the kernel the way
jupyter_bokeh delivers it (a ``jsevent`` setting ``PageAck.applied``), with the number the
page copy last applied. Views are built without a running loop and with a ``max_fps`` so high
that every emit runs one tick of the board's scheduler.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
from bokeh.document import Document
from bokeh.models import ColumnDataSource

import rtnb
from rtnb.testing import feed
from rtnb.viz import _view as plots
from rtnb.viz._bokeh import BatchedBokehModel

EVERY_EMIT = 1e9  # max_fps: a tick per emit (the period is 1 ns)
BUDGET = 6  # PATCH-DOCs the page may have unacknowledged


@pytest.fixture(scope="module")
def metrics() -> pd.DataFrame:
    """The first 30 minutes of the bundled data: 12 hosts, 1 s apart."""
    df = rtnb.datasets.metrics()
    return df[df["timestamp"] < df["timestamp"].iloc[0] + pd.Timedelta("30min")].reset_index(
        drop=True)


class Page:
    """A copy of the page's document, patched by what the widget sends; acknowledges on call."""

    def __init__(self, widget: BatchedBokehModel, monkeypatch: pytest.MonkeyPatch) -> None:
        bundle = widget.render_bundle
        self.doc = Document.from_json(bundle["docs_json"][next(iter(bundle["docs_json"]))])
        self.widget = widget
        self.patches = self.comm_messages = 0
        monkeypatch.setattr(widget, "send", self._receive)

    def _receive(self, content: dict[str, Any], buffers: Any = None) -> None:
        self.comm_messages += 1
        payload = content["fragments"][2] if content["msg"] == "rtnb_patch" else \
            content.get("payload", "")
        if payload.startswith('{"events"'):
            self.doc.apply_json_patch(json.loads(payload), setter="page")
            self.patches += 1

    @property
    def applied(self) -> int:
        """The latest update number the page copy has applied."""
        return int(self.doc.get_model_by_id(self.widget.ack.id).sent)

    def acknowledge(self) -> None:
        """Send the kernel what the page's CustomJS would: ``applied = sent``."""
        event = {"event": "jsevent", "kind": "ModelChanged",
                 "model": {"id": self.widget.ack.id}, "attr": "applied", "new": self.applied}
        self.widget._sync_model(self.widget, event, [])

    def report_fix(self, how: str = "proto") -> None:
        """What the page's script sends once it mended jupyter_bokeh's front end."""
        event = {"event": "jsevent", "kind": "ModelChanged",
                 "model": {"id": self.widget.ack.id}, "attr": "fixed", "new": how}
        self.widget._sync_model(self.widget, event, [])

    def sources(self) -> dict[str, dict[str, list[Any]]]:
        """Every named source of the page copy: column -> values."""
        return sources_of(self.doc)


def sources_of(doc: Document | None) -> dict[str, dict[str, list[Any]]]:
    """Every named source: column -> values (times as ms since the epoch, as BokehJS has them;
    NaN as None, so that lists compare equal)."""
    assert doc is not None
    out = {}
    for model in doc.models:
        if isinstance(model, ColumnDataSource) and model.name:
            columns = {}
            for col, values in model.data.items():
                array = np.asarray(values)
                if array.dtype.kind == "M":
                    array = array.astype("datetime64[ms]").astype(np.float64)
                columns[col] = [None if isinstance(v, float) and np.isnan(v) else v
                                for v in array.tolist()]
            out[f"{model.name} {model.id}"] = columns
    return out


def kernel_sources(widget: BatchedBokehModel) -> dict[str, dict[str, list[Any]]]:
    return sources_of(widget._document)


def build_board(metrics: pd.DataFrame, **model: Any) -> tuple[Any, list[Any], rtnb.Dashboard]:
    """The kinds of view whose held updates are merged exactly, in one board."""
    sdf = rtnb.StreamingFrame(metrics.iloc[:0], time="timestamp", name="m")
    per_host = sdf.window(rtnb.tumbling("1min"), by="host", emit="update").agg(
        cpu=("cpu", "mean"))
    views = [
        sdf.plot.line(x="timestamp", y="cpu", by="host", max_points=40, max_fps=EVERY_EMIT),
        per_host.plot.line(x="window_start", y="cpu", by="host", max_points=7,
                           max_fps=EVERY_EMIT),
        sdf.plot.bar(y="cpu", by="host", max_fps=EVERY_EMIT),
        sdf.plot.table(["timestamp", "host", "cpu"], rows=5, max_fps=EVERY_EMIT),
        sdf.plot.table(["host", "requests"], by="host", max_fps=EVERY_EMIT),
    ]
    board = rtnb.dashboard(*views, ncols=2)
    assert board.model is not None
    for name, value in model.items():
        setattr(board.model, name, value)
    return sdf, views, board


def catch_up(page: Page, board: rtnb.Dashboard, views: list[Any], ref_views: list[Any]) -> None:
    """The page acknowledges: the next tick sends everything held, merged; the page then
    shows what the kernel holds and every view equals its never-held reference."""
    page.acknowledge()
    assert board.scheduler.tick() == len(views)
    assert not any(v.has_pending for v in views)
    assert page.sources() == kernel_sources(board.model)
    for view, ref in zip(views, ref_views, strict=True):
        tm.assert_frame_equal(view.data(), ref.data())


def test_one_scheduler_numbers_each_tick_of_the_board(metrics, monkeypatch):
    sdf, views, board = build_board(metrics, probe_every=0.0)
    model = board.model
    page = Page(model, monkeypatch)
    assert {id(v._scheduler) for v in views} == {id(board.scheduler)}
    feed(sdf, metrics.iloc[:240], batch_size=24, close=False)
    # Without a loop a view's batch runs a tick (with a loop, the timer ticks): here each
    # emit reaches the five views in turn, and each tick is one numbered update.
    assert [v.updates for v in views] == [10] * len(views)
    assert board.scheduler.ticks == 50
    assert model.seq == 50 and page.applied == 50


def test_without_a_page_nothing_is_held(metrics, monkeypatch):
    sdf, views, board = build_board(metrics, probe_every=0.0, max_unacked=BUDGET)
    page = Page(board.model, monkeypatch)  # applies, never acknowledges
    feed(sdf, metrics.iloc[:3000], batch_size=60, close=False)
    emits = 3000 // 60
    assert not board.model.engaged
    assert board.model.held_ticks == 0
    assert board.model.unacked == 0
    assert board.scheduler.ticks == len(views) * emits
    assert all(v.updates == emits and not v.has_pending for v in views)
    assert page.sources() == kernel_sources(board.model)


def test_behind_the_budget_updates_are_held_and_merged(metrics, monkeypatch):
    monkeypatch.setattr(plots, "_COMPACT_MIN_ROWS", 100)  # merge the held queues often
    sdf, views, board = build_board(metrics, probe_every=0.0, max_unacked=BUDGET)
    model = board.model
    page = Page(model, monkeypatch)
    # the same board without flow control, updated at every emit: what the page should show
    ref_sdf, ref_views, ref_board = build_board(metrics)
    ref_page = Page(ref_board.model, monkeypatch)

    def both(df: pd.DataFrame) -> None:
        feed(sdf, df, batch_size=60, close=False)
        feed(ref_sdf, df, batch_size=60, close=False)

    both(metrics.iloc[:300])
    page.acknowledge()  # a page shows the board: flow control engages
    assert model.engaged and model.unacked == 0
    sizes = []  # PATCH-DOCs each tick sent
    tick = board.scheduler.tick

    def counted_tick(now: float | None = None) -> int:
        before = model.messages_sent
        flushed = tick(now)
        sizes.append(model.messages_sent - before)
        return flushed

    monkeypatch.setattr(board.scheduler, "tick", counted_tick)
    both(metrics.iloc[300:6_000])  # the page applies, but says nothing
    assert model.held_ticks > 100  # nearly every tick after the budget was spent
    # Ticks went out while at most BUDGET PATCH-DOCs were unacknowledged (the last one took
    # it over), then nothing at all.
    sending = [n for n in sizes if n]
    assert sizes[:len(sending)] == sending and not any(sizes[len(sending):])
    assert sum(sending) == model.unacked
    assert model.unacked - sending[-1] <= BUDGET < model.unacked
    # what arrived meanwhile waits, merged: bounded by what the views draw, not by the input
    assert views[0].pending_rows <= 2 * max(100, 12 * 40) + 60  # + the batch since
    assert views[2].pending_rows <= 2 * 100 and views[3].pending_rows <= 2 * 100
    assert max(v.pending_rows for v in views) < 5_700 // 4
    # the page catches up and acknowledges: the next tick sends everything held, merged
    catch_up(page, board, views, ref_views)
    assert ref_page.sources() == kernel_sources(ref_board.model)
    # and far fewer messages for the same picture
    assert page.patches < ref_page.patches / 4


def test_acknowledgements_that_stop_time_out(metrics, monkeypatch):
    real, skew = time.monotonic, [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: real() + skew[0])
    sdf, views, board = build_board(metrics, probe_every=0.0, max_unacked=BUDGET,
                                    ack_timeout=5.0)
    model = board.model
    page = Page(model, monkeypatch)
    feed(sdf, metrics.iloc[:120], batch_size=30, close=False)
    page.acknowledge()
    # the page closed: no acknowledgement
    feed(sdf, metrics.iloc[120:1200], batch_size=30, close=False)
    assert views[0].has_pending and model.held_ticks > 0
    sent = model.messages_sent
    skew[0] = 5.5  # 5.5 s later
    flushed = board.scheduler.tick()
    assert flushed == len(views) and model.messages_sent > sent
    assert not model.engaged and model.ack_timeouts == 1
    held = model.held_ticks
    feed(sdf, metrics.iloc[1200:2400], batch_size=30, close=False)  # flows as without a page
    assert model.held_ticks == held and not any(v.has_pending for v in views)
    page.acknowledge()  # a page again: engaged again
    assert model.engaged and model.unacked == 0
    assert page.sources() == kernel_sources(model)


def test_a_view_shown_alone_has_flow_control_too(metrics, monkeypatch):
    sdf = rtnb.StreamingFrame(metrics.iloc[:0], time="timestamp", name="m")
    view = sdf.plot.line(x="timestamp", y="cpu", by="host", max_points=30,
                         max_fps=EVERY_EMIT)
    model = view.widget
    model.probe_every, model.max_unacked = 0.0, BUDGET
    page = Page(model, monkeypatch)
    feed(sdf, metrics.iloc[:120], batch_size=12, close=False)
    page.acknowledge()
    feed(sdf, metrics.iloc[120:3000], batch_size=12, close=False)
    assert model.held_ticks > 0 and view.has_pending
    page.acknowledge()
    feed(sdf, metrics.iloc[3000:3012], batch_size=12, close=False)
    expected = metrics.iloc[:3012].groupby("host", sort=False).tail(30)
    got = view.data()
    assert page.sources() == kernel_sources(model)
    assert len(got) == len(expected)
    np.testing.assert_array_equal(got["y"].to_numpy(), expected.sort_values(
        "host", key=lambda h: h.map({k: i for i, k in enumerate(view.sources)}),
        kind="stable")["cpu"].to_numpy())


def test_in_the_notebook_loop_a_board_without_page_keeps_flowing(metrics):
    async def main() -> tuple[list[int], int, int, bool]:
        sdf = rtnb.StreamingFrame(metrics.iloc[:0], time="timestamp", name="m")
        views = [sdf.plot.line(x="timestamp", y="cpu", by="host", max_fps=50),
                 sdf.plot.bar(y="cpu", by="host", max_fps=50)]
        board = rtnb.dashboard(*views)
        assert board.model is not None and board.scheduler is not None
        board.model.send = lambda *a, **k: None  # no front end
        for lo in range(0, 2400, 60):
            sdf.emit(metrics.iloc[lo:lo + 60].reset_index(drop=True))
            await asyncio.sleep(0.005)
        sdf.close()
        for view in views:
            await view.drain()
        await asyncio.sleep(0.05)
        rows = [len(v.data()) for v in views]
        return rows, sum(v.pending_rows for v in views), board.model.held_ticks, \
            board.scheduler.running

    rows, pending, held, running = asyncio.run(main())
    assert rows == [2400, 12] and pending == 0 and held == 0
    assert not running  # the timer ended with the stream


def test_what_was_sent_before_the_page_was_known_can_be_acknowledged(metrics, monkeypatch):
    # Before a page acknowledges, updates are numbered only once per `probe_every`: the page
    # then acknowledges a number older than much of what it has applied. The first held
    # tick numbers what went out since, so that the page can acknowledge it (otherwise
    # nothing would be sent until the acknowledgement timeout).
    sdf, views, board = build_board(metrics, probe_every=1e9, max_unacked=BUDGET)
    model = board.model
    model._last_mark = -float("inf")  # the first update is a probe, the next ones are not
    page = Page(model, monkeypatch)
    feed(sdf, metrics.iloc[:600], batch_size=60, close=False)
    assert model.seq == 1
    page.acknowledge()
    assert model.engaged and model.unacked > BUDGET
    sdf.emit(metrics.iloc[600:660].reset_index(drop=True))
    assert model.held_ticks > 0 and model.seq == 2  # held, and numbered what was sent
    page.acknowledge()
    assert model.unacked == 0
    held = model.held_ticks
    board.scheduler.tick()
    assert model.held_ticks == held and not any(v.has_pending for v in views)
    assert page.sources() == kernel_sources(model)


def test_combined_each_tick_is_one_message_carrying_its_number(metrics, monkeypatch):
    """With the page fix reported, a tick is one PATCH-DOC in one comm message, numbered;
    behind ``max_unacked_updates`` numbered updates the board holds and merges, as above."""
    monkeypatch.setattr(plots, "_COMPACT_MIN_ROWS", 100)
    sdf, views, board = build_board(metrics, probe_every=0.0, max_unacked_updates=BUDGET)
    model = board.model
    page = Page(model, monkeypatch)
    page.report_fix("proto")
    assert model.combining
    ref_sdf, ref_views, ref_board = build_board(metrics)  # per event, never held
    ref_page = Page(ref_board.model, monkeypatch)

    def both(df: pd.DataFrame) -> None:
        feed(sdf, df, batch_size=60, close=False)
        feed(ref_sdf, df, batch_size=60, close=False)

    both(metrics.iloc[:300])
    ticks = board.scheduler.ticks
    assert ticks == len(views) * 5
    assert model.messages_sent == model.comm_messages_sent == page.comm_messages == ticks
    assert model.seq == ticks and page.applied == ticks  # every tick numbered, inside it
    page.acknowledge()
    assert model.engaged and model.unacked == 0
    both(metrics.iloc[300:6_000])  # the page applies, but says nothing
    assert model.held_ticks > 100
    assert model.seq - page.applied == 0 and model.seq - model._acked_seq == BUDGET + 1
    catch_up(page, board, views, ref_views)
    assert page.comm_messages == model.messages_sent  # one comm message per PATCH-DOC
    assert ref_page.comm_messages == 3 * ref_page.patches
    assert page.comm_messages < ref_page.comm_messages / 20


def test_combined_an_unnumbered_tick_is_still_one_message_when_the_probe_period_ends_meanwhile(
        metrics, monkeypatch):
    """Before a page acknowledges, ticks are numbered once per ``probe_every``. A tick that
    was not numbered must not be numbered after it was sent (the period having ended while
    it was sent): that number would travel as a PATCH-DOC of its own (CI once saw 8 more
    messages than updates in tests/unit/test_page_replica.py)."""
    from rtnb.viz import _bokeh

    clock = [1000.0]
    monkeypatch.setattr(_bokeh.time, "monotonic", lambda: clock[0])
    sdf, views, board = build_board(metrics, probe_every=0.25)
    model = board.model
    page = Page(model, monkeypatch)
    receive = page._receive

    def slow_page(content: dict[str, Any], buffers: Any = None) -> None:
        clock[0] += 0.1  # sending takes time: the probe period ends during some sends
        receive(content, buffers)

    monkeypatch.setattr(model, "send", slow_page)
    page.report_fix("proto")
    assert model.combining
    feed(sdf, metrics.iloc[:480], batch_size=60, close=False)
    ticks = board.scheduler.ticks
    assert ticks == len(views) * 8
    assert 0 < model.seq < ticks  # some ticks numbered, not all: the probe period
    assert model.messages_sent == page.comm_messages == ticks  # one message per tick
    assert page.applied == model.seq
    assert page.sources() == kernel_sources(model)
