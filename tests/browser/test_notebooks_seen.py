"""Notebooks 03 and 05 as a person sees them in JupyterLab (issue 18, "Done when").

Each notebook runs to its end in a real JupyterLab (its replay bounded, then awaited), and the
test reads what the page draws:

* every table's grid shows the latest rows its data source holds (cell texts from the DOM);
* every key's line is drawn: each plot has a renderer view for every renderer it holds;
* every legend lies inside its plot's canvas and right of the data frame;
* every x/y plot has a hover tool;
* no cell shows an error.

Each run also saves screenshots of the notebook's live views; ``RTNB_SCREENSHOT_DIR`` copies
them there (the README's and the docs' pictures: ``docs/images``).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
from browser_helpers import (
    JupyterLab,
    cell_errors,
    notebook_errors,
    open_notebook,
    run_cells,
    wait_until,
)
from playwright.sync_api import Page
from test_tables import grids, sources

pytestmark = pytest.mark.browser

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

#: notebook -> (the cell awaiting the end of its replay, {screenshot name: cell index}).
CASES = {
    "03-live-dashboards": ("await src.wait()", {"notebook-03": 7}),
    "05-thresholds-and-alerts": ("await live.wait()", {"notebook-05-day": 9,
                                                       "notebook-05-live": 13}),
}

#: Per plot: renderers without a view, the legend's and canvas' boxes, hover tools.
_JS_PLOTS = """() => {
    const out = [];
    for (const doc of (window.Bokeh ? window.Bokeh.documents : [])) {
        const views = doc.views_manager;
        if (views == null) { continue; }
        for (const view of views.all_views()) {
            if (!(view.renderer_views instanceof Map)) { continue; }  // a PlotView
            const model = view.model;
            if (!view.el.isConnected) { continue; }
            const box = (b) => ({x0: b.x0, y0: b.y0, x1: b.x1, y1: b.y1});
            const legends = [...view.renderer_views.values()]
                .filter((r) => r.model.type === 'Legend' && r.model.items.length > 0)
                .map((r) => box(r.bbox));
            out.push({
                title: model.title ? model.title.text : '',
                renderers: model.renderers.length,
                missing: model.renderers.filter((r) => !view.renderer_views.has(r)).length,
                hover: model.toolbar.tools.some((t) => t.type === 'HoverTool'),
                categorical: model.x_range.type === 'FactorRange'
                    || model.y_range.type === 'FactorRange',
                // the plot's own canvas (bbox is where the plot sits in its layout)
                canvas: {x0: 0, y0: 0, x1: view.bbox.width, y1: view.bbox.height},
                frame: box(view.frame.bbox), legends,
            });
        }
    }
    return out;
}"""


def plots(page: Page) -> list[dict[str, Any]]:
    return list(page.evaluate(_JS_PLOTS))


def _tables_show_their_sources(page: Page) -> bool:
    """Every grid draws the rows its data source holds (the source's last rows, as shown)."""
    # headers are "cpu (%)" where the column has a unit: match them by the field's name
    drawn = {tuple(re.sub(r" \(.*\)$", "", h) for h in headers): rows
             for headers, rows in grids(page).items()}
    held = sources(page)
    if len(drawn) != len(held) or not held:
        return False
    for source in held:
        fields = source["fields"]
        rows = drawn.get(tuple(fields))
        if rows is None or len(rows) != len(source["rows"]):
            return False
        # the grid formats numbers and times: compare the cells' first characters that
        # both render alike (keys, integers), and the row count
        for got, want in zip(rows, source["rows"], strict=True):
            for g, w, f in zip(got, want, fields, strict=True):
                if f in ("host", "state") and g != w:
                    return False
    return True


@pytest.mark.parametrize("name", list(CASES))
def test_a_person_sees_latest_rows_every_line_fitting_legends_and_hover(
        name: str, lab: JupyterLab, page: Page, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    await_end, shots = CASES[name]
    monkeypatch.setenv("RTNB_REPLAY_MAX_EVENTS", "60000")
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(await_end))
    lab.add_notebook(nb, f"{name}.ipynb")
    open_notebook(page, lab, f"{name}.ipynb")
    assert run_cells(page, timeout=420)
    assert cell_errors(page) == []
    assert notebook_errors(page) == []

    try:
        wait_until(lambda: _tables_show_their_sources(page), timeout=30, interval=0.5)
    except AssertionError:
        raise AssertionError(f"grids {grids(page)}\nsources {sources(page)}") from None

    def settled() -> bool:
        drawn = plots(page)
        return bool(drawn) and all(p["missing"] == 0 for p in drawn)

    try:
        wait_until(settled, timeout=30, interval=0.5)
    except AssertionError:
        raise AssertionError(f"plots with undrawn lines: {plots(page)}") from None
    for p in plots(page):
        assert p["renderers"] > 0, p
        if not p["categorical"]:
            assert p["hover"], f"no hover tool on {p['title']!r}"
        for legend in p["legends"]:
            assert legend["y0"] >= p["canvas"]["y0"] and legend["y1"] <= p["canvas"]["y1"], p
            assert legend["x0"] >= p["frame"]["x1"] - 0.5, p

    target = os.environ.get("RTNB_SCREENSHOT_DIR")
    page.set_viewport_size({"width": 1280, "height": 1400})  # a whole board in view
    cells = page.locator(".jp-NotebookPanel:visible .jp-Cell")
    for shot, index in shots.items():
        output = cells.nth(index).locator(".jp-OutputArea-output").last
        output.scroll_into_view_if_needed()
        path = tmp_path / f"{shot}.png"
        output.screenshot(path=str(path), timeout=120_000, animations="disabled")
        assert path.stat().st_size > 10_000
        if target:
            shutil.copy(path, Path(target) / path.name)
