"""Scoring alerts against labelled incidents: precision, recall, delay and the NAB score.

The NAB score follows the Numenta Anomaly Benchmark (Lavin & Ahmad, 2015): each labelled
incident is an anomaly window; the first detection inside a window earns
``A_TP * sigma(y)`` where ``y = -(end - t) / (end - start)`` is its position in the window
(-1 at the start, 0 at the end) and ``sigma(y) = 2 / (1 + exp(5 y)) - 1``; later detections
in the same window count nothing; a detection outside every window costs
``A_FP * sigma(y)`` with ``y`` its distance past the previous window's end in window lengths
(``sigma = -1`` if there is no previous window or ``y > 3``); a window without detection costs
``A_FN``. The raw score is normalised so that no detection scores 0 and a detection at the
start of every window scores 100. NAB measures positions in rows of a regularly sampled
series; here they are measured in event time, which is the same for regular sampling.
Windows and detections are matched per key when both name keys (``host``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rtnb.errors import ConfigError

__all__ = ["PROFILES", "Evaluation", "evaluate", "scaled_sigmoid"]

#: NAB's application profiles: weights (A_TP, A_FP, A_FN).
PROFILES: dict[str, tuple[float, float, float]] = {
    "standard": (1.0, 0.11, 1.0),
    "reward_low_fp": (1.0, 0.22, 1.0),
    "reward_low_fn": (1.0, 0.11, 2.0),
}


def scaled_sigmoid(y: float) -> float:
    """NAB's scoring curve: ~0.987 at the window start (-1), 0 at its end, -1 far after.

    Examples
    --------
    >>> round(scaled_sigmoid(-1.0), 5), scaled_sigmoid(0.0), scaled_sigmoid(4.0)
    (0.98661, 0.0, -1.0)
    """
    if y > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


@dataclass
class Evaluation:
    """What :func:`evaluate` found. ``windows`` has one row per labelled window."""

    precision: float
    recall: float
    nab_score: float
    true_positives: int
    false_positives: int
    false_negatives: int
    median_delay: pd.Timedelta | None
    windows: pd.DataFrame = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The figures as a dict (for tables and widgets)."""
        return {"precision": self.precision, "recall": self.recall,
                "nab_score": self.nab_score, "true_positives": self.true_positives,
                "false_positives": self.false_positives,
                "false_negatives": self.false_negatives, "median_delay": self.median_delay}


def _detections(alerts: Any) -> pd.DataFrame:
    if isinstance(alerts, list):
        alerts = pd.concat(alerts, ignore_index=True) if alerts else pd.DataFrame(
            {"time": pd.Series([], dtype="datetime64[ns]")})
    if not isinstance(alerts, pd.DataFrame) or "time" not in alerts.columns:
        msg = "evaluate() takes the alert events (a DataFrame or list of them with `time`)"
        raise ConfigError(msg)
    if "state" in alerts.columns:
        alerts = alerts[alerts["state"] == "firing"]
    frame: pd.DataFrame = alerts
    return frame


def evaluate(alerts: Any, labels: pd.DataFrame, *, by: str | None = "host",
             profile: str = "standard") -> Evaluation:
    """Score alert events against labelled incident windows.

    Parameters
    ----------
    alerts
        Alert transitions (``rtnb.alert(...)`` output, collected): their ``firing`` events
        are the detections; any frame with a ``time`` column works.
    labels
        Incident windows with ``start`` and ``end`` and, to match per key, a ``by`` column
        (several keys separated by ``;``, as in ``rtnb.datasets.incidents()``).
    by
        The key column shared by alerts and labels (``None``: one series).
    profile
        ``"standard"``, ``"reward_low_fp"`` or ``"reward_low_fn"`` (NAB's weights).

    Examples
    --------
    >>> import pandas as pd
    >>> labels = pd.DataFrame({"start": pd.to_datetime(["2026-01-01 00:10"]),
    ...                        "end": pd.to_datetime(["2026-01-01 00:20"])})
    >>> hits = pd.DataFrame({"time": pd.to_datetime(["2026-01-01 00:10"])})
    >>> evaluate(hits, labels, by=None).nab_score
    100.0
    >>> late = pd.DataFrame({"time": pd.to_datetime(["2026-01-01 00:20"])})
    >>> round(evaluate(late, labels, by=None).nab_score, 2)
    50.34
    """
    if profile not in PROFILES:
        msg = f"profile must be one of {sorted(PROFILES)}; got {profile!r}"
        raise ConfigError(msg)
    a_tp, a_fp, a_fn = PROFILES[profile]
    det = _detections(alerts)
    windows = labels.copy()
    windows["start"] = pd.to_datetime(windows["start"]).astype("datetime64[ns]")
    windows["end"] = pd.to_datetime(windows["end"]).astype("datetime64[ns]")
    keyed = by is not None and by in windows.columns and by in det.columns
    if keyed and by is not None:
        windows[by] = windows[by].astype(str).str.split(";")
        windows = windows.explode([by], ignore_index=True)
    series_keys = (sorted(set(windows[by]) | set(det[by].astype(str))) if keyed else [None])
    raw = null = perfect = 0.0
    tp = fp = 0
    rows = []
    for key in series_keys:
        w = windows[windows[by] == key] if keyed else windows
        d = det[det[by].astype(str) == key] if keyed else det
        w = w.sort_values("start")
        starts = w["start"].to_numpy().view(np.int64)
        ends = w["end"].to_numpy().view(np.int64)
        first: list[int | None] = [None] * len(w)
        for t in np.sort(pd.to_datetime(d["time"]).to_numpy().astype("datetime64[ns]")
                         .view(np.int64)).tolist():
            inside = np.flatnonzero((starts <= t) & (t <= ends))
            if len(inside):
                i = int(inside[0])
                if first[i] is None:
                    first[i] = t
                    length = max(int(ends[i] - starts[i]), 1)
                    raw += a_tp * scaled_sigmoid(-(ends[i] - t) / length)
                tp += 1
                continue
            fp += 1
            before = np.flatnonzero(ends < t)
            if len(before):
                j = int(before[-1])
                length = max(int(ends[j] - starts[j]), 1)
                raw += a_fp * scaled_sigmoid((t - ends[j]) / length)
            else:
                raw += a_fp * -1.0
        missed = sum(f is None for f in first)
        raw -= a_fn * missed
        null -= a_fn * len(w)
        perfect += a_tp * scaled_sigmoid(-1.0) * len(w)
        for i, f in enumerate(first):
            rows.append({"key": key, "start": pd.Timestamp(int(starts[i])),
                         "end": pd.Timestamp(int(ends[i])),
                         "detected": None if f is None else pd.Timestamp(f),
                         "delay": None if f is None else pd.Timedelta(f - int(starts[i]))})
    per_window = pd.DataFrame(rows, columns=["key", "start", "end", "detected", "delay"])
    n_windows = len(per_window)
    found = int(per_window["detected"].notna().sum()) if n_windows else 0
    delays = per_window["delay"].dropna()
    score = 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0
    return Evaluation(
        precision=tp / (tp + fp) if tp + fp else 0.0,
        recall=found / n_windows if n_windows else 0.0,
        nab_score=score, true_positives=tp, false_positives=fp,
        false_negatives=n_windows - found,
        median_delay=pd.Timedelta(delays.median()) if len(delays) else None,
        windows=per_window)
