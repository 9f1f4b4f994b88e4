"""``MatrixProfile``: stumpy's incremental matrix profile (``stumpi``) per key, as a detector.

A matrix profile scores a *shape*: each run of ``m`` rows against its nearest match among
the earlier runs of the key (z-normalised Euclidean distance, so level and scale do not
matter). A shape never seen before (a missing beat, a bent cycle, noise where there was a
pattern) scores high even when every value is within the usual range. `stumpy
<https://stumpy.readthedocs.io>`_ maintains it incrementally (``stumpy.stumpi``, the
STOMPI algorithm of Yeh et al.); :class:`MatrixProfile` runs one per key inside
``sdf.detect(...)``. It needs the ``stumpy`` extra (``pip install 'rtnb[stumpy]'``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from rtnb._net import require
from rtnb.detect.detectors import Bools, Detector, Floats, Ints, _grown
from rtnb.errors import ConfigError
from rtnb.params import Param, resolve

__all__ = ["MatrixProfile"]


def _stumpy() -> Any:
    return require("stumpy", "stumpy")


def _state_of(stream: Any) -> dict[str, Any]:
    """A stumpi object's data (arrays copied), without its constant-test function."""
    return {k: v.copy() if isinstance(v, np.ndarray) else v
            for k, v in vars(stream).items() if not callable(v)}


class MatrixProfile(Detector):
    """Per key, how unlike every earlier run of ``m`` rows the latest run is (its shape).

    Each row is appended to its key's ``stumpy.stumpi`` matrix profile; the row's score is
    the *left* matrix profile value of the run of ``m`` rows ending at it (its z-normalised
    distance ``d`` to the nearest earlier run, outside stumpy's exclusion zone of ``m / 4``
    rows), normalised as ``d / sqrt(2 m)``, which equals ``sqrt(1 - r)`` with ``r`` the
    Pearson correlation of the two runs: 0 is a shape seen before, 1 one unrelated to every
    earlier run (as two runs of white noise are), up to ``sqrt(2)`` for the exact opposite.
    A run of equal values matches another such run exactly and scores ``sqrt(1/2)`` against
    any other shape (stumpy's rule for constant runs). ``score > threshold`` is an anomaly;
    as the run ending at a row holds the ``m - 1`` rows before it, one odd row raises the
    scores of the ``m`` rows from it on.

    There is no default ``threshold``: how closely a key's shapes repeat is the data's own
    (a clean cycle scores near 0, a noisy one 0.1 to 0.3, noise about 0.7); look at a key's
    scores first, or feed them to an rtnb detector of their own.

    A key's rows are learned from its first row; until it has ``window`` rows its rows score
    ``NaN`` (the profile grows row by row, stumpy's ``update``). From then, with
    ``egress=True`` (the default), each row also drops the key's oldest, so the profile
    covers the key's last ``window`` rows and a row costs the same for ever; with
    ``egress=False`` it keeps every row of the key (memory and time per row grow with it).
    A missing value scores ``NaN`` and is skipped (the runs are of the non-missing values).
    ``protect`` is ignored: leaving a row out would splice the runs around it. Event time
    is not used.

    Speed: one stumpy call per row in Python (its kernels are compiled by numba, and run in
    one thread here: a few hundred values per call gain nothing from more): on the
    development machine about 5,500 rows/s through ``sdf.detect`` (100-row batches, 10
    keys; m = 20, window = 200 and m = 50, window = 1,000 alike). numba compiles stumpy's
    kernels on a process's first rows, in about 10 seconds. A snapshot holds each key's
    profile arrays (about 10 numbers per row of the window).

    Parameters
    ----------
    m
        Rows in a run (the length of the shapes compared): about one cycle or one event of
        the data. There is no default: no length suits every series.
    window
        Rows of a key before it is scored, and with ``egress`` the rows its profile covers
        (default ``10 * m``; at least ``3 * m``).
    threshold
        A score above this is an anomaly (``sqrt(1 - r)``, see above).
    egress
        Forget a key's oldest row with each new one once it has ``window`` rows.

    Raises
    ------
    MissingExtraError
        stumpy is not installed.
    ConfigError
        ``m`` is not an int >= 3 or ``window`` not an int >= ``3 * m``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.sin(np.arange(300) * 2 * np.pi / 20)  # a cycle of 20 rows
    >>> x[250:255] = 1.0  # stuck at the top for five rows
    >>> det = MatrixProfile(m=10, threshold=0.3, window=100)
    >>> score, flag = det.process(x)
    >>> int(np.isnan(score).sum())  # 100 rows warm up
    100
    >>> np.flatnonzero(flag).tolist()  # the runs of 10 rows that hold a stuck row
    [250, 251, 252, 253, 254, 255, 256, 257, 258, 259, 260, 261, 262, 263]
    >>> float(np.nanmax(score[100:250])) < 1e-3  # every earlier shape repeats
    True
    """

    def __init__(self, m: int, *, threshold: float | Param, window: int | None = None,
                 egress: bool = True) -> None:
        _stumpy()
        if isinstance(m, bool) or not isinstance(m, int) or m < 3:
            msg = f"MatrixProfile m (rows in a run) must be an int >= 3; got {m!r}"
            raise ConfigError(msg)
        rows = 10 * m if window is None else window
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 3 * m:
            msg = (f"MatrixProfile window must be an int >= 3 * m = {3 * m} (rows of a key "
                   f"before it is scored); got {window!r}")
            raise ConfigError(msg)
        self.m, self.window, self.threshold, self.egress = m, window, threshold, bool(egress)
        self._rows = rows
        self._streams: list[Any] = []  # per slot: the key's stumpi, once it has m rows
        self._firsts: list[list[float]] = []  # per slot: its first rows, until then
        self._learned = np.zeros(0, dtype=np.int64)  # per slot: rows learned
        self._init_slots()

    def _limit(self) -> float:
        return float(resolve(self.threshold))

    def _resize(self, n: int) -> None:
        self._streams = (self._streams + [None] * n)[:n]
        self._firsts = (self._firsts + [[] for _ in range(n)])[:n]
        self._learned = _grown(self._learned, n, 0)

    def _start(self, values: list[float], stumpy: Any) -> Any:
        """A growing stumpi over a key's first ``m`` rows.

        A single run has no match, so its profile is given: no ``stumpy.stump`` call (whose
        compilation takes ~30 s on the development machine).
        """
        none = np.array([[np.inf, -1, -1, -1]])  # P, I, left I, right I
        return stumpy.stumpi(np.asarray(values), self.m, egress=False, mp=none)

    def _sliding(self, grown: Any, stumpy: Any) -> Any:
        """The growing stumpi of ``window`` rows as one that drops a row per row from now on.

        stumpi takes a precomputed profile as (P, I, left I, right I); it reads the first
        three (the right indices are not kept by a stumpi, and not needed).
        """
        n = len(grown.I_)
        mp = np.column_stack([grown.P_, grown.I_, grown.left_I_, np.full(n, -1)])
        return stumpy.stumpi(grown.T_, self.m, egress=True, mp=mp)

    def _run(self, slots: npt.NDArray[np.intp], t: Ints, x: Floats,
             protect: bool) -> tuple[Floats, Bools]:
        stumpy = _stumpy()
        numba = require("numba", "stumpy")
        n = len(x)
        scores = np.full(n, np.nan)
        streams, firsts, learned = self._streams, self._firsts, self._learned
        m, rows, egress, norm = self.m, self._rows, self.egress, math.sqrt(2.0 * self.m)
        threads = numba.get_num_threads()
        numba.set_num_threads(1)  # a few hundred values per call: threads only cost here
        try:
            for i, (slot, v) in enumerate(zip(slots.tolist(), x.tolist(), strict=True)):
                if v != v:  # missing: NaN, skipped
                    continue
                stream = streams[slot]
                if stream is None:
                    firsts[slot].append(v)
                    if len(firsts[slot]) == m:
                        streams[slot] = self._start(firsts[slot], stumpy)
                        firsts[slot] = []
                else:
                    stream.update(v)
                    if learned[slot] >= rows:
                        scores[i] = float(stream.left_P_[-1]) / norm
                learned[slot] += 1
                if egress and learned[slot] == rows:
                    streams[slot] = self._sliding(streams[slot], stumpy)
        finally:
            numba.set_num_threads(threads)
        return scores, scores > self._limit()

    def _warm_up_hint(self) -> str:
        return f"a key needs {self._rows} rows (window) before it is scored"

    # checkpoints: each key's profile arrays ------------------------------------------------
    def _state(self) -> dict[str, Any]:
        has = [s for s in range(self._n) if self._learned[s] > 0]
        return {"keys": self._codes[has].copy(),
                "streams": [None if self._streams[s] is None else _state_of(self._streams[s])
                            for s in has],
                "firsts": [list(self._firsts[s]) for s in has],
                "learned": self._learned[has].copy()}

    def _revive(self, data: dict[str, Any]) -> Any:
        """A stumpi holding ``data`` (from :func:`_state_of`).

        It is built through its constructor, so it has the functions stumpi sets up itself.
        """
        stream = self._start(list(np.asarray(data["_T"])[:self.m]), _stumpy())
        stream.__dict__.update({k: v.copy() if isinstance(v, np.ndarray) else v
                                for k, v in data.items()})
        return stream

    def _load(self, state: dict[str, Any]) -> None:
        for slot, (data, first) in enumerate(zip(state["streams"], state["firsts"],
                                                 strict=True)):
            self._streams[slot] = None if data is None else self._revive(data)
            self._firsts[slot] = list(first)
        self._learned[:len(state["firsts"])] = np.asarray(state["learned"], dtype=np.int64)

    def _from_per_key(self, per_key: dict[int, Any]) -> dict[str, Any]:
        msg = "MatrixProfile snapshots hold 'keys' and 'streams'; this one is not one of them"
        raise ConfigError(msg)

    def _save_key(self, key: int) -> Any:
        slot = self._slot_of(key)
        if slot < 0:
            return key, None, [], 0
        stream = self._streams[slot]
        return (key, None if stream is None else _state_of(stream), list(self._firsts[slot]),
                int(self._learned[slot]))

    def _restore_key(self, saved: Any) -> None:
        key, data, first, learned = saved
        slot = self._slot_of(key)
        self._streams[slot] = None if data is None else self._revive(data)
        self._firsts[slot] = first
        self._learned[slot] = learned

    def __repr__(self) -> str:
        args = [f"m={self.m!r}", f"threshold={self.threshold!r}"]
        if self.window is not None:
            args.append(f"window={self.window!r}")
        if not self.egress:
            args.append("egress=False")
        return f"MatrixProfile({', '.join(args)})"
