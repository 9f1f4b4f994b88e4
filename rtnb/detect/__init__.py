"""Anomaly detectors, per key and vectorised over each micro-batch (River-style verbs).

Every detector keeps state per key across batches and scores each row against what came
*before* it (a point never explains itself away): ``learn(batch)`` folds rows into the
state, ``score(batch)`` scores rows against the state, ``learn_one`` / ``score_one`` do the
same for one value. ``sdf.detect(detector, on="cpu", by="host")`` adds ``score`` and
``is_anomaly`` columns to a stream. With ``protect=True`` rows found anomalous are kept out of
the learned state (so a long incident does not become the new normal).

Detectors here: :class:`Threshold`, :class:`ZScore` (rolling mean and standard deviation
over a row or event-time window), :class:`EWMA` (exponentially weighted mean and variance),
:class:`RateOfChange`, :class:`RollingQuantile`, :class:`MAD` (rolling median absolute
deviation), and the recommended :class:`Anomaly` (no arguments: an anomaly likelihood from
several kinds of evidence, with a reason per row); with optional extras, :class:`River` (any
River anomaly model per key, ``rtnb[river]``) and :class:`MatrixProfile` (stumpy's
incremental matrix profile, ``rtnb[stumpy]``); :func:`absence` notices keys that stopped
sending. Alert rules (:func:`alert`, also ``rtnb.alert``) turn a condition into
Prometheus-style pending / firing / resolved transitions per key; :func:`evaluate` scores
them against labelled incidents (precision, recall, delay, and the Numenta Anomaly
Benchmark's score by its exact rules; :func:`nab_windows` builds NAB's windows around
labelled points).
"""

from rtnb.detect._absence import absence
from rtnb.detect._evaluate import Evaluation, evaluate, nab_windows
from rtnb.detect._river import River
from rtnb.detect._stumpy import MatrixProfile
from rtnb.detect.alerts import AlertRule, alert
from rtnb.detect.anomaly import Anomaly
from rtnb.detect.detectors import (
    EWMA,
    MAD,
    Detector,
    RateOfChange,
    RollingQuantile,
    Threshold,
    WarmUpWarning,
    ZScore,
)

__all__ = ["EWMA", "MAD", "AlertRule", "Anomaly", "Detector", "Evaluation", "MatrixProfile",
           "RateOfChange", "River", "RollingQuantile", "Threshold", "WarmUpWarning", "ZScore",
           "absence", "alert", "evaluate", "nab_windows"]
