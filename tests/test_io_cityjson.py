"""CityJSON readers: Den Haag (0.8), Delft (2.0), Rotterdam (0.2), handmade models, CityJSONSeq."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import shapely
from pyproj import Transformer

from citytwin.errors import InputError
from citytwin.io.buildings import FRAME_COLUMNS, iter_building_chunks, read_buildings
from citytwin.io.cityjson import read_cityjson
from citytwin.io.crs import to_crs
from _paths import SHARED_DATA

DATA = SHARED_DATA
DEN_HAAG = DATA / "denhaag_3d" / "DenHaag_01.city.json"
DELFT = DATA / "delft_cjio" / "delft.json"
ROTTERDAM = DATA / "rotterdam_delfshaven" / "3-20-DELFSHAVEN.json"
SCALE, TRANSLATE = 0.001, (1000.0, 2000.0, 0.0)


@pytest.fixture(scope="module")
def den_haag():
    return read_cityjson(DEN_HAAG, crs="EPSG:7415")


@pytest.fixture(scope="module")
def delft():
    return read_cityjson(DELFT)


def test_den_haag_needs_a_crs_and_splits_the_compound_one():
    with pytest.raises(InputError, match="DenHaag_01.city.json: no CRS in file; pass --crs"):
        read_cityjson(DEN_HAAG)


def test_den_haag_844_buildings_with_parts_merged(den_haag):
    frame = den_haag.frame
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert len(frame) == 844 and den_haag.rejected.empty
    assert (den_haag.crs, den_haag.vertical_crs) == ("EPSG:28992", "EPSG:5709")
    assert frame.crs.to_epsg() == 28992
    assert any("0.8" in w for w in den_haag.warnings)
    parts = sum(len(a.get("parts", {})) for a in frame["attributes"])
    assert parts == 1653  # every BuildingPart found its Building
    assert frame["lod2"].notna().all()
    assert frame.geometry.is_valid.all() and (frame.geometry.geom_type == "Polygon").sum() >= 843
    xmin, ymin, xmax, ymax = frame.total_bounds  # SOURCE.txt: x 78248-79036, y 457604-458276
    assert xmin >= 78248 and xmax <= 79037 and ymin >= 457604 and ymax <= 458277


def test_den_haag_heights_match_the_municipal_ridge_attributes(den_haag):
    frame = den_haag.frame
    single = frame[["parts" not in a for a in frame["attributes"]]]
    assert len(single) == 337
    relative = np.array([a["RelativeRidgeHeight"] for a in single["attributes"]])
    absolute = np.array([a["AbsoluteRidgeHeight"] for a in single["attributes"]])
    # Geometry and attributes are both quantised to 1 mm.
    np.testing.assert_allclose(single["height"], relative, atol=0.0021)
    np.testing.assert_allclose(single["ground_elevation"], absolute - relative, atol=0.0021)
    for row in frame.itertuples():
        z = shapely.get_coordinates(row.lod2, include_z=True)[:, 2]
        assert z.min() == pytest.approx(row.ground_elevation, abs=1e-9)
        assert z.max() == pytest.approx(row.ground_elevation + row.height, abs=1e-9)
        assert row.attributes["roof_max"] == pytest.approx(z.max(), abs=1e-3)


def test_den_haag_lod2_reprojects_with_footprints(den_haag):
    frame = den_haag.frame.iloc[:20]
    moved = to_crs(frame, "EPSG:4326")
    for new, lod2_old, lod2_new in zip(moved.geometry, frame["lod2"], moved["lod2"]):
        z_old = shapely.get_coordinates(lod2_old, include_z=True)[:, 2]
        z_new = shapely.get_coordinates(lod2_new, include_z=True)[:, 2]
        np.testing.assert_array_equal(z_old, z_new)  # heights keep their datum
        assert shapely.Polygon(shapely.get_coordinates(new.exterior)).intersects(
            shapely.box(*shapely.bounds(shapely.force_2d(lod2_new))))
        assert 4.2 < new.centroid.x < 4.4 and 52.0 < new.centroid.y < 52.2  # The Hague


def test_delft_160_buildings_measured_height_and_bag_label_points(delft):
    raw = json.loads(DELFT.read_text())
    measured = {k: o["attributes"]["measuredHeight"] for k, o in raw["CityObjects"].items()
                if o["type"] == "Building"}
    frame = delft.frame
    assert len(frame) == 160 and delft.rejected.empty
    assert (delft.crs, delft.vertical_crs) == ("EPSG:28992", "EPSG:5709")
    assert frame["height"].tolist() == [measured[i] for i in frame["source_id"]]
    assert frame["lod2"].isna().all()  # LoD1 only
    assert {a["lod"] for a in frame["attributes"]} == {"1"}
    # The BAG label point (plaatsingspunt, RD coordinates, independent of the 3D geometry) lies in
    # the footprint of its building: vertex decoding and the footprint projection are right.
    labelled = [(re.search(r"\(1:([\d.]+) ([\d.]+)\)", a.get("plaatsingspunt", "")), g)
                for a, g in zip(frame["attributes"], frame.geometry)]
    labelled = [(m.groups(), g) for m, g in labelled if m]
    assert len(labelled) == 123
    points = shapely.points(np.array([p for p, _ in labelled], dtype=float))
    assert (shapely.distance(points, np.array([g for _, g in labelled])) == 0).all()


def test_delft_crs_round_trip_matches_pyproj(delft):
    raw = json.loads(DELFT.read_text())
    obj = raw["CityObjects"][delft.frame["source_id"].iloc[0]]
    scale, translate = np.array(raw["transform"]["scale"]), np.array(raw["transform"]["translate"])
    solid = obj["geometry"][0]["boundaries"]
    index = np.unique([v for shell in solid for face in shell for ring in face for v in ring])
    xyz = np.array(raw["vertices"])[index] * scale + translate
    lon, lat = Transformer.from_crs("EPSG:28992", "EPSG:4326", always_xy=True).transform(xyz[:, 0], xyz[:, 1])
    wgs = to_crs(delft.frame.iloc[:1], "EPSG:4326").geometry.iloc[0]
    outline = shapely.get_coordinates(wgs)
    # Every footprint vertex is one of the independently transformed solid vertices (within 1 m).
    truth = shapely.MultiPoint(np.column_stack([lon, lat]))
    nearest = shapely.distance(shapely.points(outline), truth)
    assert (nearest * 111_320 < 1.0).all()
    assert 4.35 < outline[:, 0].mean() < 4.39 and 51.99 < outline[:, 1].mean() < 52.02  # Delft


def test_declared_crs_conflicts_are_refused():
    with pytest.raises(InputError, match="declares EPSG:28992 but --crs EPSG:4326"):
        read_cityjson(DELFT, crs="EPSG:4326")
    assert read_cityjson(DELFT, crs="EPSG:28992").vertical_crs == "EPSG:5709"


def test_rotterdam_0_2_is_upgraded_in_memory():
    read = read_buildings(ROTTERDAM)
    raw = json.loads(ROTTERDAM.read_text())
    terrain = {k: float(o["attributes"]["TerrainHeight"]) for k, o in raw["CityObjects"].items()}
    assert len(read.frame) + len(read.rejected) == 853
    assert len(read.frame) >= 830
    assert any("0.2" in w for w in read.warnings)
    assert (read.crs, read.vertical_crs) == ("EPSG:28992", "EPSG:5709")
    # The walls reach down to z = 0; the terrain is the TerrainHeight attribute.
    np.testing.assert_allclose(read.frame["ground_elevation"], [terrain[i] for i in read.frame["source_id"]])
    assert set(r.split(" (")[0] for r in read.rejected["reason"]) == {"height not positive"}


# --- handmade models ------------------------------------------------------------------------------

def _box(vertices: list, x0: float, y0: float, x1: float, y1: float, z0: float, z1: float) -> list:
    """Outward-oriented faces of a box (bottom, top, 4 walls), appending quantised vertices."""
    base = len(vertices)
    for z in (z0, z1):
        for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
            vertices.append([round((x - TRANSLATE[0]) / SCALE), round((y - TRANSLATE[1]) / SCALE),
                             round((z - TRANSLATE[2]) / SCALE)])
    v = [base + i for i in range(8)]
    return [[[v[0], v[3], v[2], v[1]]], [[v[4], v[5], v[6], v[7]]], [[v[0], v[1], v[5], v[4]]],
            [[v[1], v[2], v[6], v[5]]], [[v[2], v[3], v[7], v[6]]], [[v[3], v[0], v[4], v[7]]]]


SEMANTICS = {"surfaces": [{"type": "GroundSurface"}, {"type": "RoofSurface"}, {"type": "WallSurface"}],
             "values": [[0, 1, 2, 2, 2, 2]]}


def _model(version: str = "2.0") -> dict:
    vertices: list = []
    part_a_lod1 = _box(vertices, 1000, 2000, 1010, 2010, 1, 10)
    part_a = _box(vertices, 1000, 2000, 1010, 2010, 1, 11)
    part_b = _box(vertices, 1010, 2000, 1020, 2010, 1, 6)
    shed = _box(vertices, 1030, 2000, 1040, 2005, 2, 8)
    kiosk = _box(vertices, 1050, 2000, 1052, 2002, 0.5, 9)
    objects = {
        "B1": {"type": "Building", "children": ["B1-a", "B1-b"],
               "attributes": {"function": "office", "yearOfConstruction": 1990, "storeysAboveGround": 3}},
        "B1-a": {"type": "BuildingPart", "parents": ["B1"], "geometry": [
            {"type": "Solid", "lod": "1.2", "boundaries": [part_a_lod1]},
            {"type": "Solid", "lod": "2.2", "boundaries": [part_a], "semantics": SEMANTICS}]},
        "B1-b": {"type": "BuildingPart", "parents": ["B1"], "geometry": [
            {"type": "Solid", "lod": "2.2", "boundaries": [part_b], "semantics": SEMANTICS}]},
        "shed": {"type": "Building", "geometry": [{"type": "MultiSurface", "lod": "2", "boundaries": shed}]},
        "kiosk": {"type": "Building", "attributes": {"measuredHeight": 4.5, "building": "kiosk"},
                  "geometry": [{"type": "Solid", "lod": "1.2", "boundaries": [kiosk]}]},
        "road": {"type": "Road", "geometry": []},
    }
    return {"type": "CityJSON", "version": version,
            "transform": {"scale": [SCALE] * 3, "translate": list(TRANSLATE)},
            "metadata": {"referenceSystem": "https://www.opengis.net/def/crs/EPSG/0/7415"},
            "CityObjects": objects, "vertices": vertices}


def test_handmade_parts_lods_and_semantics(tmp_path):
    path = tmp_path / "tiny.city.json"
    path.write_text(json.dumps(_model()))
    read = read_buildings(path)
    frame = read.frame.set_index("source_id")
    assert sorted(frame.index) == ["B1", "kiosk", "shed"]
    b1 = frame.loc["B1"]
    assert b1.geometry.equals(shapely.box(1000, 2000, 1020, 2010))  # the two parts' grounds, merged
    assert (b1.ground_elevation, b1.height) == (1.0, 10.0)  # top of part a (11) - ground (1)
    assert (b1.use, b1.year_built, b1.floors) == ("office", 1990, 3)
    assert b1.attributes["lod"] == "2.2" and sorted(b1.attributes["parts"]) == ["B1-a", "B1-b"]
    assert (b1.attributes["roof_max"], b1.attributes["roof_min"]) == (11.0, 6.0)
    assert shapely.get_num_geometries(b1.lod2) == 12  # 6 faces per LoD2.2 part; LoD1.2 not mixed in
    shed = frame.loc["shed"]  # no semantics: footprint is the projection of the faces
    assert shed.geometry.area == pytest.approx(50.0) and (shed.ground_elevation, shed.height) == (2.0, 6.0)
    kiosk = frame.loc["kiosk"]
    assert kiosk.height == 4.5 and kiosk.use == "retail" and kiosk.lod2 is None


def test_a_part_without_its_building_is_read_as_a_building(tmp_path):
    model = _model()
    del model["CityObjects"]["B1"]
    path = tmp_path / "orphans.city.json"
    path.write_text(json.dumps(model))
    read = read_cityjson(path)
    assert sorted(read.frame["source_id"]) == ["B1-a", "B1-b", "kiosk", "shed"]
    assert "2 BuildingParts without their Building" in read.warnings[0]
    model["CityObjects"]["shed"]["geometry"][0]["boundaries"] = [[["x", "y", "z"]]]
    path.write_text(json.dumps(model))
    with pytest.raises(InputError, match="malformed CityJSON geometry"):
        read_cityjson(path)


def test_versions_outside_the_supported_range_name_the_version_and_cjio(tmp_path):
    for version in ("3.0", "0.1"):
        path = tmp_path / f"v{version}.city.json"
        path.write_text(json.dumps(_model(version)))
        with pytest.raises(InputError, match=rf"version {re.escape(version)} is not supported.*cjio"):
            read_cityjson(path)


def test_corrupt_and_wrong_cityjson(tmp_path):
    truncated = tmp_path / "cut.city.json"
    truncated.write_text(DELFT.read_text()[:100_000])
    with pytest.raises(InputError, match="cut.city.json: not valid JSON"):
        read_buildings(truncated)
    no_buildings = _model()
    no_buildings["CityObjects"] = {"road": {"type": "Road", "geometry": []}}
    path = tmp_path / "roads.city.json"
    path.write_text(json.dumps(no_buildings))
    with pytest.raises(InputError, match=r"no Building objects in the file \(found: Road\)"):
        read_buildings(path)


def test_cityjsonseq_streams_features(tmp_path):
    model = _model()
    header = {k: v for k, v in model.items() if k not in ("CityObjects", "vertices")}
    lines = [json.dumps({**header, "CityObjects": {}, "vertices": []})]
    for i in range(5):
        vertices: list = []
        faces = _box(vertices, 1000 + 20 * i, 2000, 1010 + 20 * i, 2010, 0, 3 + i)
        building = {"type": "Building", "geometry": [{"type": "Solid", "lod": "2.2", "boundaries": [faces],
                                                       "semantics": SEMANTICS}]}
        lines.append(json.dumps({"type": "CityJSONFeature", "id": f"F{i}", "vertices": vertices,
                                 "CityObjects": {f"F{i}": building}}))
    path = tmp_path / "tiles.city.jsonl"
    path.write_text("\n".join(lines) + "\n")
    chunks = list(iter_building_chunks(path, chunk_size=2))
    assert [len(c.frame) for c in chunks] == [2, 2, 1]
    frame = read_buildings(path).frame
    assert frame["source_id"].tolist() == [f"F{i}" for i in range(5)]
    assert frame["height"].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert frame.index.tolist() == [0, 1, 2, 3, 4]
    assert frame.geometry.iloc[4].equals(shapely.box(1080, 2000, 1090, 2010))
