"""One call for the twin: per-building annual figures and per-asset hourly series in one Dask pass.

:func:`simulate` builds the lazy demand (:func:`citytwin.models.energy.demand`), its per-building
summary and its aggregation onto the grid (:func:`citytwin.models.energy.aggregate`) and computes
them together on whatever Dask scheduler is active (a ``distributed.Client`` when the caller has
one). Demand made by ``demand()`` is "floor area x one of a few profiles", so both results come
from those factors (:mod:`citytwin.models.energy.factors`): no building x hour matrix is formed,
and 100,000 buildings take seconds. The per-asset hourly Dataset is as large as assets x hours
(x 3 variables, float32): leave service points out of ``levels`` for big cities.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from citytwin.models.energy.aggregate import aggregate, building_summary
from citytwin.models.energy.archetypes import Archetypes
from citytwin.models.energy.demand import (
    DEFAULT_CHUNK,
    DEFAULT_TIME_CHUNK,
    STOREY_HEIGHT_M,
    demand,
    demand_report,
)
from citytwin.models.energy.weather import DEFAULT_MAX_GAP_HOURS


@dataclass
class EnergyResult:
    """Results of :func:`simulate`.

    Attributes
    ----------
    buildings : one row per simulated building (index ``building`` = source_id): floor_area_m2,
        use, archetype, use_fallback, electricity_kwh, heating_kwh, cooling_kwh (over the weather
        year), electricity_peak_kw, heating_peak_kw, cooling_peak_kw, electricity_peak_time,
        electricity_kwh_m2 / heating_kwh_m2 / cooling_kwh_m2 (intensities).
    assets : per-asset Dataset of :func:`aggregate` (hourly kW over (asset, time) plus annual
        energy, peaks, ratings and overloads), computed; None without assignments.
    report : what the model assumed or dropped (see :func:`demand_report`) plus, with assets,
        the aggregation report under "aggregation".
    annual : the per-asset figures without a time dimension (energy, peaks, ratings, overloads) for
        every asset, whatever ``hourly_levels`` kept in ``assets``; None without assignments.
    """

    buildings: pd.DataFrame
    assets: xr.Dataset | None
    report: dict
    annual: xr.Dataset | None = None


def simulate(
    buildings: pd.DataFrame,
    weather,
    assignments: pd.DataFrame | None = None,
    *,
    archetypes: Archetypes | None = None,
    levels=None,
    ratings=None,
    rating_unit: str = "MVA",
    power_factor: float = 0.95,
    unassigned: str = "error",
    invalid: str = "error",
    chunk_size: int = DEFAULT_CHUNK,
    time_chunk: int = DEFAULT_TIME_CHUNK,
    storey_height_m: float = STOREY_HEIGHT_M,
    max_gap_hours: int = DEFAULT_MAX_GAP_HOURS,
    diversity_hours: int = 0,
    seed: int = 0,
    hourly_levels=None,
) -> EnergyResult:
    """Simulate a year of demand for ``buildings`` and sum it onto the grid.

    Parameters are those of :func:`citytwin.models.energy.demand` and
    :func:`citytwin.models.energy.aggregate`, and ``hourly_levels``: the levels whose hourly series
    ``assets`` keeps (None: all). The others' series are reduced to their annual figures where they
    were computed (on the Dask workers) and never travel to the caller, which is what keeps a city's
    ~100,000 transformer series (gigabytes) off the client.

    Returns
    -------
    EnergyResult (computed, small): a per-building table and the per-asset Dataset.
    """
    import dask

    ds = demand(
        buildings,
        weather,
        archetypes,
        chunk_size=chunk_size,
        time_chunk=time_chunk,
        invalid=invalid,
        storey_height_m=storey_height_m,
        max_gap_hours=max_gap_hours,
        diversity_hours=diversity_hours,
        seed=seed,
    )
    summary = building_summary(ds)
    assets = annual = None
    if assignments is not None:
        assets = aggregate(
            ds,
            assignments,
            levels=levels,
            ratings=ratings,
            rating_unit=rating_unit,
            power_factor=power_factor,
            unassigned=unassigned,
        )
        annual = assets.drop_vars([name for name, var in assets.data_vars.items() if "time" in var.dims])
        if hourly_levels is not None:
            keep = np.flatnonzero(np.isin(assets["level"].values, list(hourly_levels)))
            assets = assets.isel(asset=keep)
    summary, assets, annual = dask.compute(summary, assets, annual)  # one graph: shared work runs once
    table = summary.to_dataframe()  # the building coordinates (floor area, use, archetype) come along
    for var in ("electricity", "heating", "cooling"):
        table[f"{var}_kwh_m2"] = table[f"{var}_kwh"] / table["floor_area_m2"]
    report = demand_report(ds)
    if assets is not None:
        report["aggregation"] = json.loads(assets.attrs["report"])
    return EnergyResult(buildings=table, assets=assets, report=report, annual=annual)
