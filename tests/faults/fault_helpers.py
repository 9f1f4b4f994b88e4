"""Fault injection for exported scripts: run them, SIGKILL them at chosen moments, restart.

A :class:`Job` is one run of an exported script (a real subprocess, ``python -I``) whose
stderr (structlog JSON, one object per line) is read by a thread, so a test can wait for an
event (``"checkpoint"`` ``"saved"``, ``"start"``) and kill the process right after it.
:func:`kill_and_restart` drives a whole run: start, kill at a moment the seeded RNG picks,
start again from the same checkpoint, ... then let the last run finish.

The output of all runs together is compared with pandas on the whole input by :func:`tally`,
which counts what the issue's table counts: lost, duplicated and wrong windows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rtnb.testing import pandas_windows

REDIS_URL = "redis://127.0.0.1:6379/0"
KEYS = 20
#: The windows every fault test computes, with pandas' names for them.
AGGS = {"n": ("v", "count"), "s": ("v", "sum")}
WINDOW = "10s"
LATENESS = "2s"
COLUMNS = ["window_start", "window_end", "key", "n", "s"]


# -- data --------------------------------------------------------------------------------
def make_events(n: int, *, seed: int, rate_hz: float = 100.0, disorder_s: float = 1.0,
                start: str = "2026-03-01") -> pd.DataFrame:
    """``n`` events of ``KEYS`` keys at ``rate_hz`` of event time, in arrival order.

    Each event's time is its arrival slot plus up to ``disorder_s`` of jitter, so arrivals
    are a little out of order (less than the windows' allowed lateness); values are rounded
    to 3 decimals so the sums are exact enough to compare with a small tolerance.

    >>> df = make_events(1_000, seed=1)
    >>> len(df), df["key"].nunique(), df["timestamp"].is_monotonic_increasing
    (1000, 20, False)
    """
    rng = np.random.default_rng(seed)
    offsets = np.arange(n) / rate_hz + rng.uniform(0.0, disorder_s, n)
    keys = np.array([f"k{i:02d}" for i in range(KEYS)])
    return pd.DataFrame({
        "timestamp": pd.Timestamp(start) + pd.to_timedelta(np.round(offsets, 6), unit="s"),
        "key": keys[rng.integers(0, KEYS, n)],
        "v": np.round(rng.normal(50.0, 10.0, n), 3),
    })


def expected_windows(events: pd.DataFrame) -> pd.DataFrame:
    """What the pipeline must emit: pandas' tumbling windows on the whole input."""
    out = pandas_windows(events, time="timestamp", size=WINDOW, by="key", aggs=AGGS)
    return normalize(out)


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """The compared columns with one dtype each, whatever sink the rows came through."""
    if len(df) == 0:
        return pd.DataFrame({"window_start": pd.Series([], dtype="datetime64[ns]"),
                             "window_end": pd.Series([], dtype="datetime64[ns]"),
                             "key": pd.Series([], dtype="str"),
                             "n": pd.Series([], dtype="int64"),
                             "s": pd.Series([], dtype="float64")})
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        msg = f"sink output has no column(s) {missing}; it has {list(df.columns)}"
        raise AssertionError(msg)
    out = df[COLUMNS].copy()
    for col in ("window_start", "window_end"):
        out[col] = pd.to_datetime(out[col]).astype("datetime64[ns]")
    return out.astype({"key": "str", "n": "int64", "s": "float64"}).reset_index(drop=True)


# -- reading what a sink wrote -------------------------------------------------------------
def read_log(path: Path) -> pd.DataFrame:
    """Every JSON line of a ``to_log`` file (a last line cut by the kill counts as wrong)."""
    if not path.exists():
        return normalize(pd.DataFrame())
    rows, torn = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            torn += 1
    out = normalize(pd.DataFrame(rows))
    if torn:  # a torn line is an output row nobody can read: a wrong window
        out.attrs["torn"] = torn
    return out


def read_parquet_folder(folder: Path) -> pd.DataFrame:
    """A ``to_parquet`` folder read as users read it: ``pd.read_parquet(folder)`` (which skips
    hidden files, such as files not committed yet)."""
    if not folder.exists() or not any(folder.glob("part-*.parquet")):
        return normalize(pd.DataFrame())
    return normalize(pd.read_parquet(folder))


def read_redis_stream(client: Any, stream: str, field: str = "data") -> pd.DataFrame:
    """Every entry of a Redis stream written by ``to_redis_stream`` (JSON in ``field``)."""
    rows = [json.loads(fields[field.encode()]) for _, fields in client.xrange(stream)]
    return normalize(pd.DataFrame(rows))


# -- comparing -------------------------------------------------------------------------------
@dataclasses.dataclass
class Tally:
    """How a sink's output differs from the expected windows, counted as the issue does."""

    windows: int  # expected (window, key) rows
    rows: int  # rows the sink holds
    lost: int  # expected windows with no row at all
    duplicated: int  # rows beyond the first of a (window, key)
    wrong: int  # (window, key) with at least one row whose values differ (or not expected)
    wrong_after_dedup: int  # ... with no correct row at all
    torn: int = 0

    @property
    def exact(self) -> bool:
        return not (self.lost or self.duplicated or self.wrong or self.torn)

    def __str__(self) -> str:
        text = (f"lost {self.lost:,} / duplicated {self.duplicated:,} / wrong {self.wrong:,} "
                f"({self.wrong_after_dedup:,} still wrong after dedup) of {self.windows:,} "
                f"windows; the sink holds {self.rows:,} rows")
        return text + (f"; {self.torn} torn lines" if self.torn else "")


def tally(got: pd.DataFrame, expected: pd.DataFrame, *, rtol: float = 1e-9) -> Tally:
    """Count lost, duplicated and wrong windows of ``got`` against ``expected``.

    >>> exp = normalize(pd.DataFrame({"window_start": ["2026-01-01"] * 2,
    ...                               "window_end": ["2026-01-01 00:00:10"] * 2,
    ...                               "key": ["a", "b"], "n": [1, 2], "s": [1.0, 2.0]}))
    >>> got = pd.concat([exp, exp.iloc[:1]], ignore_index=True)
    >>> print(tally(got, exp))  # doctest: +NORMALIZE_WHITESPACE
    lost 0 / duplicated 1 / wrong 0 (0 still wrong after dedup) of 2 windows;
    the sink holds 3 rows
    >>> str(tally(exp.assign(n=[1, 3]).iloc[1:], exp)).split(";")[0]
    'lost 1 / duplicated 0 / wrong 1 (1 still wrong after dedup) of 2 windows'
    """
    keys = ["window_start", "key"]
    want = expected.set_index(keys)
    merged = got.merge(expected, on=keys, how="left", suffixes=("", "_want"),
                       indicator=True)
    unexpected = merged["_merge"] == "left_only"
    ok = ~unexpected & (merged["n"] == merged["n_want"]) & (
        merged["window_end"] == merged["window_end_want"]) & np.isclose(
        merged["s"], merged["s_want"], rtol=rtol, atol=1e-9)
    per_window = merged.assign(ok=ok).groupby(keys)["ok"].agg(["all", "any", "size"])
    seen = pd.MultiIndex.from_frame(got[keys].drop_duplicates())
    return Tally(
        windows=len(want),
        rows=len(got),
        lost=int((~want.index.isin(seen)).sum()),
        duplicated=int((per_window["size"] - 1).sum()),
        wrong=int((~per_window["all"]).sum()),
        wrong_after_dedup=int((~per_window["any"]).sum()),
        torn=int(got.attrs.get("torn", 0)),
    )


# -- running and killing -----------------------------------------------------------------
class Job:
    """One run of an exported script; a thread reads its structlog lines as they come."""

    def __init__(self, script: Path, args: Sequence[str]) -> None:
        self.script = script
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(script), *args], cwd=script.parent,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, env=job_env())
        self.started = time.monotonic()
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            event: dict[str, Any] | None = None
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    event = json.loads(line)
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                if event is not None:
                    self.events.append((time.monotonic(), event))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def done(self) -> bool:
        return self.proc.poll() is not None

    def wait_for(self, match: Callable[[dict[str, Any]], bool], *, after: int = 0,
                 count: int = 1, timeout: float = 30.0) -> int | None:
        """Index of the ``count``-th event from ``after`` on that ``match``es; None if the
        process ended first or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = 0
            i = after
            while True:
                while i < len(self.events):
                    if match(self.events[i][1]):
                        seen += 1
                        if seen == count:
                            return i
                    i += 1
                if not self._reader.is_alive() or time.monotonic() >= deadline:
                    return None
                self._changed.wait(0.02)

    def checkpoints(self, action: str) -> list[dict[str, Any]]:
        with self._changed:
            return [e for _, e in self.events
                    if e.get("event") == "checkpoint" and e.get("action") == action]

    def kill(self) -> bool:
        """SIGKILL the process; False if it had ended already."""
        if self.proc.poll() is not None:
            return False
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        return True

    def finish(self, timeout: float) -> int:
        """Wait for the process to end by itself; SIGKILL it after ``timeout``."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._reader.join(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def tail(self, n: int = 25) -> str:
        with self._changed:
            return "\n".join(self.lines[-n:])


def job_env() -> dict[str, str]:
    """The environment of an exported script: ours, without the replay cap the repository's
    conftest sets for notebooks (the fault tests replay their whole input)."""
    env = dict(os.environ)
    env.pop("RTNB_REPLAY_MAX_EVENTS", None)
    return env


def is_checkpoint(action: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == "checkpoint" and e.get("action") == action


@contextlib.contextmanager
def checkpoint_locked(db: Path) -> Iterator[None]:
    """Hold SQLite's write lock on the checkpoint file: the job's next save blocks in it."""
    conn = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()


def hot_journal(db: Path) -> bool:
    """Whether a killed writer left a rollback journal or a non-empty WAL beside ``db``."""
    return any(p.exists() and p.stat().st_size > 0
               for p in (db.with_name(db.name + "-journal"), db.with_name(db.name + "-wal")))


@dataclasses.dataclass
class Kill:
    """One run that was killed (or ended before the kill): what happened, for the report."""

    mode: str
    killed: bool
    seconds: float  # from the run's "start" line to the kill
    restored: Any  # position the run started from (None: fresh or a broker source)
    saved: int  # checkpoints it logged as saved
    last_saved: Any  # position of the last one
    during_save: bool  # the kill landed inside a save (blocked on the lock or after "saving")
    hot_journal: bool  # the kill left a SQLite journal behind
    after: Any = None  # what the test's probe saw after the kill (e.g. a consumer group)

    def __str__(self) -> str:
        how = "killed" if self.killed else "ENDED BEFORE THE KILL"
        inside = " inside a checkpoint save" if self.during_save else ""
        journal = " (hot journal left)" if self.hot_journal else ""
        probe = "" if self.after is None else f"; then {self.after}"
        return (f"{self.mode:>11}: {how}{inside}{journal} {self.seconds:.2f}s after start, "
                f"from {self.restored!r}, {self.saved} saved, last at {self.last_saved!r}"
                f"{probe}")


def _restored(job: Job) -> Any:
    got = job.checkpoints("restored")
    return got[0].get("position") if got else None


def kill_once(job: Job, mode: str, rng: np.random.Generator, *, db: Path, every: float,
              max_delay: float) -> Kill:
    """Kill ``job`` at a moment of the kind ``mode`` says:

    ``random``
        a delay drawn from ``rng`` after the run's ``start`` line;
    ``after_saved``
        right after the 1st-4th periodic ``"checkpoint"`` ``"saved"`` line of this run;
    ``during_save``
        inside a checkpoint save: right after a ``"saving"`` line if the runtime logs one,
        else while the save is blocked on the checkpoint file's write lock (held here).
    """
    start = job.wait_for(lambda e: e.get("event") == "start", timeout=60)
    t0 = job.events[start][0] if start is not None else time.monotonic()
    during = False
    if start is None:
        pass  # ended (or failed) before starting: reported below
    elif mode == "random":
        delay = float(rng.uniform(0.25, max_delay))
        time.sleep(max(0.0, t0 + delay - time.monotonic()))
    elif mode == "after_saved":  # a periodic save: the run has done some work by then
        job.wait_for(lambda e: is_checkpoint("saved")(e) and e.get("reason") == "periodic",
                     after=start, count=int(rng.integers(1, 5)), timeout=max_delay + 10)
    elif mode == "during_save":
        # let the run do some work and save at least once (the file exists), then aim
        first = job.wait_for(is_checkpoint("saved"), after=start, timeout=max_delay + 10)
        time.sleep(float(rng.uniform(0.0, max_delay / 3)))
        if first is not None and not job.done:
            if job.checkpoints("saving"):  # the runtime logs the start of a save
                during = job.wait_for(is_checkpoint("saving"), after=len(job.events),
                                      timeout=10 * every + 5) is not None
            else:
                with checkpoint_locked(db):
                    time.sleep(0.1)  # a save that committed before the lock logs it now
                    mark = len(job.events)
                    time.sleep(max(0.4, 4 * every))
                    # no save completed while the lock was held: the run is inside one
                    during = job.wait_for(is_checkpoint("saved"), after=mark,
                                          timeout=0) is None
                    killed = job.kill()
                return _report(job, mode, t0, killed, during, db)
    else:
        msg = f"unknown kill mode {mode!r}"
        raise ValueError(msg)
    killed = job.kill()
    return _report(job, mode, t0, killed, during, db)


def _report(job: Job, mode: str, t0: float, killed: bool, during: bool, db: Path) -> Kill:
    journal = hot_journal(db)
    job.close()
    saved = job.checkpoints("saved")
    return Kill(mode=mode, killed=killed, seconds=time.monotonic() - t0,
                restored=_restored(job), saved=len(saved),
                last_saved=saved[-1].get("position") if saved else None,
                during_save=during and killed, hot_journal=journal and killed)


def kill_and_restart(script: Path, args: Sequence[str], modes: Sequence[str],
                     rng: np.random.Generator, *, db: Path, every: float,
                     max_delay: float = 1.6,
                     probe: Callable[[], Any] | None = None) -> list[Kill]:
    """Start ``script``, kill it once per ``modes`` entry (restarting from the checkpoint in
    between); stops early if a run ends before its kill. Returns what each run did."""
    history: list[Kill] = []
    for mode in modes:
        job = Job(script, args)
        try:
            kill = kill_once(job, mode, rng, db=db, every=every, max_delay=max_delay)
        finally:
            job.close()
        if probe is not None:
            kill.after = probe()
        history.append(kill)
        if not kill.killed:
            if job.proc.returncode != 0:
                msg = (f"run {len(history)} ended with {job.proc.returncode} before its kill:"
                       f"\n{job.tail()}")
                raise AssertionError(msg)
            break
    return history


def describe(history: Sequence[Kill]) -> str:
    return "\n".join(f"  run {i + 1}: {k}" for i, k in enumerate(history))
