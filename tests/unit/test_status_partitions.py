"""The status widget of a partitioned source (issue 19): each partition's lag with the worker
reading it, and the Dask dashboard's link while the pipeline runs on a cluster.

No broker and no cluster: the source's stats are filled as the source and the cluster's
driver fill them (``stats.partition_lag``, ``stats.partition_worker``), and the pipeline's
runner is a :class:`~rtnb.distributed.ClusterRunner` that was never started, its
``dashboard_link`` set as its connection sets it.
"""

from __future__ import annotations

import pytest

import rtnb
from rtnb import ConfigError
from rtnb.viz.status import Status

EXAMPLE = {"timestamp": "datetime64[ns]", "host": "str", "cpu": "float64"}
LINK = "http://127.0.0.1:8787/status"


def partitioned(n: int = 3) -> tuple[rtnb.StreamingFrame, rtnb.StreamingFrame]:
    src = rtnb.sources.redis_stream("metrics", example=EXAMPLE, time="timestamp",
                                    partitions=n, group="dash")
    agg = src.window(rtnb.tumbling("1s"), by="host").agg(n=("cpu", "count"))
    return src, agg


def shown(status: Status) -> str:
    text = status.html(status.snapshot())
    status.close()
    return text


def partitions_cell(page: str) -> str:
    return page.split('<td class="rtnb-status-partitions">', 1)[1].split("</td>", 1)[0]


def test_each_partitions_worker_is_shown_next_to_its_lag():
    src, _ = partitioned()
    stats = src.source.stats
    stats.partition_lag = {"metrics:0": 1200, "metrics:1": 0, "metrics:2": 35}
    stats.partition_worker = {"metrics:0": "tcp://127.0.0.1:40001",
                              "metrics:1": "tcp://127.0.0.1:40002",
                              "metrics:2": "tcp://127.0.0.1:40001"}
    status = src.status()
    snap = status.snapshot()
    assert snap["source_partition_lag"] == stats.partition_lag
    assert snap["source_partition_worker"] == stats.partition_worker
    result = partitions_cell(shown(status))
    expected = ("metrics:0 lag 1,200 on 127.0.0.1:40001 · metrics:1 lag 0 on 127.0.0.1:40002"
                " · metrics:2 lag 35 on 127.0.0.1:40001")
    assert result == expected


def test_a_partition_whose_lag_is_not_known_yet_still_shows_its_worker():
    # the driver assigns workers at the start; lags arrive with the first steps
    src, _ = partitioned(2)
    src.source.stats.partition_worker = {"metrics:0": "tcp://127.0.0.1:40001",
                                         "metrics:1": "tcp://127.0.0.1:40002"}
    src.source.stats.partition_lag = {"metrics:1": 7}
    result = partitions_cell(shown(src.status()))
    assert result == "metrics:0 lag - on 127.0.0.1:40001 · metrics:1 lag 7 on 127.0.0.1:40002"


def test_without_a_cluster_the_partitions_show_their_lag_only():
    src, _ = partitioned(2)
    src.source.stats.partition_lag = {"metrics:0": 3, "metrics:1": 4}
    page = shown(src.status())
    assert partitions_cell(page) == "metrics:0 lag 3 · metrics:1 lag 4"
    assert "dashboard" not in page


def test_each_partitions_rate_comes_from_the_messages_it_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the source (one process) or the cluster's driver counts each partition's messages;
    # the widget's rate is the change between its looks, over the seconds between them
    import rtnb.viz.status as status_module

    clock = [100.0]
    monkeypatch.setattr(status_module.time, "monotonic", lambda: clock[0])
    src, _ = partitioned(2)
    stats = src.source.stats
    stats.partition_lag = {"metrics:0": 10, "metrics:1": 0}
    stats.partition_messages = {"metrics:0": 1_000, "metrics:1": 40}
    status = src.status()
    status.snapshot()
    clock[0] += 2.0
    stats.partition_messages = {"metrics:0": 6_000, "metrics:1": 41}
    snap = status.snapshot()
    assert snap["source_partition_rate"] == {"metrics:0": 2_500.0, "metrics:1": 0.5}
    page = status.html(snap)
    status.close()
    assert partitions_cell(page) == "metrics:0 2,500/s lag 10 · metrics:1 0.5/s lag 0"


def test_an_unpartitioned_source_shows_no_partitions_row():
    src = rtnb.sources.redis_stream("metrics", example=EXAMPLE, time="timestamp")
    status = src.status()
    snap = status.snapshot()
    page = shown(status)
    assert snap["source_partition_lag"] is None and snap["source_partition_worker"] is None
    assert snap["dashboard_link"] is None
    assert "rtnb-status-partitions" not in page and "rtnb-status-dashboard" not in page


def test_the_dask_dashboard_link_once_the_pipeline_runs_on_a_cluster():
    pytest.importorskip("distributed")
    from rtnb.distributed import ClusterRunner

    src, agg = partitioned()
    pipeline = rtnb.Pipeline(agg)
    status = Status(src, pipeline=pipeline)
    assert status.snapshot()["dashboard_link"] is None  # not started: no runner yet
    runner = ClusterRunner(pipeline, "local:2")  # what pipeline.start(cluster=...) builds
    pipeline.runner = runner
    assert status.snapshot()["dashboard_link"] is None  # not connected yet
    runner.dashboard_link = LINK  # what its connection to the scheduler sets
    snap = status.snapshot()
    assert snap["dashboard_link"] == LINK
    page = shown(status)
    result = page.split('<td class="rtnb-status-dashboard">', 1)[1].split("</td>", 1)[0]
    expected = (f'<a href="{LINK}" target="_blank" rel="noopener">Dask dashboard ({LINK})'
                "</a>")
    assert result == expected


def test_a_dashboard_link_that_is_not_http_is_shown_as_text_not_as_a_link():
    pytest.importorskip("distributed")
    from rtnb.distributed import ClusterRunner

    _, agg = partitioned()
    pipeline = rtnb.Pipeline(agg)
    pipeline.runner = ClusterRunner(pipeline, "local:1")
    pipeline.runner.dashboard_link = "javascript:alert('<x>')"
    page = shown(Status(agg, pipeline=pipeline))
    cell = page.split('<td class="rtnb-status-dashboard">', 1)[1].split("</td>", 1)[0]
    assert "<a " not in cell and "<x>" not in cell
    assert "&lt;x&gt;" in cell


def test_a_pipeline_of_another_source_is_refused():
    src, _ = partitioned()
    _, other = partitioned()
    with pytest.raises(ConfigError, match="status `pipeline` must be the pipeline of frame "
                                          "'redis'"):
        Status(src, pipeline=rtnb.Pipeline(other))


def test_frame_status_finds_the_dashboard_through_the_graphs_runner():
    """``src.status()`` without ``pipeline=``: the graph's runner (set by
    ``pipeline.start(cluster=...)``) gives the link."""
    import asyncio

    pytest.importorskip("distributed")
    from rtnb.distributed import ClusterRunner

    src, agg = partitioned()
    runner = ClusterRunner(rtnb.Pipeline(agg), "local:2")
    runner.dashboard_link = LINK

    class Idle:  # stands for the runner's run(): waits for the stop
        async def run(self, frame: rtnb.StreamingFrame, stop: asyncio.Event) -> None:
            await stop.wait()

    async def main() -> str | None:
        status = Status(src)
        assert status.snapshot()["dashboard_link"] is None  # not started
        src.graph.start(runner=runner)  # the graph's runner is the ClusterRunner ...
        runner.run = Idle().run  # type: ignore[method-assign]  # ... which idles here
        await asyncio.sleep(0)
        link = status.snapshot()["dashboard_link"]
        src.stop()
        await src.wait()
        status.close()
        return link

    assert asyncio.run(main()) == LINK
