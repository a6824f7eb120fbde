"""Forcing of the flood model: rain, point inflows and their time series.

Time series are given relative to the start of the run: a pandas Series (or an xarray DataArray
with a ``time`` dimension) indexed by seconds or by timedeltas. Rain hyetographs are *piecewise
constant* (an intensity holds from its time stamp to the next one, and the last one to the end of
the run; no rain before the first stamp): the usual way storms are tabulated. Inflow hydrographs
and boundary levels are *piecewise linear* between stamps and held constant beyond the ends.

Each forcing exposes the exact integral over a time step, so the volume the model adds equals the
volume the mass balance books, whatever the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from citytwin.errors import InputError

from .validate import Grid, check_on_grid, horizontal_crs, same_crs

MM_PER_HOUR = 1.0 / 3.6e6  # m/s per mm/h


# --- time series ---------------------------------------------------------------------------------
def as_time_series(obj: Any, name: str, units: str) -> tuple[np.ndarray, np.ndarray]:
    """Times (s, ascending, unique) and values (float64) of a number or a time series."""
    if isinstance(obj, (int, float, np.integer, np.floating)) and not isinstance(obj, bool):
        return np.array([0.0]), np.array([float(obj)])
    if isinstance(obj, xr.DataArray):
        if obj.ndim != 1 or "time" not in obj.dims:
            raise InputError(f"{name}: a time series DataArray must have the single dimension 'time', "
                             f"got {tuple(obj.dims)}")
        obj = obj.to_series()
    if not isinstance(obj, pd.Series):
        raise InputError(f"{name}: expected a number ({units}) or a pandas Series indexed by seconds or "
                         f"timedeltas, got {type(obj).__name__}")
    if len(obj) == 0:
        raise InputError(f"{name}: the time series is empty")
    index = obj.index
    if isinstance(index, pd.TimedeltaIndex):
        times = index.total_seconds().to_numpy(dtype="float64")
    elif isinstance(index, pd.DatetimeIndex):
        raise InputError(f"{name}: time stamps must be relative to the start of the run (seconds or "
                         "timedeltas), not dates; subtract the start time first")
    else:
        try:
            times = np.asarray(index, dtype="float64")
        except (TypeError, ValueError):
            raise InputError(f"{name}: the index must be seconds since the start or timedeltas") from None
    try:
        values = np.asarray(obj.to_numpy(), dtype="float64")
    except (TypeError, ValueError):
        raise InputError(f"{name}: values must be numbers ({units})") from None
    if not (np.all(np.isfinite(times)) and np.all(np.isfinite(values))):
        raise InputError(f"{name}: the time series holds NaN or infinite values")
    if np.any(np.diff(times) <= 0):
        raise InputError(f"{name}: time stamps must be strictly increasing")
    if times[0] < 0:
        raise InputError(f"{name}: negative time stamp {times[0]:g} s; times count from the start of the run")
    return times, values


def step_integral(times: np.ndarray, rates: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Integral from 0 to ``t`` of a piecewise-constant profile (0 before ``times[0]``)."""
    t = np.asarray(t, dtype="float64")
    knots = np.concatenate([times, [max(times[-1], float(np.max(t, initial=0.0))) + 1.0]])
    cum = np.concatenate([[0.0], np.cumsum(rates * np.diff(knots))])
    return np.interp(t, knots, cum, left=0.0)


def linear_integral(times: np.ndarray, values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Integral from ``times[0]`` to ``t`` of a piecewise-linear profile held constant beyond its ends."""
    t = np.asarray(t, dtype="float64")
    if len(times) == 1:
        return values[0] * (t - times[0])
    seg = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2)
    widths = np.diff(times)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (values[:-1] + values[1:]) * widths)])
    slope = np.diff(values) / widths
    tau = t - times[seg]
    inside = np.clip(tau, 0.0, widths[seg])
    out = cum[seg] + values[seg] * inside + 0.5 * slope[seg] * inside**2
    before = t < times[0]
    out = np.where(before, values[0] * (t - times[0]), out)
    after = t > times[-1]
    return np.where(after, cum[-1] + values[-1] * (t - times[-1]), out)


def linear_at(times: np.ndarray, values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Piecewise-linear value at ``t``, held constant beyond the ends."""
    return np.interp(np.asarray(t, dtype="float64"), times, values)


# --- rain ------------------------------------------------------------------------------------------
@dataclass
class Rain:
    """Rain as a temporal profile times an optional spatial pattern.

    Uniform rain: ``field is None`` and ``rates`` are intensities in m/s. Raster rain: ``field`` holds
    the intensity of every cell (m/s, numpy or Dask, float32) and ``rates`` is 1 (dimensionless).
    """

    times: np.ndarray
    rates: np.ndarray
    field: Any = None

    def amount(self, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
        """Integral of the temporal profile over [t0, t1]: m of rain (uniform) or s (raster)."""
        return step_integral(self.times, self.rates, t1) - step_integral(self.times, self.rates, t0)


def parse_rain(rain: Any, grid: Grid) -> Rain:
    """Rain from a constant (mm/h), a hyetograph (Series, mm/h) or a raster (DataArray y, x; mm/h)."""
    if rain is None:
        return Rain(np.array([0.0]), np.array([0.0]))
    if isinstance(rain, xr.DataArray) and rain.ndim == 2:
        field = check_on_grid(rain, grid, "rain")
        data = field.data.astype("float32") * np.float32(MM_PER_HOUR)
        return Rain(np.array([0.0]), np.array([1.0]), field=data)
    if isinstance(rain, xr.DataArray) and rain.ndim > 2:
        raise InputError(f"rain: a {rain.ndim}-D DataArray {tuple(rain.dims)} is not supported; give a "
                         "constant, a hyetograph (time) or a field (y, x) in mm/h")
    times, values = as_time_series(rain, "rain", "mm/h")
    if np.any(values < 0):
        raise InputError(f"rain: negative intensity {values.min():g} mm/h; rain must be >= 0")
    return Rain(times, values * MM_PER_HOUR)


# --- inflows ---------------------------------------------------------------------------------------
@dataclass
class Inflows:
    """Point inflow hydrographs located on grid cells (array row / column of the DEM)."""

    rows: np.ndarray
    cols: np.ndarray
    series: list[tuple[np.ndarray, np.ndarray]]  # (times s, discharge m3/s) per source

    def __len__(self) -> int:
        return len(self.series)

    def volumes(self, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
        """Volume (m3) of every source in every step: shape (steps, sources)."""
        out = np.zeros((len(t0), len(self.series)))
        for k, (times, values) in enumerate(self.series):
            out[:, k] = linear_integral(times, values, t1) - linear_integral(times, values, t0)
        return out


def _inflow_records(inflows: Any) -> tuple[list[tuple[float, float, Any]], Any]:
    """(x, y, discharge) records and the CRS (or None) of the accepted inflow shapes."""
    import geopandas as gpd

    if isinstance(inflows, gpd.GeoDataFrame):
        if "discharge" not in inflows.columns:
            raise InputError("inflows: the GeoDataFrame needs a 'discharge' column (m3/s or a Series)")
        geoms = inflows.geometry
        if not all(g is not None and g.geom_type == "Point" for g in geoms):
            raise InputError("inflows: every geometry must be a Point")
        return [(g.x, g.y, q) for g, q in zip(geoms, inflows["discharge"])], inflows.crs
    if isinstance(inflows, pd.DataFrame):
        missing = {"x", "y", "discharge"} - set(inflows.columns)
        if missing:
            raise InputError(f"inflows: DataFrame lacks columns {sorted(missing)}")
        return list(zip(inflows["x"], inflows["y"], inflows["discharge"])), None
    if isinstance(inflows, dict):
        return [(xy[0], xy[1], q) for xy, q in inflows.items()], None
    try:
        records = []
        for item in inflows:
            if isinstance(item, dict):
                records.append((item["x"], item["y"], item["discharge"]))
            else:
                x, y, q = item
                records.append((x, y, q))
        return records, None
    except (TypeError, ValueError, KeyError):
        raise InputError("inflows: expected (x, y, discharge) tuples, a {(x, y): discharge} dict, "
                         "a DataFrame "
                         "with x, y, discharge or a GeoDataFrame of points with a discharge column") from None


def parse_inflows(inflows: Any, grid: Grid, closed: np.ndarray | None) -> Inflows:
    """Locate point inflows on the grid and check their hydrographs (m3/s, >= 0)."""
    if inflows is None:
        return Inflows(np.zeros(0, "int64"), np.zeros(0, "int64"), [])
    records, crs = _inflow_records(inflows)
    if crs is not None and not same_crs(crs, grid.crs):
        raise InputError(f"inflows: CRS {horizontal_crs(crs).to_string()} differs from the DEM's "
                         f"{grid.crs.to_string()}; reproject them (to_crs)")
    rows, cols, series = [], [], []
    for k, (x, y, q) in enumerate(records):
        times, values = as_time_series(q, f"inflows[{k}] discharge", "m3/s")
        if np.any(values < 0):
            raise InputError(f"inflows[{k}]: negative discharge {values.min():g} m3/s; inflows must be >= 0")
        row, col, inside = grid.cell_of(np.array([x]), np.array([y]))
        if not inside[0]:
            raise InputError(f"inflows[{k}]: point ({x:g}, {y:g}) lies outside the DEM")
        if closed is not None and closed[row[0], col[0]]:
            raise InputError(f"inflows[{k}]: point ({x:g}, {y:g}) falls on a nodata or obstacle cell")
        rows.append(int(row[0]))
        cols.append(int(col[0]))
        series.append((times, values))
    return Inflows(np.array(rows, "int64"), np.array(cols, "int64"), series)
