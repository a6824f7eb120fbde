"""The synthetic city generator: determinism, geometry, terrain, a radial grid, sensors, file formats."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from citytwin.errors import InputError
from citytwin.io.grid_gpkg import read_grid_gpkg, write_grid_gpkg
from citytwin.io.uses import USES
from citytwin.models.grid.tables import GridTables
from citytwin.synth import generate_city
from citytwin.synth.gridparts import LINE_FAILURES_PER_KM
from citytwin.synth.layout import plan_city

N = 3000
SEED = 11
FILES = ("buildings.gpkg", "dem.tif", "grid.gpkg", "sensors.gpkg", "buildings.parquet", "city.json")


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("city")
    generate_city(N, SEED, out, parquet=True)
    return out


@pytest.fixture(scope="module")
def manifest(city: Path) -> dict:
    return json.loads((city / "city.json").read_text())


@pytest.fixture(scope="module")
def buildings(city: Path) -> gpd.GeoDataFrame:
    return pyogrio.read_dataframe(city / "buildings.gpkg", layer="buildings", use_arrow=True)


@pytest.fixture(scope="module")
def grid(city: Path) -> GridTables:
    return read_grid_gpkg(city / "grid.gpkg")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _graph(grid: GridTables, *, drop_kinds: tuple[str, ...] = (), extra: pd.DataFrame | None = None):
    """Undirected graph of sections and closed switches (+ ``extra`` edges), minus ``drop_kinds`` nodes."""
    nodes = grid.nodes[~grid.nodes["kind"].isin(drop_kinds)]
    index = pd.Index(nodes["node_id"].astype(object))
    closed = grid.switches[grid.switches["normal_state"] == "closed"]
    edges = [grid.sections[["from_node", "to_node"]], closed[["from_node", "to_node"]]]
    if extra is not None:
        edges.append(extra[["from_node", "to_node"]])
    edges = pd.concat(edges)
    a = index.get_indexer(edges["from_node"].astype(object))
    b = index.get_indexer(edges["to_node"].astype(object))
    keep = (a >= 0) & (b >= 0)
    matrix = coo_matrix((np.ones(keep.sum()), (a[keep], b[keep])), shape=(len(index), len(index)))
    return index, int(keep.sum()), matrix


def test_same_seed_gives_byte_identical_files_whatever_the_chunk_size(city: Path, tmp_path: Path) -> None:
    generate_city(N, SEED, tmp_path, parquet=True, chunk_buildings=700)   # many more chunks than the fixture
    for name in FILES:
        assert _digest(tmp_path / name) == _digest(city / name), name


def test_different_seed_gives_a_different_city(buildings: gpd.GeoDataFrame, tmp_path: Path) -> None:
    generate_city(N, SEED + 1, tmp_path)
    other = pyogrio.read_dataframe(tmp_path / "buildings.gpkg", use_arrow=True)
    assert len(other) == N
    assert not np.array_equal(other["height"].to_numpy(), buildings["height"].to_numpy())
    assert not shapely.equals(other.geometry.values[:100], buildings.geometry.values[:100]).all()


def test_counts_ids_and_manifest(city: Path, manifest: dict, buildings: gpd.GeoDataFrame,
                                 grid: GridTables) -> None:
    assert len(buildings) == N
    assert buildings["source_id"].is_unique
    assert buildings["source_id"].iloc[0] == "B0000001" and buildings["source_id"].iloc[-1] == f"B{N:07d}"
    assert manifest["seed"] == SEED and manifest["crs"] == "EPSG:32632"
    assert manifest["counts"]["buildings"] == N
    assert manifest["counts"]["nodes"] == len(grid.nodes)
    assert manifest["counts"]["sections"] == len(grid.sections)
    assert manifest["counts"]["switches"] == len(grid.switches)
    assert manifest["counts"]["customers"] == int(grid.connections["customers"].sum())
    assert sum(manifest["uses"].values()) == N
    for key in ("buildings", "dem", "grid", "sensors", "buildings_parquet"):
        assert (city / manifest["files"][key]).is_file()
    # ~20-40 buildings per hectare of built-up blocks (block plus half the surrounding streets).
    layout = plan_city(N, SEED)
    x0, y0, x1, y1 = layout.block_bounds(np.flatnonzero(layout.buildings > 0))
    built_ha = ((x1 - x0 + 14.0) * (y1 - y0 + 14.0)).sum() / 1e4
    assert 20.0 <= N / built_ha <= 40.0


def test_every_building_lies_in_its_blocks_district(buildings: gpd.GeoDataFrame, manifest: dict) -> None:
    # The district comes from the street-block plan: recompute it from each footprint's block.
    layout = plan_city(N, SEED)
    x0, y0, x1, y1 = layout.block_bounds(np.arange(len(layout.district)))
    local = shapely.get_coordinates(buildings.geometry.centroid) - np.asarray(manifest["origin"])
    col = np.searchsorted(layout.xs.lo, local[:, 0], side="right") - 1
    row = np.searchsorted(layout.ys.lo, local[:, 1], side="right") - 1
    block = row * layout.ncols + col
    assert ((local[:, 0] > x0[block]) & (local[:, 0] < x1[block])).all()
    assert ((local[:, 1] > y0[block]) & (local[:, 1] < y1[block])).all()
    expected = np.asarray(("suburb", "inner", "downtown", "industrial", "water"))[layout.district[block]]
    np.testing.assert_array_equal(buildings["district"].to_numpy(), expected)
    built = {name: n for name, n in manifest["districts"].items() if n}
    assert buildings["district"].value_counts().to_dict() == built
    assert {"suburb", "inner", "downtown"} <= set(buildings["district"])


def test_footprints_valid_disjoint_and_on_the_dem(buildings: gpd.GeoDataFrame, city: Path) -> None:
    geoms = buildings.geometry.values
    assert buildings.crs.to_epsg() == 32632
    assert shapely.is_valid(geoms).all()
    assert (shapely.get_type_id(geoms) == 3).all()           # Polygon
    assert (shapely.area(geoms) >= 16.0).all()
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    assert (left == right).all(), "footprints overlap"
    with rasterio.open(city / "dem.tif") as dem:
        b = dem.bounds
        xmin, ymin, xmax, ymax = buildings.total_bounds
        assert b.left < xmin and b.bottom < ymin and b.right > xmax and b.top > ymax
        # Coordinates look real: 48.4 N 7.8 E in UTM 32N is near E 411 km, N 5361 km.
        assert 380_000 < xmin < 440_000 and 5_330_000 < ymin < 5_390_000


def test_heights_floors_uses_and_ages_are_plausible(buildings: gpd.GeoDataFrame) -> None:
    assert set(buildings["use"]) <= set(USES)
    shares = buildings["use"].value_counts(normalize=True)
    assert shares["residential"] > 0.5                       # a city of homes ...
    assert {"apartment", "office", "retail", "industrial", "warehouse", "school"} <= set(shares.index)
    per_floor = buildings["height"] / buildings["floors"]
    assert (buildings["floors"] >= 1).all() and (buildings["floors"] <= 40).all()
    assert per_floor.min() >= 2.5 and per_floor.max() <= 15.0   # storeys 2.9-4.2 m, halls up to ~12 m + roof
    mean_height = buildings.groupby("use")["height"].mean()
    assert mean_height["office"] > mean_height["residential"]
    assert mean_height["warehouse"] > mean_height["residential"]
    assert buildings["year_built"].between(1850, 2024).all()
    # Apartments and offices cluster in the centre; homes in the suburbs.
    centre = shapely.centroid(shapely.union_all(shapely.envelope(buildings.geometry.values)))
    dist = buildings.geometry.centroid.distance(centre)
    central = buildings["use"].isin(["office", "apartment"])
    assert dist[central].median() < dist[buildings["use"] == "residential"].median()


def test_ground_elevation_is_the_dem_under_each_building(buildings: gpd.GeoDataFrame, city: Path) -> None:
    centroids = buildings.geometry.centroid
    with rasterio.open(city / "dem.tif") as dem:
        assert dem.crs.to_epsg() == 32632 and dem.nodata == -9999 and dem.dtypes[0] == "float32"
        sampled = np.array([v[0] for v in dem.sample(zip(centroids.x, centroids.y))])
    np.testing.assert_allclose(buildings["ground_elevation"], sampled, atol=1e-3)


def test_river_valley_and_low_lying_districts(city: Path, manifest: dict,
                                              buildings: gpd.GeoDataFrame) -> None:
    layout = plan_city(N, SEED)
    river = layout.river
    with rasterio.open(city / "dem.tif") as dem:
        z = dem.read(1)
        rows, cols = np.mgrid[0:dem.height, 0:dem.width]
        xs, ys = rasterio.transform.xy(dem.transform, rows.ravel(), cols.ravel())
    x = np.asarray(xs) - manifest["origin"][0]
    y = np.asarray(ys) - manifest["origin"][1]
    d = np.abs(river.offset(x, y)).reshape(z.shape)
    level = river.level(x).reshape(z.shape)
    channel, plain, terrace = z[d < river.half_width], z[d < river.floodplain], z[d > 2 * river.floodplain]
    assert (channel < level[d < river.half_width]).mean() > 0.5       # the channel holds water
    assert plain.mean() < terrace.mean() - 2.0                         # the valley is lower than the rest
    # Buildings on ground less than 3 m above the river: where a flood model puts water first.
    bx = buildings.geometry.centroid.x.to_numpy() - manifest["origin"][0]
    low = buildings["ground_elevation"].to_numpy() < river.level(bx) + 3.0
    assert 0.02 < low.mean() < 0.6


def test_grid_is_radial_with_one_source_per_island(grid: GridTables) -> None:
    index, n_edges, matrix = _graph(grid)
    n_components, labels = connected_components(matrix, directed=False)
    assert n_edges == len(index) - n_components                        # a forest: no loops
    is_source = (grid.nodes["kind"] == "source").to_numpy()
    assert np.bincount(labels[is_source], minlength=n_components).tolist() == [1] * n_components
    assert grid.nodes["node_id"].is_unique
    assert grid.switches["switch_id"].is_unique and grid.sections["section_id"].is_unique
    assert (grid.sections["length_km"] > 0).all()


def test_every_building_has_exactly_one_service_point(grid: GridTables, buildings: gpd.GeoDataFrame) -> None:
    conn = grid.connections
    assert conn["building_id"].is_unique and conn["node_id"].is_unique
    assert set(conn["building_id"]) == set(buildings["source_id"])
    kinds = grid.nodes.set_index("node_id")["kind"]
    assert (kinds.loc[conn["node_id"]] == "service_point").all()
    assert (kinds == "service_point").sum() == len(buildings)
    sp = grid.nodes.set_index("node_id").loc[conn["node_id"]]
    np.testing.assert_array_equal(sp["customers"].to_numpy(), conn["customers"].to_numpy())
    use = buildings.set_index("source_id")["use"].loc[conn["building_id"]].to_numpy()
    assert (conn["customers"].to_numpy()[use != "apartment"] == 1).all()
    assert (conn["customers"].to_numpy()[use == "apartment"] >= 6).all()   # >= 3 floors x 2 dwellings


def test_every_tie_joins_two_different_feeders(grid: GridTables) -> None:
    ties = grid.switches[grid.switches["kind"] == "tie"]
    assert len(ties) >= 2 and (ties["normal_state"] == "open").all()
    # Without the substation buses every feeder is its own island: a tie must connect two of them.
    index, _, matrix = _graph(grid, drop_kinds=("source", "substation"))
    _, labels = connected_components(matrix, directed=False)
    a = labels[index.get_indexer(ties["from_node"].astype(object))]
    b = labels[index.get_indexer(ties["to_node"].astype(object))]
    assert (a != b).all()
    heads = labels[index.get_indexer(grid.nodes.loc[grid.nodes["node_id"].str.endswith("-HEAD"), "node_id"])]
    assert set(a) | set(b) <= set(heads)
    # Closing a tie in the whole grid either makes one loop (two feeders of one substation) or joins
    # two substations' islands into one (still a forest).
    index, n_edges, matrix = _graph(grid)
    before, labels = connected_components(matrix, directed=False)
    for _, tie in ties.iterrows():
        index, n_edges, matrix = _graph(grid, extra=tie.to_frame().T)
        after, _ = connected_components(matrix, directed=False)
        same_island = labels[index.get_loc(tie["from_node"])] == labels[index.get_loc(tie["to_node"])]
        if same_island:
            assert after == before and n_edges == len(index) - after + 1
        else:
            assert after == before - 1 and n_edges == len(index) - after


def test_grid_equipment_data(grid: GridTables) -> None:
    nodes, sections = grid.nodes, grid.sections
    np.testing.assert_allclose(sections["failure_rate"], LINE_FAILURES_PER_KM * sections["length_km"])
    assert (sections["repair_time_h"] == 5.0).all()
    tr = nodes[nodes["kind"] == "transformer"]
    assert (tr["failure_rate"] == 0.015).all() and (tr["repair_time_h"] == 200.0).all()
    assert tr["critical_depth_m"].between(0.2, 0.5).all() and tr["rating_mva"].between(0.25, 2.5).all()
    subs = nodes[nodes["kind"] == "substation"]
    assert subs["critical_depth_m"].between(0.5, 1.0).all()
    sp = nodes[nodes["kind"] == "service_point"]
    assert (sp["load_mw"] > 0).all() and (sp["peak_load_mw"] > sp["load_mw"]).all()
    # Transformer sized for its block: rating >= 0.8 x the sum of its service points' peaks.
    lv = sections[sections["section_id"].str.startswith("LV")]
    first = lv[lv["from_node"].str.startswith("TR")]
    assert set(first["from_node"]) == set(tr["node_id"])
    assert len(grid.switches[grid.switches["kind"] == "fuse"]) >= len(tr)
    assert {"breaker", "disconnector", "fuse", "tie"} <= set(grid.switches["kind"])


def test_grid_gpkg_round_trip_is_exact(grid: GridTables, tmp_path: Path) -> None:
    again = read_grid_gpkg(write_grid_gpkg(grid, tmp_path / "again.gpkg"))
    assert again.crs == grid.crs == "EPSG:32632" and again.name == grid.name
    for name in ("nodes", "switches", "connections"):
        pd.testing.assert_frame_equal(getattr(again, name), getattr(grid, name))
    pd.testing.assert_frame_equal(again.sections.drop(columns="geometry"),
                                  grid.sections.drop(columns="geometry"))
    assert shapely.equals_exact(np.asarray(again.sections["geometry"]), np.asarray(grid.sections["geometry"]),
                                tolerance=0).all()


def test_grid_gpkg_round_trip_keeps_missing_values_and_extra_columns(tmp_path: Path) -> None:
    grid = GridTables(
        nodes=pd.DataFrame({"node_id": ["s", "b", "c"], "kind": ["source", "bus", "service_point"],
                            "name": [None, "", "c"], "customers": [0, 0, 3], "load_mw": [np.nan, 0.0, 0.25],
                            "x": [1.0, np.nan, 3.0], "y": [2.0, np.nan, 4.0]}),
        sections=pd.DataFrame({"section_id": ["l1"], "from_node": ["s"], "to_node": ["b"],
                               "length_km": [0.5], "underground": [True],
                               "component_class": pd.array(["cable"], dtype="string")}),
        switches=pd.DataFrame({"switch_id": ["t"], "kind": ["tie"], "from_node": ["b"], "to_node": ["c"],
                               "normal_state": ["open"], "present_state": ["open"]}),
        connections=pd.DataFrame({"building_id": ["B1"], "node_id": ["c"], "customers": [3]}),
        crs=None, name="tiny")
    again = read_grid_gpkg(write_grid_gpkg(grid, tmp_path / "tiny.gpkg"))
    assert again.crs is None and again.name == "tiny"
    for name in ("nodes", "sections", "switches", "connections"):
        pd.testing.assert_frame_equal(getattr(again, name), getattr(grid, name))


def test_reading_a_file_that_is_not_a_grid_names_the_problem(tmp_path: Path, city: Path) -> None:
    with pytest.raises(InputError, match="missing .*nodes"):
        read_grid_gpkg(city / "sensors.gpkg")
    bad = tmp_path / "bad.gpkg"
    bad.write_text("not a geopackage")
    with pytest.raises(InputError, match="not a readable GeoPackage"):
        read_grid_gpkg(bad)


def test_sensors_cover_weather_river_substations_and_meters(city: Path, grid: GridTables) -> None:
    sensors = pyogrio.read_dataframe(city / "sensors.gpkg", layer="sensors")
    assert sensors.crs.to_epsg() == 32632
    assert {"thing_id", "name", "kind", "observed_property", "unit_name", "unit_symbol", "unit_definition",
            "asset_id", "result_type"} <= set(sensors.columns)
    kinds = sensors["kind"].value_counts()
    assert kinds["weather"] >= 2 and kinds["river_level"] >= 2
    n_subs = (grid.nodes["kind"] == "substation").sum()
    n_feeders = grid.nodes["node_id"].str.endswith("-HEAD").sum()
    assert kinds["substation_load"] == n_subs + n_feeders
    assert abs(kinds["meter"] - 0.02 * N) < 4 * np.sqrt(0.02 * N)          # a 2 % sample
    assert (sensors["result_type"] == "number").all()
    units = sensors.groupby("observed_property")["unit_symbol"].first()
    assert units["air_temperature"] == "°C" and units["water_level"] == "m" and units["active_power"] == "MW"
    node_ids = set(grid.nodes["node_id"])
    assert set(sensors.loc[sensors["kind"].isin(["substation_load", "meter"]), "asset_id"]) <= node_ids
    assert sensors["asset_id"][sensors["kind"] == "weather"].isna().all()
    assert sensors.groupby(["thing_id", "observed_property"]).size().max() == 1


def test_geoparquet_copy_matches_the_geopackage(city: Path, buildings: gpd.GeoDataFrame) -> None:
    parquet = gpd.read_parquet(city / "buildings.parquet")
    assert parquet.crs.to_epsg() == 32632
    pd.testing.assert_frame_equal(pd.DataFrame(parquet.drop(columns="geometry")),
                                  pd.DataFrame(buildings.drop(columns="geometry")), check_dtype=False)
    assert shapely.equals_exact(parquet.geometry.values, buildings.geometry.values, tolerance=0).all()


def test_medium_city_in_bounded_time(tmp_path: Path) -> None:
    started = time.perf_counter()
    summary = generate_city(20_000, 3, tmp_path)
    assert time.perf_counter() - started < 60.0   # ~3 s on a shared 2-core machine
    assert summary["counts"]["buildings"] == 20_000 and summary["counts"]["substations"] >= 2
    assert pyogrio.read_info(tmp_path / "buildings.gpkg")["features"] == 20_000
    assert pyogrio.read_info(tmp_path / "grid.gpkg", layer="connections")["features"] == 20_000


@pytest.mark.parametrize("kwargs, message", [
    ({"n_buildings": 0}, "number of buildings"),
    ({"n_buildings": 10_000_000}, "number of buildings"),
    ({"seed": -1}, "seed"),
    ({"crs": "EPSG:4326"}, "projected CRS in metres"),
    ({"crs": "EPSG:999999"}, "unknown CRS"),
])
def test_bad_parameters_are_refused_before_anything_is_written(kwargs: dict, message: str,
                                                               tmp_path: Path) -> None:
    args = {"n_buildings": 10, "seed": 1, "out_dir": tmp_path / "out"} | kwargs
    with pytest.raises(InputError, match=message):
        generate_city(**args)
    assert not (tmp_path / "out").exists()


def test_tiny_cities_and_other_crs(tmp_path: Path) -> None:
    for n in (1, 7):
        summary = generate_city(n, 5, tmp_path / str(n))
        assert summary["counts"]["buildings"] == n == summary["counts"]["service_points"]
        grid = read_grid_gpkg(tmp_path / str(n) / "grid.gpkg")
        assert len(grid.connections) == n
    generate_city(50, 5, tmp_path / "3035", crs="EPSG:3035")    # ETRS89-LAEA Europe
    with rasterio.open(tmp_path / "3035" / "dem.tif") as dem:
        assert dem.crs.to_epsg() == 3035 and 4_000_000 < dem.bounds.left < 4_300_000
