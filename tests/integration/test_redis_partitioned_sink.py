"""``rtnb.sinks.to_redis_stream(..., partitions=N, key=...)`` and ``rtnb replay --partitions N
--key host`` against the shared Redis server: each row into ``name:{partition_of(key, N)}``,
read back by ``rtnb.sources.redis_stream(name, partitions=N)`` (issue 19: partitions come from
the broker)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
import redis
from integration_helpers import service_or_skip
from typer.testing import CliRunner

import rtnb
from rtnb.cli import app
from rtnb.testing import assert_frame_equal_unordered

pytestmark = pytest.mark.integration

URL = "redis://127.0.0.1:6379/0"
N = 4
RTNB = Path(sys.executable).with_name("rtnb")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    df = rtnb.datasets.metrics().iloc[:3_000][["timestamp", "host", "cpu"]]
    return df.assign(seq=np.arange(len(df), dtype=np.int64)).reset_index(drop=True)


@pytest.fixture
def shared() -> Iterator[redis.Redis]:
    service_or_skip(6379, "Redis")
    client = redis.Redis.from_url(URL)
    yield client
    client.close()


@pytest.fixture
def stream(shared: redis.Redis) -> Iterator[str]:
    name = f"rtnb-psink-{uuid.uuid4().hex[:10]}"
    yield name
    shared.delete(name, *[f"{name}:{p}" for p in range(N)])


def frame(rows: pd.DataFrame) -> rtnb.StreamingFrame:
    return rtnb.StreamingFrame(rows.iloc[:0], time="timestamp", name="out")


def emit_in_batches(sdf: rtnb.StreamingFrame, rows: pd.DataFrame, size: int) -> None:
    for lo in range(0, len(rows), size):
        sdf.emit(rows.iloc[lo:lo + size].reset_index(drop=True))


def partition_seqs(client: redis.Redis, stream: str) -> list[list[int]]:
    """The ``seq`` of every entry of each partition stream, in entry order."""
    return [[json.loads(fields[b"data"])["seq"] for _, fields in client.xrange(f"{stream}:{p}")]
            for p in range(N)]


def expected_seqs(rows: pd.DataFrame) -> list[list[int]]:
    parts = rtnb.partition_of(rows["host"], N)
    return [rows.loc[parts == p, "seq"].tolist() for p in range(N)]


def test_every_row_once_in_its_keys_partition_in_order(
        shared: redis.Redis, stream: str, rows: pd.DataFrame) -> None:
    async def scenario() -> rtnb.sinks.Sink:
        sdf = frame(rows)
        sink = rtnb.sinks.to_redis_stream(sdf, stream, URL, partitions=N, key="host")
        emit_in_batches(sdf, rows, 170)
        await sink.flush()
        return sink

    sink = asyncio.run(scenario())
    result = partition_seqs(shared, stream)
    assert result == expected_seqs(rows)  # every row once, in its partition, in order
    assert all(result)  # the 12 hosts spread over all 4 partitions
    assert not shared.exists(stream)  # nothing in the unpartitioned stream
    assert sink.stats.delivered_rows == len(rows)
    # every entry carries its row's id, the same the sink computes for the whole input
    ids = [fields[b"id"].decode() for p in range(N)
           for _, fields in shared.xrange(f"{stream}:{p}")]
    assert sorted(ids) == sorted(sink.row_ids(rows))
    # and reads back as the same rows
    back = pd.DataFrame([json.loads(fields[b"data"]) for p in range(N)
                         for _, fields in shared.xrange(f"{stream}:{p}")])
    back["timestamp"] = pd.to_datetime(back["timestamp"])
    tm.assert_frame_equal(back.sort_values("seq", ignore_index=True), rows, check_dtype=False)


def test_a_restart_from_a_checkpoint_undoes_each_partitions_tail(
        shared: redis.Redis, stream: str, rows: pd.DataFrame) -> None:
    """Transactional: the checkpoint records each partition's last entry; a restart deletes
    what every partition got after it, and the rows written again land once."""
    cut = 1_200

    async def scenario() -> None:
        sdf = frame(rows)
        sink = rtnb.sinks.to_redis_stream(sdf, stream, URL, partitions=N, key="host")
        sink.transactional = True
        emit_in_batches(sdf, rows.iloc[:cut], 300)
        state = await sink.prepare_commit(sink.barrier())
        await sink.commit(state)
        assert set(state["last_ids"]) == {f"{stream}:{p}" for p in range(N)}
        emit_in_batches(sdf, rows.iloc[cut:2_000], 300)  # after the checkpoint; it dies
        await sink.flush()
        again = frame(rows)
        restarted = rtnb.sinks.to_redis_stream(again, stream, URL, partitions=N, key="host")
        await restarted.recover(state)
        emit_in_batches(again, rows.iloc[cut:], 250)
        await restarted.flush()

    asyncio.run(scenario())
    assert partition_seqs(shared, stream) == expected_seqs(rows)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"partitions": 4}, "sink 'out.redis': partitions=4 needs `key`"),
    ({"partitions": 4, "key": "hots"}, "key 'hots' is not a column of frame 'out'"),
    ({"key": "host"}, "`key` picks a row's partition and needs `partitions`"),
    ({"partitions": 0, "key": "host"}, "`partitions` must be a positive int; got 0"),
    ({"partitions": True, "key": "host"}, "`partitions` must be a positive int; got True"),
])
def test_bad_partition_settings_are_refused(kwargs: dict[str, object], message: str,
                                            rows: pd.DataFrame) -> None:
    with pytest.raises(rtnb.ConfigError, match=message.replace("(", r"\(")):
        rtnb.sinks.to_redis_stream(frame(rows), "s", URL, **kwargs)  # type: ignore[arg-type]


def test_a_row_without_a_key_is_a_schema_error(rows: pd.DataFrame) -> None:
    sdf = frame(rows)
    sink = rtnb.sinks.to_redis_stream(sdf, "s", URL, partitions=N, key="host")
    batch = rows.iloc[:3].assign(host=["web-01", None, "db-01"])
    with pytest.raises(rtnb.SchemaError, match="1 of 3 rows have no 'host'"):
        sdf.emit(batch)
    assert sink.stats.delivered_rows == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--to", "nats://127.0.0.1:4222", "--partitions", "4", "--key", "host"],
     "--partitions is only for redis:// for now"),
    (["--to", URL, "--partitions", "4"], "--partitions needs --key"),
    (["--to", URL, "--key", "host"], "--key picks a row's partition and needs --partitions"),
    (["--to", URL, "--partitions", "0", "--key", "host"], "--partitions must be positive"),
    (["--to", URL, "--partitions", "4", "--key", "hots"],
     "key 'hots' is not a column of frame 'replay'"),
])
def test_replay_refuses_bad_partition_options(args: list[str], message: str) -> None:
    done = CliRunner().invoke(app, ["replay", str(rtnb.datasets.metrics_path()), "--topic",
                                    "t", *args])
    assert done.exit_code == 2, done.output
    assert message in " ".join(done.output.replace("│", " ").split())


def test_replay_partitions_read_back_once_and_windows_equal_pandas(
        shared: redis.Redis, stream: str) -> None:
    done = subprocess.run(
        [str(RTNB), "replay", "data/metrics.parquet", "--max-events", "5000", "--to", URL,
         "--topic", stream, "--partitions", str(N), "--key", "host"],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "delivered 5000" in done.stderr
    rows = rtnb.datasets.metrics().iloc[:5_000]
    # each partition stream holds exactly its hosts' rows
    parts = rtnb.partition_of(rows["host"], N)
    assert [shared.xlen(f"{stream}:{p}") for p in range(N)] == \
        [int((parts == p).sum()) for p in range(N)]

    src = rtnb.sources.redis_stream(stream, example=rows.iloc[:0], time="timestamp",
                                    partitions=N, group="g", max_events=len(rows))
    raw = src.collect()
    per_host = src.window(rtnb.tumbling("1min"), by="host").agg(
        n=("cpu", "count"), mean=("cpu", "mean"), hi=("latency_ms", "max"))
    out = per_host.collect()
    src.run()
    assert_frame_equal_unordered(pd.concat(raw, ignore_index=True), rows, check_dtype=False)
    assert per_host.counters.late == 0
    result = pd.concat(out, ignore_index=True).rename(columns={"window_start": "timestamp"})
    expected = rows.groupby(["host", pd.Grouper(key="timestamp", freq="1min")]).agg(
        n=("cpu", "count"), mean=("cpu", "mean"), hi=("latency_ms", "max")).reset_index()
    assert_frame_equal_unordered(result[["host", "timestamp", "n", "mean", "hi"]], expected,
                                 check_dtype=False, check_exact=False, rtol=1e-9)
    shared.delete(*[f"{stream}:{p}" for p in range(N)])  # the group goes with its streams
