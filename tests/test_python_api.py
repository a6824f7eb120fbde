"""The analysts' Python API (``citytwin.connect``) on a small imported city.

Its answers are checked against independent sources: the generated city's own files (what was
imported) for the building queries, and plain SQL counts for the grid.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
from pyproj import Transformer
from sqlalchemy import text

import citytwin
from citytwin.client import Twin
from citytwin.errors import InputError

TWIN_CRS = "EPSG:32632"


@pytest.fixture(scope="module")
def twin(demo_twin) -> Twin:
    url, data_dir = demo_twin
    twin = citytwin.connect(url, data_dir=data_dir)
    yield twin
    twin.engine.dispose()


@pytest.fixture(scope="module")
def city_buildings(demo_twin) -> gpd.GeoDataFrame:
    """The buildings as generated (the file the twin imported), in the twin's CRS."""
    _, data_dir = demo_twin
    frame = pyogrio.read_dataframe(Path(data_dir) / "city" / "buildings.gpkg", layer="buildings")
    assert frame.crs.to_epsg() == 32632 and len(frame) == 400
    return frame


def _lonlat_box(utm_box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """A CRS84 bbox around the corners of a box given in the twin's CRS."""
    x0, y0, x1, y1 = utm_box
    lon, lat = Transformer.from_crs(TWIN_CRS, "EPSG:4326", always_xy=True).transform([x0, x1, x1, x0],
                                                                                     [y0, y0, y1, y1])
    return min(lon), min(lat), max(lon), max(lat)


def _bbox_in_twin_crs(bbox: tuple[float, float, float, float]) -> np.ndarray:
    """What a CRS84 bbox covers in the twin's CRS: the bounds of its transformed corners."""
    x0, y0, x1, y1 = bbox
    to_twin = Transformer.from_crs("EPSG:4326", TWIN_CRS, always_xy=True)
    x, y = to_twin.transform([x0, x1, x1, x0], [y0, y0, y1, y1])
    return np.array([min(x), min(y), max(x), max(y)])


def _touching(bounds: np.ndarray, box: np.ndarray, grow: float = 0.0) -> np.ndarray:
    """Footprints whose bounds meet ``box`` (grown by ``grow`` metres on every side)."""
    x0, y0, x1, y1 = box + np.array([-grow, -grow, grow, grow])
    return (bounds[:, 0] <= x1) & (bounds[:, 2] >= x0) & (bounds[:, 1] <= y1) & (bounds[:, 3] >= y0)


@pytest.fixture(scope="module")
def bbox(city_buildings) -> tuple[float, float, float, float]:
    """A CRS84 bbox over the middle of the city whose edges pass no footprint closer than 1.5 m (PostGIS
    compares float4 boxes, 0.5 m steps here: the answer must not hinge on rounding at an edge)."""
    bounds = shapely.bounds(city_buildings.geometry.values)
    xmin, ymin, xmax, ymax = city_buildings.total_bounds
    w, h = xmax - xmin, ymax - ymin
    lonlat = np.array(_lonlat_box((xmin + 0.2 * w, ymin + 0.2 * h, xmin + 0.7 * w, ymin + 0.75 * h)))
    step = np.array([3.0 / 74_000, 3.0 / 111_000] * 2)            # about 3 m in degrees at 48.4 N
    for _ in range(300):
        box = _bbox_in_twin_crs(tuple(lonlat))
        if (_touching(bounds, box, 1.5) == _touching(bounds, box, -1.5)).all():
            return tuple(lonlat)
        near = _touching(bounds, box, 1.5)
        # Move each edge that passes within 1.5 m of a footprint it meets (sides: minx, miny, maxx, maxy).
        for edge, side in ((0, 2), (1, 3), (2, 0), (3, 1)):
            if (np.abs(bounds[near, side] - box[edge]) < 1.5).any():
                lonlat[edge] += step[edge]
    pytest.fail("no bbox with clear edges")


def test_connect_opens_the_twin(twin, demo_twin) -> None:
    url, data_dir = demo_twin
    assert isinstance(twin, Twin) and twin.data_dir == Path(data_dir)
    summary = twin.summary()
    assert summary["counts"]["buildings"] == 400


def test_buildings_in_a_bbox_matching_a_where_filter(twin, city_buildings, bbox) -> None:
    residential = city_buildings[city_buildings["use"] == "residential"]
    low = float(np.median(residential["height"]))
    found = twin.buildings(bbox=bbox, where={"use": "residential", "height": (low, None)})

    inside = _touching(shapely.bounds(city_buildings.geometry.values), _bbox_in_twin_crs(bbox))
    b = city_buildings
    expected = b[inside & (b["use"] == "residential") & (b["height"] >= low)]
    assert 0 < len(expected) < inside.sum() < len(city_buildings)     # every part of the query narrows
    assert found.crs.to_epsg() == 32632
    assert sorted(found["source_id"]) == sorted(expected["source_id"])
    assert (found["use"] == "residential").all() and (found["height"] >= low).all()
    mine = found.set_index("source_id").loc[expected["source_id"]]
    np.testing.assert_allclose(mine["height"], expected["height"])
    # The twin stores footprints as MultiPolygons: compare shapes, not types.
    difference = shapely.symmetric_difference(mine.geometry.values, expected.geometry.values)
    assert (shapely.area(difference) < 1e-6).all()


def test_where_takes_lists_and_closed_ranges(twin, city_buildings) -> None:
    found = twin.buildings(where={"use": ["apartment", "office"], "height": (10.0, 20.0),
                                  "floors": (None, 5)})
    b = city_buildings
    expected = b[b["use"].isin(["apartment", "office"]) & b["height"].between(10.0, 20.0)
                 & (b["floors"] <= 5)]
    assert len(expected) > 0
    assert sorted(found["source_id"]) == sorted(expected["source_id"])
    with pytest.raises(InputError, match="cannot filter buildings by 'colour'"):
        twin.buildings(where={"colour": "red"})


def test_grid_frames_and_graph_agree_with_the_tables(twin) -> None:
    with twin.engine.connect() as conn:
        nodes = conn.execute(text("SELECT node_id FROM grid_nodes")).scalars().all()
        sections = conn.execute(text("SELECT section_id FROM grid_sections")).scalars().all()
        switches = conn.execute(text("SELECT switch_id FROM grid_switches")).scalars().all()
        pairs = conn.execute(text("""
            SELECT count(DISTINCT (least(from_node, to_node), greatest(from_node, to_node)))
            FROM (SELECT from_node, to_node FROM grid_sections UNION ALL
                  SELECT from_node, to_node FROM grid_switches) e""")).scalar()
    assert len(nodes) > 400 and sections and switches

    grid = twin.grid()
    assert set(grid) == {"nodes", "lines", "switches"}
    for name, ids, column in (("nodes", nodes, "node_id"), ("lines", sections, "section_id"),
                              ("switches", switches, "switch_id")):
        frame = grid[name]
        assert isinstance(frame, gpd.GeoDataFrame) and frame.crs.to_epsg() == 32632, name
        assert len(frame) == len(ids) and set(frame[column]) == set(ids), name
    assert set(grid["lines"].geometry.geom_type) == {"LineString"}

    graph = twin.grid_graph()
    assert graph.number_of_nodes() == len(nodes) and set(graph.nodes) == set(nodes)
    # One edge per section and switch; a section and a switch between the same two nodes would share one.
    assert pairs == len(sections) + len(switches)
    assert graph.number_of_edges() == len(sections) + len(switches)
    assert {d["id"] for _, _, d in graph.edges(data=True)} == set(sections) | set(switches)
    kinds = dict(graph.nodes(data="kind"))
    assert sum(k == "service_point" for k in kinds.values()) == 400


def test_client_is_a_dask_distributed_client(demo_twin, monkeypatch) -> None:
    from dask.distributed import Client, LocalCluster

    from citytwin.scenarios.cluster import close_clients

    url, data_dir = demo_twin
    # With CITYTWIN_DASK_SCHEDULER: a client of that scheduler (the scale-out path).
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        monkeypatch.setenv("CITYTWIN_DASK_SCHEDULER", cluster.scheduler_address)
        twin = citytwin.connect(url, data_dir=data_dir)
        try:
            client = twin.client
            assert isinstance(client, Client) and client.scheduler.address == cluster.scheduler_address
            assert twin.client is client                                # one client per scheduler
            assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
        finally:
            close_clients()     # a client left open would stay every later test's Dask scheduler
            twin.engine.dispose()


def test_default_client_is_a_local_cluster(demo_twin, monkeypatch) -> None:
    from dask.distributed import Client

    from citytwin.scenarios.cluster import close_clients

    url, data_dir = demo_twin
    monkeypatch.delenv("CITYTWIN_DASK_SCHEDULER", raising=False)
    twin = citytwin.connect(url, data_dir=data_dir)
    try:
        client = twin.client
        assert isinstance(client, Client) and client.cluster is not None
        assert client.submit(pow, 2, 10).result(timeout=60) == 1024
    finally:
        close_clients()
        twin.engine.dispose()


def test_telemetry_window_without_observations(twin) -> None:
    # The demo twin has datastreams but no observations yet: an empty but well-formed series.
    series = twin.telemetry(1, "2026-01-01", "2026-01-02")
    assert series.empty and str(series.index.tz) == "UTC"
    array = twin.telemetry(1, "2026-01-01", "2026-01-02", as_xarray=True)
    assert array.sizes["time"] == 0 and array.dims == ("time",)
