"""to_redis_stream in a run with checkpoints: what was written after the checkpoint is undone."""

from __future__ import annotations

import asyncio
import json
import uuid

import pandas as pd
import pytest

import rtnb

pytestmark = pytest.mark.integration
URL = "redis://127.0.0.1:6379/0"


def frame() -> rtnb.StreamingFrame:
    return rtnb.StreamingFrame(pd.DataFrame({"n": pd.Series([], dtype="int64")}), name="out")


def test_recover_deletes_entries_written_after_the_checkpoint():
    import redis.asyncio as aioredis

    stream = f"rtnb-tx-{uuid.uuid4().hex[:8]}"

    async def scenario() -> list[int]:
        client = aioredis.from_url(URL)
        await client.xadd(stream, {"data": json.dumps({"n": -1})})  # an earlier run's output
        sdf = frame()
        sink = rtnb.sinks.to_redis_stream(sdf, stream, URL)
        sink.transactional = True
        sdf.emit(pd.DataFrame({"n": [0, 1, 2]}))
        state = await sink.prepare_commit(sink.barrier())
        await sink.commit(state)
        sdf.emit(pd.DataFrame({"n": [3, 4]}))  # after the checkpoint; the process dies
        await sink.flush()
        again = frame()
        restarted = rtnb.sinks.to_redis_stream(again, stream, URL)
        await restarted.recover(state)
        again.emit(pd.DataFrame({"n": [3, 4, 5]}))
        await restarted.flush()
        entries = await client.xrange(stream)
        await client.delete(stream)
        await client.aclose()
        return [json.loads(fields[b"data"])["n"] for _, fields in entries]

    assert asyncio.run(scenario()) == [-1, 0, 1, 2, 3, 4, 5]
