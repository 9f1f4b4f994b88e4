"""Scaling a cluster on the sources' lag: an ``Adaptive`` whose target comes from the backlog."""

from __future__ import annotations

import math
from typing import Any

from rtnb.distributed._driver import _require_distributed

_require_distributed()  # a helpful error when the dask extra is missing

from distributed.deploy.adaptive import Adaptive  # noqa: E402

__all__ = ["LagAdaptive"]


class LagAdaptive(Adaptive):
    """Dask's ``Adaptive`` with the number of workers set by the partitions' lag.

    The target is ``ceil(lag / lag_per_worker)`` workers, within ``minimum`` and
    ``maximum`` and never more than the source has partitions (a partition is read by one
    worker). The lag is the one the status widget and the ``rtnb_source_partition_lag``
    metric show: the entries the brokers hold that the pipeline has not read yet (Redis
    ``XINFO GROUPS``). Scaling down goes through Dask's usual path (``wait_count``
    intervals below the target, then the workers retire; their partitions move).

    Parameters
    ----------
    cluster
        The cluster to scale (``cluster.adapt(Adaptive=LagAdaptive, pipeline=...)`` passes
        it).
    pipeline
        The pipeline running on the cluster (its source's ``stats.lag`` is read).
    lag_per_worker
        How many waiting entries one worker is expected to keep up with.
    **kwargs
        ``minimum``, ``maximum``, ``interval``, ``wait_count`` ...: as for Dask's
        ``Adaptive``.

    Examples
    --------
    >>> import rtnb
    >>> src = rtnb.sources.redis_stream("metrics", example={"t": "datetime64[ns]",
    ...     "cpu": "float64"}, time="t", partitions=8, group="g")
    >>> n = src.window(rtnb.tumbling("1min")).agg(n=("cpu", "count"))
    >>> pipeline = rtnb.Pipeline(n)
    >>> src.source.stats.lag = 120_000
    >>> LagAdaptive.wanted(pipeline, lag_per_worker=50_000, minimum=1, maximum=4)
    3
    """

    def __init__(self, cluster: Any = None, *, pipeline: Any, lag_per_worker: int = 50_000,
                 **kwargs: Any) -> None:
        super().__init__(cluster, **kwargs)
        if lag_per_worker < 1:
            msg = f"lag_per_worker must be positive; got {lag_per_worker!r}"
            raise ValueError(msg)
        self.pipeline = pipeline
        self.lag_per_worker = lag_per_worker

    @staticmethod
    def wanted(pipeline: Any, *, lag_per_worker: int, minimum: int, maximum: float) -> int:
        """The number of workers the pipeline's current lag asks for."""
        source = pipeline.root.source
        lag = source.stats.lag or 0
        partitions = getattr(source, "partitions", None) or 1
        want = math.ceil(lag / lag_per_worker)
        return int(max(minimum, min(maximum, partitions, want)))

    async def target(self) -> int:
        """The number of workers wanted now (Dask's ``Adaptive`` asks every interval)."""
        return self.wanted(self.pipeline, lag_per_worker=self.lag_per_worker,
                           minimum=self.minimum, maximum=self.maximum)
