"""The bundled sample data: 24 h of per-host server metrics with labelled incidents.

The files are made by ``data/make_sample.py`` (reproducible, fixed seed) and ship inside the
wheel, so notebooks run anywhere, Binder included, with no server.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rtnb.errors import RtnbError

__all__ = ["incidents", "metrics", "metrics_path", "path"]

_HERE = Path(__file__).resolve().parent
_SEARCH = (_HERE, _HERE.parents[1] / "data")


def path(name: str) -> Path:
    """Return the path of a bundled file (``"metrics.parquet"``, ``"incidents.csv"``).

    Examples
    --------
    >>> path("metrics.parquet").name
    'metrics.parquet'
    """
    for folder in _SEARCH:
        candidate = folder / name
        if candidate.exists():
            return candidate
    msg = (f"bundled data file {name!r} not found in {[str(f) for f in _SEARCH]}; "
           "regenerate it with `python data/make_sample.py`")
    raise RtnbError(msg)


def metrics_path() -> Path:
    """Path of the sample metrics (Parquet): timestamp, host, cpu, latency_ms, requests.

    Examples
    --------
    >>> metrics_path().suffix
    '.parquet'
    """
    return path("metrics.parquet")


def metrics() -> pd.DataFrame:
    """The sample metrics as a DataFrame (1 s resolution, 12 hosts, 24 h).

    Examples
    --------
    >>> list(metrics().columns)
    ['timestamp', 'host', 'cpu', 'latency_ms', 'requests']
    """
    return pd.read_parquet(metrics_path())


def incidents() -> pd.DataFrame:
    """The labelled incidents: ``incident_id, kind, host, start, end, description``.

    Examples
    --------
    >>> {"kind", "host", "start", "end"} <= set(incidents().columns)
    True
    """
    return pd.read_csv(path("incidents.csv"), parse_dates=["start", "end"])
