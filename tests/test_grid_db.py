"""Grids read by citytwin.io.grids load into the twin (PostGIS) and come back usable by the models."""

from __future__ import annotations


import pytest

from citytwin.io.grids import read_rbts
from citytwin.models.grid import reliability_report, restore
from _paths import SHARED_DATA

RBTS = SHARED_DATA / "rbts_bus2"


def test_rbts_round_trips_through_the_twin(engine):
    from citytwin.db.grid import load_grid
    from citytwin.db.grid import read_grid as read_twin_grid

    grid = read_rbts(RBTS)
    summary = load_grid(engine, grid, source="rbts", path=str(RBTS))
    assert summary.imported == len(grid.nodes) + len(grid.sections) + len(grid.switches)
    with engine.connect() as conn:
        back = read_twin_grid(conn)
    assert set(back.switches["switch_id"]) == set(grid.switches["switch_id"])
    original = reliability_report(grid)["system"]
    again = reliability_report(back)["system"]
    for name in ("SAIFI", "SAIDI", "CAIDI", "ASAI", "ENS"):
        assert again[name] == pytest.approx(original[name], rel=1e-12), name
    assert restore(back, ["S1"]).summary()["ties_closed"] == ["BS1"]
