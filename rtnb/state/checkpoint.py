"""Checkpoints: where the source was and what every stateful node held, saved atomically.

A :class:`Checkpoint` is a SQLite file (stdlib :mod:`sqlite3`) with one row per pipeline
name: the source position, a blob of operator state, a description of the pipeline (nodes,
schemas, Params) and the time it was written, all in one transaction, so a process killed
while saving leaves the previous checkpoint intact.

What is saved
    Every node's counters, and the *data* state of every stateful node, never its
    configuration (Params, callables): window and rolling engines (open windows, pending
    rows, watermark, lateness bookkeeping, key codes, the ``retain=`` history), detectors
    (their per-key state and key codes), ``rtnb.alert`` (rule state per key, held rows) and
    ``rtnb.detect.absence``. A restart rebuilds the same pipeline (same script, same Param
    values) and puts that state back into the fresh objects.

Where the source resumes (:func:`source_kind`)
    ``replay``: at the first row not emitted yet (rows are sorted stably by time, so a row's
    position never changes). Recorded batches (``--input``): at the next batch. Broker
    sources that keep a consumer position (Redis consumer groups, Kafka groups, JetStream
    durables, AMQP named queues, MQTT persistent sessions with qos > 0): the broker resumes
    from what was acknowledged; only operator state is saved. Messages acknowledged after the
    last checkpoint and before a crash are not in the restored state, and messages not yet
    acknowledged are delivered again (at least once): only a stop that saved a final
    checkpoint is exact. Live feeds (WebSocket, SSE, core NATS, AMQP without a queue, MQTT
    qos 0 or clean sessions) have no position: operator state is restored and the feed goes
    on from whatever it sends now. Sources that would re-read from their start on every run
    (``tail``, a Redis stream without a group, an ephemeral JetStream consumer) are refused:
    the restored state would count their data twice.

A checkpoint file is unpickled: treat it like the script itself (writable only by you).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtnb.errors import CheckpointError
from rtnb.sources.base import source_kind

if TYPE_CHECKING:
    from rtnb.pipeline import Pipeline

__all__ = ["Captured", "Checkpoint", "source_kind"]

log = logging.getLogger("rtnb")

#: Format of the state blob written. 3: detectors save their per-key state as arrays (format
#: 2 held a dict per key, which they still restore); an older rtnb refuses format 3.
VERSION = 3
#: Formats this rtnb reads; a checkpoint of another format is refused.
READABLE = (2, 3)

_TABLE = "rtnb_checkpoints"
_SCHEMA = (f"CREATE TABLE IF NOT EXISTS {_TABLE} (pipeline TEXT PRIMARY KEY, "
           "version INTEGER NOT NULL, fingerprint TEXT NOT NULL, source TEXT NOT NULL, "
           "position BLOB NOT NULL, state BLOB NOT NULL, finished INTEGER NOT NULL, "
           "saved_at REAL NOT NULL)")

def _source_of(pipeline: Pipeline) -> Any:
    """The pipeline's source, under any wrapper that says so (``wraps_source``, ``inner``)."""
    source = pipeline.root.source
    while getattr(type(source), "wraps_source", False):
        source = source.inner  # type: ignore[union-attr]
    return source


def _fingerprint(pipeline: Pipeline) -> dict[str, Any]:
    """What must be equal for a checkpoint to fit a pipeline: nodes, schemas, Params."""
    nodes = []
    for frame in pipeline.graph.nodes:
        schema = [[str(c), str(t)] for c, t in frame.example.dtypes.items()]
        nodes.append({"name": frame.name, "kind": type(frame).__name__,
                      "stateful": frame.stateful, "schema": schema})
    params = {p.name: _value(p.value) for p in pipeline.params}
    return {"nodes": nodes, "params": params}


def _value(value: Any) -> str:
    """A Param value as users write it (durations as ``30s``)."""
    import pandas as pd

    from rtnb._time import format_duration

    if isinstance(value, pd.Timedelta):
        return format_duration(int(value.value))
    return repr(value)


def _mismatch(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    """A sentence naming what differs between two fingerprints, or None."""
    old = {n["name"]: n for n in saved.get("nodes", [])}
    new = {n["name"]: n for n in now["nodes"]}
    parts = []
    gone = [n for n in old if n not in new]
    added = [n for n in new if n not in old]
    if gone:
        parts.append(f"nodes only in the checkpoint: {gone!r}")
    if added:
        parts.append(f"nodes only in this pipeline: {added!r}")
    for name in old.keys() & new.keys():
        if old[name]["schema"] != new[name]["schema"]:
            parts.append(f"node {name!r} has columns {new[name]['schema']!r}; the checkpoint "
                         f"has {old[name]['schema']!r}")
        elif old[name]["kind"] != new[name]["kind"] or \
                old[name]["stateful"] != new[name]["stateful"]:
            parts.append(f"node {name!r} is a different kind of node")
    params_old, params_new = saved.get("params", {}), now["params"]
    for key in sorted(params_old.keys() | params_new.keys()):
        if params_old.get(key) != params_new.get(key):
            parts.append(f"Param {key!r} is {params_new.get(key, 'absent')} here and was "
                         f"{params_old.get(key, 'absent')} in the checkpoint")
    return "; ".join(parts) if parts else None


@dataclasses.dataclass(frozen=True)
class Captured:
    """A pipeline's state taken between batches, ready to be written (:meth:`Checkpoint.write`)."""

    pipeline: str
    source: str
    position: bytes
    blob: bytes
    fingerprint: str
    finished: bool


@dataclasses.dataclass(frozen=True)
class Saved:
    """One pipeline's row of a checkpoint file."""

    pipeline: str
    source: str
    position: Any
    finished: bool
    saved_at: float
    state: dict[str, Any]


class Checkpoint:
    """A checkpoint file (SQLite): one row per pipeline name, written in one transaction.

    Parameters
    ----------
    path
        The SQLite file (created when first saved).

    Raises
    ------
    CheckpointError
        On :meth:`restore`: the file is not a checkpoint (corrupt), it was written by a
        different pipeline of the same name (the message names what differs), or the source
        cannot resume (see :func:`source_kind`).

    Examples
    --------
    >>> import pathlib, tempfile, pandas as pd, rtnb
    >>> df = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=6, freq="s"),
    ...                    "x": 1.0})
    >>> def build():
    ...     src = rtnb.sources.replay(df, name="demo")
    ...     src.window(rtnb.tumbling("4s")).agg(n=("x", "count"))
    ...     return rtnb.Pipeline(src)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "state.db"
    >>> first = build()
    >>> first.root.emit(df.iloc[:5])  # closes [0s, 4s); [4s, 8s) holds one row
    >>> Checkpoint(path).save(first)
    >>> second = build()
    >>> Checkpoint(path).restore(second)
    True
    >>> out = second.node("demo.window").collect()
    >>> second.root.emit(df.iloc[5:]); second.root.close()
    >>> out[0]["n"].tolist()  # the restored window [4s, 8s) goes on counting
    [2]
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        #: What the last :meth:`restore` found (``None`` before, or when there was nothing).
        self.restored: Saved | None = None

    def __repr__(self) -> str:
        return f"<Checkpoint {str(self.path)!r}>"

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            with closing(sqlite3.connect(self.path, timeout=30)) as conn:
                yield conn
        except sqlite3.OperationalError as exc:
            msg = (f"checkpoint {str(self.path)!r} cannot be read now: {exc} (another process "
                   "may hold it: is another copy of this job running?)")
            raise CheckpointError(msg) from exc
        except sqlite3.DatabaseError as exc:
            msg = (f"checkpoint {str(self.path)!r} is not a readable rtnb checkpoint "
                   f"(corrupt or another kind of file): {exc}; move it away to start afresh")
            raise CheckpointError(msg) from exc

    # -- reading ---------------------------------------------------------------------------
    def read(self, pipeline: str) -> Saved | None:
        """The row of the pipeline called ``pipeline``, or ``None`` (no file, no row)."""
        if not self.path.exists():
            return None
        with self._connect() as conn:
            has_table = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND "
                                     "name=?", (_TABLE,)).fetchone()
            if has_table is None:
                return None
            row = conn.execute(f"SELECT version, fingerprint, source, position, state, "
                               f"finished, saved_at FROM {_TABLE} WHERE pipeline=?",
                               (pipeline,)).fetchone()
        if row is None:
            return None
        version, fingerprint, source, position, state, finished, saved_at = row
        if version not in READABLE:
            msg = (f"checkpoint {str(self.path)!r} of pipeline {pipeline!r} has format "
                   f"{version}; this rtnb reads formats {', '.join(map(str, READABLE))}")
            raise CheckpointError(msg)
        try:
            outer = pickle.loads(state)
            blob = pickle.loads(outer["core"])
            blob["sinks"], blob["acks"] = outer["sinks"], outer["acks"]
            where = pickle.loads(position)
            print_ = json.loads(fingerprint)
        except Exception as exc:
            msg = (f"checkpoint {str(self.path)!r} of pipeline {pipeline!r} is corrupt: "
                   f"{type(exc).__name__}: {exc}")
            raise CheckpointError(msg) from exc
        if not isinstance(blob, dict) or not isinstance(print_, dict):
            msg = f"checkpoint {str(self.path)!r} of pipeline {pipeline!r} is corrupt"
            raise CheckpointError(msg)
        blob["fingerprint"] = print_
        return Saved(pipeline, str(source), where, bool(finished), float(saved_at), blob)

    # -- writing ---------------------------------------------------------------------------
    def save(self, pipeline: Pipeline, *, finished: bool = False,
             extra: dict[str, Any] | None = None) -> None:
        """Write the pipeline's source position and state (call it between batches).

        ``finished`` marks a stream that ended (windows flushed); ``extra`` is kept as is
        (the runtime's metric counts). The same as :meth:`capture` then :meth:`write`.
        """
        self.write(self.capture(pipeline, finished=finished, extra=extra))

    def capture(self, pipeline: Pipeline, *, finished: bool = False,
                extra: dict[str, Any] | None = None) -> Captured:
        """Take the pipeline's state now (between batches) as bytes; :meth:`write` saves it.

        Every node's snapshot and the source position are pickled at once, so the pipeline
        may go on while the capture is written (off the event loop, with the sinks'
        transaction state added).
        """
        source = _source_of(pipeline)
        kind = source_kind(source)
        position = getattr(source, "position", None) if kind in ("replay", "recorded") else None
        frames: dict[str, Any] = {}
        for frame in pipeline.graph.nodes:
            frames[frame.name] = {"counters": dataclasses.asdict(frame.counters)}
        for node in pipeline.graph.stateful():
            frames[node.name]["state"] = node.snapshot()
        blob = pickle.dumps({"frames": frames, "extra": dict(extra or {})},
                            protocol=pickle.HIGHEST_PROTOCOL)
        return Captured(pipeline.name, kind, pickle.dumps(position), blob,
                        json.dumps(_fingerprint(pipeline), sort_keys=True), finished)

    def write(self, captured: Captured, *, sinks: dict[str, Any] | None = None,
              acks: list[Any] | None = None, attempts: int = 5) -> None:
        """Write ``captured`` with the sinks' transaction states and the acks to send.

        One SQLite transaction: a process killed while writing leaves the previous checkpoint
        whole. A file locked by another process is retried ``attempts`` times with backoff
        (each logged), then :class:`~rtnb.CheckpointError`. The file is created readable by
        its owner only (it holds the pipeline's data).
        """
        state = pickle.dumps({"core": captured.blob, "sinks": dict(sinks or {}),
                              "acks": list(acks or [])}, protocol=pickle.HIGHEST_PROTOCOL)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        delay = 0.1
        for attempt in range(1, attempts + 1):
            try:
                with closing(sqlite3.connect(self.path, timeout=2)) as conn, conn:
                    conn.execute(_SCHEMA)
                    conn.execute(
                        f"INSERT OR REPLACE INTO {_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (captured.pipeline, VERSION, captured.fingerprint, captured.source,
                         captured.position, state, int(captured.finished), time.time()))
                return
            except sqlite3.OperationalError as exc:  # locked, busy, disk full ...
                log.warning("checkpoint %s: write %d of %d failed: %s", self.path, attempt,
                            attempts, exc)
                if attempt == attempts:
                    msg = (f"checkpoint {str(self.path)!r} could not be written after "
                           f"{attempts} attempts: {exc}")
                    raise CheckpointError(msg) from exc
                time.sleep(delay)
                delay = min(2.0, delay * 2)
            except sqlite3.DatabaseError as exc:
                msg = (f"checkpoint {str(self.path)!r} is not a writable rtnb checkpoint "
                       f"(corrupt or another kind of file): {exc}; move it away to start "
                       "afresh")
                raise CheckpointError(msg) from exc

    def restore(self, pipeline: Pipeline) -> bool:
        """Put the saved state into ``pipeline`` (freshly built) and move its source on.

        Returns ``False`` when the file holds no checkpoint of this pipeline (a first run).
        Call it before the source starts.
        """
        root = pipeline.root
        source = _source_of(pipeline)
        kind = source_kind(source)
        saved = self.read(pipeline.name)
        self.restored = saved
        if saved is None:
            return False
        problem = _mismatch(saved.state["fingerprint"], _fingerprint(pipeline))
        if problem is None and saved.source != kind:
            problem = f"the source was {saved.source} and is {kind} here"
        if problem is not None:
            msg = (f"checkpoint {str(self.path)!r} was written by a different pipeline "
                   f"{pipeline.name!r}: {problem}; use another checkpoint file (or move this "
                   "one away) to start afresh")
            raise CheckpointError(msg)
        frames = saved.state["frames"]
        for frame in pipeline.graph.nodes:
            for field, value in frames[frame.name]["counters"].items():
                setattr(frame.counters, field, value)
        for node in pipeline.graph.stateful():
            try:
                node.restore(frames[node.name]["state"])
            except (KeyError, ValueError, TypeError, AttributeError) as exc:
                msg = (f"checkpoint {str(self.path)!r}: the saved state of node {node.name!r} "
                       f"does not fit: {type(exc).__name__}: {exc}")
                raise CheckpointError(msg) from exc
        if saved.position is not None:
            try:
                getattr(source, "skip")(saved.position)  # noqa: B009 (not in Source)
            except Exception as exc:
                msg = (f"checkpoint {str(self.path)!r}: source {root.name!r} cannot resume "
                       f"at {saved.position!r}: {exc}")
                raise CheckpointError(msg) from exc
        return True

    @property
    def sinks(self) -> dict[str, Any]:
        """The sinks' transaction states of the last restored checkpoint (by sink name)."""
        if self.restored is None:
            return {}
        sinks: dict[str, Any] = self.restored.state.get("sinks", {})
        return sinks

    @property
    def acks(self) -> list[Any]:
        """The source positions the last restored checkpoint took at its barrier."""
        if self.restored is None:
            return []
        acks: list[Any] = self.restored.state.get("acks", [])
        return acks

    @property
    def extra(self) -> dict[str, Any]:
        """The ``extra`` saved with the last restored checkpoint (empty if none)."""
        if self.restored is None:
            return {}
        extra: dict[str, Any] = self.restored.state.get("extra", {})
        return extra
