"""Writing checkpoint files: owner-only, retried while locked, refused clearly when it fails."""

from __future__ import annotations

import sqlite3
import stat
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

import rtnb
from rtnb.state import Checkpoint


def pipeline() -> rtnb.Pipeline:
    df = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=6, freq="s"), "x": 1.0})
    src = rtnb.sources.replay(df, name="demo")
    src.window(rtnb.tumbling("4s")).agg(n=("x", "count"))
    return rtnb.Pipeline(src)


def test_a_checkpoint_file_is_readable_by_its_owner_only(tmp_path: Path):
    path = tmp_path / "state.db"
    Checkpoint(path).save(pipeline())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_locked_file_is_retried_until_the_lock_goes(tmp_path: Path, caplog):
    path = tmp_path / "state.db"
    store = Checkpoint(path)
    store.save(pipeline())  # the table exists
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:  # another process holds the file until the first attempt failed
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        locked.set()
        deadline = time.monotonic() + 30
        while "write 1 of 5 failed" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        holder.execute("COMMIT")
        holder.close()
        release.set()

    thread = threading.Thread(target=hold)
    thread.start()
    assert locked.wait(10)
    store.write(store.capture(pipeline()), attempts=5)  # waits, logs, then succeeds
    thread.join(10)
    assert release.is_set()
    assert "write 1 of 5 failed: database is locked" in caplog.text
    assert Checkpoint(path).read("demo") is not None


def test_a_file_locked_for_good_is_a_checkpoint_error(tmp_path: Path):
    path = tmp_path / "state.db"
    store = Checkpoint(path)
    store.save(pipeline())
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(rtnb.CheckpointError, match="could not be written after 2 attempts: "
                                                       "database is locked"):
            store.write(store.capture(pipeline()), attempts=2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_format_2_is_read_and_an_unknown_format_is_refused(tmp_path: Path):
    """Format 3 (detectors' state as arrays) is written; format 2 files, whose detector
    states are per-key dicts that detectors still restore, are read; others are refused."""
    from rtnb.errors import CheckpointError
    from rtnb.state.checkpoint import VERSION

    path = tmp_path / "state.db"
    Checkpoint(path).save(pipeline())
    assert VERSION == 3
    conn = sqlite3.connect(path, isolation_level=None)
    assert conn.execute("SELECT version FROM rtnb_checkpoints").fetchone() == (3,)
    conn.execute("UPDATE rtnb_checkpoints SET version = 2")
    assert Checkpoint(path).read("demo") is not None
    conn.execute("UPDATE rtnb_checkpoints SET version = 1")
    conn.close()
    with pytest.raises(CheckpointError, match="has format 1; this rtnb reads formats 2, 3"):
        Checkpoint(path).read("demo")
