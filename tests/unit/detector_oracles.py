"""Plain-Python oracles and helpers the detector tests share (imported by the test modules).

Each oracle computes a detector's scores the textbook way, row by row, so a test can compare
the compiled all-keys kernels with them for any batch split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def floored(scale: Any, level: Any) -> Any:
    """The detectors' scale floor: at least 1e-9 * |level| and 1e-12."""
    return np.maximum(scale, np.maximum(1e-9 * np.abs(level), 1e-12))


def robust_scale(v: np.ndarray) -> float:
    """MAD's scale of a window: 1.4826 MAD, else 1.2533 mean |v - median|
    (Iglewicz-Hoaglin), floored."""
    v = v[~np.isnan(v)]
    med = np.median(v)
    mad = np.median(np.abs(v - med))
    scale = 1.4826 * mad if mad > 0 else 1.2533 * np.mean(np.abs(v - med))
    return float(floored(scale, med))


def random_split(n: int, seed: int, most: int) -> list[slice]:
    """``n`` rows cut into consecutive slices of 1 to ``most`` rows."""
    rng = np.random.default_rng(seed)
    parts, at = [], 0
    while at < n:
        step = int(rng.integers(1, most + 1))
        parts.append(slice(at, at + step))
        at += step
    return parts


def run(det: Any, x: np.ndarray, codes: np.ndarray, t: np.ndarray, parts: list[slice],
        protect: bool = False) -> np.ndarray:
    """The scores of ``det.process`` over the batches ``parts``, concatenated."""
    return np.concatenate([det.process(x[s], codes[s], t[s], protect=protect)[0]
                           for s in parts])


def protected_loop(x: np.ndarray, t: np.ndarray, w: int, mp: int, limit: float,
                   score: Callable[[float, np.ndarray], float], *,
                   two_sided: bool = False) -> np.ndarray:
    """A windowed detector with ``protect``, row by row.

    ``score(x, vals)`` scores a row against the learned values in ``[t - w, t)`` once there
    are ``mp`` of them. A row scored above ``limit`` (in absolute value with ``two_sided``) is
    not learned while the held-out count (+1 per held-out row, -1 per normal row, never below
    0) is below ``mp``; missing values are neither scored nor learned.
    """
    kept_t: list[int] = []
    kept_x: list[float] = []
    out, held = np.full(len(x), np.nan), 0
    for i in range(len(x)):
        vals = np.array([v for tt, v in zip(kept_t, kept_x, strict=True)
                         if t[i] - w <= tt < t[i] and v == v])
        if len(vals) >= mp and x[i] == x[i]:
            out[i] = score(x[i], vals)
        if x[i] != x[i]:
            continue
        flag = (abs(out[i]) if two_sided else out[i]) > limit
        if flag and held < mp:
            held += 1
            continue
        if not flag:
            held = max(held - 1, 0)
        kept_t.append(int(t[i]))
        kept_x.append(float(x[i]))
    return out
