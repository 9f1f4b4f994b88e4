"""Scoring detections against labelled anomaly windows with the Numenta Anomaly Benchmark's rules.

:func:`evaluate` computes precision, recall, detection delay and the NAB score exactly as NAB's
scorer does (Lavin & Ahmad, "Evaluating Real-time Anomaly Detection Algorithms - the Numenta
Anomaly Benchmark", IEEE ICMLA 2015; code: github.com/numenta/NAB, ``nab/sweeper.py``
``Sweeper.calcSweepScore`` / ``calcScoreByThreshold``, ``nab/runner.py`` ``Runner.normalize``,
``nab/util.py`` ``getProbationPeriod``, weights from ``config/profiles.json``).
:func:`nab_windows` builds labelled windows from anomaly points as NAB's labeller does
(``nab/labeler.py`` ``LabelCombiner.applyWindows`` / ``checkWindows``).

The rules, per series (one key of ``by``), with ``S(y) = 2 / (1 + exp(5 y)) - 1`` for
``y <= 3`` and ``-1`` beyond (:func:`scaled_sigmoid`):

- **Probationary period.** A series of ``n`` rows is not scored on its first
  ``min(floor(p * n), p * 5000)`` rows (``p = 0.15``): detections there are ignored, and a window
  all of whose rows lie there is not scored at all (neither found nor missed). A window that
  reaches past the period is scored by its later rows only.
- **Inside a window.** Only the first detection in a window scores:
  ``A_TP * S(y) / S(-1)`` with ``y = -(e - i + 1) / (e - s + 1)`` for a detection on row ``i`` of
  a window of rows ``s..e`` (so a detection on the first row earns exactly ``A_TP``, one on the
  last row ``A_TP * S(-1 / width) / S(-1)``). Later detections in the same window count nothing.
- **Outside every window.** Each detection costs ``A_FP * S(y)`` with
  ``y = (i - e) / (e - s)`` measured from the end of the preceding window (rows ``s..e``), so
  it is mild just after a window and ``-A_FP`` from three window lengths on; a detection with no
  window before it costs ``-A_FP``. (NAB divides by zero after a one-row window; here ``y`` is
  then infinite and the cost ``-A_FP``.)
- **Missed window.** A scored window without detection costs ``-A_FN``.
- **Normalisation.** Over all series together (NAB normalises the corpus total, not each file):
  ``score = 100 * (raw - null) / (perfect - null)`` where ``null = -A_FN * windows`` (the score of
  detecting nothing) and ``perfect = A_TP * windows`` (a detection at the start of every window),
  ``windows`` counting the scored windows. NAB's own labels never put a window in the
  probationary period (its labeller deletes one that starts there), so this count equals NAB's
  ``tpCount``.
- **Overlapping windows** (NAB's labels have none): a row belongs to the window that started
  last, as in NAB's sweeper; a window whose rows all belong to a later-starting one is
  ``"shadowed"`` and not scored.

Profiles (``config/profiles.json``): ``"standard"`` (A_TP 1, A_FP 0.11, A_FN 1),
``"reward_low_FP_rate"`` (A_FP 0.22) and ``"reward_low_FN_rate"`` (A_FN 2); NAB's ``tnWeight`` is
listed there but never used by its scorer. NAB converts anomaly scores to detections with a
threshold tuned per detector; here the detections are given (alert events or flagged rows).

**Rows or event time.** NAB counts positions in rows of the series. With ``data`` (the scored
series, one row per sample) positions are in rows: a detection belongs to the row at or after
its time, a window to the rows stamped within ``[start, end]``, and the probationary period
applies. Without ``data`` no row count is known, so positions are measured in event time and
no probationary period applies: a detection at time ``t`` in window ``[start, end]`` has
``y = -(end - t) / (end - start)`` (``-1`` at the start, ``0`` at the end) and a false positive
``y = (t - end) / (end - start)`` after the preceding window. For a regularly sampled series the
false-positive distance equals NAB's row formula exactly and the in-window position differs from
it by one sample (``-(end - t + step) / (end - start + step)`` in rows). ``positions="time"``
with ``data`` keeps event-time positions and takes the probationary period from the rows.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from rtnb.errors import ConfigError

__all__ = ["PROFILES", "PROFILE_ALIASES", "Evaluation", "evaluate", "nab_windows",
           "probationary_length", "scaled_sigmoid"]

#: NAB's application profiles (``config/profiles.json``, the ``CostMatrix`` of each).
PROFILES: dict[str, dict[str, float]] = {
    "standard": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11, "tnWeight": 1.0},
    "reward_low_FP_rate": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.22, "tnWeight": 1.0},
    "reward_low_FN_rate": {"tpWeight": 1.0, "fnWeight": 2.0, "fpWeight": 0.11, "tnWeight": 1.0},
}

#: Names rtnb used before it took NAB's; still accepted by :func:`evaluate`.
PROFILE_ALIASES: dict[str, str] = {"reward_low_fp": "reward_low_FP_rate",
                                   "reward_low_fn": "reward_low_FN_rate"}

_NAB_PROBATION = 0.15
_I64_MIN = np.iinfo(np.int64).min
_I64_MAX = np.iinfo(np.int64).max


def scaled_sigmoid(y: float) -> float:
    """NAB's scoring curve ``2 / (1 + exp(5 y)) - 1``, ``-1`` for ``y > 3`` (``nab/sweeper.py``).

    Examples
    --------
    >>> round(scaled_sigmoid(-1.0), 5), scaled_sigmoid(0.0), scaled_sigmoid(4.0)
    (0.98661, 0.0, -1.0)
    """
    if y > 3.0:
        return -1.0
    return 2 * (1 / (1 + math.exp(5 * y))) - 1.0


_MAX_TP = scaled_sigmoid(-1.0)


def _sigmoid_array(y: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    # element by element with math.exp, as NAB computes it (bit for bit); NaN stays NaN
    return np.array([v if v != v else scaled_sigmoid(v) for v in y.tolist()], dtype=np.float64)


def probationary_length(rows: int, probation: float = _NAB_PROBATION) -> float:
    """NAB's probationary period of a series: ``min(floor(p * rows), p * 5000)`` rows.

    Rows ``i < probationary_length(rows)`` (counting from 0) are not scored
    (``nab/util.py`` ``getProbationPeriod``).

    Examples
    --------
    >>> probationary_length(100), probationary_length(4000), probationary_length(6000)
    (15, 600, 750.0)
    """
    return min(math.floor(probation * rows), probation * 5000)


def _resolve_profile(profile: str | Mapping[str, float]) -> tuple[str, dict[str, float]]:
    if isinstance(profile, str):
        name = PROFILE_ALIASES.get(profile, profile)
        if name not in PROFILES:
            msg = (f"profile must be one of {sorted(PROFILES)} (or the older names "
                   f"{sorted(PROFILE_ALIASES)}), or a mapping of weights; got {profile!r}")
            raise ConfigError(msg)
        return name, PROFILES[name]
    if isinstance(profile, Mapping):
        weights: dict[str, float] = {}
        for key in ("tpWeight", "fpWeight", "fnWeight"):
            value = profile.get(key)
            if (not isinstance(value, numbers.Real) or isinstance(value, bool)
                    or not math.isfinite(value) or value < 0):
                msg = (f"a profile mapping needs finite, non-negative 'tpWeight', 'fpWeight' "
                       f"and 'fnWeight' (as in NAB's config/profiles.json); {key!r} is "
                       f"{value!r}")
                raise ConfigError(msg)
            weights[key] = float(value)
        weights["tnWeight"] = float(profile.get("tnWeight", 1.0))
        return "custom", weights
    msg = f"profile must be a profile name or a mapping of weights; got {type(profile).__name__}"
    raise ConfigError(msg)


def _ns(values: Any, what: str) -> np.ndarray[Any, Any]:
    """Event times as int64 nanoseconds (tz-aware times in UTC)."""
    try:
        times = pd.to_datetime(pd.Series(values))
    except (TypeError, ValueError) as exc:
        msg = f"{what} must be event times; could not read them as datetimes: {exc}"
        raise ConfigError(msg) from exc
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    if times.isna().any():
        msg = f"{what} has missing times (NaT); every row needs its event time"
        raise ConfigError(msg)
    out: np.ndarray[Any, Any] = times.to_numpy(dtype="datetime64[ns]").view(np.int64)
    return out


def _detection_frame(alerts: Any, flag: str | None, time: str) -> pd.DataFrame:
    if isinstance(alerts, list):
        frames = [a for a in alerts if isinstance(a, pd.DataFrame)]
        if len(frames) != len(alerts):
            msg = "evaluate() takes a DataFrame or a list of DataFrames as `alerts`"
            raise ConfigError(msg)
        non_empty = [a for a in frames if len(a)]
        if non_empty:
            alerts = pd.concat(non_empty, ignore_index=True)
        else:
            alerts = frames[0] if frames else pd.DataFrame(
                {"time": pd.Series([], dtype="datetime64[ns]")})
    if not isinstance(alerts, pd.DataFrame):
        msg = ("evaluate() takes the detections as a DataFrame (or a list of them, as "
               f"`.collect()` gives); got {type(alerts).__name__}")
        raise ConfigError(msg)
    column = time if time in alerts.columns else "time"
    if column not in alerts.columns:
        msg = (f"the detections need an event-time column {time!r} (alert events from "
               f"rtnb.alert use 'time'); columns are {list(alerts.columns)}")
        raise ConfigError(msg)
    if flag is not None:
        if flag not in alerts.columns:
            msg = f"flag={flag!r} is not a column of the detections {list(alerts.columns)}"
            raise ConfigError(msg)
        keep = alerts[flag].fillna(False).astype(bool).to_numpy()
        alerts = alerts[keep]
    elif "state" in alerts.columns:
        alerts = alerts[alerts["state"] == "firing"]
    frame = alerts.rename(columns={column: "_t"}) if column != "_t" else alerts
    frame = frame.assign(_t=_ns(frame["_t"], "the detections' times"))
    result: pd.DataFrame = frame
    return result


@dataclass
class Evaluation:
    """What :func:`evaluate` found.

    ``precision`` is the share of scored detections that fall in a window, ``recall`` the share
    of scored windows detected, ``nab_score`` the normalised NAB score of the chosen profile
    (NaN when no window is scored). ``windows`` has one row per labelled window (``key``,
    ``start``, ``end``, ``detected``: time of the detection that scored it, ``delay``,
    ``status``: detected / missed / probation / no data / shadowed, ``position``: NAB's
    relative position ``y``, ``score``: its weighted contribution). ``scores`` holds the
    normalised score of each NAB profile; ``raw_score``, ``null_score`` and ``perfect_score``
    the chosen profile's sums, so several evaluations combine as NAB combines files:
    ``100 * (sum(raw) - sum(null)) / (sum(perfect) - sum(null))``. ``counts`` holds NAB's
    per-row tp / tn / fp / fn counts (positions in rows only); ``ignored`` the detections not
    scored (probationary period, after the last row, or a series not in ``data``); ``series``
    one row per series.
    """

    precision: float
    recall: float
    nab_score: float
    true_positives: int
    false_positives: int
    false_negatives: int
    median_delay: pd.Timedelta | None
    windows: pd.DataFrame = field(repr=False)
    profile: str = "standard"
    scores: dict[str, float] = field(default_factory=dict)
    raw_score: float = 0.0
    null_score: float = 0.0
    perfect_score: float = 0.0
    positions: str = "time"
    counts: dict[str, int] | None = None
    ignored: int = 0
    series: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The figures as a dict (for tables and widgets)."""
        return {"precision": self.precision, "recall": self.recall,
                "nab_score": self.nab_score, "true_positives": self.true_positives,
                "false_positives": self.false_positives,
                "false_negatives": self.false_negatives, "median_delay": self.median_delay,
                "profile": self.profile, "raw_score": self.raw_score,
                "null_score": self.null_score, "perfect_score": self.perfect_score,
                "positions": self.positions, "ignored": self.ignored,
                **{f"nab_{name}": value for name, value in self.scores.items()}}


@dataclass
class _SeriesResult:
    """Unweighted NAB sums of one series and its per-window outcome."""

    status: list[str]
    detected: np.ndarray[Any, Any]   # int64 ns or _I64_MIN
    position: np.ndarray[Any, Any]   # float, NaN if not detected
    tp_sum: float = 0.0              # sum of S(y) / S(-1) over detected windows
    fp_sum: float = 0.0              # sum of S(y) (negative) over false positives
    n_scored: int = 0
    n_found: int = 0
    tp_detections: int = 0
    fp_detections: int = 0
    ignored: int = 0
    counts: dict[str, int] = field(default_factory=dict)


def _ownership(starts: np.ndarray[Any, Any], ends: np.ndarray[Any, Any],
               first_scored: int) -> tuple[np.ndarray[Any, Any], list[str]]:
    """The last coordinate each window owns (a later-starting window takes over) and status."""
    owned_end = ends.copy()
    if len(starts) > 1:
        owned_end[:-1] = np.minimum(ends[:-1], starts[1:] - 1)
    status = ["shadowed" if oe < s else "probation" if oe < first_scored else "scored"
              for s, oe in zip(starts.tolist(), owned_end.tolist(), strict=True)]
    return owned_end, status


def _score_positions(x: np.ndarray[Any, Any], starts: np.ndarray[Any, Any],
                     ends: np.ndarray[Any, Any], *, rows: bool,
                     ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any],
                                np.ndarray[Any, Any]]:
    """For sorted detection coordinates: owning window (-1: none), inside flag, NAB's ``y``."""
    k = np.searchsorted(starts, x, side="right") - 1
    has = k >= 0
    kk = np.where(has, k, 0)
    s = starts[kk] if len(starts) else np.zeros_like(x)
    e = ends[kk] if len(ends) else np.zeros_like(x)
    inside = has & (x <= e)
    with np.errstate(divide="ignore", invalid="ignore"):
        if rows:
            y_in = -(e - x + 1) / (e - s + 1)
        else:
            span = (e - s).astype(np.float64)
            y_in = np.where(span > 0, -(e - x) / np.where(span > 0, span, 1.0), -1.0)
        # NAB: abs(prevRight - i) / (prevWidth - 1); a one-row (zero-length) window -> inf
        gap = (e - s).astype(np.float64)
        y_out = np.where(gap > 0, (x - e) / np.where(gap > 0, gap, 1.0), np.inf)
    y = np.where(inside, y_in, np.where(has, y_out, np.inf))
    return k, inside, y


def _score_series(starts: np.ndarray[Any, Any], ends: np.ndarray[Any, Any],
                  det: np.ndarray[Any, Any], times: np.ndarray[Any, Any] | None,
                  probation: float, rows: bool) -> _SeriesResult:
    """NAB's rules on one series. ``starts``/``ends`` sorted by start, ns; ``det`` ns."""
    n_win = len(starts)
    status = ["no data"] * n_win
    detected = np.full(n_win, _I64_MIN, dtype=np.int64)
    position = np.full(n_win, np.nan)
    if times is not None:
        n = len(times)
        first_row = math.ceil(probationary_length(n, probation))
    if rows:
        assert times is not None
        s = np.searchsorted(times, starts, side="left")
        e = np.searchsorted(times, ends, side="right") - 1
        with_rows = np.flatnonzero(e >= s)
        ws, we = s[with_rows], e[with_rows]
        x_all = np.unique(np.searchsorted(times, det, side="left"))
        beyond = x_all >= n
        x = x_all[~beyond & (x_all >= first_row)]
        ignored = len(x_all) - len(x)
        first_scored = first_row
    else:
        with_rows = np.arange(n_win)
        ws, we = starts, ends
        x_all = np.unique(det)
        if times is None:
            first_scored = _I64_MIN
        else:
            first_scored = int(times[first_row]) if first_row < n else _I64_MAX
        x = x_all[x_all >= first_scored]
        ignored = len(x_all) - len(x)
    _, sub_status = _ownership(ws, we, first_scored)
    for j, st in zip(with_rows.tolist(), sub_status, strict=True):
        status[j] = st
    result = _SeriesResult(status, detected, position, ignored=ignored)
    k, inside, y = _score_positions(x, ws, we, rows=rows)
    # inside a window: the first detection (x is sorted) of each window scores
    k_in = k[inside]
    first_of, idx = np.unique(k_in, return_index=True)
    y_first = y[inside][idx]
    x_first = x[inside][idx]
    for j, yy, xx in zip(first_of.tolist(), y_first.tolist(), x_first.tolist(), strict=True):
        w = int(with_rows[j])
        status[w] = "detected"
        position[w] = yy
        detected[w] = int(times[xx]) if rows and times is not None else xx
    result.tp_sum = float(np.sum(_sigmoid_array(y_first))) / _MAX_TP if len(y_first) else 0.0
    y_fp = y[~inside]
    result.fp_sum = float(np.sum(_sigmoid_array(y_fp))) if len(y_fp) else 0.0
    result.tp_detections = int(inside.sum())
    result.fp_detections = int((~inside).sum())
    result.n_scored = sum(st in ("detected", "scored") for st in status)
    result.n_found = len(first_of)
    for j, st in enumerate(status):
        if st == "scored":
            status[j] = "missed"
    if rows and times is not None:
        rows_idx = np.arange(first_row, n)
        _, row_inside, _ = _score_positions(rows_idx, ws, we, rows=True)
        flagged = np.zeros(n, dtype=bool)
        flagged[x] = True
        flagged = flagged[first_row:]
        result.counts = {"tp": int((row_inside & flagged).sum()),
                         "tn": int((~row_inside & ~flagged).sum()),
                         "fp": int((~row_inside & flagged).sum()),
                         "fn": int((row_inside & ~flagged).sum())}
    return result


def _keys(values: pd.Series) -> pd.Series:
    return values.astype(str)


def evaluate(alerts: Any, labels: pd.DataFrame, *, by: str | None = "host",
             profile: str | Mapping[str, float] = "standard", data: pd.DataFrame | None = None,
             time: str = "time", probation: float | None = None,
             positions: Literal["rows", "time"] | None = None,
             flag: str | None = None) -> Evaluation:
    """Score detections against labelled anomaly windows with NAB's rules (module docstring).

    Parameters
    ----------
    alerts
        The detections: alert transitions (``rtnb.alert(...)`` output, collected; their
        ``firing`` events are the detections), any frame with an event-time column (every row
        a detection), or, with ``flag``, per-row output whose ``flag`` column is true on the
        detections. A list of frames (``.collect()``) is concatenated.
    labels
        Anomaly windows with ``start`` and ``end`` and, to match per key, a ``by`` column
        (several keys separated by ``;``, as in ``rtnb.datasets.incidents()``).
        :func:`nab_windows` builds them from anomaly points as NAB does.
    by
        The key column shared by detections, labels and ``data`` (``None``: one series).
        Keys are matched only when ``labels`` has this column.
    profile
        ``"standard"``, ``"reward_low_FP_rate"`` or ``"reward_low_FN_rate"`` (NAB's names and
        weights; the older ``"reward_low_fp"`` / ``"reward_low_fn"`` are aliases), or a mapping
        with ``tpWeight``, ``fpWeight`` and ``fnWeight`` as in NAB's ``config/profiles.json``.
    data
        The scored series (one row per sample, with ``time`` and, when keyed, ``by``): gives
        each series' rows and length, so positions are counted in rows and the probationary
        period applies, as in NAB. Without it positions are in event time and nothing is
        probationary (no row count is known).
    time
        The event-time column of ``data`` and of per-row detections (alert events' ``"time"``
        is used when ``alerts`` has no such column).
    probation
        The probationary fraction ``p``: the first ``min(floor(p * rows), p * 5000)`` rows of
        each series are not scored. Default NAB's 0.15 with ``data``; needs ``data``.
    positions
        ``"rows"`` (NAB's unit; default with ``data``) or ``"time"`` (default without).
    flag
        A boolean column of ``alerts`` marking the detections (``"is_anomaly"`` after
        ``sdf.detect(...)``).

    Returns
    -------
    Evaluation
        Precision, recall, NAB score (this profile and all three), per-window outcome.

    Raises
    ------
    ConfigError
        Unknown profile, missing columns, ``positions="rows"`` or ``probation`` without
        ``data``, a window ending before it starts.

    Examples
    --------
    Five-minute data, one window of 10 rows; a detection on its first row scores 100, one at
    its middle less, and a false positive before it costs ``A_FP = 0.11``:

    >>> import pandas as pd
    >>> data = pd.DataFrame({"time": pd.date_range("2026-01-01", periods=100, freq="5min")})
    >>> labels = pd.DataFrame({"start": [data["time"][50]], "end": [data["time"][59]]})
    >>> hit = pd.DataFrame({"time": [data["time"][50]]})
    >>> evaluate(hit, labels, by=None, data=data).nab_score
    100.0
    >>> mid = pd.DataFrame({"time": [data["time"][55]]})
    >>> round(evaluate(mid, labels, by=None, data=data).raw_score, 4)  # S(-0.5) / S(-1)
    0.8598
    >>> early = pd.DataFrame({"time": data["time"][[20, 50]]})
    >>> result = evaluate(early, labels, by=None, data=data)
    >>> result.raw_score, round(result.nab_score, 2), result.precision
    (0.89, 94.5, 0.5)

    Detections in the first 15 rows (the probationary period) are not scored:

    >>> evaluate(pd.DataFrame({"time": data["time"][[3, 50]]}), labels, by=None,
    ...          data=data).ignored
    1
    """
    name, weights = _resolve_profile(profile)
    if positions is None:
        positions = "rows" if data is not None else "time"
    if positions not in ("rows", "time"):
        msg = f"positions must be 'rows' or 'time'; got {positions!r}"
        raise ConfigError(msg)
    if positions == "rows" and data is None:
        msg = ("positions='rows' needs `data`, the scored series (one row per sample), to "
               "count rows; without it positions are in event time")
        raise ConfigError(msg)
    if probation is None:
        probation = _NAB_PROBATION if data is not None else 0.0
    elif data is None and probation != 0:
        msg = ("probation needs `data`: the probationary period is a number of rows of each "
               "series (NAB: min(floor(0.15 * rows), 750))")
        raise ConfigError(msg)
    if not 0.0 <= probation <= 1.0:
        msg = f"probation is a fraction of each series in [0, 1]; got {probation!r}"
        raise ConfigError(msg)
    if not isinstance(labels, pd.DataFrame) or not {"start", "end"} <= set(labels.columns):
        msg = "labels must be a DataFrame with `start` and `end` columns (one row per window)"
        raise ConfigError(msg)
    det = _detection_frame(alerts, flag, time)
    keyed = by is not None and by in labels.columns
    windows = pd.DataFrame({"start": _ns(labels["start"], "labels['start']"),
                            "end": _ns(labels["end"], "labels['end']")})
    if keyed:
        assert by is not None
        windows["key"] = labels[by].astype(str).str.split(";").to_numpy()
        windows = windows.explode("key", ignore_index=True)
        windows["key"] = windows["key"].astype(str).str.strip()
        if len(det) and by not in det.columns:
            msg = (f"labels are keyed by {by!r} but the detections have no {by!r} column; "
                   f"pass by=None to score one series")
            raise ConfigError(msg)
        det_keys = _keys(det[by]) if len(det) else pd.Series([], dtype=str)
    else:
        windows["key"] = ""
        det_keys = pd.Series([""] * len(det), dtype=str)
    bad = windows["end"] < windows["start"]
    if bad.any():
        row = windows[bad].iloc[0]
        msg = (f"a labelled window ends before it starts: start {pd.Timestamp(row['start'])}, "
               f"end {pd.Timestamp(row['end'])}")
        raise ConfigError(msg)
    series_times: dict[str, np.ndarray[Any, Any]] = {}
    if data is not None:
        if not isinstance(data, pd.DataFrame) or time not in data.columns:
            msg = (f"data must be a DataFrame with the event-time column {time!r} (one row per "
                   "sample of the scored series)")
            raise ConfigError(msg)
        all_times = _ns(data[time], f"data[{time!r}]")
        if keyed:
            assert by is not None
            if by not in data.columns:
                msg = f"labels are keyed by {by!r} but data has no {by!r} column"
                raise ConfigError(msg)
            # integer codes sort ~5x faster than a million strings
            codes, names = pd.factorize(_keys(data[by]), sort=True)
            order = np.lexsort((all_times, codes))
            sorted_codes, sorted_times = codes[order], all_times[order]
            first = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
            bounds = [*first.tolist(), len(sorted_codes)]
            for i, start in enumerate(first.tolist()):
                series_times[names[sorted_codes[start]]] = sorted_times[start:bounds[i + 1]]
        else:
            if by is not None and by in data.columns and data[by].nunique() > 1:
                msg = (f"data holds several series ({by!r} has {data[by].nunique()} values) "
                       f"but labels have no {by!r} column; add it to labels or pass by=None "
                       "to score the rows as one series")
                raise ConfigError(msg)
            series_times[""] = np.sort(all_times)
    det_t = det["_t"].to_numpy()
    det_by_key: dict[str, np.ndarray[Any, Any]] = {}
    if len(det_t):
        key_arr = det_keys.to_numpy()
        for key in np.unique(key_arr).tolist():
            det_by_key[key] = det_t[key_arr == key]
    keys = sorted(set(windows["key"]) | set(det_by_key) | set(series_times))
    rows_mode = positions == "rows"
    per_window: list[pd.DataFrame] = []
    per_series: list[dict[str, Any]] = []
    tp_sum = fp_sum = 0.0
    n_scored = n_found = tp_det = fp_det = ignored = 0
    counts = {"tp": 0, "tn": 0, "fp": 0, "fn": 0}
    empty = np.array([], dtype=np.int64)
    for key in keys:
        w = windows[windows["key"] == key].sort_values(["start", "end"], kind="stable")
        starts = w["start"].to_numpy(dtype=np.int64)
        ends = w["end"].to_numpy(dtype=np.int64)
        times = series_times.get(key)
        d = det_by_key.get(key, empty)
        if data is not None and times is None:
            res = _SeriesResult(["no data"] * len(w), np.full(len(w), _I64_MIN, np.int64),
                                np.full(len(w), np.nan), ignored=len(np.unique(d)))
        else:
            res = _score_series(starts, ends, d, times, probation, rows_mode)
        tp_sum += res.tp_sum
        fp_sum += res.fp_sum
        n_scored += res.n_scored
        n_found += res.n_found
        tp_det += res.tp_detections
        fp_det += res.fp_detections
        ignored += res.ignored
        for c, v in res.counts.items():
            counts[c] += v
        raw_key = (weights["tpWeight"] * res.tp_sum + weights["fpWeight"] * res.fp_sum
                   - weights["fnWeight"] * (res.n_scored - res.n_found))
        per_series.append({
            "key": key if keyed else None,
            "rows": None if times is None else len(times),
            "probation": 0 if times is None else math.ceil(
                probationary_length(len(times), probation)),
            "windows": res.n_scored, "detected": res.n_found,
            "true_positives": res.tp_detections, "false_positives": res.fp_detections,
            "raw_score": raw_key})
        detected = pd.to_datetime(res.detected.view("datetime64[ns]"))  # int64 min is NaT
        start_ts = pd.to_datetime(starts.astype("datetime64[ns]"))
        contrib = np.where(np.array(res.status) == "detected",
                           weights["tpWeight"] * _sigmoid_array(res.position) / _MAX_TP,
                           np.where(np.array(res.status) == "missed", -weights["fnWeight"], 0.0))
        per_window.append(pd.DataFrame({
            "key": [key if keyed else None] * len(w), "start": start_ts,
            "end": pd.to_datetime(ends.astype("datetime64[ns]")), "detected": detected,
            "delay": detected - start_ts, "status": res.status, "position": res.position,
            "score": contrib}))
    columns = ["key", "start", "end", "detected", "delay", "status", "position", "score"]
    frames = [f for f in per_window if len(f)]
    windows_out = (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({
        "key": pd.Series([], dtype=object), "start": pd.Series([], dtype="datetime64[ns]"),
        "end": pd.Series([], dtype="datetime64[ns]"),
        "detected": pd.Series([], dtype="datetime64[ns]"),
        "delay": pd.Series([], dtype="timedelta64[ns]"), "status": pd.Series([], dtype=str),
        "position": pd.Series([], dtype=float), "score": pd.Series([], dtype=float)}))[columns]

    def normalised(w: Mapping[str, float]) -> tuple[float, float, float, float]:
        raw = w["tpWeight"] * tp_sum + w["fpWeight"] * fp_sum - w["fnWeight"] * (
            n_scored - n_found)
        null = -w["fnWeight"] * n_scored
        perfect = w["tpWeight"] * n_scored
        score = 100.0 * (raw - null) / (perfect - null) if perfect != null else math.nan
        return score, raw, null, perfect

    score, raw, null, perfect = normalised(weights)
    delays = windows_out["delay"].dropna()
    return Evaluation(
        precision=tp_det / (tp_det + fp_det) if tp_det + fp_det else 0.0,
        recall=n_found / n_scored if n_scored else 0.0,
        nab_score=score, true_positives=tp_det, false_positives=fp_det,
        false_negatives=n_scored - n_found,
        median_delay=pd.Timedelta(delays.median()) if len(delays) else None,
        windows=windows_out, profile=name,
        scores={p: normalised(PROFILES[p])[0] for p in PROFILES},
        raw_score=raw, null_score=null, perfect_score=perfect, positions=positions,
        counts=counts if rows_mode else None, ignored=ignored,
        series=pd.DataFrame(per_series))


def nab_windows(data: pd.DataFrame, anomaly_times: Any, *, by: str | None = None,
                time: str = "time", window_fraction: float = 0.10,
                probation: float | None = _NAB_PROBATION) -> pd.DataFrame:
    """Labelled windows around anomaly points, built as NAB's labeller builds them.

    Per series of ``n`` rows with ``m`` anomalies (``nab/labeler.py``,
    ``LabelCombiner.applyWindows`` and ``checkWindows``): each anomaly is the row at or after its
    time (NAB requires the exact timestamp of a row); the window length is
    ``L = int(window_fraction * n / m)`` rows and each window runs from row
    ``max(a - L // 2, 0)`` to ``min(a + L // 2, n - 1)``, so all windows of a series cover
    about ``window_fraction`` of it. Then, as NAB: the first window is dropped if it starts
    before the end of the probationary period (row ``min(floor(p * n), p * 5000)``), and each
    window that overlaps the next is merged with it, one pair at a time (NAB's loop: three
    mutually overlapping windows become two).

    Parameters
    ----------
    data
        The series (one row per sample) with ``time`` and, if ``by``, the key column.
    anomaly_times
        The anomaly points: times (list, Series, Index) for one series, or a frame with
        ``time`` (and ``by``) columns.
    by
        The key column of ``data`` and ``anomaly_times`` (``None``: one series).
    time
        The event-time column.
    window_fraction
        NAB's ``windowSize``: the share of each series covered by its windows (0.10).
    probation
        NAB's probationary fraction (0.15); ``None`` or 0 keeps a first window that starts in
        it.

    Returns
    -------
    pandas.DataFrame
        ``start``, ``end`` (and ``by``), one row per window: the ``labels`` of
        :func:`evaluate`.

    Examples
    --------
    >>> import pandas as pd
    >>> data = pd.DataFrame({"time": pd.date_range("2026-01-01", periods=1000, freq="min")})

    1,000 rows and 2 anomalies (rows 400 and 800): windows of ``int(0.1 * 1000 / 2) = 50``,
    rows 375-425 and 775-825:

    >>> nab_windows(data, [data["time"][400], data["time"][800]])
                    start                 end
    0 2026-01-01 06:15:00 2026-01-01 07:05:00
    1 2026-01-01 12:55:00 2026-01-01 13:45:00
    """
    if not isinstance(data, pd.DataFrame) or time not in data.columns:
        msg = f"data must be a DataFrame with the event-time column {time!r}"
        raise ConfigError(msg)
    if not 0.0 < window_fraction <= 1.0:
        msg = f"window_fraction is a share of each series in (0, 1]; got {window_fraction!r}"
        raise ConfigError(msg)
    p = 0.0 if probation is None else probation
    if not 0.0 <= p <= 1.0:
        msg = f"probation is a fraction of each series in [0, 1]; got {probation!r}"
        raise ConfigError(msg)
    if isinstance(anomaly_times, pd.DataFrame):
        column = time if time in anomaly_times.columns else "time"
        if column not in anomaly_times.columns:
            msg = f"anomaly_times has no time column {time!r}"
            raise ConfigError(msg)
        points_t = _ns(anomaly_times[column], "anomaly_times")
        if by is not None:
            if by not in anomaly_times.columns:
                msg = f"anomaly_times has no {by!r} column (by={by!r})"
                raise ConfigError(msg)
            points_k = _keys(anomaly_times[by]).to_numpy()
        else:
            points_k = np.full(len(points_t), "", dtype=object)
    elif by is not None:
        msg = f"with by={by!r}, anomaly_times must be a frame with {time!r} and {by!r} columns"
        raise ConfigError(msg)
    else:
        values = list(anomaly_times) if isinstance(anomaly_times, Iterable) else [anomaly_times]
        points_t = _ns(values, "anomaly_times")
        points_k = np.full(len(points_t), "", dtype=object)
    if by is not None and by not in data.columns:
        msg = f"data has no {by!r} column (by={by!r})"
        raise ConfigError(msg)
    all_times = _ns(data[time], f"data[{time!r}]")
    data_keys = (_keys(data[by]).to_numpy() if by is not None
                 else np.full(len(all_times), "", dtype=object))
    out: list[dict[str, Any]] = []
    for key in sorted(set(points_k.tolist())):
        times = np.sort(all_times[data_keys == key])
        n = len(times)
        if n == 0:
            msg = f"anomalies for {by}={key!r} but data has no row of that series"
            raise ConfigError(msg)
        rows = np.searchsorted(times, points_t[points_k == key], side="left")
        if (rows >= n).any():
            last = pd.Timestamp(times[-1])
            msg = (f"an anomaly time is after the last row ({last}) of "
                   f"{'the series' if by is None else f'{by}={key!r}'}")
            raise ConfigError(msg)
        anomalies = np.unique(rows).tolist()
        length = int(window_fraction * n / len(anomalies))
        half = length // 2
        limits = [[times[max(a - half, 0)], times[min(a + half, n - 1)]] for a in anomalies]
        first_row = math.ceil(probationary_length(n, p))
        probation_time = times[first_row] if first_row < n else _I64_MAX
        if limits and p > 0 and limits[0][0] < probation_time:
            del limits[0]
        i = 0
        while len(limits) - 1 > i:
            if limits[i + 1][0] - limits[i][1] <= 0:
                limits[i] = [limits[i][0], limits[i + 1][1]]
                del limits[i + 1]
            i += 1
        for start, end in limits:
            row: dict[str, Any] = {"start": pd.Timestamp(int(start)),
                                   "end": pd.Timestamp(int(end))}
            if by is not None:
                row[by] = key
            out.append(row)
    columns = ["start", "end"] + ([by] if by is not None else [])
    if not out:
        return pd.DataFrame({c: pd.Series([], dtype="datetime64[ns]" if c in ("start", "end")
                                          else object) for c in columns})
    return pd.DataFrame(out, columns=columns)
