"""Analytical (failure modes and effects) reliability evaluation of a radial grid.

For each load point p, summing over failure modes k (rate lambda_k, repair time r_k) that interrupt
it (Billinton & Allan, *Reliability Evaluation of Power Systems*, 2nd ed. 1996, ch. 7; the method
of the RBTS papers, Allan et al. 1991)::

    lambda_p = sum_k lambda_k                          (sustained interruptions, 1/yr)
    U_p      = sum_k lambda_k * t_kp                   (h/yr)
    t_kp     = switching time if p is restored by switching, else r_k

where the effect (restored by switching or by repair, and when) comes from FLISR on the normal
grid (:mod:`citytwin.models.grid.effects`). Single failures only (first-order: overlapping
failures are neglected, as in the published RBTS results).
"""

from __future__ import annotations

import numpy as np

from citytwin.models.grid.effects import FailureEffects


def load_point_rates(effects: FailureEffects) -> dict[str, np.ndarray]:
    """Per load point: sustained rate (1/yr), unavailability (h/yr) and momentary rate (1/yr)."""
    lam_z, lam_r_z = effects.zone_rates()
    sus = effects.sustained_switched
    timed = effects.switched.multiply(sus).tocsr()        # switching times of sustained restorations only
    lam = sus.T @ lam_z + effects.repaired.T @ lam_z
    unavail = timed.T @ lam_z + effects.repaired.T @ lam_r_z
    momentary = effects.momentary_switched.T @ lam_z
    return {"failure_rate": np.asarray(lam, float), "unavailability_h": np.asarray(unavail, float),
            "momentary_rate": np.asarray(momentary, float)}
