"""Recording a pipeline's batches: what parity checks, ``--output`` and shadow replays read.

:class:`Recording` lives apart from :mod:`rtnb.pipeline` (which re-exports it) so that the
modules reading recordings (the exported scripts' runtime, shadow replays) need not import
the pipeline module that starts them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from rtnb.frame import StreamingFrame

if TYPE_CHECKING:
    from rtnb.pipeline import Pipeline

__all__ = ["Recording"]


class Recording:
    """Every batch a pipeline's source and nodes emit, saved as Parquet (parity checks).

    ``save(folder)`` writes ``input.parquet`` (the source's batches) and one file per node
    (and per ``.late`` output),
    each with a ``__batch__`` column numbering the batches, plus ``manifest.json``. An
    exported script replays ``input.parquet`` with ``--input`` and writes the same files with
    ``--output``, so the two folders can be compared file by file.

    It keeps every batch in memory until :meth:`stop` (which keeps what it holds and
    records nothing more): a recording of a long live run grows with the run.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> src = rtnb.StreamingFrame(pd.DataFrame({"x": pd.Series([], dtype=float)}), name="s")
    >>> doubled = src.assign(y=src["x"] * 2)
    >>> rec = rtnb.pipeline.Recording(rtnb.Pipeline(doubled))
    >>> src.emit(pd.DataFrame({"x": [1.0, 2.0]}))
    >>> rec.stop()
    >>> src.emit(pd.DataFrame({"x": [3.0]}))
    >>> [len(b) for b in rec.batches["input"]]
    [2]
    """

    def __init__(self, pipeline: Pipeline, frames: Iterable[StreamingFrame] | None = None,
                 *, keep_input: bool = True) -> None:
        self.pipeline = pipeline
        self.batches: dict[str, list[pd.DataFrame]] = {}
        self._examples: dict[str, pd.DataFrame] = {}
        self._sinks: list[Any] = []
        targets = list(frames) if frames is not None else pipeline.frames
        if keep_input:
            self._watch("input", pipeline.root)
        for frame in targets:
            self._watch(frame.name, frame)
            late = getattr(frame, "late", None)
            if isinstance(late, StreamingFrame):
                self._watch(late.name, late)

    def _watch(self, key: str, frame: StreamingFrame) -> None:
        out: list[pd.DataFrame] = []
        self.batches[key] = out
        self._examples[key] = frame.example
        self._sinks.append(frame.stream.sink(out.append))

    def stop(self) -> None:
        """Record nothing more (the batches recorded so far stay in ``batches``)."""
        for node in self._sinks:
            node.destroy()
        self._sinks.clear()

    def save(self, folder: str | Path) -> Path:
        """Write the recorded batches to ``folder``; returns it."""
        from rtnb.export.script import identifier

        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        manifest: dict[str, str] = {}
        used: set[str] = set()
        for key, batches in self.batches.items():
            file_name = identifier(key)
            while file_name in used:
                file_name += "_"
            used.add(file_name)
            manifest[key] = f"{file_name}.parquet"
            frames = [b.assign(__batch__=i) for i, b in enumerate(batches)]
            if frames:
                data = pd.concat(frames, ignore_index=True)
            else:
                data = self._examples[key].assign(__batch__=pd.Series([], dtype="int64"))
            data.to_parquet(target / manifest[key], index=False)
        (target / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        return target
