"""Reference frames for 3D Tiles: from the twin's CRS (+ vertical datum) to WGS 84 geodetic, ECEF and ENU.

The twin stores orthometric heights (e.g. NAP, EPSG:5709, for Dutch data in RD New, EPSG:28992); 3D Tiles
wants positions in EPSG:4978 (WGS 84 geocentric, metres), which is tied to *ellipsoidal* heights::

    h = H + N(lat, lon)

with ``H`` the orthometric height and ``N`` the geoid (or quasi-geoid) undulation. In the Netherlands ``N`` is
about 43 m, so a transformation that drops it (PROJ's "ballpark vertical transformation") buries every
building 43 m under the ellipsoid surface CesiumJS draws. :class:`GeoReference` therefore chooses the height
model explicitly and says which one it used:

``exact``
    The EPSG operation from the compound CRS (e.g. ``EPSG:28992+5709``) to EPSG:4979 with its geoid grid
    (``nl_nsgi_nlgeo2018.tif`` for NAP). Used when PROJ can find the grid: installed in a PROJ data directory
    (``projsync --file nl_nsgi_nlgeo2018.tif``) or downloadable (``PROJ_NETWORK=ON``).
``egm96``
    Fallback when the datum's own grid is missing (the default offline situation here): the horizontal part
    through the best available operation, and ``N`` from the global EGM96 geoid (``egm96_15.gtx``, shipped by
    Debian's ``proj-data`` in ``/usr/share/proj``). EGM96 differs from a national datum such as NAP by
    decimetres (about 0.1 m at Amersfoort: EGM96 43.30 m vs. the NLGEO2018 value near 43.25 m), not tens of
    metres. Also used when the twin declares no vertical CRS (heights taken as above mean sea level).
``ellipsoidal``
    The vertical CRS is itself ellipsoidal (heights already above the ellipsoid), or the caller asked for
    ``geoid="none"`` and accepted heights as they are.

With neither the datum's grid nor EGM96 available, :class:`GeoReference` raises a ConfigurationError naming
the grid to install instead of silently placing buildings tens of metres off.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from pyproj import CRS, Transformer
from pyproj.transformer import TransformerGroup

from citytwin.errors import ConfigurationError, InputError

# WGS 84 ellipsoid (EPSG:7030).
WGS84_A = 6378137.0
WGS84_F = 1.0 / 298.257223563
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)

EGM96_GRID = "egm96_15.gtx"
GEOID_POLICIES = ("auto", "egm96", "none")


def geodetic_to_ecef(lon_deg: np.ndarray, lat_deg: np.ndarray, h: np.ndarray) -> np.ndarray:
    """WGS 84 geodetic (degrees, ellipsoidal height in m) to ECEF (EPSG:4978, m), shape (n, 3).

    ``X = (N + h) cos(phi) cos(lam)``, ``Y = (N + h) cos(phi) sin(lam)``, ``Z = (N (1 - e^2) + h) sin(phi)``,
    with the prime-vertical radius ``N = a / sqrt(1 - e^2 sin^2 phi)`` (IOGP Guidance Note 7-2, 4.1.1).
    """
    lam = np.radians(lon_deg)
    phi = np.radians(lat_deg)
    sin_phi = np.sin(phi)
    cos_phi = np.cos(phi)
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * sin_phi * sin_phi)
    out = np.empty((len(lam), 3), dtype=np.float64)
    out[:, 0] = (n + h) * cos_phi * np.cos(lam)
    out[:, 1] = (n + h) * cos_phi * np.sin(lam)
    out[:, 2] = (n * (1.0 - WGS84_E2) + h) * sin_phi
    return out


def enu_rotation(lon_deg: float, lat_deg: float) -> np.ndarray:
    """Rows: the east, north and up unit vectors at (lon, lat) in ECEF; ``enu = R @ (ecef - origin)``."""
    lam, phi = np.radians(lon_deg), np.radians(lat_deg)
    sl, cl, sp, cp = np.sin(lam), np.cos(lam), np.sin(phi), np.cos(phi)
    return np.array([
        [-sl, cl, 0.0],
        [-sp * cl, -sp * sl, cp],
        [cp * cl, cp * sl, sp],
    ])


@dataclass(frozen=True)
class EnuFrame:
    """A local east-north-up frame with its origin on a point of the ellipsoid-based ECEF frame."""

    origin: np.ndarray  # ECEF (3,)
    rotation: np.ndarray  # (3, 3), rows e, n, u

    @classmethod
    def at(cls, lon_deg: float, lat_deg: float, h: float) -> "EnuFrame":
        origin = geodetic_to_ecef(np.array([lon_deg]), np.array([lat_deg]), np.array([h]))[0]
        return cls(origin, enu_rotation(lon_deg, lat_deg))

    def from_ecef(self, ecef: np.ndarray) -> np.ndarray:
        """ECEF points (n, 3) to ENU (n, 3), metres."""
        return (ecef - self.origin) @ self.rotation.T

    def to_ecef(self, enu: np.ndarray) -> np.ndarray:
        return enu @ self.rotation + self.origin

    def transform(self) -> list[float]:
        """The 3D Tiles tile ``transform``: ENU -> ECEF as a column-major 4x4 matrix."""
        r = self.rotation
        o = self.origin
        return [float(v) for v in (
            r[0, 0], r[0, 1], r[0, 2], 0.0,
            r[1, 0], r[1, 1], r[1, 2], 0.0,
            r[2, 0], r[2, 1], r[2, 2], 0.0,
            o[0], o[1], o[2], 1.0,
        )]


def _proj_search_dirs() -> list[Path]:
    from pyproj import datadir

    dirs = [Path(datadir.get_data_dir()), Path(datadir.get_user_data_dir())]
    for env in ("PROJ_DATA", "PROJ_LIB"):
        for part in os.environ.get(env, "").split(os.pathsep):
            if part:
                dirs.append(Path(part))
    dirs.append(Path("/usr/share/proj"))
    dirs.append(Path("/usr/local/share/proj"))
    return dirs


def find_proj_grid(name: str) -> Path | None:
    """The first PROJ data directory holding grid ``name``, or None."""
    for directory in _proj_search_dirs():
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _is_ballpark(description: str, part: str) -> bool:
    return f"ballpark {part}" in description.lower()


def _group(source: CRS, target: str) -> TransformerGroup:
    # PROJ warns when the best operation's grid is missing; we handle that case explicitly (see module doc).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return TransformerGroup(source, target, always_xy=True)


def _best_operation(source: CRS, target: str, *, vertical: bool) -> Transformer | None:
    """The best *available* operation that is not a ballpark guess (vertical or horizontal)."""
    group = _group(source, target)
    for transformer in group.transformers:
        desc = transformer.description
        if vertical and _is_ballpark(desc, "vertical"):
            continue
        if _is_ballpark(desc, "geographic offset"):
            continue
        return transformer
    return None


def _missing_grids(source: CRS, target: str) -> list[str]:
    group = _group(source, target)
    names: list[str] = []
    for op in group.unavailable_operations:
        for grid in op.grids:
            if not grid.available and grid.short_name not in names:
                names.append(grid.short_name)
    return names


@dataclass
class GeoReference:
    """Maps the twin's coordinates (x, y in ``crs``; orthometric H in ``vertical_crs``) to WGS 84.

    Parameters
    ----------
    crs
        The twin's horizontal (projected, metric) CRS, or a compound CRS (e.g. ``EPSG:7415``).
    vertical_crs
        The vertical CRS of the stored heights (e.g. ``EPSG:5709`` NAP), or None when unknown (heights taken
        as above mean sea level, i.e. EGM96).
    geoid
        ``"auto"`` (exact operation if its grid is available, else EGM96), ``"egm96"`` (always EGM96) or
        ``"none"`` (heights used as ellipsoidal heights: only right when they are).
    """

    crs: str
    vertical_crs: str | None = None
    geoid: str = "auto"
    method: str = field(init=False, default="")
    horizontal_operation: str = field(init=False, default="")
    warnings: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.geoid not in GEOID_POLICIES:
            raise InputError(f"geoid policy {self.geoid!r} is not one of {', '.join(GEOID_POLICIES)}")
        horizontal, vertical = _split_crs(self.crs, self.vertical_crs)
        self._horizontal = horizontal
        self._vertical = vertical
        self._exact: Transformer | None = None
        self._geoid_pipeline: Transformer | None = None
        self._horizontal_tf: Transformer | None = None
        if vertical is not None and _is_ellipsoidal_height(vertical):
            self.method = "ellipsoidal"
            self._init_horizontal()
            return
        if self.geoid == "none":
            self.method = "ellipsoidal"
            self.warnings.append("geoid='none': heights used as ellipsoidal heights without a geoid model")
            self._init_horizontal()
            return
        if vertical is not None and self.geoid == "auto":
            compound = _compound(horizontal, vertical)
            exact = _best_operation(compound, "EPSG:4979", vertical=True)
            if exact is not None and _works(exact, horizontal):
                self.method = "exact"
                self._exact = exact
                self.horizontal_operation = exact.description
                return
            missing = _missing_grids(compound, "EPSG:4979")
            if exact is not None:
                why = ("its grid is listed as downloadable but could not be fetched "
                       "(PROJ network unreachable?)")
            else:
                why = f"missing grid(s): {', '.join(missing) or 'none listed'}"
            hint = f"projsync --file {missing[0]}" if missing else "projsync --all"
            self.warnings.append(
                f"the geoid model of {vertical.name} is not usable ({why}); using the global EGM96 geoid "
                f"instead: an error of decimetres, not the tens of metres of PROJ's ballpark transformation. "
                f"For the exact datum install the grid ({hint}) or set PROJ_NETWORK=ON with network access."
            )
        elif vertical is None:
            self.warnings.append("no vertical CRS declared: heights taken as EGM96 (mean sea level) heights")
        grid = find_proj_grid(EGM96_GRID)
        if grid is None:
            raise ConfigurationError(
                f"cannot place buildings at ellipsoidal heights: neither the geoid grid of "
                f"{vertical.name if vertical is not None else 'the vertical datum'} nor {EGM96_GRID} is in a "
                f"PROJ data directory ({', '.join(str(d) for d in _proj_search_dirs())}); "
                f"install PROJ's grids "
                f"(Debian: apt install proj-data; or projsync) or set PROJ_NETWORK=ON"
            )
        self.method = "egm96"
        self._geoid_pipeline = _egm96_pipeline(str(grid))
        self._init_horizontal()

    def _init_horizontal(self) -> None:
        tf = _best_operation(self._horizontal, "EPSG:4326", vertical=False)
        if tf is None:
            raise ConfigurationError(f"no usable transformation from {self._horizontal.name} to WGS 84")
        self._horizontal_tf = tf
        self.horizontal_operation = tf.description

    def to_geodetic(self, x: np.ndarray, y: np.ndarray, height: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Twin coordinates and orthometric heights (m) to WGS 84 lon, lat (degrees), ellipsoidal h (m)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        height = np.asarray(height, dtype=np.float64)
        if self._exact is not None:
            lon, lat, h = self._exact.transform(x, y, height)
            return np.asarray(lon), np.asarray(lat), np.asarray(h)
        lon, lat = self._horizontal_tf.transform(x, y)
        lon = np.asarray(lon)
        lat = np.asarray(lat)
        if self._geoid_pipeline is None:
            return lon, lat, height.copy()
        _, _, h = self._geoid_pipeline.transform(lon, lat, height)
        return lon, lat, np.asarray(h)

    def to_ecef(self, x: np.ndarray, y: np.ndarray, height: np.ndarray) -> np.ndarray:
        lon, lat, h = self.to_geodetic(x, y, height)
        return geodetic_to_ecef(lon, lat, h)

    def describe(self) -> dict:
        """For the tileset's ``extras``: how heights were made ellipsoidal."""
        return {
            "crs": self.crs,
            "vertical_crs": self.vertical_crs,
            "height_model": self.method,
            "horizontal_operation": self.horizontal_operation,
            "warnings": list(self.warnings),
        }

    def __getstate__(self) -> dict:
        # pyproj Transformers are not picklable across processes in every version; rebuild on unpickle.
        return {"crs": self.crs, "vertical_crs": self.vertical_crs, "geoid": self.geoid}

    def __setstate__(self, state: dict) -> None:
        self.crs = state["crs"]
        self.vertical_crs = state["vertical_crs"]
        self.geoid = state["geoid"]
        self.method = ""
        self.horizontal_operation = ""
        self.warnings = []
        self.__post_init__()


def _works(transformer: Transformer, horizontal: CRS) -> bool:
    """Probe an operation at the centre of the CRS's area of use: a grid that PROJ lists as available
    (e.g. with PROJ_NETWORK=ON) but cannot fetch yields inf instead of an error."""
    area = horizontal.area_of_use
    if area is None:
        return True
    lon, lat = (area.west + area.east) / 2.0, (area.south + area.north) / 2.0
    if horizontal.is_projected:
        # The map projection alone (no datum shift, no grid) from the CRS's own geographic CRS.
        x, y = Transformer.from_crs(horizontal.geodetic_crs, horizontal, always_xy=True).transform(lon, lat)
    else:
        x, y = lon, lat
    result = transformer.transform(np.array([x, x]), np.array([y, y]), np.array([0.0, 0.0]))
    return bool(np.all(np.isfinite(np.asarray(result))))


@lru_cache(maxsize=8)
def _egm96_pipeline(grid_path: str) -> Transformer:
    """lon/lat (degrees) + orthometric H -> ellipsoidal h = H + N_EGM96, via PROJ's vgridshift."""
    return Transformer.from_pipeline(
        "+proj=pipeline "
        "+step +proj=unitconvert +xy_in=deg +xy_out=rad "
        f"+step +proj=vgridshift +grids={grid_path} +multiplier=1 "
        "+step +proj=unitconvert +xy_in=rad +xy_out=deg"
    )


def _split_crs(crs: str, vertical_crs: str | None) -> tuple[CRS, CRS | None]:
    try:
        parsed = CRS.from_user_input(crs)
    except Exception as exc:  # pyproj raises CRSError; any failure means the string is unusable
        raise InputError(f"unknown CRS {crs!r}: {exc}") from exc
    vertical = None
    if parsed.is_compound:
        horizontal, vertical = parsed.sub_crs_list[0], parsed.sub_crs_list[1]
    else:
        horizontal = parsed
    if vertical_crs:
        try:
            vertical = CRS.from_user_input(vertical_crs)
        except Exception as exc:
            raise InputError(f"unknown vertical CRS {vertical_crs!r}: {exc}") from exc
    if not horizontal.is_projected and not horizontal.is_geographic:
        raise InputError(f"{crs!r} is neither a projected nor a geographic CRS")
    return horizontal, vertical


def _is_ellipsoidal_height(vertical: CRS) -> bool:
    return bool(vertical.is_geographic and len(vertical.axis_info) == 3)


def _compound(horizontal: CRS, vertical: CRS) -> CRS:
    from pyproj.crs import CompoundCRS

    h_epsg, v_epsg = horizontal.to_epsg(), vertical.to_epsg()
    if h_epsg and v_epsg:
        return CRS.from_user_input(f"EPSG:{h_epsg}+{v_epsg}")
    return CompoundCRS(f"{horizontal.name} + {vertical.name}", [horizontal, vertical])
