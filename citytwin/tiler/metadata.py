"""Per-building metadata: the EXT_structural_metadata schema and its binary property tables.

One class, ``building``, whose properties are the building's identity and attributes plus, where a scenario
has run, its per-building results. Values are stored as parallel binary arrays (3D Metadata Specification,
"Binary Table Format"): numbers as little-endian arrays of their component type; strings as concatenated
UTF-8 bytes plus ``count + 1`` UINT32 offsets. Missing values use the property's ``noData`` sentinel (NaN and
infinities are not allowed in property tables).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SCHEMA_ID = "citytwin"
CLASS_ID = "building"

_NUMPY = {"INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FLOAT32": "<f4", "FLOAT64": "<f8"}


@dataclass(frozen=True)
class Property:
    """A property of the ``building`` class, read from the column of the same name."""

    name: str
    type: str  # SCALAR or STRING
    component: str | None  # INT16, INT64, FLOAT32, ... for SCALAR
    description: str
    required: bool = False
    no_data: float | int | str | None = None

    def definition(self) -> dict:
        out: dict = {"description": self.description, "type": self.type}
        if self.component:
            out["componentType"] = self.component
        if self.required:
            out["required"] = True
        elif self.no_data is not None:
            out["noData"] = self.no_data
        return out


BUILDING_PROPERTIES = (
    Property("id", "SCALAR", "INT64", "Building id in the twin.", required=True),
    Property("source_id", "STRING", None, "Identifier of the building in its source dataset.", no_data=""),
    Property("height", "SCALAR", "FLOAT32", "Height above ground, m.", required=True),
    Property("ground_elevation", "SCALAR", "FLOAT32", "Ground elevation, m above the vertical datum.",
             no_data=-9999.0),
    Property("use", "STRING", None, "Building use (residential, office, retail, ...).", no_data=""),
    Property("year_built", "SCALAR", "INT16", "Year of construction.", no_data=-32768),
)

# Scenario results, included when the frame has the column (``building_results`` of one run).
RESULT_PROPERTIES = (
    Property("max_depth_m", "SCALAR", "FLOAT32", "Maximum flood depth at the building, m.", no_data=-9999.0),
    Property("arrival_time_s", "SCALAR", "FLOAT32", "Flood arrival time after the start of the run, s.",
             no_data=-9999.0),
    Property("annual_kwh", "SCALAR", "FLOAT64", "Annual energy demand, kWh/yr.", no_data=-9999.0),
    Property("peak_kw", "SCALAR", "FLOAT32", "Peak power demand, kW.", no_data=-9999.0),
    Property("outage_state", "STRING", None,
             "Supply state of the building in the run, as the outage model reports it.", no_data=""),
)


def properties_for(columns) -> tuple[Property, ...]:
    """The properties a frame with ``columns`` provides: all building ones, plus results that are present."""
    present = set(columns)
    return BUILDING_PROPERTIES + tuple(p for p in RESULT_PROPERTIES if p.name in present)


def schema(properties: tuple[Property, ...]) -> dict:
    """The EXT_structural_metadata / 3D Tiles metadata schema for these properties."""
    return {
        "id": SCHEMA_ID,
        "classes": {
            CLASS_ID: {
                "name": "Building",
                "description": "A building of the twin, one feature per building.",
                "properties": {p.name: p.definition() for p in properties},
            }
        },
    }


def _numeric(values: pd.Series, prop: Property) -> bytes:
    dtype = np.dtype(_NUMPY[prop.component])
    if dtype.kind == "i" and pd.api.types.is_integer_dtype(values.dtype) and not values.isna().any():
        # Integers straight through: a float64 detour would round ids above 2**53.
        return np.clip(values.to_numpy(dtype=np.int64), np.iinfo(dtype).min, np.iinfo(dtype).max) \
            .astype(dtype).tobytes()
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(numbers)
    if bad.any():
        if prop.required:
            raise ValueError(f"property {prop.name!r} is required but has missing or infinite values")
        numbers = numbers.copy()
        numbers[bad] = prop.no_data
    if dtype.kind == "i":
        info = np.iinfo(dtype)
        numbers = np.clip(np.rint(numbers), info.min, info.max)
    return numbers.astype(dtype).tobytes()


def _strings(values: pd.Series, prop: Property) -> tuple[bytes, bytes]:
    texts = ["" if (v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA) else str(v)
             for v in values.tolist()]
    encoded = [t.encode("utf-8") for t in texts]
    offsets = np.zeros(len(encoded) + 1, dtype="<u4")
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return b"".join(encoded), offsets.tobytes()


@dataclass
class EncodedProperty:
    name: str
    values: bytes
    string_offsets: bytes | None = None


def encode_table(frame: pd.DataFrame, properties: tuple[Property, ...]) -> list[EncodedProperty]:
    """Binary columns of the property table, one row per building of ``frame`` in order."""
    out = []
    for prop in properties:
        column = frame[prop.name] if prop.name in frame.columns else pd.Series([None] * len(frame))
        if prop.type == "STRING":
            values, offsets = _strings(column, prop)
            out.append(EncodedProperty(prop.name, values, offsets))
        else:
            out.append(EncodedProperty(prop.name, _numeric(column, prop)))
    return out
