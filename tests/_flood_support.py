"""Small builders shared by the flood model tests."""

from __future__ import annotations

import numpy as np
import rioxarray  # noqa: F401
import xarray as xr

CRS = "EPSG:28992"
X0, Y0 = 80_000.0, 450_000.0  # lower-left / upper-left origin of synthetic grids (RD New)


def make_dem(z: np.ndarray, dx: float = 1.0, crs: str = CRS) -> xr.DataArray:
    """A north-up DEM (row 0 = north) with cell centres on a regular grid."""
    ny, nx = z.shape
    x = X0 + dx * (np.arange(nx) + 0.5)
    y = Y0 - dx * (np.arange(ny) + 0.5)
    return xr.DataArray(np.asarray(z, dtype="float32"), dims=("y", "x"), coords={"y": y, "x": x},
                        name="elevation").rio.write_crs(crs)


def like(dem: xr.DataArray, values: np.ndarray) -> xr.DataArray:
    """A field on the DEM's grid."""
    field = xr.DataArray(np.asarray(values), dims=dem.dims, coords={"y": dem.y, "x": dem.x})
    return field.rio.write_crs(dem.rio.crs)


def cell_centre(dem: xr.DataArray, row: int, col: int) -> tuple[float, float]:
    return float(dem.x[col]), float(dem.y[row])
