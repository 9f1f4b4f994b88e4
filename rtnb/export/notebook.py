"""Export the pipeline a notebook defines (``rtnb export notebook.ipynb -o monitor.py``).

The notebook is executed headless in a real kernel with its sources bounded (``max_events``).
Two cells are added: one before the notebook's own cells that watches every source the
notebook starts (and, with ``record``, keeps every batch), and one after them that waits for
those sources to finish and exports one of their pipelines (the last started, or the one whose
source is named ``pipeline``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rtnb._time import shown
from rtnb.errors import ExportError
from rtnb.frame import StreamingFrame
from rtnb.graph import START_HOOKS
from rtnb.pipeline import Pipeline, Recording

__all__ = ["export_notebook", "finish", "install"]

_started: list[StreamingFrame] = []
_recordings: dict[int, Recording] = {}
_params_at_start: dict[int, dict[str, object]] = {}
_settings: dict[str, Any] = {}


def install(*, max_events: int | None = None, record: bool = False) -> None:
    """In the notebook's kernel: watch (bound, and optionally record) every source started."""
    _settings.update(max_events=max_events, record=record)
    _started.clear()
    _recordings.clear()
    _params_at_start.clear()
    if _on_start not in START_HOOKS:
        START_HOOKS.append(_on_start)


def _on_start(root: StreamingFrame) -> None:
    from rtnb.export.runtime import limit

    if root not in _started:
        _started.append(root)
    if _settings.get("max_events") is not None and root.source is not None:
        limit(root.source, int(_settings["max_events"]))
    if _settings.get("record") and id(root) not in _recordings:
        pipeline = Pipeline(root)
        _recordings[id(root)] = pipeline.record()
        _params_at_start[id(root)] = {p.name: p.value for p in pipeline.params}


async def finish(out: str, *, pipeline: str | None = None, record: str | None = None,
                 origin: str = "a notebook", timeout: float = 300.0,
                 dashboard: str | None = None) -> dict[str, Any]:
    """In the notebook's kernel, after its cells: wait for the sources, export, report."""
    for root in _started:
        if root.graph.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(root.wait(), timeout)
    if not _started:
        msg = (f"{origin} starts no source (no .start() / .arun() ran), so there is no "
               "pipeline to export")
        raise ExportError(msg)
    if pipeline is None:
        root = _started[-1]
    else:
        matches = [r for r in _started if r.name == pipeline]
        if not matches:
            msg = (f"{origin} started no source named {pipeline!r}; it started "
                   f"{[r.name for r in _started]}")
            raise ExportError(msg)
        root = matches[-1]
    chosen = Pipeline(root)
    path = chosen.export(out, origin=origin)
    report: dict[str, Any] = {
        "script": str(path), "pipeline": chosen.name, "nodes": chosen.node_names(),
        "params": {p.name: shown(p.value) for p in chosen.params},
        "started": [r.name for r in _started],
    }
    if dashboard is not None:
        report["dashboard"] = str(chosen.export_dashboard(dashboard, origin=origin))
    if record is not None:
        recording = _recordings.get(id(root))
        if recording is None:  # pragma: no cover - install(record=True) always records
            msg = "nothing was recorded: call install(record=True) before the sources start"
            raise ExportError(msg)
        report["record"] = str(recording.save(record))
        # A Param moved while the recorded run went on: the notebook's output mixes settings
        # and the exported script (at the final values) cannot match it batch for batch.
        before = _params_at_start.get(id(root), {})
        report["params_changed_during_run"] = sorted(
            p.name for p in chosen.params if before.get(p.name, p.value) != p.value)
    print(json.dumps(report))
    return report


def export_notebook(notebook: str | Path, out: str | Path, *, pipeline: str | None = None,
                    max_events: int | None = 20_000, record: str | Path | None = None,
                    timeout: float = 600.0,
                    dashboard: str | Path | None = None,
                    progress: Callable[[int, int, float], None] | None = None,
                    ) -> dict[str, Any]:
    """Execute ``notebook`` headless and export the pipeline it runs to the script ``out``.

    Parameters
    ----------
    notebook
        The ``.ipynb`` file. It runs in its own folder, in a fresh ``python3`` kernel.
    out
        The script to write.
    pipeline
        The name of the source whose pipeline to export (default: the last one started).
    max_events
        Bound every source to this many events so the notebook finishes (``None``: no bound).
    record
        Also save what the pipeline's source and nodes emitted in this run to this folder
        (``input.parquet`` and one file per node): the exported script replays it with
        ``--input`` and writes the same files with ``--output`` (parity checks).
    timeout
        Seconds allowed per cell.
    dashboard
        Also write the pipeline's views as a Bokeh server app here (``rtnb serve`` it).
    progress
        Called after each code cell with ``(cells done, code cells, seconds so far)``
        (``rtnb export`` prints it).

    Returns
    -------
    dict
        ``script``, ``pipeline``, ``nodes``, ``params`` and ``started`` (and ``record``,
        ``dashboard``).
    """
    import nbclient
    import nbformat

    nb_path = Path(notebook).resolve()
    if not nb_path.exists():
        msg = f"no such notebook: {str(nb_path)!r}"
        raise ExportError(msg)
    nb = nbformat.read(nb_path, as_version=4)  # type: ignore[no-untyped-call]
    setup = ("import rtnb.export.notebook as _rtnb_export\n"
             f"_rtnb_export.install(max_events={max_events!r}, record={record is not None!r})")
    record_arg = None if record is None else str(Path(record).resolve())
    board_arg = None if dashboard is None else str(Path(dashboard).resolve())
    final = (f"await _rtnb_export.finish({str(Path(out).resolve())!r}, pipeline={pipeline!r}, "
             f"record={record_arg!r}, origin={nb_path.name!r}, timeout={timeout!r}, "
             f"dashboard={board_arg!r})")
    nb.cells.insert(0, nbformat.v4.new_code_cell(setup))  # type: ignore[no-untyped-call]
    nb.cells.append(nbformat.v4.new_code_cell(final))  # type: ignore[no-untyped-call]
    saved = os.environ.get("RTNB_REPLAY_MAX_EVENTS")
    if max_events is not None:
        os.environ["RTNB_REPLAY_MAX_EVENTS"] = str(max_events)
    try:
        client = nbclient.NotebookClient(nb, timeout=int(timeout), kernel_name="python3",
                                         resources={"metadata": {"path": str(nb_path.parent)}})
        if progress is not None:
            code_cells = sum(c.cell_type == "code" for c in nb.cells)
            began, done = time.monotonic(), [0]

            def tell(**_: Any) -> None:
                done[0] += 1
                progress(done[0], code_cells, time.monotonic() - began)

            client.on_cell_executed = tell
        try:
            client.execute()
        except nbclient.exceptions.CellExecutionError as exc:
            ename, evalue = getattr(exc, "ename", ""), getattr(exc, "evalue", "")
            detail = f"{ename}: {evalue}" if ename else str(exc)[-2000:]
            msg = f"running {nb_path.name} failed: {detail}"
            raise ExportError(msg) from exc
    finally:
        if saved is None:
            os.environ.pop("RTNB_REPLAY_MAX_EVENTS", None)
        else:
            os.environ["RTNB_REPLAY_MAX_EVENTS"] = saved
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    lines = [line for line in text.strip().splitlines() if line.startswith("{")]
    if not lines:  # pragma: no cover - finish() always prints its report
        msg = f"exporting {nb_path.name} printed no report: {text[-500:]!r}"
        raise ExportError(msg)
    report: dict[str, Any] = json.loads(lines[-1])
    return report

