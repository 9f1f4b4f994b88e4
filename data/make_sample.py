"""Generate the bundled sample dataset: 24 h of per-host server metrics with labelled incidents.

The output is fully determined by the seed, so running this script twice produces
byte-identical files::

    python data/make_sample.py                  # writes next to this script
    python data/make_sample.py --out-dir /tmp/x --seed 7

Two files are written:

``metrics.parquet``
    One row per host per second for 2026-01-05 (naive timestamps meaning UTC), sorted by
    ``(timestamp, host)``, with columns ``timestamp``, ``host``, ``cpu`` (percent),
    ``latency_ms`` and ``requests`` (requests per second).
``incidents.csv``
    The ground-truth incidents injected into the series, one per line, as half-open
    intervals ``[start, end)``.

The signal model is a daily activity profile (trough at 04:00, peak at 15:00) scaled per host
role, with AR(1) noise, Poisson request counts and log-normal latency that grows with CPU
utilisation. Everything is vectorised with numpy; generation takes a few seconds.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

START = pd.Timestamp("2026-01-05 00:00:00")
"""First timestamp of the dataset (naive, meaning UTC)."""
N_SECONDS = 24 * 3600
"""Length of the dataset in seconds (one sample per host per second)."""
DEFAULT_SEED = 20260105
"""Seed used for the bundled files."""
UNITS = {"cpu": "%", "latency_ms": "ms", "requests": "req/s"}
"""Units of the metric columns, kept in the Parquet file as pandas ``attrs["units"]``."""

HOSTS: tuple[str, ...] = (
    "batch-01",
    "batch-02",
    "cache-01",
    "cache-02",
    "db-01",
    "db-02",
    "web-01",
    "web-02",
    "web-03",
    "web-04",
    "web-05",
    "web-06",
)
"""Host names, in sorted order (the row order within one timestamp)."""

TROUGH_HOUR = 4.0
PEAK_HOUR = 15.0
BATCH_JOB = (1 * 3600, 3 * 3600)
"""Nightly batch job window on the ``batch-*`` hosts, seconds after midnight ``[start, end)``."""


@dataclass(frozen=True)
class Role:
    """Baseline behaviour shared by all hosts of one role.

    Parameters
    ----------
    cpu_idle
        CPU percent with no traffic.
    cpu_span
        Additional CPU percent at the daily peak load.
    req_peak
        Requests per second at the daily peak.
    load_floor
        Night-time load as a fraction of the peak load.
    latency_ms
        Median latency at low utilisation, in milliseconds.
    """

    cpu_idle: float
    cpu_span: float
    req_peak: float
    load_floor: float
    latency_ms: float


ROLES: dict[str, Role] = {
    "web": Role(cpu_idle=6.0, cpu_span=50.0, req_peak=130.0, load_floor=0.12, latency_ms=38.0),
    "db": Role(cpu_idle=10.0, cpu_span=40.0, req_peak=55.0, load_floor=0.25, latency_ms=95.0),
    "cache": Role(cpu_idle=4.0, cpu_span=22.0, req_peak=90.0, load_floor=0.18, latency_ms=2.5),
    "batch": Role(cpu_idle=3.0, cpu_span=8.0, req_peak=4.0, load_floor=0.30, latency_ms=220.0),
}


@dataclass(frozen=True)
class Incident:
    """One labelled incident injected into the series.

    Parameters
    ----------
    incident_id
        1-based identifier.
    kind
        Incident type; selects how the series are modified.
    hosts
        Affected hosts. For ``latency_degradation`` the first host is the origin and the
        others are hit downstream.
    start, end
        Half-open interval ``[start, end)`` in seconds after midnight.
    description
        Human-readable summary (written to ``incidents.csv``).
    """

    incident_id: int
    kind: str
    hosts: tuple[str, ...]
    start: int
    end: int
    description: str


WEB_HOSTS = tuple(h for h in HOSTS if h.startswith("web-"))


def _hms(hour: int, minute: int, second: int = 0) -> int:
    """Return seconds after midnight."""
    return hour * 3600 + minute * 60 + second


INCIDENTS: tuple[Incident, ...] = (
    Incident(
        1,
        "cpu_spike",
        ("web-03",),
        _hms(6, 12),
        _hms(6, 20),
        "Runaway process: cpu on web-03 jumps to 93-100% for 8 minutes (latency follows)",
    ),
    Incident(
        2,
        "latency_degradation",
        ("db-01", *WEB_HOSTS),
        _hms(11, 40),
        _hms(11, 58),
        "Slow queries on db-01 (latency ~7x) spill over to all web hosts (~2.5x) after ~45 s",
    ),
    Incident(
        3,
        "host_silent",
        ("cache-02",),
        _hms(14, 5),
        _hms(14, 10),
        "cache-02 stops reporting: its rows are missing for 5 minutes",
    ),
    Incident(
        4,
        "cpu_ramp",
        ("web-05",),
        _hms(17, 10),
        _hms(17, 30),
        "Memory-leak-like cpu ramp on web-05 up to ~97% over 20 minutes then restart",
    ),
    Incident(
        5,
        "request_drop",
        ("web-02",),
        _hms(20, 15),
        _hms(20, 27),
        "web-02 drops out of the load balancer: requests near zero and cpu at idle "
        "while the other web hosts absorb its traffic",
    ),
    Incident(
        6,
        "latency_spike",
        WEB_HOSTS,
        _hms(22, 3),
        _hms(22, 5),
        "Short latency spike (~9x) on all web hosts for 2 minutes",
    ),
)
"""The labelled incidents (times are seconds after midnight of :data:`START`)."""


# --------------------------------------------------------------------------- signal helpers


def diurnal(hour: np.ndarray) -> np.ndarray:
    """Return the daily activity profile for fractional hours of the day.

    The profile is a warped cosine in ``[0, 1]``: 0 at 04:00, rising to 1 at 15:00 and
    falling back over the remaining 13 hours.

    Parameters
    ----------
    hour
        Fractional hours since midnight (any shape).

    Returns
    -------
    numpy.ndarray
        Activity level in ``[0, 1]``, same shape as ``hour``.
    """
    since_trough = (hour - TROUGH_HOUR) % 24.0
    rise = PEAK_HOUR - TROUGH_HOUR
    phase = np.where(
        since_trough < rise,
        np.pi * since_trough / rise,
        np.pi + np.pi * (since_trough - rise) / (24.0 - rise),
    )
    level: np.ndarray = 0.5 - 0.5 * np.cos(phase)
    return level


def ar1(rng: np.random.Generator, n: int, k: int, tau: float, sd: float) -> np.ndarray:
    """Draw ``k`` independent stationary AR(1) series of length ``n``.

    ``x[t] = phi * x[t-1] + e[t]`` with ``phi = exp(-1 / tau)``. The recursion is solved in
    closed form block by block (a scaled cumulative sum), so the cost is vectorised numpy
    with one Python iteration per block of roughly ``40 * tau`` samples.

    Parameters
    ----------
    rng
        Random generator (consumes ``n * k`` standard normals).
    n, k
        Number of time steps and of independent series.
    tau
        Correlation time in samples (e-folding time of the autocorrelation).
    sd
        Stationary standard deviation.

    Returns
    -------
    numpy.ndarray
        Array of shape ``(n, k)``.
    """
    phi = float(np.exp(-1.0 / tau))
    innov = rng.standard_normal((n, k)) * (sd * np.sqrt(1.0 - phi * phi))
    innov[0] /= np.sqrt(1.0 - phi * phi)  # start from the stationary distribution
    out: np.ndarray = np.empty_like(innov)
    block = max(1, int(40.0 * tau))  # keeps phi ** -block below e**40
    carry = np.zeros(k)
    for lo in range(0, n, block):
        chunk = innov[lo : lo + block]
        steps = np.arange(chunk.shape[0], dtype=np.float64)[:, None]
        decay = phi**steps
        y = np.cumsum(chunk / decay, axis=0) * decay + carry * (decay * phi)
        out[lo : lo + chunk.shape[0]] = y
        carry = y[-1]
    return out


def round_latency(latency: np.ndarray) -> np.ndarray:
    """Round latencies to 3 significant figures, but never finer than 0.1 ms.

    That is 0.1 ms below 100 ms, 1 ms below 1 s and 10 ms above. Parquet dictionary-encodes
    the column with a bit width set by the number of distinct values, so this keeps the file
    well inside its size budget while sub-100 ms latencies keep their 0.1 ms resolution.

    Parameters
    ----------
    latency
        Latencies in milliseconds.

    Returns
    -------
    numpy.ndarray
        Rounded latencies, same shape.
    """
    return np.where(
        latency < 100.0,
        np.round(latency, 1),
        np.where(latency < 1000.0, np.round(latency), np.round(latency, -1)),
    )


def envelope(t: np.ndarray, start: int, end: int, ramp_up: float, ramp_down: float) -> np.ndarray:
    """Return a trapezoid that is non-zero exactly on ``[start, end)``.

    Parameters
    ----------
    t
        Integer seconds.
    start, end
        Support of the envelope, half-open.
    ramp_up, ramp_down
        Lengths of the linear edges in seconds (at least 1).

    Returns
    -------
    numpy.ndarray
        Values in ``[0, 1]``, same shape as ``t``.
    """
    up = np.clip((t - start + 1) / max(ramp_up, 1.0), 0.0, 1.0)
    down = np.clip((end - t) / max(ramp_down, 1.0), 0.0, 1.0)
    return np.minimum(up, down)


# --------------------------------------------------------------------------- generation


def _columns(hosts: tuple[str, ...]) -> list[int]:
    """Return the column indices of ``hosts``."""
    return [HOSTS.index(h) for h in hosts]


def generate(seed: int = DEFAULT_SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate the metrics and the incident table.

    Parameters
    ----------
    seed
        Seed for :func:`numpy.random.default_rng`.

    Returns
    -------
    metrics : pandas.DataFrame
        Columns ``timestamp, host, cpu, latency_ms, requests`` sorted by ``(timestamp, host)``.
    incidents : pandas.DataFrame
        Columns ``incident_id, kind, host, start, end, description``.
    """
    rng = np.random.default_rng(seed)
    n, k = N_SECONDS, len(HOSTS)
    t = np.arange(n)
    t_col = t[:, None]
    roles = [ROLES[h.split("-")[0]] for h in HOSTS]

    def per_host(attr: str) -> np.ndarray:
        return np.array([getattr(r, attr) for r in roles], dtype=np.float64)[None, :]

    # Load: daily profile scaled per role and host, with a shared slow drift (all hosts see
    # the same user population) plus per-host drift.
    season = diurnal(t / 3600.0)[:, None]
    floor = per_host("load_floor")
    host_scale = rng.uniform(0.85, 1.15, size=k)[None, :]
    drift = ar1(rng, n, 1, tau=1200.0, sd=0.04) + ar1(rng, n, k, tau=600.0, sd=0.04)
    load = (floor + (1.0 - floor) * season) * host_scale * np.exp(drift)

    # Traffic routing changes (request drop); these also move cpu.
    traffic = np.ones((n, k))
    for inc in INCIDENTS:
        if inc.kind == "request_drop":
            env = envelope(t, inc.start, inc.end, 20, 30)
            cols = _columns(inc.hosts)
            prefix = inc.hosts[0].split("-")[0] + "-"
            peers = [i for i, h in enumerate(HOSTS) if h.startswith(prefix) and i not in cols]
            traffic[:, cols] *= (1.0 - 0.99 * env)[:, None]
            traffic[:, peers] *= (1.0 + 0.99 * env * len(cols) / len(peers))[:, None]
    eff_load = load * traffic

    rate = per_host("req_peak") * eff_load * np.exp(ar1(rng, n, k, tau=15.0, sd=0.05))
    requests = rng.poisson(rate).astype(np.int64)

    # CPU: idle + load-proportional part + AR(1) noise + a little white noise.
    cpu_idle = per_host("cpu_idle") + rng.uniform(-1.5, 1.5, size=k)[None, :]
    cpu = (
        cpu_idle
        + per_host("cpu_span") * eff_load
        + ar1(rng, n, k, tau=40.0, sd=2.0)
        + rng.normal(0.0, 0.6, size=(n, k))
    )

    # Nightly batch job (normal behaviour, not an incident).
    batch_cols = [i for i, h in enumerate(HOSTS) if h.startswith("batch-")]
    job_env = envelope(t, BATCH_JOB[0], BATCH_JOB[1], 120, 180)[:, None]
    job_cpu = 86.0 + ar1(rng, n, len(batch_cols), tau=120.0, sd=3.0)
    cpu[:, batch_cols] += job_env * (job_cpu - cpu[:, batch_cols])

    # CPU incidents.
    for inc in INCIDENTS:
        cols = _columns(inc.hosts)
        if inc.kind == "cpu_spike":
            env = envelope(t, inc.start, inc.end, 20, 30)[:, None]
            target = 96.5 + ar1(rng, n, len(cols), tau=10.0, sd=1.5)
            cpu[:, cols] += env * (target - cpu[:, cols])
        elif inc.kind == "cpu_ramp":
            inside = (t_col >= inc.start) & (t_col < inc.end)
            frac = np.clip((t_col - inc.start + 1) / (inc.end - inc.start), 0.0, 1.0) * inside
            target = 97.0 + ar1(rng, n, len(cols), tau=20.0, sd=1.0)
            cpu[:, cols] += frac**1.4 * (target - cpu[:, cols])
    cpu = np.round(np.clip(cpu, 0.0, 100.0), 1)

    # Latency: log-normal around a role baseline, inflated by utilisation (queueing).
    util = cpu / 100.0
    queueing = 1.0 + 0.6 * util / (1.0 - 0.8 * util)
    lat_scale = per_host("latency_ms") * rng.uniform(0.9, 1.1, size=k)[None, :]
    log_noise = ar1(rng, n, k, tau=90.0, sd=0.10) + rng.normal(0.0, 0.25, size=(n, k))
    latency = lat_scale * queueing * np.exp(log_noise)

    for inc in INCIDENTS:
        cols = _columns(inc.hosts)
        if inc.kind == "latency_degradation":
            origin, downstream = cols[:1], cols[1:]
            env = envelope(t, inc.start, inc.end, 120, 120)[:, None]
            env_lag = envelope(t, inc.start + 45, inc.end, 90, 150)[:, None]
            latency[:, origin] *= 1.0 + 6.0 * env
            latency[:, downstream] *= 1.0 + 1.5 * env_lag
        elif inc.kind == "latency_spike":
            env = envelope(t, inc.start, inc.end, 5, 10)[:, None]
            latency[:, cols] *= 1.0 + 8.0 * env
    latency = np.maximum(round_latency(latency), 0.1)

    # Silent host: drop its rows (a real gap, not NaNs).
    present = np.ones((n, k), dtype=bool)
    for inc in INCIDENTS:
        if inc.kind == "host_silent":
            present[inc.start : inc.end, _columns(inc.hosts)] = False
    keep = present.ravel()

    times = START.to_datetime64().astype("datetime64[ns]") + t.astype("timedelta64[s]")
    metrics = pd.DataFrame(
        {
            "timestamp": np.repeat(times, k)[keep],
            "host": np.tile(np.array(HOSTS, dtype=object), n)[keep],
            "cpu": cpu.ravel()[keep],
            "latency_ms": latency.ravel()[keep],
            "requests": requests.ravel()[keep],
        }
    )
    metrics["timestamp"] = metrics["timestamp"].astype("datetime64[ns]")
    metrics["host"] = metrics["host"].astype("str")

    incidents = pd.DataFrame(
        {
            "incident_id": [inc.incident_id for inc in INCIDENTS],
            "kind": [inc.kind for inc in INCIDENTS],
            "host": [";".join(inc.hosts) for inc in INCIDENTS],
            "start": [_iso(inc.start) for inc in INCIDENTS],
            "end": [_iso(inc.end) for inc in INCIDENTS],
            "description": [inc.description for inc in INCIDENTS],
        }
    )
    return metrics, incidents


def _iso(seconds: int) -> str:
    """Return the ISO timestamp ``seconds`` after :data:`START`."""
    return (START + pd.Timedelta(seconds=seconds)).isoformat()


# --------------------------------------------------------------------------- output


def write_metrics(metrics: pd.DataFrame, path: Path) -> None:
    """Write the metrics table as a deterministic, compact Parquet file.

    Parameters
    ----------
    metrics
        Output of :func:`generate`.
    path
        Destination file.
    """
    schema = pa.schema(
        [
            ("timestamp", pa.timestamp("ns")),
            ("host", pa.string()),
            ("cpu", pa.float64()),
            ("latency_ms", pa.float64()),
            ("requests", pa.int64()),
        ]
    )
    table = pa.Table.from_pandas(metrics, schema=schema, preserve_index=False)
    # pandas' own key for ``DataFrame.attrs`` (what ``to_parquet`` writes): ``read_parquet``
    # gives the frame ``attrs["units"]``, which rtnb's axis labels read
    metadata = {**(table.schema.metadata or {}),
                b"PANDAS_ATTRS": json.dumps({"units": UNITS}).encode()}
    table = table.replace_schema_metadata(metadata)
    pq.write_table(
        table,
        path,
        compression="zstd",
        compression_level=19,
        use_dictionary=["host", "cpu", "latency_ms", "requests"],
        # Nanosecond timestamps repeat 12 times then step by 1e9: delta encoding makes them
        # almost free. BYTE_STREAM_SPLIT does not beat dictionaries for these 0.1-rounded
        # floats, and for int64 it is not readable by older DuckDB/polars, so it is not used.
        column_encoding={"timestamp": "DELTA_BINARY_PACKED"},
        row_group_size=len(table),
    )


def write_incidents(incidents: pd.DataFrame, path: Path) -> None:
    """Write the incident table as CSV with Unix line endings.

    Parameters
    ----------
    incidents
        Output of :func:`generate`.
    path
        Destination file.
    """
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(incidents.columns)
        writer.writerows(incidents.itertuples(index=False, name=None))


def main(argv: list[str] | None = None) -> None:
    """Run the command-line interface.

    Parameters
    ----------
    argv
        Arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="directory for metrics.parquet and incidents.csv (default: this script's folder)",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default: {DEFAULT_SEED})"
    )
    args = parser.parse_args(argv)

    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics, incidents = generate(args.seed)
    metrics_path = out_dir / "metrics.parquet"
    incidents_path = out_dir / "incidents.csv"
    write_metrics(metrics, metrics_path)
    write_incidents(incidents, incidents_path)
    size_mb = metrics_path.stat().st_size / 1e6
    print(f"wrote {metrics_path} ({len(metrics):,} rows, {size_mb:.2f} MB)")
    print(f"wrote {incidents_path} ({len(incidents)} incidents)")


if __name__ == "__main__":
    main()
