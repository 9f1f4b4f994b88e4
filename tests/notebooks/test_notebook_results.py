"""Each notebook run to the end in a real kernel, and what it showed checked against pandas.

nbval (``notebooks/``) proves the cells run; these tests append a cell that waits for the
replay to finish and compares what reached the plot with pandas on the same rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbclient
import nbformat
import pytest

pytestmark = pytest.mark.notebook

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

QUICKSTART_CHECK = """
await src.wait()
import json
import pandas as pd
rows = int(__import__("os").environ["RTNB_REPLAY_MAX_EVENTS"])
df = rtnb.datasets.metrics().iloc[:rows]
df = df[df["requests"] > 0]
expected = (df.groupby(["host", pd.Grouper(key="timestamp", freq="10s")])["cpu"].mean()
            .rename("mean").reset_index())
plotted = view.data().rename(columns={"x": "timestamp", "y": "mean"})
merged = expected.merge(plotted, on=["host", "timestamp"], how="outer", suffixes=("_pd", "_plot"))
print(json.dumps({
    "expected": len(expected), "plotted": len(plotted), "matched": int(merged.notna().all(axis=1).sum()),
    "max_abs_diff": float((merged["mean_pd"] - merged["mean_plot"]).abs().max()),
    "late": cpu.counters.late, "updates": view.updates,
}))
"""


def run_with_check(name: str, check: str, max_events: int,
                   monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    monkeypatch.setenv("RTNB_REPLAY_MAX_EVENTS", str(max_events))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(check))
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    outputs = nb.cells[-1].outputs
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    return json.loads(text.strip().splitlines()[-1])


def test_quickstart_plots_exactly_what_pandas_computes(monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_with_check("01-quickstart.ipynb", QUICKSTART_CHECK, 24_000, monkeypatch)
    # 24,000 rows = 2,000 s of 12 hosts: 200 windows of 10 s per host, all of them plotted.
    assert result["expected"] == 12 * 200
    assert result["plotted"] == result["expected"] == result["matched"]
    assert result["max_abs_diff"] < 1e-9
    assert result["late"] == 0
    assert result["updates"] >= 1


WATERMARKS_CHECK = """
await arrivals.wait()
import json
rows = int(__import__("os").environ["RTNB_REPLAY_MAX_EVENTS"])
accepted = feed.sort_values("arrival", kind="stable").iloc[:rows]
late = pd.concat(late_rows, ignore_index=True) if late_rows else accepted.iloc[:0]
on_time = accepted[~accepted.set_index(["timestamp", "host"]).index.isin(
    late.set_index(["timestamp", "host"]).index)]
expected = (on_time.groupby(["host", pd.Grouper(key="timestamp", freq="10s")]).size()
            .rename("n").reset_index().rename(columns={"timestamp": "window_start"}))
plotted = view.data().rename(columns={"x": "window_start", "y": "n"})
merged = expected.merge(plotted, on=["host", "window_start"], how="outer", suffixes=("_pd", "_plot"))
print(json.dumps({
    "accepted": len(accepted), "late": len(late), "late_counter": counts.counters.late,
    "windows": len(expected), "plotted": len(plotted),
    "matched": int((merged["n_pd"] == merged["n_plot"]).sum()),
    "in_windows": int(plotted["n"].sum()),
}))
"""


def test_watermarks_notebook_loses_nothing_and_counts_like_pandas(
        monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_with_check("02-windows-and-watermarks.ipynb", WATERMARKS_CHECK, 6_000,
                            monkeypatch)
    # Every accepted row is either counted in exactly one window or reported late.
    assert result["in_windows"] + result["late"] == result["accepted"] == 6_000
    assert result["late"] == result["late_counter"] > 0  # the feed has stragglers
    # The plotted window counts are pandas' counts of the on-time rows, window by window.
    assert result["plotted"] == result["windows"] == result["matched"]
