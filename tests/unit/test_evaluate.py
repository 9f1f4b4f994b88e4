"""rtnb.evaluate against the Numenta Anomaly Benchmark.

Three kinds of cases:
- NAB's own tests, same inputs and expected numbers: ``tests/unit/scorer_test.py``,
  ``tests/unit/sweeper_test.py`` (probationary length), ``tests/integration/scorer_test.py``,
  ``true_positive_test.py``, ``false_positive_test.py``, ``false_negative_test.py``
  (github.com/numenta/NAB; timestamps and windows built as ``nab/test_helpers.py`` does);
- hand-computed cases from NAB's formulas (``nab/sweeper.py``; Lavin & Ahmad 2015): positions
  in rows, probationary period, corpus-level normalisation, overlapping windows, event time;
- precision / recall / delay on the bundled incidents, and NAB's window construction
  (``nab/labeler.py``) in :func:`nab_windows`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import rtnb
from rtnb.detect._evaluate import (
    PROFILES,
    evaluate,
    nab_windows,
    probationary_length,
    scaled_sigmoid,
)

T = pd.Timestamp("2026-01-01")
FIVE_MIN = pd.Timedelta(minutes=5)
S1 = scaled_sigmoid(-1.0)  # NAB's maxTP: 0.9866142981514305


def nab_timestamps(n: int) -> pd.Series:
    """``nab/test_helpers.py`` generateTimestamps: ``n`` stamps 5 minutes apart."""
    return pd.Series([T + i * FIVE_MIN for i in range(n)])


def nab_generate_windows(n: int, num_windows: int, window_size: int) -> list[tuple[int, int]]:
    """``nab/test_helpers.py`` generateWindows, as row indices (first, last)."""
    diff = round((n - num_windows * window_size) / float(num_windows + 1))
    return [(diff * (i + 1) + window_size * i, diff * (i + 1) + window_size * i + window_size - 1)
            for i in range(num_windows)]


def nab_score(n: int, predicted_rows, window_rows, cost, probation: float = 0.0):
    """Score flagged rows of an ``n``-row series the way NAB's tests call its scorer."""
    ts = nab_timestamps(n)
    data = pd.DataFrame({"time": ts})
    labels = pd.DataFrame({"start": [ts[a] for a, _ in window_rows],
                           "end": [ts[b] for _, b in window_rows]},
                          columns=["start", "end"])
    flags = pd.DataFrame({"time": ts, "is_anomaly": [i in set(predicted_rows) for i in range(n)]})
    return evaluate(flags, labels, by=None, data=data, profile=cost, probation=probation,
                    flag="is_anomaly")


# -- NAB tests/unit/scorer_test.py (COST_MATRIX tp 1.1, tn 1.0, fp 0.11, fn 1.2) ------------
UNIT_COST = {"tpWeight": 1.1, "tnWeight": 1.0, "fpWeight": 0.11, "fnWeight": 1.2}
TP = UNIT_COST["tpWeight"]


@pytest.mark.parametrize(("case", "n", "predictions", "windows", "probation", "expected"), [
    ("testNull", 5, [0, 0, 0, 0, 0], [], 0.0, 0.0),
    ("testFalsePositives", 5, [0, 1, 0, 1, 0], [], 0.0, -2.0 * 0.11),
    ("testFalseNegatives", 7, [0] * 7, [(1, 2), (4, 5)], 0.0, -2.0 * 1.2),
    # probationaryPeriod=4 rows of 5: the fraction 0.8 gives floor(0.8 * 5) = 4
    ("testFalsePositivesInProbationary", 5, [0, 1, 0, 1, 0], [], 0.8, 0.0),
    ("testFalsePositivesBeforeAndAfterProbationary", 5, [0, 1, 0, 1, 0], [], 0.6, -1.0 * 0.11),
    ("testTruePositives1", 7, [0, 0, 1, 0, 0, 0, 0], [(1, 2)], 0.0,
     0.8482836399575131 * TP / 0.9866142981514305),
    ("testTruePositives1WithFN", 7, [0, 0, 1, 0, 0, 0, 0], [(1, 2), (4, 5)], 0.0,
     0.8482836399575131 * TP / 0.9866142981514305 - 1.0 * 1.2),
    ("testTruePositives2", 7, [0, 0, 0, 0, 1, 0, 0], [(4, 5)], 0.0,
     0.9866142981514305 * TP / 0.9866142981514305),
    ("testTruePositives3", 7, [0, 0, 0, 0, 1, 1, 0], [(4, 5)], 0.0,
     0.9866142981514305 * TP / 0.9866142981514305),
    ("testTruePositivesMultiple", 7, [0, 0, 1, 0, 1, 0, 0], [(1, 2), (4, 5)], 0.0,
     0.8482836399575131 * TP / 0.9866142981514305 + 0.9866142981514305 * TP
     / 0.9866142981514305),
    ("testFalsePositiveAfterWindow1", 5, [0, 0, 0, 0, 1], [(1, 2)], 0.0,
     -1.0 * 1.2 - 0.9999092042625951 * 0.11),
    ("testFalsePositiveAfterWindow2", 5, [0, 0, 0, 1, 0], [(1, 2)], 0.0,
     -1.0 * 1.2 - 0.9866142981514303 * 0.11),
])
def test_nab_unit_scorer_cases(case, n, predictions, windows, probation, expected):
    rows = [i for i, p in enumerate(predictions) if p]
    result = nab_score(n, rows, windows, UNIT_COST, probation=probation)
    assert result.raw_score == pytest.approx(expected, abs=1e-12), case


# -- NAB tests/unit/sweeper_test.py ----------------------------------------------------------
@pytest.mark.parametrize(("rows", "probation", "expected"), [
    (100, 0.0, 0), (100, 1.0, 100), (100, 0.1, 10), (100, 0.15, 15), (5000, 0.1, 500),
    (6000, 0.1, 500),  # capped at p * 5000
])
def test_nab_sweeper_probationary_length(rows, probation, expected):
    assert probationary_length(rows, probation) == expected


def test_nab_sweeper_window_score_interaction():
    """sweeper_test testCalcSweepScoreWindowScoreInteraction: 100 rows all flagged, windows
    rows 30-39 and 75-95, standard weights, probation 0.1; NAB checks 10 probationary rows,
    31 rows in windows, positive scores inside and negative outside. The total by hand: both
    windows found on their first row (+1 each); rows 10-29 before any window (-0.11 each); rows
    40-74 after a 10-row window, y = (i - 39) / 9; rows 96-99 after a 21-row one,
    y = (i - 95) / 20."""
    result = nab_score(100, range(100), [(30, 39), (75, 95)],
                       {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11}, probation=0.1)
    expected = (2.0 + 20 * -0.11 + sum(0.11 * scaled_sigmoid((i - 39) / 9) for i in range(40, 75))
                + sum(0.11 * scaled_sigmoid((i - 95) / 20) for i in range(96, 100)))
    assert result.raw_score == pytest.approx(expected, abs=1e-12)
    assert result.counts == {"tp": 31, "tn": 0, "fp": 100 - 10 - 31, "fn": 0}
    assert result.ignored == 10
    assert (result.windows["score"] > 0).all()


# -- NAB tests/integration (cost matrix all 1.0) ---------------------------------------------
ONES = {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 1.0, "tnWeight": 1.0}


def counts(tn, tp, fp, fn):
    return {"tn": tn, "tp": tp, "fp": fp, "fn": fn}


def test_nab_scorer_null_case():
    result = nab_score(10, [], [], ONES)
    assert result.raw_score == 0.0
    assert result.counts == counts(10, 0, 0, 0)


def test_nab_scorer_scoring_all_metrics():
    """integration/scorer_test testScoringAllMetrics: TP, an extra TP and a FP -> -0.9540."""
    windows = nab_generate_windows(100, 2, 5)
    first = windows[0][0]
    result = nab_score(100, [first, first + 1, first + 7], windows, ONES)
    assert round(result.raw_score, 4) == -0.9540
    assert result.counts == counts(100 - 5 * 2 - 1, 2, 1, 8)


def test_nab_scorer_reward_low_false_negatives_and_positives():
    windows = nab_generate_windows(100, 1, 10)
    standard = nab_score(100, [], windows, ONES).raw_score
    low_fn = nab_score(100, [], windows, {**ONES, "fnWeight": 2.0, "fpWeight": 0.055}).raw_score
    assert standard == 0.5 * low_fn
    standard = nab_score(100, [0], [], ONES).raw_score
    low_fp = nab_score(100, [0], [], {**ONES, "fpWeight": 2.0, "fnWeight": 0.5}).raw_score
    assert standard == 0.5 * low_fp


def test_nab_false_negatives():
    one = nab_score(1000, [], nab_generate_windows(1000, 1, 10), ONES)
    assert one.raw_score == -ONES["fnWeight"]
    assert one.counts == counts(1000 - 10, 0, 0, 10)
    four = nab_score(2000, [], nab_generate_windows(2000, 4, 10), ONES)
    assert four.raw_score == 4 * -ONES["fnWeight"]
    assert four.counts == counts(2000 - 40, 0, 0, 40)


def test_nab_false_positives():
    windows = nab_generate_windows(1000, 1, 10)
    one = nab_score(1000, [0], windows, ONES)
    assert one.raw_score < 0 and one.counts == counts(1000 - 10 - 1, 0, 1, 10)
    two = nab_score(1000, [0, 1], windows, ONES)
    assert two.raw_score < one.raw_score and two.counts == counts(1000 - 10 - 2, 0, 2, 10)
    no_window = nab_score(1000, [0], [], ONES)
    assert no_window.raw_score == -ONES["fpWeight"]
    small = nab_generate_windows(10, 1, 2)
    after = small[0][1] + 1
    assert nab_score(10, [after], small, ONES).raw_score > nab_score(
        10, [after + 1], small, ONES).raw_score


def test_nab_true_positives():
    windows = nab_generate_windows(10, 1, 2)
    first, last = windows[0]
    at_start = nab_score(10, [first], windows, ONES)
    assert at_start.raw_score == ONES["tpWeight"]
    assert at_start.counts == counts(10 - 2, 1, 0, 1)
    at_end = nab_score(10, [last], windows, ONES)
    assert at_start.raw_score > at_end.raw_score  # testEarlierTruePositiveIsBetter
    both = nab_score(10, [first, last], windows, ONES)  # testOnlyScoreFirstTruePositive...
    assert both.raw_score == at_start.raw_score and both.counts == counts(8, 2, 0, 0)
    wider = nab_generate_windows(10, 1, 3)  # testTruePositivesWithDifferentWindowSizes
    assert nab_score(10, [wider[0][0]], wider, ONES).raw_score == at_start.raw_score
    # testTruePositiveAtRightEdgeOfWindow: TP at the last row + FP just after + 1 (the FN) ~ 0
    big = nab_generate_windows(1000, 1, 100)
    end = big[0][1]
    tp = nab_score(1000, [end], big, ONES).raw_score
    fp = nab_score(1000, [end + 1], big, ONES)
    assert round(tp + fp.raw_score + 1, 3) == 0.0
    assert fp.counts == counts(1000 - 100 - 1, 0, 1, 100)


# -- hand-computed from NAB's formulas -------------------------------------------------------
def test_scaled_sigmoid_is_nabs_curve():
    assert S1 == 0.9866142981514305
    assert scaled_sigmoid(-0.5) == 0.8482836399575131
    assert scaled_sigmoid(0) == 0
    assert scaled_sigmoid(1.0) == -0.9866142981514303
    assert scaled_sigmoid(3.0) == pytest.approx(2 / (1 + math.exp(15)) - 1)
    assert scaled_sigmoid(3.01) == -1


def test_profiles_are_nabs():
    assert PROFILES == {
        "standard": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11, "tnWeight": 1.0},
        "reward_low_FP_rate": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.22,
                               "tnWeight": 1.0},
        "reward_low_FN_rate": {"tpWeight": 1.0, "fnWeight": 2.0, "fpWeight": 0.11,
                               "tnWeight": 1.0}}


def series(n: int) -> pd.DataFrame:
    return pd.DataFrame({"time": nab_timestamps(n)})


def at_rows(data: pd.DataFrame, *rows: int, host: str | None = None) -> pd.DataFrame:
    out = pd.DataFrame({"time": [data["time"].iloc[r] for r in rows]})
    if host is not None:
        out["host"] = host
    return out


def window_rows(data: pd.DataFrame, first: int, last: int, **extra) -> dict:
    return {"start": data["time"].iloc[first], "end": data["time"].iloc[last], **extra}


def test_positions_in_rows_by_hand():
    data = series(200)  # probation: floor(0.15 * 200) = 30 rows
    labels = pd.DataFrame([window_rows(data, 50, 59), window_rows(data, 100, 119)])
    result = evaluate(at_rows(data, 54, 56, 62, 130, 190), labels, by=None, data=data)
    in_first = scaled_sigmoid(-(59 - 54 + 1) / 10) / S1       # first detection only
    fp_62 = 0.11 * scaled_sigmoid((62 - 59) / (59 - 50))      # after the first window
    fp_130 = 0.11 * scaled_sigmoid((130 - 119) / (119 - 100))
    fp_190 = 0.11 * -1.0                                      # y = 71 / 19 > 3
    raw = in_first + fp_62 + fp_130 + fp_190 - 1.0            # second window missed
    assert result.raw_score == pytest.approx(raw, abs=1e-12)
    assert (result.null_score, result.perfect_score) == (-2.0, 2.0)
    assert result.nab_score == pytest.approx(100 * (raw + 2) / 4)
    assert (result.true_positives, result.false_positives, result.false_negatives) == (2, 3, 1)
    assert result.windows["status"].tolist() == ["detected", "missed"]
    assert result.windows["position"].iloc[0] == pytest.approx(-0.6)
    assert result.windows["detected"].iloc[0] == data["time"].iloc[54]


def test_probationary_period_by_default_with_data():
    data = series(1000)  # floor(0.15 * 1000) = 150 rows
    labels = pd.DataFrame([window_rows(data, 500, 599)])
    result = evaluate(at_rows(data, 149, 150, 500), labels, by=None, data=data)
    assert result.ignored == 1
    assert result.raw_score == pytest.approx(1.0 - 0.11)
    assert result.series["probation"].tolist() == [150]
    long = series(10_000)  # capped: min(1500, 0.15 * 5000) = 750 rows
    result = evaluate(at_rows(long, 749, 750), labels.iloc[:0], by=None, data=long)
    assert (result.ignored, result.false_positives) == (1, 1)
    assert evaluate(at_rows(data, 149), labels, by=None, data=data, probation=0.0).ignored == 0


def test_windows_in_the_probationary_period_as_nab():
    data = series(100)  # 15 probationary rows
    labels = pd.DataFrame([window_rows(data, 2, 8), window_rows(data, 10, 19),
                           window_rows(data, 60, 69)])
    result = evaluate(at_rows(data, 12, 16), labels, by=None, data=data)
    # rows 2-8: wholly probationary, not scored; rows 10-19: scored by rows 15-19 only, the
    # detection on row 12 is ignored and the one on row 16 sits at -(19 - 16 + 1) / 10
    assert result.windows["status"].tolist() == ["probation", "detected", "missed"]
    raw = scaled_sigmoid(-0.4) / S1 - 1.0
    assert result.raw_score == pytest.approx(raw)
    assert (result.null_score, result.perfect_score) == (-2.0, 2.0)
    assert result.recall == 0.5 and result.ignored == 1


def test_corpus_is_normalised_as_a_whole_not_per_series():
    data = pd.concat([series(200).assign(host="a"), series(200).assign(host="b")])
    a, b = data[data["host"] == "a"], data[data["host"] == "b"]
    labels = pd.DataFrame([window_rows(a, 50, 59, host="a"), window_rows(a, 100, 109, host="a"),
                           window_rows(b, 100, 109, host="b")])
    hits = pd.concat([at_rows(a, 50, 100, host="a"), at_rows(b, 40, host="b")])
    result = evaluate(hits, labels, data=data)
    raw = 2.0 - 0.11 - 1.0  # a: two windows at their start; b: a FP before its window, missed
    assert result.raw_score == pytest.approx(raw)
    assert result.nab_score == pytest.approx(100 * (raw + 3) / 6)  # 64.83, not (100 - 5.5) / 2
    assert result.series.set_index("key")["raw_score"].to_dict() == pytest.approx(
        {"a": 2.0, "b": -1.11})


def test_every_profile_is_reported():
    data = series(200)
    labels = pd.DataFrame([window_rows(data, 50, 59), window_rows(data, 100, 109)])
    result = evaluate(at_rows(data, 40, 50), labels, by=None, data=data)
    for name, w in PROFILES.items():
        raw = w["tpWeight"] - w["fpWeight"] - w["fnWeight"]
        expected = 100 * (raw + 2 * w["fnWeight"]) / (2 * w["tpWeight"] + 2 * w["fnWeight"])
        assert result.scores[name] == pytest.approx(expected)
    assert result.nab_score == result.scores["standard"]


def test_old_profile_names_are_aliases():
    data = series(200)
    labels = pd.DataFrame([window_rows(data, 50, 59)])
    hits = at_rows(data, 40, 55)
    for old, new in [("reward_low_fp", "reward_low_FP_rate"),
                     ("reward_low_fn", "reward_low_FN_rate")]:
        got = evaluate(hits, labels, by=None, data=data, profile=old)
        assert got.profile == new
        assert got.nab_score == evaluate(hits, labels, by=None, data=data,
                                         profile=new).nab_score


def test_overlapping_windows_follow_nabs_sweeper():
    data = series(200)
    # B starts inside A: from row 20 on the rows are B's (NAB switches to the newest window)
    labels = pd.DataFrame([window_rows(data, 0, 30), window_rows(data, 20, 40)])
    result = evaluate(at_rows(data, 25), labels, by=None, data=data, probation=0.0)
    assert result.windows["status"].tolist() == ["missed", "detected"]
    assert result.raw_score == pytest.approx(scaled_sigmoid(-(40 - 25 + 1) / 21) / S1 - 1.0)
    # B nested in A: after B ends, rows are outside any window; the distance is from B
    labels = pd.DataFrame([window_rows(data, 10, 40), window_rows(data, 20, 30)])
    result = evaluate(at_rows(data, 35), labels, by=None, data=data, probation=0.0)
    assert result.raw_score == pytest.approx(0.11 * scaled_sigmoid(5 / 10) - 2.0)
    # the same window twice: only one is ever entered
    labels = pd.DataFrame([window_rows(data, 10, 20), window_rows(data, 10, 20)])
    result = evaluate(at_rows(data, 10), labels, by=None, data=data, probation=0.0)
    assert result.windows["status"].tolist() == ["shadowed", "detected"]
    assert result.nab_score == 100.0


def test_one_row_window():
    data = series(100)
    labels = pd.DataFrame([window_rows(data, 50, 50)])
    result = evaluate(at_rows(data, 50, 51), labels, by=None, data=data)
    # a hit on the only row is at its start (+A_TP); NAB divides by zero for the FP after it,
    # here the distance is infinite and the cost -A_FP
    assert result.raw_score == pytest.approx(1.0 - 0.11)


def test_detections_map_to_the_row_at_or_after_them():
    data = series(100)
    labels = pd.DataFrame([window_rows(data, 50, 59)])
    between = pd.DataFrame({"time": [data["time"][49] + pd.Timedelta(minutes=2),
                                     data["time"][99] + pd.Timedelta(minutes=1)]})
    result = evaluate(between, labels, by=None, data=data)
    assert result.nab_score == 100.0  # 00:02 after row 49 is row 50, the window's first
    assert result.ignored == 1        # after the last row: no row to score it on


def test_flagged_rows_and_alert_events():
    data = series(100)
    labels = pd.DataFrame([window_rows(data, 50, 59)])
    flags = data.assign(is_anomaly=data.index.isin([52, 53]))
    by_flag = evaluate(flags, labels, by=None, data=data, flag="is_anomaly")
    events = pd.DataFrame({"time": data["time"][[52, 53, 54]], "state": ["firing",
                                                                       "resolved", "firing"]})
    by_events = evaluate(events, labels, by=None, data=data)
    assert by_flag.raw_score == by_events.raw_score == pytest.approx(
        scaled_sigmoid(-(59 - 52 + 1) / 10) / S1)
    assert by_flag.true_positives == 2 and by_events.true_positives == 2


# -- event time (no data) --------------------------------------------------------------------
def at(*minutes: float) -> pd.DataFrame:
    return pd.DataFrame({"time": [T + pd.Timedelta(minutes=m) for m in minutes]})


def window(start: float, end: float) -> dict[str, pd.Timestamp]:
    return {"start": T + pd.Timedelta(minutes=start), "end": T + pd.Timedelta(minutes=end)}


LABELS = pd.DataFrame([window(10, 20), window(50, 60)])


def normalised(raw: float) -> float:
    return 100 * (raw + 2.0) / (2.0 + 2.0)


@pytest.mark.parametrize(("detections", "raw"), [
    ((), -2.0),                                       # nothing detected: the null score
    ((10, 50), 2.0),                                  # both windows at their start
    ((20,), 0.0 - 1.0),                               # one at its end (y = 0), one missed
    ((15,), scaled_sigmoid(-0.5) / S1 - 1.0),         # middle of the first window
    ((10, 12, 14), 1.0 - 1.0),                        # later hits in a window count nothing
    ((0,), -0.11 - 2.0),                              # FP before any window: -A_FP
    ((25,), 0.11 * scaled_sigmoid(0.5) - 2.0),        # FP half a window after the first
    ((55, 100), scaled_sigmoid(-0.5) / S1 - 0.11 - 1.0),  # FP 4 windows after: -A_FP
])
def test_event_time_positions_by_hand(detections, raw):
    result = evaluate(at(*detections), LABELS, by=None)
    assert result.positions == "time" and result.counts is None
    assert result.raw_score == pytest.approx(raw)
    assert result.nab_score == pytest.approx(normalised(raw))


def test_event_time_equals_rows_for_false_positives_on_regular_samples():
    data = series(300)
    labels = pd.DataFrame([window_rows(data, 100, 119)])
    hits = at_rows(data, 100, 125, 140)
    rows = evaluate(hits, labels, by=None, data=data)
    time = evaluate(hits, labels, by=None, data=data, positions="time")
    assert rows.raw_score == pytest.approx(time.raw_score)  # start: both 1.0; FPs: same y
    mid = at_rows(data, 110)
    assert evaluate(mid, labels, by=None, data=data).windows["position"].iloc[0] == -0.5
    assert evaluate(mid, labels, by=None).windows["position"].iloc[0] == pytest.approx(-9 / 19)


def test_precision_recall_delay_and_per_key_matching():
    labels = pd.DataFrame([{**window(10, 20), "host": "a;b"}, {**window(50, 60), "host": "c"}])
    events = pd.DataFrame({
        "time": [T + pd.Timedelta(minutes=m) for m in (12, 14, 55, 30, 11)],
        "host": ["a", "b", "a", "c", "a"],
        "state": ["firing", "firing", "firing", "firing", "resolved"]})
    result = evaluate(events, labels)
    # windows: (a, 10-20) hit at 12, (b, 10-20) hit at 14, (c, 50-60) missed;
    # a@55 is outside a's windows and c@30 precedes c's window: 2 false positives
    assert (result.true_positives, result.false_positives, result.false_negatives) == (2, 2, 1)
    assert result.precision == 0.5 and result.recall == pytest.approx(2 / 3)
    assert result.median_delay == pd.Timedelta(minutes=3)


def test_on_the_bundled_incidents_a_perfect_detector_scores_100():
    incidents = rtnb.datasets.incidents()
    hosts = incidents.assign(host=incidents["host"].str.split(";")).explode("host")
    perfect = pd.DataFrame({"time": hosts["start"].astype("datetime64[ns]"),
                            "host": hosts["host"], "state": "firing"})
    result = evaluate(perfect, incidents)
    assert result.nab_score == pytest.approx(100.0)
    assert result.recall == 1.0 and result.precision == 1.0
    assert evaluate(perfect.iloc[:0], incidents).nab_score == pytest.approx(0.0)
    assert evaluate([], incidents).nab_score == pytest.approx(0.0)


def test_on_the_bundled_day_in_rows():
    day = rtnb.datasets.metrics()
    incidents = rtnb.datasets.incidents()
    hosts = incidents.assign(host=incidents["host"].str.split(";")).explode("host")
    perfect = pd.DataFrame({"time": hosts["start"].astype("datetime64[ns]"),
                            "host": hosts["host"], "state": "firing"})
    result = evaluate(perfect, incidents, data=day, time="timestamp")
    assert result.positions == "rows" and result.nab_score == pytest.approx(100.0)
    # 1-second rows: 86,400 per host, so the probationary period is capped at 750 rows
    assert set(result.series["probation"]) == {750}
    # cache-02 sends nothing from 14:05 to 14:10: its window holds one row (14:10:00)
    silent = result.windows[result.windows["key"] == "cache-02"].iloc[0]
    assert silent["detected"] == pd.Timestamp("2026-01-05 14:10:00")


def test_errors_are_named():
    data = series(10)
    with pytest.raises(rtnb.ConfigError, match="profile must be one of"):
        evaluate(at(1), LABELS, profile="lenient")
    with pytest.raises(rtnb.ConfigError, match="'fpWeight'"):
        evaluate(at(1), LABELS, profile={"tpWeight": 1.0, "fnWeight": 1.0})
    with pytest.raises(rtnb.ConfigError, match="positions='rows' needs `data`"):
        evaluate(at(1), LABELS, positions="rows")
    with pytest.raises(rtnb.ConfigError, match="probation needs `data`"):
        evaluate(at(1), LABELS, probation=0.15)
    with pytest.raises(rtnb.ConfigError, match="ends before it starts"):
        evaluate(at(1), pd.DataFrame([window(5, 1)]), by=None)
    with pytest.raises(rtnb.ConfigError, match="several series"):
        evaluate(at(1), LABELS, data=pd.concat([data.assign(host="a"), data.assign(host="b")]))
    with pytest.raises(rtnb.ConfigError, match="flag='hit' is not a column"):
        evaluate(at(1), LABELS, flag="hit")


def test_custom_weights_match_nab_cost_matrix():
    result = nab_score(7, [2], [(1, 2)], {"tpWeight": 2.0, "fpWeight": 0.5, "fnWeight": 3})
    assert result.profile == "custom"
    assert result.raw_score == pytest.approx(2.0 * 0.8482836399575131 / S1)
    assert result.nab_score == pytest.approx(100 * (result.raw_score + 3) / (2 + 3))


# -- nab_windows: nab/labeler.py applyWindows + checkWindows --------------------------------
def rows_of(data: pd.DataFrame, frame: pd.DataFrame) -> list[tuple[int, int]]:
    index = pd.Index(data["time"])
    return [(index.get_loc(s), index.get_loc(e)) for s, e in zip(frame["start"], frame["end"],
                                                                  strict=True)]


def test_nab_windows_length_and_centring():
    data = series(1000)
    got = nab_windows(data, data["time"][[400, 800]])
    # int(0.10 * 1000 / 2) = 50 rows: from a - 25 to a + 25
    assert rows_of(data, got) == [(375, 425), (775, 825)]
    got = nab_windows(data, data["time"][[990]])  # int(100 / 1) = 100, clipped at the end
    assert rows_of(data, got) == [(940, 999)]
    three = nab_windows(data, data["time"][[300, 600, 900]])  # int(100 / 3) = 33: 16 each side
    assert rows_of(data, three) == [(284, 316), (584, 616), (884, 916)]


def test_nab_windows_drop_the_first_window_in_the_probationary_period():
    data = series(1000)  # probation ends at row 150
    got = nab_windows(data, data["time"][[100, 700]])  # 50 rows: 75-125 starts in it
    assert rows_of(data, got) == [(675, 725)]
    assert rows_of(data, nab_windows(data, data["time"][[100, 700]], probation=None)) == [
        (75, 125), (675, 725)]


def test_nab_windows_merge_overlaps_one_pair_at_a_time():
    data = series(1000)
    assert rows_of(data, nab_windows(data, data["time"][[500, 520]])) == [(475, 545)]
    # NAB's loop moves on after a merge: three overlapping windows become two
    got = nab_windows(data, data["time"][[500, 510, 520]])  # 33 rows: 484-516, 494-526, 504-536
    assert rows_of(data, got) == [(484, 526), (504, 536)]


def test_nab_windows_keyed_and_between_samples():
    data = pd.concat([series(1000).assign(host="a"), series(500).assign(host="b")])
    points = pd.DataFrame({"time": [T + 400 * FIVE_MIN + pd.Timedelta(minutes=1),
                                    T + 300 * FIVE_MIN], "host": ["a", "b"]})
    got = nab_windows(data, points, by="host")
    assert got.columns.tolist() == ["start", "end", "host"]
    assert got["host"].tolist() == ["a", "b"]
    a = data[data["host"] == "a"]
    assert rows_of(a, got.iloc[:1]) == [(401 - 50, 401 + 50)]  # the row after 400
    assert rows_of(a, got.iloc[1:]) == [(300 - 25, 300 + 25)]  # b: int(50 / 1) = 50


def test_nab_windows_then_evaluate():
    data = series(2000)
    labels = nab_windows(data, data["time"][[600, 1500]])
    starts = pd.DataFrame({"time": labels["start"]})
    assert evaluate(starts, labels, by=None, data=data).nab_score == 100.0
    assert np.isnan(evaluate(starts, labels.iloc[:0], by=None, data=data).nab_score)
    with pytest.raises(rtnb.ConfigError, match="after the last row"):
        nab_windows(data, [data["time"].iloc[-1] + FIVE_MIN])
