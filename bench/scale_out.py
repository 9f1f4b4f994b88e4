"""Scale-out benchmark (issue 19): W1 over 8 Redis partitions, 2 workers vs 1 vs one process.

Same data, same run:

* data: ``N`` events (2,000,000; 200,000 with ``--quick``), 100 keys (``host``, uniform at
  random), event time ~1 kHz (exponential gaps, microsecond resolution, strictly
  increasing), float ``cpu``; one JSON record per message (time as ISO 8601, as real feeds
  send it), produced into the 8 streams ``NAME:0`` .. ``NAME:7`` by
  ``rtnb.partition_of(host, 8)`` with pipelined ``XADD`` (Redis on 127.0.0.1:6379; a fresh
  stream name, deleted at the end). The same rows, in their partitions, feed every run;
* W1: 1 s tumbling windows per key with count/mean/min/max (``emit="final"``);
* contenders, each reading the whole partitioned stream with a fresh consumer group and
  ``max_events=N``: **one process** (``pipeline.run()``: ``redis_stream(..., partitions=8)``,
  its defaults), **1 worker** and **2 workers** (``pipeline.run(cluster=LocalCluster(
  n_workers=k, threads_per_worker=1, processes=True, host="127.0.0.1",
  dashboard_address="127.0.0.1:0"))``, ``max_rows`` 10,000, the default);
* every source has ``idle_timeout="250ms"`` (``IDLE_TIMEOUT`` says why);
* a run's time is from ``pipeline.run(...)`` being called to the last window reaching the
  driver's sink. Producing the data and starting the cluster are not in it: each cluster
  is started before its run (and closed after it), its workers import rtnb and run an
  untimed warm-up pipeline over a separate 20,000-event stream first. What is in it for
  the cluster runs: the client's connection to the scheduler, shipping the pipeline to
  the workers, reading, decoding, the windows, the merge on the driver, the final flush;
* rounds: every round runs each contender once (the order rotates), so load from other
  users of the shared machine hits all alike; ``REPEATS`` rounds; medians, and the spread
  (min-max) is reported. The load average is read before every round;
* every run's windows are checked against the one-process run of the same round (exact
  keys, window starts, counts, min and max; means within rtol 1e-9), and the one-process
  run against pandas on the produced rows, so a fast wrong result FAILs;
* profiles (when a target fails, or always with ``--profile``): the driver of one 2-worker
  and one 1-worker run under pyinstrument, the workers through Dask's own sampling
  profiler (``Client.profile``), the task stream (steps per second, how busy each worker
  was), and the one-process run under pyinstrument;
* a paper projection of the driver: (a) the scheduler round trip of a tick, measured for 1
  to 64 partitions with the driver's submit pattern (one task per partition with no
  dependency, wait for every output) and trivial tasks on the 2-worker cluster; (b) the
  driver's merge (``WindowAggregator.merge_closed``) and ``ClusterRunner._handle`` per tick,
  measured with real partials of W1 from 1, 2, 4 and 8 partitions (held engines fed by key
  partition) and extrapolated linearly to 16 and 64; from both, the event rate at which the
  driver is busy all the time.

Run through ``bench/run.py`` (``make bench``), or alone: ``python bench/scale_out.py
[--quick] [--profile]`` (prints the markdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import statistics
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

import rtnb

TITLE = "Scale-out: W1 over 8 Redis partitions on Dask, 2 workers vs 1 vs one process (issue 19)"

N_FULL = 2_000_000
N_QUICK = int(os.environ.get("RTNB_BENCH_SCALE_N", "200000"))
N_KEYS = 100
PARTITIONS = 8
REPEATS_FULL = 3
REPEATS_QUICK = 2
WARM_N = 20_000
MAX_ROWS = 10_000  # ClusterRunner's default: messages per partition per step
#: Every contender's source gets this ``idle_timeout`` (the default is 5 s). At the end of a
#: finite stream the one-process source holds the newest rows back until the partitions
#: drained first have been silent for ``idle_timeout``, one after another: with the default
#: that tail alone took ~35-40 s whatever N (measured: 41.9 s for 20,000 events, 3.8 s of
#: it CPU), which would make the one-process run look ten times slower than it is. Reads
#: hear every non-empty partition at every read (one process) or every tick (cluster), so a
#: short timeout only lets drained partitions go idle sooner; the windows check catches
#: any row it made late.
IDLE_TIMEOUT = "250ms"
TARGET_2_VS_1 = 1.6
TARGET_1_VS_ONE = 0.8
ROUNDS_BUDGET_S = 2400.0  # no third round starts after this (a loaded shared machine)
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
T0_US = pd.Timestamp("2026-01-01").value // 1_000
HOSTS = np.array([f"host-{i:02d}" for i in range(N_KEYS)])
EXAMPLE = {"timestamp": "datetime64[ns]", "host": "str", "cpu": "float64"}
W1_AGGS: dict[str, tuple[str, str]] = {
    "n": ("cpu", "count"), "mean": ("cpu", "mean"), "lo": ("cpu", "min"), "hi": ("cpu", "max")}
PROFILE_N = 500_000
PROJECT_K = (1, 2, 4, 8)
EXTRAPOLATE_K = (16, 64)
ROUND_TRIP_K = (1, 2, 4, 8, 16, 64)

Log = Callable[[str], None]


# -- data ------------------------------------------------------------------------------------
def make_rows(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` events: time ~1 kHz (us resolution, strictly increasing), 100 hosts, cpu."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1_000.0, n).astype(np.int64) + 1
    ts = (T0_US + np.cumsum(gaps)).astype("datetime64[us]")
    codes = rng.integers(0, N_KEYS, n)
    return pd.DataFrame({"timestamp": ts.astype("datetime64[ns]"),
                         "host": pd.array(HOSTS[codes], dtype=str),
                         "cpu": rng.normal(50.0, 15.0, n)})


def encode(rows: pd.DataFrame) -> list[bytes]:
    """One JSON record per row (floats as ``repr``: they read back exactly)."""
    iso = np.datetime_as_string(rows["timestamp"].to_numpy().astype("datetime64[us]"))
    return [f'{{"timestamp":"{t}","host":"{h}","cpu":{c!r}}}'.encode()
            for t, h, c in zip(iso.tolist(), rows["host"].tolist(), rows["cpu"].tolist(),
                               strict=True)]


def _redis() -> Any:
    import redis

    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT)


def produce(name: str, rows: pd.DataFrame, partitions: int) -> dict[int, int]:
    """Rows into ``name:{partition_of(host, partitions)}`` in order; rows per partition."""
    client = _redis()
    where = rtnb.partition_of(HOSTS, partitions)
    codes = np.searchsorted(HOSTS, rows["host"].to_numpy(dtype=object))
    parts = where[codes]
    payloads = encode(rows)
    pipe = client.pipeline(transaction=False)
    for i, (p, payload) in enumerate(zip(parts.tolist(), payloads, strict=True)):
        pipe.xadd(f"{name}:{p}", {"data": payload})
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    counts = np.bincount(parts, minlength=partitions)
    for p in range(partitions):
        got = client.xlen(f"{name}:{p}")
        if got != counts[p]:
            msg = f"stream {name}:{p} holds {got} entries, {counts[p]} produced"
            raise RuntimeError(msg)
    client.close()
    return {p: int(c) for p, c in enumerate(counts)}


def delete(name: str, partitions: int) -> None:
    client = _redis()
    client.delete(*[f"{name}:{p}" for p in range(partitions)])
    client.close()


# -- one run -----------------------------------------------------------------------------------
@dataclass
class Run:
    contender: str
    seconds: float
    windows: pd.DataFrame
    load: float
    workers: dict[str, str] | None = None
    dashboard: str | None = None


def build(stream: str, n: int, partitions: int) -> tuple[rtnb.Pipeline, Any, list[Any],
                                                         list[float]]:
    src = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp",
                                    partitions=partitions, group=f"g-{uuid.uuid4().hex[:8]}",
                                    max_events=n, idle_timeout=IDLE_TIMEOUT, name="events")
    agg = src.window(rtnb.tumbling("1s"), by="host").agg(**W1_AGGS)
    out: list[pd.DataFrame] = []
    last = [0.0]

    def keep(batch: pd.DataFrame) -> None:
        out.append(batch)
        last[0] = time.perf_counter()

    agg.stream.sink(keep)
    return rtnb.Pipeline(agg), src, out, last


def run_once(contender: str, stream: str, n: int, partitions: int, cluster: Any,
             profiler: Any = None) -> Run:
    pipeline, src, out, last = build(stream, n, partitions)
    load = os.getloadavg()[0]
    gc.collect()
    if profiler is not None:
        profiler.start()
    t0 = time.perf_counter()
    try:
        if cluster is None:
            pipeline.run()
        else:
            pipeline.run(cluster=cluster, max_rows=MAX_ROWS)
    finally:
        if profiler is not None:
            profiler.stop()
    if not out:
        msg = f"{contender}: no window came out"
        raise RuntimeError(msg)
    seconds = last[0] - t0
    stats = getattr(src.graph.source, "stats", None)
    workers = getattr(stats, "partition_worker", None)
    runner = pipeline.runner
    return Run(contender, seconds, canon(pd.concat(out, ignore_index=True)), load,
               workers=dict(workers) if workers else None,
               dashboard=None if runner is None else runner.dashboard_link)


def canon(windows: pd.DataFrame) -> pd.DataFrame:
    cols = ["window_start", "host", "n", "mean", "lo", "hi"]
    out = windows[cols].sort_values(["window_start", "host"]).reset_index(drop=True)
    out["host"] = out["host"].astype(object)
    return out


def pandas_w1(rows: pd.DataFrame) -> pd.DataFrame:
    g = rows.groupby([pd.Grouper(key="timestamp", freq="1s"), "host"])["cpu"]
    r = g.agg(["count", "mean", "min", "max"]).reset_index()
    r = r.rename(columns={"timestamp": "window_start", "count": "n", "min": "lo", "max": "hi"})
    r = r[r["n"] > 0]
    return canon(r)


def compare(got: pd.DataFrame, want: pd.DataFrame) -> str | None:
    """``None`` if equal (exact keys, starts, n, lo, hi; mean rtol 1e-9), else what differs."""
    if len(got) != len(want):
        return f"{len(got):,} windows, expected {len(want):,}"
    for col in ("window_start", "host", "n", "lo", "hi"):
        a, b = got[col].to_numpy(), want[col].to_numpy()
        if col == "n":
            a, b = a.astype(np.int64), b.astype(np.int64)
        bad = np.flatnonzero(a != b)
        if len(bad):
            i = bad[0]
            return (f"{len(bad):,} windows differ in {col!r} (first: row {i}, {a[i]!r} vs "
                    f"{b[i]!r})")
    a, b = got["mean"].to_numpy(), want["mean"].to_numpy()
    if not np.allclose(a, b, rtol=1e-9, atol=0.0):
        return f"mean differs beyond rtol 1e-9 in {int((~np.isclose(a, b, 1e-9, 0)).sum())} rows"
    return None


# -- clusters ------------------------------------------------------------------------------------
def _warm_imports() -> str:
    import rtnb.distributed._worker
    import rtnb.sources._redis  # noqa: F401

    return "ok"


@contextlib.contextmanager
def local_cluster(workers: int) -> Iterator[Any]:
    import distributed

    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                  silence_logs=40) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        client.run(_warm_imports)
        yield cluster, client


# -- profiles ------------------------------------------------------------------------------------
def _pyinstrument() -> Any:
    try:
        from pyinstrument import Profiler
    except ImportError:  # pragma: no cover - in the dev extra
        return None
    return Profiler(interval=0.001)


def _short(path: str) -> str:
    for marker in ("site-packages/", "/rtnb/", "/lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1] if marker != "/rtnb/" else \
                "rtnb/" + path.split(marker, 1)[1]
    return path


def profile_text(profiler: Any, limit: int = 60) -> list[str]:
    text = profiler.output_text(unicode=False, color=False, show_all=False, short_mode=False)
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return lines[:limit]


def top_self(profiler: Any, limit: int = 15) -> list[tuple[str, float]]:
    """The functions where the time is spent (own time), from a pyinstrument session."""
    session = profiler.last_session
    root = session.root_frame()
    own: dict[str, float] = {}

    def walk(frame: Any, parent_key: str) -> None:
        if frame.function.startswith("[") or frame.file_path is None:
            key = parent_key  # pyinstrument's [self]/[await] leaves: the parent's own time
        else:
            key = f"{frame.function} ({_short(frame.file_path)}:{frame.line_no})"
        kids = frame.children
        own[key] = own.get(key, 0.0) + frame.time - sum(k.time for k in kids)
        for k in kids:
            walk(k, key)

    if root is not None:
        walk(root, "?")
    total = session.duration or 1.0
    return [(k, v / total) for k, v in sorted(own.items(), key=lambda kv: -kv[1])[:limit]]


def dask_profile_top(state: dict[str, Any], limit: int = 20) -> list[tuple[str, float]]:
    """Own-time share per function of Dask's sampling profile (``Client.profile``)."""
    own: dict[str, int] = {}
    total = max(1, int(state.get("count", 0)))

    def walk(node: dict[str, Any]) -> None:
        kids = node.get("children", {})
        self_count = node["count"] - sum(c["count"] for c in kids.values())
        desc = node.get("description", {})
        key = f"{desc.get('name', '?')} ({_short(desc.get('filename', '?'))}:" \
              f"{desc.get('line_number', '?')})"
        own[key] = own.get(key, 0) + self_count
        for child in kids.values():
            walk(child)

    for child in state.get("children", {}).values():
        walk(child)
    return [(k, v / total) for k, v in sorted(own.items(), key=lambda kv: -kv[1])[:limit]]


def dask_profile_inclusive(state: dict[str, Any], names: list[str]) -> dict[str, float]:
    """Inclusive share of the sampled time in functions called ``names`` (outermost hit)."""
    total = max(1, int(state.get("count", 0)))
    found = dict.fromkeys(names, 0)

    def walk(node: dict[str, Any], inside: frozenset[str]) -> None:
        name = node.get("description", {}).get("name", "?")
        now = inside
        if name in found and name not in inside:
            found[name] += node["count"]
            now = inside | {name}
        for child in node.get("children", {}).values():
            walk(child, now)

    for child in state.get("children", {}).values():
        walk(child, frozenset())
    return {k: v / total for k, v in found.items()}


def task_stream_summary(tasks: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    """Steps, their durations and how busy each worker was over the run's wall time."""
    steps: list[float] = []
    busy: dict[str, float] = {}
    by_prefix: dict[str, int] = {}
    for t in tasks:
        prefix = str(t["key"]).split("-", 1)[0] if isinstance(t["key"], str) else \
            str(t["key"][0]).split("-", 1)[0]
        by_prefix[prefix] = by_prefix.get(prefix, 0) + 1
        for s in t.get("startstops", []):
            if s["action"] == "compute":
                d = s["stop"] - s["start"]
                busy[t["worker"]] = busy.get(t["worker"], 0.0) + d
                if prefix == "step":
                    steps.append(d)
    return {"tasks": by_prefix, "steps": len(steps),
            "step_ms_median": 1e3 * statistics.median(steps) if steps else float("nan"),
            "step_ms_p90": 1e3 * float(np.percentile(steps, 90)) if steps else float("nan"),
            "busy": {w: b / wall for w, b in sorted(busy.items())}}


# -- the projection ------------------------------------------------------------------------------
def round_trips(client: Any, ks: tuple[int, ...], ticks: int) -> dict[int, float]:
    """Seconds per tick of the driver's submit pattern with trivial tasks, k partitions."""
    from distributed import Client

    address = client.scheduler.address
    workers = sorted(client.scheduler_info()["workers"])

    async def measure(k: int) -> float:
        async with Client(address, asynchronous=True, set_as_default=False) as c:
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                for n in range(ticks):
                    outs = [c.submit(_rt_step, p, n, workers=[workers[p % len(workers)]],
                                     allow_other_workers=False, pure=False)
                            for p in range(k)]
                    for fut in outs:
                        await fut
                best = min(best, (time.perf_counter() - t) / ticks)
            return best

    return {k: asyncio.run(measure(k)) for k in ks}


def _rt_step(p: int, n: int) -> int:
    return p + n


def merge_costs(rows: pd.DataFrame, ks: tuple[int, ...], log: Log) -> list[dict[str, Any]]:
    """Driver time per tick for k partitions: merge_closed alone and the whole _handle.

    Each partition's held engine (a copy of the split's logic, as a worker holds it) is fed
    ``MAX_ROWS`` rows of its keys per tick (what a backlog gives) and its closed windows
    taken as a partial; the driver's frontier is the minimum newest time over partitions.
    Two tick sizes: ``MAX_ROWS`` rows per partition (a backlog: many windows close per
    tick) and ~1 s of event time per tick (a live feed: one window per tick).
    """
    results: list[dict[str, Any]] = []
    for mode in ("backlog", "live"):
        for k in ks:
            best: dict[str, Any] | None = None
            for _ in range(3):  # a shared machine: the least disturbed of three passes
                one = _merge_pass(rows, mode, k)
                if one is not None and (best is None or one["handle_ms"] < best["handle_ms"]):
                    best = one
            if best is None:
                continue
            results.append(best)
            log(f"  projection {mode} k={k}: {best['ticks']} ticks with windows, median "
                f"{best['rows_per_tick']:.0f} merged rows, merge_closed "
                f"{best['merge_ms']:.3f} ms, _handle {best['handle_ms']:.3f} ms")
    return results


def _merge_pass(rows: pd.DataFrame, mode: str, k: int) -> dict[str, Any] | None:
    import cloudpickle

    from rtnb.distributed import ClusterRunner
    from rtnb.distributed._driver import _pickler
    from rtnb.distributed._worker import StepOutput

    pipeline, src, out, _ = build(f"proj-{uuid.uuid4().hex[:6]}", len(rows), k)
    runner = ClusterRunner(pipeline, k, max_rows=MAX_ROWS)
    split = runner.splits[0]
    driver_logic: Any = split.frame.logic
    blob = _pickler().dumps(driver_logic)  # as the driver ships it to a worker
    engines = []
    for _ in range(k):
        engine = cloudpickle.loads(blob)
        engine.hold()
        engines.append(engine)
    where = rtnb.partition_of(HOSTS, k)
    codes = np.searchsorted(HOSTS, rows["host"].to_numpy(dtype=object))
    part_of = where[codes]
    per = [rows[part_of == p].reset_index(drop=True) for p in range(k)]
    pos = [0] * k
    t_ns = [rows_p["timestamp"].to_numpy().view("int64") for rows_p in per]
    newest = [np.iinfo(np.int64).min] * k
    merge_s: list[float] = []
    handle_s: list[float] = []
    merged_rows: list[int] = []
    frontier = np.iinfo(np.int64).min
    end_ns = int(rows["timestamp"].iloc[-1].value)
    start_ns = int(rows["timestamp"].iloc[0].value)
    tick = 0
    while True:
        tick += 1
        outputs = []
        partials = []
        for p in range(k):
            lo = pos[p]
            if mode == "backlog":
                hi = min(len(per[p]), lo + MAX_ROWS)
            else:
                hi = int(np.searchsorted(t_ns[p], start_ns + tick * 1_000_000_000))
            pos[p] = hi
            o = StepOutput(p, read=hi - lo, rows=hi - lo)
            if hi > lo:
                engines[p].advance_to(frontier)
                engines[p].process(per[p].iloc[lo:hi])
                newest[p] = max(newest[p], int(t_ns[p][hi - 1]))
            engines[p].advance_to(frontier)
            partial = engines[p].take_closed()
            partials.append(partial)
            o.outputs[split.frame.name] = partial
            o.max_time = newest[p]
            outputs.append(o)
        if any(partials):
            t = time.perf_counter()
            merged = driver_logic.merge_closed(partials)
            merge_s.append(time.perf_counter() - t)
            merged_rows.append(0 if merged is None else len(merged))
            t = time.perf_counter()
            runner._handle(outputs)
            handle_s.append(time.perf_counter() - t)
        frontier = max(frontier, min(newest))
        if all(pos[p] >= len(per[p]) for p in range(k)) or \
                start_ns + tick * 1_000_000_000 > end_ns + 2_000_000_000:
            break
    del src, out
    if not merge_s:
        return None
    return {"mode": mode, "k": k, "ticks": len(merge_s),
            "rows_per_tick": statistics.median(merged_rows),
            "merge_ms": 1e3 * statistics.median(merge_s),
            "handle_ms": 1e3 * statistics.median(handle_s)}


def fit(ks: list[int], ys: list[float]) -> tuple[float, float]:
    """Least squares ``y = a + b k``."""
    b, a = np.polyfit(np.asarray(ks, float), np.asarray(ys, float), 1)
    return float(a), float(b)


# -- the bench ---------------------------------------------------------------------------------
@dataclass
class Contender:
    name: str
    workers: int | None
    runs: list[Run] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)


def timed_run(contender: Contender, stream: str, warm: str, n: int, truth: Run | None,
              log: Log, profile: bool = False) -> tuple[Run, dict[str, Any]]:
    """One run of ``contender`` (with its cluster started, warmed and closed around it)."""
    extra: dict[str, Any] = {}
    if contender.workers is None:
        prof = _pyinstrument() if profile else None
        run = run_once(contender.name, stream, n, PARTITIONS, None, prof)
        if prof is not None:
            extra["driver"] = prof
        return run, extra
    with local_cluster(contender.workers) as (cluster, client):
        run_once(contender.name + " warm-up", warm, WARM_N, PARTITIONS, cluster)
        prof = _pyinstrument() if profile else None
        if profile:
            client.get_task_stream()  # clear
            start = time.time()
        run = run_once(contender.name, stream, n, PARTITIONS, cluster, prof)
        if profile:
            extra["driver"] = prof
            extra["tasks"] = task_stream_summary(client.get_task_stream(start=start),
                                                 run.seconds)
            extra["dask_profile"] = client.profile(start=start)
            extra["scheduler_profile"] = client.profile(start=start, scheduler=True)
    return run, extra


def run(quick: bool, log: Log, *, force_profile: bool = False) -> tuple[list[str],
                                                                        list[tuple[str, str,
                                                                                   str]]]:
    n = N_QUICK if quick else N_FULL
    repeats = REPEATS_QUICK if quick else REPEATS_FULL
    try:
        client = _redis()
        client.ping()
        client.close()
    except Exception as exc:
        msg = f"Redis on {REDIS_HOST}:{REDIS_PORT} is not reachable: {type(exc).__name__}: {exc}"
        log("  " + msg)
        targets = [(f"2 workers >= {TARGET_2_VS_1}x 1 worker (W1, 8 partitions)", msg, "n/a"),
                   (f"1 worker >= {TARGET_1_VS_ONE}x one process (W1, 8 partitions)", msg,
                    "n/a")]
        return ["## " + TITLE, "", msg, ""], targets
    try:
        import distributed  # noqa: F401
    except ImportError:
        msg = "dask.distributed is not installed (pip install 'rtnb[dask]')"
        return ["## " + TITLE, "", msg, ""], [("scale-out targets", msg, "n/a")]

    name = f"rtnb-bench-scale-{uuid.uuid4().hex[:8]}"
    warm = f"{name}-warm"
    md: list[str] = []
    targets: list[tuple[str, str, str]] = []
    try:
        log(f"  data: {n:,} events, {N_KEYS} keys -> {PARTITIONS} partitions ...")
        rows = make_rows(n)
        t = time.perf_counter()
        counts = produce(name, rows, PARTITIONS)
        produce_s = time.perf_counter() - t
        produce(warm, make_rows(WARM_N, seed=1), PARTITIONS)
        log(f"  produced in {produce_s:.1f} s ({n / produce_s:,.0f}/s); per partition "
            f"{counts}")
        reference = pandas_w1(rows)
        contenders = [Contender("one process", None), Contender("1 worker", 1),
                      Contender("2 workers", 2)]
        loads: list[str] = []
        rounds_started = time.perf_counter()
        for r in range(repeats):
            if r >= 2 and time.perf_counter() - rounds_started > ROUNDS_BUDGET_S:
                log(f"  round {r + 1} skipped: the rounds took over {ROUNDS_BUDGET_S:.0f} s")
                loads.append(f"round {r + 1} skipped (time budget)")
                continue
            order = contenders[r % 3:] + contenders[:r % 3]
            uptime = ", ".join(f"{x:.2f}" for x in os.getloadavg())
            loads.append(uptime)
            log(f"  round {r + 1}/{repeats} (load average {uptime}): "
                f"{', '.join(c.name for c in order)}")
            done: dict[str, Run] = {}
            for c in order:
                try:
                    one, _ = timed_run(c, name, warm, n, None, log)
                except Exception as exc:
                    c.problems.append(f"error: {type(exc).__name__}: {exc}")
                    log(f"    {c.name}: {c.problems[-1]}")
                    log(traceback.format_exc())
                    continue
                c.runs.append(one)
                done[c.name] = one
                log(f"    {c.name:<12} {one.seconds:7.2f} s  {n / one.seconds:10,.0f} ev/s  "
                    f"(load {one.load:.2f})")
            base = done.get("one process")
            if base is not None:
                problem = compare(base.windows, reference)
                if problem:
                    contenders[0].problems.append(f"round {r + 1} vs pandas: {problem}")
            for c in contenders[1:]:
                got = done.get(c.name)
                if got is None:
                    continue
                if base is None:
                    c.problems.append(f"round {r + 1}: no one-process run to compare with")
                    continue
                problem = compare(got.windows, base.windows)
                if problem:
                    c.problems.append(f"round {r + 1} vs one process: {problem}")
                    log(f"    {c.name}: WRONG: {problem}")
            for one in done.values():
                one.windows = one.windows.iloc[:0]  # the check is done; free the memory
        md += report(n, repeats, counts, produce_s, contenders, loads)
        targets += verdicts(contenders)
        failed = any(v == "FAIL" for _, _, v in targets)
        if force_profile or (failed and not quick):
            md += profiles(contenders, name, warm, n, log)
        md += projection(rows, contenders, log)
    finally:
        delete(name, PARTITIONS)
        delete(warm, PARTITIONS)
        log(f"  deleted streams {name}:* and {warm}:*")
    return md, targets


def _ratio(a: Contender, b: Contender) -> tuple[float | None, float | None, float | None]:
    """median(b)/median(a) (a's rate over b's... as a speed-up of a over b), min and max."""
    if not a.runs or not b.runs:
        return None, None, None
    # same-round ratios: a speed-up of a over b
    pairs = [rb.seconds / ra.seconds for ra, rb in zip(a.runs, b.runs, strict=False)]
    return b.median() / a.median(), min(pairs), max(pairs)


def verdicts(cs: list[Contender]) -> list[tuple[str, str, str]]:
    one, w1, w2 = cs
    out = []
    for fast, slow, target, what in ((w2, w1, TARGET_2_VS_1, "1 worker"),
                                     (w1, one, TARGET_1_VS_ONE, "one process")):
        label = (f"{fast.name} >= {target}x {what} (W1, {PARTITIONS} Redis partitions, "
                 "start to last window)")
        ratio, lo, hi = _ratio(fast, slow)
        if ratio is None or lo is None or hi is None:
            out.append((label, "not measured: " + "; ".join(fast.problems + slow.problems),
                        "FAIL"))
            continue
        wrong = fast.problems + slow.problems
        measured = f"{ratio:.2f}x (same-round {lo:.2f}-{hi:.2f}x)"
        if wrong:
            measured += " but WRONG: " + "; ".join(wrong)
        ok = ratio >= target and not wrong
        out.append((label, measured, "PASS" if ok else "FAIL"))
    return out


def report(n: int, repeats: int, counts: dict[int, int], produce_s: float,
           cs: list[Contender], loads: list[str]) -> list[str]:
    md = ["## " + TITLE, "",
          f"rtnb measured: `{os.path.dirname(rtnb.__file__)}`. "
          f"{n:,} events, {N_KEYS} keys, JSON, {PARTITIONS} Redis partitions by "
          f"`partition_of(host, {PARTITIONS})` (events per partition: "
          + ", ".join(f"{p}: {c:,}" for p, c in counts.items())
          + f"), produced with pipelined XADD in {produce_s:.1f} s (not timed). "
          f"W1: 1 s tumbling count/mean/min/max by host. {repeats} rounds, the order rotating; "
          "time from `pipeline.run(...)` to the last window (cluster start-up and warm-up "
          "excluded, the client's connection included). Every source has "
          f"`idle_timeout={IDLE_TIMEOUT!r}` (see `IDLE_TIMEOUT`: with the default 5 s the "
          "one-process run waits ~35-40 s at the end of the data). Load average "
          "(1/5/15 min) before "
          "each round: " + "; ".join(loads) + ".", "",
          "| contender | median s | events/s (median) | runs (s) | load at each run | "
          "windows check |",
          "| --- | ---: | ---: | --- | --- | --- |"]
    for c in cs:
        if not c.runs:
            md.append(f"| {c.name} | - | - | - | - | {'; '.join(c.problems) or '-'} |")
            continue
        med = c.median()
        check = "; ".join(c.problems) or ("= pandas" if c.workers is None else
                                          "= one process, every round")
        md.append(f"| {c.name} | {med:.2f} | {n / med:,.0f} | "
                  + ", ".join(f"{r.seconds:.2f}" for r in c.runs) + " | "
                  + ", ".join(f"{r.load:.2f}" for r in c.runs) + f" | {check} |")
    md.append("")
    for c in cs:
        if c.runs and c.runs[-1].workers:
            by_worker: dict[str, list[str]] = {}
            for p, w in sorted(c.runs[-1].workers.items()):
                by_worker.setdefault(w, []).append(p.rsplit(":", 1)[-1])
            split = "; ".join(
                f"worker {i + 1}: partitions {', '.join(ps)} "
                f"({sum(counts[int(p)] for p in ps):,} events)"
                for i, (_, ps) in enumerate(sorted(by_worker.items())))
            md.append(f"- {c.name}, where the partitions were at the end of its last run "
                      f"(they move between workers by load during a run): {split}.")
    md.append("")
    return md


def profiles(cs: list[Contender], stream: str, warm: str, n: int, log: Log) -> list[str]:
    n = min(n, PROFILE_N)
    md = [f"### Where the time goes (one profiled run each over the first {n:,} events; "
          "profiling slows them)", ""]
    for c in (cs[2], cs[1], cs[0]):
        log(f"  profiling {c.name} ...")
        try:
            one, extra = timed_run(c, stream, warm, n, None, log, profile=True)
        except Exception as exc:
            md += [f"{c.name}: profiling failed: {type(exc).__name__}: {exc}", ""]
            continue
        md += [f"#### {c.name}: {one.seconds:.2f} s under the profilers "
               f"(load {one.load:.2f})", ""]
        prof = extra.get("driver")
        if prof is not None:
            md += ["Driver process (pyinstrument), own time by function:", "",
                   "| function | share of the run |", "| --- | ---: |"]
            md += [f"| `{k}` | {v:.1%} |" for k, v in top_self(prof)]
            md += ["", "<details><summary>driver call tree</summary>", "", "```",
                   *profile_text(prof, 80), "```", "</details>", ""]
        tasks = extra.get("tasks")
        if tasks is not None:
            md += [f"Task stream: {tasks['steps']:,} steps "
                   f"({tasks['steps'] / PARTITIONS / max(one.seconds, 1e-9):.1f} ticks/s), "
                   f"step median {tasks['step_ms_median']:.1f} ms, p90 "
                   f"{tasks['step_ms_p90']:.1f} ms; tasks by kind {tasks['tasks']}; "
                   "workers busy computing: "
                   + ", ".join(f"{w.rsplit(':', 1)[-1]} {b:.0%}"
                               for w, b in tasks["busy"].items()) + " of the run.", ""]
        sched = extra.get("scheduler_profile")
        if sched is not None and sched.get("count"):
            md += ["Scheduler (it runs in a thread of the driver's process with a LocalCluster "
                   "object: the same GIL), own time by function (Dask's sampling profiler):",
                   "", "| function | share of its samples |", "| --- | ---: |"]
            md += [f"| `{k}` | {v:.1%} |" for k, v in dask_profile_top(sched, 10)]
            md.append("")
        state = extra.get("dask_profile")
        if state is not None and state.get("count"):
            inc = dask_profile_inclusive(state, ["step", "convert", "decode_batch", "coerce",
                                                 "read", "ack", "process", "take_closed",
                                                 "lag", "run_step", "take_output",
                                                 "loads", "dumps"])
            md += ["Workers (Dask's sampling profiler, all workers together), inclusive share "
                   "of the sampled task time: "
                   + ", ".join(f"`{k}` {v:.0%}" for k, v in inc.items() if v > 0) + ".", "",
                   "| function (own time) | share |", "| --- | ---: |"]
            md += [f"| `{k}` | {v:.1%} |" for k, v in dask_profile_top(state)]
            md.append("")
    return md


def projection(rows: pd.DataFrame, cs: list[Contender], log: Log) -> list[str]:
    log("  projection: scheduler round trips per tick ...")
    md = ["### Paper projection: when does the driver become the bottleneck?", ""]
    try:
        with local_cluster(2) as (_, client):
            rt = round_trips(client, ROUND_TRIP_K, ticks=20)
    except Exception as exc:
        rt = {}
        md += [f"Round trips not measured: {type(exc).__name__}: {exc}", ""]
    for k, s in rt.items():
        log(f"    k={k}: {s * 1e3:.2f} ms per tick")
    log("  projection: merge cost per tick ...")
    sample = rows.iloc[: min(len(rows), 400_000)]
    costs = merge_costs(sample, PROJECT_K, log)
    md += ["(a) **Scheduler round trip per tick** (measured, 2-worker LocalCluster): the "
           "driver's pattern, one `run_step` per partition (no dependency: the state stays on "
           "its worker under a lease) and every output awaited, with trivial tasks:", "",
           "| partitions | ms per tick | ms per partition |", "| ---: | ---: | ---: |"]
    md += [f"| {k} | {s * 1e3:.2f} | {s * 1e3 / k:.3f} |" for k, s in rt.items()]
    md += ["", "(b) **Driver merge per tick** (measured for 1-8 partitions on "
           f"{len(sample):,} events, fitted `a + b k`, extrapolated): `merge_closed` alone and "
           "the whole `ClusterRunner._handle` (merge, counters, lag, emit into the driver's "
           "graph), median per tick that closed windows. *backlog*: every partition steps "
           f"{MAX_ROWS:,} rows per tick (a replay, many windows per tick); *live*: 1 s of event "
           "time per tick (one window of 100 keys per tick):", "",
           "| mode | partitions | merged rows per tick | merge_closed ms | _handle ms |",
           "| --- | ---: | ---: | ---: | ---: |"]
    fits: dict[str, tuple[float, float]] = {}
    for mode in ("backlog", "live"):
        sel = [c for c in costs if c["mode"] == mode]
        for c in sel:
            md.append(f"| {mode} | {c['k']} | {c['rows_per_tick']:.0f} | {c['merge_ms']:.3f} "
                      f"| {c['handle_ms']:.3f} |")
        if len(sel) >= 2:
            fits[mode] = fit([c["k"] for c in sel], [c["handle_ms"] for c in sel])
            for k in EXTRAPOLATE_K:
                md.append(f"| {mode} | {k} (extrapolated) | | | "
                          f"{_handle_ms(fits, costs, mode, k):.3f} |")
    md.append("")
    if rt and fits:
        md += projection_table(rt, fits, costs, cs, len(rows))
    return md


def _handle_ms(fits: dict[str, tuple[float, float]], costs: list[dict[str, Any]], mode: str,
               k: int) -> float:
    """Measured ``_handle`` ms per tick at ``k`` partitions, else the fit (never below the
    largest measured: a shared machine can make the fitted slope negative)."""
    for c in costs:
        if c["mode"] == mode and c["k"] == k:
            return float(c["handle_ms"])
    a, b = fits[mode]
    measured = max(c["handle_ms"] for c in costs if c["mode"] == mode)
    return float(max(measured, a + b * k))


def projection_table(rt: dict[int, float], fits: dict[str, tuple[float, float]],
                     costs: list[dict[str, Any]], cs: list[Contender], n: int) -> list[str]:
    mode = "backlog" if "backlog" in fits else "live"
    md = [f"Driver time per tick = scheduler round trip (a, measured up to 64 partitions) + "
          f"`_handle` ({mode} ticks, b; measured to 8, extrapolated beyond). The loop is "
          "serial (submit every step, await every output, handle, next tick), so this time "
          "adds to every tick's slowest worker step, and it caps the rate at "
          f"k x max_rows ({MAX_ROWS:,}) / driver time per tick even with infinitely fast "
          "workers.", "",
          "| partitions k | round trip ms | _handle ms | driver ms per tick | "
          "driver-bound events/s (full steps) |", "| ---: | ---: | ---: | ---: | ---: |"]
    for k in sorted(rt):
        h = _handle_ms(fits, costs, mode, k)
        d = rt[k] * 1e3 + h
        note = "" if any(c["k"] == k and c["mode"] == mode for c in costs) else " (extrap.)"
        md.append(f"| {k} | {rt[k] * 1e3:.2f} | {h:.2f}{note} | {d:.2f} | "
                  f"{k * MAX_ROWS / (d / 1e3):,.0f} |")
    md.append("")
    big = max(rt)
    per_part_rt = rt[big] * 1e3 / big
    _, b = fits[mode]
    per_worker = n / cs[1].median() if cs[1].runs else None
    md.append(
        f"Per partition the driver pays about {per_part_rt:.2f} ms of scheduler round trip "
        f"per tick (at {big} partitions) and {max(b, 0):.3f} ms of merge/handle: the merge "
        "is the small part. With full steps the driver alone caps a run at about "
        f"{MAX_ROWS / ((per_part_rt + max(b, 0)) / 1e3):,.0f} events/s whatever k (more "
        "partitions bring more rows per tick and proportionally more round trips). A live "
        "feed steps with fewer rows: a tick cannot be shorter than the driver time above, "
        "so the driver is the bottleneck once the event rate exceeds the last column; below "
        "that rate the driver's time per tick is latency, not a limit.")
    if per_worker:
        for k in EXTRAPOLATE_K:
            if k in rt:
                d = rt[k] * 1e3 + _handle_ms(fits, costs, mode, k)
                md.append(f"At {k} partitions the driver saturates at "
                          f"{k * MAX_ROWS / (d / 1e3):,.0f} events/s, what about "
                          f"{k * MAX_ROWS / (d / 1e3) / per_worker:.0f} workers as fast as "
                          f"this bench's single worker ({per_worker:,.0f} events/s end to "
                          "end) deliver.")
    md.append("")
    return md


def main() -> int:
    import signal

    # a `timeout` or kill -TERM still deletes the streams (the finally clauses run)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    quick = "--quick" in sys.argv
    force = "--profile" in sys.argv
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", flush=True)

    md, targets = run(quick, log, force_profile=force)
    print("\n".join(md))
    for t in targets:
        print(" | ".join(t))
    return 0


if __name__ == "__main__":
    sys.exit(main())
