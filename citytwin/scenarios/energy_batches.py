"""City-scale energy runs in bounded memory: the grid's hourly series computed substation by substation.

An energy run keeps hourly series per asset (kW over asset x hour, three variables, float32). For a
million buildings the transformers alone (~77,000 x 8,760 h x 3 x 4 B, about 8 GB) outgrow a laptop,
and computing them in one pass needs that much on a worker and again on the client. Above
``HOURLY_BUDGET`` asset-hours the run therefore goes in batches of whole substations -- every asset
of a level lies inside one batch with all its buildings, so its sums and peaks are exact -- and keeps:

- every building's annual figures and every asset's annual energy, peak, rating and overload
  (``annual``, what ``asset_results`` stores);
- the hourly series of the levels that fit the budget for the whole city (``assets``, the NetCDF),
  chosen from the top: substations, then feeders, then transformers.

Demand is per building (archetype profiles calibrated independently of the city), so a batch's
buildings get the same figures as in a single pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import xarray as xr

HOURLY_BUDGET = 40_000_000  # asset-hours held at once: x 3 variables x 4 B, about 0.5 GB
GRID_LEVELS = ("transformer", "feeder", "substation")  # bottom to top


@dataclass
class BoundedResult:
    """What :func:`simulate_bounded` returns.

    ``assets`` holds the hourly series of ``hourly_levels`` (None without assignments); ``annual``
    the per-asset figures without a time dimension for every asset.
    """

    buildings: pd.DataFrame
    assets: xr.Dataset | None
    annual: xr.Dataset | None
    hourly_levels: list[str]
    batches: int
    report: dict


def _assets_per_level(links: pd.DataFrame) -> dict[str, int]:
    return {level: int(links[level].nunique()) for level in GRID_LEVELS if level in links}


def _batches(links: pd.DataFrame, hours: int, budget: int) -> list[pd.DataFrame]:
    """The assignments split into groups of whole substations of at most ``budget`` asset-hours each
    (a substation larger than the budget forms a batch of its own)."""
    present = [level for level in GRID_LEVELS if level in links]
    key = links["substation"].fillna("") if "substation" in links else pd.Series("", index=links.index)
    sizes = links.groupby(key)[present].nunique().sum(axis=1) * hours
    batches, current, used = [], [], 0
    for substation, size in sizes.items():
        if current and used + size > budget:
            batches.append(current)
            current, used = [], 0
        current.append(substation)
        used += int(size)
    if current:
        batches.append(current)
    return [links[key.isin(group)] for group in batches]


def simulate_bounded(table: pd.DataFrame, weather, links: pd.DataFrame | None, *, budget: int = HOURLY_BUDGET,
                     **options) -> BoundedResult:
    """:func:`citytwin.models.energy.simulate` for the twin, in batches when the hourly series are big.

    ``table`` are the buildings (``source_id`` ...), ``links`` their assignments to the grid (or None);
    ``options`` go to ``simulate`` (archetypes, ratings, unassigned ...).
    """
    from citytwin.models.energy import simulate

    hours = int(weather.sizes["time"])
    counts = _assets_per_level(links) if links is not None and len(links) else {}
    if not counts or sum(counts.values()) * hours <= budget:
        result = simulate(table, weather, links, **options)
        return BoundedResult(result.buildings, result.assets, result.annual, list(counts), 1, result.report)
    # The levels whose hourly series fit the budget for the whole city, from the top down.
    hourly_levels, cells = [], 0
    for level in reversed(GRID_LEVELS):
        if level in counts and cells + counts[level] * hours <= budget:
            hourly_levels.append(level)
            cells += counts[level] * hours
    buildings, annual, hourly = [], [], []
    report: dict = {}
    ids = table["source_id"].astype(str)
    batches = _batches(links, hours, budget)
    linked = pd.Index(links["building_id"].astype(str))
    groups = [(table[ids.isin(batch["building_id"].astype(str))], batch) for batch in batches]
    unlinked = table[~ids.isin(linked)]
    if len(unlinked):
        groups.append((unlinked, None))
    for part, part_links in groups:
        if part.empty:
            continue
        # Only the kept levels' hourly series leave the workers; the rest arrive as annual figures.
        result = simulate(part, weather, part_links, hourly_levels=hourly_levels, **options)
        buildings.append(result.buildings)
        report = report or result.report
        if result.annual is not None:
            annual.append(result.annual)
            if result.assets.sizes["asset"]:
                hourly.append(result.assets)
    report = {**report, "batches": len(groups), "hourly_levels": hourly_levels}
    assets = xr.concat(hourly, dim="asset") if hourly else None
    return BoundedResult(pd.concat(buildings), assets, xr.concat(annual, dim="asset") if annual else None,
                         hourly_levels, len(groups), report)
