"""Compile rtnb's numba kernels once, into numba's on-disk cache, before the tests start.

Each process that first calls a kernel compiles it unless numba's cache holds it already
(about 17 s for the detectors' kernels on a loaded 2-core machine). A fresh clone has no
cache, so `make test`'s two pytest processes and the Dask workers and exported scripts they
start compiled the same kernels side by side at first (a distributed detector test took 56 s
instead of 7 in CI). Run once before them (tools/run_tests.sh), they all read the cache.
"""

from __future__ import annotations

import time

import numpy as np


def main() -> None:
    """Call every kernel once on a tiny input."""
    started = time.perf_counter()
    from rtnb.detect import Anomaly, _kernels

    _kernels.warm_up()
    n = 64
    t = np.arange(n, dtype=np.int64) * 1_000_000_000
    Anomaly().process(np.linspace(0.0, 1.0, n), np.zeros(n, dtype=np.int64), t)
    print(f"numba kernels ready in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
