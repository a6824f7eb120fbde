"""Synthetic terrain: a river valley crossing the city, a terrace, gentle hills and low-lying districts.

All positions here are *local* metres (0 at the south-west corner of the street grid, x east,
y north); the city's origin in its CRS is added only when files are written. The terrain is a
closed-form function of position, so the DEM and the buildings' ground elevations can be computed
independently, chunk by chunk, and still agree exactly.

Cross-section of the valley at signed normal distance ``d`` from the river centreline (``h_c`` the
channel half-width, ``h_f`` the floodplain half-width, ``z_w(x)`` the normal water level)::

    channel     |d| <  h_c : z = z_w + 0.6 - 3.1 (1 - (d/h_c)^2)          (bed 2.5 m below water)
    floodplain  |d| <  h_f : z = z_w + 0.6 + (B - 0.6) s(t),  t = (|d| - h_c)/(h_f - h_c)
    terrace     |d| >= h_f : z = z_w + B + g L tanh((|d| - h_f) / L) + hills

with ``s(t) = t^2 (3 - 2t)`` (smoothstep), ``B`` = 3 m terrace height and a rise away from the valley
of ``g`` = 1 % that levels off over ``L`` = 1.5 km (at most ~15 m). Hills (sums of sines) fade in
beyond the valley. Low-lying districts are Gaussian hollows ``-D exp(-r^2/R^2)`` just outside the
floodplain (D = 1.5-2.5 m), so a flood model finds water there first. The water level falls along
the flow (+x) at 0.4 m/km, a typical lowland-river gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BANK_HEIGHT_M = 3.0          # terrace above the normal water level
FLOODPLAIN_ABOVE_WATER_M = 0.6
CHANNEL_DEPTH_M = 2.5        # bed below the normal water level
TERRACE_RISE = 0.01          # m per m away from the floodplain edge ...
TERRACE_RISE_SCALE_M = 1500.0  # ... levelling off over this distance
RIVER_GRADIENT = 0.0004      # m per m along the flow
DEM_NODATA = -9999.0
DEM_MAX_CELLS_PER_SIDE = 4096
DEM_CELL_SIZES = (5.0, 10.0, 20.0, 25.0, 50.0, 100.0)


def smoothstep(t: np.ndarray) -> np.ndarray:
    """``t^2 (3 - 2t)`` for ``t`` clipped to [0, 1]."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class River:
    """A meandering river flowing west to east across the city (local metres).

    Centreline ``y_r(x) = y0 + a1 sin(2 pi x / l1 + p1) + a2 sin(2 pi x / l2 + p2)``.
    """

    y0: float
    a1: float
    l1: float
    p1: float
    a2: float
    l2: float
    p2: float
    half_width: float        # channel half-width h_c, m
    floodplain: float        # floodplain half-width h_f, m
    level0: float            # normal water level at x = 0, m above datum

    @classmethod
    def for_city(cls, width: float, height: float, rng: np.random.Generator) -> "River":
        """A river scaled to a ``width`` x ``height`` city, crossing it a little south of centre."""
        size = max(width, height)
        u = rng.random(8)
        return cls(
            y0=height * (0.36 + 0.08 * u[0]),
            a1=0.06 * height, l1=width * (0.7 + 0.3 * u[1]), p1=2 * np.pi * u[2],
            a2=0.015 * height, l2=width * (0.22 + 0.1 * u[3]), p2=2 * np.pi * u[4],
            half_width=float(np.clip(0.005 * size, 8.0, 60.0)),
            floodplain=float(np.clip(0.05 * size, 60.0, 900.0)),
            level0=140.0 + 10.0 * u[5],
        )

    def centre_y(self, x: np.ndarray) -> np.ndarray:
        return (self.y0 + self.a1 * np.sin(2 * np.pi * x / self.l1 + self.p1)
                + self.a2 * np.sin(2 * np.pi * x / self.l2 + self.p2))

    def centre_slope(self, x: np.ndarray) -> np.ndarray:
        """dy_r/dx of the centreline."""
        return (self.a1 * 2 * np.pi / self.l1 * np.cos(2 * np.pi * x / self.l1 + self.p1)
                + self.a2 * 2 * np.pi / self.l2 * np.cos(2 * np.pi * x / self.l2 + self.p2))

    def offset(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Signed distance from the centreline (m, + north), the vertical offset projected on the normal.

        Exact for a straight river; for these gentle meanders (slope < ~0.6) the error is a few percent.
        """
        return (y - self.centre_y(x)) / np.sqrt(1.0 + self.centre_slope(x) ** 2)

    def level(self, x: np.ndarray) -> np.ndarray:
        """Normal water level (m) falling along the flow."""
        return self.level0 - RIVER_GRADIENT * np.asarray(x, dtype=float)


@dataclass(frozen=True)
class Terrain:
    """The terrain function: river valley + terrace + hills + low-lying hollows (see module docstring)."""

    river: River
    hills: np.ndarray = field(repr=False)        # rows (amplitude m, kx 1/m, ky 1/m, phase)
    hollows: np.ndarray = field(repr=False)      # rows (x, y, radius m, depth m)

    @classmethod
    def for_city(cls, river: River, width: float, height: float, rng: np.random.Generator) -> "Terrain":
        size = max(width, height)
        amp = float(np.clip(0.0015 * size, 1.0, 12.0))
        u = rng.random((4, 4))
        wavelength = size * (0.35 + 0.65 * u[:, 0])
        angle = np.pi * u[:, 1]
        k = 2 * np.pi / wavelength
        hills = np.column_stack([amp * (0.4 + 0.6 * u[:, 2]) / 2, k * np.cos(angle), k * np.sin(angle),
                                 2 * np.pi * u[:, 3]])
        n_hollows = int(np.clip(round(width / 3000.0) + 2, 2, 8))
        v = rng.random((n_hollows, 4))
        hx = width * (0.1 + 0.8 * (np.arange(n_hollows) + v[:, 0]) / n_hollows)
        side = np.where(v[:, 1] < 0.5, -1.0, 1.0)
        hy = river.centre_y(hx) + side * (river.floodplain * (1.1 + 0.4 * v[:, 2]))
        radius = river.floodplain * (0.5 + 0.3 * v[:, 3])
        depth = 1.5 + 1.0 * v[:, 2]
        return cls(river=river, hills=hills, hollows=np.column_stack([hx, hy, radius, depth]))

    def elevation(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Ground elevation (m above datum) at local positions ``x``, ``y`` (same shapes)."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        river = self.river
        ad = np.abs(river.offset(x, y))
        zw = river.level(x)
        hc, hf = river.half_width, river.floodplain
        bank = zw + FLOODPLAIN_ABOVE_WATER_M
        channel = bank - (FLOODPLAIN_ABOVE_WATER_M + CHANNEL_DEPTH_M) * (1 - (ad / hc) ** 2)
        plain = zw + FLOODPLAIN_ABOVE_WATER_M + (BANK_HEIGHT_M - FLOODPLAIN_ABOVE_WATER_M) * smoothstep(
            (ad - hc) / (hf - hc))
        scale = TERRACE_RISE_SCALE_M
        terrace = zw + BANK_HEIGHT_M + TERRACE_RISE * scale * np.tanh((ad - hf) / scale)
        z = np.where(ad < hc, channel, np.where(ad < hf, plain, terrace))
        # Hills fade in over one floodplain width beyond the valley edge, keeping the valley floor flat.
        fade = smoothstep((ad - hf) / hf)
        for amp, kx, ky, phase in self.hills:
            z += fade * amp * np.sin(kx * x + ky * y + phase)
        for hx, hy, radius, depth in self.hollows:
            z -= depth * np.exp(-((x - hx) ** 2 + (y - hy) ** 2) / radius ** 2)
        return z


@dataclass(frozen=True)
class DemGrid:
    """The DEM raster: north-up cells of ``cell`` m; ``xmin``/``ymax`` in local metres."""

    xmin: float
    ymax: float
    cell: float
    width: int
    height: int

    @classmethod
    def covering(cls, width: float, height: float) -> "DemGrid":
        """The smallest listed cell size (>= 5 m) keeping both sides under 4096 cells, with a margin."""
        margin = max(50.0, 0.03 * max(width, height))
        for cell in DEM_CELL_SIZES:
            m = np.ceil(margin / cell) * cell
            nx = int(np.ceil((width + 2 * m) / cell))
            ny = int(np.ceil((height + 2 * m) / cell))
            if max(nx, ny) <= DEM_MAX_CELLS_PER_SIDE or cell == DEM_CELL_SIZES[-1]:
                return cls(xmin=-m, ymax=-m + ny * cell, cell=cell, width=nx, height=ny)
        raise AssertionError("unreachable")

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) in local metres."""
        return (self.xmin, self.ymax - self.height * self.cell, self.xmin + self.width * self.cell, self.ymax)

    def cell_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) of the cells containing the local points."""
        col = np.floor((np.asarray(x) - self.xmin) / self.cell).astype(np.int64)
        row = np.floor((self.ymax - np.asarray(y)) / self.cell).astype(np.int64)
        return np.clip(row, 0, self.height - 1), np.clip(col, 0, self.width - 1)

    def cell_centres(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.xmin + (cols + 0.5) * self.cell, self.ymax - (rows + 0.5) * self.cell


def sample_cells(terrain: Terrain, dem: DemGrid, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The DEM value (float32, as stored) of the cell containing each local point."""
    rows, cols = dem.cell_of(x, y)
    cx, cy = dem.cell_centres(rows, cols)
    return terrain.elevation(cx, cy).astype(np.float32)


def write_dem(path: Path, terrain: Terrain, dem: DemGrid, origin: tuple[float, float], crs: str,
              strip_rows: int = 256) -> Path:
    """Write the terrain as a tiled, deflate-compressed float32 GeoTIFF, one strip of rows at a time.

    Memory is bounded by one strip (``strip_rows`` x width cells) whatever the city size.
    """
    import rasterio
    from rasterio.transform import Affine
    from rasterio.windows import Window

    path = Path(path)
    transform = Affine(dem.cell, 0.0, origin[0] + dem.xmin, 0.0, -dem.cell, origin[1] + dem.ymax)
    profile = dict(driver="GTiff", width=dem.width, height=dem.height, count=1, dtype="float32", crs=crs,
                   transform=transform, nodata=DEM_NODATA, compress="deflate", predictor=3,
                   tiled=True, blockxsize=256, blockysize=256)
    if dem.width * dem.height * 4 > 3_000_000_000:
        profile["BIGTIFF"] = "YES"
    partial = path.with_name(path.name + ".partial")
    cols = np.arange(dem.width)
    with rasterio.open(partial, "w", **profile) as dst:
        for top in range(0, dem.height, strip_rows):
            rows = np.arange(top, min(top + strip_rows, dem.height))
            rr, cc = np.meshgrid(rows, cols, indexing="ij")
            cx, cy = dem.cell_centres(rr, cc)
            band = terrain.elevation(cx, cy).astype(np.float32)
            dst.write(band, 1, window=Window(0, top, dem.width, len(rows)))
    partial.replace(path)
    return path
