"""What an exported script runs: the headless loop, signals, metrics, logs, bounded runs.

An exported script calls :func:`build` (its Params from the command line) and then
:func:`run`. ``run`` owns the asyncio loop (``asyncio.run``), stops the source on SIGTERM or
SIGINT and lets the stream end normally (windows flush, sinks deliver), serves Prometheus
metrics on 127.0.0.1, logs structured events (JSON by default) and exits 0.

With ``checkpoint`` (``--checkpoint PATH``) the run starts from the checkpoint saved there (if
any) and saves one between batches every ``checkpoint_every`` and when it ends (see
:mod:`rtnb.state`). A run that is *stopped* (SIGTERM/SIGINT, ``--until``, ``--max-events``
before the source's end) saves its open windows and pending rows in the checkpoint instead of
flushing them, so the run that resumes from it emits them exactly once, when they close: the
outputs of the stopped run followed by those of the resumed run are those of one
uninterrupted run. Only a source that reaches its end flushes (and saves a finished
checkpoint, from which a restart emits nothing more).

With ``cluster`` (``--cluster local:N``) or ``scheduler`` (``--scheduler tcp://host:8786``,
or the ``RTNB_SCHEDULER`` environment variable) a partitioned source runs on Dask
distributed (:mod:`rtnb.distributed`): ``local:N`` starts a ``LocalCluster`` of N
single-threaded worker processes on 127.0.0.1 and closes it at the end; a scheduler address
connects to a running cluster. Metrics, logs and the exit code work as in one process,
except that the nodes the workers run (the source's filters, ``assign``, ``map_batches``
... up to the first window, rolling or detector) have no row counts on this process
(``rtnb_rows`` reports the source's events and the nodes from the first window on), and
``--output`` records only those nodes. ``--checkpoint`` on a cluster: the driver saves a
checkpoint at its ticks (its own nodes and every partition's state from the workers), the
workers acknowledge entries only once one holding them is written, a stop saves the open
windows there instead of flushing them, and a restart starts every partition from its
state there. ``--input`` does not run on a cluster (refused). Dask's own warnings in this
process are logged through the script's renderer; the worker processes of ``local:N`` write
theirs in Dask's plain format.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from rtnb import metrics
from rtnb._time import shown, to_ns
from rtnb.errors import CheckpointError, ConfigError, MissingExtraError, RtnbError
from rtnb.state.checkpoint import Checkpoint, source_kind

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame
    from rtnb.pipeline import Pipeline, Recording
    from rtnb.sources.base import Source

__all__ = ["HELP", "SCHEDULER_ENV", "RecordedBatches", "build", "cluster_target", "limit",
           "run"]

#: Help text of the options every exported script has.
HELP = {
    "until": "stop after this much wall time, e.g. 10min (windows flush, then exit 0)",
    "max_events": "stop after the source has read this many events",
    "metrics_port": "serve Prometheus metrics on http://127.0.0.1:PORT/metrics (0: any free port)",
    "log_format": "json (one JSON object per line) or console",
    "input": "replay batches recorded with Pipeline.record() / `rtnb export --record` instead of "
             "reading the source (a Parquet file with a __batch__ column, or its folder)",
    "output": "write every node's batches as Parquet files (and manifest.json) into this folder "
              "(on a cluster: the nodes from the first window, rolling or detector on)",
    "checkpoint": "resume from and save checkpoints (source position + operator state) in this "
                  "SQLite file; a stopped run keeps its open windows there instead of flushing",
    "checkpoint_every": "how often to save a checkpoint between batches, e.g. 10s (and always "
                        "at the end)",
    "cluster": "run on Dask distributed: local:N starts a local cluster of N single-threaded "
               "worker processes on 127.0.0.1 and closes it at the end; each partition of "
               "the (partitioned) source is read on a worker, windows are merged here "
               "(not with --scheduler or --input)",
    "scheduler": "run on the running Dask cluster whose scheduler is at this address, e.g. "
                 "tcp://host:8786 (tls:// takes Dask's own TLS settings, e.g. "
                 "DASK_DISTRIBUTED__COMM__TLS__* variables); the address may also come from "
                 "the RTNB_SCHEDULER environment variable and is never written to the "
                 "script (not with --cluster or --input)",
}

#: The environment variable ``--scheduler`` falls back to.
SCHEDULER_ENV = "RTNB_SCHEDULER"


def build(builder: Callable[..., Pipeline], params: dict[str, Any], source: str | None) -> Pipeline:
    """Call the script's ``build`` with the command-line values (a bad one exits 2)."""
    import typer

    try:
        return builder(params, source)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc


class RecordedBatches:
    """A source that emits recorded batches exactly as they were cut (``--input``).

    The file holds the batches concatenated, numbered by a ``__batch__`` column.
    """

    #: Stop after this many rows of this run (``None``: every recorded batch).
    max_events: int | None

    def resume_kind(self) -> str:
        """At the next recorded batch: ``"recorded"``."""
        return "recorded"

    def limit(self, max_events: int) -> None:
        """Stop after ``max_events`` rows of this run."""
        current = self.max_events
        self.max_events = max_events if current is None else min(current, max_events)

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        if p.is_dir():
            p = p / "input.parquet"
        if not p.exists():
            msg = f"--input: no recording at {str(p)!r}"
            raise ConfigError(msg)
        data = pd.read_parquet(p)
        if "__batch__" not in data.columns:
            msg = f"--input: {p.name} has no __batch__ column (write it with Pipeline.record())"
            raise ConfigError(msg)
        self.path = p
        self.batches = [g.drop(columns="__batch__").reset_index(drop=True)
                        for _, g in data.groupby("__batch__", sort=True)]
        self.max_events = None
        #: ``(batch, row)``: where the next row comes from (what a checkpoint saves).
        self.position: tuple[int, int] = (0, 0)

    def __repr__(self) -> str:
        return f"<RecordedBatches {self.path.name}: {len(self.batches)} batches>"

    def skip(self, position: tuple[int, int]) -> None:
        """Start at row ``position[1]`` of batch ``position[0]`` (resuming a checkpoint)."""
        index, row = int(position[0]), int(position[1])
        if not (0 <= index <= len(self.batches) and row >= 0 and (
                row == 0 or (index < len(self.batches) and row < len(self.batches[index])))):
            msg = f"{self!r} has no batch {index}, row {row}"
            raise ConfigError(msg)
        self.position = (index, row)

    @property
    def exhausted(self) -> bool:
        """Whether every recorded batch was emitted."""
        return self.position[0] >= len(self.batches)

    async def run(self, frame: StreamingFrame, stop: asyncio.Event) -> None:
        """Emit each recorded batch into ``frame`` (waiting while paused or pressed)."""
        sent = 0
        first, skip = self.position
        for index in range(first, len(self.batches)):
            batch = self.batches[index]
            done = skip if index == first else 0
            if done:
                batch = batch.iloc[done:]
            if stop.is_set():
                return
            if self.max_events is not None:
                if sent >= self.max_events:
                    return
                batch = batch.iloc[: self.max_events - sent]
            await frame.graph.wait_running()
            frame.emit(batch.astype(frame.example.dtypes.to_dict()))
            sent += len(batch)
            done += len(batch)
            self.position = (index + 1, 0) if done >= len(self.batches[index]) else (index, done)
            await asyncio.sleep(0)


def cluster_target(cluster: str | None, scheduler: str | None, *,
                   checkpoint: Path | None = None, input: Path | None = None) -> str | None:
    """What ``pipeline.arun(cluster=...)`` gets from ``--cluster``/``--scheduler``, or None.

    ``--cluster`` takes ``local:N`` (N >= 1 worker processes), ``--scheduler`` an address
    with its protocol (``tcp://host:8786``). A bad value, both at once, or either with
    ``--input`` is a :class:`typer.BadParameter` (exit 2) that says why.

    Examples
    --------
    >>> cluster_target("local:2", None)
    'local:2'
    >>> cluster_target(None, "tcp://10.0.0.5:8786")
    'tcp://10.0.0.5:8786'
    >>> cluster_target(None, None) is None
    True
    """
    import typer

    if cluster is not None and scheduler is not None:
        msg = ("--cluster and --scheduler are mutually exclusive: --cluster local:N starts a "
               "local cluster, --scheduler connects to a running one (its address may come "
               f"from the {SCHEDULER_ENV} environment variable); give one of them")
        raise typer.BadParameter(msg)
    target: str | None = None
    if cluster is not None:
        kind, _, workers = cluster.partition(":")
        if kind != "local" or not workers.isdigit() or int(workers) < 1:
            msg = (f"--cluster takes local:N (N >= 1 worker processes), e.g. local:2; got "
                   f"{cluster!r} (a running cluster's address goes to --scheduler)")
            raise typer.BadParameter(msg)
        target = f"local:{int(workers)}"
    elif scheduler is not None:
        protocol, sep, where = scheduler.strip().partition("://")
        if not sep or not protocol or not where:
            msg = (f"--scheduler takes a Dask scheduler address with its protocol, e.g. "
                   f"tcp://host:8786; got {_address_shown(scheduler)!r} (a local cluster is "
                   "--cluster local:N)")
            raise typer.BadParameter(msg)
        target = scheduler.strip()
    if target is None:
        return None
    if input is not None:
        msg = ("--input cannot be used with --cluster or --scheduler: recorded batches are "
               "replayed in this process, while a cluster reads the partitions of the source")
        raise typer.BadParameter(msg)
    return target


def _address_shown(address: str) -> str:
    """``address`` without any user name or password (for messages and logs).

    >>> _address_shown("tcp://user:secret@host:8786")
    'tcp://host:8786'
    """
    protocol, sep, rest = address.partition("://")
    host = rest.split("/", 1)[0].rpartition("@")[2]
    return f"{protocol}{sep}{host}" if sep else address.rpartition("@")[2]


def _remote_nodes(pipeline: Pipeline, target: str) -> set[str]:
    """The nodes Dask workers run (no row of theirs reaches this process).

    Checks the pipeline can run on a cluster at all (a partitioned source, nothing read
    before the first window, rolling or detector): a :class:`typer.BadParameter` with the
    reason otherwise.
    """
    import typer

    try:
        from rtnb.distributed import ClusterRunner

        runner = ClusterRunner(pipeline, target)
    except (ConfigError, MissingExtraError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    return {pipeline.root.name} | {name for split in runner.splits
                                   for name, _ in split.prefix}


def limit(source: Any, max_events: int) -> None:
    """Make ``source`` stop after ``max_events`` events (each kind of source its own way)."""
    bound = getattr(source, "limit", None)
    if bound is None:
        msg = f"--max-events: source {source!r} cannot be bounded (it has no limit())"
        raise ConfigError(msg)
    bound(max_events)


def _renderer(log_format: str) -> Any:
    import structlog

    if log_format not in ("json", "console"):
        import typer

        msg = f"--log-format must be 'json' or 'console'; got {log_format!r}"
        raise typer.BadParameter(msg)
    return (structlog.processors.JSONRenderer() if log_format == "json"
            else structlog.dev.ConsoleRenderer(colors=False))


def _logger(log_format: str) -> Any:
    import structlog

    renderer = _renderer(log_format)
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False)
    return structlog.get_logger("rtnb")


class _Counts:
    """Rows and batches each node emitted (a cheap sink on every node).

    ``remote``: nodes run on Dask workers, which get no sink here (none may be attached to
    them); the source's counters stand for the source's, the others have no count.
    """

    def __init__(self, frames: list[StreamingFrame], *, remote: Collection[str] = ()) -> None:
        self.rows: dict[str, int] = {}
        self.batches: dict[str, int] = {}
        self.remote = frozenset(remote)
        #: Checkpoints saved by this process, and those that could not be written.
        self.checkpoints = 0
        self.checkpoint_failures = 0
        for frame in frames:
            if frame.name in self.remote:
                continue
            self.rows[frame.name] = 0
            self.batches[frame.name] = 0
            frame.stream.sink(self._counter(frame.name))

    def _counter(self, name: str) -> Callable[[pd.DataFrame], None]:
        def count(batch: pd.DataFrame) -> None:
            self.rows[name] += len(batch)
            self.batches[name] += 1
        return count


class _Collector:
    """Prometheus collector reading the pipeline's counters at scrape time."""

    def __init__(self, pipeline: Pipeline, counts: _Counts) -> None:
        self.pipeline = pipeline
        self.counts = counts

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["pipeline", "node"]
        name = self.pipeline.name
        rows = CounterMetricFamily("rtnb_rows", "Rows each node emitted", labels=labels)
        batches = CounterMetricFamily("rtnb_batches", "Micro-batches each node emitted",
                                      labels=labels)
        late = CounterMetricFamily("rtnb_late_events", "Rows that arrived after their window "
                                   "closed (sent to the node's late output)", labels=labels)
        dead = CounterMetricFamily("rtnb_dead_letters", "Rows or records dead-lettered",
                                   labels=labels)
        snap = metrics.snapshot(self.pipeline.graph)  # what the status widget reads too
        root = self.pipeline.root
        for frame in self.pipeline.frames:
            node = snap.nodes[frame.name]
            label = self.pipeline.label(frame)  # the notebook's name for it, if it had one
            if frame.name not in self.counts.remote:
                rows.add_metric([name, label], self.counts.rows.get(frame.name, 0))
                batches.add_metric([name, label], self.counts.batches.get(frame.name, 0))
            elif frame is root:  # read on the workers: the events the driver counted
                rows.add_metric([name, label], node.events)
                batches.add_metric([name, label], node.batches)
            late.add_metric([name, label], node.late)
            dead.add_metric([name, label], node.dead_letters)
        yield from (rows, batches, late, dead)
        saved = CounterMetricFamily("rtnb_checkpoints", "Checkpoints saved by this process",
                                    labels=["pipeline"])
        saved.add_metric([name], self.counts.checkpoints)
        yield saved
        state = GaugeMetricFamily("rtnb_pipeline_failed", "1 when the source stopped with an "
                                  "error (the script then exits 1)", labels=["pipeline"])
        state.add_metric([name], 1.0 if snap.state == "failed" else 0.0)
        yield state
        failed = CounterMetricFamily("rtnb_checkpoint_failures", "Checkpoints that could not "
                                     "be written (retried at the next one)", labels=["pipeline"])
        failed.add_metric([name], self.counts.checkpoint_failures)
        yield failed
        if snap.phase is not None:  # a hybrid source (rtnb.sources.hybrid)
            yield from _phase_metrics(snap, [name, self.pipeline.label(root)])
        stats = snap.source
        if stats is not None:
            src = self.pipeline.label(self.pipeline.root)
            for field, help_text in (("bytes", "Payload bytes read"),
                                     ("reconnects", "Reconnections to the source"),
                                     ("dropped", "Records dropped by the buffer policy"),
                                     ("messages", "Messages read")):
                family = CounterMetricFamily(f"rtnb_source_{field}", help_text, labels=labels)
                family.add_metric([name, src], float(getattr(stats, field, 0) or 0))
                yield family
            if getattr(stats, "lag", None) is not None:
                lag = GaugeMetricFamily("rtnb_source_lag", "Broker-reported lag (messages)",
                                        labels=labels)
                lag.add_metric([name, src], float(stats.lag))
                yield lag
            by_partition = getattr(stats, "partition_lag", None)
            if by_partition:  # what a KEDA-style autoscaler reads, per partition
                lags = GaugeMetricFamily(
                    "rtnb_source_partition_lag", "Broker-reported lag of each partition "
                    "(messages)", labels=[*labels, "partition"])
                for partition, value in sorted(by_partition.items()):
                    lags.add_metric([name, src, partition], float(value))
                yield lags
            read = getattr(stats, "partition_messages", None)
            if read:  # each partition's rate: rate(rtnb_source_partition_messages_total[1m])
                family = CounterMetricFamily(
                    "rtnb_source_partition_messages", "Messages read from each partition",
                    labels=[*labels, "partition"])
                for partition, value in sorted(read.items()):
                    family.add_metric([name, src, partition], float(value))
                yield family
        for sink_name, s in snap.sinks.items():
            for field in ("delivered_rows", "undeliverable_rows", "spooled_rows",
                          "failed_attempts"):
                family = CounterMetricFamily(f"rtnb_sink_{field}", f"Sink {field}",
                                             labels=labels)
                family.add_metric([name, sink_name], float(getattr(s, field)))
                yield family


def _phase_metrics(snap: metrics.Snapshot, labels: list[str]) -> Iterator[Any]:
    """A hybrid source's phase (1 for the one it is in) and the share of history read."""
    from prometheus_client.core import GaugeMetricFamily

    phase = GaugeMetricFamily("rtnb_source_phase", "1 for the phase of a hybrid source: "
                              "history (backfilling) or live", labels=["pipeline", "node",
                                                                       "phase"])
    for which in ("history", "live"):
        phase.add_metric([*labels, which], 1.0 if snap.phase == which else 0.0)
    yield phase
    if snap.backfill is not None:
        share = GaugeMetricFamily("rtnb_source_backfill_progress", "Share of a hybrid "
                                  "source's history read (0..1)", labels=["pipeline", "node"])
        share.add_metric(labels, float(snap.backfill))
        yield share


def serve_metrics(pipeline: Pipeline, counts: _Counts, port: int) -> tuple[Any, int]:
    """Serve ``/metrics`` on 127.0.0.1:``port`` (0 picks a free port); returns (server, port)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(pipeline, counts))
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    del thread
    return server, int(server.server_address[1])


def run(pipeline: Pipeline, *, until: str | None = None, max_events: int | None = None,
        metrics_port: int | None = None, log_format: str = "json",
        input: Path | None = None, output: Path | None = None,
        checkpoint: Path | None = None, checkpoint_every: str = "10s",
        cluster: str | None = None, scheduler: str | None = None) -> int:
    """Run ``pipeline`` headless until its source ends, ``until``, ``max_events`` or a signal.

    ``cluster`` (``local:N``) or ``scheduler`` (an address): run on Dask distributed (see
    the module's docstring).

    Returns the exit code: 0 when the stream ended normally (also after SIGTERM/SIGINT), 1
    when the source failed (on a cluster: also a partition failing on its worker), 2 when
    the checkpoint cannot be used (corrupt, written by another pipeline, or a source that
    cannot resume; the log says which).
    """
    import typer

    log = _logger(log_format).bind(pipeline=pipeline.name)
    root = pipeline.root
    target = cluster_target(cluster, scheduler, checkpoint=checkpoint, input=input)
    seconds: float | None = None
    if until is not None:
        try:
            seconds = to_ns(until, name="--until") / 1e9
        except ConfigError as exc:
            raise typer.BadParameter(str(exc)) from exc
    if max_events is not None and max_events < 0:
        msg = f"--max-events must be >= 0; got {max_events}"
        raise typer.BadParameter(msg)
    if input is not None:
        try:
            root.graph.attach_source(RecordedBatches(input))
        except ConfigError as exc:
            raise typer.BadParameter(str(exc)) from exc
    if root.source is None:
        msg = f"pipeline {pipeline.name!r} has no source to run"
        raise RtnbError(msg)
    remote = _remote_nodes(pipeline, target) if target is not None else set()
    saver: _Saver | None = None
    if checkpoint is not None:
        try:
            every = to_ns(checkpoint_every, name="--checkpoint-every") / 1e9
        except ConfigError as exc:
            raise typer.BadParameter(str(exc)) from exc
        if every <= 0:
            msg = f"--checkpoint-every must be positive; got {checkpoint_every!r}"
            raise typer.BadParameter(msg)
        try:
            saver = _Saver(pipeline, Checkpoint(checkpoint), every, log)
        except CheckpointError as exc:
            log.error("checkpoint", action="refused", path=str(checkpoint), error=str(exc))
            return 2
    if max_events is not None:
        limit(saver.source if saver is not None else root.source, max_events)
    frames = pipeline.frames
    counts = _Counts(frames, remote=remote)
    if saver is not None:
        saver.resume_counts(counts)
    recording: Recording | None = None
    if output is not None:
        from rtnb.recording import Recording

        # on a cluster, rows reach this process from the first windows on only
        recording = Recording(pipeline, [f for f in frames if f.name not in remote],
                              keep_input=not remote)
    server = None
    if metrics_port is not None:
        server, port = serve_metrics(pipeline, counts, metrics_port)
        log.info("metrics", url=f"http://127.0.0.1:{port}/metrics")
    started = time.monotonic()
    on: dict[str, Any] = {}
    if target is not None:
        on = {"cluster": target} if cluster is not None else \
            {"scheduler": _address_shown(target)}
    log.info("start", source=repr(root.source), nodes=len(frames),
             params={p.name: shown(p.value) for p in pipeline.params}, **on)
    switch = getattr(root.source, "on_switch", None)  # a hybrid source: history, then live
    if callable(switch):
        switch(lambda info: log.info("source", action="switch", phase="live", **info))
    if not pipeline.sinks and output is None:
        # a notebook's views do not come along: said once, so a headless run that computes
        # and discards is not mistaken for one that delivers
        log.warning("no sinks", action="results are computed and discarded",
                    hint="add rtnb.sinks (to_parquet, to_log, ...) before exporting, or run "
                         "with --output DIR to keep every node's rows")
    try:
        with _dask_logs(log_format) if target is not None else contextlib.nullcontext():
            code = asyncio.run(_main(pipeline, seconds, log, saver, cluster=target))
    finally:
        if server is not None:
            server.shutdown()
    if recording is not None and output is not None:
        recording.save(output)
        log.info("output", folder=str(output), files=len(recording.batches))
    log.info("stop", seconds=round(time.monotonic() - started, 3),
             events=root.counters.events, late=sum(f.counters.late for f in frames),
             dead_letters=sum(f.counters.dead_letters for f in frames),
             rows={name: n for name, n in counts.rows.items() if n})
    return code


@contextlib.contextmanager
def _dask_logs(log_format: str) -> Iterator[None]:
    """Dask's warnings and errors in this process (the driver) as structured lines too.

    Its ``distributed`` logger writes plain text lines of its own; for the run they go
    through the script's renderer (JSON: one object per line, with ``logger``), at WARNING
    and above. The worker processes of a local cluster keep Dask's own format (their lines
    do not pass through this process); every failure they report reaches the driver, which
    logs it (``failed``).
    """
    import structlog

    chain: list[Any] = [structlog.stdlib.add_logger_name, structlog.stdlib.add_log_level,
                        structlog.processors.TimeStamper(fmt="iso", utc=True)]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, _renderer(log_format)])
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("distributed")
    saved = (list(logger.handlers), logger.propagate)
    logger.handlers = [handler]
    logger.propagate = False
    try:
        yield
    finally:
        logger.handlers, logger.propagate = saved


async def _main(pipeline: Pipeline, seconds: float | None, log: Any,
                saver: _Saver | None = None, *, cluster: str | None = None) -> int:
    loop = asyncio.get_running_loop()

    signals: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        signals.append(sig.name)
        if len(signals) == 1:
            log.info("signal", signal=sig.name,
                     action="stopping the source; windows and sinks flush")
            pipeline.stop()
            return
        # A second signal: do not wait for a sink that cannot deliver (what it holds is
        # dropped, counted, and the exit code says so).
        log.warning("signal", signal=sig.name, action="giving up on undelivered rows")
        for sink in pipeline.sinks:
            sink.abandon()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # pragma: no cover - Windows
            loop.add_signal_handler(sig, on_signal, sig)
    timer = loop.call_later(seconds, pipeline.stop) if seconds is not None else None
    if saver is not None:
        try:
            await saver.recover()
        except (CheckpointError, OSError) as exc:
            log.error("checkpoint", action="recover failed", error=f"{type(exc).__name__}: {exc}")
            return 2
    # on a cluster the driver takes the checkpoints, at its ticks (the partitions' state
    # comes from the workers): no periodic task of this process
    periodic = loop.create_task(saver.periodic()) if saver is not None and cluster is None \
        else None
    connected = loop.create_task(_connected(pipeline, log)) if cluster is not None else None
    options: dict[str, Any] = {}
    if cluster is not None and saver is not None:
        options = {"durable": saver.cluster_checkpoint, "checkpoint_every": f"{saver.every}s",
                   "restored": saver.partitions_state}
    try:
        await pipeline.arun(cluster=cluster, **options)
    except Exception as exc:
        log.error("failed", error=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        if timer is not None:
            timer.cancel()
        if connected is not None:
            connected.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connected
        if periodic is not None:
            periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await periodic
    code = 0
    if saver is not None:
        if saver.exhausted:
            try:  # windows flushed: a restart emits nothing more
                await saver.checkpoint("end", finished=True)
            except CheckpointError as exc:
                log.error("checkpoint", action="failed", reason="end", error=str(exc))
                code = 1
        if saver.failures:
            code = 1
        for sink in pipeline.sinks:
            await sink.flush()  # release what the last commit opened
    dropped = {s.name: s.stats.undeliverable_rows for s in pipeline.sinks
               if s.stats.undeliverable_rows}
    if dropped:
        log.error("sinks", action="dropped rows", rows=dropped)
        code = 1
    return code


async def _connected(pipeline: Pipeline, log: Any) -> None:
    """Log once the driver has placed the partitions on the cluster's workers."""
    while True:
        runner = pipeline.runner
        if runner is not None and runner.workers:
            log.info("cluster", action="connected", partitions=runner.partitions,
                     workers=len(set(runner.workers.values())),
                     dashboard=runner.dashboard_link,
                     restored_partitions=runner.restored_partitions)
            return
        await asyncio.sleep(0.1)


class _Saver:
    """Checkpoints of one run: restores at start, saves between batches and at the end.

    The source is wrapped so that when it returns *before its end* (a stop) the checkpoint is
    saved and the stream is marked ended without the end-of-stream flush: open windows,
    pending rolling rows and held alert rows stay in the checkpoint and are emitted by the
    run that resumes from it, never twice.
    """

    def __init__(self, pipeline: Pipeline, store: Checkpoint, every: float, log: Any) -> None:
        self.pipeline, self.store, self.every = pipeline, store, every
        self.log = log.bind(checkpoint=str(store.path))
        root = pipeline.root
        assert root.source is not None
        self.source: Source = root.source
        self.kind = source_kind(self.source)
        self.counts: _Counts | None = None
        self._lock: asyncio.Lock | None = None
        self._carried: list[Any] = []  # positions of a checkpoint that could not be written
        #: Checkpoints that could not be written (the run exits 1 if any).
        self.failures = 0
        #: a cluster run's partitions' state in the last checkpoint (``ClusterRunner``):
        #: every checkpoint of the run carries it, the recovery's first one included
        self.partitions_state: dict[str, Any] | None = None
        if store.restore(pipeline):
            saved = store.restored
            assert saved is not None
            self.partitions_state = store.extra.get("partitions_state")
            self.log.info("checkpoint", action="restored", position=_json(saved.position),
                          finished=saved.finished, saved_at=saved.saved_at)
        else:
            self.log.info("checkpoint", action="fresh", source=self.kind)
        root.graph.attach_source(_Checkpointed(self))

    @property
    def exhausted(self) -> bool:
        """Whether the source reached the end of its data (not stopped before it)."""
        return bool(getattr(self.source, "exhausted", False))  # feeds never end by themselves

    def resume_counts(self, counts: _Counts) -> None:
        """Continue the per-node metric counts of the checkpoint."""
        self.counts = counts
        for field in ("rows", "batches"):
            saved = self.store.extra.get(field, {})
            target = getattr(counts, field)
            for name, n in saved.items():
                if name in target:
                    target[name] = n

    def _extra(self) -> dict[str, Any]:
        return {} if self.counts is None else {"rows": dict(self.counts.rows),
                                               "batches": dict(self.counts.batches)}

    async def recover(self) -> None:
        """Before the source starts: sinks back to the restored checkpoint, acks resumed.

        Then a first checkpoint: the baseline a crash before the first periodic one goes
        back to (a fresh run's sinks are cut back to where they were when it started).
        """
        restored = self.store.restored is not None
        txs = self.store.sinks
        for sink in self.pipeline.sinks:
            sink.transactional = True
            if restored and sink.name in txs:
                await sink.recover(txs[sink.name])
        if hasattr(self.source, "defer_acks"):
            self.source.defer_acks = True
        resumed = list(self.store.acks)
        if resumed and hasattr(self.source, "resume_acks"):
            self.source.resume_acks(resumed)
        await self.checkpoint("start", acks=resumed)

    async def checkpoint(self, reason: str, *, finished: bool = False,
                         acks: list[Any] | None = None,
                         extra: dict[str, Any] | None = None) -> None:
        """One checkpoint barrier (Flink's model), between two batches.

        The operator state and the source position are captured at once; each sink then
        delivers what was queued before the barrier and makes it durable (its transaction
        state goes into the checkpoint); the checkpoint is written off the event loop; only
        then do the sinks commit and the source acknowledge the messages it covers.
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            sinks = self.pipeline.sinks
            marks = {sink.name: sink.barrier() for sink in sinks}
            carried = {} if self.partitions_state is None else \
                {"partitions_state": self.partitions_state}
            captured = self.store.capture(self.pipeline, finished=finished,
                                          extra={**self._extra(), **carried, **(extra or {})})
            position = _json(getattr(self.source, "position", None))  # the captured one
            take = getattr(self.source, "take_acks", None)
            taken: list[Any] = (self._carried + list(acks or [])
                                + (take() if take is not None else []))
            self._carried = []
            started = time.monotonic()
            txs = {sink.name: await sink.prepare_commit(marks[sink.name]) for sink in sinks}
            try:
                await asyncio.to_thread(self.store.write, captured, sinks=txs, acks=taken)
            except CheckpointError:
                self._carried = taken  # acknowledged after the next checkpoint that is written
                raise
            if self.counts is not None:
                self.counts.checkpoints += 1
            for sink in sinks:
                await sink.commit(txs[sink.name])
            ack = getattr(self.source, "ack", None)
            if taken and ack is not None:
                await ack(taken)
            self.log.info("checkpoint", action="saved", reason=reason, finished=finished,
                          position=position, acks=len(taken),
                          ms=round((time.monotonic() - started) * 1e3, 1))

    async def cluster_checkpoint(self, state: dict[str, Any]) -> bool:
        """A checkpoint of a cluster run, at a tick of its driver (``ClusterRunner``).

        ``state``: the partitions' state from the workers, saved with the driver's nodes;
        the workers acknowledge what it covers only once it is written. Returns whether it
        was (a failure is logged and counted; the entries wait for the next one).
        """
        previous, self.partitions_state = self.partitions_state, state
        try:
            await self.checkpoint("periodic")
        except CheckpointError as exc:
            self.partitions_state = previous
            self.failures += 1
            if self.counts is not None:
                self.counts.checkpoint_failures += 1
            self.log.error("checkpoint", action="failed", reason="periodic", error=str(exc),
                           failures=self.failures)
            return False
        return True

    async def periodic(self) -> None:
        """A checkpoint every ``every`` seconds; a failed one is logged, counted, retried.

        Earlier when the source says its broker's delivery window is full of messages that
        wait for a checkpoint to be acknowledged (``window_full``).
        """
        graph = self.pipeline.root.graph
        full: asyncio.Event | None = getattr(self.source, "window_full", None)
        while True:
            if full is None:
                await asyncio.sleep(self.every)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(full.wait(), self.every)
            if graph.closed:
                continue
            try:
                await self.checkpoint("periodic")
            except CheckpointError as exc:
                self.failures += 1
                if self.counts is not None:
                    self.counts.checkpoint_failures += 1
                self.log.error("checkpoint", action="failed", reason="periodic",
                               error=str(exc), failures=self.failures)


class _Checkpointed:
    """The run's source, saving a checkpoint instead of flushing when it is stopped early."""

    #: :mod:`rtnb.state` looks through it to the source it wraps (``inner``).
    wraps_source = True

    def __init__(self, saver: _Saver) -> None:
        self.saver = saver
        self.inner = saver.source

    def __repr__(self) -> str:
        return repr(self.inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # stats, max_events... for metrics and limits

    async def run(self, frame: StreamingFrame, stop: asyncio.Event) -> None:
        saved: list[bool] = []

        async def at_stop() -> None:  # the last batch is handled, the connection still open
            if not self.saver.exhausted:
                await self.saver.checkpoint("stop")
                saved.append(True)

        if hasattr(self.inner, "before_close"):  # its acks travel on the live connection
            self.inner.before_close = at_stop
        await self.inner.run(frame, stop)
        if not self.saver.exhausted:
            if not saved:
                await self.saver.checkpoint("stop")
            # The stream ends here without the end-of-stream flush (the frame closes the
            # graph when this returns, and a closed graph does not close twice): what is
            # open lives on in the checkpoint.
            frame.graph.suspend()


def _json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value

