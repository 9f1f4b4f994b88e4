"""Scale-out on Dask distributed: a partitioned source's partitions as short Dask tasks.

``pipeline.run(cluster=distributed.LocalCluster(n_workers=2, threads_per_worker=1))`` (or
``pipeline.start(cluster=...)`` in a notebook) runs a pipeline whose source is partitioned
(``rtnb.sources.redis_stream(name, partitions=8, group=...)``, ``rtnb.sources.kafka``, or
``rtnb.sources.nats(subject, partitions=8, durable=...)``) on a Dask cluster:

* **Partitions come from the broker**, and each one is read by one worker (partition ``p``
  on worker ``p mod workers`` at the start, then balanced by load), which runs the
  pipeline from the source up to the first stateful node on each path (filters,
  ``assign``, ``map_batches``, column selections, then the window, rolling or detector):
  the *split* nodes.
* **Short tasks, state on the workers.** The notebook (or script) is the driver: every tick
  it submits one step per partition, ``run_step(lease, frontier, max_rows, final) ->
  output``; the task object (the partition's reader, its position and its split nodes'
  state) stays on its worker, in that process's registry under a *lease* the step names. A
  step has no Dask dependency, so Dask keeps no lineage: the scheduler holds a few tasks per
  partition (its lease, its step in flight), however long the run, and never re-runs a
  partition's past steps after a worker left (with the state passed as a future from step to
  step it did both: its task graph grew by every step, and a retired worker made it re-run a
  partition's history on another worker, reading and acknowledging entries no output held).
  A partition moves by being handed over: exported by its old worker, adopted by the new one
  under a new lease. No long-running task, no actor.
* **Windows merge on the driver.** A worker's window engine is held: it folds rows but
  closes no window itself; the driver sends the *frontier* (the minimum newest event time
  over the partitions that are not idle, Flink's minimum watermark), each engine's
  watermark is the frontier less its allowed lateness, and the windows it passed leave the
  workers as partial states (count, sum, min, max, mean as sum and count, variance's
  moments, exact quantiles' values) merged with each aggregation's ``merge``. A key's rows
  may be spread over partitions. Everything after the split nodes runs on the driver as in
  one process: views, alerts, sinks.
* Session windows, rolling aggregations and detectors run whole on the workers, each for
  the keys of its partition: their output equals one process's when every key lives in
  one partition (what a producer partitioning by that key with
  :func:`rtnb.partition_of` gives).
* ``idle_timeout`` (the source's) marks a silent partition idle, so it does not hold the
  frontier back: idle once a read that began ``idle_timeout`` after its last row found
  nothing (a read is the evidence, not the clock, so ticks slower than the timeout make no
  partition with unread rows idle). When every partition is idle (caught up), the frontier
  is the minimum over those that ever sent a row; when rows come again, every partition has
  a whole ``idle_timeout`` from then to bring its part before it can be idle again.
  ``max_drift`` (the source's) bounds how far one partition runs ahead in event time: a
  partition more than that ahead of the frontier reads nothing until the others catch up
  (or go idle), so the windows a worker holds open stay bounded (``runner.held`` names the
  partitions held back in the last tick).
* **A lost worker loses and repeats nothing.** Every ``checkpoint_every`` (2 s) each step
  snapshots its split nodes' state into its output, which the driver keeps; a partition's
  entries are acknowledged only once a checkpoint holds them. A partition whose worker
  dies (the scheduler drops it, or Dask reports its task lost) is rebuilt on a live worker
  from its checkpoint and re-reads its unacknowledged entries: those whose output the
  driver had handled only rebuild the state (at the frontier of the partition's last
  handled step: its parts of the windows closed by then reached the driver already);
  windows merge only in a tick where every partition's part is in (the survivors' parts
  wait meanwhile).
* **Load balancing and scaling**: about every second the driver looks at the workers and
  the messages each partition read lately; while moving one partition from the busiest
  worker to the least busy one lowers the busier of the two by a tenth or more, it moves
  it (handed over between the two workers; its connection reopens on the new one). A
  worker that joins gets partitions, so ``cluster.scale(n)`` mid-run moves partitions
  (tested to change no output); a worker retired by ``scale`` takes its partitions along,
  and they are rebuilt from their checkpoints as after a lost worker.
  ``LagAdaptive`` scales the cluster on the partitions' lag
  (``cluster.adapt(Adaptive=rtnb.distributed.LagAdaptive, pipeline=pipeline, minimum=1,
  maximum=4)``), the same lag the ``rtnb_source_partition_lag`` metric exports for an
  autoscaler outside Dask (KEDA, a Kubernetes HPA).

* **A driver that dies** (an exported script's ``--checkpoint``, or ``durable=`` given
  to ``ClusterRunner``): the checkpoints of a complete tick are also written to disk with
  the driver's own nodes and the sinks' transactions; entries are acknowledged only once
  one holding them is written; a stop saves the open windows instead of flushing them; a
  restart starts every partition from its state there (kill -9 of the script and its
  workers, twice, then a restart: outputs equal one uninterrupted process).

* **Params tuned while it runs** (a widget in the notebook): the Params the workers use
  travel with their nodes (without their widgets), and a change reaches each partition
  with its next step: the rows it reads from then on use the new value, as the next batch
  does in one process (a filter's threshold, a detector's). A Param that reconfigures a
  node running on the workers (a window's size, a rolling window, an allowed lateness)
  would need every partition's engine rebuilt at the same event time: a change of it
  during a cluster run is refused with a :class:`~rtnb.ConfigError` and the Param keeps
  its value.

What does not run on a cluster yet (each refused with a clear error): a window with
``emit="update"``; a view, sink or ``collect()`` on a frame before the split nodes; a
change of a Param that reconfigures a node on the workers; sources other than
partitioned Redis streams, Kafka topics, NATS JetStream subjects and AMQP queues.
"""

from rtnb.distributed._driver import ClusterLike, ClusterRunner, plan_splits


def __getattr__(name: str) -> object:
    if name == "LagAdaptive":  # imports dask.distributed: only when asked for
        from rtnb.distributed._adaptive import LagAdaptive

        return LagAdaptive
    msg = f"module 'rtnb.distributed' has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = ["ClusterLike", "ClusterRunner", "LagAdaptive", "plan_splits"]
