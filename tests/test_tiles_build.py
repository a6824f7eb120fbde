"""Building tilesets from GeoDataFrames: geometry, tree, tileset rules, metadata, files and bad input."""

from __future__ import annotations

import gzip
import hashlib
import json

import geopandas as gpd
import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from _tiles_support import (CRS, X0, Y0, accessor, buildings_in_tileset, iter_leaves, positions,
                            property_table, split_glb, synthetic, tileset_problems, validate_glbs)
from citytwin.errors import InputError
from citytwin.tiler import build_tileset
from citytwin.tiler.tileset import region_diagonal
from citytwin.tiler.tree import build_tree
from citytwin.tiler.validate import tileset_errors

def one(geometry, height=12.0, ground=3.0, **extra) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"id": [1], "height": [height], "ground_elevation": [ground], **extra},
                            geometry=[geometry], crs=CRS)


def single_tile(tmp_path, frame, **kwargs):
    """Build and return (glTF JSON, binary, ENU positions, ENU normals, triangles) of the only tile."""
    build_tileset(frame, tmp_path / "ts", crs=CRS, vertical_crs="EPSG:5709", name="t", **kwargs)
    doc = json.loads((tmp_path / "ts" / "tileset.json").read_text())
    (leaf,) = list(iter_leaves(doc["root"]))
    gltf, binary = split_glb((tmp_path / "ts" / leaf["content"]["uri"]).read_bytes())
    prim = gltf["meshes"][0]["primitives"][0]
    def to_enu(v):
        return np.column_stack([v[:, 0], -v[:, 2], v[:, 1]])  # glTF (e, u, -n) -> ENU
    pos = to_enu(positions(gltf, binary))
    nrm = to_enu(accessor(gltf, binary, prim["attributes"]["NORMAL"]).astype(float))
    tris = accessor(gltf, binary, prim["indices"]).astype(int).reshape(-1, 3)
    return gltf, binary, pos, nrm, tris


def _faces(pos, tris):
    a, b, c = pos[tris[:, 0]], pos[tris[:, 1]], pos[tris[:, 2]]
    cross = np.cross(b - a, c - a)
    return cross, (a + b + c) / 3.0


def test_box_is_extruded_with_outward_faces(tmp_path):
    _, _, pos, nrm, tris = single_tile(tmp_path, one(box(X0, Y0, X0 + 10, Y0 + 20)))
    # Normals are normalized BYTEs (KHR_mesh_quantization): per-component error <= 0.5/127, so the length is
    # within sqrt(3) * 0.5 / 127 = 0.0068 of 1.
    assert np.allclose(np.linalg.norm(nrm, axis=1), 1.0, atol=0.0068)
    z = pos[:, 2]
    # Origin at the lowest vertex: base at 0, roof at the height (ENU up; the 10 m box curves < 1 mm).
    assert z.min() == pytest.approx(0.0, abs=1e-3) and z.max() == pytest.approx(12.0, abs=1e-3)
    cross, centre = _faces(pos, tris)
    area = np.linalg.norm(cross, axis=1) / 2
    up = cross[:, 2] / np.linalg.norm(cross, axis=1)
    roof = up > 0.99
    # RD New scale factor near Delft is 0.99991: areas agree within 0.1 %.
    assert area[roof].sum() == pytest.approx(200.0, rel=1e-3)
    walls = np.abs(up) < 1e-3
    assert walls.sum() == 8 and roof.sum() == 2 and len(tris) == 10  # no floor
    assert area[walls].sum() == pytest.approx(2 * (10 + 20) * 12.0, rel=1e-3)
    # Counter-clockwise from outside: the winding normal points away from the box centre.
    middle = pos.mean(axis=0)
    outward = np.einsum("ij,ij->i", cross[walls], centre[walls] - middle)
    assert (outward > 0).all()
    # Vertex normals agree with the winding.
    assert (np.einsum("ij,ij->i", nrm[tris[:, 0]], cross) > 0).all()


def test_hole_and_clockwise_parts(tmp_path):
    outer = Polygon([(0, 0), (0, 30), (30, 30), (30, 0)],  # clockwise on purpose
                    holes=[[(10, 10), (20, 10), (20, 20), (10, 20)]])
    annex = box(200, 0, 210, 10)
    geom = shapely.affinity.translate(MultiPolygon([outer, annex]), X0, Y0)
    _, _, pos, nrm, tris = single_tile(tmp_path, one(geom, height=9.0))
    cross, centre = _faces(pos, tris)
    n = cross / np.linalg.norm(cross, axis=1)[:, None]
    roof = n[:, 2] > 0.99
    # Nothing faces down: roofs up, walls horizontal (to 1e-4: over 50 m the ellipsoid normal turns 8e-6 rad).
    assert (n[:, 2] > -1e-4).all()
    assert np.linalg.norm(cross[roof], axis=1).sum() / 2 == pytest.approx(900 - 100 + 100, rel=1e-3)
    walls = ~roof
    assert walls.sum() == 2 * (4 + 4 + 4)
    # Courtyard walls face the courtyard centre. ENU is turned against the RD grid (meridian convergence),
    # so find the centre as the mean of the main part's 8 distinct corners (symmetric about it).
    main = pos[:, 0] < pos[:, 0].min() + 100.0
    corners = np.unique(np.round(pos[main][:, :2], 1), axis=0)  # 0.1 m: top and base differ by < 1 mm
    assert len(corners) == 8
    hole_centre = corners.mean(axis=0)
    near_hole = (np.linalg.norm(centre[:, :2] - hole_centre, axis=1) < 8.0) & walls
    assert near_hole.sum() == 8
    towards = np.einsum("ij,ij->i", n[near_hole, :2], hole_centre - centre[near_hole, :2])
    assert (towards > 0).all()


def test_lod2_solid_faces_point_outward(tmp_path):
    x, y, z0, z1 = X0, Y0, 1.0, 7.0
    c = [(x, y), (x + 8, y), (x + 8, y + 6), (x, y + 6)]
    bottom = Polygon([(px, py, z0) for px, py in reversed(c)])
    top = Polygon([(px, py, z1) for px, py in c])
    sides = [Polygon([(*c[i], z0), (*c[(i + 1) % 4], z0), (*c[(i + 1) % 4], z1), (*c[i], z1)])
             for i in range(4)]
    solid = MultiPolygon([bottom, top, *sides])
    frame = one(box(x, y, x + 8, y + 6), height=6.0, ground=z0, lod2=[solid])
    _, _, pos, nrm, tris = single_tile(tmp_path, frame)
    cross, centre = _faces(pos, tris)
    assert len(tris) == 12  # six quads, floor included: LoD2 solids are drawn as they are
    assert (np.einsum("ij,ij->i", cross, centre - pos.mean(axis=0)) > 0).all()
    assert pos[:, 2].max() - pos[:, 2].min() == pytest.approx(6.0, abs=1e-3)


def test_tree_leaves_hold_every_building_once():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 100, 8000), rng.uniform(-5000, 5000, 2000)])  # dense centre
    y = np.concatenate([rng.normal(0, 100, 8000), rng.uniform(-5000, 5000, 2000)])
    root = build_tree(x, y, max_features=300)
    leaves = root.leaves()
    sizes = np.array([len(leaf.rows) for leaf in leaves])
    assert sizes.max() <= 300 and sizes.min() >= 300 / 4
    assert np.array_equal(np.sort(np.concatenate([leaf.rows for leaf in leaves])), np.arange(10_000))
    assert all(2 <= len(n.children) <= 4 for n in root.walk() if not n.is_leaf)


@pytest.fixture(scope="module")
def synth_tileset(tmp_path_factory):
    frame = synthetic(3000)
    out = tmp_path_factory.mktemp("tiles") / "synth"
    result = build_tileset(frame, out, crs=CRS, vertical_crs="EPSG:5709", name="synth",
                           max_features_per_tile=250)
    return frame, out, result


def _walk(tile, parent=None):
    yield tile, parent
    for child in tile.get("children", []):
        yield from _walk(child, tile)


def test_tileset_rules(synth_tileset):
    frame, out, result = synth_tileset
    doc = json.loads((out / "tileset.json").read_text())
    assert tileset_errors(doc) == []
    assert doc["asset"]["version"] == "1.1" and doc["root"]["refine"] == "ADD"
    leaves = list(iter_leaves(doc["root"]))
    assert len(leaves) == result.tiles >= 3000 / 250
    for tile, parent in _walk(doc["root"]):
        region = tile["boundingVolume"]["region"]
        if "content" in tile:
            assert tile["geometricError"] == 0 and "children" not in tile and len(tile["transform"]) == 16
        else:
            assert "content" not in tile
            biggest_child = max(region_diagonal(c["boundingVolume"]["region"]) for c in tile["children"])
            # Refine as soon as a child would be visible: error = the largest child's size.
            assert tile["geometricError"] == pytest.approx(biggest_child, abs=1e-3) and biggest_child > 0
        if parent is not None:
            outer = parent["boundingVolume"]["region"]
            assert outer[0] <= region[0] and outer[1] <= region[1] and outer[2] >= region[2]
            assert outer[3] >= region[3] and outer[4] <= region[4] and outer[5] >= region[5]
            assert tile["geometricError"] <= parent["geometricError"]
    assert doc["geometricError"] >= doc["root"]["geometricError"]


def test_every_building_once_with_its_properties(synth_tileset):
    frame, out, _ = synth_tileset
    buildings = buildings_in_tileset(out)
    assert sorted(buildings) == sorted(frame["id"].tolist())
    row = frame.iloc[1234]
    props = buildings[int(row["id"])]["properties"]
    assert props["source_id"] == row["source_id"] and props["use"] == row["use"]
    assert props["height"] == pytest.approx(row["height"], rel=1e-6)
    assert props["year_built"] == row["year_built"]
    # Each building's vertices lie inside its tile's bounding region.
    from pyproj import Transformer

    to_geo = Transformer.from_crs("EPSG:4978", "EPSG:4979", always_xy=True)
    for b in list(buildings.values())[::97]:
        lon, lat, h = to_geo.transform(*b["ecef"].T)
        w, s, e, n, lo, hi = b["region"]
        assert (np.radians(lon) >= w).all() and (np.radians(lon) <= e).all()
        assert (np.radians(lat) >= s).all() and (np.radians(lat) <= n).all()
        assert (h >= lo - 1e-3).all() and (h <= hi + 1e-3).all()


def test_files_are_content_hashed_with_gzip_copies(synth_tileset):
    _, out, _ = synth_tileset
    glbs = sorted((out / "t").glob("*.glb"))
    for path in glbs:
        data = path.read_bytes()
        assert path.stem == hashlib.sha256(data).hexdigest()[:len(path.stem)]
        assert gzip.decompress(path.with_name(path.name + ".gz").read_bytes()) == data
    assert gzip.decompress((out / "tileset.json.gz").read_bytes()) == (out / "tileset.json").read_bytes()


def test_every_glb_and_the_tileset_validate(synth_tileset):
    _, out, result = synth_tileset
    assert len(list((out / "t").glob("*.glb"))) == result.tiles
    assert tileset_problems(out, {"id", "source_id", "height", "use", "year_built"}) == []


def test_results_and_missing_values(tmp_path):
    frame = synthetic(40)
    frame["max_depth_m"] = np.where(np.arange(40) % 3 == 0, np.nan, np.linspace(0, 2, 40))
    frame["outage_state"] = [None if k % 4 == 0 else "interrupted" for k in range(40)]
    frame.loc[5, "year_built"] = None
    frame.loc[6, "ground_elevation"] = None
    build_tileset(frame, tmp_path / "r", crs=CRS, vertical_crs="EPSG:5709", name="r")
    buildings = buildings_in_tileset(tmp_path / "r")
    props = {k: v["properties"] for k, v in buildings.items()}
    for k in range(40):
        p = props[int(frame.loc[k, "id"])]
        depth = frame.loc[k, "max_depth_m"]
        if np.isnan(depth):
            assert p["max_depth_m"] is None
        else:
            assert p["max_depth_m"] == pytest.approx(depth, abs=1e-6)
        assert p["outage_state"] == (None if k % 4 == 0 else "interrupted")
    assert props[int(frame.loc[5, "id"])]["year_built"] is None
    assert props[int(frame.loc[6, "id"])]["ground_elevation"] is None
    assert "annual_kwh" not in props[int(frame.loc[0, "id"])]  # absent column: no property
    doc = json.loads((tmp_path / "r" / "tileset.json").read_text())
    assert doc["extras"]["citytwin"]["missing_ground_elevation"] == 1
    assert tileset_problems(tmp_path / "r", {"max_depth_m", "outage_state"}) == []


def test_result_without_values_in_a_tile_is_left_out(tmp_path):
    """A string result no building of a tile has would be an empty bufferView (invalid glTF): omitted."""
    frame = synthetic(40)
    frame["outage_state"] = None
    frame["max_depth_m"] = np.nan
    build_tileset(frame, tmp_path / "e", crs=CRS, name="e")
    assert tileset_problems(tmp_path / "e") == []
    leaf = next(iter_leaves(json.loads((tmp_path / "e" / "tileset.json").read_text())["root"]))
    gltf, binary = split_glb((tmp_path / "e" / leaf["content"]["uri"]).read_bytes())
    ext = gltf["extensions"]["EXT_structural_metadata"]
    assert "outage_state" in ext["schema"]["classes"]["building"]["properties"]
    assert "outage_state" not in ext["propertyTables"][0]["properties"]
    assert "max_depth_m" in ext["propertyTables"][0]["properties"]  # numbers keep their noData values
    assert all(b.get("byteLength", 0) > 0 for b in gltf["bufferViews"])
    props = property_table(gltf, binary)
    assert set(props["outage_state"]) == {None} and set(props["max_depth_m"]) == {None}


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f.drop(columns="height"), "height"),
    (lambda f: f.assign(id=1), "unique"),
    (lambda f: f.set_crs("EPSG:32631", allow_override=True), "EPSG:32631"),
    (lambda f: f.assign(height=0.0), "no buildings"),
])
def test_bad_input_is_rejected_without_output(tmp_path, mutate, message):
    with pytest.raises(InputError, match=message):
        build_tileset(mutate(synthetic(20)), tmp_path / "bad", crs=CRS, name="bad")
    assert list(tmp_path.iterdir()) == []  # no tileset, no staging directory left behind


def test_unknown_crs_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="EPSG:999999"):
        build_tileset(synthetic(5).set_crs(None, allow_override=True), tmp_path / "x", crs="EPSG:999999",
                      name="x")


def test_rebuild_replaces_the_tileset(tmp_path):
    out = tmp_path / "city"
    build_tileset(synthetic(30, seed=1), out, crs=CRS, name="city")
    first = json.loads((out / "tileset.json").read_text())["asset"]["tilesetVersion"]
    build_tileset(synthetic(50, seed=2), out, crs=CRS, name="city")
    second = json.loads((out / "tileset.json").read_text())
    assert second["asset"]["tilesetVersion"] != first
    assert second["extras"]["citytwin"]["buildings"] == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["city"]  # no staging or old copies


def test_dask_build_equals_in_process_build(tmp_path):
    from distributed import Client, LocalCluster

    frame = synthetic(1200)
    local = build_tileset(frame, tmp_path / "local", crs=CRS, name="d", max_features_per_tile=100)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        remote = build_tileset(frame, tmp_path / "dask", crs=CRS, name="d", max_features_per_tile=100,
                               client=client)
    assert remote.tiles == local.tiles and remote.buildings == 1200
    def names(d):
        return sorted(p.name for p in (d / "t").iterdir())
    assert names(tmp_path / "dask") == names(tmp_path / "local")  # deterministic, content-hashed
    document = (tmp_path / "dask" / "tileset.json").read_bytes()
    assert document == (tmp_path / "local" / "tileset.json").read_bytes()


def test_property_table_matches_feature_ids(synth_tileset):
    """The feature id of each vertex indexes the row of its building in the property table."""
    frame, out, _ = synth_tileset
    doc = json.loads((out / "tileset.json").read_text())
    leaf = next(iter_leaves(doc["root"]))
    gltf, binary = split_glb((out / leaf["content"]["uri"]).read_bytes())
    prim = gltf["meshes"][0]["primitives"][0]
    fid = prim["extensions"]["EXT_mesh_features"]["featureIds"][0]
    ids = accessor(gltf, binary, prim["attributes"]["_FEATURE_ID_0"])
    assert gltf["accessors"][prim["attributes"]["_FEATURE_ID_0"]]["componentType"] == 5126  # FLOAT
    table = property_table(gltf, binary)
    assert fid["featureCount"] == len(table["id"]) == len(np.unique(ids))
    heights = dict(zip(frame["id"], frame["height"]))
    scene = positions(gltf, binary)
    for row in range(0, fid["featureCount"], 37):
        y_up = scene[ids == row][:, 1]  # glTF y is up
        assert y_up.max() - y_up.min() == pytest.approx(heights[table["id"][row]], abs=0.05)


def test_float_output_without_quantization(tmp_path):
    """quantize=False writes plain FLOAT positions/normals and no KHR_mesh_quantization requirement."""
    frame = synthetic(30)
    build_tileset(frame, tmp_path / "q", crs=CRS, name="q")
    build_tileset(frame, tmp_path / "f", crs=CRS, name="f", quantize=False)
    quantized, plain = buildings_in_tileset(tmp_path / "q"), buildings_in_tileset(tmp_path / "f")
    for building_id, b in plain.items():
        # Quantization step: tile extent / 65534 per axis, here < 3 mm.
        assert np.abs(b["ecef"] - quantized[building_id]["ecef"]).max() < 0.003
    leaf = next(iter_leaves(json.loads((tmp_path / "f" / "tileset.json").read_text())["root"]))
    gltf, binary = split_glb((tmp_path / "f" / leaf["content"]["uri"]).read_bytes())
    assert "extensionsRequired" not in gltf
    assert gltf["accessors"][0]["componentType"] == 5126
    assert validate_glbs([tmp_path / "f" / leaf["content"]["uri"]])[0]["errors"] == 0
