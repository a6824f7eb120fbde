"""Calibration statistics of a demand model against metered data (ASHRAE Guideline 14-2014).

With measured m_i and simulated s_i over n intervals and p model parameters (ASHRAE uses p = 1
for calibrated simulation):

    CV(RMSE) = 100 sqrt( sum (m_i - s_i)^2 / (n - p) ) / mean(m)        [%]
    NMBE     = 100 sum (m_i - s_i) / ((n - p) mean(m))                   [%]

A model counts as calibrated on hourly data when CV(RMSE) <= 30 % and |NMBE| <= 10 %
(monthly data: 15 % and 5 %). A positive NMBE means the model under-predicts.
"""

from __future__ import annotations

import numpy as np

from citytwin.errors import InputError

HOURLY_LIMITS = {"cv_rmse_pct": 30.0, "nmbe_pct": 10.0}
MONTHLY_LIMITS = {"cv_rmse_pct": 15.0, "nmbe_pct": 5.0}


def ashrae14(measured, simulated, *, parameters: int = 1, monthly: bool = False) -> dict:
    """CV(RMSE) and NMBE of ``simulated`` against ``measured`` and whether they meet Guideline 14.

    Parameters
    ----------
    measured, simulated : equal-length sequences (same units, e.g. kW per hour); pairs where
        either is NaN are left out.
    parameters : p, the number of model parameters.
    monthly : judge against the monthly limits instead of the hourly ones.

    Returns
    -------
    dict with n, cv_rmse_pct, nmbe_pct and calibrated (bool).
    """
    m = np.asarray(measured, dtype=np.float64).ravel()
    s = np.asarray(simulated, dtype=np.float64).ravel()
    if m.shape != s.shape:
        raise InputError(f"measured ({m.size} values) and simulated ({s.size} values) differ in length")
    keep = ~(np.isnan(m) | np.isnan(s))
    m, s = m[keep], s[keep]
    n = m.size
    if n <= parameters:
        raise InputError(f"need more than {parameters} paired values; got {n}")
    mean = m.mean()
    if mean == 0:
        raise InputError("measured values average to 0: CV(RMSE) and NMBE are undefined")
    residual = m - s
    cv = 100.0 * np.sqrt((residual**2).sum() / (n - parameters)) / mean
    nmbe = 100.0 * residual.sum() / ((n - parameters) * mean)
    limits = MONTHLY_LIMITS if monthly else HOURLY_LIMITS
    ok = cv <= limits["cv_rmse_pct"] and abs(nmbe) <= limits["nmbe_pct"]
    return {"n": int(n), "cv_rmse_pct": float(cv), "nmbe_pct": float(nmbe), "calibrated": bool(ok)}
