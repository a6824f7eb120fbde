"""The SensorThings API 1.1 entity model over the twin's tables: entity sets, properties, navigation.

Every property has a SQL expression written over a table alias (``{a}``) and a kind that decides how
``$filter`` literals are bound and how values are rendered. Observations have a composite key
(datastream, phenomenonTime); their ``@iot.id`` is the string ``"<datastream>_<µs since epoch>"``.
Tasking (Part 2) entities are exposed read-only; tasks are created with ``POST /api/tasks``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from citytwin.errors import InputError, NotFoundError
from citytwin.telemetry.anomaly import flag_names

# Property kinds: how literals bind and values render.
ID, TEXT, NUMBER, TIME, JSON = "id", "text", "number", "time", "json"
GEOMETRY, OBS_ID, FLAGS = "geom", "obsid", "flags"


@dataclass(frozen=True)
class Prop:
    name: str
    sql: str                      # over alias {a}
    kind: str
    sortable: bool = True


@dataclass(frozen=True)
class Nav:
    """A navigation property.

    ``to_one``: the target's id is the parent's column ``fk``. ``to_many``: the target's column ``fk``
    holds the parent id. ``link``: many-to-many through ``link`` (``link_parent``, ``link_child`` columns).
    """

    name: str
    target: str
    kind: str                     # "to_one" | "to_many" | "link"
    fk: str = ""
    link: str = ""
    link_parent: str = ""
    link_child: str = ""


@dataclass(frozen=True)
class EntitySet:
    name: str                     # "Things"
    singular: str                 # "Thing"
    table: str
    key: tuple[str, ...]          # key columns, e.g. ("id",) or ("datastream_id", "phenomenon_time")
    props: dict[str, Prop]
    navs: dict[str, Nav] = field(default_factory=dict)
    hidden: tuple[str, ...] = ()  # extra columns fetched for navigation (foreign keys)

    def prop(self, name: str, option: str) -> Prop:
        if name in ("id", "@iot.id"):
            return self.props["id"]
        found = self.props.get(name)
        if found is None:
            raise InputError(f"{option}: {self.name} have no property {name!r}; "
                             f"known: {', '.join(p for p in self.props if p != 'id')}")
        return found

    def nav(self, name: str, option: str) -> Nav:
        found = self.navs.get(name)
        if found is None:
            raise InputError(f"{option}: {self.name} have no navigation property {name!r}; "
                             f"known: {', '.join(self.navs) or 'none'}")
        return found


def _props(*items: Prop) -> dict[str, Prop]:
    return {p.name: p for p in items}


_BASIC = (Prop("id", "{a}.id", ID), Prop("name", "{a}.name", TEXT),
          Prop("description", "{a}.description", TEXT))


_OBS_ID_SQL = ("({a}.datastream_id::text || '_' || "
               "(EXTRACT(EPOCH FROM {a}.phenomenon_time) * 1000000)::bigint::text)")
_LOCATION_SQL = ("CASE WHEN ST_SRID({a}.location) = 0 THEN ST_AsGeoJSON({a}.location)::json "
                 "ELSE ST_AsGeoJSON(ST_Transform({a}.location, 4326), 7)::json END")

ENTITY_SETS: dict[str, EntitySet] = {s.name: s for s in [
    EntitySet("Things", "Thing", "things", ("id",), _props(
        *_BASIC,
        Prop("properties", "{a}.properties", JSON, sortable=False)),
        {"Locations": Nav("Locations", "Locations", "link", link="thing_locations", link_parent="thing_id",
                          link_child="location_id"),
         "Datastreams": Nav("Datastreams", "Datastreams", "to_many", fk="thing_id"),
         "TaskingCapabilities": Nav("TaskingCapabilities", "TaskingCapabilities", "to_many", fk="thing_id")}),
    EntitySet("Locations", "Location", "locations", ("id",), _props(
        *_BASIC,
        Prop("encodingType", "{a}.encoding_type", TEXT),
        Prop("location", _LOCATION_SQL, GEOMETRY, sortable=False)),
        {"Things": Nav("Things", "Things", "link", link="thing_locations", link_parent="location_id",
                       link_child="thing_id")}),
    EntitySet("Sensors", "Sensor", "sensors", ("id",), _props(
        *_BASIC,
        Prop("encodingType", "{a}.encoding_type", TEXT), Prop("metadata", "{a}.metadata", TEXT)),
        {"Datastreams": Nav("Datastreams", "Datastreams", "to_many", fk="sensor_id")}),
    EntitySet("ObservedProperties", "ObservedProperty", "observed_properties", ("id",), _props(
        Prop("id", "{a}.id", ID), Prop("name", "{a}.name", TEXT), Prop("definition", "{a}.definition", TEXT),
        Prop("description", "{a}.description", TEXT)),
        {"Datastreams": Nav("Datastreams", "Datastreams", "to_many", fk="observed_property_id")}),
    EntitySet("Datastreams", "Datastream", "datastreams", ("id",), _props(
        *_BASIC,
        Prop("unitOfMeasurement", "{a}.unit_of_measurement", JSON, sortable=False),
        Prop("observationType", "{a}.observation_type", TEXT),
        Prop("properties", "{a}.properties", JSON, sortable=False)),
        {"Thing": Nav("Thing", "Things", "to_one", fk="thing_id"),
         "Sensor": Nav("Sensor", "Sensors", "to_one", fk="sensor_id"),
         "ObservedProperty": Nav("ObservedProperty", "ObservedProperties", "to_one",
                                 fk="observed_property_id"),
         "Observations": Nav("Observations", "Observations", "to_many", fk="datastream_id")},
        hidden=("thing_id", "sensor_id", "observed_property_id")),
    EntitySet("Observations", "Observation", "observations", ("datastream_id", "phenomenon_time"), _props(
        Prop("id", _OBS_ID_SQL, OBS_ID), Prop("phenomenonTime", "{a}.phenomenon_time", TIME),
        Prop("resultTime", "{a}.result_time", TIME), Prop("result", "{a}.result", NUMBER),
        Prop("resultQuality", "{a}.quality_flags", FLAGS)),
        {"Datastream": Nav("Datastream", "Datastreams", "to_one", fk="datastream_id")},
        hidden=("datastream_id", "result_json")),
    EntitySet("Actuators", "Actuator", "actuators", ("id",), _props(
        *_BASIC,
        Prop("encodingType", "{a}.encoding_type", TEXT), Prop("metadata", "{a}.metadata", TEXT)),
        {"TaskingCapabilities": Nav("TaskingCapabilities", "TaskingCapabilities", "to_many",
                                    fk="actuator_id")}),
    EntitySet("TaskingCapabilities", "TaskingCapability", "tasking_capabilities", ("id",), _props(
        *_BASIC,
        Prop("taskingParameters", "{a}.tasking_parameters", JSON, sortable=False),
        Prop("properties", "{a}.properties", JSON, sortable=False)),
        {"Thing": Nav("Thing", "Things", "to_one", fk="thing_id"),
         "Actuator": Nav("Actuator", "Actuators", "to_one", fk="actuator_id"),
         "Tasks": Nav("Tasks", "Tasks", "to_many", fk="tasking_capability_id")},
        hidden=("thing_id", "actuator_id")),
    EntitySet("Tasks", "Task", "tasks", ("id",), _props(
        Prop("id", "{a}.id", ID), Prop("creationTime", "{a}.creation_time", TIME),
        Prop("taskingParameters", "{a}.tasking_parameters", JSON, sortable=False),
        Prop("status", "{a}.status", TEXT)),
        {"TaskingCapability": Nav("TaskingCapability", "TaskingCapabilities", "to_one",
                                  fk="tasking_capability_id")},
        hidden=("tasking_capability_id",)),
]}


def entity_set(name: str) -> EntitySet:
    found = ENTITY_SETS.get(name)
    if found is None:
        raise NotFoundError(f"no entity set {name!r}; the entity sets here: {', '.join(ENTITY_SETS)}")
    return found


def parse_key(es: EntitySet, raw: str) -> tuple:
    """The key values from the text inside ``Set(...)``: an integer, or ``'ds_micros'`` for Observations."""
    text = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == "'" else raw
    try:
        if es.name == "Observations":
            ds, micros = text.split("_")
            return int(ds), int(micros)
        return (int(text),)
    except ValueError:
        raise NotFoundError(f"{es.singular} id {raw!r} is not an id of this server") from None


def key_condition(es: EntitySet, alias: str, key: tuple, params: dict, prefix: str = "k") -> str:
    """SQL selecting one entity by key, with its values added to ``params``."""
    if es.name == "Observations":
        params[f"{prefix}0"], params[f"{prefix}1"] = key
        return (f"{alias}.datastream_id = :{prefix}0 AND {alias}.phenomenon_time = "
                f"timestamptz 'epoch' + CAST(:{prefix}1 AS bigint) * interval '1 microsecond'")
    params[f"{prefix}0"] = key[0]
    return f"{alias}.id = :{prefix}0"


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def render_value(prop: Prop, value: object) -> object:
    if prop.kind == TIME:
        return iso(value)
    if prop.kind == FLAGS:
        names = flag_names(value or 0)
        return names or None
    return value


def entity_url(base: str, es: EntitySet, entity_id: object) -> str:
    key = entity_id if isinstance(entity_id, int) else f"'{entity_id}'"
    return f"{base}/{es.name}({key})"


def render_entity(es: EntitySet, row: dict, select: list[str] | None, base: str) -> dict:
    """One entity as SensorThings JSON: ``@iot.id``, ``@iot.selfLink``, properties, navigation links."""
    entity_id = row["id"]
    self_link = entity_url(base, es, entity_id)
    out: dict = {}
    if select is None or "id" in select:
        out["@iot.id"] = entity_id
    if select is None:
        out["@iot.selfLink"] = self_link
    for name, prop in es.props.items():
        if name == "id" or (select is not None and name not in select):
            continue
        value = render_value(prop, row.get(name))
        if es.name == "Observations" and name == "result" and value is None:
            value = row.get("result_json")
        out[name] = value
    if select is None:
        for nav in es.navs:
            out[f"{nav}@iot.navigationLink"] = f"{self_link}/{nav}"
    return out
