"""The result Dataset of a flood run and its volume balance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from .domain import Domain
from .engine import Numerics

F32 = np.float32


@dataclass
class RunResult:
    """Raw outcome of a run, before it becomes a Dataset (arrays unpadded, numpy or Dask)."""

    times: list[float]
    frames: Any  # (time, y, x) numpy array, or a list of Dask maps
    hmax: Any
    tarr: Any
    outflow: float = 0.0
    rain_in: float = 0.0
    inflow_in: float = 0.0
    stored_end: float = 0.0
    steps: int = 0
    dt_min: float = np.inf
    dt_max: float = 0.0
    extra: dict = field(default_factory=dict)

    def book(self, plan, forcing) -> None:
        """Add a block of steps' forcing volumes and step statistics."""
        self.rain_in += plan.rain_volume(forcing)
        self.inflow_in += plan.inflow_volume()
        self.steps += plan.n
        self.dt_min = min(self.dt_min, plan.dt)
        self.dt_max = max(self.dt_max, plan.dt)


def volume_balance(result, domain: Domain) -> dict[str, float]:
    """Volumes (m3, float64) in, out and stored, and the balance error.

    ``volume_error = final - (initial + rain + inflow - outflow)``; the relative error divides it
    by the water that was there or entered (initial + rain + inflow + net inflow through the border
    when the border, e.g. a fixed level, supplied water).
    """
    initial = domain.stored0
    error = result.stored_end - (initial + result.rain_in + result.inflow_in - result.outflow)
    supplied = initial + result.rain_in + result.inflow_in + max(-result.outflow, 0.0)
    return {
        "rain_volume": result.rain_in,
        "inflow_volume": result.inflow_in,
        "outflow_volume": result.outflow,
        "initial_volume": initial,
        "final_volume": result.stored_end,
        "volume_error": error,
        "relative_volume_error": abs(error) / supplied if supplied > 0 else 0.0,
    }


def to_dataset(result, domain: Domain, num: Numerics) -> xr.Dataset:
    """``depth``, ``max_depth``, ``arrival_time`` on the DEM grid, with the balance in ``attrs``."""
    grid = domain.grid
    closed = result.hmax < 0
    nan = F32(np.nan)
    hmax = np.where(closed, nan, result.hmax)
    tarr = np.where(closed, nan, result.tarr)
    if isinstance(result.frames, np.ndarray):  # in-memory run: (time, y, x), filled in place
        depth = result.frames
        depth[:, closed] = nan
    else:
        import dask.array as da

        depth = da.stack([da.where(closed, nan, f) for f in result.frames])
    yx = (grid.y_dim, grid.x_dim)
    coords = {"time": np.asarray(result.times, dtype="float64"), grid.y_dim: grid.y, grid.x_dim: grid.x}
    ds = xr.Dataset(
        {
            "depth": (("time",) + yx, depth, {"units": "m", "long_name": "water depth"}),
            "max_depth": (yx, hmax, {"units": "m", "long_name": "maximum water depth over the run"}),
            "arrival_time": (yx, tarr, {"units": "s", "long_name":
                                        f"first time the depth exceeded {num.arrival_threshold:g} m"}),
        },
        coords=coords,
    )
    ds["time"].attrs.update(units="s", long_name="time since the start of the run")
    ny, nx = grid.shape
    ds.attrs.update(volume_balance(result, domain))
    ds.attrs.update(
        model="citytwin.models.flood (local inertial, de Almeida et al. 2012)",
        cell_size=grid.dx, theta=num.theta, alpha=num.alpha, dt_max=num.dt_max,
        exchange_steps=num.exchange_steps, arrival_threshold=num.arrival_threshold,
        depth_threshold=num.depth_threshold, steps=result.steps,
        cell_updates=float(result.steps) * ny * nx,
        dt_smallest=float(result.dt_min) if result.steps else 0.0,
        dt_largest=float(result.dt_max),
        **{k: v for k, v in result.extra.items() if isinstance(v, (int, float, str))},
    )
    return ds.rio.write_crs(grid.crs)
