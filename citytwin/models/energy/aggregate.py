"""Building demand summed up the grid: service point -> transformer -> feeder -> substation.

The grid model gives an ``assignments`` table (one row per building):

    building_id, service_point, transformer, feeder, substation

(any subset of the four level columns; a NaN means "not connected at this level"). Electricity is
the load on the grid; heating and cooling are summed too (as thermal demand; their electric part
is already inside electricity through each archetype's electric share / COP).

How it stays within memory, two ways to the same numbers:

* "factored" (demand made by :func:`citytwin.models.energy.demand`): floor area summed per asset
  and profile, times the profiles (:mod:`citytwin.models.energy.factors`); no matrix at all.
* "blocks" (any other demand Dataset, or on request): every chunk of buildings x hours is reduced
  on its own to a partial sum per asset (a group-by sum in one pass over the chunk, float64
  accumulators) and the partials are added in a Dask tree reduction; the largest objects are one
  chunk of demand (buildings x hours x 4 bytes, 24 MB by default) and one partial (assets x hours
  x 8 bytes). For arrays made by ``demand()`` each building-hour is formed inside the reducing
  task and added straight to the partial, without storing the chunk.

The result has assets x 8,760 values per variable. Service points number about as many as
buildings, so their hourly series are only produced when asked for (``levels``).

Ratings: a Series asset id -> rating, in ``rating_unit`` "MVA" (default, as the grid tables),
"kVA", "MW" or "kW". Apparent-power ratings become real-power capacity with ``power_factor``
(default 0.95): capacity_kW = rating_kVA x pf. An asset is overloaded when its peak electric load
exceeds that capacity; ``overload_hours`` counts the hours above it.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xarray as xr

from citytwin.errors import InputError
from citytwin.models.energy.demand import DEFAULT_CHUNK, DEFAULT_TIME_CHUNK, MAX_LISTED, VARIABLES
from citytwin.models.energy.factors import Factors, lookup

LEVELS = ("service_point", "transformer", "feeder", "substation")
DEFAULT_LEVELS = ("transformer", "feeder", "substation")
RATING_TO_KW = {"kW": 1.0, "MW": 1000.0, "kVA": 1.0, "MVA": 1000.0}
APPARENT_UNITS = ("kVA", "MVA")
ASSET_CHUNK = 2000  # assets per chunk of the per-asset hourly result (factored path)
STREAM_TASK_CELLS = 2**27  # building-hours per "stream" task (~20 ms of compiled work)
METHODS = ("auto", "factored", "stream", "blocks")


def _partial_sums(block: np.ndarray, codes: np.ndarray, n_assets: int) -> np.ndarray:
    """(1, assets, T) float64 sums of one chunk's rows by asset."""
    from citytwin.models.energy._kernels import group_sum

    out = np.zeros((n_assets, block.shape[1]), dtype=np.float64)
    group_sum(np.ascontiguousarray(block), np.ascontiguousarray(codes), out)
    return out[None]


def _check_hierarchy(table: pd.DataFrame, present: list[str]) -> None:
    """Each asset must have a single parent at the next level up (a radial grid)."""
    for child, parent in zip(present, present[1:], strict=False):
        pairs = table[[child, parent]].dropna().drop_duplicates()
        multi = pairs[child][pairs[child].duplicated()].unique()
        if len(multi):
            asset = multi[0]
            parents = sorted(pairs.loc[pairs[child] == asset, parent].astype(str))
            raise InputError(
                f"assignments: {child} {asset!r} is assigned to several {parent}s {parents}; "
                f"each {child} must feed from one {parent} ({len(multi)} such {child}s)"
            )


def _encode(assignments: pd.DataFrame, buildings: np.ndarray, levels: list[str], unassigned: str):
    """Per-building global asset row per level (-1 = none), the asset ids, levels and report."""
    if not isinstance(assignments, pd.DataFrame) or "building_id" not in assignments.columns:
        raise InputError(
            f"assignments must be a DataFrame with a 'building_id' column and level columns {list(LEVELS)}"
        )
    present = [lv for lv in LEVELS if lv in assignments.columns]
    if not present:
        raise InputError(f"assignments have none of the level columns {list(LEVELS)}")
    table = assignments[["building_id", *present]].copy()
    table["building_id"] = table["building_id"].astype(str)
    for lv in present:
        table[lv] = table[lv].where(table[lv].isna(), table[lv].astype(str))
    dup = table["building_id"][table["building_id"].duplicated()].unique()
    if len(dup):
        raise InputError(f"assignments list buildings more than once: {list(dup[:MAX_LISTED])}")
    _check_hierarchy(table, present)
    table = table.set_index("building_id").reindex(buildings)
    missing = table[present].isna().all(axis=1).to_numpy()
    if missing.any() and unassigned == "error":
        raise InputError(
            f"{int(missing.sum())} buildings have no assignment (first: "
            f"{buildings[missing][:MAX_LISTED].tolist()}); pass unassigned='ignore' to leave them out"
        )
    codes = np.full((len(buildings), len(levels)), -1, dtype=np.int32)
    asset_ids: list[str] = []
    asset_levels: list[str] = []
    report = {"unassigned_buildings": int(missing.sum()), "buildings_not_at_level": {}}
    for k, lv in enumerate(levels):
        col = table[lv]
        ids = np.sort(col.dropna().unique().astype(str))
        valid = col.notna().to_numpy()
        codes[valid, k] = pd.Index(ids).get_indexer(col[valid].astype(str)) + len(asset_ids)
        report["buildings_not_at_level"][lv] = int((~valid).sum())
        asset_ids.extend(ids.tolist())
        asset_levels.extend([lv] * len(ids))
    clash = pd.Index(asset_ids)[pd.Index(asset_ids).duplicated()].unique()
    if len(clash):
        raise InputError(
            f"asset ids used at more than one level: {list(clash[:MAX_LISTED])}; ids must be unique "
            "across service points, transformers, feeders and substations"
        )
    return codes, np.array(asset_ids, dtype=object), np.array(asset_levels, dtype=object), report


def _ratings_kw(ratings, asset_ids: np.ndarray, unit: str, power_factor: float) -> tuple[np.ndarray, int]:
    capacity = np.full(len(asset_ids), np.nan)
    if ratings is None:
        return capacity, 0
    if unit not in RATING_TO_KW:
        raise InputError(f"rating_unit must be one of {list(RATING_TO_KW)}; got {unit!r}")
    if not 0 < power_factor <= 1:
        raise InputError(f"power_factor must be in (0, 1]; got {power_factor}")
    series = pd.Series(ratings)
    series.index = series.index.astype(str)
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna() | (values <= 0)
    if bad.any():
        raise InputError(f"ratings must be positive numbers; bad for {list(series.index[bad][:MAX_LISTED])}")
    factor = RATING_TO_KW[unit] * (power_factor if unit in APPARENT_UNITS else 1.0)
    matched = values.reindex(pd.Index(asset_ids))
    capacity = matched.to_numpy(np.float64) * factor
    return capacity, int((~values.index.isin(asset_ids)).sum())


def _total_blocks(data, codes: np.ndarray, n_assets: int):
    """(assets, T) float64 Dask array: each chunk of buildings group-summed, partials tree-added."""
    import dask.array as da

    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(DEFAULT_CHUNK, DEFAULT_TIME_CHUNK))
    codes_da = da.from_array(codes, chunks=(data.chunks[0], codes.shape[1]))
    partial = da.blockwise(
        _partial_sums,
        "bat",
        data,
        "bt",
        codes_da,
        "bl",
        new_axes={"a": n_assets},
        adjust_chunks={"b": 1},
        concatenate=True,
        dtype=np.float64,
        n_assets=n_assets,
    )
    return partial.sum(axis=0, split_every=8)


def _generated_partial_sums(
    area: np.ndarray, index: np.ndarray, codes: np.ndarray, profiles: np.ndarray, n_assets: int
) -> np.ndarray:
    """(1, assets, T) sums of one chunk's demand A_i P[k_i, t], each building-hour formed in float32
    as in the demand block and added in float64, without storing the block."""
    from citytwin.models.energy._kernels import group_sum_generated

    out = np.zeros((n_assets, profiles.shape[1]), dtype=np.float64)
    group_sum_generated(
        np.ascontiguousarray(area, dtype=np.float32),
        np.ascontiguousarray(index, dtype=np.int32),
        np.ascontiguousarray(codes),
        np.ascontiguousarray(profiles, dtype=np.float32),
        out,
    )
    return out[None]


def _total_streamed(factors: Factors, codes: np.ndarray, n_assets: int):
    """(assets, T) float64 Dask array: each task forms its buildings' building-hours and adds them
    to per-asset partials in one pass; no demand block is stored, nor is it a task result that could
    move between workers (dask does not fuse two blockwise layers with a new axis). Tasks cover the
    whole year and ~STREAM_TASK_CELLS building-hours, so per-task overhead stays small."""
    import dask.array as da

    hours = factors.profiles.shape[1]
    rows = max(1, STREAM_TASK_CELLS // hours)
    area = da.from_array(factors.area.astype(np.float32), chunks=(rows,))
    index = da.from_array(factors.index, chunks=(rows,))
    codes_da = da.from_array(codes, chunks=(rows, codes.shape[1]))
    profiles = da.from_array(factors.profiles, chunks=factors.profiles.shape)
    partial = da.blockwise(
        _generated_partial_sums,
        "bat",
        area,
        "b",
        index,
        "b",
        codes_da,
        "bl",
        profiles,
        "kt",
        new_axes={"a": n_assets},
        adjust_chunks={"b": 1},
        concatenate=True,
        dtype=np.float64,
        n_assets=n_assets,
    )
    return partial.sum(axis=0, split_every=8)


def _weighted_profiles(weights: np.ndarray, profiles: np.ndarray) -> np.ndarray:
    return weights @ profiles.astype(np.float64)


def _total_factored(factors: Factors, codes: np.ndarray, n_assets: int):
    """(assets, T) float64 Dask array W @ P, chunked over assets (W is O(buildings) to build)."""
    import dask.array as da

    weights = da.from_array(factors.group_weights(codes, n_assets), chunks=(ASSET_CHUNK, -1))
    profiles = da.from_array(factors.profiles, chunks=factors.profiles.shape)
    return da.blockwise(
        _weighted_profiles, "at", weights, "ak", profiles, "kt", dtype=np.float64, concatenate=True
    )


def _resolve_levels(assignments, levels) -> list[str]:
    """The requested levels (default: the present ones of DEFAULT_LEVELS), checked."""
    columns = assignments.columns if isinstance(assignments, pd.DataFrame) else []
    if levels is None:
        levels = [lv for lv in DEFAULT_LEVELS if lv in columns] or [lv for lv in LEVELS if lv in columns]
    levels = [levels] if isinstance(levels, str) else list(levels)
    if not levels or any(lv not in LEVELS for lv in levels):
        raise InputError(f"levels must be a non-empty subset of {list(LEVELS)}; got {levels}")
    absent = [lv for lv in levels if lv not in columns]
    if isinstance(assignments, pd.DataFrame) and absent:
        raise InputError(f"assignments have no column for levels {absent}")
    return levels


def _served(codes: np.ndarray, area: np.ndarray, n_assets: int) -> tuple[np.ndarray, np.ndarray]:
    """Buildings and floor area behind each asset."""
    counts = np.zeros(n_assets, dtype=np.int64)
    floor = np.zeros(n_assets, dtype=np.float64)
    for k in range(codes.shape[1]):
        valid = codes[:, k] >= 0
        counts += np.bincount(codes[valid, k], minlength=n_assets)
        floor += np.bincount(codes[valid, k], weights=area[valid], minlength=n_assets)
    return counts, floor


def _overloads(hourly: xr.DataArray, peak: xr.DataArray, capacity: np.ndarray) -> dict:
    cap = xr.DataArray(capacity, dims="asset")
    return {
        "loading": peak / cap,
        "overload": peak > cap,  # False where the rating is unknown (NaN)
        "overload_hours": (hourly > cap).sum("time"),
    }


def aggregate(
    demand: xr.Dataset,
    assignments: pd.DataFrame,
    *,
    levels=None,
    ratings=None,
    rating_unit: str = "MVA",
    power_factor: float = 0.95,
    unassigned: str = "error",
    variables=VARIABLES,
    method: str = "auto",
) -> xr.Dataset:
    """Hourly load, annual energy, peak and overloads per grid asset (lazy).

    Parameters
    ----------
    demand : the Dataset of :func:`citytwin.models.energy.demand` (or any Dataset of kW over
        (building, time), Dask-backed or not).
    assignments : building_id plus level columns (see the module docstring).
    levels : levels to aggregate; default the present ones of ("transformer", "feeder",
        "substation"); "service_point" only on request.
    ratings : Series asset id -> rating in ``rating_unit``; assets without a rating get NaN.
    rating_unit, power_factor : see the module docstring.
    unassigned : "error" (default) if a building has no assignment at any level; "ignore" leaves
        it out of every asset (counted in ``attrs["report"]``).
    variables : which demand variables to aggregate.
    method : how the sums are formed; all give the same numbers to float32 rounding.
        "auto" (default): "factored" for arrays made by :func:`demand` and not changed since,
        else "blocks". "factored": floor area per asset and profile times the profiles
        (:mod:`citytwin.models.energy.factors`). "stream": every building-hour A_i P[k_i, t]
        formed and added to its assets' partial sums in one compiled pass per task (needs
        factors). "blocks": every chunk of the demand arrays computed as they are and group-summed
        (works for any demand Dataset).

    Returns
    -------
    Dataset over (asset, time), asset ids unique across levels, coordinate ``level`` per asset:
    ``<var>`` hourly kW (float32); ``<var>_kwh`` energy over the period (kWh, float64);
    ``<var>_peak_kw`` and ``<var>_peak_time``; ``buildings`` and ``floor_area_m2`` served;
    ``rating_kw`` (capacity in kW, NaN = unknown), ``loading`` (electric peak / capacity),
    ``overload`` (bool) and ``overload_hours``.

    Raises
    ------
    InputError
        Malformed assignments (duplicates, a child with two parents, id clashes across levels),
        unassigned buildings with ``unassigned="error"``, unknown levels, bad ratings, or
        ``method="factored"`` or ``"stream"`` for a demand that has no factors.
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {list(METHODS)}; got {method!r}")
    if unassigned not in ("error", "ignore"):
        raise InputError(f"unassigned must be 'error' or 'ignore'; got {unassigned!r}")
    levels = _resolve_levels(assignments, levels)
    missing_vars = [v for v in variables if v not in demand.data_vars]
    if missing_vars:
        raise InputError(f"demand has no variables {missing_vars}")

    buildings = demand["building"].to_numpy().astype(str)
    codes, asset_ids, asset_levels, report = _encode(assignments, buildings, levels, unassigned)
    n_assets = len(asset_ids)
    capacity, unused = _ratings_kw(ratings, asset_ids, rating_unit, power_factor)
    report["ratings_without_asset"] = unused

    data_vars = {}
    sums = {}
    report["method"] = {}
    for var in variables:
        data = demand[var].data
        factors = lookup(data)
        if method in ("factored", "stream") and factors is None:
            raise InputError(
                f"demand variable {var!r} has no factors (it was not made by demand(), or was "
                f"changed since): method={method!r} needs them; use 'blocks'"
            )
        chosen = method if method != "auto" else ("factored" if factors is not None else "blocks")
        report["method"][var] = chosen
        if chosen == "factored":
            hourly = _total_factored(factors, codes, n_assets)
        elif chosen == "stream":
            hourly = _total_streamed(factors, codes, n_assets)
        else:
            hourly = _total_blocks(data, codes, n_assets)
        total = xr.DataArray(hourly, dims=("asset", "time"), coords={"time": demand["time"].values})
        sums[var] = total
        data_vars[var] = total.astype(np.float32).assign_attrs(units="kW")
        data_vars[f"{var}_kwh"] = total.sum("time").assign_attrs(units="kWh")
        data_vars[f"{var}_peak_kw"] = total.max("time").assign_attrs(units="kW")
        data_vars[f"{var}_peak_time"] = total.idxmax("time")

    area = (
        demand["floor_area_m2"].to_numpy() if "floor_area_m2" in demand.coords else np.zeros(len(buildings))
    )
    counts, floor = _served(codes, area, n_assets)
    data_vars["buildings"] = xr.DataArray(counts, dims="asset")
    data_vars["floor_area_m2"] = xr.DataArray(floor, dims="asset", attrs={"units": "m2"})
    data_vars["rating_kw"] = xr.DataArray(capacity, dims="asset", attrs={"units": "kW"})
    if "electricity" in sums:
        data_vars.update(_overloads(sums["electricity"], data_vars["electricity_peak_kw"], capacity))
    attrs = {
        "report": json.dumps(report),
        "rating_unit": rating_unit,
        "power_factor": power_factor,
        "levels": ",".join(levels),
    }
    return xr.Dataset(
        data_vars,
        coords={"asset": asset_ids.astype(str), "level": ("asset", asset_levels.astype(str))},
        attrs=attrs,
    )


def _per_building(values: np.ndarray, chunks) -> xr.DataArray:
    import dask.array as da

    return xr.DataArray(da.from_array(values, chunks=chunks), dims="building")


def building_summary(demand: xr.Dataset, variables=VARIABLES, method: str = "auto") -> xr.Dataset:
    """Per-building energy over the period (kWh, float64), peak (kW) and time of the electric peak (lazy).

    ``method``: "auto", "factored" and "stream" use the factors when there are any (A_i sum_t
    P[k_i, t] and A_i max_t P[k_i, t], no matrix); "blocks" (or no factors) reduces each chunk.
    """
    out = {}
    time = demand["time"].values
    for var in variables:
        x = demand[var]
        factors = lookup(x.data) if method != "blocks" else None
        if factors is None:
            out[f"{var}_kwh"] = x.reduce(np.sum, dim="time", dtype=np.float64).assign_attrs(units="kWh")
            out[f"{var}_peak_kw"] = x.max("time").assign_attrs(units="kW")
            if var == "electricity":
                out["electricity_peak_time"] = x.idxmax("time")
            continue
        chunks = x.data.chunks[0]
        profiles = factors.profiles
        kwh = profiles.sum(axis=1, dtype=np.float64)[factors.index] * factors.area
        peak = profiles.max(axis=1).astype(np.float64)[factors.index] * factors.area
        out[f"{var}_kwh"] = _per_building(kwh, chunks).assign_attrs(units="kWh")
        out[f"{var}_peak_kw"] = _per_building(peak, chunks).assign_attrs(units="kW")
        if var == "electricity":
            out["electricity_peak_time"] = _per_building(time[profiles.argmax(axis=1)][factors.index], chunks)
    return xr.Dataset(out, coords={name: c for name, c in demand.coords.items() if c.dims == ("building",)})
