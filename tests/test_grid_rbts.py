"""RBTS Bus 2 against its published reliability indices (Allan et al., IEEE Trans. PWRS 6(2), 1991).

Published base case (README of ../shared/data/rbts_bus2): SAIFI 0.248, SAIDI 3.61, CAIDI 14.6,
ASAI 0.999588, ENS 37.75 MWh/yr; LP1 0.2393 /yr, 3.575 h/yr, 14.94 h. "To the digits given" means
the computed value rounds to the published one: |x - published| <= half a unit of its last digit.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from citytwin.errors import InputError
from citytwin.io.grids import read_grid, read_rbts
from citytwin.models.grid import apply_overrides, assignments, reliability_report, restore
from citytwin.models.grid.effects import failure_effects
from citytwin.models.grid.reliability_montecarlo import monte_carlo
from _paths import SHARED_DATA

RBTS = SHARED_DATA / "rbts_bus2"
PUBLISHED_SYSTEM = {"SAIFI": "0.248", "SAIDI": "3.61", "CAIDI": "14.6", "ASAI": "0.999588", "ENS": "37.75"}
PUBLISHED_LP1 = {"failure_rate": "0.2393", "unavailability_h": "3.575", "average_outage_time_h": "14.94"}


def half_unit(published: str) -> float:
    """Half a unit in the last published digit (with a hair of float slack)."""
    exponent = Decimal(published).as_tuple().exponent
    return 0.5 * 10.0 ** exponent * (1 + 1e-9)


@pytest.fixture(scope="module")
def grid():
    return read_rbts(RBTS)


@pytest.fixture(scope="module")
def effects(grid):
    return failure_effects(grid)


def test_reader_builds_the_published_system(grid):
    points = grid.nodes[grid.nodes["kind"] == "service_point"]
    assert len(points) == 22
    assert int(points["customers"].sum()) == 1908
    assert points["load_mw"].sum() == pytest.approx(12.291, abs=5e-4)
    assert sorted(grid.nodes.loc[grid.nodes["kind"] == "source", "node_id"]) == ["B2"]
    kinds = grid.switches["kind"].value_counts().to_dict()
    assert kinds == {"fuse": 22, "disconnector": 10, "breaker": 4, "tie": 2}
    ties = grid.switches[grid.switches["kind"] == "tie"]
    assert set(ties["normal_state"]) == {"open"} and set(ties["switching_time_h"]) == {1.0}
    s1 = grid.sections.set_index("section_id").loc["S1"]
    assert s1["failure_rate"] == pytest.approx(0.065 * 0.75)
    assert s1["repair_time_h"] == 5.0 and s1["feeder"] == "F1"
    tx = grid.nodes[grid.nodes["kind"] == "transformer"]
    assert len(tx) == 20 and set(tx["failure_rate"]) == {0.015} and set(tx["repair_time_h"]) == {200.0}
    assert read_grid(RBTS).nodes.equals(grid.nodes)


def test_analytical_reproduces_published_indices(grid):
    report = reliability_report(grid, method="analytical")
    for name, published in PUBLISHED_SYSTEM.items():
        assert abs(report["system"][name] - float(published)) <= half_unit(published), name
    lp1 = report["load_points"]["LP1"]
    for name, published in PUBLISHED_LP1.items():
        assert abs(lp1[name] - float(published)) <= half_unit(published), name
    assert lp1["customers"] == 210 and lp1["feeder"] == "F1"
    assert report["method"] == "analytical" and report["system"]["customers"] == 1908
    # AENS = ENS / N_T, and per-feeder customers add up.
    assert report["system"]["AENS"] == pytest.approx(report["system"]["ENS"] / 1908)
    assert sum(f["customers"] for f in report["feeders"].values()) == 1908
    assert set(report["feeders"]) == {"F1", "F2", "F3", "F4"}


def test_monte_carlo_converges_to_analytical(effects, grid):
    """2e6 sampled years (>= 10,000): system indices and LP1 within 2 % of the analytical values."""
    analytical = reliability_report(grid, effects=effects)
    years = 2_000_000
    mc = reliability_report(grid, method="monte-carlo", years=years, seed=2024, batch_years=250_000, effects=effects)
    assert mc["years"] == years
    for name in ("SAIFI", "SAIDI", "CAIDI", "ASAI", "ENS", "AENS"):
        assert mc["system"][name] == pytest.approx(analytical["system"][name], rel=0.02), name
    for name in ("SAIFI", "SAIDI", "ENS"):
        # the 2 % tolerance is several standard errors wide, so passing is not luck
        assert 3 * mc["standard_error"][name] < 0.02 * analytical["system"][name], name
    for name in ("failure_rate", "unavailability_h", "average_outage_time_h"):
        assert mc["load_points"]["LP1"][name] == pytest.approx(analytical["load_points"]["LP1"][name], rel=0.02)
    p = mc["annual_percentiles"]["SAIDI"]
    assert p["p50"] <= p["p90"] <= p["p99"]


def test_monte_carlo_is_the_same_with_a_dask_client(effects):
    from dask.distributed import Client, LocalCluster

    local = monte_carlo(effects, 10_000, seed=5, batch_years=2_500)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        distributed = monte_carlo(effects, 10_000, seed=5, batch_years=2_500, client=client)
    np.testing.assert_array_equal(local.unavailability_h, distributed.unavailability_h)
    np.testing.assert_array_equal(local.annual["SAIDI"], distributed.annual["SAIDI"])
    other_seed = monte_carlo(effects, 10_000, seed=6, batch_years=2_500)
    assert not np.array_equal(local.annual["SAIDI"], other_seed.annual["SAIDI"])


def test_fault_on_first_main_section_backfeeds_through_tie(grid):
    """S1 fault: breaker trips F1, fuses and S4's disconnector isolate it, BS1 picks up B4..B6."""
    result = restore(grid, ["S1"])
    plan = result.plan
    assert plan.iloc[0][["action", "switch_id", "purpose"]].tolist() == ["trip", "S1_breaker", "clear fault"]
    assert set(plan.loc[plan["purpose"] == "isolate", "switch_id"]) == {"S2_fuse", "S3_fuse", "S4_disconnector"}
    assert plan.loc[plan["purpose"] == "back-feed", "switch_id"].tolist() == ["BS1"]
    times = result.interruptions.set_index("node_id")
    assert times.loc[["LP1", "LP2"], "interruption_h"].tolist() == [5.0, 5.0]
    assert set(times.loc[["LP1", "LP2"], "restored_by"]) == {"repair"}
    assert times.loc[[f"LP{i}" for i in range(3, 8)], "interruption_h"].tolist() == [1.0] * 5
    assert set(times.index) == {f"LP{i}" for i in range(1, 8)}


def test_overrides_change_the_indices(grid):
    base = reliability_report(grid)["load_points"]["LP1"]
    faster = apply_overrides(grid, ["transformer_11_0.415kV.repair_time_h=10"])
    assert set(faster.nodes.loc[faster.nodes["kind"] == "transformer", "repair_time_h"]) == {10.0}
    assert set(grid.nodes.loc[grid.nodes["kind"] == "transformer", "repair_time_h"]) == {200.0}   # copy
    lp1 = reliability_report(faster)["load_points"]["LP1"]
    # only the transformer term changes: 0.015/yr * (10 - 200) h
    assert lp1["unavailability_h"] == pytest.approx(base["unavailability_h"] + 0.015 * (10 - 200))
    s1 = apply_overrides(grid, ["S1.failure_rate=0.1"])
    assert s1.sections.set_index("section_id").at["S1", "failure_rate"] == 0.1
    per_km = apply_overrides(grid, ["line_11kV.failure_rate=0.1"])
    assert per_km.sections.set_index("section_id").at["S1", "failure_rate"] == pytest.approx(0.1 * 0.75)
    report = reliability_report(grid, overrides=["S2.failure_rate=0"])
    assert report["load_points"]["LP1"]["failure_rate"] == pytest.approx(base["failure_rate"] - 0.065 * 0.6)


@pytest.mark.parametrize("override, named", [("S99.failure_rate=1", "S99"), ("S1.colour=1", "colour"),
                                             ("S1.failure_rate=abc", "abc"), ("S1failure_rate", "COMPONENT.FIELD"),
                                             ("S1.failure_rate=-1", ">= 0")])
def test_bad_overrides_name_the_problem(grid, override, named):
    with pytest.raises(InputError, match=named):
        apply_overrides(grid, [override])


def test_assignments_give_transformer_and_feeder(grid):
    table = assignments(grid).set_index("service_point")
    assert table.loc["LP1", "transformer"] == "LP1_tx"
    assert table.loc["LP1", "feeder"] == "F1" and table.loc["LP22", "feeder"] == "F4"
    assert table["transformer"].isna().sum() == 2        # LP8 and LP9 are supplied at 11 kV
    assert table.loc["LP8", "transformer"] is pd.NA
    assert set(table["substation"]) == {"B2"}
    assert len(table) == 22 and table["building_id"].isna().all()
