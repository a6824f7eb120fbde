"""Binary glTF 2.0 (glb) for one tile: one mesh primitive, feature ids and a property table.

Layout (glTF 2.0 spec, "GLB File Format Specification"): a 12-byte header, a JSON chunk padded with spaces
and a BIN chunk padded with zeros, both to 4-byte multiples. Every buffer view starts on an 8-byte boundary
(EXT_structural_metadata requires alignment to the component size; 8 covers INT64/FLOAT64).

Axes: glTF is y-up, 3D Tiles z-up. A 3D Tiles client rotates glTF content by +90 degrees about x
(y-up to z-up) before applying the tile ``transform``, so an ENU point (e, n, u) is stored as (e, u, -n).

Extensions: EXT_mesh_features assigns each vertex a feature id (vertex attribute ``_FEATURE_ID_0``, FLOAT:
the Khronos validator rejects UNSIGNED_INT vertex attributes; FLOAT represents ids exactly up to 2**24),
which indexes the EXT_structural_metadata property table of the buildings.

KHR_mesh_quantization (default): positions are stored as SHORT integers q in [-32767, 32767] per axis and
the node's ``translation`` + ``scale`` restore ``p = t + s q`` (s = extent / 65534, ~1 cm for a 650 m tile);
normals as normalized BYTE (n = q / 127). A vertex shrinks from 28 to 16 bytes and the gzip copy to about
half. Attribute elements stay 4-byte aligned (glTF 2.0, "Data Alignment"): byteStride 8 for positions, 4 for
normals.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from citytwin.tiler.meshes import TileMesh
from citytwin.tiler.metadata import CLASS_ID, EncodedProperty

GLB_MAGIC = 0x46546C67  # "glTF"
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942
ARRAY_BUFFER = 34962
ELEMENT_ARRAY_BUFFER = 34963
FLOAT = 5126
BYTE = 5120
SHORT = 5122
UNSIGNED_SHORT = 5123
UNSIGNED_INT = 5125
BASE_COLOR = [0.86, 0.85, 0.82, 1.0]
QUANT_MAX = 32767  # SHORT positions use [-32767, 32767]: symmetric, as normalized SHORT would require


class _Buffer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.length = 0
        self.views: list[dict] = []

    def add(self, data: bytes, target: int | None = None, stride: int | None = None) -> int:
        pad = (-self.length) % 8
        if pad:
            self.parts.append(b"\0" * pad)
            self.length += pad
        view = {"buffer": 0, "byteOffset": self.length, "byteLength": len(data)}
        if stride is not None:
            view["byteStride"] = stride
        if target is not None:
            view["target"] = target
        self.parts.append(data)
        self.length += len(data)
        self.views.append(view)
        return len(self.views) - 1

    def bytes(self) -> bytes:
        data = b"".join(self.parts)
        return data + b"\0" * ((-len(data)) % 4)


def to_y_up(v: np.ndarray) -> np.ndarray:
    """ENU (e, n, u) -> glTF (e, u, -n)."""
    out = np.empty_like(v)
    out[:, 0] = v[:, 0]
    out[:, 1] = v[:, 2]
    out[:, 2] = -v[:, 1]
    return out


def quantize_positions(positions: np.ndarray) -> tuple[np.ndarray, list[float], list[float]]:
    """SHORT positions padded to 4 components (8-byte stride), and the node translation and scale."""
    lo = positions.min(axis=0).astype(np.float64)
    hi = positions.max(axis=0).astype(np.float64)
    scale = np.maximum(hi - lo, 1e-6) / (2 * QUANT_MAX)
    translation = lo + QUANT_MAX * scale
    q = np.rint((positions - translation) / scale)
    padded = np.zeros((len(positions), 4), dtype="<i2")
    padded[:, :3] = np.clip(q, -QUANT_MAX, QUANT_MAX)
    return padded, translation.tolist(), scale.tolist()


def quantize_normals(normals: np.ndarray) -> np.ndarray:
    padded = np.zeros((len(normals), 4), dtype="i1")
    padded[:, :3] = np.clip(np.rint(normals * 127.0), -127, 127)
    return padded


def _vertex_accessors(buf: _Buffer, positions: np.ndarray, normals: np.ndarray, quantize: bool
                      ) -> tuple[list[dict], dict]:
    """POSITION and NORMAL accessors (quantized or float) and the node that places them."""
    n = len(positions)
    if not quantize:
        pos = np.ascontiguousarray(positions, dtype="<f4")
        return [
            {"bufferView": buf.add(pos.tobytes(), ARRAY_BUFFER), "componentType": FLOAT, "count": n,
             "type": "VEC3", "min": pos.min(axis=0).tolist(), "max": pos.max(axis=0).tolist()},
            {"bufferView": buf.add(np.ascontiguousarray(normals, dtype="<f4").tobytes(), ARRAY_BUFFER),
             "componentType": FLOAT, "count": n, "type": "VEC3"},
        ], {"mesh": 0}
    qpos, translation, scale = quantize_positions(positions.astype(np.float64))
    qn = quantize_normals(normals)
    return [
        {"bufferView": buf.add(qpos.tobytes(), ARRAY_BUFFER, stride=8), "componentType": SHORT, "count": n,
         "type": "VEC3", "min": qpos[:, :3].min(axis=0).tolist(), "max": qpos[:, :3].max(axis=0).tolist()},
        {"bufferView": buf.add(qn.tobytes(), ARRAY_BUFFER, stride=4), "componentType": BYTE,
         "normalized": True, "count": n, "type": "VEC3"},
    ], {"mesh": 0, "translation": translation, "scale": scale}


def tile_glb(mesh: TileMesh, feature_count: int, table: list[EncodedProperty], schema: dict,
             generator: str = "citytwin", quantize: bool = True) -> bytes:
    """The glb bytes of one tile."""
    buf = _Buffer()
    ids = np.ascontiguousarray(mesh.feature_ids, dtype="<f4")
    n_vertices = len(mesh.positions)
    if n_vertices <= 65535:
        indices = np.ascontiguousarray(mesh.indices, dtype="<u2")
        index_type = UNSIGNED_SHORT
    else:
        indices = np.ascontiguousarray(mesh.indices, dtype="<u4")
        index_type = UNSIGNED_INT

    accessors, node = _vertex_accessors(buf, to_y_up(mesh.positions), to_y_up(mesh.normals), quantize)
    accessors += [
        {"bufferView": buf.add(ids.tobytes(), ARRAY_BUFFER), "componentType": FLOAT, "count": n_vertices,
         "type": "SCALAR"},
        {"bufferView": buf.add(indices.tobytes(), ELEMENT_ARRAY_BUFFER), "componentType": index_type,
         "count": len(indices), "type": "SCALAR"},
    ]
    properties = {}
    definitions = schema["classes"][CLASS_ID]["properties"]
    for prop in table:
        if not prop.values and not definitions[prop.name].get("required"):
            # Every value is noData (e.g. a string result no building of this tile has): glTF forbids an
            # empty bufferView, and an omitted optional property reads as missing, which is what it is.
            continue
        entry: dict = {"values": buf.add(prop.values)}
        if prop.string_offsets is not None:
            entry["stringOffsets"] = buf.add(prop.string_offsets)
            entry["stringOffsetType"] = "UINT32"
        properties[prop.name] = entry

    primitive = {
        "attributes": {"POSITION": 0, "NORMAL": 1, "_FEATURE_ID_0": 2},
        "indices": 3,
        "material": 0,
        "mode": 4,
        "extensions": {"EXT_mesh_features": {"featureIds": [
            {"featureCount": int(feature_count), "attribute": 0, "propertyTable": 0}
        ]}},
    }
    binary = buf.bytes()
    gltf = {
        "asset": {"version": "2.0", "generator": generator},
        "extensionsUsed": ["EXT_mesh_features", "EXT_structural_metadata"],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [node],
        "meshes": [{"primitives": [primitive]}],
        "materials": [{
            "pbrMetallicRoughness": {"baseColorFactor": BASE_COLOR, "metallicFactor": 0.0,
                                     "roughnessFactor": 1.0},
            # Source solids are not always consistently wound; two-sided faces keep every face visible.
            "doubleSided": True,
        }],
        "accessors": accessors,
        "bufferViews": buf.views,
        "buffers": [{"byteLength": len(binary)}],
        "extensions": {"EXT_structural_metadata": {
            "schema": schema,
            "propertyTables": [{"class": CLASS_ID, "count": int(feature_count), "properties": properties}],
        }},
    }
    if quantize:
        gltf["extensionsUsed"].append("KHR_mesh_quantization")
        gltf["extensionsRequired"] = ["KHR_mesh_quantization"]
    return pack_glb(gltf, binary)


def pack_glb(gltf: dict, binary: bytes) -> bytes:
    text = json.dumps(gltf, separators=(",", ":"), allow_nan=False).encode("utf-8")
    text += b" " * ((-len(text)) % 4)
    total = 12 + 8 + len(text) + 8 + len(binary)
    return b"".join([
        struct.pack("<III", GLB_MAGIC, 2, total),
        struct.pack("<II", len(text), CHUNK_JSON), text,
        struct.pack("<II", len(binary), CHUNK_BIN), binary,
    ])


def read_glb(data: bytes) -> tuple[dict, bytes]:
    """Split a glb into its JSON and BIN chunk (for tests and tools)."""
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != GLB_MAGIC or version != 2 or total != len(data):
        raise ValueError("not a glb 2.0 file")
    json_len, json_type = struct.unpack_from("<II", data, 12)
    gltf = json.loads(data[20:20 + json_len])
    offset = 20 + json_len
    binary = b""
    if offset < len(data):
        bin_len, _ = struct.unpack_from("<II", data, offset)
        binary = data[offset + 8: offset + 8 + bin_len]
    return gltf, binary


def accessor_array(gltf: dict, binary: bytes, index: int) -> np.ndarray:
    """The values of accessor ``index`` (strided views, normalized integers), for tests and tools."""
    acc = gltf["accessors"][index]
    view = gltf["bufferViews"][acc["bufferView"]]
    dtype = np.dtype({5126: "<f4", 5125: "<u4", 5123: "<u2", 5122: "<i2", 5121: "u1", 5120: "i1"}[
        acc["componentType"]])
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc["type"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    stride = view.get("byteStride", dtype.itemsize * width)
    values = np.ndarray((acc["count"], width), dtype=dtype, buffer=binary, offset=start,
                        strides=(stride, dtype.itemsize)).copy()
    if acc.get("normalized"):
        values = np.maximum(values / np.iinfo(dtype).max, -1.0)  # glTF 2.0 3.11: signed -> max(c / max, -1)
    return values if width > 1 else values.ravel()
