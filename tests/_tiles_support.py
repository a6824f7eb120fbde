"""Shared helpers for the tests/test_tiles_*.py files: test data, the Node glTF validator, glb decoding.

The decoding here is written against the specifications (glTF 2.0 GLB layout, 3D Metadata binary tables,
3D Tiles y-up -> z-up convention) independently of ``citytwin.tiler`` so that tests check the tiler
rather than repeat it.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
from _paths import SHARED_DATA

CRS = "EPSG:28992"
X0, Y0 = 85000.0, 447000.0  # Delft, RD New

REPO = Path(__file__).resolve().parents[1]
DENHAAG = SHARED_DATA / "denhaag_3d" / "DenHaag_01.city.json"
DELFT = SHARED_DATA / "delft_cjio" / "delft.json"
VALIDATOR = REPO / "tests" / "js" / "validate_gltf.mjs"
CESIUM_BUILD = REPO / "node_modules" / "cesium" / "Build" / "Cesium"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run"]

# glTF y-up -> 3D Tiles z-up: +90 degrees about x (3D Tiles 1.1, "glTF transforms"): (x, y, z) -> (x, -z, y).
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def read_city(path: Path, crs: str | None = None):
    """A CityJSON file as the tiler's frame (ids 1..n) plus its CRS pair."""
    from citytwin.io.cityjson import read_cityjson

    read = read_cityjson(path, crs=crs)
    frame = read.frame.reset_index(drop=True)
    frame["id"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return frame, read.crs, read.vertical_crs


def validate_glbs(paths: list[Path]) -> list[dict]:
    """Run the Khronos glTF validator (Node) on every file; one report per file."""
    assert shutil.which("node"), "node is required for the glTF validator"
    assert (REPO / "node_modules" / "gltf-validator").is_dir(), "run `npm install` in the repository first"
    out = subprocess.run(["node", str(VALIDATOR), *map(str, paths)], capture_output=True, text=True,
                         check=True, cwd=REPO)
    return json.loads(out.stdout)


def tileset_problems(tileset_dir: Path, expected_properties: set[str] = frozenset()) -> list[str]:
    """Everything wrong with a tileset on disk (empty when valid).

    tileset.json against the 3D Tiles 1.1 schema; every content glb through the Khronos glTF validator
    (errors, and warnings other than the metadata extensions it does not know) and through
    :func:`citytwin.tiler.validate.glb_metadata_errors`; every leaf's file present; and
    ``expected_properties`` (e.g. scenario results) declared by every glb's metadata class and stored in
    at least one tile's property table (a tile leaves out an optional property none of its buildings has).
    """
    from citytwin.tiler.validate import glb_metadata_errors, tileset_errors

    doc = json.loads((tileset_dir / "tileset.json").read_text())
    problems = [f"tileset.json {e}" for e in tileset_errors(doc)]
    uris = [leaf["content"]["uri"] for leaf in iter_leaves(doc["root"])]
    missing = [u for u in uris if not (tileset_dir / u).is_file()]
    problems += [f"{u}: missing" for u in missing]
    paths = [tileset_dir / u for u in uris if u not in missing]
    if not paths:
        return problems + ["no content"]
    stored: set[str] = set()
    for report in validate_glbs(paths):
        name = Path(report["path"]).name
        for m in report["messages"]:
            if m["severity"] == "error" or (m["severity"] == "warning"
                                            and m["code"] != "UNSUPPORTED_EXTENSION"):
                problems.append(f"{name}: gltf-validator {m['severity']} {m['code']} {m['message']}")
        if report["errors"] and not any(m["severity"] == "error" for m in report["messages"]):
            problems.append(f"{name}: gltf-validator reports {report['errors']} errors")
    for path in paths:
        gltf, binary = split_glb(path.read_bytes())
        problems += [f"{path.name}: {e}" for e in glb_metadata_errors(gltf, binary)]
        ext = gltf.get("extensions", {}).get("EXT_structural_metadata", {})
        declared = set()
        for cls in ext.get("schema", {}).get("classes", {}).values():
            declared |= set(cls.get("properties", {}))
        for table in ext.get("propertyTables", []):
            stored |= set(table.get("properties", {}))
        lacking = sorted(set(expected_properties) - declared)
        if lacking:
            problems.append(f"{path.name}: the class does not declare {', '.join(lacking)}")
    # A tile may omit an optional property none of its buildings has; some tile must store it.
    never = sorted(set(expected_properties) - stored)
    if never:
        problems.append(f"no tile stores {', '.join(never)}")
    return problems


def split_glb(data: bytes) -> tuple[dict, bytes]:
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF" and version == 2 and length == len(data)
    json_length, json_type = struct.unpack_from("<I4s", data, 12)
    assert json_type == b"JSON"
    doc = json.loads(data[20:20 + json_length])
    bin_length, bin_type = struct.unpack_from("<I4s", data, 20 + json_length)
    assert bin_type == b"BIN\0"
    start = 28 + json_length
    return doc, data[start:start + bin_length]


_COMPONENTS = {5126: "<f4", 5125: "<u4", 5123: "<u2", 5122: "<i2", 5121: "u1", 5120: "i1"}
_WIDTH = {"SCALAR": 1, "VEC3": 3}
_METADATA = {"INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FLOAT32": "<f4", "FLOAT64": "<f8"}


def accessor(doc: dict, binary: bytes, index: int) -> np.ndarray:
    """Accessor values per glTF 2.0 (byteStride honoured; normalized signed ints -> max(c / max, -1))."""
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    dtype = np.dtype(_COMPONENTS[acc["componentType"]])
    width = _WIDTH[acc["type"]]
    stride = view.get("byteStride", dtype.itemsize * width)
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    rows = [np.frombuffer(binary, dtype, width, start + k * stride) for k in range(acc["count"])]
    values = np.array(rows).reshape(acc["count"], width)
    if acc.get("normalized"):
        values = np.maximum(values / np.iinfo(dtype).max, -1.0)
    return values if width > 1 else values.ravel()


def positions(doc: dict, binary: bytes) -> np.ndarray:
    """POSITION of the (only) mesh in the glTF scene frame: the node's translation and scale applied
    (KHR_mesh_quantization stores integers and moves the dequantization into the node)."""
    (node,) = [n for n in doc["nodes"] if "mesh" in n]
    assert "rotation" not in node and "matrix" not in node
    prim = doc["meshes"][node["mesh"]]["primitives"][0]
    raw = accessor(doc, binary, prim["attributes"]["POSITION"]).astype(np.float64)
    scale = np.array(node.get("scale", [1.0, 1.0, 1.0]))
    return raw * scale + np.array(node.get("translation", [0.0, 0.0, 0.0]))


def property_table(doc: dict, binary: bytes) -> dict[str, list]:
    """Decode the first EXT_structural_metadata property table into python lists (noData -> None)."""
    ext = doc["extensions"]["EXT_structural_metadata"]
    table = ext["propertyTables"][0]
    cls = ext["schema"]["classes"][table["class"]]["properties"]
    views = doc["bufferViews"]
    count = table["count"]
    # An optional property left out of the table reads as its default (or missing) for every row.
    out: dict[str, list] = {name: [d.get("default")] * count for name, d in cls.items()
                            if name not in table["properties"]}
    for name, stored in table["properties"].items():
        definition = cls[name]
        view = views[stored["values"]]
        start, length = view.get("byteOffset", 0), view["byteLength"]
        if definition["type"] == "STRING":
            ov = views[stored["stringOffsets"]]
            offsets = np.frombuffer(binary, "<u4", count + 1, ov.get("byteOffset", 0))
            raw = binary[start:start + length]
            values = [raw[offsets[i]:offsets[i + 1]].decode() for i in range(count)]
        else:
            values = np.frombuffer(binary, _METADATA[definition["componentType"]], count, start).tolist()
        no_data = definition.get("noData")
        out[name] = [None if (no_data is not None and v == no_data) else v for v in values]
    return out


def iter_leaves(tile: dict):
    if "content" in tile:
        yield tile
    for child in tile.get("children", []):
        yield from iter_leaves(child)


def buildings_in_tileset(tileset_dir: Path) -> dict[int, dict]:
    """Every building of a tileset: its ECEF vertices (tile transform applied) and its properties."""
    doc = json.loads((tileset_dir / "tileset.json").read_text())
    out: dict[int, dict] = {}
    for leaf in iter_leaves(doc["root"]):
        gltf, binary = split_glb((tileset_dir / leaf["content"]["uri"]).read_bytes())
        prim = gltf["meshes"][0]["primitives"][0]
        ids = accessor(gltf, binary, prim["attributes"]["_FEATURE_ID_0"]).astype(np.int64)
        matrix = np.array(leaf.get("transform", np.eye(4).ravel().tolist())).reshape(4, 4).T  # column-major
        local = positions(gltf, binary) @ Y_UP_TO_Z_UP.T
        ecef = local @ matrix[:3, :3].T + matrix[:3, 3]
        table = property_table(gltf, binary)
        for row in range(len(table["id"])):
            props = {k: v[row] for k, v in table.items()}
            assert props["id"] not in out, f"building {props['id']} appears in two tiles"
            out[props["id"]] = {"ecef": ecef[ids == row], "properties": props, "uri": leaf["content"]["uri"],
                                "region": leaf["boundingVolume"]["region"]}
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn serving an ASGI app in a background thread (for browser and HTTP tests)."""

    def __init__(self, app, port: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def synthetic(n: int, seed: int = 1, spacing: float = 30.0):
    """``n`` rectangular buildings on a jittered grid near Delft (RD New), with every building column."""
    import math

    import geopandas as gpd
    import shapely

    rng = np.random.default_rng(seed)
    side = int(math.ceil(math.sqrt(n)))
    i = np.arange(n)
    cx = X0 + (i % side) * spacing + rng.uniform(-2, 2, n)
    cy = Y0 + (i // side) * spacing + rng.uniform(-2, 2, n)
    w, d = rng.uniform(6, 14, n), rng.uniform(6, 14, n)
    return gpd.GeoDataFrame({
        "id": i + 100, "source_id": [f"s{k}" for k in i], "height": rng.uniform(3, 30, n),
        "ground_elevation": rng.uniform(-1, 2, n), "use": rng.choice(["residential", "office"], n),
        "year_built": rng.integers(1900, 2020, n),
    }, geometry=shapely.box(cx - w / 2, cy - d / 2, cx + w / 2, cy + d / 2), crs=CRS)
