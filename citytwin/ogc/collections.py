"""The feature collections the twin publishes, declared once: table, id, geometry, properties.

Only identifiers declared here ever reach SQL; user input is bound as parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Collection:
    id: str
    title: str
    description: str
    from_sql: str            # a table or a fixed join, aliased "t"
    id_expr: str             # the feature id (text or integer)
    geom_expr: str           # geometry in the twin's CRS
    properties: dict[str, str] = field(default_factory=dict)  # output name -> SQL expression
    datetime_expr: str | None = None
    id_is_integer: bool = False


COLLECTIONS: dict[str, Collection] = {c.id: c for c in (
    Collection(
        "buildings", "Buildings", "Building footprints with height, use and year built",
        "buildings t", "t.id", "t.footprint",
        {"source": "t.source", "source_id": "t.source_id", "height": "t.height",
         "ground_elevation": "t.ground_elevation", "floors": "t.floors", "use": "t.use",
         "year_built": "t.year_built"},
        id_is_integer=True,
    ),
    Collection(
        "grid_assets", "Grid assets", "Substations, buses, transformers and service points",
        "grid_nodes t", "t.node_id", "t.geom",
        {"kind": "t.kind", "name": "t.name", "feeder": "t.feeder", "voltage_kv": "t.voltage_kv",
         "customers": "t.customers", "rating_mva": "t.rating_mva", "failure_rate": "t.failure_rate",
         "repair_time_h": "t.repair_time_h", "critical_depth_m": "t.critical_depth_m"},
    ),
    Collection(
        "grid_lines", "Grid line sections", "Lines and cables with length, rating and failure rate",
        "grid_sections t", "t.section_id", "t.geom",
        {"from_node": "t.from_node", "to_node": "t.to_node", "feeder": "t.feeder", "length_km": "t.length_km",
         "rating_mva": "t.rating_mva", "failure_rate": "t.failure_rate", "repair_time_h": "t.repair_time_h"},
    ),
    Collection(
        "grid_switches", "Switching devices", "Breakers, reclosers, fuses, disconnectors and ties with state",
        "grid_switches t", "t.switch_id", "t.geom",
        {"kind": "t.kind", "from_node": "t.from_node", "to_node": "t.to_node", "feeder": "t.feeder",
         "normal_state": "t.normal_state", "present_state": "t.present_state"},
    ),
    Collection(
        "sensors", "Sensors", "Things with their location (SensorThings)",
        "things t JOIN thing_locations tl ON tl.thing_id = t.id JOIN locations l ON l.id = tl.location_id",
        "t.id", "l.location",
        {"name": "t.name", "description": "t.description", "asset_id": "t.asset_id",
         "kind": "t.properties->>'kind'"},
        id_is_integer=True,
    ),
    Collection(
        "outages", "Outages", "Current and past outages with affected customers",
        "outages t", "t.id", "t.geom",
        {"status": "t.status", "kind": "t.kind", "cause": "t.cause", "start_time": "t.start_time",
         "etr": "t.etr", "customers_affected": "t.customers_affected",
         "customers_restored": "t.customers_restored", "feeder": "t.feeder"},
        datetime_expr="t.start_time", id_is_integer=True,
    ),
)}
