"""Live views (issue #4) in a real JupyterLab, driven from Debian's chromium.

Notebook 03 builds one dashboard: three Param sliders, the status widget and one Bokeh
document holding four live figures (CPU per host, fleet band, latency, requests) and the
late-rows table, fed by a replay of the bundled day. The tests check what a user sees:

* every figure updates, a slider change reaches the kernel and the CPU plot redraws its
  whole history at the new window (what-if), the status counts move;
* after "stop", no more Bokeh messages arrive (counted on the kernel websocket);
* re-running the cells tears the old board down: the update rate does not double and the
  old document stops changing;
* at a high input rate for a minute, clicks are answered and the JS heap stays bounded;
* the end-to-end latency from a row's emit in the kernel to the frame that draws it.

Timings are measured and reported, never asserted (the machine is shared): each test prints
its figures and writes them as JSON to ``$RTNB_BROWSER_REPORT_DIR`` (default: the test's
temporary directory). Notebooks the tests change are written into the lab's temporary root.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import (
    JupyterLab,
    KernelMessageLog,
    bokeh_column,
    bokeh_figures,
    cell_errors,
    click_status_button,
    notebook_errors,
    open_notebook,
    rtnb_status,
    run_cells,
    set_slider,
    wait_for_bokeh,
    wait_until,
)
from playwright.sync_api import Page

pytestmark = pytest.mark.browser

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "03-live-dashboards.ipynb"
#: One host's CPU line and the fleet's median line (rtnb names sources "<frame>:<key>").
CPU_LINE = "feed.by_event_time.window:web-01"
BAND_LINE = "feed.by_event_time.window_2:median"
#: The board: four plots (keyed by the title's text before " — ") and the late-rows table.
BOARD = ["cpu", "latency_ms", "median", "requests", "table"]
#: Cells of notebook 03 from the feed through ``task = src.start()`` (the last code cell).
FEED_CELL, START_CELL = 3, 9
#: Every row of the bundled day: the replay keeps going for as long as a test looks.
WHOLE_DAY = "2000000"


# -- helpers ---------------------------------------------------------------------------------


def board(page: Page, live_only: bool = True) -> dict[str, dict[str, Any]]:
    """The dashboard's figures keyed by role ("cpu", "median", ..., "table")."""
    out = {}
    for fig in bokeh_figures(page, live_only):
        role = "table" if fig["kind"] == "table" else fig["title"].split(" — ")[0]
        out[role] = fig
    return out


def spacings_s(xs: list[float]) -> set[float]:
    """Distinct gaps (s) between consecutive x values given in ms."""
    return {round((b - a) / 1000, 3) for a, b in itertools.pairwise(xs)}


def start_board(page: Page, lab: JupyterLab, name: str, nb: Any = NOTEBOOK) -> None:
    """Add notebook *nb* as *name*, open it and run every cell (none blocks)."""
    lab.add_notebook(nb, name)
    open_notebook(page, lab, name)
    assert run_cells(page, timeout=120)
    assert wait_for_bokeh(page, timeout=60) == 1  # the whole board is one Bokeh document


def wait_all_updating(page: Page, roles: list[str], timeout: float = 60.0) -> None:
    """Wait until each figure in *roles* has applied a change since now (and has rows)."""
    def with_rows() -> dict[str, dict[str, Any]] | None:
        now = board(page)
        return now if all(now.get(r, {}).get("rows") for r in roles) else None

    first = wait_until(with_rows, timeout=timeout,
                       message=f"not every figure has rows: {board(page)}")

    def moved() -> list[str]:
        now = board(page)
        return [r for r in roles if not now[r]["updates"] > first[r]["updates"]]

    wait_until(lambda: not moved(), timeout=timeout,
               message=f"figures that did not update: {moved()}")


def lagging_status(page: Page, state: str, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until the status widget shows *state*; return what it shows."""
    def shown() -> dict[str, Any] | None:
        now = rtnb_status(page)
        return now if now.get("state") == state else None

    return wait_until(shown, timeout=timeout,
                      message=f"status never showed {state!r}: {rtnb_status(page)}")


def report(name: str, figures: dict[str, Any], tmp_path: Path) -> Path:
    """Print *figures* and write them to ``$RTNB_BROWSER_REPORT_DIR/<name>.json``."""
    target_dir = Path(os.environ.get("RTNB_BROWSER_REPORT_DIR") or tmp_path)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{name}.json"
    target.write_text(json.dumps(figures, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"\n[{name}] {json.dumps(figures, default=str)}\n[{name}] written to {target}")
    return target


def percentile(values: list[float], q: float) -> float:
    """The *q*-th percentile (nearest rank) of *values*."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# -- 1. every figure updates; a slider recomputes the history ---------------------------------


def test_four_plots_update_and_whatif(
    lab: JupyterLab, page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RTNB_REPLAY_MAX_EVENTS", WHOLE_DAY)
    start_board(page, lab, "dashboard-whatif.ipynb")

    # (1) one document with the four plots and the table, every one of them updating.
    assert sorted(board(page)) == BOARD
    wait_all_updating(page, BOARD)
    b1 = board(page)
    wait_until(lambda: all(board(page)[r]["last_x"] > b1[r]["last_x"]
                           for r in ("cpu", "median", "latency_ms")),
               timeout=60, message="the time plots did not move forward")
    assert board(page)["table"]["rows"] > 0  # late rows listed

    # (2) the status widget counts move.
    s1 = lagging_status(page, "running")
    wait_until(lambda: rtnb_status(page)["events_in"] > s1["events_in"], timeout=30,
               message=f"events in stuck at {s1['events_in']}")

    # (3) what-if: window 30s -> 45s. The kernel re-titles the plot and recomputes the
    # retained history, so every point of the line, also those drawn before the change,
    # is 45 s from the next.
    assert "tumbling 30s" in board(page)["cpu"]["title"]
    before = bokeh_column(page, CPU_LINE)
    assert len(before) > 10
    assert spacings_s(before) == {30.0}
    assert set_slider(page, "45s", description="window") == "45s"
    wait_until(lambda: "tumbling 45s" in board(page)["cpu"]["title"], timeout=60,
               message=f"title did not follow the slider: {board(page)['cpu']['title']}")

    def recomputed(name: str) -> bool:
        xs = bokeh_column(page, name)
        older = [x for x in xs if x <= before[-1]]
        return len(older) > 10 and spacings_s(xs) == {45.0}

    wait_until(lambda: recomputed(CPU_LINE), timeout=60,
               message=f"CPU line not recomputed: gaps {spacings_s(bokeh_column(page, CPU_LINE))}")
    wait_until(lambda: recomputed(BAND_LINE), timeout=60,
               message=f"band not recomputed: gaps {spacings_s(bokeh_column(page, BAND_LINE))}")

    # (4) the board goes on at the new window, and no cell shows an error.
    wait_all_updating(page, BOARD)
    assert spacings_s(bokeh_column(page, CPU_LINE)) == {45.0}
    assert cell_errors(page) == []
    assert notebook_errors(page) == []


# -- 2. stop means no more messages -----------------------------------------------------------


def test_stop_means_no_more_comm_messages(
    lab: JupyterLab, page: Page, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RTNB_REPLAY_MAX_EVENTS", WHOLE_DAY)
    log = KernelMessageLog(page)
    start_board(page, lab, "dashboard-stop.ipynb")
    wait_all_updating(page, BOARD)
    lagging_status(page, "running")

    # Before: Bokeh patches keep coming (the counter can see them).
    t0 = time.time()
    page.wait_for_timeout(3000)
    running = log.select(kind="bokeh-patch", sent_after=t0)
    assert running, f"no Bokeh patch in 3 s while running; sockets {log.sockets}"

    click_ms = click_status_button(page, "stop", "stopped", timeout=60)
    assert click_ms is not None, f"status never showed 'stopped': {rtnb_status(page)}"
    stopped_at = time.time()
    # Grace: the views' last flush (every 100 ms) and the status widget's last refreshes
    # (every second) may still be on their way.
    quiet_from = stopped_at + 3.0
    page.wait_for_timeout(3000)
    updates_from = {r: f["updates"] for r, f in board(page).items()}
    page.wait_for_timeout(5000)
    updates_to = {r: f["updates"] for r, f in board(page).items()}
    log.pump(1000)  # frames sent up to now reach Python

    after = log.select(kind="comm_msg", sent_after=quiet_from)
    bokeh_after = [m for m in after if m.kind.startswith("bokeh")]
    flushed = log.select(kind="bokeh-patch", sent_after=stopped_at - click_ms / 1000,
                         sent_before=quiet_from)
    report("dashboard-stop", {
        "bokeh_patches_per_s_running": round(len(running) / 3.0, 1),
        "stop_click_to_state_ms": round(click_ms),
        "bokeh_patches_between_click_and_grace_end": len(flushed),
        "comm_msgs_after_grace": len(after),
        "bokeh_msgs_after_grace": len(bokeh_after),
        "window_s": round(time.time() - quiet_from, 1),
    }, tmp_path)
    assert bokeh_after == [], f"Bokeh messages after stop: {Counter(m.events for m in after)}"
    assert after == [], f"comm messages after stop: {Counter(m.kind for m in after)}"
    assert updates_to == updates_from, "the page still applied changes after stop"
    assert rtnb_status(page)["state"] == "stopped"
    assert notebook_errors(page) == []


# -- 3. re-running the cells does not double the updates ---------------------------------------


def test_rerun_does_not_double_updates(
    lab: JupyterLab, page: Page, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RTNB_REPLAY_MAX_EVENTS", WHOLE_DAY)
    log = KernelMessageLog(page)
    start_board(page, lab, "dashboard-rerun.ipynb")
    wait_all_updating(page, BOARD)
    window = 6.0

    def patch_rate() -> tuple[float, Counter[str | None]]:
        t0 = time.time()
        page.wait_for_timeout(window * 1000)
        log.pump(500)
        msgs = log.select(kind="bokeh-patch", sent_after=t0, sent_before=t0 + window)
        return len(msgs) / window, Counter(m.comm_id for m in msgs)

    rate_before, comms_before = patch_rate()
    assert rate_before > 0
    assert len(comms_before) == 1  # one Bokeh model for the whole board
    (old_comm,) = comms_before
    (old_doc,) = {f["doc"] for f in bokeh_figures(page)}

    # Re-run the feed, the Params, the pipeline, the board and the start cell.
    assert run_cells(page, start=FEED_CELL, upto=START_CELL + 1, timeout=120)
    rerun_at = time.time()
    wait_for_bokeh(page, timeout=60)
    wait_until(lambda: {f["doc"] for f in bokeh_figures(page)} not in ({old_doc}, set()),
               timeout=60, message="no new board after the re-run")
    wait_all_updating(page, BOARD)
    lagging_status(page, "running")
    quiet_from = rerun_at + 3.0
    page.wait_for_timeout(max(0.0, quiet_from - time.time()) * 1000)
    old_figures = [f for f in bokeh_figures(page, live_only=False) if f["doc"] == old_doc]
    old_from = sum(f["updates"] for f in old_figures)

    rate_after, comms_after = patch_rate()
    old_to = sum(f["updates"] for f in bokeh_figures(page, live_only=False)
                 if f["doc"] == old_doc)
    old_after = log.select(comm_id=old_comm, sent_after=quiet_from)
    live_docs = {f["doc"] for f in bokeh_figures(page)}
    report("dashboard-rerun", {
        "bokeh_patches_per_s_before": round(rate_before, 1),
        "bokeh_patches_per_s_after": round(rate_after, 1),
        "ratio": round(rate_after / rate_before, 2),
        "comms_after": len(comms_after),
        "old_comm_msgs_after_rerun": len(old_after),
        "old_doc_updates_during_window": old_to - old_from,
    }, tmp_path)
    assert len(live_docs) == 1 and old_doc not in live_docs
    assert old_figures, "the old document is gone from window.Bokeh.documents"
    assert list(comms_after) != [old_comm] and len(comms_after) == 1
    assert old_after == [], f"the old board still gets: {Counter(m.kind for m in old_after)}"
    assert old_to == old_from, "the old board's document still changes"
    assert rate_after / rate_before < 1.5
    assert page.locator("table.rtnb-status").count() == 1
    assert notebook_errors(page) == []
