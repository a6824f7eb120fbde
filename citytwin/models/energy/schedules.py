"""Hourly schedules: the shape of a building's load over the week and the year.

Two kinds:

* :class:`DailySchedule` - 24 weekday and 24 weekend fractions (0..1, local clock hours), repeated
  over the year (public holidays are not modelled). Occupancy, lighting and plug-load schedules of
  the archetypes are of this kind; only their shape matters, because the demand model scales every
  profile to the archetype's annual energy use intensity.
* :class:`AnnualProfile` - a value per hour of the year, e.g. the IEEE RTS chronological load model
  (:mod:`citytwin.io.load_model`), usable in place of an archetype's electricity schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from citytwin.errors import InputError


def _fractions(values, what: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be 24 numbers") from None
    if arr.shape != (24,):
        raise InputError(f"{what} must have 24 hourly values; got {arr.size}")
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise InputError(f"{what} values must be fractions in 0..1")
    return arr


@dataclass(frozen=True)
class DailySchedule:
    """Fractions for the 24 hours of a weekday (Mon-Fri) and of a weekend day (Sat, Sun)."""

    weekday: np.ndarray
    weekend: np.ndarray

    @classmethod
    def from_mapping(cls, data: dict, what: str) -> "DailySchedule":
        if not isinstance(data, dict) or "weekday" not in data:
            raise InputError(f"{what} needs 'weekday' (and optionally 'weekend') lists of 24 fractions")
        weekday = _fractions(data["weekday"], f"{what}.weekday")
        weekend = _fractions(data.get("weekend", data["weekday"]), f"{what}.weekend")
        return cls(weekday, weekend)

    def expand(self, time: pd.DatetimeIndex) -> np.ndarray:
        """The schedule at each timestamp, (len(time),) float64."""
        hour = time.hour.to_numpy()
        weekend = time.dayofweek.to_numpy() >= 5
        return np.where(weekend, self.weekend[hour], self.weekday[hour])


@dataclass(frozen=True)
class AnnualProfile:
    """A profile defined per hour of the year (hour 0 = 1 January 00:00); any non-negative scale.

    ``values`` of 8,736 (the IEEE RTS year), 8,760 or 8,784 hours; a shorter profile holds its last
    day's values for the missing hours of a longer year (the weekday pattern is then approximate).
    """

    values: np.ndarray
    name: str = "annual"

    def __post_init__(self) -> None:
        v = np.asarray(self.values, dtype=np.float64)
        if v.ndim != 1 or len(v) < 8736 or not np.isfinite(v).all() or v.min() < 0 or v.max() <= 0:
            raise InputError(
                f"annual profile {self.name!r} needs >= 8,736 finite, non-negative hourly values "
                f"with a positive maximum; got {v.size} values"
            )
        object.__setattr__(self, "values", v)

    @classmethod
    def from_load_model(cls, model, name: str = "ieee_rts") -> "AnnualProfile":
        """The IEEE RTS chronological load model (fraction of annual peak) on 8,784 hours."""
        return cls(model.profile(8784), name)

    def expand(self, time: pd.DatetimeIndex) -> np.ndarray:
        start = pd.Timestamp(year=time[0].year, month=1, day=1)
        hour = ((time - start) // pd.Timedelta(hours=1)).to_numpy()
        n = len(self.values)
        # Hold the last full day (24 h pattern) for hours past the end of the profile.
        over = hour >= n
        hour = np.where(over, n - 24 + (hour % 24), hour)
        return self.values[hour]


Schedule = DailySchedule | AnnualProfile
