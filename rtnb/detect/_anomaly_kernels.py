"""The compiled per-row loop of :class:`rtnb.detect.Anomaly` (numba), every key in one call.

Imported on the detector's first batch, not with ``rtnb``. State per key slot: one row of
``state`` (the columns below), changed in place, so a batch costs time in its rows only.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from rtnb._jit import jit

__all__ = ["COMPONENTS", "NCOL", "NPAR", "anomaly_rows"]

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

#: Evidence components, in the order of the ``why`` codes the kernel writes (0: none).
COMPONENTS = ("spike", "dip", "volatility", "level shift up", "level shift down",
              "new high", "new low", "flatline", "gap", "above the daily pattern",
              "below the daily pattern", "not a finite number")

# state columns (per key slot)
N, PRED, MAE, RAVG, MU_PT, VAR_PT, MU_AVG, VAR_AVG = 0, 1, 2, 3, 4, 5, 6, 7
M_SHORT, M_LONG, V_LONG, MU_LV, VAR_LV = 8, 9, 10, 11, 12
LAST_X, RUN, MAX_RUN, LO, HI, LAST_T, DT_AVG, MAX_GAP, ON, BELOW = (
    13, 14, 15, 16, 17, 18, 19, 20, 21, 22)
# the forecast error's tail beyond _U: how often its z passes _U, and by how much on average
PHI_PT, BETA_PT = 23, 24
# the daily pattern: first time, typical |deviation from the long mean| and from the pattern,
# the residual's short mean and its long-run mean and variance
FIRST_T, MAD_NS, MAD_S, S_SHORT, MU_S, VAR_S = 25, 26, 27, 28, 29, 30
MAE_NZ = 31  # the typical forecast error of rows whose value moved (idle series)
NCOL = 32
BINS = 24  # the daily pattern's bins (hours of the day, UTC)
_DAY = 86_400 * 10**9

# parameters
(P_PRED, P_LONG, P_SHORT, P_LEVEL, P_WARM, P_ON, P_OFF, P_REARM, P_TOL, P_FLAT, P_MINFLAT,
 P_GAP) = range(12)
NPAR = 12

_SQRT2 = math.sqrt(2.0)
_SEED = 10  # rows of a key before its error ratios are learned


@jit
def _upper_tail(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / _SQRT2)


@jit
def _ew(mu: float, var: float, v: float, a: float) -> tuple[float, float]:
    """Exponentially weighted mean and variance after ``v`` (pandas ``adjust=False``)."""
    d = v - mu
    return mu + a * d, (1.0 - a) * (var + a * d * d)


# volatility and level are averages, read with a normal tail, but of z / _WIDE: real series
# have heavier tails than a normal's even after averaging (on the bench corpus and the bundled
# day, 1.2 halved the false alarms of 1.0 for a few missed incidents)
_WIDE = 1.2
_U = 2.0  # the z above which tails are modelled from the key's own exceedances
_PHI0, _BETA0 = 0.0228, 0.37  # a normal z's: P(z > 2), E[z - 2 | z > 2]


@jit
def _tail(z: float, phi: float, beta: float) -> float:
    """P(Z > z): normal up to ``_U``, then ``phi exp(-(z - _U) / beta)``.

    Peaks over a threshold: an exponential tail fitted to the key's own exceedances of
    ``_U`` (as SPOT, Siffer et al., KDD 2017), so heavy-tailed noise needs bigger errors.
    """
    if z <= _U:
        return _upper_tail(z)
    return phi * math.exp(-(z - _U) / beta)


@jit
def _learn_tail(st: Floats, k: int, phi: int, beta: int, z: float, a: float) -> None:
    over = z > _U
    st[k, phi] += a * ((1.0 if over else 0.0) - st[k, phi])
    if over:  # the excess, winsorised at 10 mean excesses, with the weight of ~50 rows
        b = st[k, beta]
        st[k, beta] = b + min(1.0, 50.0 * a) * (min(z - _U, 10.0 * b) - b)


@jit
def _z(v: float, mu: float, var: float, floor: float) -> float:
    return (v - mu) / math.sqrt(max(var, floor))


@jit
def _anomaly_rows(slots: Ints, t: Ints, x: Floats, st: Floats, prof: Floats, seen: Floats,
                  par: Floats, score: Floats, flag: Bools, why: Ints, size: Floats) -> None:
    a_pred, a_long, a_short, a_level = par[P_PRED], par[P_LONG], par[P_SHORT], par[P_LEVEL]
    warm, on_level, off_level, rearm = par[P_WARM], par[P_ON], par[P_OFF], par[P_REARM]
    tol, flat_factor, min_flat, gap_factor = par[P_TOL], par[P_FLAT], par[P_MINFLAT], par[P_GAP]
    for r in range(x.shape[0]):
        k = slots[r]
        xi = x[r]
        ti = t[r]
        score[r] = np.nan
        why[r] = 0
        size[r] = np.nan
        if xi != xi:  # missing: neither scored nor learned
            flag[r] = st[k, ON] > 0
            continue
        if not math.isfinite(xi):  # +/-inf: an incident once warmed up, never learned
            if st[k, N] >= warm:
                score[r], why[r], size[r] = 1.0, 12, xi
                st[k, ON], st[k, BELOW] = 1.0, 0.0
            flag[r] = st[k, ON] > 0
            continue
        n = st[k, N]
        if n == 0:
            st[k, PHI_PT], st[k, BETA_PT] = _PHI0, _BETA0
            st[k, PRED] = xi
            st[k, M_SHORT] = xi
            st[k, M_LONG] = xi
            st[k, LAST_X] = xi
            st[k, LO] = xi
            st[k, HI] = xi
            st[k, LAST_T] = ti
            st[k, FIRST_T] = ti
            st[k, N] = 1.0
            flag[r] = False
            continue
        # -- the evidence, against the state before this row ------------------------------
        level = abs(st[k, M_LONG])
        floor = 1e-9 * level + 1e-300  # a flat history: scales floored, scores finite
        err = abs(xi - st[k, PRED])
        # an idle or quantised series repeats its value most rows: its errors are read against
        # half the typical error of the rows whose value moved, not against a mean near zero
        mae = max(st[k, MAE], 0.5 * st[k, MAE_NZ], floor)
        ratio = err / mae if err > 0 else 0.0
        lr = math.log1p(ratio)
        ravg = st[k, RAVG] + a_short * (lr - st[k, RAVG])
        sd_long = math.sqrt(max(st[k, V_LONG], floor * floor))
        # the short mean takes values clipped to 4 typical errors around it: one outlier
        # moves it little, a lasting shift all the way
        lim = 4.0 * mae
        x_c = min(max(xi, st[k, M_SHORT] - lim), st[k, M_SHORT] + lim)
        m_short = st[k, M_SHORT] + a_level * ((x_c if n >= _SEED else xi) - st[k, M_SHORT])
        lv = (m_short - st[k, M_LONG]) / mae
        # the daily pattern: the deviation from the long mean expected at this hour of day
        b = int((ti % _DAY) // (_DAY // BINS))
        dev = xi - st[k, M_LONG]
        res = dev - prof[k, b]
        mad_s = max(st[k, MAD_S], floor)
        s_short = st[k, S_SHORT] + a_level * (min(max(res / mad_s, -4.0), 4.0) - st[k, S_SHORT])
        # in use once two days are seen and the pattern explains a third of the deviation
        daily = (ti - st[k, FIRST_T] >= 2 * _DAY and seen[k, b] > 0
                 and st[k, MAD_S] < 0.67 * st[k, MAD_NS])
        run = st[k, RUN] + 1.0 if xi == st[k, LAST_X] else 0.0
        dt = float(ti - st[k, LAST_T])
        scored = n >= warm
        if scored:
            var_floor = 1e-6
            z_pt = _z(lr, st[k, MU_PT], st[k, VAR_PT], var_floor)
            z_avg = _z(ravg, st[k, MU_AVG], st[k, VAR_AVG],
                       var_floor * max(st[k, MU_AVG] * st[k, MU_AVG], 1e-6))
            z_lv = abs(_z(lv, st[k, MU_LV], st[k, VAR_LV], var_floor))
            p = 1.0
            code = 0
            mag = 0.0
            q = _tail(z_pt, st[k, PHI_PT], st[k, BETA_PT])
            p_pt = q
            if q < p:
                p, code, mag = q, 1 if xi >= st[k, PRED] else 2, z_pt
            q = _upper_tail(z_avg / _WIDE)
            if q < p:
                p, code, mag = q, 3, z_avg
            q = 2.0 * _upper_tail(z_lv / _WIDE)
            if q < p:
                p, code, mag = q, 4 if lv >= st[k, MU_LV] else 5, z_lv
            span = st[k, HI] - st[k, LO]
            if span > 0:  # beyond the whole range: the forecast error counts more, the more
                q = min(1.0, 10.0 / n) * p_pt  # rows the range holds (records get rarer)
                if q < p and xi > st[k, HI] + tol * span:
                    p, code, mag = q, 6, (xi - st[k, HI]) / span
                elif q < p and xi < st[k, LO] - tol * span:
                    p, code, mag = q, 7, (st[k, LO] - xi) / span
            if daily:
                z_s = abs(_z(s_short, st[k, MU_S], st[k, VAR_S], var_floor))
                q = 2.0 * _upper_tail(z_s / _WIDE)
                if q < p:
                    p, code, mag = q, 10 if s_short >= st[k, MU_S] else 11, z_s
            if run + 1.0 >= max(flat_factor * (st[k, MAX_RUN] + 1.0), min_flat):
                q = 1e-7
                if q < p:
                    p, code, mag = q, 8, run + 1.0
            if st[k, DT_AVG] > 0 and dt > gap_factor * max(st[k, DT_AVG], st[k, MAX_GAP]):
                q = 1e-7
                if q < p:
                    p, code, mag = q, 9, dt / st[k, DT_AVG]
            p = min(1.0, 5.0 * p)  # five independent kinds of evidence: Bonferroni
            s = 1.0 - p
            score[r] = s
            if st[k, ON] > 0:
                if s < off_level:
                    st[k, BELOW] += 1.0
                    if st[k, BELOW] >= rearm:
                        st[k, ON] = 0.0
                else:
                    st[k, BELOW] = 0.0
            elif s >= on_level:
                st[k, ON] = 1.0
                st[k, BELOW] = 0.0
            if s >= off_level:
                why[r] = code
                size[r] = mag
            _learn_tail(st, k, PHI_PT, BETA_PT, z_pt, a_long)
        flag[r] = st[k, ON] > 0
        # -- learn (winsorised once scored, so an incident bends the baselines slowly) ----
        if scored:
            ratio_l = min(ratio, 6.0 * max(math.exp(st[k, MU_PT]), 1.0))
            lr_l = min(lr, st[k, MU_PT] + 3.0 * math.sqrt(max(st[k, VAR_PT], 1e-6)))
            ravg_l = min(ravg, st[k, MU_AVG] + 3.0 * math.sqrt(max(st[k, VAR_AVG], 1e-12)))
            lv_sd = 3.0 * math.sqrt(max(st[k, VAR_LV], 1e-6))
            lv_l = min(max(lv, st[k, MU_LV] - lv_sd), st[k, MU_LV] + lv_sd)
            x_sd = 4.0 * sd_long
            x_l = min(max(xi, st[k, M_LONG] - x_sd), st[k, M_LONG] + x_sd)
        else:
            ratio_l, lr_l, ravg_l, lv_l, x_l = ratio, lr, ravg, lv, xi
        # bias-corrected: a plain mean of the values so far until 1 / n falls below a_long
        a_base = max(a_long, 1.0 / n)
        st[k, MAE] = st[k, MAE] + a_base * (min(err, ratio_l * mae) - st[k, MAE])
        if xi != st[k, LAST_X]:  # a row whose value moved
            nz = st[k, MAE_NZ]
            st[k, MAE_NZ] = nz + max(a_long, 1.0 / n) * (min(err, ratio_l * mae) - nz) \
                if nz > 0 else err
        st[k, M_SHORT] = m_short
        # the daily pattern learns each bin over ~5 days of its rows, winsorised residuals
        per_day = max(1.0, (_DAY / BINS) / max(st[k, DT_AVG], 1.0))
        seen[k, b] += 1.0
        a_bin = max(1.0 / seen[k, b], 1.0 / (5.0 * per_day))
        res_l = min(max(res, -4.0 * mad_s), 4.0 * mad_s) if daily else res
        prof[k, b] += a_bin * res_l
        st[k, MAD_NS] += a_base * (min(abs(dev), 6.0 * max(st[k, MAD_NS], floor))
                                   - st[k, MAD_NS])
        st[k, MAD_S] += a_base * (min(abs(res), 6.0 * mad_s) - st[k, MAD_S])
        st[k, S_SHORT] = s_short
        if ti - st[k, FIRST_T] >= _DAY:
            s_l = s_short
            if daily:
                sd_s = 3.0 * math.sqrt(max(st[k, VAR_S], 1e-6))
                s_l = min(max(s_short, st[k, MU_S] - sd_s), st[k, MU_S] + sd_s)
            st[k, MU_S], st[k, VAR_S] = _ew(st[k, MU_S], st[k, VAR_S], s_l, a_long)
        st[k, M_LONG], st[k, V_LONG] = _ew(st[k, M_LONG], st[k, V_LONG], x_l, a_base)
        if n >= _SEED:  # the ratios mean something once the scales above have a few rows
            if n == _SEED:
                ravg = lr_l
            a_der = max(a_long, 1.0 / (n - _SEED + 1.0))
            st[k, RAVG] = ravg if n == _SEED else st[k, RAVG] + a_short * (lr_l - st[k, RAVG])
            st[k, MU_PT], st[k, VAR_PT] = _ew(st[k, MU_PT], st[k, VAR_PT], lr_l, a_der)
            st[k, MU_AVG], st[k, VAR_AVG] = _ew(st[k, MU_AVG], st[k, VAR_AVG], ravg_l, a_der)
            st[k, MU_LV], st[k, VAR_LV] = _ew(st[k, MU_LV], st[k, VAR_LV], lv_l, a_der)
        st[k, PRED] = st[k, PRED] + a_pred * (xi - st[k, PRED])
        if run == 0.0 and st[k, RUN] > st[k, MAX_RUN]:
            st[k, MAX_RUN] = st[k, RUN]
        st[k, RUN] = run
        st[k, LAST_X] = xi
        st[k, LO] = min(st[k, LO], xi)
        st[k, HI] = max(st[k, HI], xi)
        if dt > 0:
            if st[k, DT_AVG] > 0:
                g = dt / st[k, DT_AVG]
                if scored and g > st[k, MAX_GAP]:
                    st[k, MAX_GAP] = g * st[k, DT_AVG]
                st[k, DT_AVG] = st[k, DT_AVG] + a_long * (min(dt, 3.0 * st[k, DT_AVG])
                                                          - st[k, DT_AVG])
            else:
                st[k, DT_AVG] = dt
            st[k, LAST_T] = ti
        st[k, N] = n + 1.0


def anomaly_rows(slots: Ints, t: Ints, x: Floats, st: Floats, prof: Floats, seen: Floats,
                 par: Floats, score: Floats, flag: Bools, why: Ints, size: Floats) -> None:
    """Score a batch's rows as :class:`~rtnb.detect.Anomaly`; update ``st`` in place.

    Writes per row the likelihood ``score`` (NaN while warming up or for a missing value),
    the incident ``flag``, the strongest component's code ``why`` (1-based index into
    :data:`COMPONENTS`, 0: none) and its size.
    """
    _anomaly_rows(slots, t, x, st, prof, seen, par, score, flag, why, size)
