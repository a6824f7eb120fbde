"""Chunked runs on dask.distributed reproduce the in-memory run and keep the volume balance."""

from __future__ import annotations

import os

import dask.array as da
import numpy as np
import pytest
from _flood_support import cell_centre, like, make_dem
from distributed import Client, LocalCluster

from citytwin.models.flood import simulate


def _problem():
    """Terrain with a nodata hole, an obstacle, rain, an inflow, and every kind of border."""
    yy, xx = np.mgrid[0:70, 0:90]
    z = 0.02 * xx + 0.3 * np.sin(xx / 7.0) * np.cos(yy / 5.0) + 0.01 * yy
    z[30:34, 20:50] = np.nan
    dem = make_dem(z, dx=2.0)
    blocked = np.zeros(z.shape, dtype=bool)
    blocked[50:56, 60:66] = True
    kwargs = {"rain": 80.0, "duration": 240.0, "output_interval": 80.0, "obstacles": like(dem, blocked),
                  "inflows": [(*cell_centre(dem, 10, 10), 0.3)],
                  "boundary": {"west": "open", "north": 1.2, "east": "closed", "south": "open"}}
    return dem, kwargs


def _assert_same(chunked, reference):
    assert isinstance(chunked.depth.data, da.Array)  # results stay on the cluster until asked
    for name in ("depth", "max_depth", "arrival_time"):
        a, b = chunked[name].values, reference[name].values
        assert np.array_equal(np.isnan(a), np.isnan(b)), name
        assert np.nanmax(np.abs(a - b)) <= 1e-5, name
    for key in ("rain_volume", "inflow_volume", "steps"):
        assert chunked.attrs[key] == reference.attrs[key]
    outflow = reference.attrs["outflow_volume"]
    assert chunked.attrs["outflow_volume"] == pytest.approx(outflow, rel=1e-9, abs=1e-9)
    assert chunked.attrs["relative_volume_error"] < 1e-6
    assert chunked.attrs["chunks"] > 1


def test_chunked_run_without_a_cluster_equals_in_memory_run():
    # No distributed client: the chunks run on the local threaded scheduler.
    dem, kwargs = _problem()
    reference = simulate(dem, **kwargs)
    _assert_same(simulate(dem.chunk({"y": 24, "x": 45}), **kwargs), reference)


def test_chunked_run_on_threads_equals_in_memory_run():
    dem, kwargs = _problem()
    reference = simulate(dem, **kwargs)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
    with cluster, Client(cluster):
        # Uneven chunks, one narrower than the halo (exchange_steps + 1 = 17 cells): its neighbours'
        # halos reach through it into the chunks beyond.
        chunked = simulate(dem.chunk({"y": (40, 30), "x": (12, 78)}), **kwargs)
        _assert_same(chunked, reference)
        # The maps are computed on the cluster: they come back lazily and equal on demand.
        assert float(chunked.max_depth.max()) == pytest.approx(float(reference.max_depth.max()))


def test_chunked_run_on_worker_processes_equals_in_memory_run():
    dem, kwargs = _problem()
    kwargs["duration"] = 120.0
    reference = simulate(dem, **kwargs)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, Client(cluster) as client:
        chunked = simulate(dem.chunk({"y": 35, "x": 90}), **kwargs)
        _assert_same(chunked, reference)
        # Each worker process kept its chunks for the run only.
        assert set(client.run(_resident_chunks).values()) == {0}


def _resident_chunks() -> int:
    from citytwin.models.flood import resident

    return len(resident._STORE)


def test_large_in_memory_grid_runs_in_bands_and_equals_one_block():
    # 520 x 400 cells: above the size at which an in-memory grid is split into one band per core.
    yy, xx = np.mgrid[0:520, 0:400]
    z = 0.002 * xx + 0.4 * np.sin(xx / 23.0) * np.cos(yy / 17.0)
    dem = make_dem(z, dx=2.0)
    kwargs = {"rain": 60.0, "initial_depth": 0.02, "duration": 60.0, "output_interval": 30.0,
              "boundary": "open"}
    banded = simulate(dem, **kwargs)
    one_block = simulate(dem.chunk({"y": 520, "x": 400}), **kwargs)  # a single chunk: no halo, no bands
    cores = len(os.sched_getaffinity(0))
    if cores > 1:
        assert banded.attrs["chunks"] == cores  # one band per core
    assert np.array_equal(banded.depth.values, one_block.depth.values)
    assert np.array_equal(banded.max_depth.values, one_block.max_depth.values)
    assert banded.attrs["relative_volume_error"] < 1e-6


def test_resident_chunks_are_freed_and_concurrent_runs_do_not_collide():
    # Chunks live in a per-process store on the workers (shared by all workers with processes=False),
    # keyed by run: two runs at once keep apart, and nothing is left behind after either. Three bands:
    # the outer two are not neighbours and see each other's reports only.
    from concurrent.futures import ThreadPoolExecutor

    from citytwin.models.flood import resident

    dem, kwargs = _problem()
    kwargs["duration"] = 120.0
    reference = simulate(dem, **kwargs)
    cluster = LocalCluster(n_workers=2, threads_per_worker=2, processes=False, dashboard_address=None)
    with cluster, Client(cluster):
        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(lambda chunks: simulate(dem.chunk(chunks), **kwargs),
                                 [{"y": 35, "x": 90}, {"y": 24, "x": 90}]))
        for chunked in runs:
            _assert_same(chunked, reference)
        assert resident._STORE == {}


def test_failed_chunked_run_frees_its_chunks(monkeypatch):
    from citytwin.models.flood import chunked as chunked_module
    from citytwin.models.flood import resident

    calls = []

    def failing_advance(block, plan, num):
        calls.append(plan.t0)
        if len(calls) > 6:
            raise RuntimeError("kernel failure")
        return 0.0

    dem, kwargs = _problem()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
    with cluster, Client(cluster):
        monkeypatch.setattr(chunked_module, "advance", failing_advance)  # the workers share this process
        with pytest.raises(RuntimeError, match="kernel failure"):
            simulate(dem.chunk({"y": 35, "x": 90}), **kwargs)
        assert resident._STORE == {}
