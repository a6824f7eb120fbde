"""Reader for the IEEE RTS chronological load model (weekly, daily and hourly % of peak).

The IEEE Reliability Test System (IEEE RTS Task Force, "IEEE Reliability Test System", IEEE Trans.
PAS-98(6), 1979, Tables 1-3) defines an hourly load as a percentage of the annual peak:

    L(h) = W[week] / 100  x  D[day of week] / 100  x  H[season, weekday|weekend, hour] / 100

* ``W``: 52 weekly peaks in % of the annual peak (Table 1),
* ``D``: 7 daily peaks in % of the weekly peak, day 1 = Monday (Table 2),
* ``H``: 24 hourly loads in % of the daily peak, by season and weekday/weekend (Table 3), with the
  seasons by week: winter = weeks 1-8 and 44-52, summer = weeks 18-30, spring/fall = weeks 9-17
  and 31-43.

The model covers 52 x 7 x 24 = 8,736 hours; its annual load factor is 61.44 % (the RBTS Bus 2 load
points in ``shared/data/rbts_bus2`` carry 12.291 MW average on 20.0006 MW peak = 61.45 %).

Files (the layout of ``shared/data/rbts_bus2``)::

    load_model_weekly.csv  week, percent_of_annual_peak            (52 rows)
    load_model_daily.csv   day_of_week, percent_of_weekly_peak     (7 rows, 1 = Monday)
    load_model_hourly.csv  hour (1-24), winter_weekday, winter_weekend, summer_weekday,
                           summer_weekend, spring_fall_weekday, spring_fall_weekend
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from citytwin.errors import InputError

RTS_HOURS = 8736  # 52 weeks x 7 days x 24 hours
SEASONS = ("winter", "summer", "spring_fall")
HOURLY_COLUMNS = tuple(f"{s}_{k}" for s in SEASONS for k in ("weekday", "weekend"))


def season_of_week(week: np.ndarray | int) -> np.ndarray:
    """Season index (0 winter, 1 summer, 2 spring/fall) of 1-based RTS week numbers.

    Winter = weeks 1-8 and 44-52, summer = weeks 18-30, spring/fall = weeks 9-17 and 31-43
    (IEEE RTS 1979, Table 3).
    """
    w = np.asarray(week)
    season = np.full(w.shape, 2, dtype=np.int8)
    season[(w <= 8) | (w >= 44)] = 0
    season[(w >= 18) & (w <= 30)] = 1
    return season


@dataclass(frozen=True)
class LoadModel:
    """The three RTS tables as fractions (not percent).

    Attributes
    ----------
    weekly : (52,) fraction of the annual peak per week.
    daily : (7,) fraction of the weekly peak per day, index 0 = Monday.
    hourly : (3, 2, 24) fraction of the daily peak by [season, weekday(0)/weekend(1), hour 0-23].
    """

    weekly: np.ndarray
    daily: np.ndarray
    hourly: np.ndarray

    def profile(self, n_hours: int = RTS_HOURS) -> np.ndarray:
        """The chronological profile in the RTS's own calendar (hour 0 = Monday 00:00 of week 1).

        Parameters
        ----------
        n_hours : number of hours; beyond 8,736 (e.g. 8,760 or 8,784) the weekdays keep cycling and
            week 52's peak is held for the extra day(s).

        Returns
        -------
        (n_hours,) float64 fraction of the annual peak (max 1.0).
        """
        hour = np.arange(n_hours)
        day = hour // 24
        return self._values(np.minimum(day // 7, 51), day % 7, hour % 24)

    def for_time(self, time: pd.DatetimeIndex) -> np.ndarray:
        """The profile on a real calendar: week = (day of year) // 7, weekday from the date.

        Parameters
        ----------
        time : hourly timestamps (local time, interval start).

        Returns
        -------
        (len(time),) float64 fraction of the annual peak.
        """
        time = pd.DatetimeIndex(time)
        week = np.minimum((time.dayofyear.to_numpy() - 1) // 7, 51)
        return self._values(week, time.dayofweek.to_numpy(), time.hour.to_numpy())

    def _values(self, week0: np.ndarray, dow: np.ndarray, hour: np.ndarray) -> np.ndarray:
        season = season_of_week(week0 + 1)
        weekend = (dow >= 5).astype(np.int8)
        return self.weekly[week0] * self.daily[dow] * self.hourly[season, weekend, hour]


def _read_table(path: Path, columns: list[str], rows: int, key: str) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"load model file {path} not found")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"load model file {path} is not a readable CSV: {exc}") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"load model file {path.name} lacks columns {missing}; found {list(frame.columns)}")
    if len(frame) != rows:
        raise InputError(f"load model file {path.name} has {len(frame)} rows; expected {rows}")
    keys = frame[key].to_numpy()
    if not np.array_equal(np.sort(keys), np.arange(1, rows + 1)):
        raise InputError(f"load model file {path.name}: column {key!r} must number the rows 1..{rows}")
    frame = frame.sort_values(key)
    values = frame[columns[1:]].apply(pd.to_numeric, errors="coerce")
    bad = values.isna() | (values <= 0) | (values > 100)
    if bad.to_numpy().any():
        row = int(np.flatnonzero(bad.to_numpy().any(axis=1))[0])
        raise InputError(f"load model file {path.name}: row {key}={keys[row]} has a value outside (0, 100] %")
    return values


def read_load_model(folder: str | Path, prefix: str = "load_model_") -> LoadModel:
    """Read the RTS weekly/daily/hourly tables from ``folder`` (see the module docstring).

    Raises
    ------
    InputError
        A file is missing, has the wrong shape, or a value outside (0, 100] %.
    """
    folder = Path(folder)
    weekly = _read_table(folder / f"{prefix}weekly.csv", ["week", "percent_of_annual_peak"], 52, "week")
    daily = _read_table(
        folder / f"{prefix}daily.csv", ["day_of_week", "percent_of_weekly_peak"], 7, "day_of_week"
    )
    hourly = _read_table(folder / f"{prefix}hourly.csv", ["hour", *HOURLY_COLUMNS], 24, "hour")
    return LoadModel(
        weekly=weekly.iloc[:, 0].to_numpy(np.float64) / 100.0,
        daily=daily.iloc[:, 0].to_numpy(np.float64) / 100.0,
        hourly=hourly.to_numpy(np.float64).T.reshape(3, 2, 24) / 100.0,
    )
