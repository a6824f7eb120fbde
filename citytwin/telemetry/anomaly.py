"""Online anomaly flags per datastream: EWMA z-score, plausible range, flat line.

Quality-flag bits (stored in ``observations.quality_flags``; see migration 0003):

* ``SPIKE`` (1): ``|x - mu| / max(sigma, sigma_min) > z_limit`` where mu and sigma^2 are the
  exponentially weighted mean and variance *before* x, updated incrementally (Finch 2009,
  "Incremental calculation of weighted mean and variance", eq. 124-125)::

      d = x - mu;  mu <- mu + alpha d;  sigma^2 <- (1 - alpha) (sigma^2 + alpha d^2)

  only after ``warmup`` samples. Values outside the range do not update mu / sigma (they are garbage).
* ``RANGE`` (2): x outside ``[valid_min, valid_max]``.
* ``FLATLINE`` (4): the same value ``flatline_count`` times in a row (stuck sensor).
* ``LATE`` (8): phenomenonTime not after the newest value seen (a redelivery or an out-of-order
  sample): judged against the current state but never used to update it, so duplicates delivered
  again by QoS 1 leave the statistics unchanged.

``ANOMALY_MASK`` (spike | range | flatline) is what the live feed announces. Rules per observed
property are in ``PROPERTY_RULES``; a datastream's ``properties`` may override them with
``valid_min``, ``valid_max``, ``z_limit``, ``flatline_count``, ``sigma_min``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

SPIKE, RANGE, FLATLINE, LATE = 1, 2, 4, 8
ANOMALY_MASK = SPIKE | RANGE | FLATLINE
FLAG_NAMES = {SPIKE: "spike", RANGE: "range", FLATLINE: "flatline", LATE: "late"}
NO_TIME = np.iinfo(np.int64).min
ALPHA = 0.05        # EWMA weight: effective memory ~ 2 / alpha - 1 = 39 samples
WARMUP = 30


@dataclass(frozen=True)
class Rules:
    """Anomaly rules of one datastream (``z_limit`` inf: no spikes; ``flatline_count`` 0: no flat lines)."""

    valid_min: float = -np.inf
    valid_max: float = np.inf
    z_limit: float = 5.0
    flatline_count: int = 0
    sigma_min: float = 1e-9


# Spike rules make no sense for intermittent (rain) or cumulative (energy meter) signals; flat lines
# are normal for them too (no rain, no consumption). Counts are in samples (cadence ~1 min).
PROPERTY_RULES = {
    "air_temperature": Rules(-60.0, 60.0, z_limit=5.0, flatline_count=120, sigma_min=0.2),
    "rainfall_rate": Rules(0.0, 500.0, z_limit=np.inf),
    "water_level": Rules(-50.0, 500.0, z_limit=6.0, flatline_count=720, sigma_min=0.01),
    "active_power": Rules(-5000.0, 5000.0, z_limit=6.0, flatline_count=120, sigma_min=0.05),
    "energy": Rules(0.0, 1e12, z_limit=np.inf),
}


def rules_for(observed_property: str, properties: dict | None) -> Rules:
    """The rules for a datastream: its property's defaults, overridden by its own ``properties``."""
    rules = PROPERTY_RULES.get(observed_property, Rules())
    overrides = {}
    for key in ("valid_min", "valid_max", "z_limit", "sigma_min"):
        value = (properties or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            overrides[key] = float(value)
    count = (properties or {}).get("flatline_count")
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        overrides["flatline_count"] = count
    return replace(rules, **overrides) if overrides else rules


def flag_names(flags: int) -> list[str]:
    return [name for bit, name in FLAG_NAMES.items() if flags & bit]


@dataclass
class AnomalyState:
    """Per-datastream running state, as arrays aligned with a sorted list of datastream ids."""

    n: np.ndarray            # int64 samples used
    mean: np.ndarray         # float64
    var: np.ndarray          # float64
    last_time: np.ndarray    # int64 µs, NO_TIME if none
    last_value: np.ndarray   # float64, NaN if none
    flat_run: np.ndarray     # int64

    @classmethod
    def empty(cls, groups: int) -> "AnomalyState":
        return cls(np.zeros(groups, np.int64), np.zeros(groups), np.zeros(groups),
                   np.full(groups, NO_TIME, np.int64), np.full(groups, np.nan), np.zeros(groups, np.int64))


def _kernel():
    import numba

    @numba.njit(cache=True, nogil=True)
    def flag_groups(starts, times, values, n, mean, var, last_time, last_value, flat_run,
                    vmin, vmax, zlim, flat_limit, sigma_min, alpha, warmup, flags):
        for g in range(len(starts) - 1):
            for i in range(starts[g], starts[g + 1]):
                x = values[i]
                f = 0
                if x != x:          # NaN: a non-numeric result, nothing to judge
                    flags[i] = 0
                    continue
                if x < vmin[g] or x > vmax[g]:
                    f |= 2
                if n[g] >= warmup:
                    sd = np.sqrt(var[g])
                    if sd < sigma_min[g]:
                        sd = sigma_min[g]
                    if abs(x - mean[g]) / sd > zlim[g]:
                        f |= 1
                if times[i] <= last_time[g]:
                    f |= 8
                else:
                    if x == last_value[g]:
                        flat_run[g] += 1
                    else:
                        flat_run[g] = 1
                    if flat_limit[g] > 0 and flat_run[g] >= flat_limit[g]:
                        f |= 4
                    if (f & 2) == 0:
                        if n[g] == 0:
                            mean[g] = x
                            var[g] = 0.0
                        else:
                            d = x - mean[g]
                            incr = alpha * d
                            mean[g] += incr
                            var[g] = (1.0 - alpha) * (var[g] + d * incr)
                        n[g] += 1
                    last_time[g] = times[i]
                    last_value[g] = x
                flags[i] = f

    return flag_groups


_FLAG_GROUPS = None


def flag_observations(starts: np.ndarray, times: np.ndarray, values: np.ndarray, state: AnomalyState,
                      rules: list[Rules]) -> np.ndarray:
    """Quality flags for rows sorted by (datastream, time), updating ``state`` in place.

    Parameters
    ----------
    starts : int64 array, length groups + 1
        Row offsets of each datastream's rows (``starts[g]:starts[g+1]``).
    times : int64 array
        phenomenonTime, µs since the epoch.
    values : float64 array
        Results (NaN for non-numeric results, which get no flags).
    state : AnomalyState
        Running state per group; updated in place.
    rules : list of Rules, one per group
    """
    global _FLAG_GROUPS
    if _FLAG_GROUPS is None:
        _FLAG_GROUPS = _kernel()
    flags = np.zeros(len(values), dtype=np.int16)
    if len(values) == 0:
        return flags
    vmin = np.array([r.valid_min for r in rules], dtype=np.float64)
    vmax = np.array([r.valid_max for r in rules], dtype=np.float64)
    zlim = np.array([r.z_limit for r in rules], dtype=np.float64)
    flat = np.array([r.flatline_count for r in rules], dtype=np.int64)
    sigma = np.array([r.sigma_min for r in rules], dtype=np.float64)
    _FLAG_GROUPS(starts.astype(np.int64), times, values, state.n, state.mean, state.var, state.last_time,
                 state.last_value, state.flat_run, vmin, vmax, zlim, flat, sigma, ALPHA, WARMUP, flags)
    return flags
