"""Live views follow JupyterLab's light or dark theme (issue 18: "plots glare white in
JupyterLab's dark theme").

A line plot by key and a table are shown in a real JupyterLab, which is switched to its dark
theme and back through its own ``apputils:change-theme`` command. The test reads what the
page draws: each plot's colours in BokehJS (background, grid, axis labels, legend) and the
computed colours of the grid's rows (``.slick-row``, inside BokehJS's shadow DOM), and
compares them with the theme's own CSS variables. A colour the user set stays as it was, and
the kernel's document keeps Bokeh's light colours (the theme is applied in the page only).
"""

from __future__ import annotations

from typing import Any

import nbformat
import pytest
from browser_helpers import (
    JupyterLab,
    notebook_errors,
    notebook_outputs,
    open_notebook,
    run_cells,
    wait_until,
)
from playwright.sync_api import Page

pytestmark = pytest.mark.browser

VIEWS = """\
import pandas as pd
import rtnb

example = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
                        "host": pd.Series([], dtype=str), "cpu": pd.Series([], dtype=float)})
feed = rtnb.StreamingFrame(example, time="t", name="feed")
line = feed.plot.line(x="t", y="cpu", by="host", height=240)
mine = feed.plot.line(x="t", y="cpu", height=240)
mine.figure.background_fill_color = "#fff8e1"  # the user's colour: never themed
table = feed.plot.table(["host", "cpu"], rows=5, height=160)
feed.emit(pd.DataFrame({"t": pd.date_range("2026-01-01", periods=6, freq="s"),
                        "host": ["a", "b"] * 3, "cpu": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}))
rtnb.dashboard(line, mine, table)"""

KERNEL_COLOURS = "print(line.figure.background_fill_color, mine.figure.background_fill_color)"

#: Each live plot's colours as the page has them, and the theme's CSS variables.
_JS_COLOURS = """() => {
    const css = getComputedStyle(document.body);
    const v = (name) => css.getPropertyValue(name).trim();
    const plots = [];
    for (const doc of (window.Bokeh ? window.Bokeh.documents : [])) {
        for (const m of doc.all_models) {
            if (!('background_fill_color' in m.properties) || !('right' in m.properties)) {
                continue;
            }
            const get = (model, name) => model.properties[name].get_value();
            const legend = get(m, 'right').find((r) => 'label_text_color' in r.properties);
            plots.push({
                background: get(m, 'background_fill_color'),
                border: get(m, 'border_fill_color'),
                grid: get(m, 'center').filter((r) => 'grid_line_color' in r.properties)
                    .map((g) => get(g, 'grid_line_color')),
                axis_labels: [...get(m, 'below'), ...get(m, 'left')]
                    .map((a) => get(a, 'major_label_text_color')),
                legend: legend ? get(legend, 'label_text_color') : null,
                keys: get(m, 'renderers').length,
            });
        }
    }
    const rows = [];
    const walk = (root) => {
        for (const el of root.querySelectorAll('*')) {
            if (el.shadowRoot) { walk(el.shadowRoot); }
            if (el.isConnected && el.classList.contains('slick-row')) {
                rows.push(getComputedStyle(el).backgroundColor);
            }
        }
    };
    walk(document);
    return {light: document.body.dataset.jpThemeLight, plots, rows,
            vars: {bg: v('--jp-layout-color0'), text: v('--jp-ui-font-color1'),
                   rule: v('--jp-border-color2')}};
}"""

_JS_THEME = """async (theme) => {
    const want = theme.includes('Dark') ? 'false' : 'true';
    await window.jupyterapp.commands.execute('apputils:change-theme', {theme});
    for (let i = 0; i < 200 && document.body.dataset.jpThemeLight !== want; i++) {
        await new Promise((resolve) => setTimeout(resolve, 50));  // the theme's CSS loads
    }
    return document.body.dataset.jpThemeLight;
}"""


def colours(page: Page) -> dict[str, Any]:
    return dict(page.evaluate(_JS_COLOURS))


def _rgb(css: str) -> tuple[int, ...]:
    """``rgb(r, g, b)`` / ``rgba(...)`` / ``#rrggbb`` as integers."""
    css = css.strip()
    if css.startswith("#"):
        digits = css[1:] if len(css) > 4 else "".join(2 * d for d in css[1:])  # #rgb
        return tuple(int(digits[i:i + 2], 16) for i in (0, 2, 4))
    inside = css[css.index("(") + 1:css.index(")")]
    return tuple(int(float(p)) for p in inside.split(",")[:3])


def _luminance(css: str) -> float:
    return sum(_rgb(css)) / (3 * 255)


def _themed(page: Page, light: str) -> bool:
    c = colours(page)
    if c["light"] != light or len(c["plots"]) != 2 or not c["rows"]:
        return False
    themed, mine = (c["plots"] if c["plots"][0]["keys"] == 2 else c["plots"][::-1])
    if light == "false":
        return (themed["background"] == c["vars"]["bg"] and themed["legend"] == c["vars"]["text"]
                and mine["background"] == "#fff8e1")
    return themed["background"] == "#ffffff" and mine["background"] == "#fff8e1"


def test_views_follow_the_jupyterlab_theme(lab: JupyterLab, page: Page) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(VIEWS), nbformat.v4.new_code_cell(KERNEL_COLOURS)]
    lab.add_notebook(nb, "theme.ipynb")
    open_notebook(page, lab, "theme.ipynb")
    assert page.evaluate(_JS_THEME, "JupyterLab Dark") == "false"
    assert run_cells(page, upto=1, timeout=60)

    try:
        wait_until(lambda: _themed(page, "false"), timeout=30, interval=0.25)
    except AssertionError:
        raise AssertionError(f"dark theme not applied: {colours(page)}") from None
    dark = colours(page)
    themed = next(p for p in dark["plots"] if p["keys"] == 2)
    assert _luminance(dark["vars"]["bg"]) < 0.3, dark["vars"]
    assert themed["border"] == dark["vars"]["bg"]
    assert themed["grid"] and all(g == dark["vars"]["rule"] for g in themed["grid"])
    assert themed["axis_labels"] and all(a == dark["vars"]["text"] for a in themed["axis_labels"])
    assert all(_luminance(r) < 0.3 for r in dark["rows"]), dark["rows"]

    # the kernel's document keeps its colours (the theme lives in the page)
    assert run_cells(page, start=1, timeout=60)
    out = str(notebook_outputs(page, cells=[1]))
    assert "#ffffff #fff8e1" in out, out

    # back to light: Bokeh's own colours again, the user's colour untouched
    assert page.evaluate(_JS_THEME, "JupyterLab Light") == "true"
    try:
        wait_until(lambda: _themed(page, "true"), timeout=30, interval=0.25)
    except AssertionError:
        raise AssertionError(f"light theme not restored: {colours(page)}") from None
    light = colours(page)
    themed = next(p for p in light["plots"] if p["keys"] == 2)
    assert themed["legend"] == "#444444" and themed["grid"] == ["#e5e5e5", "#e5e5e5"]
    assert all(_luminance(r) > 0.7 for r in light["rows"]), light["rows"]
    assert notebook_errors(page) == []
