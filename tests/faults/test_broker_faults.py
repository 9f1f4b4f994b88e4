"""Broker faults for exported scripts with ``--checkpoint``: kill -9 of the script, of the
broker, TCP cuts, a slow webhook; the output compared with pandas on the whole input.

Each test builds the pipeline a user writes (a broker source, ``window(tumbling("10s"),
by="key").agg(n=count, s=sum)``, a sink), exports it with ``rtnb.Pipeline(...).export`` and
runs the script as a subprocess (``fault_helpers.Job``) with ``--checkpoint state.db
--checkpoint-every 200ms``. The input is published before the first run, followed by one
flush event per key a minute later that closes every window of the data (a live source never
ends: the last run is stopped with SIGTERM once the sink holds every window, and then the
broker must hold nothing unacknowledged). What the sink holds is counted as issue #15's table
counts it: lost / duplicated / wrong windows.

* SIGKILL of the script 5 times (random moments, right after a checkpoint ``saved`` line,
  inside a checkpoint save) with a NATS JetStream durable, an MQTT persistent session (qos 1)
  and an AMQP named queue, on the shared brokers (a fresh stream/session/queue each).
* kill -9 of a private ``redis-server`` (AOF) and ``nats-server -js`` (its own port and
  store) mid-run: the script reconnects after the restart; once more with the script killed
  too while the broker is down.
* TCP cuts (and a stall) through a proxy between the script and the shared NATS, Mosquitto
  and RabbitMQ.
* A slow webhook receiver and 5 SIGKILLs of the script: nothing lost, every repeated delivery
  carries a key the receiver saw before (deduplicated by key: exactly the windows).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from broker_helpers import (
    AMQP_PASSWORD_ENV,
    NATS_URL,
    amqp_count,
    amqp_create,
    amqp_delete,
    mqtt_left,
    mqtt_publish,
    mqtt_session,
    nats_consumer,
    nats_create,
    nats_delete,
    payloads,
    with_flush,
)
from fault_helpers import (
    AGGS,
    LATENESS,
    WINDOW,
    Job,
    Kill,
    describe,
    expected_windows,
    is_checkpoint,
    kill_and_restart,
    make_events,
    read_log,
    tally,
)

import rtnb
from rtnb.testing import assert_frame_equal_unordered

pytestmark = pytest.mark.faults

EXAMPLE = {"timestamp": "datetime64[ns]", "key": "str", "v": "float64"}
EVERY = "200ms"
EVERY_S = 0.2
MODES = ("random", "after_saved", "during_save", "random", "after_saved")


def uid() -> str:
    return uuid.uuid4().hex[:10]


def service_or_skip(port: int, what: str) -> None:
    import os
    import socket

    with socket.socket() as s:
        s.settimeout(1.0)
        if s.connect_ex(("127.0.0.1", port)) == 0:
            return
    reason = f"{what} is not running on 127.0.0.1:{port} (`make services` starts it)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def windows_of(src: rtnb.StreamingFrame) -> rtnb.StreamingFrame:
    return src.window(rtnb.tumbling(WINDOW), by="key", allowed_lateness=LATENESS,
                      emit="final").agg(**AGGS)


def export(folder: Path, src: rtnb.StreamingFrame, log: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rtnb.sinks.to_log(windows_of(src), str(log))
    return rtnb.Pipeline(src).export(folder / "job.py")


# -- one broker's part -----------------------------------------------------------------------
@dataclass
class Case:
    """A broker source of one test: how to build it, probe it, and clean it up."""

    name: str
    source: Callable[[str], rtnb.StreamingFrame]  # url -> the source frame
    remaining: Callable[[], Any]  # after a kill: what the broker still holds for the job
    left: Callable[[], int]  # at the end: messages left unacknowledged (0 expected)
    cleanup: Callable[[], None]
    url: str = ""
    notes: dict[str, Any] = field(default_factory=dict)


def nats_case(events: pd.DataFrame, url: str = NATS_URL, *,
              publish: bool = True) -> Case:
    stream, durable = f"rtnb-faults-{uid()}", "job"
    subject = f"rtnb.faults.{stream}"
    if publish:
        asyncio.run(nats_create(url, stream, subject, payloads(events)))

    def source(at: str) -> rtnb.StreamingFrame:
        return rtnb.sources.nats(subject, at, example=EXAMPLE, time="timestamp",
                                 stream=stream, durable=durable, count=200, max_batch=200,
                                 max_ack_pending=600, ack_wait="60s", name="events")

    def remaining() -> Any:
        return asyncio.run(nats_consumer(url, stream, durable))

    def left() -> int:
        info = remaining()
        assert info is not None, "the durable consumer is gone"
        return int(info["pending"] + info["unacked"])

    case = Case("nats", source, remaining, left, lambda: asyncio.run(nats_delete(url, stream)),
                url=url)
    case.notes.update(stream=stream, subject=subject, durable=durable)
    return case


def mqtt_case(events: pd.DataFrame, port: int = 1883) -> Case:
    topic, client_id = f"rtnb/faults/{uid()}", f"rtnb-faults-{uid()}"
    asyncio.run(mqtt_session(client_id, topic))  # the session queues what is published now
    asyncio.run(mqtt_publish(topic, payloads(events)))

    def source(at: str) -> rtnb.StreamingFrame:
        return rtnb.sources.mqtt(topic, at, example=EXAMPLE, time="timestamp",
                                 client_id=client_id, protocol="3.1.1", max_inflight=20,
                                 max_batch=20, name="events")

    ended: list[int] = []

    def left() -> int:
        ended.append(asyncio.run(mqtt_left(client_id)))  # ends the session
        return ended[-1]

    def cleanup() -> None:
        if not ended:
            with contextlib.suppress(Exception):
                asyncio.run(mqtt_left(client_id))

    return Case("mqtt", source, lambda: None, left, cleanup, url=f"mqtt://127.0.0.1:{port}")


def amqp_case(events: pd.DataFrame, port: int = 5672) -> Case:
    queue = f"rtnb-faults-{uid()}"
    asyncio.run(amqp_create(queue, payloads(events)))

    def source(at: str) -> rtnb.StreamingFrame:
        return rtnb.sources.amqp(at, queue=queue, example=EXAMPLE, time="timestamp",
                                 prefetch=200, max_batch=200,
                                 password_env=AMQP_PASSWORD_ENV, name="events")

    def remaining() -> int:
        return asyncio.run(amqp_count(queue))

    return Case("amqp", source, remaining, remaining,
                lambda: asyncio.run(amqp_delete(queue)),
                url=f"amqp://guest@127.0.0.1:{port}/")


@pytest.fixture
def amqp_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AMQP_PASSWORD_ENV, "guest")  # the jobs inherit the environment


# -- running ---------------------------------------------------------------------------------
def covered(log: Path, expected: pd.DataFrame) -> bool:
    """Whether the log holds a row for every expected (window, key)."""
    got = read_log(log)
    keys = ["window_start", "key"]
    have = pd.MultiIndex.from_frame(got[keys].drop_duplicates())
    return bool(pd.MultiIndex.from_frame(expected[keys]).isin(have).all())


def drain_then_stop(script: Path, args: list[str], log: Path, expected: pd.DataFrame, *,
                    timeout: float = 45.0,
                    during: Callable[[Job], None] | None = None) -> Job:
    """Run until the log holds every expected window (``during`` runs meanwhile), then
    SIGTERM at once: the stop's checkpoint acknowledges what the periodic ones had not yet.
    The run must exit 0 in time (no stall)."""
    job = Job(script, args)
    try:
        # the first checkpoint comes after the sink was brought back to the restored one
        first = job.wait_for(is_checkpoint("saved"), timeout=timeout)
        assert first is not None, job.tail()
        if during is not None:
            during(job)
        deadline = time.monotonic() + timeout
        while not covered(log, expected):
            assert not job.done, f"the run ended by itself:\n{job.tail()}"
            assert time.monotonic() < deadline, (
                f"stalled: {tally(read_log(log), expected)} after {timeout} s\n{job.tail()}")
            time.sleep(0.1)
        assert not job.done, f"the run ended by itself:\n{job.tail()}"
        job.proc.send_signal(signal.SIGTERM)
        code = job.finish(timeout=30)
    finally:
        job.close()
    assert code == 0, job.tail()
    return job


def data_windows(df: pd.DataFrame, flush_at: pd.Timestamp) -> pd.DataFrame:
    out = df[df["window_start"] < flush_at].reset_index(drop=True)
    out.attrs.update(df.attrs)
    return out


def check(what: str, got: pd.DataFrame, expected: pd.DataFrame, left: int,
          history: list[Kill] | None = None, extra: str = "") -> None:
    counts = tally(got, expected)
    story = describe(history) if history else ""
    print(f"{what}: {counts}; {left} left unacknowledged {extra}\n{story}")
    assert counts.exact and left == 0, (
        f"{what}: {counts}; the broker holds {left} messages unacknowledged {extra}\n{story}")
    assert_frame_equal_unordered(got, expected, check_exact=False, rtol=1e-9, obj=what)


# == 1. SIGKILL of the script, broker sources ===============================================
SIZES = {"nats": (40_000, 100.0), "amqp": (20_000, 100.0), "mqtt": (900, 4.0)}


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize(("broker", "seed"), [("nats", 21), ("mqtt", 22), ("amqp", 23)])
def test_script_killed_5_times_with_a_broker_source_equals_pandas(
        tmp_path: Path, broker: str, seed: int, amqp_password: None) -> None:
    service_or_skip({"nats": 4222, "mqtt": 1883, "amqp": 5672}[broker], broker)
    n, rate = SIZES[broker]
    events = make_events(n, seed=seed, rate_hz=rate)
    data, flush_at = with_flush(events, WINDOW)
    expected = expected_windows(events)
    case = {"nats": nats_case, "mqtt": mqtt_case, "amqp": amqp_case}[broker](data)
    try:
        log = tmp_path / "out.jsonl"
        script = export(tmp_path / "job", case.source(case.url), log)
        db = tmp_path / "job" / "state.db"
        args = ["--checkpoint", str(db), "--checkpoint-every", EVERY]
        rng = np.random.default_rng(seed)
        # the MQTT input is small (a session queues 1,000 messages): kills come early
        modes = (["after_saved", "during_save", "after_saved", "random", "after_saved"]
                 if broker == "mqtt" else list(rng.permutation(MODES)))
        history = kill_and_restart(script, args, modes, rng, db=db,
                                   every=EVERY_S, max_delay=0.4 if broker == "mqtt" else 1.0,
                                   probe=case.remaining)
        # the last run checkpoints only when the broker's window is full, and at the stop:
        # the stop's checkpoint acknowledges the last messages (after the source's run)
        last = drain_then_stop(script, ["--checkpoint", str(db), "--checkpoint-every", "60s"],
                               log, expected)
        stop = [e for e in last.checkpoints("saved") if e.get("reason") == "stop"]
        assert stop, last.tail()
        if broker != "mqtt":  # (MQTT's 920 messages may all be read by the killed runs)
            assert stop[-1]["acks"] > 0, last.tail()
        got = data_windows(read_log(log), flush_at)
        check(f"{broker} -> to_log, script killed", got, expected, case.left(), history,
              f"(the stop acknowledged {stop[-1]['acks']})")
        assert sum(k.killed for k in history) >= 4, describe(history)
        assert any(k.during_save for k in history), describe(history)
        if broker != "mqtt":  # most kills interrupted work (the broker held some input)
            assert sum(bool(k.after and (k.after if isinstance(k.after, int) else
                                         k.after["pending"] + k.after["unacked"]))
                       for k in history) >= 3, describe(history)
    finally:
        case.cleanup()
