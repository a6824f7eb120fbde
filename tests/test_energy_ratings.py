"""Feeder ratings from the grid's head sections, and overload flags on feeders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from citytwin.models.energy import asset_ratings, feeder_ratings, load_archetypes, simulate
from citytwin.models.grid import assignments
from citytwin.models.grid.tables import GridTables

POWER_FACTOR = 0.95


def small_grid() -> GridTables:
    """One substation, three feeders behind breakers.

    F1: head bus -> trunk 10 MVA -> 8 MVA -> transformer (rating on the first section only counts).
    F2: two cables (6 + 4 MVA) leave the head bus: they share the feeder's load.
    F3: no feeder label in the table (derived: its breaker's id) and an unrated head section.
    A normally-open tie F1 <-> F2 must not change anything.
    """
    n = [
        ("SRC", "source", None, np.nan),
        ("SUB", "substation", None, 40.0),
        ("F1-H", "bus", "F1", np.nan),
        ("F1-T0", "bus", "F1", np.nan),
        ("TX1", "transformer", "F1", 50.0),
        ("SP1", "service_point", "F1", np.nan),
        ("F2-H", "bus", "F2", np.nan),
        ("TX2a", "transformer", "F2", 50.0),
        ("SP2a", "service_point", "F2", np.nan),
        ("TX2b", "transformer", "F2", 50.0),
        ("SP2b", "service_point", "F2", np.nan),
        ("F3-H", "bus", None, np.nan),
        ("TX3", "transformer", None, 50.0),
        ("SP3", "service_point", None, np.nan),
    ]
    nodes = pd.DataFrame(n, columns=["node_id", "kind", "feeder", "rating_mva"])
    s = [
        ("F1-M0", "F1-H", "F1-T0", 10.0, "F1"),
        ("F1-M1", "F1-T0", "TX1", 8.0, "F1"),
        ("F1-L", "TX1", "SP1", 1.0, "F1"),
        ("F2-A", "F2-H", "TX2a", 6.0, "F2"),
        ("F2-B", "F2-H", "TX2b", 4.0, "F2"),
        ("F2-La", "TX2a", "SP2a", 1.0, "F2"),
        ("F2-Lb", "TX2b", "SP2b", 1.0, "F2"),
        ("F3-M0", "F3-H", "TX3", np.nan, None),
        ("F3-L", "TX3", "SP3", 1.0, None),
    ]
    sections = pd.DataFrame(s, columns=["section_id", "from_node", "to_node", "rating_mva", "feeder"])
    sections["length_km"] = 1.0
    w = [
        # A disconnector above the bus: a breaker there would be the topmost head device and make
        # the derived label of F3 the whole substation's.
        ("SUB-DS", "disconnector", "SRC", "SUB", "closed", None),
        ("F1-CB", "breaker", "SUB", "F1-H", "closed", "F1"),
        ("F2-CB", "breaker", "SUB", "F2-H", "closed", "F2"),
        ("F3-CB", "breaker", "SUB", "F3-H", "closed", None),
        ("TIE1", "tie", "F1-T0", "TX2a", "open", "F1"),
    ]
    switches = pd.DataFrame(
        w, columns=["switch_id", "kind", "from_node", "to_node", "normal_state", "feeder"]
    )
    switches["present_state"] = switches["normal_state"]
    connections = pd.DataFrame(
        {"building_id": ["b1", "b2a", "b2b", "b3"], "node_id": ["SP1", "SP2a", "SP2b", "SP3"], "customers": 1}
    )
    return GridTables(
        nodes=nodes, sections=sections, switches=switches, connections=connections, name="small"
    )


def test_feeder_rating_is_the_sum_of_its_head_sections():
    grid = small_grid()
    ratings = feeder_ratings(grid)
    # The feeder ids are the ones buildings are assigned to.
    assert set(ratings.index) == set(assignments(grid)["feeder"].dropna()) == {"F1", "F2", "F3-CB"}
    assert ratings["F1"] == 10.0  # the head section, not the smaller 8 MVA one further down
    assert ratings["F2"] == 6.0 + 4.0  # two cables leave the head bus
    assert np.isnan(ratings["F3-CB"])  # unrated head section: unknown
    both = asset_ratings(grid)
    assert both["SUB"] == 40.0 and both["TX1"] == 50.0 and both["F1"] == 10.0 and both["F2"] == 10.0
    assert "F3-CB" not in both.index and "SP1" not in both.index  # unknown ratings are left out


@pytest.fixture(scope="module")
def unit_peaks():
    """Peak electric load (kW) of every feeder with 1 m2 per unit of the areas below."""
    return _run(1.0)


AREAS = {"b1": 1000.0, "b2a": 300.0, "b2b": 300.0, "b3": 1000.0}


def _run(scale: float):
    grid = small_grid()
    buildings = pd.DataFrame(
        {
            "source_id": list(AREAS),
            "floor_area_m2": np.array(list(AREAS.values())) * scale,
            "use": "office",
            "year_built": 2000,
        }
    )
    weather = load_archetypes().reference.to_series()
    result = simulate(
        buildings, weather, assignments(grid), ratings=asset_ratings(grid), power_factor=POWER_FACTOR
    )
    return result.assets


@pytest.mark.parametrize("loading", [1.05, 0.95])
def test_a_feeder_above_its_rating_is_flagged_and_one_below_is_not(unit_peaks, loading):
    # Scale floor areas (so loads) until F1 peaks at `loading` x its capacity of 10 MVA x pf.
    capacity_kw = 10.0 * 1000 * POWER_FACTOR
    scale = loading * capacity_kw / float(unit_peaks["electricity_peak_kw"].sel(asset="F1"))
    assets = _run(scale)
    f1, f2 = assets.sel(asset="F1"), assets.sel(asset="F2")
    assert float(f1["rating_kw"]) == pytest.approx(capacity_kw)
    assert float(f1["loading"]) == pytest.approx(loading, rel=1e-4)
    assert bool(f1["overload"]) == (loading > 1) and (int(f1["overload_hours"]) > 0) == (loading > 1)
    # F2 carries 0.6 x F1's load on the same 10 MVA: below its rating either way.
    assert float(f2["loading"]) == pytest.approx(0.6 * loading, rel=1e-4) and not bool(f2["overload"])
    # F3's rating is unknown: never flagged, however loaded.
    f3 = assets.sel(asset="F3-CB")
    assert np.isnan(float(f3["rating_kw"])) and not bool(f3["overload"])


def test_every_synthetic_feeder_is_rated_by_its_trunk_cable(tmp_path):
    from citytwin.io.grid_gpkg import read_grid_gpkg
    from citytwin.synth import generate_city

    generate_city(400, 5, tmp_path)
    grid = read_grid_gpkg(tmp_path / "grid.gpkg")
    ratings = feeder_ratings(grid)
    feeders = sorted(set(assignments(grid)["feeder"].dropna()))
    assert feeders and set(feeders) <= set(ratings.index)
    # The synthetic feeder leaves its breaker through one trunk cable, <feeder>-M000.
    trunk = grid.sections.set_index("section_id")["rating_mva"]
    expected = trunk.reindex([f"{f}-M000" for f in feeders]).to_numpy()
    np.testing.assert_allclose(ratings[feeders].to_numpy(), expected)
    assert (ratings[feeders] > 0).all()
    assert set(feeders) <= set(asset_ratings(grid).index)
