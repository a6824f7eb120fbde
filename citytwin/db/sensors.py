"""Loading sensors into the SensorThings tables (Thing, Location, Sensor, ObservedProperty, Datastream).

Input: one row per datastream with columns ``thing_id, name, kind, observed_property, unit_name,
unit_symbol, unit_definition, asset_id, result_type`` and a point geometry. Re-importing updates
by name, so datastream ids (which telemetry references) stay stable.
"""

from __future__ import annotations

import json

import geopandas as gpd
import pandas as pd
from sqlalchemy import Engine, text

from citytwin.db.buildings import ImportSummary, log_import
from citytwin.db.twin import require_twin
from citytwin.errors import InputError

REQUIRED = ("thing_id", "kind", "observed_property")
OBSERVED_PROPERTY_DEFINITIONS = {
    "air_temperature": "http://vocab.nerc.ac.uk/standard_name/air_temperature/",
    "rainfall_rate": "http://vocab.nerc.ac.uk/standard_name/rainfall_rate/",
    "water_level": "http://vocab.nerc.ac.uk/standard_name/water_surface_height_above_reference_datum/",
    "active_power": "http://www.iec.ch/TC57/CIM#ActivePower",
    "energy": "http://www.iec.ch/TC57/CIM#Energy",
}


def _text(row: pd.Series, key: str, default: str = "") -> str:
    value = row.get(key, default)
    return default if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def load_sensors(engine: Engine, sensors: gpd.GeoDataFrame, *, source: str, path: str) -> ImportSummary:
    """Upsert things, their locations, sensors, observed properties and datastreams."""
    missing = [c for c in REQUIRED if c not in sensors.columns]
    if missing:
        raise InputError(f"{path}: sensor table lacks columns {missing}; needs {list(REQUIRED)}")
    if sensors.crs is None:
        raise InputError(f"{path}: the sensor locations have no CRS; pass --crs EPSG:n")
    summary = ImportSummary(kind="sensors", source=source, path=path)
    with engine.begin() as conn:
        twin = require_twin(conn)
        summary.crs = twin.crs
        located = sensors.to_crs(twin.crs)
        for _, row in located.iterrows():
            thing_name = _text(row, "thing_id")
            props = {"kind": _text(row, "kind"), "source": source}
            thing_id = conn.execute(text("""
                INSERT INTO things (name, description, properties, asset_id)
                VALUES (:name, :description, CAST(:props AS jsonb), NULLIF(:asset, ''))
                ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description,
                    properties = EXCLUDED.properties, asset_id = EXCLUDED.asset_id
                RETURNING id
            """), {"name": thing_name, "description": _text(row, "name", thing_name),
                   "props": json.dumps(props), "asset": _text(row, "asset_id")}).scalar_one()
            if row.geometry is not None and not row.geometry.is_empty:
                _set_location(conn, thing_id, thing_name, row.geometry.wkt, twin.srid)
            sensor_id = conn.execute(text("""
                INSERT INTO sensors (name, description) VALUES (:name, :name)
                ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description RETURNING id
            """), {"name": f"{_text(row, 'kind')} sensor"}).scalar_one()
            prop = _text(row, "observed_property")
            prop_id = conn.execute(text("""
                INSERT INTO observed_properties (name, definition) VALUES (:name, :definition)
                ON CONFLICT (name) DO UPDATE SET definition = EXCLUDED.definition RETURNING id
            """), {"name": prop, "definition": OBSERVED_PROPERTY_DEFINITIONS.get(prop, "")}).scalar_one()
            unit = {"name": _text(row, "unit_name"), "symbol": _text(row, "unit_symbol"),
                    "definition": _text(row, "unit_definition")}
            result = conn.execute(text("""
                INSERT INTO datastreams (name, description, thing_id, sensor_id, observed_property_id,
                                         unit_of_measurement, result_type)
                VALUES (:name, :description, :thing, :sensor, :prop, CAST(:unit AS jsonb), :rtype)
                ON CONFLICT (name) DO UPDATE SET thing_id = EXCLUDED.thing_id, sensor_id = EXCLUDED.sensor_id,
                    observed_property_id = EXCLUDED.observed_property_id,
                    unit_of_measurement = EXCLUDED.unit_of_measurement, result_type = EXCLUDED.result_type
                RETURNING (xmax = 0)
            """), {"name": f"{thing_name}:{prop}", "description": f"{prop} at {thing_name}",
                   "thing": thing_id, "sensor": sensor_id, "prop": prop_id, "unit": json.dumps(unit),
                   "rtype": _text(row, "result_type", "number") or "number"}).scalar_one()
            if result:
                summary.imported += 1
            else:
                summary.updated += 1
        log_import(conn, summary)
    return summary


def _set_location(conn, thing_id: int, name: str, wkt: str, srid: int) -> None:
    location_id = conn.execute(text("""
        SELECT l.id FROM locations l JOIN thing_locations tl ON tl.location_id = l.id
        WHERE tl.thing_id = :thing LIMIT 1
    """), {"thing": thing_id}).scalar()
    if location_id is None:
        location_id = conn.execute(text("""
            INSERT INTO locations (name, location) VALUES (:name, ST_GeomFromText(:wkt, :srid)) RETURNING id
        """), {"name": name, "wkt": wkt, "srid": srid}).scalar_one()
        conn.execute(text("INSERT INTO thing_locations (thing_id, location_id) VALUES (:t, :l)"),
                     {"t": thing_id, "l": location_id})
    else:
        conn.execute(text("UPDATE locations SET location = ST_GeomFromText(:wkt, :srid) WHERE id = :id"),
                     {"wkt": wkt, "srid": srid, "id": location_id})
