"""``River``: any River anomaly detector, one copy per key, run through rtnb's detector protocol.

`River <https://riverml.xyz>`_ implements proven online anomaly detectors
(``river.anomaly``: HalfSpaceTrees, OneClassSVM, LocalOutlierFactor, GaussianScorer, ...).
:class:`River` runs one of them per key inside ``sdf.detect(...)``, with the batch-split
independence, per-key state and checkpoints of every rtnb detector. It needs the ``river``
extra (``pip install 'rtnb[river]'``).
"""

from __future__ import annotations

import copy
import math
import pickle
from typing import Any

import numpy as np
import numpy.typing as npt

from rtnb._net import require
from rtnb.detect.detectors import Bools, Detector, Floats, Ints, _grown
from rtnb.errors import ConfigError
from rtnb.params import Param, resolve

__all__ = ["River"]

#: The feature name a row's value is given under: ``model.score_one({"x": value})``.
FEATURE = "x"


def _final(model: Any, river: Any) -> tuple[Any, Any]:
    """(the AnomalyFilter that classifies scores or None, the detector that scores)."""
    last = model
    if isinstance(model, river.compose.Pipeline):
        last = list(model.steps.values())[-1]
    flt = last if isinstance(last, river.base.AnomalyFilter) else None
    inner = last
    while isinstance(inner, river.base.AnomalyFilter):
        inner = inner.anomaly_detector
    return flt, inner


class River(Detector):
    """A River anomaly detector per key: each row is scored (``score_one``), then learned.

    Each key starts from its own deep copy of ``model`` (a model that has already learned
    starts from what it learned). A row's value is given to the model as one feature,
    ``{"x": value}``: ``score = model.score_one({"x": value})``, then
    ``model.learn_one({"x": value})``. River's supervised scorers of a target
    (``anomaly.GaussianScorer``, ``StandardAbsoluteDeviation``, alone or in a filter) get the
    value as the target instead: ``score_one({}, value)``, ``learn_one({}, value)``. A model
    may be a River pipeline: ``preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees()``
    (HalfSpaceTrees expects features in [0, 1]; the scaler learns each key's range).
    HalfSpaceTrees finds values where the key's recent values seldom are, within the range
    it has seen; a value beyond that range falls in the edge cell of every tree, with the
    key's highest (or lowest) values, and may score low: pair it with a detector of
    spikes (:class:`~rtnb.detect.Anomaly`, ``GaussianScorer``) when those matter.

    ``is_anomaly`` is ``score > threshold``; without ``threshold`` the model must be (or end
    in) a River anomaly filter, whose ``classify(score)`` decides (``anomaly.QuantileFilter``:
    above the key's own running ``q``-quantile of scores, whatever the model's score scale;
    ``anomaly.ThresholdFilter``). A missing value scores ``NaN`` and is not learned. With
    ``protect=True`` a flagged row is not learned, however many come in a row (rtnb's own
    detectors learn them again after ``min_periods``, so that a lasting shift becomes the
    new normal; here it stays flagged). Event time is not used. A pipeline holding a River
    model cannot be exported as a script (:mod:`rtnb.export` writes no River objects).

    Speed: River works one event at a time in Python, and so does this wrapper. Measured on
    the development machine through ``sdf.detect`` (100-row batches, 10 keys): about 14,000
    rows/s for ``MinMaxScaler() | HalfSpaceTrees()`` with River's defaults, 60,000 to
    95,000 for ``GaussianScorer()``, where :class:`~rtnb.detect.ZScore` ran 190,000 (and
    millions in large batches). A snapshot pickles every key's model (HalfSpaceTrees with
    its defaults: about 170 kB per key), so checkpoints grow with the keys.

    Parameters
    ----------
    model
        A River anomaly detector (``learn_one`` and ``score_one``), a pipeline ending in
        one, or an anomaly filter around one. It is copied, never changed.
    threshold
        A row is anomalous when its score is above this (in the model's score units:
        HalfSpaceTrees scores in [0, 1]). ``None``: the model's anomaly filter decides.
    warmup
        Rows of a key learned before its rows are scored (``NaN`` until then). ``None``: the
        detector's own warm-up when it declares one (HalfSpaceTrees' ``window_size``,
        GaussianScorer's ``grace_period``: they score 0 until then), else 1.

    Raises
    ------
    MissingExtraError
        River is not installed.
    ConfigError
        ``model`` is not a River anomaly detector, ``threshold`` is missing for a model
        that is no filter, ``warmup`` is not an int >= 1, or a supervised scorer is inside
        a pipeline.

    Examples
    --------
    >>> import numpy as np
    >>> from river import anomaly, preprocessing
    >>> x = np.r_[np.tile([10.0, 11.0, 30.0, 31.0], 50), 20.0]  # 20 is where none were
    >>> hst = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
    ...     n_trees=5, height=3, window_size=50, seed=1)
    >>> det = River(hst, threshold=0.8)
    >>> det
    River(MinMaxScaler | HalfSpaceTrees, threshold=0.8)
    >>> score, flag = det.process(x)
    >>> int(np.isnan(score).sum()), np.flatnonzero(flag).tolist()  # 50 rows warm up
    (50, [200])

    Per key (each has its own copy of the model), with a scorer of the value itself:

    >>> y = np.r_[np.tile([10.0, 11.0, 12.0, 11.0], 50), 40.0]  # a spike at the end
    >>> det = River(anomaly.GaussianScorer(), threshold=0.999)  # a normal's CDF
    >>> score, flag = det.process(np.r_[y, y], keys=np.repeat([0, 1], len(y)))
    >>> np.flatnonzero(flag).tolist()
    [200, 401]
    """

    def __init__(self, model: Any, *, threshold: float | Param | None = None,
                 warmup: int | None = None) -> None:
        river = require("river", "river")
        if not (callable(getattr(model, "score_one", None))
                and callable(getattr(model, "learn_one", None))):
            msg = (f"River() takes a River anomaly detector (with learn_one and score_one), "
                   f"such as river.anomaly.HalfSpaceTrees(); got {model!r}")
            raise ConfigError(msg)
        flt, inner = _final(model, river)
        self._supervised = isinstance(inner, river.base.SupervisedAnomalyDetector)
        if self._supervised and isinstance(model, river.compose.Pipeline):
            msg = (f"River({model!r}): {type(inner).__name__} scores a target, which a River "
                   f"pipeline does not pass on; use it alone or in an anomaly filter")
            raise ConfigError(msg)
        if threshold is None and flt is None:
            msg = (f"River({model!r}) needs threshold= (a score in the model's units: "
                   f"HalfSpaceTrees scores in [0, 1]) or a River anomaly filter as the model, "
                   f"e.g. river.anomaly.QuantileFilter({type(inner).__name__}(), q=0.999)")
            raise ConfigError(msg)
        if warmup is not None and (isinstance(warmup, bool) or not isinstance(warmup, int)
                                   or warmup < 1):
            msg = f"River warmup must be an int >= 1 (rows of a key); got {warmup!r}"
            raise ConfigError(msg)
        self.model, self.threshold, self.warmup = model, threshold, warmup
        self._warmup = warmup if warmup is not None else self._declared_warmup(inner)
        self._models: list[Any] = []  # per slot: the key's model, None before its first row
        self._filters: list[Any] = []  # per slot: the model's anomaly filter (or None)
        self._learned = np.zeros(0, dtype=np.int64)  # per slot: rows learned
        self._init_slots()

    @staticmethod
    def _declared_warmup(inner: Any) -> int:
        for name in ("window_size", "grace_period"):
            value = getattr(inner, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                return value
        return 1

    def _limit(self) -> float:
        return math.inf if self.threshold is None else float(resolve(self.threshold))

    def _resize(self, n: int) -> None:
        self._models = (self._models + [None] * n)[:n]
        self._filters = (self._filters + [None] * n)[:n]
        self._learned = _grown(self._learned, n, 0)

    def _new_model(self, slot: int, model: Any = None) -> Any:
        model = copy.deepcopy(self.model) if model is None else model
        self._models[slot] = model
        self._filters[slot] = _final(model, require("river", "river"))[0]
        return model

    def _run(self, slots: npt.NDArray[np.intp], t: Ints, x: Floats,
             protect: bool) -> tuple[Floats, Bools]:
        n = len(x)
        scores = np.full(n, np.nan)
        flags = np.zeros(n, dtype=np.bool_)
        models, filters, learned = self._models, self._filters, self._learned
        limit = None if self.threshold is None else self._limit()
        warm, supervised, name = self._warmup, self._supervised, FEATURE
        for i, (slot, v) in enumerate(zip(slots.tolist(), x.tolist(), strict=True)):
            if v != v:  # missing: NaN, not learned
                continue
            model = models[slot]
            if model is None:
                model = self._new_model(slot)
            args: tuple[Any, ...] = ({}, v) if supervised else ({name: v},)
            flag = False
            if learned[slot] >= warm:
                s = float(model.score_one(*args))
                scores[i] = s
                flag = s > limit if limit is not None else bool(filters[slot].classify(s))
                flags[i] = flag
            if not (protect and flag):
                model.learn_one(*args)
                learned[slot] += 1
        return scores, flags

    def _warm_up_hint(self) -> str:
        return f"a key needs {self._warmup} rows before it is scored"

    # checkpoints: each key's model pickled -------------------------------------------------
    def _state(self) -> dict[str, Any]:
        has = [s for s in range(self._n) if self._models[s] is not None]
        return {"keys": self._codes[has].copy(),
                "models": [pickle.dumps(self._models[s]) for s in has],
                "learned": self._learned[has].copy()}

    def _load(self, state: dict[str, Any]) -> None:
        for slot, blob in enumerate(state["models"]):
            self._new_model(slot, pickle.loads(blob))  # our own snapshot
        self._learned[:len(state["models"])] = np.asarray(state["learned"], dtype=np.int64)

    def _from_per_key(self, per_key: dict[int, Any]) -> dict[str, Any]:
        msg = "River snapshots hold 'keys' and 'models'; this one is not a River snapshot"
        raise ConfigError(msg)

    def _save_key(self, key: int) -> Any:
        slot = self._slot_of(key)
        if slot < 0 or self._models[slot] is None:
            return key, None, 0
        return key, pickle.dumps(self._models[slot]), int(self._learned[slot])

    def _restore_key(self, saved: Any) -> None:
        key, blob, learned = saved
        slot = self._slot_of(key)
        if blob is None:
            self._models[slot] = self._filters[slot] = None
        else:
            self._new_model(slot, pickle.loads(blob))  # our own snapshot
        self._learned[slot] = learned

    def __repr__(self) -> str:
        args = [str(self.model)]  # River: "MinMaxScaler | HalfSpaceTrees"
        if self.threshold is not None:
            args.append(f"threshold={self.threshold!r}")
        if self.warmup is not None:
            args.append(f"warmup={self.warmup!r}")
        return f"River({', '.join(args)})"
