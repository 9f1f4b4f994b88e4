"""Fault-injection fixtures: the shared Redis on 127.0.0.1:6379, a fresh stream per test.

Only the exported scripts are killed here; the shared Redis server is never stopped.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def redis_client() -> Iterator[Any]:
    """A client of the shared Redis (skipped if it is not running, failed under CI)."""
    with socket.socket() as s:
        s.settimeout(1.0)
        if s.connect_ex(("127.0.0.1", 6379)) != 0:
            reason = "Redis is not running on 127.0.0.1:6379 (`make services` starts it)"
            if os.environ.get("CI") == "true":
                pytest.fail(reason)
            pytest.skip(reason)
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    yield client
    client.close()


@pytest.fixture
def stream_names(redis_client: Any) -> Iterator[Any]:
    """``stream_names("in")`` -> a stream key unique to this test; deleted afterwards."""
    made: list[str] = []

    def new(what: str) -> str:
        name = f"rtnb-faults-{what}-{uuid.uuid4().hex[:10]}"
        made.append(name)
        return name

    yield new
    if made:
        redis_client.delete(*made)
