"""The NAB scorer against hand-computed examples from the NAB paper's definitions, and
precision / recall / delay on the bundled incidents."""

from __future__ import annotations

import math

import pandas as pd
import pytest

import rtnb
from rtnb.detect._evaluate import evaluate, scaled_sigmoid

T = pd.Timestamp("2026-01-01")


def at(*minutes: float) -> pd.DataFrame:
    return pd.DataFrame({"time": [T + pd.Timedelta(minutes=m) for m in minutes]})


def window(start: float, end: float) -> dict[str, pd.Timestamp]:
    return {"start": T + pd.Timedelta(minutes=start), "end": T + pd.Timedelta(minutes=end)}


LABELS = pd.DataFrame([window(10, 20), window(50, 60)])
SIG_START = 2 / (1 + math.exp(-5)) - 1  # sigma(-1), the best a detection can earn
PERFECT, NULL = 2 * SIG_START, -2.0


def normalised(raw: float) -> float:
    return 100 * (raw - NULL) / (PERFECT - NULL)


def test_scaled_sigmoid_is_the_papers_curve():
    assert scaled_sigmoid(-1) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(0) == 0
    assert scaled_sigmoid(-0.5) == pytest.approx(2 / (1 + math.exp(-2.5)) - 1)
    assert scaled_sigmoid(3.0) == pytest.approx(2 / (1 + math.exp(15)) - 1)
    assert scaled_sigmoid(3.01) == -1


@pytest.mark.parametrize(("detections", "raw"), [
    ((), -2.0),                                       # nothing detected: the null score
    ((10, 50), PERFECT),                              # both windows at their start
    ((20,), 0.0 - 1.0),                               # one at its end (sigma 0), one missed
    ((15,), scaled_sigmoid(-0.5) - 1.0),              # middle of the first window
    ((10, 12, 14), SIG_START - 1.0),                  # later hits in a window count nothing
    ((0,), -0.11 - 2.0),                              # FP before any window: -A_FP
    ((25,), 0.11 * scaled_sigmoid(0.5) - 2.0),        # FP half a window after the first
    ((55, 100), scaled_sigmoid(-0.5) - 0.11 - 1.0),   # FP 4 windows after: sigma = -1
])
def test_nab_standard_profile_by_hand(detections, raw):
    result = evaluate(at(*detections), LABELS, by=None)
    assert result.nab_score == pytest.approx(normalised(raw))


def test_profiles_weigh_false_negatives_and_positives():
    low_fn = evaluate(at(15), LABELS, by=None, profile="reward_low_fn")
    assert low_fn.nab_score == pytest.approx(
        100 * (scaled_sigmoid(-0.5) - 2 - (-4)) / (PERFECT + 4))
    low_fp = evaluate(at(0, 10, 50), LABELS, by=None, profile="reward_low_fp")
    assert low_fp.nab_score == pytest.approx(normalised(PERFECT - 0.22))


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


def test_bad_profile_is_named():
    with pytest.raises(rtnb.ConfigError, match="profile must be one of"):
        evaluate(at(1), LABELS, profile="lenient")
