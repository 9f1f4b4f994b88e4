"""A Kafka-protocol broker on this machine: librdkafka's mock cluster, in the test process.

The ``confluent-kafka`` wheel (a dev dependency) ships librdkafka's mock cluster:
``Producer({"bootstrap.servers": "", "test.mock.num.brokers": 3})`` starts three brokers on
127.0.0.1 that live as long as that producer. They speak the Kafka protocol: consumer
groups, offset commits, fetches by aiokafka or librdkafka. A topic is created on its first
metadata request, with 4 partitions (the mock cluster's default; no admin API needed).

There is no skip: without confluent-kafka the fixture fails with how to install it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

#: Partitions of a topic the mock cluster creates.
PARTITIONS = 4


def _confluent() -> Any:
    try:
        import confluent_kafka
    except ImportError as exc:  # no skip: `make test` installs it
        msg = ("the Kafka tests need confluent-kafka (its wheel holds librdkafka's mock "
               "cluster): .venv/bin/pip install -e '.[dev]'")
        raise pytest.fail.Exception(msg) from exc
    return confluent_kafka


class MockKafka:
    """A mock Kafka cluster of ``brokers`` brokers on 127.0.0.1, up until :meth:`close`."""

    def __init__(self, brokers: int = 3) -> None:
        ck = _confluent()
        self._ck = ck
        # log_level 3: librdkafka's errors only (not its MOCK notice on every start)
        self.producer: Any = ck.Producer({"bootstrap.servers": "",
                                          "test.mock.num.brokers": brokers,
                                          "log_level": 3, "linger.ms": 5})
        found = self.producer.list_topics(timeout=10).brokers
        self.bootstrap = ",".join(f"{b.host}:{b.port}" for b in found.values())
        self.closed = False

    def topic(self, prefix: str = "rtnb") -> str:
        """A new topic (``PARTITIONS`` partitions), created now."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        meta = self.producer.list_topics(name, timeout=10).topics[name]
        assert len(meta.partitions) == PARTITIONS, meta
        return name

    def produce(self, topic: str, values: Sequence[bytes], *,
                partition: Callable[[int], int] | None = None) -> None:
        """Send ``values`` in order, message ``i`` to ``partition(i)`` (default ``i % 4``)."""
        where = partition or (lambda i: i % PARTITIONS)
        p = self.producer
        for i, value in enumerate(values):
            while True:
                try:
                    p.produce(topic, value=value, partition=where(i))
                    break
                except BufferError:  # the local queue is full: let it drain
                    p.poll(0.01)
        left = p.flush(30)
        assert left == 0, f"{left} messages not delivered to the mock cluster"

    def consumer(self, group: str) -> Any:
        return self._ck.Consumer({"bootstrap.servers": self.bootstrap, "group.id": group,
                                  "enable.auto.commit": False, "log_level": 3})

    def committed(self, topic: str, group: str) -> dict[int, int]:
        """The group's committed offsets per partition (-1001: none)."""
        c = self.consumer(group)
        try:
            tps = [self._ck.TopicPartition(topic, p) for p in range(PARTITIONS)]
            return {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
        finally:
            c.close()

    def ends(self, topic: str) -> dict[int, int]:
        """The end offset (high watermark) of every partition."""
        c = self.consumer("rtnb-probe")
        try:
            return {p: c.get_watermark_offsets(self._ck.TopicPartition(topic, p),
                                               timeout=10)[1] for p in range(PARTITIONS)}
        finally:
            c.close()

    def close(self) -> None:
        """Stop the brokers (every client connected to them loses its connections)."""
        if not self.closed:
            self.closed = True
            self.producer.close()


@contextlib.contextmanager
def mock_kafka(brokers: int = 3) -> Iterator[MockKafka]:
    cluster = MockKafka(brokers)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[MockKafka]:
    """One mock cluster for the session (each test uses topics and groups of its own)."""
    with mock_kafka() as cluster:
        yield cluster


# -- exported scripts ---------------------------------------------------------------------
class Job:
    """One run of an exported script (``python -I``); a thread reads its structlog lines."""

    def __init__(self, script: Path, args: Sequence[str]) -> None:
        env = dict(os.environ)
        env.pop("RTNB_REPLAY_MAX_EVENTS", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(script), *args], cwd=script.parent,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, env=env)
        self.events: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._lock:
                self.lines.append(line.rstrip("\n"))
                if line.startswith("{"):
                    with contextlib.suppress(json.JSONDecodeError):
                        self.events.append(json.loads(line))

    def saved(self) -> int:
        """How many checkpoints this run saved so far."""
        with self._lock:
            return sum(e.get("event") == "checkpoint" and e.get("action") == "saved"
                       for e in self.events)

    def wait(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if self.proc.poll() is not None:
                msg = f"the job ended while waiting for {what}:\n{self.tail()}"
                raise AssertionError(msg)
            if time.monotonic() > deadline:
                msg = f"not reached in {timeout} s: {what}\n{self.tail()}"
                raise AssertionError(msg)
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL (kill -9)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._reader.join(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait: the run stops at a checkpoint and exits."""
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill()

    def tail(self, n: int = 25) -> str:
        with self._lock:
            return "\n".join(self.lines[-n:])
