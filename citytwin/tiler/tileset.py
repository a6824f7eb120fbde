"""tileset.json (3D Tiles 1.1) and the files on disk: content-hashed tiles with gzip copies beside them.

Refinement: ``ADD`` everywhere, content only in leaves (each building is stored exactly once), inner tiles
without content. The geometric error of an inner tile is the largest diagonal of its children's bounding
regions: a client refines the tile (loads its children) as soon as a child would cover more than its
maximum screen-space error in pixels (16 by default in CesiumJS), so buildings are only left out when a
whole child tile would be smaller than that on screen, never while they are visibly large. Leaves have
geometric error 0.

Bounding volumes are ``region``s (EPSG:4979 radians and ellipsoidal heights), computed from the vertices
themselves, so they are tight and independent of the leaves' ``transform`` (the ENU frame of their content).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from citytwin.tiler.tree import Node

CONTENT_DIR = "t"
TILESET_FILE = "tileset.json"
HASH_CHARS = 20
GZIP_LEVEL = 1  # level 6 shrinks mesh tiles only ~2 % more and takes twice as long
EARTH_RADIUS = 6378137.0


@dataclass
class LeafContent:
    """What the tileset needs to know about a written leaf tile (small: kept in memory for every leaf)."""

    address: str
    uri: str
    region: list[float]
    transform: list[float]
    features: int
    bytes: int


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_with_gzip(path: Path, data: bytes) -> None:
    """Write ``data`` and a gzip copy (``path.gz``, fixed mtime so builds are reproducible)."""
    _atomic_write(path, data)
    _atomic_write(path.with_name(path.name + ".gz"), gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0))


def write_content(out_dir: Path, data: bytes, suffix: str = ".glb") -> str:
    """Store tile content under its content hash; returns the URI relative to tileset.json."""
    name = hashlib.sha256(data).hexdigest()[:HASH_CHARS] + suffix
    directory = out_dir / CONTENT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if not path.exists():  # same hash, same bytes: nothing to do
        write_with_gzip(path, data)
    return f"{CONTENT_DIR}/{name}"


def region_union(regions: list[list[float]]) -> list[float]:
    return [min(r[0] for r in regions), min(r[1] for r in regions), max(r[2] for r in regions),
            max(r[3] for r in regions), min(r[4] for r in regions), max(r[5] for r in regions)]


def region_diagonal(region: list[float]) -> float:
    """Diagonal of a region in metres (spherical approximation, ample for a geometric error)."""
    west, south, east, north, low, high = region
    mid_lat = (south + north) / 2.0
    dx = (east - west) * math.cos(mid_lat) * EARTH_RADIUS
    dy = (north - south) * EARTH_RADIUS
    dz = high - low
    return math.sqrt(dx * dx + dy * dy + dz * dz)


def _tile(node: Node, contents: dict[str, LeafContent]) -> dict | None:
    if node.is_leaf:
        leaf = contents.get(node.address)
        if leaf is None:
            return None
        return {
            "boundingVolume": {"region": leaf.region},
            "geometricError": 0.0,
            "transform": leaf.transform,
            "content": {"uri": leaf.uri},
        }
    children = [t for t in (_tile(c, contents) for c in node.children) if t is not None]
    if not children:
        return None
    regions = [c["boundingVolume"]["region"] for c in children]
    return {
        "boundingVolume": {"region": region_union(regions)},
        "geometricError": round(max(region_diagonal(r) for r in regions), 3),
        "children": children,
    }


def tileset_document(root: Node, contents: dict[str, LeafContent], extras: dict) -> dict:
    """The tileset.json document for the tree ``root`` whose written leaves are ``contents``."""
    tile = _tile(root, contents)
    if tile is None:
        raise ValueError("the tileset has no content")
    if "children" not in tile:
        # A single leaf: wrap it so the root has a geometric error that makes clients load it.
        tile = {"boundingVolume": tile["boundingVolume"], "geometricError": 0.0, "children": [tile]}
        tile["geometricError"] = round(region_diagonal(tile["boundingVolume"]["region"]), 3)
    tile["refine"] = "ADD"
    version = hashlib.sha256("\n".join(sorted(c.uri for c in contents.values())).encode()).hexdigest()[:16]
    return {
        "asset": {"version": "1.1", "tilesetVersion": version, "extras": {"generator": "citytwin"}},
        "geometricError": round(region_diagonal(tile["boundingVolume"]["region"]), 3),
        "root": tile,
        "extras": {"citytwin": extras},
    }


def write_tileset(out_dir: Path, document: dict) -> Path:
    data = json.dumps(document, separators=(",", ":"), allow_nan=False).encode("utf-8")
    path = out_dir / TILESET_FILE
    write_with_gzip(path, data)
    return path
