"""The README's short tour, pasted into one notebook cell, shows its dashboard (issue 18).

The cell runs in a real kernel; what it displays is what a person sees: a widget view (the
dashboard: slider, plot, status) and no stray ``<Task pending ...>`` text.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbclient
import nbformat
import pytest

pytestmark = pytest.mark.notebook

ROOT = Path(__file__).resolve().parents[2]


def tour() -> str:
    """The first ``python`` block after the README's "A short tour" heading."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index("## A short tour"):]
    found = re.search(r"```python\n(.*?)```", after, re.S)
    assert found, "the README's tour has no python block"
    return found.group(1)


def test_the_tour_in_one_cell_displays_its_dashboard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTNB_REPLAY_MAX_EVENTS", "2000")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(tour()),
                nbformat.v4.new_code_cell("await src.wait()\nprint(src.graph.state)")]
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    shown = nb.cells[0].outputs
    kinds = [o.output_type for o in shown]
    assert "error" not in kinds
    views = [o for o in shown if o.output_type in ("display_data", "execute_result")
             and "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) == 1, f"the tour cell shows {kinds}"
    plain = " ".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "")
                     for o in shown)
    assert "<Task" not in plain
    assert "finished" in "".join(o.get("text", "") for o in nb.cells[1].outputs)


def test_start_as_a_cells_last_expression_shows_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``src.start()`` returns its task quietly; awaiting it still works."""
    monkeypatch.setenv("RTNB_REPLAY_MAX_EVENTS", "500")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
                    "import asyncio, rtnb\n"
                    "src = rtnb.sources.replay(rtnb.datasets.metrics_path())\n"
                    "src.start()"),
                nbformat.v4.new_code_cell(
                    "task = src.graph._task\nawait task\n"
                    "print(isinstance(task, asyncio.Task), task.done(), src.graph.state)")]
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    assert nb.cells[0].outputs == []
    assert "".join(o.get("text", "") for o in nb.cells[1].outputs).split() == [
        "True", "True", "finished"]
