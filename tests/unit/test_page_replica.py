"""What the browser holds equals what the kernel holds, after every update of every view kind.

The page is replayed without a browser: the Bokeh document is rebuilt from the widget's
render bundle (what the front end receives on display), then every PATCH-DOC the widget sends
is applied to it in order, as BokehJS does. After each flush every ColumnDataSource of the
page copy must equal the kernel's. (A bug once sent a new line's first rows twice: encoded
inside the new source and again as a stream event; later patches then hit the wrong rows.)
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from bokeh.document import Document
from bokeh.models import ColumnDataSource

import rtnb
from rtnb import Param

NEVER = 1e-9


class PageReplica:
    """A document built from the widget's bundle, patched by every message the widget sends."""

    def __init__(self, widget: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        bundle = widget.render_bundle
        self.doc = Document.from_json(bundle["docs_json"][next(iter(bundle["docs_json"]))])
        self.kernel_doc = widget._document
        self.comm_messages = self.patch_docs = 0
        monkeypatch.setattr(widget, "send", self._receive)

    def _receive(self, content: dict[str, Any], buffers: Any = None) -> None:
        self.comm_messages += 1
        if content["msg"] == "rtnb_patch":  # a whole PATCH-DOC in one comm message
            header, _, payload = content["fragments"]
            assert json.loads(header)["msgtype"] == "PATCH-DOC"
        else:
            payload = content.get("payload", "")
        if payload.startswith('{"events"'):
            self.patch_docs += 1
            self.doc.apply_json_patch(json.loads(payload), setter="page")

    def check(self) -> int:
        """Assert every named source matches the kernel's; return how many were compared."""
        compared = 0
        for model in self.kernel_doc.models:
            if not isinstance(model, ColumnDataSource) or not model.name:
                continue
            page = self.doc.get_model_by_id(model.id)
            assert page is not None, f"source {model.name!r} never reached the page"
            for col, values in model.data.items():
                kernel = np.asarray(values)
                mine = np.asarray(page.data[col])
                if kernel.dtype.kind == "M":
                    kernel = kernel.astype("datetime64[ms]").astype(np.float64)
                    mine = mine.astype(np.float64) if mine.dtype.kind != "M" else \
                        mine.astype("datetime64[ms]").astype(np.float64)
                assert len(mine) == len(kernel), (model.name, col, len(mine), len(kernel))
                if kernel.dtype.kind in "fiu":
                    np.testing.assert_array_equal(mine.astype(np.float64),
                                                  kernel.astype(np.float64), err_msg=col)
                else:
                    assert list(mine) == list(kernel), (model.name, col)
            compared += 1
        return compared


@pytest.fixture(scope="module")
def metrics() -> pd.DataFrame:
    df = rtnb.datasets.metrics()
    return df.iloc[:9_000].reset_index(drop=True)


def feed_and_check(sdf: rtnb.StreamingFrame, df: pd.DataFrame, views: list[Any],
                   page: PageReplica, size: int) -> int:
    checks = 0
    for lo in range(0, len(df), size):
        sdf.emit(df.iloc[lo:lo + size].reset_index(drop=True))
        for view in views:
            view.flush()
        checks += page.check()
    return checks


@pytest.mark.parametrize("fixed", ["", "proto", "doc"])
def test_every_view_kind_in_one_dashboard_matches_the_page(metrics, monkeypatch, fixed):
    """Per event (no page fix reported), one PATCH-DOC per update, one comm message each."""
    combine = fixed != ""
    sdf = rtnb.StreamingFrame(metrics.iloc[:0], time="timestamp", name="m")
    size = Param("30s", min="10s", max="5min", name="size")
    per_host = sdf.window(rtnb.tumbling(size), by="host", emit="update", retain="1h",
                          allowed_lateness="5s").agg(cpu=("cpu", "mean"), req=("requests", "sum"))
    fleet = sdf.window(rtnb.tumbling(size), retain="1h").agg(
        lo=("cpu", "min"), hi=("cpu", "max"), mid=("cpu", "median"))
    views = [
        per_host.plot.line(x="window_start", y="cpu", by="host", max_fps=NEVER,
                           show_watermark=True, max_points=200),
        per_host.plot.step(x="window_start", y="req", by="host", max_fps=NEVER),
        sdf.plot.scatter(x="timestamp", y="cpu", by="host", span="30min", max_points=120,
                         max_fps=NEVER),
        fleet.plot.band(x="window_start", lower="lo", upper="hi", y="mid", max_fps=NEVER),
        per_host.plot.bar(y="req", by="host", max_fps=NEVER),
        per_host.plot.table(by="host", max_fps=NEVER),
        sdf.plot.table(["timestamp", "host", "cpu"], rows=7, max_fps=NEVER),
    ]
    hot = rtnb.alert(fleet, fleet["hi"] > 29.5, on="hi", name="hot")  # flaps: bands too
    views[3].mark(hot)  # alert markers and bands on the band plot
    board = rtnb.dashboard(size, *views, ncols=2)
    page = PageReplica(board.model, monkeypatch)
    board.model.ack.fixed = fixed  # what the page reports once _FIX_JS ran
    assert board.model.combining == combine
    sent_before, marks_before = board.model.messages_sent, board.model.seq
    # a shuffled arrival order within a few seconds: update-mode windows are patched
    rng = np.random.default_rng(5)
    jitter = metrics.assign(k=np.arange(len(metrics)) + rng.integers(0, 30, len(metrics)))
    shuffled = jitter.sort_values("k", kind="stable").drop(columns="k")
    checks = feed_and_check(sdf, shuffled.iloc[:6000], views, page, 480)
    size.value = "1min"  # what-if: every view of the windowed frames is replaced
    for view in views:
        view.flush()
    checks += page.check()
    checks += feed_and_check(sdf, shuffled.iloc[6000:], views, page, 480)
    sdf.close()
    for view in views:
        view.flush()
    checks += page.check()
    assert checks > 12 * 20  # many sources compared many times
    assert len(views[3]._fired.data["x"]) > 0 and len(views[3]._bands.data["x0"]) > 0
    updates = sum(v.updates for v in views)
    messages = board.model.messages_sent - sent_before
    if combine:
        # one PATCH-DOC per view update, the acknowledgement number inside it (plus the
        # titles the one Param change re-set, sent when they changed)
        assert board.model.seq - marks_before > 0
        assert messages <= updates + len(views)
        frames = 1 if fixed == "proto" else 3  # "doc": jupyter_bokeh's own 3-part framing
        assert page.comm_messages == frames * page.patch_docs
    else:
        # one per changed source or property, and one per numbered update
        messages -= board.model.seq - marks_before
        assert messages > 3 * updates
        assert page.comm_messages == 3 * page.patch_docs


@pytest.mark.parametrize("max_points", [5, 1000])
def test_line_with_keys_appearing_late_and_rollover(metrics, monkeypatch, max_points):
    sdf = rtnb.StreamingFrame(metrics.iloc[:0], time="timestamp", name="m")
    view = sdf.plot.line(x="timestamp", y="cpu", by="host", max_points=max_points,
                         max_fps=NEVER)
    page = PageReplica(view.widget, monkeypatch)
    hosts = metrics["host"].unique()
    for i in range(len(hosts)):  # one more key per flush
        part = metrics[metrics["host"].isin(hosts[:i + 1])].iloc[i * 40:(i + 1) * 40]
        sdf.emit(part.reset_index(drop=True))
        view.flush()
        page.check()
    assert len(view.sources) == len(hosts)
