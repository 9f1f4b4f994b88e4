"""Exported scripts on Dask distributed (issue 19): ``--cluster local:N`` and ``--scheduler``.

The script is exported from a pipeline reading a partitioned Redis stream and run as a real
subprocess (``python -I``). Its sinks' output on a cluster equals the same script's
one-process run on the same rows (itself checked against pandas); refusals exit 2 with the
reason, a partition failing on its worker exits 1 with the error logged, and a scrape of
``--metrics-port`` shows each partition's lag while the script runs on a cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis
from integration_helpers import service_or_skip

import rtnb
from rtnb.testing import assert_frame_equal_unordered

distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

EXAMPLE = {"timestamp": "datetime64[ns]", "host": "str", "cpu": "float64",
           "latency_ms": "float64", "seq": "int64"}
PARTITIONS = 4
#: every subprocess run is bounded by this (a script that hangs fails the test)
RUN_TIMEOUT = 60


def cap(batch: pd.DataFrame) -> pd.DataFrame:
    """A function of the script (carried by source, sent to the workers by value)."""
    return batch.assign(latency_ms=batch["latency_ms"].clip(upper=500.0))


def explode(batch: pd.DataFrame) -> pd.DataFrame:
    """Fails on the first batch with a CPU over 25 (every partition has one)."""
    if (batch["cpu"] > 25).any():
        msg = "a value over 25"
        raise ValueError(msg)
    return batch


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    """One hour of the bundled day (12 hosts), 1 row in 6: 7,200 real rows, in time order."""
    df = rtnb.datasets.metrics()
    df = df[df["timestamp"] < df["timestamp"].min() + pd.Timedelta("1h")].iloc[::6]
    df = df[["timestamp", "host", "cpu", "latency_ms"]].reset_index(drop=True)
    return df.assign(seq=np.arange(len(df), dtype=np.int64))


@pytest.fixture(scope="module")
def shared() -> Iterator[redis.Redis]:
    service_or_skip(6379, "Redis")
    client = redis.Redis(host="127.0.0.1", port=6379)
    yield client
    client.close()


@pytest.fixture(scope="module")
def streams(shared: redis.Redis) -> Iterator[list[str]]:
    """Stream names used by this module's tests; their partitions are deleted at the end."""
    names: list[str] = []
    yield names
    for name in names:
        shared.delete(*[f"{name}:{p}" for p in range(PARTITIONS)], name)


@pytest.fixture(scope="module")
def cluster(cluster2: Any) -> Any:
    """A running cluster the scripts connect to with ``--scheduler`` / ``RTNB_SCHEDULER``."""
    return cluster2


def produce(client: redis.Redis, streams: list[str], rows: pd.DataFrame,
            name: str | None = None) -> str:
    """A fresh partitioned stream holding ``rows`` (or ``rows`` appended to stream
    ``name``); row ``i`` in ``partition_of(seq)``, in order, so a host's rows are spread over
    every partition (merged on the driver)."""
    if name is None:
        name = f"rtnb-export-dask-{uuid.uuid4().hex[:10]}"
        streams.append(name)
    parts = rtnb.partition_of(rows["seq"].astype(str), PARTITIONS)
    assert len(set(parts.tolist())) == PARTITIONS
    pipe = client.pipeline(transaction=False)
    for r, p in zip(rows.itertuples(index=False), parts, strict=True):
        pipe.xadd(f"{name}:{p}", {"data": json.dumps({
            "timestamp": r.timestamp.isoformat(), "host": r.host, "cpu": r.cpu,
            "latency_ms": r.latency_ms, "seq": int(r.seq)})})
    pipe.execute()
    return name


def export(folder: Path, stream: str, *, partitions: int | None = PARTITIONS,
           fail: bool = False) -> Path:
    """Export the pipeline reading ``stream``; its sinks write Parquet into ``folder``."""
    kw: dict[str, Any] = {"partitions": partitions} if partitions else {}
    src = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp",
                                    group=f"g{uuid.uuid4().hex[:6]}", idle_timeout="300ms",
                                    name="metrics", **kw)
    base = src.map_batches(explode, name="explode") if fail else src
    busy = base[base["cpu"] > 5]
    loaded = busy.assign(load=busy["cpu"] * busy["latency_ms"]).map_batches(cap)
    per_host = loaded.window(rtnb.tumbling("1min"), by="host").agg(
        n=("cpu", "count"), total=("cpu", "sum"), mean=("cpu", "mean"), low=("cpu", "min"),
        high=("cpu", "max"), sd=("latency_ms", "std"), p90=("latency_ms", "quantile", 0.9),
        load=("load", "mean"))
    overall = src.window(rtnb.tumbling("10min")).agg(n=("cpu", "count"),
                                                     high=("latency_ms", "max"))
    rtnb.sinks.to_parquet(per_host, folder / "per_host")
    rtnb.sinks.to_parquet(overall, folder / "overall")
    pipeline = rtnb.Pipeline(per_host, overall, name="metrics")
    return pipeline.export(folder / "monitor.py", names={
        "src": src, "busy": busy, "loaded": loaded, "per_host": per_host, "overall": overall})


def run_script(script: Path, *args: str, env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
    """Run the script (bounded); ``env`` on top of this process's, less RTNB_SCHEDULER."""
    base = {k: v for k, v in os.environ.items() if k != "RTNB_SCHEDULER"}
    return subprocess.run([sys.executable, "-I", str(script), *args], cwd=script.parent,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False,
                          env={**base, **(env or {})})


def events(stderr: str) -> list[dict[str, Any]]:
    """The script's own structured log lines (JSON), without Dask's (those have a
    ``logger``: a warning of the scheduler or nanny may come at any time)."""
    logged = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [e for e in logged if "logger" not in e]


def outputs(folder: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(folder / name) for name in ("per_host", "overall")}


def plain(text: str) -> str:
    """A typer error box as one line of words."""
    return " ".join(text.replace("│", " ").split())


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory, shared: redis.Redis,
                streams: list[str], rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The outputs of the exported script run in one process (no cluster)."""
    folder = tmp_path_factory.mktemp("one-process")
    script = export(folder, produce(shared, streams, rows))
    done = run_script(script, "--max-events", str(len(rows)))
    assert done.returncode == 0, done.stderr
    got = outputs(folder)
    # the reference itself: the minute per host as pandas computes it on the whole input
    busy = rows[rows["cpu"] > 5]
    ref = busy.groupby([busy["timestamp"].dt.floor("1min").rename("window_start"), "host"]
                       ).agg(n=("cpu", "count"), mean=("cpu", "mean"))
    mine = got["per_host"].set_index(["window_start", "host"])[["n", "mean"]].sort_index()
    pd.testing.assert_frame_equal(mine, ref.sort_index(), check_dtype=False,
                                  check_names=False, rtol=1e-9)
    assert int(got["overall"]["n"].sum()) == len(rows)
    return got


def assert_same_outputs(got: dict[str, pd.DataFrame], want: dict[str, pd.DataFrame]) -> None:
    for name, expected in want.items():
        assert len(got[name]) == len(expected) and len(expected), name
        assert got[name].dtypes.to_dict() == expected.dtypes.to_dict()
        assert_frame_equal_unordered(got[name], expected, rtol=1e-9)


@pytest.mark.parametrize("how", ["--cluster", "--scheduler"])
def test_a_cluster_run_writes_what_the_one_process_run_writes(
        tmp_path: Path, shared: redis.Redis, streams: list[str], rows: pd.DataFrame,
        one_process: dict[str, pd.DataFrame], cluster: Any, how: str) -> None:
    stream = produce(shared, streams, rows)
    script = export(tmp_path, stream)
    address = cluster.scheduler_address
    target = "local:2" if how == "--cluster" else address
    done = run_script(script, "--max-events", str(len(rows)), how, target,
                      "--output", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert_same_outputs(outputs(tmp_path), one_process)
    logged = events(done.stderr)
    start = next(e for e in logged if e["event"] == "start")
    assert start[how.lstrip("-")] == target
    connected = next(e for e in logged if e["event"] == "cluster")
    assert connected["partitions"] == PARTITIONS and connected["workers"] == 2
    stop = logged[-1]
    assert stop["event"] == "stop" and stop["events"] == len(rows)
    # the workers' nodes have no rows on the driver; the windows' rows are counted there
    assert sorted(stop["rows"].values()) == sorted(len(w) for w in one_process.values())
    for p in range(PARTITIONS):  # everything read was acknowledged
        assert shared.xinfo_groups(f"{stream}:{p}")[0]["pending"] == 0
    # --output on a cluster: the nodes from the windows on (no input reaches the driver)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "input" not in manifest and len(manifest) == 2 + 2  # 2 windows, their late outputs
    assert address not in script.read_text()  # the address lives outside the script
    if how == "--cluster":  # a cluster of its own, closed when the script ends
        assert connected["dashboard"] != cluster.dashboard_link
        port = int(connected["dashboard"].rsplit(":", 1)[1].split("/", 1)[0])
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2)


def test_a_partition_failing_on_its_worker_exits_1_with_the_error_logged(
        tmp_path: Path, shared: redis.Redis, streams: list[str], rows: pd.DataFrame,
        cluster: Any) -> None:
    script = export(tmp_path, produce(shared, streams, rows), fail=True)
    done = run_script(script, "--max-events", str(len(rows)), "--scheduler",
                      cluster.scheduler_address)
    assert done.returncode == 1, done.stderr
    logged = events(done.stderr)
    failed = next(e for e in logged if e["event"] == "failed")
    assert failed["level"] == "error"
    assert "SourceError: source 'metrics': partition 'rtnb-export-dask-" in failed["error"]
    assert "metrics.explode" in failed["error"] and "a value over 25" in failed["error"]
    assert logged[-1]["event"] == "stop"


@pytest.mark.parametrize(("args", "message"), [
    (["--cluster", "local:2", "--input", "recorded"],
     "--input cannot be used with --cluster or --scheduler"),
    (["--scheduler", "tcp://127.0.0.1:8786", "--cluster", "local:2"],
     "--cluster and --scheduler are mutually exclusive"),
])
def test_what_a_cluster_cannot_do_is_refused_with_exit_2(
        tmp_path: Path, args: list[str], message: str) -> None:
    script = export(tmp_path, "never-read")  # refused before anything connects
    done = run_script(script, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in plain(done.stderr), done.stderr
    assert not (tmp_path / "state.db").exists()


@pytest.mark.parametrize(("cluster", "scheduler", "more", "message"), [
    ("local:1", "tcp://127.0.0.1:8786", {}, "--cluster and --scheduler are mutually "
                                            "exclusive: --cluster local:N starts a local "
                                            "cluster, --scheduler connects to a running one "
                                            "(its address may come from the RTNB_SCHEDULER "
                                            "environment variable)"),
    ("2", None, {}, "--cluster takes local:N (N >= 1 worker processes), e.g. local:2; got '2' "
                    "(a running cluster's address goes to --scheduler)"),
    ("local:0", None, {}, "--cluster takes local:N"),
    ("tcp://127.0.0.1:8786", None, {}, "--cluster takes local:N"),
    (None, "127.0.0.1", {}, "--scheduler takes a Dask scheduler address with its protocol, "
                            "e.g. tcp://host:8786; got '127.0.0.1'"),
    (None, "local:2", {}, "(a local cluster is --cluster local:N)"),
    ("local:1", None, {"input": Path("recorded")}, "--input cannot be used with --cluster"),
])
def test_each_refusal_says_why(cluster: str | None, scheduler: str | None,
                               more: dict[str, Path], message: str) -> None:
    import typer

    from rtnb.export import runtime

    with pytest.raises(typer.BadParameter) as refused:
        runtime.cluster_target(cluster, scheduler, **more)
    assert message in str(refused.value)


def test_an_address_is_shown_without_credentials() -> None:
    import typer

    from rtnb.export import runtime

    assert runtime.cluster_target(None, " tls://10.0.0.5:8786 ") == "tls://10.0.0.5:8786"
    assert runtime.cluster_target("local:03", None) == "local:3"
    with pytest.raises(typer.BadParameter, match="got 'h'") as refused:
        runtime.cluster_target(None, "u:secret@h")
    assert "secret" not in str(refused.value)


def test_a_source_that_is_not_partitioned_is_refused_with_the_reason(tmp_path: Path) -> None:
    script = export(tmp_path, "never-read", partitions=None)
    done = run_script(script, "--cluster", "local:1")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert ("source 'metrics' is not partitioned: a cluster run needs a partitioned source, "
            "e.g. rtnb.sources.redis_stream(name, partitions=8, group=...)") in plain(
                done.stderr)
    help_text = run_script(script, "--help")
    assert help_text.returncode == 0
    shown = plain(help_text.stdout)
    for words in ("--cluster", "local:N starts a local cluster of N single-threaded worker "
                  "processes on 127.0.0.1 and closes it at the end", "--scheduler",
                  "RTNB_SCHEDULER"):
        assert words in shown, words


def test_a_scrape_during_a_cluster_run_shows_each_partitions_lag(
        tmp_path: Path, shared: redis.Redis, streams: list[str], rows: pd.DataFrame,
        one_process: dict[str, pd.DataFrame], cluster: Any) -> None:
    """A live run (no --max-events) on the cluster named by RTNB_SCHEDULER: /metrics shows
    rtnb_source_partition_lag and the messages read from every partition; SIGTERM ends it,
    the open windows flush and the outputs equal the one-process run's; exit 0."""
    stream = produce(shared, streams, rows)
    script = export(tmp_path, stream)
    env = {**os.environ, "RTNB_SCHEDULER": cluster.scheduler_address}
    with subprocess.Popen([sys.executable, "-I", str(script), "--metrics-port", "0"],
                          cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stderr is not None
            head = [proc.stderr.readline() for _ in range(2)]  # "metrics" comes first
            url = next(e["url"] for e in events("".join(head)) if e["event"] == "metrics")
            deadline = time.monotonic() + RUN_TIMEOUT
            while True:  # until every row was read, as a scrape shows
                with urllib.request.urlopen(url, timeout=5) as reply:
                    body = reply.read().decode()
                lags = {line.split('partition="', 1)[1].split('"', 1)[0]:
                        float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                        if line.startswith("rtnb_source_partition_lag{")}
                read = [float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                        if line.startswith('rtnb_rows_total{node="src"')]
                if len(lags) == PARTITIONS and read and read[0] == len(rows):
                    break
                assert time.monotonic() < deadline, body[-3000:]
                time.sleep(0.2)
            assert sorted(lags) == [f"{stream}:{p}" for p in range(PARTITIONS)]
            assert all(v == 0 for v in lags.values())  # the whole backlog was read
            # each partition's messages, a counter (its rate is what a dashboard plots)
            per_partition = {line.split('partition="', 1)[1].split('"', 1)[0]:
                             float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                             if line.startswith("rtnb_source_partition_messages_total{")}
            sizes = np.bincount(rtnb.partition_of(rows["seq"].astype(str), PARTITIONS),
                                minlength=PARTITIONS)
            assert per_partition == {f"{stream}:{p}": float(sizes[p]) for p in range(PARTITIONS)}
            assert 'rtnb_rows_total{node="busy"' not in body  # runs on the workers
            assert 'rtnb_pipeline_failed{pipeline="metrics"} 0.0' in body
            proc.send_signal(signal.SIGTERM)
            rest = proc.stderr.read()
            assert proc.wait(timeout=RUN_TIMEOUT) == 0, rest
        finally:
            if proc.poll() is None:
                proc.kill()
    logged = events(rest)
    assert [e["event"] for e in logged][-2:] == ["signal", "stop"], rest
    assert logged[-1]["events"] == len(rows), rest
    assert_same_outputs(outputs(tmp_path), one_process)  # the open windows were flushed


@pytest.mark.parametrize("name", ["cluster", "scheduler", "until"])
def test_a_param_named_like_a_script_option_is_refused_at_export(tmp_path: Path,
                                                                  name: str) -> None:
    """No Redis needed: the script would otherwise not even compile (a duplicate argument)."""
    src = rtnb.sources.replay(rtnb.datasets.metrics_path(), name="metrics", max_events=100)
    size = rtnb.Param("10s", min="1s", max="5min", name=name)
    src.window(rtnb.tumbling(size), by="host").agg(n=("cpu", "count"))
    with pytest.raises(rtnb.ExportError, match=f"Param '{name}' would be the script's option "
                                               f"--{name}, which the script already has"):
        rtnb.Pipeline(src).export(tmp_path / "monitor.py")
    assert not (tmp_path / "monitor.py").exists()


@pytest.mark.faults  # kill -9: runs with the fault tests (tools/run_tests.sh)
def test_a_cluster_job_killed_with_kill_9_resumes_from_its_checkpoint_exactly(
        tmp_path: Path, shared: redis.Redis, streams: list[str], rows: pd.DataFrame,
        one_process: dict[str, pd.DataFrame]) -> None:
    """``--cluster local:2 --checkpoint``: the driver saves a checkpoint at its ticks (its own
    nodes and every partition's state from the workers), and the workers acknowledge entries
    only once one holding them is written. The data comes in four parts: each run waits until
    what is there is read, checkpointed and acknowledged, then the next part arrives; the
    first two runs are killed (the script and its workers, SIGKILL) as soon as that part is
    read, before a checkpoint holds it (its windows' rows on their way to the sinks), and
    each restart resumes from the checkpoint and reads it again; the last run is stopped
    with SIGTERM once everything is acknowledged (into a checkpoint: a stop flushes
    nothing). A row per host and partition a while after the data closes every window of
    the data: those equal the one-process run's, each once, and nothing is left pending."""
    flush_at = rows["timestamp"].max().ceil("10min") + pd.Timedelta("10min")
    hosts = sorted(rows["host"].unique())
    # a row per host, and in every partition (each partition's time must pass the windows)
    seqs = np.arange(len(rows), len(rows) + 64, dtype=np.int64)
    parts = rtnb.partition_of(pd.Series(seqs).astype(str), PARTITIONS)
    first = [int(np.flatnonzero(parts == p)[0]) for p in range(PARTITIONS)]
    picked = sorted(set(range(len(hosts))) | set(first))
    tail = pd.DataFrame({"timestamp": flush_at, "host": [hosts[i % len(hosts)] for i in picked],
                         "cpu": 0.0, "latency_ms": 0.0, "seq": seqs[picked]})
    data = pd.concat([rows, tail], ignore_index=True)
    cuts = [0, len(rows) // 4, len(rows) // 2, 3 * len(rows) // 4, len(data)]
    stream = produce(shared, streams, data.iloc[:cuts[1]])
    script = export(tmp_path, stream)
    db = tmp_path / "state.db"
    args = [sys.executable, "-I", str(script), "--cluster", "local:2", "--checkpoint", str(db),
            "--checkpoint-every", "1s"]
    env = {k: v for k, v in os.environ.items() if k != "RTNB_SCHEDULER"}

    def groups() -> list[dict[str, Any]]:
        return [g for p in range(PARTITIONS) for g in shared.xinfo_groups(f"{stream}:{p}")]

    def unread() -> int:  # not delivered to the group yet
        return sum(int(g["lag"] or 0) for g in groups())

    def pending() -> int:  # delivered, not acknowledged (no checkpoint holds them yet)
        return sum(int(g["pending"]) for g in groups())

    def saved(log: Path) -> int:
        text = log.read_text() if log.exists() else ""
        return sum(1 for e in events(text) if e["event"] == "checkpoint"
                   and e.get("action") == "saved" and e.get("reason") == "periodic")

    def wait(proc: subprocess.Popen[bytes], log: Path, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not done():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.01)

    logs: list[Path] = []
    unacked_at_kill: list[int] = []
    for attempt in range(3):
        log = tmp_path / f"run{attempt}.log"
        logs.append(log)
        with log.open("w") as err, subprocess.Popen(args, cwd=tmp_path, stderr=err, env=env,
                                                   start_new_session=True) as proc:
            try:
                # what is there is read, checkpointed and acknowledged ...
                wait(proc, log, lambda run=log: unread() == 0 and pending() == 0
                     and saved(run) >= 1)
                produce(shared, streams, data.iloc[cuts[attempt + 1]:cuts[attempt + 2]],
                        name=stream)
                if attempt < 2:  # ... a new part arrives and is read: killed before (most
                    # likely) a checkpoint holds it, its windows' rows on their way out
                    wait(proc, log, lambda: unread() == 0)
                    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers
                    unacked_at_kill.append(pending())
                    proc.wait(timeout=10)
                    continue
                wait(proc, log, lambda: unread() == 0 and pending() == 0)
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=RUN_TIMEOUT) == 0, log.read_text()[-3000:]
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
    # at least one kill landed before the checkpoint of what was read (re-read on restart)
    assert max(unacked_at_kill) > 0, unacked_at_kill
    restored = [e for log in logs[1:] for e in events(log.read_text())
                if e["event"] == "checkpoint" and e.get("action") == "restored"]
    assert len(restored) == 2, "each restart resumed from the checkpoint"
    connected = [e for log in logs for e in events(log.read_text()) if e["event"] == "cluster"]
    # each run was killed after a checkpoint with the partitions' state: both restarts
    # started every partition from there
    assert [e["restored_partitions"] for e in connected] == [0, PARTITIONS, PARTITIONS]
    got = outputs(tmp_path)
    for name, expected in one_process.items():
        mine = got[name][got[name]["window_start"] < flush_at].reset_index(drop=True)
        assert len(mine) == len(expected), (name, len(mine), len(expected))
        assert_frame_equal_unordered(mine, expected, rtol=1e-9)
    for p in range(PARTITIONS):  # everything acknowledged in the end
        assert shared.xinfo_groups(f"{stream}:{p}")[0]["pending"] == 0
