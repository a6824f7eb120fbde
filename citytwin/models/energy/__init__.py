"""Energy demand of buildings: archetypes x floor area, schedules and degree-hours, summed up the grid.

Public API::

    load_archetypes(table=None)            archetype table (defaults in archetypes.yaml) + user overrides
    synthetic_weather(climate, year, seed) deterministic hourly temperature of a climate
    read_epw(path)                         EPW weather file -> xarray Dataset
    demand(buildings, weather, archetypes) lazy (building, time) Dataset of kW
    aggregate(demand, assignments, ...)    lazy (asset, time) Dataset: hourly load, energy, peaks, overloads
    asset_ratings(grid)                    ratings of transformers, substations and feeders (head sections)
    building_summary(demand)               lazy per-building kWh and peaks
    simulate(buildings, weather, assignments, ...)  both of the above, computed in one pass
    ashrae14(measured, simulated)          CV(RMSE) / NMBE calibration check against metered data
"""

from citytwin.io.uses import USES
from citytwin.io.weather import read_epw
from citytwin.models.energy.aggregate import aggregate, building_summary
from citytwin.models.energy.archetypes import Archetypes, load_archetypes
from citytwin.models.energy.demand import demand, demand_report, prepare_buildings
from citytwin.models.energy.metrics import ashrae14
from citytwin.models.energy.ratings import asset_ratings, feeder_ratings
from citytwin.models.energy.schedules import AnnualProfile, DailySchedule
from citytwin.models.energy.simulate import EnergyResult, simulate
from citytwin.models.energy.weather import CLIMATES, prepare_weather, synthetic_weather

__all__ = [
    "CLIMATES",
    "USES",
    "AnnualProfile",
    "Archetypes",
    "DailySchedule",
    "EnergyResult",
    "aggregate",
    "ashrae14",
    "asset_ratings",
    "building_summary",
    "demand",
    "demand_report",
    "feeder_ratings",
    "load_archetypes",
    "prepare_buildings",
    "prepare_weather",
    "read_epw",
    "simulate",
    "synthetic_weather",
]
