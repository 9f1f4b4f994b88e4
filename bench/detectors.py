"""Detector benchmark (issue 6): rtnb detectors per batch vs River's per-event statistics.

Same data, same run, side by side:

* data: ``N`` events (1,000,000; 100,000 with ``--quick``), 100 keys (``host``, drawn at
  random), event time ~1 kHz (exponential gaps, mean 1 ms, in whole microseconds so that
  River's ``datetime`` objects are exact, strictly increasing: the full run
  spans ~17 min of event time, so the 5 min ``ZScore`` window really rolls), ``cpu`` normal
  noise (mean 50, sd 5) with a spike (+40) on 0.05 % of the rows;
* rtnb, fresh detector per run: ``det.process(x, key_codes, times_ns)`` over pre-cut numpy
  batches of 10,000 rows (the bare detector), and ``sdf.detect(det, on="cpu", by="host")`` on a
  ``rtnb.StreamingFrame`` fed 10,000-row pandas batches (key strings coded by the frame, schema
  checks, streamz node), both over all events; and ``process`` in 1,000-row batches over the
  last 10 % of the events only, starting from a copy of the state after the first 90 % (steady
  state; over all events this cell alone would take minutes);
* River (or plain Python where River has no model), one model per key in a dict, per event:
  read the statistic (score the row against the state *before* it), flag ``|z| > 3``, then
  update. Inputs are pre-converted Python lists (floats, ints, ``datetime`` for
  ``TimeRolling``), the most favourable form for a per-event loop.

Timing: contenders run interleaved in rounds (one run of each per round), so load from other
users of the shared machine hits all alike; the table shows the median of the runs. The
compiled kernels (numba: one per detector family, ``rtnb.detect._kernels.KERNELS``) are warmed
up before any timed run; their first-call time in the run (read from numba's cache, or
compiled) and a cold compile in a fresh process with an empty cache are reported apart. Scores are
checked once per run: rtnb's ``StreamingFrame`` output equals ``process`` output, and rtnb vs
River/Python (max abs difference; see the notes for why ``ZScore`` differs at the window edge,
with both sides checked exactly against pandas). pyinstrument profiles of ``ZScore`` and
``EWMA`` ``process`` (10,000- and 1,000-row batches, last 10 % of the events, warmed state)
close the section.

Run through ``bench/run.py`` (``make bench``).
"""

from __future__ import annotations

import bisect
import copy
import datetime as dt
import gc
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

import rtnb
from rtnb.detect import EWMA, MAD, RateOfChange, Threshold, ZScore

TITLE = ("Detectors: ZScore, EWMA, RateOfChange, Threshold, MAD vs River / plain Python per "
         "event (issue 6)")

N_FULL = 1_000_000
N_QUICK = 100_000
N_KEYS = 100
RATE_HZ = 1_000  # events per second of event time
SPIKE_SHARE = 0.0005
TARGET_BATCH = 10_000  # rtnb process over all events (the target row)
FRAME_BATCH = 10_000  # StreamingFrame.detect over all events
SMALL_BATCH = 1_000  # rtnb process over the last TAIL_SHARE of the events, warmed state
TAIL_SHARE = 0.1
TARGET_RATIO = 10.0
T0 = pd.Timestamp("2026-01-01").value  # ns
HOSTS = np.array([f"host-{i:02d}" for i in range(N_KEYS)])

WINDOW = "5min"
WINDOW_TD = dt.timedelta(minutes=5)
Z_THRESHOLD = 3.0
MIN_PERIODS = 10
ALPHA = 0.1
ROC_THRESHOLD = 100.0
ROC_PER = "1s"
PER_NS = 1_000_000_000
UPPER = 80.0
MAD_THRESHOLD = 3.5

EXAMPLE = pd.DataFrame({
    "timestamp": pd.Series([], dtype="datetime64[ns]"),
    "host": pd.Series([], dtype=str),
    "cpu": pd.Series([], dtype="float64"),
})

DETECTORS: dict[str, Callable[[], Any]] = {
    "ZScore": lambda: ZScore(window=WINDOW, threshold=Z_THRESHOLD, min_periods=MIN_PERIODS),
    "EWMA": lambda: EWMA(alpha=ALPHA, threshold=Z_THRESHOLD, min_periods=MIN_PERIODS),
    "RateOfChange": lambda: RateOfChange(threshold=ROC_THRESHOLD, per=ROC_PER),
    "Threshold": lambda: Threshold(upper=UPPER),
    "MAD": lambda: MAD(window=WINDOW, threshold=MAD_THRESHOLD, min_periods=MIN_PERIODS),
}
RTNB_CALL = {
    "ZScore": f'ZScore(window="{WINDOW}", threshold={Z_THRESHOLD:g}, '
              f"min_periods={MIN_PERIODS})",
    "EWMA": f"EWMA(alpha={ALPHA}, threshold={Z_THRESHOLD:g}, min_periods={MIN_PERIODS})",
    "RateOfChange": f'RateOfChange(threshold={ROC_THRESHOLD:g}, per="{ROC_PER}")',
    "Threshold": f"Threshold(upper={UPPER:g})",
    "MAD": f'MAD(window="{WINDOW}", threshold={MAD_THRESHOLD:g}, min_periods={MIN_PERIODS})',
}


# -- data ------------------------------------------------------------------------------------
@dataclass
class Data:
    t: np.ndarray  # int64 ns, strictly increasing
    codes: np.ndarray  # intp key codes
    x: np.ndarray  # float64
    frame: pd.DataFrame  # the same as a pandas frame (timestamp, host, cpu)
    # per-event inputs for the Python loops
    xs: list[float] = field(default_factory=list)
    ks: list[int] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    dts: list[dt.datetime] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.x)


def make_data(n: int, seed: int = 0) -> Data:
    rng = np.random.default_rng(seed)
    # whole microseconds, so the ``datetime`` objects River gets are exact
    gaps = (rng.exponential(1e6 / RATE_HZ, n).astype(np.int64) + 1) * 1_000
    t = T0 + np.cumsum(gaps)
    codes = rng.integers(0, N_KEYS, n).astype(np.intp)
    x = rng.normal(50.0, 5.0, n)
    spikes = rng.random(n) < SPIKE_SHARE
    x[spikes] += 40.0
    frame = pd.DataFrame({"timestamp": t.view("datetime64[ns]"),
                          "host": pd.array(HOSTS[codes], dtype=str), "cpu": x})
    return Data(t=t, codes=codes, x=x, frame=frame, xs=x.tolist(), ks=codes.tolist(),
                ts=t.tolist(), dts=list(pd.DatetimeIndex(frame["timestamp"]).to_pydatetime()))


# -- rtnb ------------------------------------------------------------------------------------
def rtnb_process(make: Callable[[], Any], data: Data, batch: int, start: int = 0,
                 warmed: Any = None) -> np.ndarray:
    """The bare detector: ``process`` per pre-cut numpy batch from row ``start`` on (with
    ``warmed``, a detector holding the state after rows ``[0, start)``, if given; it is
    changed); returns the scores."""
    det = make() if warmed is None else warmed
    out = np.empty(data.n - start)
    for i in range(start, data.n, batch):
        j = min(i + batch, data.n)
        s, _ = det.process(data.x[i:j], data.codes[i:j], data.t[i:j])
        out[i - start:j - start] = s
    return out


def warm(make: Callable[[], Any], data: Data, stop: int) -> Any:
    """A detector that has processed rows ``[0, stop)`` (in one call: the state does not
    depend on the batch split, which the checks confirm)."""
    det = make()
    det.process(data.x[:stop], data.codes[:stop], data.t[:stop])
    return det


def rtnb_frame(make: Callable[[], Any], frames: list[pd.DataFrame]) -> np.ndarray:
    """The public API: ``sdf.detect(det, on="cpu", by="host")`` fed pandas batches."""
    sdf = rtnb.StreamingFrame(example=EXAMPLE, time="timestamp")
    scores: list[np.ndarray] = []
    sdf.detect(make(), on="cpu", by="host").sink(
        lambda b: scores.append(b["score"].to_numpy()))
    for f in frames:
        sdf.emit(f)
    sdf.close()
    return np.concatenate(scores) if scores else np.zeros(0)


def kernel_compile_seconds() -> dict[str, Any]:
    """The numba kernels (every detector's: ``rtnb.detect._kernels.KERNELS``): the first call
    in this process (read from numba's cache, or compiled when there is none), then a cold
    compile in a fresh process whose cache directory is empty (``NUMBA_CACHE_DIR``)."""
    from rtnb.detect import _kernels

    first = _kernels.warm_up()
    cached = all(sum(k.stats.cache_hits.values()) > 0 for k in _kernels.KERNELS)
    cold: float | None = None
    with tempfile.TemporaryDirectory() as empty:
        proc = subprocess.run(
            [sys.executable, "-c", "from rtnb.detect import _kernels; print(_kernels.warm_up())"],
            env={**os.environ, "NUMBA_CACHE_DIR": empty}, capture_output=True, text=True,
            timeout=900, check=False)
        if proc.returncode == 0:
            cold = float(proc.stdout.split()[-1])
    return {"first": first, "cached": cached, "cold": cold,
            "error": None if cold is not None else proc.stderr.strip()[-300:]}


# -- River / plain Python, per event ---------------------------------------------------------
def river_available() -> str | None:
    """``None`` if River can be imported, else why not."""
    try:
        import river  # noqa: F401
    except ImportError:
        return "river not installed"
    return None


def river_version() -> str:
    import river

    return str(getattr(river, "__version__", "?"))


def zscore_model() -> tuple[Callable[[], Any], bool, str]:
    """A factory of one key's windowed mean/var model, whether it is time-based, and its name.

    ``utils.TimeRolling(stats.Var, period=5 min)`` (one queue; ``Var`` carries its ``Mean``);
    River versions without ``TimeRolling`` get a count-based ``Rolling`` holding the average
    number of rows a key has in 5 min.
    """
    from river import stats, utils

    if hasattr(utils, "TimeRolling"):
        return (lambda: utils.TimeRolling(stats.Var, period=WINDOW_TD), True,
                "utils.TimeRolling(stats.Var, period=timedelta(minutes=5))")
    rows = int(WINDOW_TD.total_seconds() * RATE_HZ / N_KEYS)
    return (lambda: utils.Rolling(stats.Var(), window_size=rows), False,
            f"utils.Rolling(stats.Var(), window_size={rows}) (count-based: this River has no "
            "TimeRolling; the window holds the average number of rows per key in 5 min)")


def river_zscore(data: Data) -> list[float]:
    new, timed, _ = zscore_model()
    models: dict[int, Any] = {}
    out = [math.nan] * data.n
    flags = [False] * data.n
    nan = math.nan
    for i, (x, k, t) in enumerate(zip(data.xs, data.ks, data.dts, strict=True)):
        m = models.get(k)
        if m is None:
            m = models[k] = new()
        var = m.obj  # stats.Var inside the rolling wrapper
        if var.n >= MIN_PERIODS:
            sd = var.get() ** 0.5
            z = (x - var.mean.get()) / sd if sd > 0 else nan
            out[i] = z
            flags[i] = abs(z) > Z_THRESHOLD
        if timed:
            m.update(x, t=t)
        else:
            m.update(x)
    return out


def python_zscore(data: Data) -> list[float]:
    """Context: rtnb's ZScore definition per event in plain Python (a deque of (t, x) per key
    and running sums; rows older than ``t - 5min`` leave before the row is scored)."""
    w = int(WINDOW_TD.total_seconds() * 1e9)
    state: dict[int, list[Any]] = {}
    out = [math.nan] * data.n
    flags = [False] * data.n
    for i, (x, k, t) in enumerate(zip(data.xs, data.ks, data.ts, strict=True)):
        st = state.get(k)
        if st is None:
            st = state[k] = [deque(), 0, 0.0, 0.0]
        q, c, s1, s2 = st
        lo = t - w
        while q and q[0][0] < lo:
            y = q.popleft()[1]
            c, s1, s2 = c - 1, s1 - y, s2 - y * y
        if c >= MIN_PERIODS:
            mean = s1 / c
            var = (s2 - c * mean * mean) / (c - 1)
            if var > 0:
                z = (x - mean) / var ** 0.5
                out[i] = z
                flags[i] = abs(z) > Z_THRESHOLD
        q.append((t, x))
        st[1], st[2], st[3] = c + 1, s1 + x, s2 + x * x
    return out


def river_ewma(data: Data) -> list[float]:
    from river import stats

    models: dict[int, list[Any]] = {}
    out = [math.nan] * data.n
    flags = [False] * data.n
    for i, (x, k) in enumerate(zip(data.xs, data.ks, strict=True)):
        st = models.get(k)
        if st is None:
            st = models[k] = [stats.EWMean(fading_factor=ALPHA),
                              stats.EWVar(fading_factor=ALPHA), 0]
        mean, var, n = st
        if n >= MIN_PERIODS:
            v = var.get()
            if v > 0:
                z = (x - mean.get()) / v ** 0.5
                out[i] = z
                flags[i] = abs(z) > Z_THRESHOLD
        mean.update(x)
        var.update(x)
        st[2] = n + 1
    return out


def river_sad(data: Data) -> list[float]:
    """Context: ``anomaly.StandardAbsoluteDeviation`` (|z| against the key's whole history)."""
    from river import anomaly

    models: dict[int, Any] = {}
    out = [math.nan] * data.n
    for i, (x, k) in enumerate(zip(data.xs, data.ks, strict=True)):
        m = models.get(k)
        if m is None:
            m = models[k] = anomaly.StandardAbsoluteDeviation()
        out[i] = m.score_one(None, x)
        m.learn_one(None, x)
    return out


def python_roc(data: Data) -> list[float]:
    last: dict[int, tuple[int, float]] = {}
    out = [math.nan] * data.n
    flags = [False] * data.n
    for i, (x, k, t) in enumerate(zip(data.xs, data.ks, data.ts, strict=True)):
        prev = last.get(k)
        if prev is not None and t != prev[0]:
            r = (x - prev[1]) / (t - prev[0]) * PER_NS
            out[i] = r
            flags[i] = abs(r) > ROC_THRESHOLD
        last[k] = (t, x)
    return out


def python_threshold(data: Data) -> list[float]:
    out = [math.nan] * data.n
    flags = [False] * data.n
    for i, x in enumerate(data.xs):
        s = x - UPPER
        out[i] = s
        flags[i] = s > 0
    return out


def python_mad(data: Data) -> list[float]:
    """rtnb's MAD definition per event in plain Python: per key a deque of (t, x) and a sorted
    list of the window's values (``bisect.insort``, rows older than ``t - 5min`` leave before
    the row is scored); the median is read off the sorted list and the MAD, the middle of the
    deviations ``|v - median|``, is selected in O(log n) from the two sorted runs of deviations
    below and above the median (no list of deviations is built)."""
    w = int(WINDOW_TD.total_seconds() * 1e9)
    state: dict[int, tuple[deque[tuple[int, float]], list[float]]] = {}
    out = [math.nan] * data.n
    flags = [False] * data.n

    def kth_dev(s: list[float], med: float, p: int, k: int) -> float:
        """k-th (1-based) smallest |v - med|: i from below (s[p-1], s[p-2], ...), k - i from
        above (s[p], s[p+1], ...); find the smallest i whose split is consistent."""
        lo, hi = max(0, k - (len(s) - p)), min(k, p)
        while lo < hi:
            i = (lo + hi) // 2
            if s[p + k - i - 1] - med > med - s[p - i - 1]:
                lo = i + 1
            else:
                hi = i
        cands = []
        if lo:
            cands.append(med - s[p - lo])
        if k - lo:
            cands.append(s[p + k - lo - 1] - med)
        return max(cands)

    for i, (x, k, t) in enumerate(zip(data.xs, data.ks, data.ts, strict=True)):
        st = state.get(k)
        if st is None:
            st = state[k] = (deque(), [])
        q, s = st
        lo = t - w
        while q and q[0][0] < lo:
            del s[bisect.bisect_left(s, q.popleft()[1])]
        n = len(s)
        if n >= MIN_PERIODS:
            h = n // 2
            med = s[h] if n % 2 else (s[h - 1] + s[h]) / 2
            p = bisect.bisect_left(s, med)
            mad = kth_dev(s, med, p, h + 1) if n % 2 else \
                (kth_dev(s, med, p, h) + kth_dev(s, med, p, h + 1)) / 2
            dev = abs(x - med)
            if mad > 0:
                z = dev / (1.4826 * mad)
                out[i] = z
                flags[i] = z > MAD_THRESHOLD
        q.append((t, x))
        bisect.insort(s, x)
    return out


FLAG: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "ZScore": lambda s: np.abs(s) > Z_THRESHOLD,
    "EWMA": lambda s: np.abs(s) > Z_THRESHOLD,
    "RateOfChange": lambda s: np.abs(s) > ROC_THRESHOLD,
    "Threshold": lambda s: s > 0,
    "MAD": lambda s: s > MAD_THRESHOLD,
}

PER_EVENT: dict[str, tuple[str, Callable[[Data], list[float]]]] = {
    "ZScore": ("River", river_zscore),
    "EWMA": ("River", river_ewma),
    "RateOfChange": ("plain Python", python_roc),
    "Threshold": ("plain Python", python_threshold),
    "MAD": ("plain Python", python_mad),
}


# -- timing ----------------------------------------------------------------------------------
@dataclass
class Cell:
    detector: str
    contender: str
    batch: int | None
    events: int
    times: list[float] = field(default_factory=list)
    status: str = ""
    result: Any = None  # first run's scores (kept for the checks)

    @property
    def seconds(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def rate(self) -> float | None:
        return self.events / self.seconds if self.seconds else None


@dataclass
class Job:
    cell: Cell
    fn: Callable[..., Any]
    setup: Callable[[], tuple[Any, ...]] = tuple  # untimed; its result is passed to ``fn``


def run_interleaved(jobs: list[Job], repeats: int, budget_s: float,
                    log: Callable[[str], None]) -> None:
    """Rounds: every round runs each live job once; a job stops after ``repeats`` runs or once
    its runs took ``budget_s`` (slow cells get fewer runs). The first run's output is kept."""
    live = list(jobs)
    while live:
        for job in list(live):
            cell = job.cell
            gc.collect()
            try:
                args = job.setup()
                t = time.perf_counter()
                result = job.fn(*args)
                cell.times.append(time.perf_counter() - t)
            except Exception as exc:
                cell.status = f"error: {type(exc).__name__}: {exc}"
                log(f"  {cell.detector} {cell.contender}: {cell.status}")
                log(traceback.format_exc())
                live.remove(job)
                continue
            if cell.result is None:
                cell.result = np.asarray(result, dtype=np.float64)
            del result
            if len(cell.times) >= repeats or sum(cell.times) > budget_s:
                live.remove(job)
                assert cell.rate is not None
                log(f"  {cell.detector:<12} {cell.contender:<42} {cell.batch or '-':>6}  "
                    f"{cell.rate / 1e6:7.3f} M ev/s  median of {len(cell.times)}")


# -- checks ----------------------------------------------------------------------------------
def max_abs_diff(a: np.ndarray, b: np.ndarray) -> tuple[float, int, int]:
    """(max |a - b| where both are finite, rows finite in one only, rows compared)."""
    fa, fb = np.isfinite(a), np.isfinite(b)
    both = fa & fb
    diff = float(np.max(np.abs(a[both] - b[both]))) if both.any() else 0.0
    return diff, int(np.count_nonzero(fa != fb)), int(np.count_nonzero(both))


def pandas_zscore(data: Data, closed: str) -> np.ndarray:
    """``(x - mean) / std`` of the key's rolling 5 min window, per row, in input order.

    ``closed="left"``: the window ``[t - 5min, t)`` before the row (rtnb's definition).
    ``closed="right"``: the window ``(t' - 5min, t']`` ending at the key's previous row t'
    (what River's ``TimeRolling`` holds before it is updated with the row).
    """
    g = data.frame.groupby("host").rolling(WINDOW, on="timestamp", closed=closed,
                                           min_periods=MIN_PERIODS)["cpu"]
    when = pd.DatetimeIndex(data.frame["timestamp"])  # unique: identifies the row
    mean_a = g.mean().droplevel(0).reindex(when).to_numpy()
    std_a = g.std().droplevel(0).reindex(when).to_numpy()
    if closed == "right":  # the state before the row = the window at the key's previous row
        shifted = pd.DataFrame({"k": data.codes, "m": mean_a, "s": std_a}).groupby("k").shift(1)
        mean_a, std_a = shifted["m"].to_numpy(), shifted["s"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return (data.x - mean_a) / std_a


def fmt_rate(r: float | None) -> str:
    if not r:
        return "-"
    return f"{r / 1e6:.2f} M" if r >= 1e6 else f"{r / 1e3:.0f} k"


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return "-"
    return f"{r:.1f}x" if r >= 1 else f"{r:.2f}x (1/{1 / r:.1f})"


# -- profile ---------------------------------------------------------------------------------
def profile_process(make: Callable[[], Any], data: Data, batch: int, start: int,
                    warmed: Any) -> list[str]:
    """pyinstrument over ``rtnb_process`` (condensed call tree, as markdown lines)."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return ["pyinstrument is not installed: `.venv/bin/pip install pyinstrument`."]
    det = copy.deepcopy(warmed)
    profiler = Profiler(interval=0.0005)
    gc.collect()
    profiler.start()
    rtnb_process(make, data, batch, start, det)
    profiler.stop()
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    tree = [ln for ln in text.splitlines()
            if ln.strip() and not ln.lstrip().startswith(("_", "/", "Profile at"))]
    return ["```", *tree[:32], "```"]


# -- run -------------------------------------------------------------------------------------
NOTES = """\
* **Equivalents.** ZScore: River has no windowed z-score model, so the per-event loop reads a
  key's `{zmodel}` (mean and sample variance, ddof=1, one queue per key), computes
  `z = (x - mean) / std` when the window holds >= {mp} rows, flags `|z| > 3`, then calls
  `update(x, t=t)`. EWMA: `stats.EWMean(fading_factor={alpha})` and
  `stats.EWVar(fading_factor={alpha})` (Rust-backed in River >= 0.22) plus a row counter per
  key, the same recursion as rtnb's EWMA (`mean = (1 - a) mean + a x`, first value seeds the
  mean; River's `EWVar` = EW mean of x^2 minus the square of the EW mean, algebraically equal
  to rtnb's `var = (1 - a)(var + a d^2)`); rtnb runs that recursion per row in a compiled
  loop (numba, `rtnb/detect/_kernels.py`) over each batch's rows in arrival order, every key
  at once, carrying each key's (mean, var, n) in arrays by key slot. RateOfChange and
  Threshold: River has no model for a
  per-key rate or a fixed bound (`anomaly.ThresholdFilter` wraps another detector's score), so
  the per-event side is plain Python: a dict of (time, value) per key and `(x - x') / (t - t')
  * 1 s`; a comparison `x - {upper:g}` per event. MAD: River has no windowed MAD (its
  `stats.MAD` is an approximate median of deviations from a running P-square median over the
  key's whole history, and `stats.RollingQuantile` is count-based and cannot give the median of
  deviations from the *current* median), so the per-event side is plain Python with rtnb's
  definition: per key a deque of (t, x) and a sorted list (`bisect.insort`, expired rows
  removed before scoring), median from the list, MAD selected in O(log n) from the deviations
  below and above the median. rtnb's MAD runs the same algorithm per row, compiled with numba
  (`rtnb/detect/_kernels.py`, exact: equal to the former pure-Python loop and to pandas):
  per key the window's values stay sorted across batches in blocks of ~2 sqrt(window) values
  (a row in or out shifts one block), the median and the MAD's neighbours are read by rank,
  and the MAD's split search starts from the previous row's answer; every key's window lives
  in shared arrays between batches (one compiled call per batch over all its rows). Every
  per-event loop also stores the score and the flag per row, as
  rtnb returns both.
* **Why ZScore scores differ at the window edge.** rtnb scores a row at time t against
  `[t - 5min, t)`, as pandas `rolling("5min", closed="left")`. River's `TimeRolling` evicts
  only inside `update`, so before the row it still holds the window of the key's previous row,
  `(t' - 5min, t']`: rows between t' - 5 min and t - 5 min are in River's window and not in
  rtnb's (one row on average). Both are checked exactly against pandas with their own
  definition (rows below); the rtnb - River difference is that edge effect, not an error.
* **What River's ZScore time is.** `TimeRolling.update` drops expired rows by slicing its two
  lists (`self._timestamps[i:]`), a copy of the key's whole window, at nearly every event once
  the window is full: O(window) per event (~{per_window:,.0f} rows here). Before the window
  fills (the quick run) it is several times faster.
* **Context rows (not targets).** "plain Python per event (deque, running sums)" is rtnb's
  ZScore definition hand-written per event (a `collections.deque` of (t, x) per key, rows
  older than t - 5 min popped before scoring, running count/sum/sum of squares): what a
  careful per-event implementation costs without River's `TimeRolling`; its scores equal
  rtnb's (checked). `river.anomaly.StandardAbsoluteDeviation` is River's only z-score-like
  anomaly detector (`score_one` then `learn_one`, one per key); its mean and variance cover
  the key's whole history (no window), so it is timed but not compared.
* **Data.** Event time ~{rate:,} events/s over {keys} keys: ~{per_key:.0f} rows per key per
  second, ~{per_window:,.0f} rows per key in a 5 min window.
"""


def run(quick: bool, log: Callable[[str], None]) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Run the detector benchmark; return (markdown lines, target rows)."""
    n = N_QUICK if quick else N_FULL
    repeats = 3
    budget_s = 5.0 if quick else 20.0
    log(f"detector benchmark: generating {n:,} events ...")
    data = make_data(n)
    frames = [data.frame.iloc[i:i + FRAME_BATCH] for i in range(0, n, FRAME_BATCH)]
    tail = n - int(n * TAIL_SHARE)  # the 1,000-row cells time rows [tail, n) after a warm-up
    why_no_river = river_available()
    if why_no_river is not None:
        log(f"  {why_no_river}: River rows are n/a")

    log("kernels (EWMA, RateOfChange, windowed detectors): warm-up (numba) ...")
    jit = kernel_compile_seconds()
    log(f"  first call {jit['first']:.2f} s ("
        + ("read from numba's cache" if jit["cached"] else "compiled") + "); cold compile "
        + (f"{jit['cold']:.2f} s" if jit["cold"] is not None else f"failed: {jit['error']}"))

    cells: dict[str, list[Cell]] = {}
    warmed: dict[str, Any] = {}
    for name, make in DETECTORS.items():
        log(f"{name} ...")
        warmed[name] = warm(make, data, tail)
        w = warmed[name]
        jobs = [
            Job(Cell(name, "rtnb process", TARGET_BATCH, n),
                lambda make=make: rtnb_process(make, data, TARGET_BATCH)),
            Job(Cell(name, "rtnb StreamingFrame.detect", FRAME_BATCH, n),
                lambda make=make: rtnb_frame(make, frames)),
            Job(Cell(name, f"rtnb process, last {n - tail:,} events", SMALL_BATCH, n - tail),
                lambda det, make=make: rtnb_process(make, data, SMALL_BATCH, tail, det),
                setup=lambda w=w: (copy.deepcopy(w),)),
        ]
        who, loop = PER_EVENT[name]
        if who == "plain Python" or why_no_river is None:
            jobs.append(Job(Cell(name, f"{who} per event", None, n),
                            lambda loop=loop: loop(data)))
        if name == "ZScore":
            jobs.append(Job(Cell(name, "plain Python per event (deque, running sums)", None, n),
                            lambda: python_zscore(data)))
        if name == "ZScore" and why_no_river is None:
            jobs.append(Job(Cell(name, "River anomaly.StandardAbsoluteDeviation", None, n),
                            lambda: river_sad(data)))
        run_interleaved(jobs, repeats, budget_s, log)
        cells[name] = [j.cell for j in jobs]

    log("checks ...")
    md, targets = report(data, cells, why_no_river, tail, jit)
    log("profile ...")
    md += ["### Profiles (pyinstrument)", "",
           "Seconds per function, nested; `[self]` is time in that function's own lines (the "
           "numpy calls it makes one by one, per key).", ""]
    for name in ("ZScore", "EWMA"):
        for b in (TARGET_BATCH, SMALL_BATCH):
            md += [f"rtnb {name} `process`, {b:,}-row batches, last {n - tail:,} events "
                   f"(state warmed on the first {tail:,}):", "",
                   *profile_process(DETECTORS[name], data, b, tail, warmed[name]), ""]
    return md, targets


def report(data: Data, cells: dict[str, list[Cell]], why_no_river: str | None,
           tail: int, jit: dict[str, Any]) -> tuple[list[str], list[tuple[str, str, str]]]:
    n = data.n
    zmodel = zscore_model()[2] if why_no_river is None else "(River not installed)"
    md = [f"## {TITLE}", "",
          f"{n:,} events, {N_KEYS} keys, ~{RATE_HZ:,} events/s of event time "
          f"({(data.t[-1] - data.t[0]) / 60e9:.1f} min); rtnb `process` on numpy batches of "
          f"{TARGET_BATCH:,} rows and `StreamingFrame.detect` on {FRAME_BATCH:,}-row pandas "
          f"batches over all events; `process` on {SMALL_BATCH:,}-row batches over the last "
          f"{n - tail:,} events only, from a copy of the state after the first {tail:,} "
          "(steady state, and it bounds the run time); "
          + (f"River {river_version()}" if why_no_river is None else why_no_river)
          + ". Events/s are medians of interleaved runs (slow cells get fewer runs: see "
          "the per-detector tables)."
          + (" This run spans less than the 5 min ZScore window, so no row ever leaves it."
             if data.t[-1] - data.t[0] < WINDOW_TD.total_seconds() * 1e9 else ""), ""]
    targets: list[tuple[str, str, str]] = []
    summary = [f"| detector | rtnb process {TARGET_BATCH // 1000}k "
               f"| rtnb StreamingFrame {FRAME_BATCH // 1000}k "
               f"| rtnb process {SMALL_BATCH // 1000}k (tail) | per event "
               f"| rtnb process {TARGET_BATCH // 1000}k / per event "
               f"| StreamingFrame / per event | process {SMALL_BATCH // 1000}k / per event "
               "| scores: rtnb vs per event |",
               "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    detail: list[str] = []
    for name, row in cells.items():
        by = {c.contender: c for c in row}
        base = by["rtnb process"]
        frame = by["rtnb StreamingFrame.detect"]
        small = by[f"rtnb process, last {n - tail:,} events"]
        who = PER_EVENT[name][0]
        ev = by.get(f"{who} per event")

        def ratio(c: Cell, ev: Cell | None = ev) -> float | None:
            if ev is None or not c.rate or not ev.rate:
                return None
            return c.rate / ev.rate

        checks: list[str] = []
        if base.result is not None:
            parts = []
            if frame.result is not None:
                d, m, _ = max_abs_diff(frame.result, base.result)
                parts.append(f"StreamingFrame vs `process` {TARGET_BATCH:,}: max abs diff "
                             f"{d:.2g}, NaN mismatches {m}")
            if small.result is not None:
                d, m, _ = max_abs_diff(small.result, base.result[tail:])
                parts.append(f"`process` {SMALL_BATCH:,} (warmed copy) vs {TARGET_BATCH:,} on "
                             f"the last {n - tail:,} rows: max abs diff {d:.2g}, NaN "
                             f"mismatches {m}")
            checks += parts
        agree = "-"
        if ev is not None and ev.result is not None and base.result is not None:
            d, m, both = max_abs_diff(base.result, ev.result)
            flags = int(np.count_nonzero(FLAG[name](base.result) != FLAG[name](ev.result)))
            agree = (f"max abs diff {d:.2g} over {both:,} rows; {m:,} rows scored by one side "
                     f"only; flags differ on {flags:,} rows")
            if name == "ZScore":
                dl, ml, _ = max_abs_diff(base.result, pandas_zscore(data, "left"))
                dr, mr, _ = max_abs_diff(ev.result, pandas_zscore(data, "right"))
                checks.append(f"rtnb vs pandas `groupby('host').rolling('5min', "
                              f"closed='left')`: max abs diff {dl:.2g}, NaN mismatches {ml}")
                checks.append(f"River vs pandas `rolling('5min', closed='right')` at the "
                              f"key's previous row: max abs diff {dr:.2g}, NaN mismatches {mr}")
                checks.append(f"rtnb vs River: {agree} (window edge: see the notes)")
                deq = by.get("plain Python per event (deque, running sums)")
                if deq is not None and deq.result is not None:
                    dd, md_, _ = max_abs_diff(base.result, deq.result)
                    checks.append(f"rtnb vs plain Python deque (same window as rtnb): max abs "
                                  f"diff {dd:.2g}, NaN mismatches {md_}")

        summary.append(
            f"| {name} | {fmt_rate(base.rate)} | {fmt_rate(frame.rate)} "
            f"| {fmt_rate(small.rate)} | "
            + (f"{fmt_rate(ev.rate)} ({who})" if ev is not None else f"n/a ({why_no_river})")
            + f" | {fmt_ratio(ratio(base))} | {fmt_ratio(ratio(frame))} "
            f"| {fmt_ratio(ratio(small))} | {agree} |")

        detail += [f"### {name}", "", f"rtnb: `{RTNB_CALL[name]}`", "",
                   "| contender | batch rows | events timed | events/s | ratio to per event "
                   "| runs (median of) |",
                   "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for c in row:
            detail.append(f"| {c.contender} | {f'{c.batch:,}' if c.batch else 'per event'} "
                          f"| {c.events:,} | {c.status or fmt_rate(c.rate)} "
                          f"| {fmt_ratio(ratio(c))} | {len(c.times)} |")
        if name in ("MAD", "EWMA"):
            checks.append(
                f"compiled kernels (numba: EWMA, RateOfChange, windowed detectors, together), "
                f"not in the timed runs: "
                f"first call in this run "
                f"{jit['first']:.2f} s ("
                + ("read from numba's cache" if jit["cached"] else "compiled") + "); cold "
                "compile in a fresh process with an empty cache "
                + (f"{jit['cold']:.1f} s" if jit["cold"] is not None else
                   f"failed: {jit['error']}"))
        detail += ["", *[f"* {c}" for c in checks], ""]

        label = (f"{name}: rtnb process ({TARGET_BATCH // 1000}k batches) >= "
                 f"{TARGET_RATIO:g}x {who} per event")
        r = ratio(base)
        if ev is None:
            targets.append((label, f"n/a ({why_no_river})", "n/a"))
        elif r is None:
            targets.append((label, base.status or ev.status or "?", "FAIL"))
        else:
            rf = ratio(frame)
            targets.append((label, f"{r:.2g}x (StreamingFrame {rf:.2g}x)" if rf else
                            f"{r:.2g}x", "PASS" if r >= TARGET_RATIO else "FAIL"))

    md += [*summary, "", *detail, "### Notes", "",
           NOTES.format(zmodel=zmodel, mp=MIN_PERIODS, alpha=ALPHA, upper=UPPER,
                        rate=RATE_HZ, keys=N_KEYS, per_key=RATE_HZ / N_KEYS,
                        per_window=WINDOW_TD.total_seconds() * RATE_HZ / N_KEYS)]
    return md, targets
