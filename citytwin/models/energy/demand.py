"""Hourly electricity, heating and cooling demand of every building, lazily on Dask.

Inputs (a DataFrame or GeoDataFrame, one row per building):

=============== ======= ===================================================================
column          units   meaning
=============== ======= ===================================================================
source_id       -       unique building id (str); the ``building`` coordinate of the result
floor_area_m2   m2      gross floor area; optional, else footprint x floors
geometry        m       footprint polygon in a projected (metric) CRS
height          m       building height; gives floors = max(1, round(height / 3 m)) when
                        ``floors`` is missing
floors          -       number of storeys (may be NaN)
use             -       residential, apartment, office, retail, school, hospital, warehouse,
                        supermarket, industrial, other (aliases and unknown uses: see
                        :mod:`citytwin.models.energy.archetypes`)
year_built      year    construction year (may be NaN)
=============== ======= ===================================================================

Demand of building i with floor area A_i and archetype a_i at hour t (profiles in
:mod:`citytwin.models.energy.profiles`, kW/m2):

    electricity_i(t) = A_i e_a(t),  heating_i(t) = A_i q_h,a(t),  cooling_i(t) = A_i q_c,a(t)   [kW]

Optionally (``diversity_hours`` = d > 0) each building's base electricity is shifted by a whole
number of hours in [-d, d], drawn from its id: real buildings do not all switch on at the same
minute, so feeder peaks are lower than the sum of building peaks. The shift moves load within the
year, so annual energy is unchanged.

The result is lazy: one Dask task per chunk (buildings x hours) and variable; nothing of the
building x hour matrix exists until it is computed. Because the matrix is exactly "floor area x
one of a few profiles" (:mod:`citytwin.models.energy.factors`), :func:`citytwin.models.energy.aggregate`
and :func:`citytwin.models.energy.building_summary` compute their sums from those factors without
forming it at all; for any other demand Dataset they reduce it chunk by chunk.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from citytwin.errors import InputError
from citytwin.models.energy.archetypes import Archetypes, load_archetypes
from citytwin.models.energy.factors import Factors, building_by_hour_grid, register
from citytwin.models.energy.weather import DEFAULT_MAX_GAP_HOURS, prepare_weather

STOREY_HEIGHT_M = 3.0
# Chunks of buildings x hours: 8192 x 744 (31 days) float32 = 24 MB per block. Chunking time as well
# as buildings keeps blocks small while building chunks stay large, and the number of building
# chunks is what sets the volume of per-asset partial sums that a reduction moves between workers.
DEFAULT_CHUNK = 8192
DEFAULT_TIME_CHUNK = 744
VARIABLES = ("electricity", "heating", "cooling")
LONG_NAMES = {
    "electricity": "electric load (incl. electric heating/cooling)",
    "heating": "space-heating demand",
    "cooling": "space-cooling demand",
}
MAX_LISTED = 20  # ids listed in an error message or the report


@dataclass(frozen=True)
class PreparedBuildings:
    ids: np.ndarray  # (n,) str
    floor_area: np.ndarray  # (n,) float64 m2
    archetype: np.ndarray  # (n,) int row of the archetype table
    use: np.ndarray  # (n,) resolved use
    fallback: np.ndarray  # (n,) bool use fell back to the default
    report: dict


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return pd.to_numeric(frame[name], errors="coerce").astype(np.float64)
    return pd.Series(np.nan, index=frame.index, dtype=np.float64)


def _footprint_area(frame: pd.DataFrame) -> pd.Series:
    if "geometry" not in frame.columns:
        return pd.Series(np.nan, index=frame.index)
    crs = getattr(frame, "crs", None)
    if crs is not None and not crs.is_projected:
        raise InputError(
            f"building footprints are in {crs.to_string()}, a geographic CRS: reproject them to a "
            "metric CRS (e.g. the local UTM zone) so areas come out in m2"
        )
    import shapely

    geoms = np.asarray(frame["geometry"].to_numpy(), dtype=object)
    valid = np.array([g is not None and not (isinstance(g, float) and np.isnan(g)) for g in geoms])
    area = np.full(len(geoms), np.nan)
    if valid.any():
        area[valid] = shapely.area(geoms[valid].tolist())
    return pd.Series(area, index=frame.index)


def _checked_ids(buildings) -> np.ndarray:
    """The source_id column as str, after checking the frame can give floor areas at all."""
    if not isinstance(buildings, pd.DataFrame):
        raise InputError(f"buildings must be a (Geo)DataFrame; got {type(buildings).__name__}")
    if "source_id" not in buildings.columns:
        raise InputError(f"buildings need a 'source_id' column; found {list(buildings.columns)}")
    if not ({"floor_area_m2", "geometry"} & set(buildings.columns)):
        raise InputError("buildings need 'floor_area_m2' or a footprint 'geometry' column to get floor areas")
    ids = buildings["source_id"]
    if ids.isna().any():
        raise InputError(f"{int(ids.isna().sum())} buildings have no source_id")
    ids = ids.astype(str).to_numpy()
    dup = pd.Index(ids)[pd.Index(ids).duplicated()].unique()
    if len(dup):
        raise InputError(
            f"duplicate source_id values: {list(dup[:MAX_LISTED])}", details={"duplicates": list(dup)}
        )
    return ids


def _floor_areas(buildings: pd.DataFrame, storey_height_m: float) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Floor area (m2), the reason it is unusable ("" if fine), and where floors came from height.

    A given floor_area_m2 > 0 wins; else footprint area x floors, floors from the ``floors`` column
    or max(1, round(height / storey height)).
    """
    given = _column(buildings, "floor_area_m2")
    floors = _column(buildings, "floors")
    height = _column(buildings, "height")
    need = given.isna() | (given <= 0)
    footprint = _footprint_area(buildings) if need.any() else pd.Series(np.nan, index=buildings.index)
    floors_missing = floors.isna() | (floors <= 0)
    from_height = need & floors_missing & (height > 0)
    floors_from_h = pd.Series(
        np.where(height > 0, np.maximum(1.0, np.round(height / storey_height_m)), np.nan),
        index=buildings.index,
    )
    floors = floors.where(~floors_missing, floors_from_h)
    area = given.where(~need, footprint * floors)

    reason = pd.Series("", index=buildings.index, dtype=object)
    bad_given = given.notna() & (given <= 0)
    reason[need & footprint.isna()] = "no floor_area_m2 and no footprint geometry"
    reason[need & footprint.notna() & ~(footprint > 0)] = "footprint area is 0"
    reason[need & (footprint > 0) & floors.isna()] = "no floors and no height"
    # A given area <= 0 falls back to the footprint; if that fails too, say both.
    reason[bad_given & (reason != "")] = "floor_area_m2 <= 0; " + reason[bad_given & (reason != "")]
    reason[(reason == "") & ~np.isfinite(area.to_numpy())] = "floor area not finite"
    return area, reason, from_height & (reason == "")


def prepare_buildings(
    buildings: pd.DataFrame,
    archetypes: Archetypes,
    *,
    storey_height_m: float = STOREY_HEIGHT_M,
    invalid: str = "error",
) -> PreparedBuildings:
    """Floor area and archetype of every building, with a report of what was assumed.

    Parameters
    ----------
    buildings : see the module docstring.
    archetypes : from :func:`load_archetypes`.
    storey_height_m : storey height for floors = max(1, round(height / storey_height_m)).
    invalid : "error" (default) raises on buildings without a usable floor area; "drop" leaves them
        out and lists them in the report.

    Raises
    ------
    InputError
        Missing or duplicate source_id, no way to get floor areas, buildings without floor area
        (with ``invalid="error"``), footprints in a geographic CRS.
    """
    if invalid not in ("error", "drop"):
        raise InputError(f"invalid must be 'error' or 'drop'; got {invalid!r}")
    ids = _checked_ids(buildings)
    area, reason, from_height = _floor_areas(buildings, storey_height_m)
    bad = (reason != "").to_numpy()
    dropped = {}
    if bad.any():
        listed = {ids[i]: reason.iloc[i] for i in np.flatnonzero(bad)[:MAX_LISTED]}
        if invalid == "error":
            raise InputError(
                f"{int(bad.sum())} buildings have no usable floor area (first: {listed}); fix them "
                "or pass invalid='drop'",
                details={"buildings": listed},
            )
        dropped = {ids[i]: reason.iloc[i] for i in np.flatnonzero(bad)}
    keep = ~bad
    use_col = buildings["use"] if "use" in buildings.columns else pd.Series([None] * len(buildings))
    year_col = (
        buildings["year_built"]
        if "year_built" in buildings.columns
        else pd.Series(np.nan, index=buildings.index)
    )
    match = archetypes.match(use_col.to_numpy()[keep], year_col.to_numpy()[keep])
    report = {
        "buildings_in": int(len(buildings)),
        "buildings_simulated": int(keep.sum()),
        "dropped": dropped,
        "floors_from_height": int(from_height.sum()),
        "storey_height_m": storey_height_m,
        "unknown_uses": match.unknown_uses,
        "fallback_use": archetypes.fallback_use,
        "fallback_buildings": int(match.fallback.sum()),
        "missing_year_built": match.missing_year,
        # where buildings without year_built went: each use's default construction period
        "missing_year_archetypes": match.missing_year_archetypes,
        "floor_area_total_m2": float(area.to_numpy()[keep].sum()),
    }
    return PreparedBuildings(ids[keep], area.to_numpy()[keep], match.index, match.use, match.fallback, report)


def building_shifts(ids: np.ndarray, diversity_hours: int, seed: int) -> np.ndarray:
    """Deterministic per-building schedule shift in [-d, d] hours from a hash of (seed, id)."""
    if diversity_hours <= 0:
        return np.zeros(len(ids), dtype=np.int32)
    span = 2 * diversity_hours + 1
    return np.array(
        [zlib.crc32(f"{seed}:{i}".encode()) % span - diversity_hours for i in ids], dtype=np.int32
    )


def _block(area: np.ndarray, index: np.ndarray, profiles: np.ndarray) -> np.ndarray:
    """(n, T) kW = A_i x profiles[k_i]; float32, one allocation (the gather), scaled in place."""
    out = profiles[index]
    out *= area[:, None].astype(np.float32)
    return out


def _electric_profiles(unit, archetype: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Electricity profiles per (archetype, shift) pair present, and each building's pair index.

    The base schedule is rolled by the shift; the HVAC part follows the weather and is not shifted.
    """
    if not shift.any():
        return unit.electricity, archetype.astype(np.int32)
    pairs, inverse = np.unique(np.stack([archetype, shift]), axis=1, return_inverse=True)
    table = np.empty((pairs.shape[1], unit.base.shape[1]), dtype=np.float32)
    for k, (a, s) in enumerate(pairs.T):
        table[k] = np.roll(unit.base[a], s) + unit.hvac_electric[a]
    return table, inverse.ravel().astype(np.int32)


def demand(
    buildings: pd.DataFrame,
    weather,
    archetypes: Archetypes | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    time_chunk: int = DEFAULT_TIME_CHUNK,
    invalid: str = "error",
    storey_height_m: float = STOREY_HEIGHT_M,
    max_gap_hours: int = DEFAULT_MAX_GAP_HOURS,
    diversity_hours: int = 0,
    seed: int = 0,
) -> xr.Dataset:
    """Lazy hourly demand of every building.

    Parameters
    ----------
    buildings : see the module docstring.
    weather : hourly temperature year (xarray Dataset/DataArray or pandas Series; see
        :func:`citytwin.models.energy.weather.prepare_weather` for the rules and gap handling).
    archetypes : from :func:`load_archetypes`; default: the shipped table.
    chunk_size : buildings per Dask chunk.
    time_chunk : hours per Dask chunk.
    invalid : "error" or "drop" for buildings without a usable floor area.
    storey_height_m : storey height used when ``floors`` is missing (m).
    max_gap_hours : longest run of missing weather hours that is interpolated.
    diversity_hours : maximum per-building shift of the base-electricity schedule (h); 0 = none.
    seed : seed of the per-building shifts.

    Returns
    -------
    Dataset over (building, time): ``electricity``, ``heating``, ``cooling`` in kW (float32,
    Dask-backed, chunked over buildings); coordinates ``floor_area_m2``, ``use``, ``archetype``,
    ``use_fallback`` per building; ``attrs["report"]`` a JSON report (dropped buildings, unknown
    uses, missing years and the default-period archetypes they took, interpolated weather hours,
    reference weather); read it with
    :func:`demand_report`.
    """
    import dask.array as da

    if archetypes is None:
        archetypes = load_archetypes()
    for name, value in (("chunk_size", chunk_size), ("time_chunk", time_chunk)):
        if not (isinstance(value, (int, np.integer)) and value > 0):
            raise InputError(f"{name} must be a positive integer; got {value!r}")
    if diversity_hours < 0:
        raise InputError(f"diversity_hours must be >= 0; got {diversity_hours}")
    prepared = prepare_buildings(buildings, archetypes, storey_height_m=storey_height_m, invalid=invalid)
    if len(prepared.ids) == 0:
        raise InputError("no buildings to simulate")
    wx = prepare_weather(weather, max_gap_hours=max_gap_hours)
    unit = archetypes.unit_profiles(wx)
    length = len(wx.time)

    shifts = building_shifts(prepared.ids, diversity_hours, seed)
    archetype = prepared.archetype.astype(np.int32)
    electric_table, electric_index = _electric_profiles(unit, archetype, shifts)
    factors = {
        "electricity": (electric_index, electric_table),
        "heating": (archetype, unit.heating),
        "cooling": (archetype, unit.cooling),
    }
    area = da.from_array(prepared.floor_area.astype(np.float32), chunks=chunk_size)
    arrays = {}
    for name in VARIABLES:
        index, profiles = factors[name]
        with building_by_hour_grid():
            arrays[name] = da.blockwise(
                _block,
                "bt",
                area,
                "b",
                da.from_array(index, chunks=chunk_size),
                "b",
                da.from_array(profiles, chunks=(profiles.shape[0], time_chunk)),
                "at",  # the profiles: one key per time chunk, shared by all building chunks
                dtype=np.float32,
                concatenate=True,
            )
        # The factors let aggregate() and building_summary() sum without forming the matrix.
        register(
            arrays[name].name,
            Factors(prepared.floor_area.astype(np.float32).astype(np.float64), index, profiles),
        )
    report = dict(
        prepared.report,
        weather_filled_hours=wx.filled_hours,
        reference_weather=archetypes.reference_source,
        diversity_hours=int(diversity_hours),
        hours=int(length),
    )
    data_vars = {
        name: (("building", "time"), arrays[name], {"units": "kW", "long_name": LONG_NAMES[name]})
        for name in VARIABLES
    }
    coords = {
        "building": ("building", prepared.ids),
        "time": ("time", wx.time),
        "floor_area_m2": ("building", prepared.floor_area, {"units": "m2"}),
        "use": ("building", prepared.use.astype(str)),
        "archetype": ("building", archetypes.table.index.to_numpy()[prepared.archetype].astype(str)),
        "use_fallback": ("building", prepared.fallback),
    }
    attrs = {
        "model": "citytwin.models.energy: archetype intensities x floor area, degree-hour heating/cooling",
        "report": json.dumps(report),
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def demand_report(ds: xr.Dataset) -> dict:
    """The report :func:`demand` stored in ``ds.attrs['report']``."""
    return json.loads(ds.attrs.get("report", "{}"))
