"""Importing the real datasets in ../shared/data into PostGIS: counts, heights, CRS, idempotency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import shapely
from pyproj import Transformer
from sqlalchemy import text

from citytwin.db.buildings import load_buildings
from citytwin.db.grid import load_grid
from citytwin.db.terrain import register_dem
from citytwin.db.twin import get_twin, init_twin
from citytwin.io.buildings import iter_building_chunks
from citytwin.io.grids import read_grid


def import_cli(database_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYTWIN_")}
    env["CITYTWIN_DATABASE_URL"] = database_url
    return subprocess.run([sys.executable, "-m", "citytwin", "import", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def count(engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar())


def test_den_haag_lod2_import_is_idempotent(engine, database_url, shared_data: Path) -> None:
    path = shared_data / "denhaag_3d" / "DenHaag_01.city.json"
    first = import_cli(database_url, "buildings", str(path), "--crs", "EPSG:7415", "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["imported"] == 844 and summary["crs"] == "EPSG:28992"
    with engine.connect() as conn:
        twin = get_twin(conn)
    assert twin.srid == 28992 and twin.vertical_crs == "EPSG:5709"
    assert count(engine, "SELECT count(*) FROM buildings") == 844
    assert count(engine, "SELECT count(*) FROM buildings WHERE lod2 IS NOT NULL") == 844
    # Heights: Den Haag's ridge heights run from a few metres to ~35 m above NAP ground.
    with engine.connect() as conn:
        lo, hi = conn.execute(text("SELECT min(height), max(height) FROM buildings")).one()
    assert 1.0 < lo and hi < 60.0
    second = import_cli(database_url, "buildings", str(path), "--crs", "EPSG:7415", "--json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["imported"] == 0 and again["updated"] == 844
    assert count(engine, "SELECT count(*) FROM buildings") == 844


def test_delft_heights_and_crs_round_trip(engine, shared_data: Path) -> None:
    path = shared_data / "delft_cjio" / "delft.json"
    with engine.begin() as conn:  # a twin in another metric CRS forces a real reprojection
        init_twin(conn, "delft", "EPSG:32631")
    summary = load_buildings(engine, iter_building_chunks(path), source="delft", path=str(path))
    assert summary.imported == 160
    document = json.loads(path.read_text())
    scale, translate = document["transform"]["scale"], document["transform"]["translate"]
    checked = 0
    for object_id, city_object in document["CityObjects"].items():
        if city_object["type"] != "Building" or "measuredHeight" not in city_object.get("attributes", {}):
            continue
        with engine.connect() as conn:
            row = conn.execute(text("SELECT height, ST_AsBinary(footprint) FROM buildings WHERE source_id = :s"),
                               {"s": object_id}).first()
        assert row is not None, object_id
        assert row[0] == pytest.approx(city_object["attributes"]["measuredHeight"], abs=0.01)
        # One source vertex, transformed independently, lies on the stored footprint within 1 m.
        boundaries = city_object["geometry"][0]["boundaries"]
        first_index = boundaries[0][0][0][0] if city_object["geometry"][0]["type"] == "Solid" else boundaries[0][0][0]
        vx, vy, _ = (np.array(document["vertices"][first_index]) * scale + translate)
        ex, ey = Transformer.from_crs("EPSG:28992", "EPSG:32631", always_xy=True).transform(vx, vy)
        footprint = shapely.from_wkb(row[1])
        assert footprint.boundary.distance(shapely.Point(ex, ey)) < 1.0 or footprint.distance(shapely.Point(ex, ey)) < 1.0
        checked += 1
        if checked >= 20:
            break
    assert checked == 20


def test_alexandria_geojson_gets_local_utm_and_dem_ground(engine, shared_data: Path) -> None:
    folder = shared_data / "alexandria_va"
    summary = load_buildings(engine, iter_building_chunks(folder / "buildings.geojson", height_attr="HEIGHT"),
                             source="alexandria", path="buildings.geojson")
    # Two of the 84 footprints carry no HEIGHT: rejected with that reason, the rest imported.
    assert summary.imported == 82 and summary.rejected == 2 and summary.crs == "EPSG:32618"
    assert all("height" in r["reason"] for r in summary.rejections)
    assert count(engine, "SELECT count(*) FROM buildings WHERE ground_elevation IS NULL") == 82
    dem = register_dem(engine, folder / "dtm.tif")
    assert dem.updated == 82
    with engine.connect() as conn:
        lo, hi = conn.execute(text("SELECT min(ground_elevation), max(ground_elevation) FROM buildings")).one()
    assert 0.0 < lo < hi < 30.0  # Old Town Alexandria lies a few metres above the Potomac


def test_grids_import(engine, shared_data: Path) -> None:
    grids = shared_data / "oberrhein_schutterwald_grids"
    summary = load_grid(engine, read_grid(grids / "mv_oberrhein.json"), source="oberrhein", path="mv_oberrhein.json")
    assert summary.crs.startswith("EPSG:326")  # WGS84 geodata -> local UTM zone for the new twin
    assert count(engine, "SELECT count(*) FROM grid_switches WHERE normal_state = 'open'") >= 6
    assert count(engine, "SELECT count(*) FROM grid_nodes WHERE geom IS NULL AND kind <> 'source'") == 0
    rbts = load_grid(engine, read_grid(shared_data / "rbts_bus2"), source="rbts", path="rbts_bus2")
    assert rbts.imported > 0
    assert count(engine, "SELECT coalesce(sum(customers), 0) FROM grid_nodes WHERE source = 'rbts'") == 1908
    again = load_grid(engine, read_grid(shared_data / "rbts_bus2"), source="rbts", path="rbts_bus2")
    assert again.updated > 0
    assert count(engine, "SELECT coalesce(sum(customers), 0) FROM grid_nodes WHERE source = 'rbts'") == 1908


BAD_INPUTS = {
    "corrupt.gpkg": (b"SQLite format 3\x00" + os.urandom(2000), "corrupt|not a|unreadable|cannot|could not"),
    "empty.geojson": (b'{"type": "FeatureCollection", "features": []}', "no features|empty"),
    "lines.geojson": (json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"height": 3},
        "geometry": {"type": "LineString", "coordinates": [[4.3, 52.0], [4.4, 52.1]]}}]}).encode(), "polygon|line"),
    "table.csv": (b"a,b\n1,2\n", "geometry|not a|building|unsupported"),
    "dem.tif": (b"II*\x00" + os.urandom(500), "corrupt|not a|unreadable|cannot|could not"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_files_get_clear_errors_and_change_nothing(engine, database_url, tmp_path: Path, name: str) -> None:
    content, pattern = BAD_INPUTS[name]
    path = tmp_path / name
    path.write_bytes(content)
    result = import_cli(database_url, "buildings", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    import re

    assert re.search(pattern, result.stderr, re.IGNORECASE), result.stderr
    assert count(engine, "SELECT count(*) FROM buildings") == 0
    assert count(engine, "SELECT count(*) FROM import_log") == 0
    with engine.connect() as conn:
        assert get_twin(conn) is None


def _geojson(tmp_path: Path, features: list[dict], crs: str | None = "urn:ogc:def:crs:EPSG::28992") -> Path:
    doc: dict = {"type": "FeatureCollection", "features": features}
    if crs:
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    path = tmp_path / "b.geojson"
    path.write_text(json.dumps(doc))
    return path


def _square(x: float, y: float, props: dict) -> dict:
    ring = [[x, y], [x + 10, y], [x + 10, y + 10], [x, y + 10], [x, y]]
    return {"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": [ring]}}


def test_missing_or_unknown_crs_and_missing_height(engine, database_url, tmp_path: Path) -> None:
    no_crs = _geojson(tmp_path, [_square(85000, 447000, {"height": 5})], crs=None)
    # GeoJSON without a crs member is CRS84 by RFC 7946; these metre coordinates are out of range.
    result = import_cli(database_url, "buildings", str(no_crs))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    unknown = import_cli(database_url, "buildings", str(no_crs), "--crs", "EPSG:999999")
    assert unknown.returncode == 2 and "999999" in unknown.stderr
    with_crs = _geojson(tmp_path, [_square(85000, 447000, {"hoogte": 5})])
    missing_attr = import_cli(database_url, "buildings", str(with_crs), "--height-attr", "height")
    assert missing_attr.returncode == 2 and "height" in missing_attr.stderr and "hoogte" in missing_attr.stderr
    assert count(engine, "SELECT count(*) FROM buildings") == 0


def test_self_intersecting_polygons_repaired_or_rejected(engine, tmp_path: Path) -> None:
    bow_tie = {"type": "Feature", "properties": {"id": "bowtie", "height": 6},
               "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}}
    spike = {"type": "Feature", "properties": {"id": "spike", "height": 6},  # a ring folding back on itself
             "geometry": {"type": "Polygon", "coordinates": [[[85100, 447000], [85110, 447000], [85110, 447010],
                                                               [85100, 447010], [85100, 447000]]]}}
    good = _square(85000, 447000, {"id": "good", "height": 9})
    path = _geojson(tmp_path, [bow_tie | {"geometry": {"type": "Polygon", "coordinates": [[[85200 + x, 447000 + y]
                    for x, y in bow_tie["geometry"]["coordinates"][0]]]}}, spike, good])
    summary = load_buildings(engine, iter_building_chunks(path), source="t", path=str(path))
    stored = summary.imported
    rejected = {r.get("source_id") or r.get("id") for r in summary.rejections}
    # The bow tie is either repaired into valid polygons or rejected with a reason; never stored invalid.
    assert stored + summary.rejected == 3
    assert count(engine, "SELECT count(*) FROM buildings WHERE NOT ST_IsValid(footprint)") == 0
    if summary.rejected:
        assert all(r.get("reason") for r in summary.rejections)
        assert "good" not in rejected
