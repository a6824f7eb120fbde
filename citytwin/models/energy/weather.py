"""Hourly outdoor temperature for the demand model: synthetic climates, validation, degree-hours.

Weather enters the model as an hourly dry-bulb temperature series over one calendar year (8,760 or
8,784 hours): an xarray DataArray/Dataset (``temperature`` over ``time``, e.g. from
:func:`citytwin.io.weather.read_epw`) or a pandas Series with a DatetimeIndex. Times are local clock
times (they place the occupancy schedules), hour starts.

Synthetic weather is a deterministic stand-in when no measured file is at hand:

    T(t) = T_mean - A_year cos(2 pi (d(t) - d_min) / 365.25) - A_day cos(2 pi (h(t) - h_min) / 24) + e(t)

with d the fractional day of year, h the hour of day, the coldest day ``d_min`` = 20 (20 January,
northern hemisphere) and coldest hour ``h_min`` = 5, and e an AR(1) process of hourly persistence
exp(-1/tau) and standard deviation sigma standing for passing weather systems. The climate
parameters are rounded from long-term normals of a representative station; they are stand-ins,
not data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from citytwin.errors import InputError

# Physically possible near-surface air temperatures (degC); outside is a unit or missing-code error.
T_MIN_C, T_MAX_C = -90.0, 60.0
DEFAULT_MAX_GAP_HOURS = 6


@dataclass(frozen=True)
class Climate:
    """Parameters of the synthetic temperature model (all degC except tau in hours)."""

    mean: float
    annual_amplitude: float
    daily_amplitude: float
    sigma: float
    tau_h: float
    station: str


CLIMATES: dict[str, Climate] = {
    # Koppen Dfa, ASHRAE 5A: Chicago O'Hare (Jan ~ -4.6, Jul ~ 23.8 degC); the climate of the DOE
    # commercial reference figures, hence the reference weather of the default archetypes.
    "chicago_5a": Climate(9.8, 14.2, 4.7, 3.5, 48.0, "Chicago O'Hare (Dfa, ASHRAE 5A)"),
    # Dfb, ASHRAE 6A: Minneapolis (Jan ~ -9, Jul ~ 23 degC).
    "cold": Climate(6.5, 16.2, 5.0, 3.5, 48.0, "Minneapolis (Dfb, ASHRAE 6A)"),
    # Cfb: De Bilt, Netherlands (Jan ~ 3.4, Jul ~ 18.1 degC).
    "temperate": Climate(10.5, 7.4, 3.5, 2.5, 36.0, "De Bilt (Cfb)"),
    # Csa: a Mediterranean coast (Jan ~ 9, Jul ~ 25 degC).
    "mediterranean": Climate(16.5, 8.0, 4.5, 2.0, 36.0, "Mediterranean coast (Csa)"),
    # BWh, ASHRAE 2B: Phoenix (Jan ~ 12.8, Jul ~ 35.3 degC).
    "hot": Climate(24.0, 11.2, 6.5, 2.0, 36.0, "Phoenix (BWh, ASHRAE 2B)"),
}
CLIMATE_ALIASES = {
    "reference": "chicago_5a",
    "dfa": "chicago_5a",
    "5a": "chicago_5a",
    "dfb": "cold",
    "6a": "cold",
    "cfb": "temperate",
    "csa": "mediterranean",
    "bwh": "hot",
    "2b": "hot",
}


def resolve_climate(climate: str | Climate) -> Climate:
    """A :class:`Climate` from a name in :data:`CLIMATES`, a Koppen/ASHRAE alias, or itself."""
    if isinstance(climate, Climate):
        return climate
    key = str(climate).strip().lower()
    key = CLIMATE_ALIASES.get(key, key)
    if key not in CLIMATES:
        raise InputError(
            f"unknown climate {climate!r}; known: {sorted(CLIMATES)} or aliases {sorted(CLIMATE_ALIASES)}"
        )
    return CLIMATES[key]


def year_index(year: int) -> pd.DatetimeIndex:
    """Hourly timestamps (hour starts) of one calendar year: 8,760 or 8,784 hours."""
    return pd.date_range(f"{year}-01-01", f"{year + 1}-01-01", freq="h", inclusive="left", name="time")


def synthetic_weather(
    climate: str | Climate = "temperate", *, year: int = 2021, seed: int = 0
) -> xr.DataArray:
    """Deterministic synthetic hourly dry-bulb temperature for one year (see the module docstring).

    Parameters
    ----------
    climate : a name from :data:`CLIMATES` ("chicago_5a", "cold", "temperate", "mediterranean",
        "hot"), an alias ("Dfa", "Dfb", "Cfb", "Csa", "BWh", "reference"), or a :class:`Climate`.
    year : calendar year (sets the length, 8,760 or 8,784 h, and the weekdays).
    seed : seed of the weather noise; the same (climate, year, seed) gives the same series.

    Returns
    -------
    DataArray ``temperature`` (degC, float64) over ``time``.
    """
    c = resolve_climate(climate)
    time = year_index(year)
    day = (time.dayofyear.to_numpy() - 1) + time.hour.to_numpy() / 24.0
    hour = time.hour.to_numpy()
    seasonal = c.mean - c.annual_amplitude * np.cos(2 * np.pi * (day - 20.0) / 365.25)
    diurnal = -c.daily_amplitude * np.cos(2 * np.pi * (hour - 5.0) / 24.0)
    rng = np.random.default_rng(seed)
    phi = np.exp(-1.0 / c.tau_h)
    shocks = rng.standard_normal(len(time)) * c.sigma * np.sqrt(1.0 - phi * phi)
    noise = np.empty(len(time))
    noise[0] = rng.standard_normal() * c.sigma
    for i in range(1, len(time)):  # 8,784 steps at most: a plain loop is fast enough
        noise[i] = phi * noise[i - 1] + shocks[i]
    values = seasonal + diurnal + noise
    return xr.DataArray(
        values,
        coords={"time": time},
        dims="time",
        name="temperature",
        attrs={"units": "degC", "source": f"synthetic: {c.station}, seed {seed}"},
    )


@dataclass(frozen=True)
class PreparedWeather:
    """A validated hourly temperature year."""

    time: pd.DatetimeIndex
    temperature: np.ndarray  # (T,) float64 degC, no NaN
    filled_hours: int  # hours filled by interpolation

    def to_series(self) -> pd.Series:
        """The temperature as a pandas Series over its hourly DatetimeIndex (degC)."""
        return pd.Series(self.temperature, index=self.time, name="temperature")


def _as_series(weather) -> pd.Series:
    if isinstance(weather, xr.Dataset):
        if "temperature" not in weather:
            raise InputError(
                f"weather dataset has no 'temperature' variable; found {list(weather.data_vars)}"
            )
        weather = weather["temperature"]
    if isinstance(weather, xr.DataArray):
        if weather.dims != ("time",):
            raise InputError(
                f"weather temperature must have the single dimension 'time'; found {weather.dims}"
            )
        return pd.Series(
            np.asarray(weather.values, dtype=np.float64), index=pd.DatetimeIndex(weather["time"].values)
        )
    if isinstance(weather, pd.DataFrame):
        if "temperature" not in weather.columns:
            raise InputError(f"weather table has no 'temperature' column; found {list(weather.columns)}")
        weather = weather["temperature"]
    if isinstance(weather, pd.Series):
        if not isinstance(weather.index, pd.DatetimeIndex):
            raise InputError("weather series needs a DatetimeIndex of hourly timestamps")
        return weather.astype(np.float64)
    raise InputError(
        f"weather must be an xarray Dataset/DataArray or a pandas Series/DataFrame; got "
        f"{type(weather).__name__}"
    )


def prepare_weather(weather, *, max_gap_hours: int = DEFAULT_MAX_GAP_HOURS) -> PreparedWeather:
    """Validate an hourly temperature year and fill short gaps.

    Rules: one calendar year of consecutive hours (8,760, or 8,784 in a leap year) at exact 1 h
    steps, starting at 1 January 00:00; a timezone-aware index is read as its local clock time.
    Missing values (NaN) in runs of at most ``max_gap_hours`` are filled by linear interpolation in
    time (at the ends of the year: the nearest value); a longer run is an error, as are values
    outside the physically possible -90..60 degC (usually a unit or missing-code mistake).

    Raises
    ------
    InputError
        Wrong length, irregular or unsorted time steps, a gap longer than ``max_gap_hours``,
        impossible temperatures.
    """
    series = _as_series(weather)
    index = series.index
    if index.tz is not None:
        index = index.tz_localize(None)
    if len(index) == 0:
        raise InputError("weather has no values")
    steps = np.diff(index.asi8)
    hour_ns = 3_600 * 10**9
    if len(steps) and not (steps == hour_ns).all():
        bad = int(np.flatnonzero(steps != hour_ns)[0])
        raise InputError(
            f"weather time steps must be exactly 1 hour and increasing; found a step of "
            f"{pd.Timedelta(int(steps[bad]), 'ns')} after {index[bad]}"
        )
    year = index[0].year
    expected = year_index(year)
    if index[0] != expected[0] or len(index) != len(expected):
        raise InputError(
            f"weather must cover one calendar year hour by hour: {len(expected)} hours from "
            f"{expected[0]} for {year}; got {len(index)} hours from {index[0]}"
        )
    values = series.to_numpy(np.float64).copy()
    values[np.isinf(values)] = np.nan
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        raise InputError("weather temperature is missing at every hour")
    if finite.min() < T_MIN_C or finite.max() > T_MAX_C:
        raise InputError(
            f"weather temperature outside -90..60 degC (min {finite.min():.1f}, max "
            f"{finite.max():.1f}): wrong units or unconverted missing codes (EPW uses 99.9)"
        )
    missing = np.isnan(values)
    filled = 0
    if missing.any():
        # Runs of consecutive missing hours: starts where missing begins, ends where it stops.
        edges = np.diff(np.concatenate(([0], missing.astype(np.int8), [0])))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        lengths = ends - starts
        if lengths.max() > max_gap_hours:
            k = int(np.argmax(lengths))
            raise InputError(
                f"weather has a gap of {int(lengths[k])} missing hours from {index[starts[k]]}; "
                f"gaps of up to {max_gap_hours} h are interpolated, longer ones must be "
                "filled by the user"
            )
        hours = np.arange(len(values))
        values[missing] = np.interp(hours[missing], hours[~missing], values[~missing])
        filled = int(missing.sum())
    return PreparedWeather(time=pd.DatetimeIndex(index, name="time"), temperature=values, filled_hours=filled)


def heating_degree_hours(temperature: np.ndarray, base_c: float) -> np.ndarray:
    """Heating degree-hours per hour, K h: max(T_base - T, 0) (the degree-day method, CIBSE TM41)."""
    return np.maximum(base_c - np.asarray(temperature, dtype=np.float64), 0.0)


def cooling_degree_hours(temperature: np.ndarray, base_c: float) -> np.ndarray:
    """Cooling degree-hours per hour, K h: max(T - T_base, 0)."""
    return np.maximum(np.asarray(temperature, dtype=np.float64) - base_c, 0.0)
