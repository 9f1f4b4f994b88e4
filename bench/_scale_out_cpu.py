"""Where the CPU of a cluster run goes (issue 19), on bench/scale_out.py's data.

2,000,000 events over 8 Redis partitions, W1; runs of 2 workers and of 1 worker alternate
(``ROUNDS`` of each), each with its wall time as scale_out.py measures it (``run_once``) and
the CPU time of every process of the job: the workers (``client.run``), Dask's scheduler,
the driver (this process) and the Redis server (``INFO cpu``). Run alone: ``python
bench/_scale_out_cpu.py`` (~4 min; not part of ``make bench``, the leading underscore).

What it shows on a 2-core machine: the CPU a run needs is about the same with 1 and 2
workers, and a 2-worker run keeps ~1.85 cores busy, so its wall time is bounded below by
that CPU over 2 cores.
"""

from __future__ import annotations

import resource
import sys
import uuid
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale_out as so  # the bench's data, cluster and run

ROUNDS = 2


def redis_cpu() -> float:
    """The Redis server's CPU seconds so far (user + system)."""
    info = redis.Redis(host=so.REDIS_HOST, port=so.REDIS_PORT).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def proc_cpu() -> float:
    """This process's CPU seconds so far (user + system); run on workers and the scheduler."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    n = so.N_FULL
    name = f"rtnb-cpu-{uuid.uuid4().hex[:8]}"
    warm = name + "-warm"
    so.produce(name, so.make_rows(n), so.PARTITIONS)
    so.produce(warm, so.make_rows(so.WARM_N, seed=1), so.PARTITIONS)
    try:
        for k in (2, 1) * ROUNDS:
            with so.local_cluster(k) as (cluster, client):
                so.run_once("warm-up", warm, so.WARM_N, so.PARTITIONS, cluster)
                w0, s0 = client.run(proc_cpu), client.run_on_scheduler(proc_cpu)
                r0, d0 = redis_cpu(), proc_cpu()
                run = so.run_once(f"{k} worker(s)", name, n, so.PARTITIONS, cluster)
                r1, d1 = redis_cpu(), proc_cpu()
                w1, s1 = client.run(proc_cpu), client.run_on_scheduler(proc_cpu)
            workers = sum(w1[a] - w0[a] for a in w1)
            total = workers + (r1 - r0) + (d1 - d0) + (s1 - s0)
            print(f"{k} worker(s): wall {run.seconds:.1f} s; CPU s: workers {workers:.1f}, "
                  f"redis {r1 - r0:.1f}, driver {d1 - d0:.1f}, scheduler {s1 - s0:.1f}; "
                  f"total {total:.1f} = {total / run.seconds:.2f} cores busy", flush=True)
    finally:
        so.delete(name, so.PARTITIONS)
        so.delete(warm, so.PARTITIONS)


if __name__ == "__main__":
    main()
