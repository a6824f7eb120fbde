"""Importing the real datasets in ../shared/data into PostGIS: counts, heights, CRS, idempotency; broken
files leave the database as it was."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
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
    to_utm = Transformer.from_crs("EPSG:28992", "EPSG:32631", always_xy=True)
    checked = 0
    for object_id, city_object in document["CityObjects"].items():
        if city_object["type"] != "Building" or "measuredHeight" not in city_object.get("attributes", {}):
            continue
        with engine.connect() as conn:
            row = conn.execute(text("SELECT height, ST_AsBinary(footprint) FROM buildings WHERE source_id = :s"),
                               {"s": object_id}).first()
        assert row is not None, object_id
        assert row[0] == pytest.approx(city_object["attributes"]["measuredHeight"], abs=0.01)
        # The building's westernmost source vertex (a corner of its convex hull, so a corner of any
        # footprint made of its faces), transformed independently, is a stored vertex within 1 m.
        # Being near or inside the footprint is not enough: a transform off by metres stays inside.
        indices = np.unique(_vertex_indices(city_object["geometry"][0]["boundaries"]))
        xy = (np.array(document["vertices"])[indices] * scale + translate)[:, :2]
        vx, vy = xy[np.lexsort((xy[:, 1], xy[:, 0]))[0]]
        ex, ey = to_utm.transform(vx, vy)
        stored = shapely.get_coordinates(shapely.from_wkb(row[1]))
        assert np.hypot(stored[:, 0] - ex, stored[:, 1] - ey).min() < 1.0, object_id
        checked += 1
        if checked >= 20:
            break
    assert checked == 20


def _vertex_indices(boundaries) -> list[int]:
    """Every vertex index of a CityJSON geometry's (nested) boundaries."""
    if isinstance(boundaries, int):
        return [boundaries]
    return [i for part in boundaries for i in _vertex_indices(part)]


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


def _pandapower_counts(net) -> dict[str, int]:
    """What the documented pandapower mapping (``citytwin.io.grids.read_pandapower``) should make of
    ``net``, counted on pandapower's own tables: in-service elements between in-service buses."""
    def live(frame):
        return frame[frame["in_service"].astype(bool)]

    buses = set(live(net.bus).index)
    lines = live(net.line)
    lines = lines[lines["from_bus"].isin(buses) & lines["to_bus"].isin(buses)]
    trafos = live(net.trafo)
    trafos = trafos[trafos["hv_bus"].isin(buses) & trafos["lv_bus"].isin(buses)]
    loads = live(net.load)
    loads = loads[loads["bus"].isin(buses)]
    switches = net.switch[net.switch["bus"].isin(buses)]
    bus_bus = switches[(switches["et"] == "b") & switches["element"].isin(buses)]
    at_element = switches[switches["et"].isin(["l", "t"])]  # each puts a node between bus and element
    kept = pd.concat([bus_bus, at_element])
    return {"buses": len(buses), "lines": len(lines), "line_km": float(lines["length_km"].sum()),
            "nodes": len(buses) + len(trafos) + len(loads) + len(at_element),
            "sections": len(lines) + 2 * len(trafos) + len(loads),
            "switches": len(kept), "open_switches": int((~kept["closed"].astype(bool)).sum()),
            "transformers": int((trafos["vn_lv_kv"] <= 1.0).sum()),
            "substations": int((trafos["vn_lv_kv"] > 1.0).sum()),
            "service_points": len(loads), "sources": len(buses & set(live(net.ext_grid)["bus"]))}


def test_schutterwald_lv_grid_import_matches_pandapower(engine, database_url, tmp_path: Path,
                                                       shared_data: Path) -> None:
    import networkx as nx
    import pandapower as pp
    import pandapower.topology as pptop

    path = shared_data / "oberrhein_schutterwald_grids" / "lv_schutterwald.json"
    net = pp.from_json(str(path))
    # SOURCE.txt: 2940 buses, 3000 lines (62.3 km), 14 MV/LV transformers.
    assert len(net.bus) == 2940 and len(net.line) == 3000 and len(net.trafo) == 14

    # As published the grid is meshed: pandapower finds one loop of closed lines and switches. The twin
    # models radial operation, so it refuses the file, names that loop and writes nothing.
    graph = pptop.create_nxgraph(net, respect_switches=True, include_trafos=True, multi=True)
    loop = {f"line_{key[1]}" for _, _, key in nx.find_cycle(graph)}
    assert len(nx.cycle_basis(nx.Graph(graph))) == 1 and len(loop) == 5
    refused = import_cli(database_url, "grid", str(path))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "loop" in refused.stderr and set(re.findall(r"'(line_\d+)'", refused.stderr)) == loop
    suggested = re.search(r"needs one of them open, e\.g\. 'switch_(\d+)'", refused.stderr)
    assert suggested, refused.stderr
    assert count(engine, "SELECT count(*) FROM grid_nodes") == 0
    assert count(engine, "SELECT count(*) FROM twin") == 0

    # Opened at the switch the error suggests (one breaker of that loop), it imports in full.
    switch = int(suggested.group(1))
    assert f"line_{net.switch.at[switch, 'element']}" in loop
    net.switch.at[switch, "closed"] = False
    radial = tmp_path / "lv_schutterwald_radial.json"
    pp.to_json(net, str(radial))
    expected = _pandapower_counts(net)
    assert expected["transformers"] == 14 and expected["line_km"] == pytest.approx(62.3, abs=0.05)
    result = import_cli(database_url, "grid", str(radial), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["crs"] == "EPSG:32632"  # WGS84 geodata at 7.9 E -> UTM 32N for the new twin
    assert summary["imported"] == expected["nodes"] + expected["sections"] + expected["switches"]
    queries = {
        "buses": "SELECT count(*) FROM grid_nodes WHERE node_id LIKE 'bus\\_%'",
        "nodes": "SELECT count(*) FROM grid_nodes",
        "lines": "SELECT count(*) FROM grid_sections WHERE section_id LIKE 'line\\_%'",
        "sections": "SELECT count(*) FROM grid_sections",
        "switches": "SELECT count(*) FROM grid_switches",
        "open_switches": "SELECT count(*) FROM grid_switches WHERE normal_state = 'open'",
        "transformers": "SELECT count(*) FROM grid_nodes WHERE kind = 'transformer'",
        "substations": "SELECT count(*) FROM grid_nodes WHERE kind = 'substation'",
        "service_points": "SELECT count(*) FROM grid_nodes WHERE kind = 'service_point'",
        "sources": "SELECT count(*) FROM grid_nodes WHERE kind = 'source'",
    }
    stored = {key: count(engine, sql) for key, sql in queries.items()}
    assert stored == {key: expected[key] for key in queries}
    with engine.connect() as conn:
        km = conn.execute(text("SELECT sum(length_km) FROM grid_sections "
                               "WHERE section_id LIKE 'line\\_%'")).scalar()
        # Back in WGS84 the nodes lie in SOURCE.txt's bbox (7.872-7.902 E, 48.448-48.463 N).
        lon0, lat0, lon1, lat1 = conn.execute(text(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
            "FROM (SELECT ST_Extent(ST_Transform(geom, 4326)) AS e FROM grid_nodes) s")).one()
    assert km == pytest.approx(expected["line_km"])
    assert 7.871 < lon0 < lon1 < 7.903 and 48.447 < lat0 < lat1 < 48.464
    assert count(engine, "SELECT count(*) FROM grid_nodes WHERE geom IS NULL") == 0


DB_TABLES = ("twin", "buildings", "grid_nodes", "grid_sections", "grid_switches", "feeders",
             "service_connections", "terrain", "import_log")


def _row_counts(engine) -> dict[str, int]:
    return {table: count(engine, f"SELECT count(*) FROM {table}") for table in DB_TABLES}


# Broken inputs: name -> builder(tmp_path, shared_data) -> (CLI arguments after ``import``, error pattern).
def _truncated_pandapower(tmp: Path, data: Path) -> tuple[list[str], str]:
    path = tmp / "truncated.json"
    path.write_bytes((data / "oberrhein_schutterwald_grids" / "lv_schutterwald.json").read_bytes()[:400_000])
    return ["grid", str(path)], r"truncated\.json.*not a readable pandapower"


def _looped_pandapower(tmp: Path, data: Path) -> tuple[list[str], str]:
    import pandapower as pp

    net = pp.from_json(str(data / "oberrhein_schutterwald_grids" / "mv_oberrhein.json"))
    net.switch["closed"] = True  # closing the normally-open ties makes loops between the feeders
    pp.to_json(net, str(tmp / "looped.json"))
    return ["grid", str(tmp / "looped.json")], r"loop|connected through closed"


def _rbts_bad_number(tmp: Path, data: Path) -> tuple[list[str], str]:
    folder = tmp / "rbts_bad"
    shutil.copytree(data / "rbts_bus2", folder)
    sections = pd.read_csv(folder / "sections.csv")
    sections["length_km"] = sections["length_km"].astype(object)
    sections.loc[3, "length_km"] = "far"
    sections.to_csv(folder / "sections.csv", index=False)
    return ["grid", str(folder)], r"length_km.*'far'"


def _grid_ids_of_another_source(tmp: Path, data: Path) -> tuple[list[str], str]:
    return ["grid", str(data / "rbts_bus2"), "--source", "other"], r"already belong to another source"


def _garbage_dem(tmp: Path, data: Path) -> tuple[list[str], str]:
    path = tmp / "garbage.tif"
    path.write_bytes(b"II*\x00" + os.urandom(4000))
    return ["dem", str(path)], r"garbage\.tif.*not a readable raster"


def _truncated_dem(tmp: Path, data: Path) -> tuple[list[str], str]:
    import rasterio
    from rasterio.transform import from_origin

    whole = tmp / "whole.tif"
    cells = np.random.default_rng(5).uniform(0, 30, (400, 400)).astype("float32")
    with rasterio.open(whole, "w", driver="GTiff", width=400, height=400, count=1, dtype="float32",
                       crs="EPSG:26918", transform=from_origin(320000, 4300000, 1, 1), nodata=-9999) as out:
        out.write(cells[None])
    path = tmp / "truncated.tif"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return ["dem", str(path)], r"truncated\.tif.*(corrupt|truncated|not a readable)"


def _dem_without_crs(tmp: Path, data: Path) -> tuple[list[str], str]:
    import rasterio
    from rasterio.transform import from_origin

    path = tmp / "nocrs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=1, dtype="float32",
                       transform=from_origin(0, 4, 1, 1)) as out:
        out.write(np.ones((1, 4, 4), dtype="float32"))
    return ["dem", str(path)], r"no CRS"


def _dem_contradicting_crs(tmp: Path, data: Path) -> tuple[list[str], str]:
    dtm = data / "alexandria_va" / "dtm.tif"  # declares EPSG:26918
    return ["dem", str(dtm), "--crs", "EPSG:32618"], r"declares .* but --crs EPSG:32618"


BROKEN = {"truncated-pandapower": _truncated_pandapower, "looped-pandapower": _looped_pandapower,
          "rbts-bad-number": _rbts_bad_number, "grid-ids-of-another-source": _grid_ids_of_another_source,
          "garbage-dem": _garbage_dem, "truncated-dem": _truncated_dem, "dem-without-crs": _dem_without_crs,
          "dem-contradicting-crs": _dem_contradicting_crs}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_grid_and_dem_files_change_nothing_in_a_loaded_twin(engine, database_url, tmp_path: Path,
                                                                    shared_data: Path, case: str) -> None:
    folder = shared_data / "alexandria_va"
    load_buildings(engine, iter_building_chunks(folder / "buildings.geojson", height_attr="HEIGHT"),
                   source="alexandria", path="buildings.geojson")
    with engine.begin() as conn:  # some buildings still without ground: a DEM import would fill them
        conn.execute(text("UPDATE buildings SET ground_elevation = 1.5 WHERE id % 2 = 0"))
    register_dem(engine, folder / "dtm.tif", sample_buildings=False)
    load_grid(engine, read_grid(shared_data / "rbts_bus2"), source="rbts", path="rbts_bus2")
    before = _row_counts(engine)
    assert before["buildings"] == 82 and before["grid_nodes"] > 0 and before["terrain"] == 1
    with engine.connect() as conn:
        grounds = conn.execute(text("SELECT id, ground_elevation FROM buildings ORDER BY id")).all()

    arguments, pattern = BROKEN[case](tmp_path, shared_data)
    result = import_cli(database_url, *arguments)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert re.search(pattern, result.stderr, re.IGNORECASE | re.DOTALL), result.stderr
    assert _row_counts(engine) == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, ground_elevation FROM buildings ORDER BY id")).all() == grounds


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
