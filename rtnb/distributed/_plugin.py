"""The worker plugin that ties each partition task's life to its lease's Dask key."""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from rtnb.distributed._worker import _LIVE, release_task

__all__ = ["LeaseKeeper"]


class LeaseKeeper(WorkerPlugin):
    """Drops a worker's partition task once the scheduler releases its lease.

    A partition's task is installed (or adopted) by a Dask task whose key is the lease, and
    the driver holds that task's future for as long as the partition lives there. When the
    future goes (the driver moved or rebuilt the partition, the run ended, or the driver's
    process died and the scheduler dropped its client), the worker releases the key: the
    task leaves the worker's registry and its connection closes. Without this, a driver
    killed with ``kill -9`` against a long-lived cluster would leave its readers connected
    (an AMQP partition's exclusive consumer would then refuse the restarted run's).
    """

    idempotent = True
    name = "rtnb-partition-leases"

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        """A lease key that leaves memory drops its task."""
        if finish in ("released", "forgotten") and key in _LIVE:
            release_task(key)
