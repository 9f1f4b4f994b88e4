"""A named pipeline graph: what :mod:`rtnb.export` writes out and the CLI runs.

Every node built with the public API remembers the call that built it (see
:mod:`rtnb._record`), so a :class:`Pipeline` can list its nodes, draw them and write the whole
graph back as a script that rebuilds it.
"""

from __future__ import annotations

import asyncio
import html
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from rtnb import _record
from rtnb.errors import ConfigError, ExportError, RtnbError
from rtnb.frame import StreamingFrame, StreamingSeries
from rtnb.params import Param
from rtnb.recording import Recording

if TYPE_CHECKING:

    from rtnb.graph import Graph
    from rtnb.shadow import ShadowRun

__all__ = ["Pipeline", "Recording"]


class Pipeline:
    """The graph from one source through operators, detectors and alerts to sinks and views.

    Parameters
    ----------
    frames
        Frames of the pipeline (its source is found from them), usually its outputs.
    name
        The pipeline's name (default: the source's): metric label and exported script title.
    labels
        Names for nodes, ``{"cpu": cpu_frame}``: the ``node`` label of the exported script's
        Prometheus metrics (default: the node's path, ``metrics.window``). ``rtnb export``
        passes the notebook's variable names.

    Examples
    --------
    >>> import rtnb
    >>> src = rtnb.sources.replay(rtnb.datasets.metrics_path(), name="metrics")
    >>> size = rtnb.Param("10s", min="1s", max="5min", name="window")
    >>> cpu = src[src["requests"] > 0].window(rtnb.tumbling(size), by="host").agg(
    ...     mean=("cpu", "mean"))
    >>> pipeline = rtnb.Pipeline(cpu)
    >>> pipeline.node_names()
    ['metrics', 'metrics.filter[(requests > 0)]', 'metrics.filter[(requests > 0)].window']
    >>> pipeline.describe()["kind"].tolist()
    ['source', 'filter', 'window']
    >>> [p.name for p in pipeline.params]
    ['window']
    """

    def __init__(self, *frames: StreamingFrame, name: str | None = None,
                 labels: Mapping[str, StreamingFrame] | None = None) -> None:
        if not frames:
            msg = "Pipeline() takes at least one StreamingFrame of the pipeline"
            raise ConfigError(msg)
        for frame in frames:
            if not isinstance(frame, StreamingFrame):
                msg = (f"Pipeline() takes StreamingFrames of the pipeline; got "
                       f"{type(frame).__name__}")
                raise ConfigError(msg)
        self.root: StreamingFrame = frames[0].root
        for frame in frames[1:]:
            if frame.root is not self.root:
                msg = (f"Pipeline(): {frame.name!r} does not come from the source "
                       f"{self.root.name!r}; a pipeline has one source")
                raise ConfigError(msg)
        self.outputs = list(frames)
        self.name = name or self.root.name
        #: The :class:`~rtnb.distributed.ClusterRunner` of a run on a cluster (its
        #: partitions' workers, the Dask dashboard's link), else ``None``.
        self.runner: Any = None
        self._labels: dict[int, str] = {}
        for label, frame in (labels or {}).items():
            if not isinstance(frame, StreamingFrame) or frame.root is not self.root:
                msg = (f"Pipeline(labels=...): {label!r} must name a frame of this pipeline; "
                       f"got {frame!r:.80}")
                raise ConfigError(msg)
            self._labels[id(frame)] = str(label)

    def label(self, frame: StreamingFrame) -> str:
        """The name ``frame`` goes by in metrics: its ``labels=`` entry, else its path.

        Examples
        --------
        >>> import rtnb
        >>> src = rtnb.sources.replay(rtnb.datasets.metrics_path(), name="metrics")
        >>> cpu = src.window(rtnb.tumbling("10s"), by="host").agg(mean=("cpu", "mean"))
        >>> pipeline = rtnb.Pipeline(cpu, labels={"cpu": cpu})
        >>> pipeline.label(cpu), pipeline.label(src)
        ('cpu', 'metrics')
        """
        return self._labels.get(id(frame), frame.name)

    def __repr__(self) -> str:
        return (f"<Pipeline {self.name!r}: {len(self.frames)} nodes, {len(self.params)} params, "
                f"{len(self.sinks)} sinks, {len(self.views)} views>")

    # -- the graph ------------------------------------------------------------------------
    @property
    def frames(self) -> list[StreamingFrame]:
        """The nodes the user built (the source first), in the order they were built."""
        return [self.root] + [f for f in self.graph.nodes
                              if f is not self.root and _record.call_of(f) is not None]

    @property
    def graph(self) -> Graph:
        """The runtime graph (every node, side outputs included; lifecycle and hooks)."""
        return self.root.graph

    @property
    def sinks(self) -> list[Any]:
        """The sinks attached to the pipeline's nodes."""
        return list(self.graph.sinks)

    @property
    def views(self) -> list[Any]:
        """The live views drawn from the pipeline's nodes."""
        return list(self.graph.views)

    @property
    def params(self) -> list[Param]:
        """Every Param the pipeline's nodes use, in the order they are first used."""
        found: dict[int, Param] = {}
        for frame in self.frames:
            for obj in _walk(_record.call_of(frame)):
                if isinstance(obj, Param):
                    found.setdefault(id(obj), obj)
        for sink in self.sinks:
            for obj in _walk(_record.call_of(sink)):
                if isinstance(obj, Param):
                    found.setdefault(id(obj), obj)
        return list(found.values())

    def leaves(self) -> list[StreamingFrame]:
        """The nodes no other node is computed from (the pipeline's outputs)."""
        used = {id(src) for frame in self.frames for src in self.inputs(frame)}
        return [f for f in self.frames if id(f) not in used]

    def node(self, name: str) -> StreamingFrame:
        """The node called ``name``."""
        for frame in self.graph.nodes:
            if frame.name == name:
                return frame
        msg = f"pipeline {self.name!r} has no node {name!r}; nodes: {self.node_names()}"
        raise KeyError(msg)

    def node_names(self) -> list[str]:
        """The names of :attr:`frames`."""
        return [f.name for f in self.frames]

    def inputs(self, frame: StreamingFrame) -> list[StreamingFrame]:
        """The nodes ``frame`` is computed from."""
        call = _record.call_of(frame)
        if call is None:
            return self.graph.inputs(frame)
        found: dict[int, StreamingFrame] = {}
        for obj in _walk(call):
            if isinstance(obj, StreamingFrame) and obj is not frame:
                found.setdefault(id(obj), obj)
        return list(found.values())

    def describe(self) -> pd.DataFrame:
        """One row per node: name, kind, inputs, output columns and the Params it uses."""
        rows = []
        for frame in self.frames:
            call = _record.call_of(frame)
            params = sorted({o.name for o in _walk(call) if isinstance(o, Param)})
            rows.append({
                "node": frame.name,
                "kind": _kind(frame, call),
                "inputs": ", ".join(f.name for f in self.inputs(frame)) if call else "",
                "columns": ", ".join(map(str, frame.columns)),
                "params": ", ".join(params),
            })
        for sink in self.sinks:
            rows.append({"node": getattr(sink, "name", type(sink).__name__), "kind": "sink",
                         "inputs": sink.frame.name if hasattr(sink, "frame") else "",
                         "columns": "", "params": ""})
        return pd.DataFrame(rows, columns=["node", "kind", "inputs", "columns", "params"])

    def visualize(self) -> PipelineGraph:
        """The graph as an SVG drawing (shown inline in a notebook)."""
        edges: list[tuple[str, str]] = []
        for frame in self.frames:
            edges.extend((src.name, frame.name) for src in self.inputs(frame))
        kinds = {f.name: _kind(f, _record.call_of(f)) for f in self.frames}
        for sink in self.sinks:
            name = getattr(sink, "name", type(sink).__name__)
            kinds[name] = "sink"
            if hasattr(sink, "frame"):
                edges.append((sink.frame.name, name))
        return PipelineGraph(list(kinds), edges, kinds)

    # -- running --------------------------------------------------------------------------
    def start(self, *, cluster: Any = None, **options: Any) -> asyncio.Task[None]:
        """Start the source on the running loop (see :meth:`StreamingFrame.start`).

        With ``cluster`` the pipeline runs on Dask distributed (:mod:`rtnb.distributed`):
        a ``LocalCluster`` or any cluster object, a ``Client``, a scheduler address
        (``"tcp://host:8786"``) or ``"local:N"`` (a local cluster of N worker processes,
        closed at the end). Each partition of the (partitioned) source is read on a worker,
        which runs the pipeline up to its first window, rolling or detector; windows are
        merged on this process, where everything after them runs as usual. ``options`` go
        to :class:`~rtnb.distributed.ClusterRunner` (``max_rows``, ``tick``,
        ``checkpoint_every``).
        """
        if cluster is None:
            if options:
                msg = f"options {sorted(options)!r} are for a run with cluster=..."
                raise ConfigError(msg)
            return self.root.start()
        from rtnb.distributed import ClusterRunner

        self.runner = ClusterRunner(self, cluster, **options)
        return self.graph.start(runner=self.runner)

    def stop(self) -> None:
        """Stop the source after its current batch; the stream then ends (windows flush)."""
        self.root.stop()

    async def arun(self, *, cluster: Any = None, **options: Any) -> None:
        """Run the source to its end and wait for views and sinks to finish.

        ``cluster``, ``options``: as for :meth:`start`.
        """
        self.start(cluster=cluster, **options)
        await self.root.wait()

    def run(self, *, cluster: Any = None, **options: Any) -> None:
        """Run the source to its end, blocking (scripts); ``cluster``: as for :meth:`start`.

        Examples
        --------
        >>> import rtnb
        >>> src = rtnb.sources.replay(rtnb.datasets.metrics_path(), name="metrics",
        ...                           max_events=1_000)
        >>> n = src.window(rtnb.tumbling("1min")).agg(n=("cpu", "count"))
        >>> out = n.collect()
        >>> rtnb.Pipeline(n).run()
        >>> sum(int(b["n"].sum()) for b in out)
        1000
        """
        if cluster is None and not options:
            self.root.run()
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self.arun(cluster=cluster, **options))
            return
        msg = ("run() blocks, so it cannot be used inside a running event loop (a notebook): "
               "use pipeline.start(cluster=...), or `await pipeline.arun(cluster=...)`")
        raise RtnbError(msg)

    def record(self) -> Recording:
        """Keep every batch the source and every node emit from now on (see :class:`Recording`)."""
        return Recording(self)

    def replay(self, params: Mapping[str, Any] | None = None, *, since: Any = None,
               source: Any = None, max_events: int | None = None) -> ShadowRun:
        """Run a shadow copy of the pipeline with other Param values over the retained log.

        The copy is rebuilt from the recorded calls (as :meth:`export` writes them) with
        ``params`` overriding Params by name, its sinks left out (collectors take their
        place: nothing reaches the live sinks), next to a baseline copy at the live
        Params; both replay the same input batches. In a notebook the replay starts on the
        running loop at once and yields between batches, so the live run goes on;
        ``await shadow.wait()``, then :meth:`ShadowRun.diff` and :meth:`ShadowRun.promote`.
        See :class:`rtnb.shadow.ShadowRun`.

        Parameters
        ----------
        params
            New values by Param name (``{"threshold": 4.0}``); each is checked by its Param.
        since
            How much event time to replay, counted back from the end of the log
            (``"7d"``); default: all of it. Longer than the log holds is an error.
        source
            The retained log: a :class:`Recording` of this pipeline (``pipeline.record()``,
            the live input as it arrived; needed for :meth:`ShadowRun.promote`;
            ``Recording(pipeline, [])`` keeps the input batches only), a folder
            or Parquet file recorded with ``Recording.save`` / ``--output`` / ``--record``,
            or a finite rtnb source frame (a broker stream from a position, bounded with
            ``max_events``). Default: the pipeline's own source, rebuilt (a file or
            DataFrame replay reads its data again); refused (ConfigError) for a broker
            source read in a consumer group, durable consumer, queue or session, which
            the copy would share with the live run (it would take its messages).
        max_events
            Read at most this many events of the pipeline's own source (a broker's stream
            does not end by itself); only with the default ``source``.

        Returns
        -------
        rtnb.shadow.ShadowRun
            The running (notebook) or ready (script: ``shadow.run()``) replay.

        Raises
        ------
        ConfigError
            An unknown Param name, a value its Param refuses, a ``since`` longer than
            the log holds, or a default source shared with the live run (above).
        ExportError
            The pipeline cannot be written as code (a lambda, a closure): the copies are
            built from what :meth:`export` writes.

        Examples
        --------
        >>> import rtnb
        >>> src = rtnb.sources.replay(rtnb.datasets.metrics_path(), name="metrics",
        ...                           max_events=2_000)
        >>> limit = rtnb.Param(80.0, min=0.0, max=100.0, name="limit")
        >>> cpu = src.window(rtnb.tumbling("1min"), by="host").agg(cpu=("cpu", "mean"))
        >>> hot = rtnb.alert(cpu, cpu["cpu"] > limit, on="cpu", by="host", name="hot")
        >>> shadow = rtnb.Pipeline(hot).replay({"limit": 20.0})
        >>> shadow.run()
        >>> sorted(shadow.diff()["change"].unique())
        ['added']
        """
        from rtnb.shadow import ShadowRun

        return ShadowRun(self, params or {}, since=since, source=source,
                         max_events=max_events)

    # -- export ---------------------------------------------------------------------------
    def export(self, path: str | Path, *, names: Mapping[str, Any] | None = None,
               origin: str | None = None, check: bool = True) -> Path:
        """Write the pipeline as a standalone script that rebuilds and runs it headless.

        Every node becomes one assignment (named after the notebook variable that holds it,
        or after the node), every Param an option of the script's command line defaulting to
        its current value, functions defined with ``def`` in the notebook are copied by
        source, and secrets are read from environment variables listed in the docstring.
        A DataFrame the source replays is written next to the script (``<name>_data/``).

        Parameters
        ----------
        path
            The script to write (``monitor.py``).
        names
            Variable names to use for nodes (``{"cpu": cpu_frame}``); by default the
            notebook's (``__main__``) global variables that hold the pipeline's frames.
        origin
            Where the pipeline came from, for the script's docstring.
        check
            Run the written ``build()`` once and check it makes the same nodes with the same
            schemas (an :class:`~rtnb.ExportError` if not).

        Returns
        -------
        Path
            The script's path. Lambdas, closures and objects that cannot be written as code
            raise :class:`~rtnb.ExportError` naming the node.
        """
        target = self._write(path, names, origin, app=False)
        target.chmod(0o755)
        if check:
            _check(self, target)
        return target

    def export_dashboard(self, path: str | Path, *, names: Mapping[str, Any] | None = None,
                         origin: str | None = None) -> Path:
        """Write the pipeline's live views as a Bokeh server app (``rtnb serve app.py``).

        The app rebuilds the pipeline like :meth:`export` and lays out its views as the
        notebook's ``rtnb.dashboard(...)`` did, with a Bokeh widget per Param (at its tuned
        value) and the status lines. ``rtnb serve`` binds it to 127.0.0.1 with an allow-list of
        websocket origins. Each browser session runs its own copy of the pipeline.
        """
        return self._write(path, names, origin, app=True)

    def _write(self, path: str | Path, names: Mapping[str, Any] | None, origin: str | None,
               *, app: bool, sinks: bool = True) -> Path:
        """Render the script or app, write it and the data files it replays."""
        from rtnb.export.script import identifier, render_script

        target = Path(path)
        data_dir = f"{target.stem}_data"
        text, data, _env = render_script(
            self, names=_variable_names(self, names), title=identifier(target.stem),
            origin=origin or _origin(), data_dir=data_dir, app=app, sinks=sinks)
        target.parent.mkdir(parents=True, exist_ok=True)
        if data:
            folder = target.parent / data_dir
            folder.mkdir(exist_ok=True)
            for file_name, frame in data.items():
                frame.to_parquet(folder / file_name, index=False)
        target.write_text(text, encoding="utf-8")
        return target


def _check(pipeline: Pipeline, script: Path) -> None:
    """Rebuild the pipeline from ``script`` and compare node names and schemas."""
    import runpy

    namespace = runpy.run_path(str(script), run_name="rtnb_export_check")
    try:
        rebuilt = namespace["build"]()
    except ConfigError as exc:
        if "environment variable" in str(exc):
            return  # a secret is not set here; the script reads it where it runs
        raise
    try:
        want = [(f.name, list(f.columns), [str(t) for t in f.dtypes]) for f in pipeline.frames]
        got = [(f.name, list(f.columns), [str(t) for t in f.dtypes]) for f in rebuilt.frames]
        if want != got:
            diff = [f"  notebook {w[0]!r} {w[1]} vs script {g[0]!r} {g[1]}"
                    for w, g in zip(want, got, strict=False) if w != g]
            msg = (f"the exported script {script.name} does not rebuild the same pipeline "
                   f"({len(want)} nodes in the notebook, {len(got)} in the script):\n"
                   + "\n".join(diff[:5]))
            raise ExportError(msg)
    finally:
        rebuilt.graph.dispose()


def _origin() -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # noqa: UP017
    return f"a notebook session on {when}"


def _variable_names(pipeline: Pipeline, names: Mapping[str, Any] | None) -> dict[int, str]:
    """Node id -> the variable name the user gave it (explicit ``names`` or __main__'s)."""
    if names is None:
        names = _user_namespace()
    ids = {id(f) for f in pipeline.frames}
    out: dict[int, str] = {}
    for name, obj in names.items():
        if (isinstance(name, str) and name.isidentifier() and not name.startswith("_")
                and id(obj) in ids and id(obj) not in out):
            out[id(obj)] = name
    return out


def _user_namespace() -> Mapping[str, Any]:
    # In a kernel IPython is loaded already; a script never imports it through here.
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None:
        return dict(shell.user_ns)
    main = sys.modules.get("__main__")
    return dict(vars(main)) if main is not None else {}


def _walk(obj: Any, _seen: set[int] | None = None) -> Iterator[Any]:
    """Every object reachable from a :class:`~rtnb._record.Call` (frames end the walk)."""
    seen = _seen if _seen is not None else set()
    if obj is None or id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, _record.Call):
        for item in (obj.target, *obj.args, *obj.kwargs.values()):
            yield from _walk(item, seen)
        return
    yield obj
    if isinstance(obj, StreamingFrame):
        return
    if isinstance(obj, StreamingSeries):
        for token in obj.code:
            if isinstance(token, _record.Value):
                yield from _walk(token.value, seen)
            elif not isinstance(token, str):
                yield from _walk(token, seen)
        return
    if isinstance(obj, list | tuple | set | frozenset):
        for item in obj:
            yield from _walk(item, seen)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _walk(item, seen)
    call = _record.call_of(obj)
    if call is not None:
        yield from _walk(call, seen)


def _kind(frame: StreamingFrame, call: _record.Call | None) -> str:
    if frame.is_root:
        return "source"
    if call is None:
        return "output"
    if call.kind == "index":
        return "filter" if isinstance(call.args[0], StreamingSeries) else "select"
    if call.kind == "call":
        return str(getattr(call.func, "__name__", "call"))
    target = _record.call_of(call.target)
    if call.func in ("agg", "count", "sum", "mean", "var", "std", "min", "max"):
        while target is not None and target.func not in ("window", "rolling"):
            target = _record.call_of(target.target)
        return str(target.func) if target is not None else "aggregate"
    return str(call.func)


@dataclass
class PipelineGraph:
    """A drawing of a pipeline: nodes in columns by depth, edges left to right (SVG)."""

    nodes: list[str]
    edges: list[tuple[str, str]]
    kinds: dict[str, str]

    def depths(self) -> dict[str, int]:
        depth = dict.fromkeys(self.nodes, 0)
        for _ in self.nodes:
            for a, b in self.edges:
                depth[b] = max(depth[b], depth[a] + 1)
        return depth

    def _repr_svg_(self) -> str:
        depth = self.depths()
        columns: dict[int, list[str]] = {}
        for node in self.nodes:
            columns.setdefault(depth[node], []).append(node)
        box_w, box_h, gap_x, gap_y = 220, 44, 60, 18
        pos = {}
        for d, members in columns.items():
            for i, node in enumerate(members):
                pos[node] = (10 + d * (box_w + gap_x), 10 + i * (box_h + gap_y))
        width = 20 + (max(columns) + 1) * (box_w + gap_x)
        height = 20 + max(len(m) for m in columns.values()) * (box_h + gap_y)
        colors = {"source": "#cfe8fc", "sink": "#fde2c8", "alert": "#fcd0d0",
                  "detect": "#fcd0d0", "window": "#d9f2d9", "rolling": "#d9f2d9"}
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                 'font-family="sans-serif" font-size="11">',
                 '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="8" refY="4" '
                 'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#666"/></marker></defs>']
        for a, b in self.edges:
            (x1, y1), (x2, y2) = pos[a], pos[b]
            parts.append(f'<line x1="{x1 + box_w}" y1="{y1 + box_h / 2}" x2="{x2}" '
                         f'y2="{y2 + box_h / 2}" stroke="#666" marker-end="url(#arrow)"/>')
        for node in self.nodes:
            x, y = pos[node]
            kind = self.kinds.get(node, "")
            label = node if len(node) <= 34 else "…" + node[-33:]
            parts.append(f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6" '
                         f'fill="{colors.get(kind, "#eeeeee")}" stroke="#888"/>')
            parts.append(f'<text x="{x + 8}" y="{y + 17}" font-weight="bold">'
                         f'{html.escape(kind)}</text>')
            parts.append(f'<text x="{x + 8}" y="{y + 34}">{html.escape(label)}</text>')
        parts.append("</svg>")
        return "".join(parts)
