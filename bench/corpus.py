"""An evaluation corpus of our own (issue 17): generated labelled series plus the bundled day.

``make_corpus(seed)`` returns ``(data, labels)``:

* ``data``: columns ``time`` (datetime64[ns]), ``series`` (str), ``value`` (float64), one row
  per sample, sorted by series then time;
* ``labels``: ``series``, ``start``, ``end`` (NAB-style windows) and ``kind`` (which anomaly).

Every series is drawn from its own ``numpy`` generator (``SeedSequence(seed).spawn``), so the
corpus is deterministic and series ``i`` is the same whatever ``n_series`` is (``--quick``
runs are a prefix of the full corpus). A series is:

* a sampling step (1 s, 1 min, 5 min, 1 h) and a length of 2,000-12,000 rows;
* a **base** (one small function each): white noise, AR(1), mean-reverting random walk,
  seasonal (daily, plus weekly when hourly; a job cycle of 1-15 min at 1 s), integer counts
  with a daily profile, mostly idle (many zeros, bursts), heavy-tailed noise with harmless
  unlabelled outliers, slow trend;
* a value scale from 1e-3 to 1e6 and an offset (some negative); counts and some others are
  quantised;
* 0-3 **anomalies** (one small function each), none in the first 15 % of rows (NAB's
  probationary period): spike, dip, level shift (lasting), variance change, slow drift that
  ends in a break, seasonality break (a period flat or phase-shifted), flatline (stuck
  sensor), dropout (to 0 for a while), frequency change.

Labels follow NAB: for each series the window is 10 % of its length divided by its number of
anomalies (in rows), centred on the anomaly's onset, and converted to times.

``bundled_day()`` gives the same shape for rtnb's bundled 24 h (``rtnb.datasets``): one
series per host and metric (``"web-03/cpu"``), windows from ``incidents()`` (see there).

Run ``python bench/corpus.py`` for a summary; through ``bench/run.py`` it adds a short
description of the corpus to the results.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

TITLE = "Evaluation corpus for the anomaly benchmark (issue 17)"

START = pd.Timestamp("2026-01-01")
"""All series start on this day (plus a few hours at most), so they can be replayed together."""

STEPS: dict[str, pd.Timedelta] = {
    "1s": pd.Timedelta(seconds=1),
    "1min": pd.Timedelta(minutes=1),
    "5min": pd.Timedelta(minutes=5),
    "1h": pd.Timedelta(hours=1),
}
PROBATION = 0.15
"""NAB's probationary period: no anomaly (and no label) in the first 15 % of a series."""
WINDOW_FRACTION = 0.10
"""NAB's window size: 10 % of the series length, shared between its anomalies."""

DAY, WEEK = 86_400.0, 7 * 86_400.0

Rng = np.random.Generator
Floats = np.ndarray[Any, np.dtype[np.float64]]


@dataclass
class Parts:
    """A series under construction, in units of its short-term noise (``sd``).

    ``value = level + season + noise`` before scaling; anomalies edit the parts.
    """

    t: Floats                      # seconds since START, per row
    step: float                    # seconds per row
    level: Floats
    season: Floats
    noise: Floats
    sd: float = 1.0                # typical short-term noise, for sizing anomalies
    season_fn: Callable[[Floats], Floats] | None = None   # the seasonal shape, on seconds
    period: float = 0.0            # seconds; 0 = not seasonal
    quantum: float = 0.0           # > 0: values are multiples of it (after scaling)
    idle: bool = False             # mostly zeros
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.t)

    def compose(self) -> Floats:
        return self.level + self.season + self.noise


# --------------------------------------------------------------------------------- helpers

def _ar1(n: int, phi: float, rng: Rng) -> Floats:
    """AR(1) noise with unit marginal variance."""
    e = rng.standard_normal(n) * np.sqrt(1 - phi * phi)
    out = np.empty(n)
    prev = rng.standard_normal()
    for i in range(n):
        prev = phi * prev + e[i]
        out[i] = prev
    return out


def _periodic(rng: Rng, period: float) -> Callable[[Floats], Floats]:
    """A smooth periodic shape (two harmonics, unit-ish amplitude) of ``period`` seconds."""
    a2, p1, p2 = rng.uniform(0.2, 0.6), rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi)

    def shape(t: Floats) -> Floats:
        w = 2 * np.pi * t / period
        return np.sin(w + p1) + a2 * np.sin(2 * w + p2)

    return shape


def _daily(rng: Rng, step: float) -> tuple[Callable[[Floats], Floats], float]:
    """Daily (and weekly when hourly) profile; at 1 s a job cycle of 1-15 min instead."""
    if step < 60:
        period = float(rng.choice([60, 120, 300, 600, 900]))
        return _periodic(rng, period), period
    day = _periodic(rng, DAY)
    if step < 3600:
        return day, DAY
    week = _periodic(rng, WEEK)
    w = rng.uniform(0.3, 0.6)

    def shape(t: Floats) -> Floats:
        return day(t) + w * week(t)

    return shape, DAY


# ----------------------------------------------------------------------------------- bases

def base_white(t: Floats, step: float, rng: Rng) -> Parts:
    """Gaussian white noise around a constant."""
    n = len(t)
    return Parts(t, step, np.zeros(n), np.zeros(n), rng.standard_normal(n))


def base_ar1(t: Floats, step: float, rng: Rng) -> Parts:
    """Autocorrelated noise (AR(1), phi 0.5-0.95)."""
    n = len(t)
    return Parts(t, step, np.zeros(n), np.zeros(n), _ar1(n, rng.uniform(0.5, 0.95), rng))


def base_walk(t: Floats, step: float, rng: Rng) -> Parts:
    """A slowly mean-reverting random walk (OU, phi 0.99-0.999) plus white noise."""
    n = len(t)
    phi = rng.uniform(0.99, 0.999)
    wander = _ar1(n, phi, rng) * rng.uniform(2, 5)
    return Parts(t, step, wander, np.zeros(n), rng.standard_normal(n))


def base_seasonal(t: Floats, step: float, rng: Rng) -> Parts:
    """Daily (weekly too when hourly) seasonality, amplitude 3-8 sd, AR(1) noise."""
    n = len(t)
    shape, period = _daily(rng, step)
    amp = rng.uniform(3, 8)

    def fn(s: Floats) -> Floats:
        return amp * shape(s)

    return Parts(t, step, np.zeros(n), fn(t), _ar1(n, rng.uniform(0.3, 0.8), rng),
                 season_fn=fn, period=period)


def base_counts(t: Floats, step: float, rng: Rng) -> Parts:
    """Integer counts (Poisson) around a daily profile: requests, errors, jobs."""
    n = len(t)
    shape, period = _daily(rng, step)
    mean = rng.uniform(5, 60)
    amp = rng.uniform(0.3, 0.7) * mean

    def fn(s: Floats) -> Floats:
        return amp * shape(s) / 1.6

    lam = np.maximum(mean + fn(t), 0.5)
    counts = rng.poisson(lam).astype(float)
    return Parts(t, step, np.full(n, mean), fn(t), counts - mean - fn(t),
                 sd=float(np.sqrt(mean)), season_fn=fn, period=period, quantum=1.0)


def base_idle(t: Floats, step: float, rng: Rng) -> Parts:
    """Mostly idle: zeros with short bursts (a queue, a batch job, an error counter)."""
    n = len(t)
    active = rng.random(n) < rng.uniform(0.02, 0.12)
    bursts = np.where(active, rng.lognormal(1.0, 0.6, n).round() + 1, 0.0)
    sd = float(max(bursts.std(), 1.0))
    return Parts(t, step, np.zeros(n), np.zeros(n), bursts, sd=sd, quantum=1.0, idle=True)


def base_heavy(t: Floats, step: float, rng: Rng) -> Parts:
    """Heavy-tailed noise (Student t, 3-5 dof) with rare harmless outliers, not labelled."""
    n = len(t)
    df = rng.uniform(3, 5)
    noise = rng.standard_t(df, n) / np.sqrt(df / (df - 2))
    k = max(1, n // 3000)
    at = rng.integers(0, n, k)
    noise[at] += rng.choice([-1, 1], k) * rng.uniform(5, 8, k)
    return Parts(t, step, np.zeros(n), np.zeros(n), noise)


def base_trend(t: Floats, step: float, rng: Rng) -> Parts:
    """A slow trend (3-10 sd over the series, either way) with AR(1) noise."""
    n = len(t)
    rise = rng.uniform(3, 10) * rng.choice([-1, 1])
    level = rise * np.linspace(0, 1, n) ** rng.uniform(0.7, 1.5)
    return Parts(t, step, level, np.zeros(n), _ar1(n, rng.uniform(0.2, 0.7), rng))


BASES: dict[str, Callable[[Floats, float, Rng], Parts]] = {
    "white": base_white,
    "ar1": base_ar1,
    "walk": base_walk,
    "seasonal": base_seasonal,
    "counts": base_counts,
    "idle": base_idle,
    "heavy": base_heavy,
    "trend": base_trend,
}


# ------------------------------------------------------------------------------- anomalies
# Each takes the parts, the onset row and the generator, edits the parts in place. The label
# window is centred on the onset; ``room`` is how many rows after it the anomaly may use.

def anomaly_spike(p: Parts, at: int, room: int, rng: Rng) -> None:
    """One to three rows far above the rest (6-12 sd)."""
    k = int(rng.integers(1, 4))
    p.noise[at:at + k] += rng.uniform(6, 12) * p.sd


def anomaly_dip(p: Parts, at: int, room: int, rng: Rng) -> None:
    """One to three rows far below the rest (6-12 sd)."""
    k = int(rng.integers(1, 4))
    p.noise[at:at + k] -= rng.uniform(6, 12) * p.sd


def anomaly_level_shift(p: Parts, at: int, room: int, rng: Rng) -> None:
    """The level steps by 3-6 sd and stays there."""
    p.level[at:] += rng.uniform(3, 6) * p.sd * rng.choice([-1, 1])


def anomaly_variance(p: Parts, at: int, room: int, rng: Rng) -> None:
    """The noise grows 3-5 times for a while (or for good)."""
    end = at + int(rng.integers(room // 2, room + 1)) if rng.random() < 0.6 else p.n
    p.noise[at:end] *= rng.uniform(3, 5)


def anomaly_drift(p: Parts, at: int, room: int, rng: Rng) -> None:
    """A slow drift of 4-8 sd that ends in a break (back to normal: a leak, then a restart)."""
    length = int(rng.integers(max(room // 3, 5), max(room * 2 // 3, 6) + 1))
    ramp = np.linspace(0, 1, length) * rng.uniform(4, 8) * p.sd * rng.choice([-1, 1])
    p.level[at:at + length] += ramp[: len(p.level[at:at + length])]


def anomaly_seasonality(p: Parts, at: int, room: int, rng: Rng) -> None:
    """One period looks wrong: flat (a holiday, a stuck job) or shifted by half a period."""
    assert p.season_fn is not None
    end = min(p.n, at + max(int(p.period / p.step), 1))
    if rng.random() < 0.5:
        p.season[at:end] = p.season[at:end].mean() if end > at else 0.0
        p.notes.append("flat")
    else:
        p.season[at:end] = p.season_fn(p.t[at:end] + p.period / 2)
        p.notes.append("phase")


def anomaly_flatline(p: Parts, at: int, room: int, rng: Rng) -> None:
    """A stuck sensor: the value repeats for a while."""
    end = at + int(rng.integers(max(room // 2, 3), room + 1))
    stuck = p.compose()[at]
    if p.idle and stuck == 0:
        stuck = float(np.max(p.noise))    # an idle series stuck busy
    p.level[at:end], p.season[at:end], p.noise[at:end] = stuck, 0.0, 0.0


def anomaly_dropout(p: Parts, at: int, room: int, rng: Rng) -> None:
    """The value drops to 0 for a while (applied after scaling: 0 in the data's units)."""
    p.notes.append(f"dropout:{at}:{at + int(rng.integers(max(room // 3, 3), room + 1))}")


def anomaly_frequency(p: Parts, at: int, room: int, rng: Rng) -> None:
    """The seasonal cycle runs 2-4 times faster for a while."""
    assert p.season_fn is not None
    end = min(p.n, at + max(int(rng.integers(room // 2, room + 1)), int(2 * p.period / p.step)))
    f = rng.uniform(2, 4)
    t0 = p.t[at]
    p.season[at:end] = p.season_fn(t0 + (p.t[at:end] - t0) * f)


ANOMALIES: dict[str, Callable[[Parts, int, int, Rng], None]] = {
    "spike": anomaly_spike,
    "dip": anomaly_dip,
    "level_shift": anomaly_level_shift,
    "variance": anomaly_variance,
    "drift": anomaly_drift,
    "seasonality": anomaly_seasonality,
    "flatline": anomaly_flatline,
    "dropout": anomaly_dropout,
    "frequency": anomaly_frequency,
}


RESTRICTED = ("seasonality", "frequency", "dropout")
"""Anomaly kinds only some series can take: preferred when a series can."""


def _fits(kind: str, base: str, p: Parts, offset_sd: float) -> bool:
    """Whether an anomaly kind makes sense on a series."""
    if kind in ("seasonality", "frequency"):
        return p.season_fn is not None and p.period / p.step <= p.n * 0.2
    if kind == "dropout":
        return not p.idle and abs(offset_sd) > 6
    if p.idle:
        return kind in ("spike", "level_shift", "variance", "flatline")
    return True


# ---------------------------------------------------------------------------------- corpus

@dataclass(frozen=True)
class Series:
    """One generated series: rows, labels and what went into it."""

    name: str
    data: pd.DataFrame
    labels: pd.DataFrame


def _onsets(n: int, k: int, rng: Rng) -> tuple[list[int], int]:
    """``k`` onsets after the probationary period, windows apart; and the window length."""
    if k == 0:
        return [], 0
    w = round(WINDOW_FRACTION * n / k)
    lo, hi = int(np.ceil(PROBATION * n)) + w // 2 + 1, n - w - 1
    slot = (hi - lo) // k
    return [lo + i * slot + int(rng.integers(0, max(slot - w, 1))) for i in range(k)], w


def make_series(i: int, seed: int, used: Counter[str]) -> Series:
    """Series ``i`` of the corpus; ``used`` counts anomaly kinds so far (all get covered)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
    base = list(BASES)[int(rng.integers(len(BASES)))] if i >= len(BASES) else \
        list(BASES)[(i * 3 + seed) % len(BASES)]
    rate = list(STEPS)[int(rng.integers(len(STEPS)))] if i >= len(BASES) else \
        list(STEPS)[i % len(STEPS)]
    step = STEPS[rate]
    n = int(rng.integers(2_000, 12_001))
    shift = pd.Timedelta(hours=int(rng.integers(0, 24))).floor(step)
    t0 = START + shift
    t = ((t0 - START).total_seconds() + np.arange(n) * step.total_seconds()).astype(float)
    p = BASES[base](t, step.total_seconds(), rng)

    scale = 10 ** rng.uniform(-3, 6)
    offset_sd = float(rng.choice(
        [rng.uniform(-40, -8), rng.uniform(8, 60), rng.uniform(-3, 3)], p=[0.25, 0.5, 0.25]))
    counts = bool(p.quantum)
    if counts:              # counts stay non-negative integers (maybe of a unit: 512 bytes)
        scale, offset_sd = float(rng.choice([1, 1, 5, 512])), 0.0
    elif rng.random() < 0.25:
        p.quantum = float(10 ** np.floor(np.log10(scale * p.sd)) / 10)   # a coarse sensor

    k = int(rng.choice([0, 1, 2, 3], p=[0.1, 0.35, 0.35, 0.2]))
    onsets, w = _onsets(n, k, rng)
    kinds: list[str] = []
    for at in onsets:
        fits = [a for a in ANOMALIES if _fits(a, base, p, offset_sd)]
        least = min(used[a] for a in fits)
        ties = [a for a in fits if used[a] == least]
        rare = [a for a in ties if a in RESTRICTED]    # kinds few series can take go first
        kind = str(rng.choice(rare or ties))
        used[kind] += 1
        kinds.append(kind)
        ANOMALIES[kind](p, at, w // 2, rng)

    value = offset_sd * p.sd * scale + p.compose() * scale
    for note in p.notes:
        if note.startswith("dropout:"):
            a, b = map(int, note.split(":")[1:])
            value[a:b] = 0.0
    if counts:
        value = np.maximum(value, 0.0)
    if p.quantum:
        value = np.round(value / p.quantum) * p.quantum
    name = f"s{i:02d}-{base}-{rate}"
    times = t0 + np.arange(n) * step
    data = pd.DataFrame({"time": pd.DatetimeIndex(times).astype("datetime64[ns]"),
                         "series": name, "value": value.astype(np.float64)})
    rows = [(at - w // 2, min(at - w // 2 + w - 1, n - 1)) for at in onsets]
    labels = pd.DataFrame({"series": [name] * k,
                           "start": pd.DatetimeIndex([times[a] for a, _ in rows],
                                                     dtype="datetime64[ns]"),
                           "end": pd.DatetimeIndex([times[b] for _, b in rows],
                                                   dtype="datetime64[ns]"),
                           "kind": kinds})
    return Series(name, data, labels)


def make_corpus(seed: int = 0, *, n_series: int = 48) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The generated corpus: ``(data, labels)``, deterministic for a seed.

    ``data``: ``time``, ``series``, ``value``, sorted by series then time; ``labels``:
    ``series``, ``start``, ``end``, ``kind`` (NAB windows, see the module docstring).
    """
    used: Counter[str] = Counter()
    made = [make_series(i, seed, used) for i in range(n_series)]
    data = pd.concat([s.data for s in made], ignore_index=True)
    labels = pd.concat([s.labels for s in made], ignore_index=True)
    data["series"] = data["series"].astype(str)
    labels["series"] = labels["series"].astype(str)
    return data, labels


# ----------------------------------------------------------------------------- bundled day

#: Which metrics of a host an incident kind of ``rtnb.datasets.incidents()`` shows in
#: (from the incidents' descriptions); an unknown kind labels all of them.
INCIDENT_METRICS: dict[str, tuple[str, ...]] = {
    "cpu_spike": ("cpu", "latency_ms"),          # "latency follows"
    "latency_degradation": ("latency_ms",),
    "host_silent": ("cpu", "latency_ms", "requests"),   # rows missing: values cannot see it
    "cpu_ramp": ("cpu",),
    "request_drop": ("requests", "cpu"),          # "requests near zero and cpu at idle"
    "latency_spike": ("latency_ms",),
}
METRICS = ("cpu", "latency_ms", "requests")


def bundled_day() -> tuple[pd.DataFrame, pd.DataFrame]:
    """rtnb's bundled 24 h as ``(data, labels)``: one series per host and metric.

    Series are named ``"<host>/<metric>"`` (``"web-03/cpu"``), 1 s sampling, 86,400 rows
    each (cache-02's are 300 fewer: it goes silent). Labels: for every incident, host and
    metric it shows in (``INCIDENT_METRICS``), a NAB window (10 % of the series' rows divided
    by its number of incidents, centred on the incident's start), widened when needed to
    cover the incident's own end. ``kind`` is the incident's kind.
    """
    from rtnb import datasets

    m = datasets.metrics()
    parts = []
    for host, rows in m.groupby("host", sort=True):     # "<host>/<metric>" sorts this way
        rows = rows.sort_values("timestamp", kind="stable")
        time = rows["timestamp"].to_numpy().astype("datetime64[ns]")
        for metric in sorted(METRICS):
            parts.append(pd.DataFrame({"time": time, "series": f"{host}/{metric}",
                                       "value": rows[metric].to_numpy(dtype=np.float64)}))
    data = pd.concat(parts, ignore_index=True)
    data["series"] = data["series"].astype(str)

    rows = []
    for inc in datasets.incidents().itertuples():
        for host in str(inc.host).split(";"):
            for metric in INCIDENT_METRICS.get(str(inc.kind), METRICS):
                rows.append((f"{host}/{metric}", pd.Timestamp(inc.start),
                             pd.Timestamp(inc.end), str(inc.kind)))
    raw = pd.DataFrame(rows, columns=["series", "onset", "until", "kind"])
    counts = data.groupby("series").size()
    span = data.groupby("series")["time"].agg(["min", "max"])
    step = pd.Timedelta(seconds=1)
    starts, ends = [], []
    for r in raw.itertuples():
        k = int((raw["series"] == r.series).sum())
        half = step * round(WINDOW_FRACTION * counts[r.series] / k / 2)
        lo, hi = span.loc[r.series, "min"], span.loc[r.series, "max"]
        starts.append(max(r.onset - half, lo))
        ends.append(min(max(r.onset + half, r.until), hi))
    labels = pd.DataFrame({"series": raw["series"].astype(str),
                           "start": pd.DatetimeIndex(starts, dtype="datetime64[ns]"),
                           "end": pd.DatetimeIndex(ends, dtype="datetime64[ns]"),
                           "kind": raw["kind"]})
    return data, labels.sort_values(["series", "start"], ignore_index=True)


# ------------------------------------------------------------------------------- summaries

def _step_name(step: pd.Timedelta) -> str:
    names = {v: k for k, v in STEPS.items()}
    return names.get(step, str(step))


def describe(data: pd.DataFrame, labels: pd.DataFrame) -> list[str]:
    """A markdown summary of a corpus: sizes, rates, scales and anomaly kinds."""
    g = data.groupby("series", sort=True)
    steps = g["time"].apply(lambda s: s.diff().median())
    spread = g["value"].std()
    kinds = Counter(labels["kind"]) if "kind" in labels else Counter()
    per = labels.groupby("series").size().reindex(g.size().index, fill_value=0)
    return [
        f"- {g.ngroups} series, {len(data):,} rows ({g.size().min():,}-{g.size().max():,} "
        f"per series), {len(labels)} labelled windows "
        f"({int((per == 0).sum())} series without an anomaly)",
        "- sampling: " + ", ".join(f"{_step_name(k)}: {v} series" for k, v in
                                   steps.value_counts().sort_index().items()),
        f"- value spread (std per series): {spread.min():.3g} to {spread.max():.3g}; "
        f"{int((g['value'].min() < 0).sum())} series with negative values",
        "- anomaly kinds: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())),
    ]


def run(quick: bool, log: Callable[[str], None]) -> tuple[list[str], list[Any]]:
    """``bench/run.py`` hook: describe the generated corpus (no targets)."""
    data, labels = make_corpus(0, n_series=12 if quick else 48)
    log(f"corpus: {data['series'].nunique()} series, {len(data):,} rows")
    return [f"## {TITLE}", "", "`bench/corpus.py`, seed 0 "
            "(scored by `bench/anomaly.py`):", "", *describe(data, labels), ""], []


if __name__ == "__main__":
    import time as _time

    began = _time.perf_counter()
    d, lab = make_corpus()
    print(f"generated in {_time.perf_counter() - began:.2f} s")
    print("\n".join(describe(d, lab)))
    print(lab.to_string(max_rows=200))
