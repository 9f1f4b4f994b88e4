"""Table views show the latest rows, in the kernel and in the page's grid (issue 18, defect 1).

BokehJS 3.9.2's ``DataTable`` redraws its grid only when its ``CDSView`` changes: a change of
one of the view's properties, or of its row indices, which happens only when the number of rows
changes (bokeh/bokeh#15328). A table kept at ``rows`` rows by ``stream(..., rollover=rows)`` froze
on its first rows. :class:`Page` replays the page without a browser, as the tests of
``test_page_replica.py`` do, and :class:`Grid` draws a table's grid by that rule; the browser test
``tests/browser/test_tables.py`` checks the same in chromium.

Views are built without a running loop and with a tiny ``max_fps``: they update only when a test
calls ``flush()``.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
from bokeh.document import Document

import rtnb
from rtnb import Param
from rtnb.viz import TableView

NEVER = 1e-9
T0 = pd.Timestamp("2026-01-01")
HOSTS = [f"web-{i:02d}" for i in range(7)]


def example() -> pd.DataFrame:
    return pd.DataFrame({
        "t": pd.Series([], dtype="datetime64[ns]"),
        "host": pd.Series([], dtype=str),
        "cpu": pd.Series([], dtype=float),
        "n": pd.Series([], dtype="int64"),
    })


def events(total: int, seed: int = 0) -> pd.DataFrame:
    """*total* rows one second apart, hosts in random order, ``n`` numbering the rows."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "t": (T0 + pd.to_timedelta(np.arange(total), unit="s")).astype("datetime64[ns]"),
        "host": pd.Series(rng.choice(HOSTS, total), dtype=str),
        "cpu": rng.uniform(0, 100, total).round(3),
        "n": np.arange(total, dtype=np.int64),
    })


def batches(data: pd.DataFrame, seed: int) -> list[pd.DataFrame]:
    """*data* cut at random places into batches of 0 to ~40 rows."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.integers(0, len(data) + 1, len(data) // 15))
    bounds = [0, *cuts.tolist(), len(data)]
    return [data.iloc[a:b].reset_index(drop=True) for a, b in itertools.pairwise(bounds)]


class Page:
    """The page without a browser, as ``test_page_replica.py`` replays it.

    The Bokeh document is rebuilt from the widget's render bundle (what the front end receives
    on display), then every PATCH-DOC the widget sends is applied to it in order, as BokehJS
    does.
    """

    def __init__(self, widget: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        bundle = widget.render_bundle
        self.doc = Document.from_json(bundle["docs_json"][next(iter(bundle["docs_json"]))])
        self.patch_docs = 0
        monkeypatch.setattr(widget, "send", self._receive)

    def _receive(self, content: dict[str, Any], buffers: Any = None) -> None:
        payload = content["fragments"][-1] if content["msg"] == "rtnb_patch" else \
            content.get("payload", "")
        if payload.startswith('{"events"'):
            self.patch_docs += 1
            self.doc.apply_json_patch(json.loads(payload), setter="page")

    def grid(self, view: TableView) -> Grid:
        """What the page draws for *view*'s table from now on."""
        return Grid(self.doc, view)


class Grid:
    """What the page's grid of one table draws, under BokehJS 3.9.2's rule.

    The grid is a copy of the table's source in the page, taken whenever BokehJS 3.9.2's
    ``DataTableView`` redraws: when the table's ``CDSView`` changes, i.e. when one of its
    properties changes or the number of rows changes (its indices). In between, the grid
    keeps drawing its copy whatever the source holds.
    """

    def __init__(self, doc: Document, view: TableView) -> None:
        table = doc.get_model_by_id(view.table.id)
        self.source, self.cds_view = table.source, table.view
        self.dtypes = view.frame.example[view._columns].dtypes
        self.redraws = -1  # the first copy, taken now, is not a redraw
        self._draw()
        doc.on_change(self._on_change)

    def _length(self) -> int:
        return len(next(iter(self.source.data.values()), ()))

    def _on_change(self, event: Any) -> None:
        model = getattr(event, "model", None)
        if model is self.cds_view or (model is self.source and self._length() != self._drawn):
            self._draw()

    def _draw(self) -> None:
        self.redraws += 1
        self._drawn = self._length()
        columns = {}
        for col, dtype in self.dtypes.items():
            values = self.source.data[str(col)]
            if pd.api.types.is_datetime64_any_dtype(dtype):
                array = np.asarray(values)
                columns[col] = array.astype("datetime64[ns]") if array.dtype.kind == "M" \
                    else pd.to_datetime(array.astype(np.float64), unit="ms")
            elif pd.api.types.is_numeric_dtype(dtype):
                columns[col] = np.array(values, dtype=dtype)
            else:
                columns[col] = [str(v) for v in values]
        self.rows = pd.DataFrame(columns)


def assert_rows(result: pd.DataFrame, expected: pd.DataFrame) -> None:
    tm.assert_frame_equal(result.reset_index(drop=True), expected.reset_index(drop=True),
                          check_dtype=False)


@pytest.mark.parametrize("combine", [True, False])
@pytest.mark.parametrize(("rows", "seed"), [(1, 0), (7, 1), (20, 2)])
def test_table_shows_exactly_the_last_rows_after_many_updates(monkeypatch, rows, seed, combine):
    sdf = rtnb.StreamingFrame(example(), time="t", name="m")
    table = sdf.plot.table(rows=rows, max_fps=NEVER)
    table.widget.combine_patches = combine
    page = Page(table.widget, monkeypatch)
    grid = page.grid(table)
    data = events(3000, seed)
    rng = np.random.default_rng(seed)
    fed = 0
    for part in batches(data, seed):
        sdf.emit(part)
        fed += len(part)
        if rng.random() < 0.5:  # several batches between two updates, or one
            continue
        table.flush()
        expected = data.iloc[:fed].tail(rows)
        assert_rows(table.data(), expected)  # the kernel's source
        assert_rows(grid.rows, expected)  # what the page's grid draws
    assert table.updates > 50
    assert grid.redraws >= table.updates  # every update redrew the grid


def test_table_by_key_grid_shows_each_keys_latest_row(monkeypatch):
    sdf = rtnb.StreamingFrame(example(), time="t", name="m")
    table = sdf.plot.table(["t", "cpu", "n"], by="host", max_fps=NEVER)
    table.widget.combine_patches = True
    page = Page(table.widget, monkeypatch)
    grid = page.grid(table)
    data = events(2000, seed=3)
    fed = 0
    for part in batches(data, seed=3):
        sdf.emit(part)
        fed += len(part)
        table.flush()
        expected = data.iloc[:fed].groupby("host", sort=False)[["t", "cpu", "n"]].last() \
            .reset_index()
        assert_rows(table.data(), expected)
        assert_rows(grid.rows, expected)  # patched keys' rows redrawn too
    assert table.redraws > 0  # once every host had a row, updates only patched


def test_what_if_replaces_the_tables_and_the_grids_redraw(monkeypatch):
    data = events(2400, seed=4)
    sdf = rtnb.StreamingFrame(example(), time="t", name="m")
    size = Param("30s", min="10s", max="5min", name="size")
    per_host = sdf.window(rtnb.tumbling(size), by="host", emit="update", retain="1h") \
        .agg(cpu=("cpu", "mean"), rows=("n", "count"))
    tables = [per_host.plot.table(by="host", max_fps=NEVER),
              per_host.plot.table(rows=5, max_fps=NEVER)]
    board = rtnb.dashboard(size, *tables)
    board.model.combine_patches = True
    page = Page(board.model, monkeypatch)
    grids = [page.grid(t) for t in tables]

    def flush_and_check() -> None:
        for table, grid in zip(tables, grids, strict=True):
            table.flush()
            assert_rows(grid.rows, table.data())

    for part in batches(data.iloc[:1200], seed=4):
        sdf.emit(part)
        flush_and_check()
    before = [t.data() for t in tables]
    size.value = "1min"  # what-if: the same hosts and as many rows, other values
    flush_and_check()
    after = [t.data() for t in tables]
    assert [len(a) for a in after] == [len(b) for b in before]
    assert not after[0].equals(before[0]) and not after[1].equals(before[1])
    for part in batches(data.iloc[1200:], seed=5):
        sdf.emit(part)
        flush_and_check()


def test_a_busy_table_sends_one_update_of_at_most_rows_rows_per_flush(monkeypatch):
    """Whatever arrives between two updates, one update carries the last ``rows`` rows."""
    sdf = rtnb.StreamingFrame(example(), time="t", name="m")
    table = sdf.plot.table(rows=20, max_fps=NEVER)
    model = table.widget
    model.combine_patches = True
    page = Page(table.widget, monkeypatch)
    grid = page.grid(table)
    data = events(100_020, seed=6)
    sdf.emit(data.iloc[:20])
    table.flush()  # full now
    sdf.emit(data.iloc[20:40])
    sent, size, rows_sent = model.messages_sent, model.bytes_sent, table.rows_sent
    table.flush()
    steady = model.bytes_sent - size
    assert model.messages_sent - sent == 1  # one PATCH-DOC: the rows and the redraw
    for lo in range(40, len(data), 200):  # 500 batches before the next update
        sdf.emit(data.iloc[lo:lo + 200].reset_index(drop=True))
    sent, size, rows_sent = model.messages_sent, model.bytes_sent, table.rows_sent
    table.flush()
    busy = model.bytes_sent - size
    assert model.messages_sent - sent == 1
    assert table.rows_sent - rows_sent == 20
    assert busy <= 1.1 * steady, (busy, steady)  # ~1.2 kB here, whatever the input rate
    assert_rows(grid.rows, data.tail(20))
    assert_rows(table.data(), data.tail(20))


def test_an_update_without_rows_sends_nothing(monkeypatch):
    sdf = rtnb.StreamingFrame(example(), time="t", name="m")
    table = sdf.plot.table(rows=3, max_fps=NEVER)
    page = Page(table.widget, monkeypatch)
    grid = page.grid(table)
    sdf.emit(events(5))
    table.flush()
    patch_docs = page.patch_docs
    table.request_update()  # what an overlay does when it has news
    table.flush()
    assert page.patch_docs == patch_docs
    assert_rows(grid.rows, events(5).tail(3))
