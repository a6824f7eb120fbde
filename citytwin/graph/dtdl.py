"""The twin's model as DTDL v3 interfaces (Azure Digital Twins and other DTDL platforms load these).

Each interface mirrors a table of the twin; relationships mirror the twin graph's edges. The
definitions are data, generated here so the model and the export cannot drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path

CONTEXT = "dtmi:dtdl:context;3"
NAMESPACE = "dtmi:org:citytwin"
VERSION = 1

# name -> (description, properties {name: schema}, relationships {name: target interface or None})
INTERFACES: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
    "District": ("A part of the city", {"name": "string"}, {}),
    "Building": ("A building with its footprint attributes and latest scenario results", {
        "sourceId": "string", "height": "double", "groundElevation": "double", "floors": "integer",
        "use": "string", "yearBuilt": "integer", "maxFloodDepth": "double", "annualElectricityKwh": "double",
        "outageState": "string"}, {"liesIn": "District"}),
    "Substation": ("A primary substation (a supply point of the distribution grid)", {
        "name": "string", "voltageKv": "double", "ratingMva": "double", "criticalDepth": "double"},
        {"feeds": "Feeder"}),
    "Feeder": ("A radial medium-voltage feeder", {"name": "string"}, {"feeds": "Transformer"}),
    "Transformer": ("A distribution transformer", {
        "ratingMva": "double", "failureRate": "double", "repairTimeH": "double", "criticalDepth": "double"},
        {"serves": "ServicePoint"}),
    "ServicePoint": ("Where customers connect to the grid", {"customers": "integer"},
                     {"supplies": "Building"}),
    "LineSection": ("A line or cable section", {
        "lengthKm": "double", "ratingMva": "double", "failureRate": "double", "repairTimeH": "double"},
        {"connects": None}),
    "Switch": ("A switching device: breaker, recloser, fuse, disconnector or normally-open tie", {
        "kind": "string", "normalState": "string", "presentState": "string"}, {"isolates": None}),
    "Sensor": ("A SensorThings Thing with its datastreams", {
        "name": "string", "kind": "string", "lastValue": "double"}, {"monitors": None}),
}


def dtmi(name: str) -> str:
    return f"{NAMESPACE}:{name};{VERSION}"


def interface(name: str) -> dict:
    description, properties, relationships = INTERFACES[name]
    contents: list[dict] = [{"@type": "Property", "name": prop, "schema": schema}
                            for prop, schema in properties.items()]
    for rel, target in relationships.items():
        entry = {"@type": "Relationship", "name": rel}
        if target:
            entry["target"] = dtmi(target)
        contents.append(entry)
    return {"@context": CONTEXT, "@id": dtmi(name), "@type": "Interface", "displayName": name,
            "description": description, "contents": contents}


def all_interfaces() -> list[dict]:
    return [interface(name) for name in INTERFACES]


def write_interfaces(out_dir: Path) -> list[Path]:
    """One ``<Name>.json`` per interface, as ADT's model upload expects."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for model in all_interfaces():
        path = out_dir / f"{model['displayName']}.json"
        path.write_text(json.dumps(model, indent=2))
        paths.append(path)
    return paths
