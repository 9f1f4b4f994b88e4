"""A keyed plot's legend fits its plot in a real JupyterLab (issue 18, defect 7: "13 entries
do not fit in 280-300 px and overlap what is below").

A line plot of 30 keys at the default-ish height of 280 px is shown in JupyterLab; the test
reads BokehJS's laid-out views: the legend's box must lie inside the plot's canvas (it wraps
into more columns instead of running past the bottom), it lies right of the data frame (never
over the lines), and every key has an entry.
"""

from __future__ import annotations

from typing import Any

import nbformat
import pytest
from browser_helpers import JupyterLab, notebook_errors, open_notebook, run_cells, wait_until
from playwright.sync_api import Page

pytestmark = pytest.mark.browser

KEYS = 30

VIEW = f"""\
import pandas as pd
import rtnb

example = pd.DataFrame({{"t": pd.Series([], dtype="datetime64[ns]"),
                        "host": pd.Series([], dtype=str), "cpu": pd.Series([], dtype=float)}})
feed = rtnb.StreamingFrame(example, time="t", name="feed")
view = feed.plot.line(x="t", y="cpu", by="host", height=280)
t = pd.date_range("2026-01-01", periods=3, freq="s")
feed.emit(pd.DataFrame({{"t": t.repeat({KEYS}),
                        "host": [f"host-{{i:02d}}" for i in range({KEYS})] * 3,
                        "cpu": [float(i) for i in range(3 * {KEYS})]}}))
view"""

#: The laid-out boxes of every live plot: canvas, data frame, legend, and the legend's items.
_JS_BOXES = """() => {
    const out = [];
    for (const doc of (window.Bokeh ? window.Bokeh.documents : [])) {
        const views = doc.views_manager;
        if (views == null) { continue; }
        for (const view of views.all_views()) {
            if (view.model.type !== 'Legend') { continue; }
            const plot = view.parent;
            const box = (b) => ({x0: b.x0, y0: b.y0, x1: b.x1, y1: b.y1});
            const canvas = {x0: 0, y0: 0, x1: plot.bbox.width, y1: plot.bbox.height};
            out.push({legend: box(view.bbox), canvas, frame: box(plot.frame.bbox),
                      items: view.model.items.length,
                      labels: view.model.items.map((i) => i.label && i.label.value)});
        }
    }
    return out;
}"""


def boxes(page: Page) -> list[dict[str, Any]]:
    return list(page.evaluate(_JS_BOXES))


def test_a_legend_of_30_keys_fits_beside_a_280_px_plot(lab: JupyterLab, page: Page) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(VIEW)]
    lab.add_notebook(nb, "legend.ipynb")
    open_notebook(page, lab, "legend.ipynb")
    assert run_cells(page, timeout=60)
    wait_until(lambda: any(b["items"] == KEYS and b["legend"]["y1"] > 0 for b in boxes(page)),
               timeout=30, message=f"no legend of {KEYS} entries laid out: {boxes(page)}")
    [b] = [b for b in boxes(page) if b["items"] == KEYS]
    legend, canvas, frame = b["legend"], b["canvas"], b["frame"]
    assert canvas["y1"] - canvas["y0"] == pytest.approx(280, abs=1)
    assert legend["y0"] >= canvas["y0"] and legend["y1"] <= canvas["y1"], b
    assert legend["x1"] <= canvas["x1"] + 0.5, b
    assert legend["x0"] >= frame["x1"], b  # outside the data frame: it never hides lines
    assert sorted(b["labels"]) == [f"host-{i:02d}" for i in range(KEYS)]
    assert notebook_errors(page) == []
