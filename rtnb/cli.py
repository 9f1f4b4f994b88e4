r"""The ``rtnb`` command: run exported scripts, serve dashboards, export notebooks, feed brokers.

::

    rtnb export notebooks/03-live-dashboards.ipynb -o monitor.py
    rtnb run monitor.py --window 1min --max-events 100000
    rtnb serve app.py --port 5006
    rtnb replay data/metrics.parquet --speed 10 --to redis://127.0.0.1:6379/0 --topic metrics
    rtnb replay data/metrics.parquet --to redis://127.0.0.1:6379/0 --topic metrics \
        --partitions 4 --key host

Bad arguments exit with status 2 and a message naming the argument (typer/click usage errors).
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="rtnb", no_args_is_help=True, add_completion=False,
    help="Real-time analytics pipelines from notebooks: run, serve, export, replay.")


def _existing(path: Path, what: str) -> Path:
    if not path.exists():
        msg = f"{what} {str(path)!r} does not exist"
        raise typer.BadParameter(msg)
    return path


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    script: Annotated[Path, typer.Argument(help="an exported pipeline script (monitor.py)")],
) -> None:
    """Run an exported script headless; options after the script go to it (see its --help).

    ``rtnb run monitor.py replay --since 7d --set threshold=4 --diff`` runs the script's
    shadow replay instead (``replay --help`` lists its options).
    """
    _existing(script, "script")
    if script.suffix != ".py":
        msg = f"{script.name!r} is not a Python script (.py)"
        raise typer.BadParameter(msg, param_hint="SCRIPT")
    sys.argv = [str(script), *ctx.args]
    runpy.run_path(str(script), run_name="__main__")


@app.command()
def serve(
    app_path: Annotated[Path, typer.Argument(metavar="APP",
                                             help="a dashboard app (export_dashboard)")],
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5006,
    address: Annotated[str, typer.Option(help="interface to bind (127.0.0.1 by default: "
                                              "put a reverse proxy in front to expose it)")]
    = "127.0.0.1",
    allow_origin: Annotated[list[str] | None, typer.Option(
        help="extra websocket origin allowed (host:port); repeat for several")] = None,
    session_linger: Annotated[float, typer.Option(
        help="seconds a browser session is kept after its page closed (or before its page "
             "connects) before its pipeline is stopped and freed")] = 10.0,
) -> None:
    """Serve a dashboard app with ``bokeh serve``, bound to 127.0.0.1 by default.

    Each browser session runs its own pipeline; a session whose page went away is ended
    ``--session-linger`` seconds later (checked every second), not after Bokeh's 15-32 s.
    """
    _existing(app_path, "app")
    if not 0 < port < 65536:
        msg = f"--port must be 1..65535; got {port}"
        raise typer.BadParameter(msg)
    if not 1 <= session_linger <= 3600:
        msg = (f"--session-linger must be 1..3600 seconds; got {session_linger} (a page needs "
               "that long to load and connect)")
        raise typer.BadParameter(msg)
    origins = [f"127.0.0.1:{port}", f"localhost:{port}", *(allow_origin or [])]
    cmd = [sys.executable, "-m", "bokeh", "serve", str(app_path), "--address", address,
           "--port", str(port),
           "--unused-session-lifetime", str(int(session_linger * 1000)),
           "--check-unused-sessions", "1000"]
    for origin in origins:
        cmd += ["--allow-websocket-origin", origin]
    # Replace this process, so that signals (Ctrl-C, SIGTERM from a supervisor) reach the server.
    sys.stdout.flush()
    os.execv(sys.executable, cmd)


@app.command()
def export(
    notebook: Annotated[Path, typer.Argument(help="the notebook whose pipeline to export")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the script to write")],
    pipeline: Annotated[str | None, typer.Option(
        help="name of the source whose pipeline to export (default: the last one started)")]
    = None,
    max_events: Annotated[int, typer.Option(
        help="bound every source of the notebook to this many events while it runs")] = 20_000,
    record: Annotated[Path | None, typer.Option(
        help="also save what the pipeline read and emitted here (for --input/--output "
             "parity checks)")] = None,
    timeout: Annotated[float, typer.Option(help="seconds allowed per cell")] = 600.0,
    dashboard: Annotated[Path | None, typer.Option(
        help="also write the pipeline's views as a Bokeh server app (rtnb serve APP)")] = None,
) -> None:
    """Execute a notebook headless (sources bounded) and export the pipeline it runs."""
    from rtnb.errors import ExportError
    from rtnb.export.notebook import export_notebook

    _existing(notebook, "notebook")
    if notebook.suffix != ".ipynb":
        msg = f"{notebook.name!r} is not a notebook (.ipynb)"
        raise typer.BadParameter(msg, param_hint="NOTEBOOK")
    if max_events <= 0:
        msg = f"--max-events must be positive; got {max_events}"
        raise typer.BadParameter(msg)
    try:
        def tell(done: int, cells: int, seconds: float) -> None:
            left = seconds / done * (cells - done)
            typer.echo(f"rtnb export: {notebook.name} cell {done}/{cells} "
                       f"({done / cells:.0%}, {seconds:.0f} s, about {left:.0f} s left)",
                       err=True)

        report = export_notebook(notebook, output, pipeline=pipeline, max_events=max_events,
                                 record=record, timeout=timeout, dashboard=dashboard,
                                 progress=tell)
    except ExportError as exc:
        typer.echo(f"rtnb export: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {report['script']}: pipeline {report['pipeline']!r}, "
               f"{len(report['nodes'])} nodes, params {report['params']}")
    if report.get("dashboard"):
        typer.echo(f"wrote {report['dashboard']}: serve it with `rtnb serve "
                   f"{Path(report['dashboard']).name}`")
    if report.get("params_changed_during_run"):
        typer.echo(f"note: {report['params_changed_during_run']} changed while the recorded run "
                   "went on; the recording mixes settings, the script uses the final values",
                   err=True)


_SCHEMES = ("redis", "rediss", "nats", "tls", "mqtt", "mqtts", "amqp", "amqps", "kafka")


@app.command()
def replay(
    data: Annotated[Path, typer.Argument(help="a .parquet or .csv file of events")],
    to: Annotated[str, typer.Option(
        help="broker URL: redis://, nats://, mqtt://, amqp:// or kafka://HOST:PORT (or - "
             "for JSON lines on stdout)")],
    topic: Annotated[str | None, typer.Option(
        help="Redis stream / NATS subject / MQTT topic / AMQP routing key / Kafka topic")]
    = None,
    speed: Annotated[float | None, typer.Option(help="multiple of real time (default: as "
                                                     "fast as possible)")] = None,
    time: Annotated[str, typer.Option(help="the event-time column")] = "timestamp",
    max_events: Annotated[int | None, typer.Option(help="send at most this many rows")] = None,
    password_env: Annotated[str | None, typer.Option(
        help="environment variable holding the broker password")] = None,
    partitions: Annotated[int | None, typer.Option(
        help="write N partitions (Redis only): each row to the stream TOPIC:{p}, p = "
             "rtnb.partition_of(row[KEY], N), which redis_stream(TOPIC, partitions=N) "
             "reads")] = None,
    key: Annotated[str | None, typer.Option(
        help="the column whose value picks a row's partition (with --partitions; for "
             "kafka:// the message key, the broker's partitions)")] = None,
) -> None:
    """Replay a recorded file into a broker at a multiple of real time (demos, load tests).

    ``--partitions 4 --key host`` writes the Redis streams ``TOPIC:0`` .. ``TOPIC:3``, every
    row of a host in the same one (Kafka's default partitioner, ``rtnb.partition_of``).
    ``--to kafka://HOST:PORT --key host`` makes the host each message's key: the topic's
    own partitions, chosen by the same partitioner.
    """
    import rtnb
    from rtnb.errors import ConfigError, SourceError

    _existing(data, "data file")
    if speed is not None and speed <= 0:
        msg = f"--speed must be positive; got {speed}"
        raise typer.BadParameter(msg)
    scheme = urlsplit(to).scheme if to != "-" else "-"
    if to != "-" and scheme not in _SCHEMES:
        msg = (f"--to must be a redis://, nats://, mqtt://, amqp:// or kafka:// URL, or -; "
               f"got {to!r}")
        raise typer.BadParameter(msg)
    if to != "-" and not topic:
        msg = f"--topic is needed for {scheme}:// (the stream, subject, topic or routing key)"
        raise typer.BadParameter(msg)
    if partitions is not None:
        if partitions < 1:
            msg = f"--partitions must be positive; got {partitions}"
            raise typer.BadParameter(msg)
        if not scheme.startswith("redis"):
            msg = (f"--partitions is only for redis:// for now (streams TOPIC:0 .. TOPIC:N-1); "
                   f"got --to {_masked(to)}")
            raise typer.BadParameter(msg)
        if key is None:
            msg = "--partitions needs --key, the column whose value picks a row's partition"
            raise typer.BadParameter(msg)
    elif key is not None and scheme != "kafka":
        msg = "--key picks a row's partition and needs --partitions N"
        raise typer.BadParameter(msg)
    try:
        src = rtnb.sources.replay(data, time=time, speed=speed, max_events=max_events,
                                  name="replay")
    except (ConfigError, SourceError) as exc:
        raise typer.BadParameter(str(exc), param_hint="DATA") from exc
    if to == "-":
        rtnb.sinks.to_log(src, sys.stdout)
    elif scheme.startswith("redis"):
        try:
            rtnb.sinks.to_redis_stream(src, str(topic), to, password_env=password_env,
                                       partitions=partitions, key=key)
        except ConfigError as exc:
            raise typer.BadParameter(str(exc), param_hint="--key") from exc
    elif scheme == "kafka":  # kafka://HOST:PORT[,HOST:PORT]: the bootstrap servers
        try:
            rtnb.sinks.to_kafka(src, str(topic), to.split("://", 1)[1], key=key,
                                password_env=password_env)
        except ConfigError as exc:
            raise typer.BadParameter(str(exc), param_hint="--key") from exc
    elif scheme in ("nats", "tls"):
        rtnb.sinks.to_nats(src, str(topic), to, password_env=password_env)
    elif scheme.startswith("mqtt"):
        rtnb.sinks.to_mqtt(src, str(topic), to, password_env=password_env)
    else:
        rtnb.sinks.to_amqp(src, to, routing_key=str(topic), password_env=password_env)
    src.run()
    sink = src.graph.sinks[-1]
    typer.echo(f"replayed {src.counters.events} rows from {data.name} to "
               f"{_masked(to)}; delivered {sink.stats.delivered_rows}, "
               f"undeliverable {sink.stats.undeliverable_rows}", err=True)
    if sink.stats.undeliverable_rows:
        raise typer.Exit(1)


def _masked(url: str) -> str:
    from rtnb._net import mask_url

    return url if url == "-" else mask_url(url)


def main() -> None:
    """Entry point of the ``rtnb`` console script."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()
