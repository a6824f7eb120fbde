"""Sensors of the synthetic city, one row per datastream in the shape ``citytwin.db.sensors`` loads.

Weather stations (air temperature and rainfall rate), river gauges along the channel (water level),
a load sensor on every substation bus and feeder head (active power) and a sample of smart meters
(energy) on ~2 % of the service points, at most 2,000. Units follow the SensorThings
``unitOfMeasurement`` (name, symbol, definition) with QUDT definitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import shapely

from citytwin.synth.feeders import FeederPlan
from citytwin.synth.layout import CityLayout

METER_SHARE = 0.02
METER_CAP = 2000
UNITS = {
    "air_temperature": ("degree Celsius", "°C", "http://qudt.org/vocab/unit/DEG_C"),
    "rainfall_rate": ("millimetre per hour", "mm/h", "http://qudt.org/vocab/unit/MilliM-PER-HR"),
    "water_level": ("metre", "m", "http://qudt.org/vocab/unit/M"),
    "active_power": ("megawatt", "MW", "http://qudt.org/vocab/unit/MegaW"),
    "energy": ("kilowatt hour", "kWh", "http://qudt.org/vocab/unit/KiloW-HR"),
}
SENSOR_SCHEMA = pa.schema([
    ("thing_id", pa.string()), ("name", pa.string()), ("kind", pa.string()),
    ("observed_property", pa.string()),
    ("unit_name", pa.string()), ("unit_symbol", pa.string()), ("unit_definition", pa.string()),
    ("asset_id", pa.string()), ("result_type", pa.string()), ("geometry", pa.binary()),
])
# Weather stations beyond the first (downtown), as fractions of the city's width and height.
_STATION_SPOTS = ((0.2, 0.8), (0.8, 0.2), (0.8, 0.8), (0.2, 0.2), (0.5, 0.1))


@dataclass
class MeterSample:
    """Service points chosen for smart meters, collected chunk by chunk (world coordinates)."""

    share: float
    cap: int = METER_CAP
    node_ids: list[str] = field(default_factory=list)
    building_ids: list[str] = field(default_factory=list)
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)

    @classmethod
    def for_city(cls, n_buildings: int) -> "MeterSample":
        return cls(share=min(METER_SHARE, METER_CAP / n_buildings))

    def add(self, picked: np.ndarray, node_ids: pa.Array, building_ids: pa.Array, x: np.ndarray,
            y: np.ndarray) -> None:
        """Keep the buildings where ``picked`` is true, in order, until the cap is reached."""
        room = self.cap - len(self.node_ids)
        where = np.flatnonzero(picked)[:max(room, 0)]
        if len(where) == 0:
            return
        take = pa.array(where)
        self.node_ids += node_ids.take(take).to_pylist()
        self.building_ids += building_ids.take(take).to_pylist()
        self.x += x[where].tolist()
        self.y += y[where].tolist()


def sensor_table(layout: CityLayout, plan: FeederPlan, meters: MeterSample,
                 origin: tuple[float, float]) -> pa.Table:
    """All datastreams as an Arrow table with WKB points in world coordinates."""
    rows: list[tuple] = []   # (thing, name, kind, property, asset, x, y): local x, y; meters apart
    width, height = layout.width, layout.height
    n_weather = int(np.clip(round(width * height / 1e8) + 1, 1, 1 + len(_STATION_SPOTS)))
    spots = [layout.downtown] + [(fx * width, fy * height) for fx, fy in _STATION_SPOTS]
    for i, (x, y) in enumerate(spots[:n_weather]):
        thing = f"WX{i + 1:02d}"
        for prop in ("air_temperature", "rainfall_rate"):
            rows.append((thing, f"weather station {thing}", "weather", prop, None, x, y))
    n_gauges = int(np.clip(round(width / 3000) + 2, 2, 8))
    gx = width * (np.arange(n_gauges) + 0.5) / n_gauges
    for i, (x, y) in enumerate(zip(gx, layout.river.centre_y(gx))):
        thing = f"RG{i + 1:02d}"
        rows.append((thing, f"river gauge {thing}", "river_level", "water_level", None, x, y))
    for sub, x, y in zip(plan.sub_id, plan.sub_x, plan.sub_y):
        rows.append((f"{sub}-LOAD", f"substation {sub} load", "substation_load", "active_power", sub, x, y))
    for f, feeder in enumerate(plan.f_id):
        s = plan.substation_of(np.array([f]))[0]
        rows.append((f"{feeder}-LOAD", f"feeder {feeder} load", "substation_load", "active_power",
                     f"{feeder}-HEAD", plan.sub_x[s], plan.sub_y[s]))
    wx = [origin[0] + r[5] for r in rows] + meters.x
    wy = [origin[1] + r[6] for r in rows] + meters.y
    for node, building in zip(meters.node_ids, meters.building_ids):
        rows.append((f"MTR-{building}", f"smart meter at {building}", "meter", "energy", node, 0.0, 0.0))
    prop = [r[3] for r in rows]
    columns = {
        "thing_id": [r[0] for r in rows], "name": [r[1] for r in rows], "kind": [r[2] for r in rows],
        "observed_property": prop, "unit_name": [UNITS[p][0] for p in prop],
        "unit_symbol": [UNITS[p][1] for p in prop], "unit_definition": [UNITS[p][2] for p in prop],
        "asset_id": [r[4] for r in rows], "result_type": ["number"] * len(rows),
        "geometry": shapely.to_wkb(shapely.points(np.asarray(wx, float), np.asarray(wy, float))),
    }
    return pa.Table.from_pydict(columns, schema=SENSOR_SCHEMA)
