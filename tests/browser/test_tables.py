"""Live tables in a real JupyterLab show their latest rows (issue 18, defect 1).

A table of the last 5 rows and a table of each key's latest row are fed 80 rows in 40 batches
while the page shows them; the test then reads what the grids draw, from the DOM (the text of
each ``.slick-cell``, rows top to bottom as drawn), not from the data sources. BokehJS
3.9.2's ``DataTable`` redraws only when the number of rows changes (bokeh/bokeh#15328): once
full, a table fed by ``stream(..., rollover=5)`` kept drawing its first 5 rows, and a key's row
patched in place kept its first value, while the page's data sources held the new rows.
"""

from __future__ import annotations

import time
from typing import Any

import nbformat
import pytest
from browser_helpers import (
    JupyterLab,
    notebook_errors,
    open_notebook,
    run_cells,
    wait_until,
)
from playwright.sync_api import Page

pytestmark = pytest.mark.browser

ROWS, BATCHES = 5, 40  # two rows per batch: n = 0 .. 79, host h0, h1, h2 in turn

VIEWS = f"""\
import asyncio

import pandas as pd
import rtnb

example = pd.DataFrame({{"n": pd.Series([], dtype="int64"), "host": pd.Series([], dtype=str)}})
feed = rtnb.StreamingFrame(example, name="feed")
latest = feed.plot.table(["n", "host"], rows={ROWS}, height=200)
per_host = feed.plot.table(["n"], by="host", height=200)
rtnb.dashboard(latest, per_host)"""

FEED = f"""\
for b in range({BATCHES}):  # ~20 updates at the tables' 10 per second
    n = [2 * b, 2 * b + 1]
    feed.emit(pd.DataFrame({{"n": n, "host": [f"h{{i % 3}}" for i in n]}}))
    await asyncio.sleep(0.05)"""

TOTAL = 2 * BATCHES
#: What the grids must show: (header texts) -> rows of cell texts, top to bottom.
EXPECTED = {
    ("n", "host"): [[str(n), f"h{n % 3}"] for n in range(TOTAL - ROWS, TOTAL)],
    ("host", "n"): [[f"h{h}", str(max(n for n in range(TOTAL) if n % 3 == h))]
                    for h in range(3)],
}

#: Every live SlickGrid in the page (BokehJS renders into shadow roots): its header texts and
#: its rows' cell texts, rows top to bottom as drawn, cells by their column (``l<i>``).
_JS_GRIDS = """() => {
    const grids = [];
    const walk = (root) => {
        for (const el of root.querySelectorAll('*')) {
            if (el.shadowRoot) { walk(el.shadowRoot); }
            if (el.isConnected && Array.from(el.classList).some(c => c.startsWith('slickgrid_'))) {
                grids.push(el);
            }
        }
    };
    walk(document);
    const column = (cell) => Number((cell.className.match(/\\bl(\\d+)\\b/) || [0, 0])[1]);
    return grids.map(grid => {
        const headers = Array.from(grid.querySelectorAll('.slick-header-column'))
            .map(h => h.textContent.trim());
        const rows = Array.from(grid.querySelectorAll('.slick-row')).map(row => ({
            top: row.getBoundingClientRect().top,
            cells: Array.from(row.querySelectorAll('.slick-cell'))
                .sort((a, b) => column(a) - column(b)).map(c => c.textContent.trim()),
        }));
        rows.sort((a, b) => a.top - b.top);
        return {headers, rows: rows.map(r => r.cells)};
    });
}"""

#: What each live DataTable's data source holds in the page (its fields as strings).
_JS_SOURCES = """() => {
    const out = [];
    for (const doc of (window.Bokeh ? window.Bokeh.documents : [])) {
        for (const m of doc.all_models) {
            if (m.type !== 'DataTable') { continue; }
            const fields = m.columns.map(c => c.field);
            const data = m.source.data;
            const n = m.source.get_length() ?? 0;
            const rows = [];
            for (let i = 0; i < n; i++) { rows.push(fields.map(f => String(data[f][i]))); }
            out.push({fields, rows});
        }
    }
    return out;
}"""


def grids(page: Page) -> dict[tuple[str, ...], list[list[str]]]:
    """The rows each grid draws, keyed by its header texts."""
    return {tuple(g["headers"]): g["rows"] for g in page.evaluate(_JS_GRIDS)}


def sources(page: Page) -> list[dict[str, Any]]:
    return list(page.evaluate(_JS_SOURCES))


def test_live_tables_show_their_latest_rows(lab: JupyterLab, page: Page) -> None:
    start = time.monotonic()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(VIEWS), nbformat.v4.new_code_cell(FEED)]
    lab.add_notebook(nb, "tables.ipynb")
    open_notebook(page, lab, "tables.ipynb")
    opened = time.monotonic()
    assert run_cells(page, upto=1, timeout=60)
    wait_until(lambda: set(grids(page)) == set(EXPECTED), timeout=30,
               message=f"the two tables did not render: {grids(page)}")
    shown = time.monotonic()
    assert run_cells(page, start=1, timeout=60)  # returns when the last batch was emitted
    fed = time.monotonic()

    def latest_drawn() -> bool:
        return grids(page) == EXPECTED

    try:
        wait_until(latest_drawn, timeout=15, interval=0.25)
    except AssertionError:
        raise AssertionError(
            f"the grids draw {grids(page)}\nthe page's sources hold {sources(page)}\n"
            f"expected {EXPECTED}") from None
    done = time.monotonic()
    print(f"\n[test_tables] open {opened - start:.1f}s, tables shown "
          f"{shown - opened:.1f}s, feed {fed - shown:.1f}s, latest rows drawn "
          f"{done - fed:.2f}s after the last batch")
    assert notebook_errors(page) == []
