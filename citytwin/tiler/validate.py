"""Validate tilesets: tileset.json against the bundled 3D Tiles 1.1 JSON schema, and the glb metadata.

The schema files refer to each other by relative paths that upstream resolves "against the respective
subdirectories"; they are bundled flat (``citytwin/tiler/schema``), so every ``$ref`` is resolved by file
name. The Khronos glTF validator checks the glTF core but reports EXT_mesh_features and
EXT_structural_metadata as "unsupported"; :func:`glb_metadata_errors` checks those: their JSON against the
3D Metadata schema, and the binary layout (offsets, lengths, alignment, feature-id range).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
BASE = "https://schema.citytwin.invalid/3dtiles/"
_SIZES = {"INT8": 1, "UINT8": 1, "INT16": 2, "UINT16": 2, "INT32": 4, "UINT32": 4, "INT64": 8, "UINT64": 8,
          "FLOAT32": 4, "FLOAT64": 8}


def _load(name: str) -> dict:
    path = SCHEMA_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"3D Tiles schema file {name} is not bundled in {SCHEMA_DIR}")
    contents = json.loads(path.read_text())
    contents.pop("$id", None)  # the retrieval URI (by file name) is the identity
    return contents


@lru_cache(maxsize=4)
def _validator(root_name: str):
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    def retrieve(uri: str):
        return Resource.from_contents(_load(Path(urlsplit(uri).path).name), default_specification=DRAFT202012)

    root = _load(root_name)
    root["$id"] = BASE + root_name
    return Draft202012Validator(root, registry=Registry(retrieve=retrieve))


def _errors(root_name: str, document: dict, prefix: str = "") -> list[str]:
    errors = sorted(_validator(root_name).iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{prefix}{'/'.join(str(p) for p in err.absolute_path) or '(root)'}: {err.message}"
            for err in errors]


def tileset_errors(document: dict) -> list[str]:
    """Every schema violation in a tileset.json document, as ``path: message`` strings (empty if valid)."""
    return _errors("tileset.schema.json", document)


def glb_metadata_errors(gltf: dict, binary: bytes) -> list[str]:
    """Problems with the EXT_mesh_features / EXT_structural_metadata content of a glb (empty if none)."""
    from citytwin.tiler.glb import accessor_array

    ext = gltf.get("extensions", {}).get("EXT_structural_metadata")
    if ext is None:
        return ["no EXT_structural_metadata extension"]
    problems = _errors("schema.schema.json", ext["schema"], "schema/")
    classes = ext["schema"].get("classes", {})
    views = gltf["bufferViews"]
    for t, table in enumerate(ext.get("propertyTables", [])):
        where = f"propertyTables/{t}"
        problems += _errors("propertyTable.schema.json", table, where + "/")
        cls = classes.get(table.get("class"))
        if cls is None:
            problems.append(f"{where}: unknown class {table.get('class')!r}")
            continue
        count = table["count"]
        for name, definition in cls["properties"].items():
            stored = table.get("properties", {}).get(name)
            if stored is None:
                if definition.get("required"):
                    problems.append(f"{where}: required property {name!r} missing")
                continue
            view = views[stored["values"]]
            start, length = view.get("byteOffset", 0), view["byteLength"]
            if definition["type"] == "STRING":
                off_view = views[stored["stringOffsets"]]
                if off_view.get("byteOffset", 0) % 4:
                    problems.append(f"{where}/{name}: string offsets not 4-byte aligned")
                offsets = np.frombuffer(binary, "<u4", count + 1, off_view.get("byteOffset", 0))
                if off_view["byteLength"] != 4 * (count + 1) or offsets[0] != 0 or offsets[-1] != length \
                        or np.any(np.diff(offsets.astype(np.int64)) < 0):
                    problems.append(f"{where}/{name}: string offsets inconsistent with {count} values")
                else:
                    try:
                        binary[start:start + length].decode("utf-8")
                    except UnicodeDecodeError:
                        problems.append(f"{where}/{name}: values are not UTF-8")
            else:
                size = _SIZES[definition["componentType"]]
                if start % size:
                    problems.append(f"{where}/{name}: buffer view not aligned to {size} bytes")
                if length != size * count:
                    problems.append(f"{where}/{name}: {length} bytes for {count} values of {size} bytes")
    for m, mesh in enumerate(gltf.get("meshes", [])):
        for p, prim in enumerate(mesh["primitives"]):
            features = prim.get("extensions", {}).get("EXT_mesh_features", {}).get("featureIds", [])
            for f, fid in enumerate(features):
                where = f"meshes/{m}/primitives/{p}/featureIds/{f}"
                accessor = prim["attributes"].get(f"_FEATURE_ID_{fid['attribute']}")
                if accessor is None:
                    problems.append(f"{where}: attribute _FEATURE_ID_{fid['attribute']} missing")
                    continue
                if gltf["accessors"][accessor]["componentType"] == 5125:
                    problems.append(f"{where}: UNSIGNED_INT feature ids are not valid vertex attributes")
                ids = accessor_array(gltf, binary, accessor)
                out_of_range = ids.size and (ids.min() < 0 or ids.max() >= fid["featureCount"])
                if out_of_range or np.any(ids != np.round(ids)):
                    problems.append(f"{where}: feature ids outside 0..featureCount-1 or not integers")
                table = fid.get("propertyTable")
                tables = ext.get("propertyTables", [])
                short = table is not None and (table >= len(tables)
                                               or tables[table]["count"] < fid["featureCount"])
                if short:
                    problems.append(f"{where}: property table {table} missing or shorter than featureCount")
    return problems
