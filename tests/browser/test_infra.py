"""Proof that the browser-test infrastructure works end to end.

A notebook streams rows into a Bokeh ``ColumnDataSource`` shown through
``jupyter_bokeh.BokehModel`` next to an ``ipywidgets.IntSlider``; the test drives it from
headless chromium in a real JupyterLab and checks what the page shows.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import nbformat
import pytest
from browser_helpers import (
    JupyterLab,
    bokeh_cds_lengths,
    bokeh_titles,
    cell_errors,
    cell_text,
    console_errors,
    execution_counts,
    notebook_errors,
    open_notebook,
    run_cells,
    screenshot,
    set_slider,
    slider_value,
    wait_for_bokeh,
    wait_until,
)
from playwright.sync_api import Page

pytestmark = pytest.mark.browser

NOTEBOOK_NAME = "infra_stream.ipynb"

CELLS = [
    # 0: Bokeh setup; prints an env var so the test can check that RTNB_* reach the kernel.
    """\
import asyncio
import os

from bokeh.io import output_notebook
from bokeh.resources import INLINE

output_notebook(INLINE, hide_banner=True)
print("RTNB_INFRA_MARK=" + os.environ.get("RTNB_INFRA_MARK", "<unset>"))""",
    # 1: figure + slider in a VBox.
    """\
import ipywidgets as widgets
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure
from jupyter_bokeh import BokehModel

source = ColumnDataSource(data={"x": [], "y": []})
fig = figure(title="window 10s", height=260, width=560)
fig.line("x", "y", source=source)
slider = widgets.IntSlider(value=10, min=1, max=60, description="window")


def on_window(change):
    fig.title.text = f"window {change['new']}s"


slider.observe(on_window, names="value")
widgets.VBox([slider, BokehModel(fig)])""",
    # 2: background stream on the kernel's running loop: 10 rows every 100 ms for ~60 s.
    """\
async def pump(seconds=60.0, rows=10, period=0.1):
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    n = 0
    while loop.time() < end:
        xs = list(range(n, n + rows))
        source.stream({"x": xs, "y": [(v * 7) % 23 for v in xs]}, rollover=500)
        n += rows
        await asyncio.sleep(period)


pump_task = asyncio.ensure_future(pump())""",
    # 3: a cell that awaits; it would block comm messages while running, so it is not run.
    "await asyncio.sleep(1)",
]


def make_notebook() -> nbformat.NotebookNode:
    """Build the streaming demo notebook.

    Returns
    -------
    nbformat.NotebookNode
        A validated nbformat v4 notebook.
    """
    cells = [nbformat.v4.new_code_cell(src) for src in CELLS]  # type: ignore[no-untyped-call]
    nb: nbformat.NotebookNode = nbformat.v4.new_notebook(cells=cells)  # type: ignore[no-untyped-call]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.validate(nb)
    return nb


def test_stream_plot_and_slider_roundtrip(
    lab: JupyterLab, page: Page, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plot appears, CDS grows, slider round-trips through the kernel, no error outputs."""
    t0 = time.monotonic()
    mark = secrets.token_hex(4)
    monkeypatch.setenv("RTNB_INFRA_MARK", mark)
    lab.add_notebook(make_notebook(), NOTEBOOK_NAME)

    open_notebook(page, lab, NOTEBOOK_NAME)
    t_open = time.monotonic()

    # Setup and plot first ("Run All Above" cell 2), so the stream starts only once the plot is
    # on screen: with rollover=500 at 100 rows/s the length saturates 5 s after the start.
    assert run_cells(page, upto=2)
    # RTNB_* variables set by the test after the server started reached the kernel.
    assert f"RTNB_INFRA_MARK={mark}" in cell_text(page, 0)

    # (1) a Bokeh plot is rendered, with the initial title and an empty source.
    assert wait_for_bokeh(page) == 1
    assert bokeh_titles(page) == ["window 10s"]
    assert bokeh_cds_lengths(page) == [[0]]

    # (2) start the stream (cell 2; never the last cell, which would hold the shell channel) and
    # watch the ColumnDataSource grow in the page.
    assert run_cells(page, start=2, upto=-1)
    t_run = time.monotonic()
    first = wait_until(
        lambda: sum(map(sum, bokeh_cds_lengths(page))),
        timeout=10,
        interval=0.05,
        message="no ColumnDataSource rows in the page",
    )
    assert first < 500, f"stream should be running but not yet rolled over: {first}"
    second = wait_until(
        lambda: (n := sum(map(sum, bokeh_cds_lengths(page)))) > first and n,
        timeout=10,
        message=f"ColumnDataSource did not grow beyond {first} rows",
    )

    # (3) moving the slider in the page changes the Bokeh title in the page, via the kernel.
    assert slider_value(page, "window") == (10.0, "10")
    assert set_slider(page, 13, description="window") == "13"
    wait_until(
        lambda: bokeh_titles(page) == ["window 13s"],
        timeout=10,
        message="title did not follow the slider",
    )

    # (4) no error (or stderr) outputs; the awaiting last cell was never run.
    assert cell_errors(page) == []
    assert notebook_errors(page) == []
    counts = execution_counts(page)
    assert all(counts[:-1]) and counts[-1] is None, counts

    shot = screenshot(page, tmp_path / "infra_stream.png")
    assert shot.stat().st_size > 10_000
    t_end = time.monotonic()
    print(
        f"\n[infra] open {t_open - t0:.1f}s, run+plot {t_run - t_open:.1f}s, "
        f"checks {t_end - t_run:.1f}s; rows {first} -> {second}; screenshot {shot}; "
        f"console errors: {console_errors(page)}"
    )
