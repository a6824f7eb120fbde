"""Vector building readers: real files (Alexandria, Zug), OSM, GeoParquet, chunking, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Transformer

from citytwin.errors import InputError
from citytwin.io.buildings import FRAME_COLUMNS, iter_building_chunks, read_buildings
from citytwin.io.crs import choose_metric_crs, to_crs, utm_epsg
from citytwin.io.uses import USES, map_uses, shop_use
from _paths import SHARED_DATA

DATA = SHARED_DATA
ALEXANDRIA = DATA / "alexandria_va"
ZUG = DATA / "zug_cea" / "cea_reference_case"


def _metres_between(lonlat_a: np.ndarray, lonlat_b: np.ndarray) -> np.ndarray:
    """Distance of lon/lat points in metres (equirectangular, fine at building scale)."""
    lat = np.radians(lonlat_a[:, 1])
    dx = np.radians(lonlat_b[:, 0] - lonlat_a[:, 0]) * np.cos(lat) * 6_371_000
    dy = np.radians(lonlat_b[:, 1] - lonlat_a[:, 1]) * 6_371_000
    return np.hypot(dx, dy)


def _feature_collection(path: Path, features: list[dict], crs: str | None = None) -> Path:
    doc: dict = {"type": "FeatureCollection", "features": features}
    if crs:
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(doc))
    return path


def _polygon(coords: list, **props: object) -> dict:
    return {"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": [coords]}}


def test_alexandria_geojson_and_shapefile_agree_and_reject_the_two_without_height():
    raw = json.loads((ALEXANDRIA / "buildings.geojson").read_text())
    heights = [f["properties"]["HEIGHT"] for f in raw["features"]]
    missing = [i for i, h in enumerate(heights) if h is None]
    for name in ("buildings.geojson", "buildings.shp"):
        read = read_buildings(ALEXANDRIA / name)
        assert list(read.frame.columns) == list(FRAME_COLUMNS)
        assert len(read.frame) + len(read.rejected) == 84
        assert read.rejected["index"].tolist() == missing and len(missing) == 2
        assert set(read.rejected["reason"]) == {"no height"}
        assert read.crs == "EPSG:4326" and read.vertical_crs is None
        expected = np.array([heights[i] for i in read.frame.index], dtype=float)
        np.testing.assert_allclose(read.frame["height"].to_numpy(), expected, rtol=1e-6)
        assert read.frame["source_id"].is_unique
        assert set(read.frame["use"]) == {"other"}
        assert all(isinstance(a["SQMETERS"], float) for a in read.frame["attributes"])
        json.dumps(list(read.frame["attributes"]), allow_nan=False)  # JSON-ready, no NaN


def test_alexandria_reprojected_to_utm_18n_matches_pyproj():
    raw = json.loads((ALEXANDRIA / "buildings.geojson").read_text())
    read = read_buildings(ALEXANDRIA / "buildings.geojson")
    metric = choose_metric_crs(read.frame)
    assert metric == "EPSG:32618"  # Alexandria VA, 77.05 W: UTM zone 18N
    utm = to_crs(read.frame, metric)
    first = np.array(raw["features"][0]["geometry"]["coordinates"][0][0])  # lon/lat ring of feature 0
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32618", always_xy=True).transform(first[:, 0], first[:, 1])
    ours = shapely.get_coordinates(utm.geometry.loc[0])
    # Same vertices (our rings are re-oriented counter-clockwise, so compare as sets of points).
    distance = shapely.distance(shapely.points(np.column_stack([x, y])), shapely.MultiPoint(ours))
    assert distance.max() < 1.0
    assert utm.geometry.area.between(10, 10_000).all()  # m²: houses to a 3,500 m² block


def test_zug_southern_utm_zone_quirk_is_read_in_zone_32n():
    zone = read_buildings(ZUG / "zone.shp")
    surroundings = read_buildings(ZUG / "surroundings.shp")
    assert (len(zone.frame), len(surroundings.frame)) == (15, 184)
    assert zone.crs == "EPSG:32632" and "EPSG:32732" in zone.warnings[0]
    raw = gpd.read_file(ZUG / "zone.shp")  # as written: UTM 32S with northings ~15.22e6
    assert raw.crs.to_epsg() == 32732 and raw.total_bounds[1] > 15_000_000
    truth = shapely.get_coordinates(raw.to_crs("EPSG:4326").geometry.values)
    ours = shapely.get_coordinates(zone.frame.to_crs("EPSG:4326").geometry.values)
    assert _metres_between(np.sort(truth, axis=0), np.sort(ours, axis=0)).max() < 1.0
    assert 47.1 < ours[:, 1].mean() < 47.2 and 8.5 < ours[:, 0].mean() < 8.53  # Zug, Switzerland
    np.testing.assert_array_equal(zone.frame["height"].to_numpy(), raw["height_ag"].to_numpy(dtype=float))
    np.testing.assert_array_equal(zone.frame["floors"].to_numpy(), raw["floors_ag"].to_numpy())
    assert zone.frame["source_id"].tolist() == raw["Name"].tolist()
    assert zone.frame["attributes"].iloc[0]["floors_bg"] == 1


def test_chunks_stream_the_same_buildings_as_one_read(tmp_path):
    n = 2500
    rng = np.random.default_rng(7)
    x, y = rng.uniform(0, 5000, n), rng.uniform(0, 5000, n)
    frame = gpd.GeoDataFrame({"height": rng.uniform(3, 30, n),
                              "building": rng.choice(["house", "office"], n)},
                             geometry=shapely.box(x, y, x + 10, y + 12), crs="EPSG:28992")
    path = tmp_path / "city.gpkg"
    frame.to_file(path, driver="GPKG")
    chunks = list(iter_building_chunks(path, chunk_size=1000))
    assert [len(c.frame) for c in chunks] == [1000, 1000, 500]
    whole = read_buildings(path)
    streamed = pd.concat([c.frame for c in chunks])
    assert streamed["source_id"].tolist() == whole.frame["source_id"].tolist()
    assert whole.frame["source_id"].tolist() == read_buildings(path).frame["source_id"].tolist()  # stable
    assert whole.frame["source_id"].is_unique
    np.testing.assert_allclose(whole.frame["height"], frame["height"])
    expected_use = frame["building"].map({"house": "residential", "office": "office"})
    assert whole.frame["use"].tolist() == expected_use.tolist()


def test_geoparquet_reads_like_geojson(tmp_path):
    source = gpd.read_file(ALEXANDRIA / "buildings.geojson")
    path = tmp_path / "alexandria.parquet"
    source.to_parquet(path)
    read = read_buildings(path)
    assert read.crs == "EPSG:4326"
    assert len(read.frame) == 82 and len(read.rejected) == 2
    np.testing.assert_allclose(read.frame["height"], source["HEIGHT"].dropna().to_numpy(), rtol=1e-9)
    chunks = list(iter_building_chunks(path, chunk_size=50))
    assert sum(len(c.frame) for c in chunks) == 82


OSM_XML = """<?xml version="1.0" encoding="UTF-8"?>
<osm version="0.6" generator="citytwin-test">
  <node id="1" lat="52.0000" lon="4.0000"/><node id="2" lat="52.0000" lon="4.0002"/>
  <node id="3" lat="52.0002" lon="4.0002"/><node id="4" lat="52.0002" lon="4.0000"/>
  <node id="5" lat="52.0010" lon="4.0010"/><node id="6" lat="52.0010" lon="4.0012"/>
  <node id="7" lat="52.0012" lon="4.0012"/><node id="8" lat="52.0012" lon="4.0010"/>
  <node id="9" lat="52.0020" lon="4.0020"/><node id="10" lat="52.0020" lon="4.0022"/>
  <node id="11" lat="52.0022" lon="4.0022"/>
  <way id="100"><nd ref="1"/><nd ref="2"/><nd ref="3"/><nd ref="4"/><nd ref="1"/>
    <tag k="building" v="apartments"/><tag k="height" v="12.5 m"/><tag k="building:levels" v="4"/>
    <tag k="start_date" v="1931"/><tag k="name" v="De Flat"/><tag k="roof:shape" v="flat"/></way>
  <way id="101"><nd ref="5"/><nd ref="6"/><nd ref="7"/><nd ref="8"/><nd ref="5"/>
    <tag k="building" v="house"/><tag k="building:levels" v="2"/></way>
  <way id="102"><nd ref="9"/><nd ref="10"/><nd ref="11"/><nd ref="9"/><tag k="landuse" v="grass"/></way>
</osm>
"""


def test_osm_buildings_from_the_multipolygons_layer(tmp_path):
    path = tmp_path / "tiny.osm"  # OSM XML goes through GDAL's OSM driver, the same one as .osm.pbf
    path.write_text(OSM_XML)
    read = read_buildings(path)
    frame = read.frame.set_index("source_id")
    assert sorted(frame.index) == ["way/100", "way/101"]  # the grass polygon is not a building
    assert frame.loc["way/100", "use"] == "apartment" and frame.loc["way/101", "use"] == "residential"
    assert frame.loc["way/100", "height"] == 12.5  # "12.5 m" parsed
    assert frame.loc["way/101", "height"] == 6.0  # 2 levels x 3 m
    assert frame.loc["way/100", "year_built"] == 1931 and frame.loc["way/100", "floors"] == 4
    assert frame.loc["way/100", "attributes"]["roof:shape"] == "flat"
    assert frame.loc["way/100", "attributes"]["name"] == "De Flat"
    assert any("floors x 3 m" in w for w in read.warnings)


def test_bow_tie_with_a_small_twist_is_repaired_and_a_figure_eight_rejected(tmp_path):
    square_with_twist = [[0, 0], [100, 0], [100, 100], [0, 100], [0, 50.5], [1, 49.5], [1, 50.5], [0, 49.5],
                         [0, 0]]
    figure_eight = [[200, 0], [210, 10], [210, 0], [200, 10], [200, 0]]
    features = [
        _polygon(square_with_twist, id="twist", height=10),
        _polygon(figure_eight, id="eight", height=10),
        _polygon([[300, 0], [300.5, 0], [300.5, 0.5], [300, 0.5], [300, 0]], id="tiny", height=3),
        {"type": "Feature", "properties": {"id": "line", "height": 5},
         "geometry": {"type": "LineString", "coordinates": [[0, 0], [5, 5]]}},
        {"type": "Feature", "properties": {"id": "none", "height": 5}, "geometry": None},
        _polygon([[400, 0], [410, 0], [410, 10], [400, 10], [400, 0]], id="zero", height=0),
    ]
    path = _feature_collection(tmp_path / "bad.geojson", features, "urn:ogc:def:crs:EPSG::28992")
    read = read_buildings(path)
    assert read.crs == "EPSG:28992"
    assert read.frame["source_id"].tolist() == ["twist"]
    fixed = read.frame.geometry.iloc[0]
    assert fixed.is_valid and abs(fixed.area - 10_000) / 10_000 < 0.01
    assert any("repaired" in w for w in read.warnings)
    reasons = dict(zip(read.rejected["source_id"], read.rejected["reason"]))
    assert reasons["eight"].startswith("invalid geometry: self-intersection")
    assert reasons["tiny"].startswith("too small")
    assert reasons["line"] == "non-polygon type (LineString)"
    assert reasons["none"] == "missing geometry"
    assert reasons["zero"].startswith("height not positive")


def test_height_attribute_named_but_absent_lists_the_available_ones():
    with pytest.raises(InputError, match=r"no attribute 'hoogte'.*available: HEIGHT, SQMETERS"):
        read_buildings(ALEXANDRIA / "buildings.shp", height_attr="hoogte")


def test_height_attribute_is_strict(tmp_path):
    features = [_polygon([[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]], id="a", h_top=7.5, height=99),
                _polygon([[20, 0], [30, 0], [30, 10], [20, 10], [20, 0]], id="b", height=99)]
    path = _feature_collection(tmp_path / "h.geojson", features, "EPSG:28992")
    read = read_buildings(path, height_attr="h_top")
    assert read.frame["height"].tolist() == [7.5]
    assert read.rejected["reason"].tolist() == ["no height (h_top missing)"]


def test_corrupt_and_empty_files_are_input_errors(tmp_path):
    truncated = tmp_path / "truncated.geojson"
    truncated.write_text((ALEXANDRIA / "buildings.geojson").read_text()[:5000])
    garbage = tmp_path / "garbage.gpkg"
    garbage.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 20)
    empty = tmp_path / "empty.geojson"
    empty.write_text("")
    no_features = _feature_collection(tmp_path / "none.geojson", [])
    for path, message in [(truncated, "truncated.geojson: not a readable vector file|reading failed"),
                          (garbage, "garbage.gpkg: not a readable vector file"),
                          (empty, "empty.geojson: the file is empty"),
                          (no_features, "none.geojson: layer .* has no features"),
                          (tmp_path / "missing.shp", "no such file")]:
        with pytest.raises(InputError, match=message):
            read_buildings(path)


def test_files_of_the_wrong_kind_are_input_errors(tmp_path):
    table = tmp_path / "table.csv"
    table.write_text("id,height\n1,10\n2,12\n")
    with pytest.raises(InputError, match="a raster file, not a vector layer"):
        read_buildings(ALEXANDRIA / "dtm.tif")
    with pytest.raises(InputError, match="has no geometry"):
        read_buildings(table)
    with pytest.raises(InputError, match="holds LineString features, not building footprints"):
        read_buildings(ZUG / "streets.shp")


def test_crs_missing_unknown_or_conflicting(tmp_path):
    frame = gpd.GeoDataFrame({"height": [10.0]}, geometry=[shapely.box(0, 0, 10, 10)], crs=None)
    path = tmp_path / "nocrs.shp"
    frame.to_file(path)
    with pytest.raises(InputError, match="no CRS in file; pass --crs"):
        read_buildings(path)
    assert read_buildings(path, crs="EPSG:28992").crs == "EPSG:28992"
    with pytest.raises(InputError, match="unknown CRS 'EPSG:999999'"):
        read_buildings(path, crs="EPSG:999999")
    with pytest.raises(InputError, match="declares EPSG:4326 but --crs EPSG:28992"):
        read_buildings(ALEXANDRIA / "buildings.geojson", crs="EPSG:28992")
    assert read_buildings(ALEXANDRIA / "buildings.geojson", crs="EPSG:4326").crs == "EPSG:4326"


def test_geojson_without_crs_member_in_metres_needs_and_accepts_crs(tmp_path):
    # RFC 7946 implies CRS84; old files in a national grid often omit the crs member.
    path = _feature_collection(tmp_path / "rd.geojson",
                               [_polygon([[85000, 447000], [85010, 447000], [85010, 447010], [85000, 447000]],
                                         height=5)])
    with pytest.raises(InputError, match="are not longitude/latitude.*pass the right --crs"):
        read_buildings(path)
    read = read_buildings(path, crs="EPSG:28992")
    assert read.crs == "EPSG:28992" and len(read.frame) == 1 and not read.warnings
    lonlat = json.loads((ALEXANDRIA / "buildings.geojson").read_text())
    del lonlat["crs"]
    mislabelled = tmp_path / "lonlat.geojson"
    mislabelled.write_text(json.dumps(lonlat))
    assert "are they longitude/latitude?" in read_buildings(mislabelled, crs="EPSG:28992").warnings[0]


def test_use_codes_map_onto_the_vocabulary():
    codes = pd.Series(["house", "Apartments", "woonfunctie,winkelfunctie", "kantoorfunctie", "MULTI_RES",
                       "FOODSTORE", "school", "yes", None, "semi-detached"])
    uses = map_uses(codes, index=codes.index).tolist()
    assert uses == ["residential", "apartment", "residential", "office", "apartment", "supermarket", "school",
                    "other", "other", "residential"]
    assert set(uses) <= set(USES)
    shop = pd.Series(["convenience", None, "bakery"])
    building = pd.Series(["yes", "warehouse", "yes"])
    uses = map_uses(shop_use(shop), building, index=shop.index).tolist()
    assert uses == ["supermarket", "warehouse", "retail"]


@pytest.mark.parametrize("lon, lat, epsg", [(4.36, 52.0, 32631), (-77.05, 38.81, 32618),
                                            (151.2, -33.9, 32756), (5.3, 60.4, 32632), (15.6, 78.2, 32633),
                                            (8.5, 47.2, 32632)])
def test_utm_zone_including_the_norway_and_svalbard_exceptions(lon, lat, epsg):
    assert utm_epsg(lon, lat) == epsg


def test_import_prepared_in_a_process_matches_the_thread_and_rolls_back_on_error(engine, tmp_path: Path):
    """The forked preparation (``prepare_in_process=True``) imports what the thread path imports,
    reports the same rejections and repairs, and an error in the child leaves nothing written."""
    from sqlalchemy import text

    from citytwin.db.buildings import load_buildings

    x0, y0 = 400_000.0, 5_350_000.0
    features = []
    for i in range(40):
        x, y = x0 + 30 * i, y0
        ring = [[x, y], [x + 10, y], [x + 10, y + 10], [x, y + 10], [x, y]]
        if i % 9 == 4:
            ring = ring[::-1]  # clockwise: accepted, re-oriented
        if i % 13 == 5:
            ring = [[x, y], [x + 10, y + 10], [x + 10, y], [x, y + 10.5], [x, y]]  # bow tie: rejected
        if i % 11 == 6:
            ring = [[x, y], [x + 10, y], [x + 10, y + 10], [x + 5, y + 10], [x + 5.2, y + 9.9], [x, y + 10], [x, y]]
        features.append(_polygon(ring, id=f"b{i}", height=None if i == 17 else 6.0 + i))
    path = _feature_collection(tmp_path / "b.geojson", features, crs="EPSG:32632")

    def count() -> int:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM buildings")).scalar()

    forked = load_buildings(engine, iter_building_chunks(path, chunk_size=7), source="s", path=str(path),
                            prepare_in_process=True)
    threaded = load_buildings(engine, iter_building_chunks(path, chunk_size=7), source="s", path=str(path),
                              prepare_in_process=False)
    assert forked.imported == threaded.updated == count() == 40 - forked.rejected
    assert forked.rejections == threaded.rejections and forked.rejected == 4
    assert forked.warnings == threaded.warnings
    with engine.connect() as conn:
        ccw = conn.execute(text("SELECT bool_and(NOT ST_IsPolygonCW(footprint)) FROM buildings")).scalar()
    assert ccw

    def failing():
        yield from iter_building_chunks(path, chunk_size=7)
        raise InputError("broken file")

    with pytest.raises(InputError, match="broken file"):
        load_buildings(engine, failing(), source="other", path=str(path), prepare_in_process=True)
    assert count() == 40 - forked.rejected
