"""Each notebook run to the end in a real kernel, and what it showed checked against pandas.

nbval (``notebooks/``) proves the cells run; these tests append a cell that waits for the
replay to finish and compares what reached the plot with pandas on the same rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    "expected": len(expected), "plotted": len(plotted),
    "matched": int(merged.notna().all(axis=1).sum()),
    "max_abs_diff": float((merged["mean_pd"] - merged["mean_plot"]).abs().max()),
    "late": cpu.counters.late, "updates": view.updates,
}))
"""


def run_with_check(name: str, check: str, max_events: int,
                   monkeypatch: pytest.MonkeyPatch, *, before_start: str | None = None,
                   ) -> dict[str, float]:
    """Run notebook ``name`` with ``check`` appended; ``before_start`` goes before the cell
    that starts the replay (to collect outputs the notebook does not keep)."""
    monkeypatch.setenv("RTNB_REPLAY_MAX_EVENTS", str(max_events))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    if before_start is not None:
        at = next(i for i, c in enumerate(nb.cells) if ".start()" in c.source)
        nb.cells.insert(at, nbformat.v4.new_code_cell(before_start))
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
merged = expected.merge(plotted, on=["host", "window_start"], how="outer",
                        suffixes=("_pd", "_plot"))
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


DASHBOARD_SETUP = """
window_late = per_host.late.collect()
rolling_late = latency.late.collect()
"""

DASHBOARD_CHECK = """
await src.wait()
for v in board.views:
    await v.drain()
import asyncio, json, os
rows = int(os.environ["RTNB_REPLAY_MAX_EVENTS"])
accepted = feed.sort_values("arrival", kind="stable").iloc[:rows]
key = ["timestamp", "host"]

def on_time(late_parts):
    late = pd.concat(late_parts, ignore_index=True) if late_parts else accepted.iloc[:0]
    return accepted[~accepted.set_index(key).index.isin(late.set_index(key).index)], len(late)

def compare(expected, plotted, on, cols):
    m = expected.merge(plotted, on=on, how="outer", suffixes=("_pd", "_plot"), indicator=True)
    both = m["_merge"] == "both"
    diff = max(float((m.loc[both, c + "_pd"] - m.loc[both, c + "_plot"]).abs().max())
               for c in cols)
    return {"expected": len(expected), "plotted": len(plotted), "matched": int(both.sum()),
            "max_abs_diff": diff}

windows_ok, n_window_late = on_time(window_late)
g = windows_ok.groupby(["host", pd.Grouper(key="timestamp", freq="30s")])
cpu = compare(g["cpu"].mean().rename("y").reset_index().rename(columns={"timestamp": "x"}),
              cpu_view.data(), ["host", "x"], ["y"])
f = windows_ok.groupby(pd.Grouper(key="timestamp", freq="30s"))["cpu"]
band = compare(pd.DataFrame({"lower": f.min(), "y": f.median(), "upper": f.max()}).dropna()
               .reset_index().rename(columns={"timestamp": "x"}), band_view.data(), ["x"],
               ["lower", "y", "upper"])
last = g["requests"].sum().reset_index().sort_values("timestamp").groupby("host").tail(1)
bars = compare(last[["host", "requests"]], requests_view.data(), ["host"], ["requests"])

rolling_ok, n_rolling_late = on_time(rolling_late)
ordered = rolling_ok.sort_values("timestamp", kind="stable")
rolled = (ordered.groupby("host").rolling("2min", on="timestamp")["latency_ms"].mean()
          .rename("y").reset_index().rename(columns={"timestamp": "x"}))
plotted = latency_view.data()
lat = compare(rolled, plotted, ["host", "x"], ["y"])
lat["plotted_subset"] = lat["matched"] == lat["plotted"]
lat["per_host_max"] = int(plotted.groupby("host").size().max())

table = late_view.data()
last_late = pd.concat(window_late, ignore_index=True).iloc[-8:][
    ["timestamp", "arrival", "host", "cpu"]]
table_ok = bool((table.reset_index(drop=True) == last_late.reset_index(drop=True)).all().all())

# what-if: a new window size recomputes the retained history; compare with a fresh pipeline
# that had 1min windows from the start, fed the same batches
window.value = "1min"
await asyncio.sleep(0.5)
fresh = rtnb.StreamingFrame(events.example, time="timestamp")
fresh_out = fresh.window(rtnb.tumbling("1min"), by="host", allowed_lateness=lateness,
                         emit="update").agg(cpu=("cpu", "mean"),
                                            requests=("requests", "sum")).collect()
for b in per_host.retained:
    fresh.emit(b)
fresh.close()
fr = pd.concat(fresh_out, ignore_index=True).drop_duplicates(["window_start", "host"], keep="last")
whatif = compare(fr.rename(columns={"window_start": "x", "cpu": "y"})[["host", "x", "y"]],
                 cpu_view.data(), ["host", "x"], ["y"])
whatif["title"] = cpu_view.figure.title.text
snap = status.snapshot()
print(json.dumps({"cpu": cpu, "band": band, "bars": bars, "latency": lat, "table_ok": table_ok,
                  "window_late": n_window_late, "late_counter": per_host.counters.late,
                  "rolling_late": n_rolling_late, "whatif": whatif, "accepted": len(accepted),
                  "status": {k: snap[k] for k in ("state", "events_in", "late")}}, default=str))
"""


def test_dashboard_notebook_plots_what_pandas_computes(monkeypatch: pytest.MonkeyPatch) -> None:
    result: dict[str, Any] = run_with_check(  # type: ignore[assignment]
        "03-live-dashboards.ipynb", DASHBOARD_CHECK, 24_000, monkeypatch,
        before_start=DASHBOARD_SETUP)
    assert result["accepted"] == result["status"]["events_in"] == 24_000
    assert result["window_late"] == result["late_counter"] > 0  # the feed has stragglers
    for name in ("cpu", "band", "bars"):
        part = result[name]
        assert part["plotted"] == part["expected"] == part["matched"], name
        assert part["max_abs_diff"] < 1e-9, name
    # the latency lines are decimated: every plotted point is pandas' rolling mean there
    lat = result["latency"]
    assert lat["plotted_subset"] and lat["per_host_max"] <= 1000
    assert lat["max_abs_diff"] < 1e-9
    assert result["table_ok"]
    whatif = result["whatif"]
    assert whatif["plotted"] == whatif["expected"] == whatif["matched"] > 0
    assert whatif["max_abs_diff"] < 1e-9 and "tumbling 1min" in whatif["title"]
    assert result["status"]["state"] == "finished"


ALERTS_CHECK = """
await live.wait()
import json
sweep = pd.DataFrame(rows)
# the notebook's what-if equals a fresh computation of the same day at the same settings
threshold.value, for_.value = 4.0, "1min"
again = score(whole_day())
tuned = sweep[(sweep["z"] == 4.0) & (sweep["for"] == "1min")].iloc[0]
# the default detector: web-03 alone gives the day's web-03 alerts (keys are independent),
# every alert of the day has its reason, and the plot and the live pipeline got rows
print(json.dumps({
    "nab": sweep["nab_score"].round(3).tolist(), "recall": sweep["recall"].round(3).tolist(),
    "false_positives": sweep["false_positives"].tolist(),
    "again_nab": round(again.nab_score, 3), "tuned_nab": round(float(tuned["nab_score"]), 3),
    "scores_widget": "NAB score" in scores.value,
    "default": {
        "firing": int((events["state"] == "firing").sum()), "table": len(table),
        "reasons": int(table["reason"].notna().sum()),
        "windows": len(windows), "labels": len(labels),
        "nab": result.nab_score, "profiles": sorted(result.scores),
        "web03_plot_alerts": len(latency_view.overlays[-1].fired.data["x"]),
        "web03_day_alerts": int(((events["host"] == "web-03")
                                 & (events["state"] == "firing")).sum()),
        "plotted": len(latency_view.sources[next(iter(latency_view.sources))].data["x"]),
        "live_rows": rtnb.metrics.snapshot(live.graph).events_in,
    },
}, default=str))
"""


def test_alerts_notebook_scores_the_default_detector_and_a_tuned_rule(
        monkeypatch: pytest.MonkeyPatch) -> None:
    result: dict[str, Any] = run_with_check(  # type: ignore[assignment]
        "05-thresholds-and-alerts.ipynb", ALERTS_CHECK, 6_000, monkeypatch)
    nab, recall, fps = result["nab"], result["recall"], result["false_positives"]
    # z>3 at once: everything found, drowned in false alarms; z>4 for 1 min: few of them
    assert recall[0] == 1.0 and fps[0] > 100 and nab[0] < 0
    assert nab[2] > nab[1] > nab[0] and recall[2] == 1.0 and fps[2] < 10
    assert nab[3] < nab[2]  # too strict: incidents missed
    assert result["again_nab"] == result["tuned_nab"]
    assert result["scores_widget"]
    # The default detector, which the notebook leads with (one run of the notebook for both).
    default = result["default"]
    # one table row per alert fired, each with the reason the detector gave on its row
    assert default["firing"] == default["table"] == default["reasons"] > 0
    # every labelled window appears once in the per-window table, with its incident
    assert default["windows"] == default["labels"] > 0
    assert 0 < default["nab"] <= 100
    assert default["profiles"] == ["reward_low_FN_rate", "reward_low_FP_rate", "standard"]
    # web-03 scored alone draws exactly the day's web-03 alerts on its plot
    assert default["web03_plot_alerts"] == default["web03_day_alerts"] > 0
    assert 1_000 < default["plotted"] <= 4_000
    assert default["live_rows"] == 6_000
