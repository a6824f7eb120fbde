"""The flood scheme against exact and analytical solutions (no mocks, real kernels).

References: lake at rest (exact); the planar moving front of Hunter et al. (2005), used by Bates
et al. (2010) and de Almeida et al. (2012) to test this scheme; volume conservation; a closed
depression filling to the level its volume implies (UK EA benchmark test 2 in spirit); symmetry.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _flood_support import cell_centre, like, make_dem

from citytwin.models.flood import simulate


def _eta(result, dem, k=-1):
    """Water-surface elevation (float64) of the wet cells at output k."""
    h = result.depth.isel(time=k).values.astype("float64")
    return h + dem.values.astype("float64"), h


@pytest.mark.parametrize(("boundary", "exact_depths"), [("closed", False), ("open", False), (2.0, True)])
def test_lake_at_rest_stays_at_rest(boundary, exact_depths):
    # Rough bed with islands above the lake: level 2 m, bed 0..2.6 m. The water must not move: the
    # surface stays flat to 1e-6 m, dry islands stay dry, no water crosses the border. Against a
    # fixed-level border the bed is quantised to 1/1024 m so that the depths 2 - z are exact in
    # float32: otherwise the ghost cells' and the lake's depth roundings (1e-7 m) differ and drive a
    # microscopic circulation through the border reservoir.
    rng = np.random.default_rng(7)
    z = rng.uniform(0.0, 2.6, (40, 50)).astype("float32")
    if exact_depths:
        z = (np.round(z * 1024) / 1024).astype("float32")
    dem = make_dem(z, dx=2.0)
    depth0 = np.maximum(2.0 - z.astype("float64"), 0.0)
    result = simulate(dem, rain=0.0, duration=1800.0, initial_depth=like(dem, depth0), boundary=boundary,
                      output_interval=900.0)
    for k in range(result.sizes["time"]):
        eta, h = _eta(result, dem, k)
        wet = depth0 > 0
        assert np.max(np.abs(eta[wet] - 2.0)) < 1e-6
        assert np.all(h[~wet] == 0.0)
    assert abs(result.attrs["outflow_volume"]) < 1e-6
    assert result.attrs["relative_volume_error"] < 1e-6
    assert result.attrs["steps"] > 100


def _hunter(n: float, u: float, x: np.ndarray, t: float) -> np.ndarray:
    """Hunter et al. (2005): h = [-(7/3) n^2 u^2 (x - u t)]^(3/7) behind the front x = u t, 0 ahead."""
    return np.maximum(-(7.0 / 3.0) * n**2 * u**2 * (x - u * t), 0.0) ** (3.0 / 7.0)


def _moving_front(dx: float, n: float, u: float, duration: float, length: float):
    nx = round(length / dx)
    dem = make_dem(np.zeros((2, nx)), dx=dx)
    # The boundary holds the analytical depth of the ghost cell centre (x = -dx/2) behind the
    # west border (x = 0): the front enters through the border face.
    times = np.linspace(0.0, duration, 1801)
    level = pd.Series(_hunter(n, u, np.full_like(times, -dx / 2), times), index=times)
    result = simulate(dem, rain=0.0, duration=duration, manning=n, boundary={"west": level},
                      output_interval=duration)
    x = result.x.values - result.x.values[0] + dx / 2  # distance from the west border
    h = result.depth.isel(time=-1).values[0].astype("float64")
    exact = _hunter(n, u, x, duration)
    hmax = exact.max()
    front = x[np.argmax(h < 0.05 * hmax)]
    front_exact = x[np.argmax(exact < 0.05 * hmax)]
    return np.max(np.abs(h - exact)) / hmax, abs(front - front_exact) / (u * duration), result


def test_planar_moving_front_matches_hunter_and_converges():
    # n = 0.05, u = 0.2 m/s: the Froude number stays small (Fr^2 = u^2 / (g h) < 0.01 behind the
    # tip), where the analytical solution -- which neglects inertia -- is also the solution of the
    # local inertial equations. (With u = 1 m/s, n = 0.01 inertia is 10-30 % of the gravity term
    # and the inertial front is measurably steeper than Hunter's, on any grid.)
    n, u, duration, length = 0.05, 0.2, 3600.0, 1000.0
    err_coarse, front_coarse, _ = _moving_front(2.5, n, u, duration, length)
    err_fine, front_fine, result = _moving_front(1.25, n, u, duration, length)
    assert err_fine <= 0.05  # depth profile within 5 % of the maximum depth
    assert front_fine <= 0.05  # front position within 5 % of the distance travelled
    assert err_fine <= err_coarse  # refinement must not make it worse
    assert front_fine <= front_coarse + 1.25 / (u * duration)
    inflow = -result.attrs["outflow_volume"]  # net inflow through the west border
    assert inflow > 0
    assert result.attrs["relative_volume_error"] < 1e-6


def test_rain_on_a_closed_basin_conserves_volume():
    # Hyetograph (mm/h, piecewise constant) on rough terrain with nodata holes; closed borders.
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:60, 0:70]
    z = 0.03 * np.hypot(xx - 35, yy - 30) + rng.uniform(0.0, 0.2, (60, 70))
    z[10:14, 10:30] = np.nan
    dem = make_dem(z, dx=1.5)
    hyetograph = pd.Series([20.0, 120.0, 40.0, 0.0], index=pd.to_timedelta([0, 300, 900, 1500], unit="s"))
    result = simulate(dem, rain=hyetograph, duration=2400.0, boundary="closed")
    open_cells = np.isfinite(z).sum()
    expected = (20 * 300 + 120 * 600 + 40 * 600) / 3.6e6 * open_cells * 1.5**2  # m3
    assert result.attrs["rain_volume"] == pytest.approx(expected, rel=1e-12)
    assert result.attrs["final_volume"] == pytest.approx(expected, rel=1e-6)
    assert result.attrs["relative_volume_error"] < 1e-6
    assert abs(result.attrs["outflow_volume"]) == 0.0
    assert np.isnan(result.max_depth.values[11, 15])
    # Stored water equals what the depth maps show (no hidden volume).
    stored = np.nansum(result.depth.isel(time=-1).values.astype("float64")) * 1.5**2
    assert stored == pytest.approx(expected, rel=1e-5)


def test_depression_fills_to_the_level_its_volume_implies():
    # A paraboloid bowl z = r^2 / (2 R) filled from its lowest cell by a triangular hydrograph of
    # 100 m3. When the inflow has stopped and the water settled, the pond must be flat and stand at
    # the level whose volume below it (summed over the DEM cells) is 100 m3.
    dx, R = 1.0, 100.0
    yy, xx = np.mgrid[0:61, 0:61]
    z = ((xx - 30.0) ** 2 + (yy - 30.0) ** 2) * dx**2 / (2 * R)
    dem = make_dem(z, dx=dx)
    hydrograph = pd.Series([0.0, 0.2, 0.0], index=[0.0, 500.0, 1000.0])  # m3/s, 100 m3 in all
    result = simulate(dem, rain=0.0, duration=2400.0, inflows=[(*cell_centre(dem, 30, 30), hydrograph)],
                      boundary="closed", output_interval=1200.0)
    assert result.attrs["inflow_volume"] == pytest.approx(100.0, rel=1e-12)
    eta, h = _eta(result, dem)
    pond = h > 0
    zf = z.ravel()

    def held(level):
        return np.maximum(level - zf, 0.0).sum() * dx**2

    lo, hi = 0.0, 2.0
    for _ in range(60):  # bisection for the level that holds 100 m3
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if held(mid) < 100.0 else (lo, mid)
    implied = 0.5 * (lo + hi)
    assert np.max(np.abs(eta[pond] - implied)) < 1e-3
    assert np.all(h[z < implied - 0.01] > 0)  # every cell below the level is under water
    assert result.attrs["relative_volume_error"] < 1e-6


def test_symmetric_problem_gives_symmetric_result():
    # Bed symmetric under both flips and the transpose, falling towards the open borders with a
    # ring of bumps; rain and a central inflow.
    a = np.abs(np.arange(41) - 20.0)
    g = -0.02 * a**2 / 20 + 0.3 * np.exp(-((a - 9.0) ** 2) / 6.0)
    z = 1.0 + g[:, None] + g[None, :]
    dem = make_dem(z, dx=2.0)
    result = simulate(dem, rain=30.0, duration=1200.0, inflows=[(*cell_centre(dem, 20, 20), 0.4)],
                      boundary="open", output_interval=600.0)
    for k in (1, 2):
        h = result.depth.isel(time=k).values
        assert h.max() > 0.05
        for mirrored in (h[::-1, :], h[:, ::-1], h.T):
            assert np.max(np.abs(h - mirrored)) < 1e-5
    assert result.attrs["outflow_volume"] > 0
    assert result.attrs["relative_volume_error"] < 1e-6


def test_fixed_level_border_fills_a_flat_basin_to_its_level():
    dem = make_dem(np.zeros((10, 24)), dx=5.0)
    result = simulate(dem, rain=0.0, duration=10800.0, boundary={"west": 0.5}, output_interval=3600.0)
    h = result.depth.isel(time=-1).values
    assert np.max(np.abs(h - 0.5)) < 1e-3
    inflow = -result.attrs["outflow_volume"]
    assert inflow == pytest.approx(result.attrs["final_volume"], rel=1e-6)
    # The front reaches the far (east) end: arrival time increases from west to east.
    arrival = result.arrival_time.values[5]
    assert np.all(np.diff(arrival) >= 0)


def test_open_border_lets_water_leave_a_slope():
    yy, xx = np.mgrid[0:30, 0:60]
    z = 3.0 - 0.02 * xx + 0.0 * yy
    dem = make_dem(z, dx=2.0)
    result = simulate(dem, rain=100.0, duration=3600.0, boundary="open")
    attrs = result.attrs
    assert attrs["outflow_volume"] > 0.5 * attrs["rain_volume"]
    assert attrs["relative_volume_error"] < 1e-6
    # Closed borders keep everything.
    closed = simulate(dem, rain=100.0, duration=3600.0, boundary="closed")
    assert closed.attrs["final_volume"] == pytest.approx(closed.attrs["rain_volume"], rel=1e-6)


def test_water_flows_around_an_obstacle_and_point_inflow_volume():
    # A flat channel, an inflow at its west end and a block across its middle with gaps at the sides.
    dem = make_dem(np.zeros((21, 80)), dx=1.0)
    blocked = np.zeros((21, 80), dtype=bool)
    blocked[3:18, 38:44] = True
    q, duration = 0.05, 1800.0
    result = simulate(dem, rain=0.0, duration=duration, obstacles=like(dem, blocked),
                      inflows=[(*cell_centre(dem, 10, 2), q)], boundary="closed")
    hmax = result.max_depth.values
    assert np.all(np.isnan(hmax[blocked]))
    assert np.nanmin(hmax[:, 60:]) > 0.01  # water got past the block, around it
    assert result.attrs["inflow_volume"] == pytest.approx(q * duration, rel=1e-12)
    assert result.attrs["final_volume"] == pytest.approx(q * duration, rel=1e-6)
    # Behind the block (its east side, centre row) water arrives later than beside it.
    assert result.arrival_time.values[10, 45] > result.arrival_time.values[1, 45]
