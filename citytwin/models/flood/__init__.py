"""Urban flood model: local inertial shallow water on a DEM (LISFLOOD-FP "ACC" scheme).

Public API
----------
simulate(dem, *, rain, duration, ...) -> xarray.Dataset
    depth maps, maximum depth, arrival time and the volume balance of a run.
sample(result, features) -> pandas.DataFrame
    maximum depth and arrival time at assets (points, lines, polygons such as buildings).
rasterize_obstacles(footprints, dem) -> xarray.DataArray
    building footprints as blocked cells of the DEM grid.
"""

from .obstacles import rasterize_obstacles
from .sampling import sample
from .solver import simulate

__all__ = ["rasterize_obstacles", "sample", "simulate"]
