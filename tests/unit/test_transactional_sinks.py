"""Sinks in a run with checkpoints: prepare at the barrier, commit after it, recover on restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pandas as pd
import pandas.testing as tm

import rtnb


def frame() -> rtnb.StreamingFrame:
    return rtnb.StreamingFrame(pd.DataFrame({"n": pd.Series([], dtype="int64")}), name="out")


def rows(lo: int, hi: int) -> pd.DataFrame:
    return pd.DataFrame({"n": range(lo, hi)}, dtype="int64")


def test_log_file_is_cut_back_to_the_checkpoint_on_recover(tmp_path: Path):
    path = tmp_path / "out.jsonl"

    async def first_run() -> object:
        sdf = frame()
        sink = rtnb.sinks.to_log(sdf, path)
        sink.transactional = True
        sdf.emit(rows(0, 3))
        mark = sink.barrier()
        sdf.emit(rows(3, 5))  # queued after the barrier: not part of this checkpoint
        state = await sink.prepare_commit(mark)
        await sink.commit(state)
        await sink.flush()  # delivered after the checkpoint; then the process "dies"
        return state

    state = asyncio.run(first_run())
    assert [json.loads(x)["n"] for x in path.read_text().splitlines()] == [0, 1, 2, 3, 4]

    async def restart() -> None:
        sdf = frame()
        sink = rtnb.sinks.to_log(sdf, path)
        await sink.recover(state)
        sdf.emit(rows(3, 6))  # the restarted run produces what came after the checkpoint
        await sink.flush()

    asyncio.run(restart())
    assert [json.loads(x)["n"] for x in path.read_text().splitlines()] == list(range(6))
    assert rtnb.sinks.to_log(frame(), path).delivery == "exactly-once"


def test_parquet_files_are_hidden_until_their_checkpoint_commits(tmp_path: Path):
    folder = tmp_path / "out"

    async def first_run() -> tuple[object, list[str]]:
        sdf = frame()
        sink = rtnb.sinks.to_parquet(sdf, folder, rotate_rows=2)
        sink.transactional = True
        sdf.emit(rows(0, 3))
        state = await sink.prepare_commit(sink.barrier())
        before_commit = sorted(p.name for p in folder.iterdir())
        await sink.commit(state)
        sdf.emit(rows(3, 7))  # written after the checkpoint, never committed
        await asyncio.sleep(0.05)
        await sink.prepare_commit(sink.barrier())  # ...a checkpoint that never became durable
        return state, before_commit

    state, before_commit = asyncio.run(first_run())
    assert before_commit and all(name.startswith(".") for name in before_commit)  # hidden
    assert len(list(folder.glob(".part-*.pending"))) >= 1

    async def restart() -> None:
        sdf = frame()
        sink = rtnb.sinks.to_parquet(sdf, folder, rotate_rows=2)
        sink.transactional = True
        await sink.recover(state)
        assert not list(folder.glob(".*"))
        sdf.emit(rows(3, 7))
        await sink.commit(await sink.prepare_commit(sink.barrier()))
        await sink.flush()

    asyncio.run(restart())
    result = pd.read_parquet(folder).sort_values("n", ignore_index=True)
    tm.assert_frame_equal(result, rows(0, 7))
