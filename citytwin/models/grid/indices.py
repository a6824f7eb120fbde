"""Reliability indices from load-point figures (IEEE 1366-2012; Billinton & Allan 1996).

For load points i with sustained interruption rate lambda_i (1/yr), annual unavailability U_i
(h/yr), N_i customers and average load L_i (MW)::

    SAIFI = sum(lambda_i N_i) / N_T            interruptions / customer-yr
    SAIDI = sum(U_i N_i) / N_T                 h / customer-yr
    CAIDI = SAIDI / SAIFI                      h / interruption
    ASAI  = 1 - SAIDI / 8760                   (8760 h in a year)
    ENS   = sum(L_i U_i)                       MWh / yr
    AENS  = ENS / N_T                          MWh / customer-yr
    MAIFI = sum(m_i N_i) / N_T                 momentary interruptions (<= 5 min) / customer-yr

and per load point the average outage time r_i = U_i / lambda_i (h).
"""

from __future__ import annotations

import numpy as np

HOURS_PER_YEAR = 8760.0
MOMENTARY_H = 5.0 / 60.0          # IEEE 1366: interruptions up to 5 min are momentary
UNITS = {"SAIFI": "1/customer-yr", "SAIDI": "h/customer-yr", "CAIDI": "h", "ASAI": "1", "ENS": "MWh/yr",
         "AENS": "MWh/customer-yr", "MAIFI": "1/customer-yr", "failure_rate": "1/yr", "unavailability_h": "h/yr",
         "average_outage_time_h": "h", "ens_mwh": "MWh/yr", "load_mw": "MW"}


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b > 0 else None


def system_indices(lam: np.ndarray, unavail: np.ndarray, customers: np.ndarray, load_mw: np.ndarray,
                   momentary: np.ndarray | None = None) -> dict:
    """SAIFI, SAIDI, CAIDI, ASAI, ENS, AENS, MAIFI over the given load points (see module docstring)."""
    customers = np.asarray(customers, float)
    total = float(customers.sum())
    saifi = _ratio(float(lam @ customers), total)
    saidi = _ratio(float(unavail @ customers), total)
    ens = float(np.asarray(load_mw, float) @ unavail)
    out = {"SAIFI": saifi, "SAIDI": saidi,
           "CAIDI": _ratio(saidi, saifi) if saidi is not None and saifi else None,
           "ASAI": 1.0 - saidi / HOURS_PER_YEAR if saidi is not None else None,
           "ENS": ens, "AENS": _ratio(ens, total), "customers": int(total)}
    if momentary is not None:
        out["MAIFI"] = _ratio(float(momentary @ customers), total)
    return out


def load_point_indices(lam: np.ndarray, unavail: np.ndarray, load_mw: np.ndarray) -> dict[str, np.ndarray]:
    """Per load point: failure rate, unavailability, average outage time r = U / lambda, ENS."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(lam > 0, unavail / lam, np.nan)
    return {"failure_rate": lam, "unavailability_h": unavail, "average_outage_time_h": r,
            "ens_mwh": np.asarray(load_mw, float) * unavail}
