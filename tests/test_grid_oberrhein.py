"""pandapower's mv_oberrhein: topology against pandapower, FLISR with and without tie headroom."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from citytwin.models.grid import ImpactTable, Topology, outage, restore
from citytwin.models.grid.outages import failures_from_flood, outage_from_device
from _paths import SHARED_DATA

MV = SHARED_DATA / "oberrhein_schutterwald_grids" / "mv_oberrhein.json"


@pytest.fixture(scope="module")
def net():
    import pandapower as pp

    return pp.from_json(str(MV))


@pytest.fixture(scope="module")
def grid():
    from citytwin.io.grids import read_grid

    return read_grid(MV)


@pytest.fixture(scope="module")
def topo(grid):
    return Topology.from_grid(grid, "present")


def bus_numbers(node_ids) -> set[int]:
    return {int(n[4:]) for n in node_ids if n.startswith("bus_")}


def test_reader_maps_elements(grid, net):
    assert grid.crs == "EPSG:4326"
    buses = grid.nodes[grid.nodes["node_id"].str.startswith("bus_")]
    assert len(buses) == len(net.bus) == 179
    assert len(grid.sections[grid.sections["section_id"].str.startswith("line_")]) == 181
    kinds = grid.switches["kind"].value_counts().to_dict()
    assert kinds == {"disconnector": 312, "tie": 6, "breaker": 4}
    assert set(grid.switches.loc[grid.switches["kind"] == "tie", "normal_state"]) == {"open"}
    assert sorted(grid.nodes.loc[grid.nodes["kind"] == "source", "node_id"]) == ["bus_318", "bus_58"]
    points = grid.nodes[grid.nodes["kind"] == "service_point"]
    assert len(points) == 147
    assert points["load_mw"].sum() == pytest.approx((net.load["p_mw"] * net.load["scaling"]).sum())
    # coordinates are the bus geodata (lon/lat in the Ortenau bbox); lines carry their geometry
    assert buses["x"].between(7.74, 7.94).all() and buses["y"].between(48.32, 48.48).all()
    lines = grid.sections[grid.sections["section_id"].str.startswith("line_")]
    assert lines["geometry"].notna().all()
    assert lines["length_km"].sum() == pytest.approx(net.line["length_km"].sum())
    # four feeders, one per circuit breaker
    feeders = points["feeder"].dropna().unique()
    assert sorted(feeders) == sorted(f"switch_{i}" for i in net.switch.index[net.switch["type"] == "CB"])


def test_every_single_line_failure_matches_pandapower(net, topo):
    import pandapower.topology as pptop

    impact = ImpactTable.build(topo)
    for line in net.line.index:
        net.line.at[line, "in_service"] = False
        expected = pptop.unsupplied_buses(net)
        net.line.at[line, "in_service"] = True
        row = impact.index_of(f"line_{line}")
        assert bus_numbers(topo.node_ids[impact.unsupplied_nodes(row)]) == expected, line
        _, sec = topo.resolve_assets([f"line_{line}"])
        assert bus_numbers(topo.node_ids[topo.unsupplied_mask(failed_sections=sec)]) == expected, line


def test_double_failures_match_pandapower(net, topo):
    import pandapower.topology as pptop

    rng = np.random.default_rng(7)
    for a, b in rng.choice(net.line.index.to_numpy(), size=(15, 2)):
        net.line.loc[[a, b], "in_service"] = False
        expected = pptop.unsupplied_buses(net)
        net.line.loc[[a, b], "in_service"] = True
        _, sec = topo.resolve_assets([f"line_{a}", f"line_{b}"])
        assert bus_numbers(topo.node_ids[topo.unsupplied_mask(failed_sections=sec)]) == expected


def test_protection_trips_the_feeder_breaker(grid, topo):
    result = outage(grid, ["line_170"], topo=topo)
    assert result.clearing[["device_id", "device_kind"]].values.tolist() == [["switch_265", "breaker"]]
    feeder_points = grid.nodes[(grid.nodes["kind"] == "service_point") & (grid.nodes["feeder"] == "switch_265")]
    assert set(result.service_points["node_id"]) == set(feeder_points["node_id"])
    assert result.customers == len(feeder_points)
    assert result.load_mw == pytest.approx(feeder_points["load_mw"].sum())
    by_device = outage_from_device(grid, "switch_265", topo=topo)
    assert set(by_device.service_points["node_id"]) == set(result.service_points["node_id"])


def _energised_points(grid) -> set[str]:
    after = Topology.from_grid(grid, "present")    # raises if the switching made a loop or joined sources
    mask = after.energised & (after.node_kind == "service_point")
    return set(after.node_ids[mask])


def test_backfeed_through_tie_when_the_neighbour_has_headroom(grid, topo):
    result = restore(grid, ["line_170"], topo=topo)
    plan = result.plan
    assert plan.loc[plan["purpose"] == "back-feed", "switch_id"].tolist() == ["switch_311"]
    backfed = plan.loc[plan["purpose"] == "back-feed", "customers_restored"].iloc[0]
    assert backfed > 0
    it = result.interruptions
    assert set(it["restored_by"]) == {"switching"}
    assert (it["interruption_h"] == 1.0).all()        # default switching time, pandapower has none
    live = _energised_points(result.apply(grid))
    assert set(it["node_id"]) <= live
    # the tie's neighbour feeder carries its own load plus the picked-up load within its ratings
    assert grid.switches.set_index("switch_id").at["switch_311", "present_state"] == "open"


def test_no_backfeed_when_the_neighbour_lacks_headroom(grid, topo):
    with_headroom = restore(grid, ["line_170"], topo=topo)
    backfed = with_headroom.plan.query("purpose == 'back-feed'")
    assert backfed["switch_id"].tolist() == ["switch_311"]
    # the feeder on the far side of switch_311 gets a tiny rating: no headroom there any more
    starved = grid.copy()
    starved.sections.loc[starved.sections["feeder"] == "switch_270", "rating_mva"] = 1e-3
    result = restore(starved, ["line_170"])
    assert "switch_311" not in set(result.plan["switch_id"])
    # with every neighbouring feeder starved, nothing is back-fed: the downstream part waits for repair
    for feeder in ("switch_99", "switch_321"):
        starved.sections.loc[starved.sections["feeder"] == feeder, "rating_mva"] = 1e-3
    result = restore(starved, ["line_170"])
    assert not (result.plan["purpose"] == "back-feed").any()
    before = with_headroom.interruptions.set_index("node_id")
    after = result.interruptions.set_index("node_id")
    assert set(after.index) == set(before.index)
    waiting = after.index[after["restored_by"] == "repair"]
    assert len(waiting) == backfed["customers_restored"].iloc[0]       # one customer per load
    assert after.loc[waiting, "interruption_h"].isna().all()            # pandapower has no repair times
    assert not set(waiting) & _energised_points(result.apply(starved))


def test_partial_headroom_splits_the_region(grid, topo):
    """Headroom for only part of the de-energised region: open a switch inside it, pick up the rest."""
    full = restore(grid, ["line_170"], topo=topo)
    picked = full.plan.query("purpose == 'back-feed'")["load_restored_mw"].iloc[0]
    tie = grid.switches.set_index("switch_id").loc["switch_311"]
    side = tie["from_node"] if grid.nodes.set_index("node_id").at[tie["from_node"], "feeder"] == "switch_270" \
        else tie["to_node"]
    # the source-side path of the tie: cap its first section (the one feeding `side`) to half the pick-up
    path_section = topo.edge_ids[topo.parent_edge[topo.node_index().get_loc(side)]]
    while not path_section.startswith("line_"):
        node = topo.parent[topo.node_index().get_loc(side)]
        side = topo.node_ids[node]
        path_section = topo.edge_ids[topo.parent_edge[node]]
    flow = grid.nodes.set_index("node_id").loc[topo.node_ids[topo.subtree(topo.node_index().get_loc(side))], "load_mw"]
    limited = grid.copy()
    limited.sections.loc[limited.sections["section_id"] == path_section, "rating_mva"] = flow.sum() + picked / 2
    result = restore(limited, ["line_170"])
    plan = result.plan
    assert (plan["purpose"] == "split").sum() >= 1
    tie_rows = plan[(plan["purpose"] == "back-feed") & (plan["switch_id"] == "switch_311")]
    assert len(tie_rows) == 1
    assert 0 < tie_rows["load_restored_mw"].iloc[0] <= picked / 2 + 1e-9
    _energised_points(result.apply(limited))


def test_every_single_line_failure_leaves_a_radial_network(grid, topo):
    lines = grid.sections.loc[grid.sections["section_id"].str.startswith("line_"), "section_id"]
    sources = set(grid.nodes.loc[grid.nodes["kind"] == "source", "node_id"])
    for line in lines:
        result = restore(grid, [line], topo=topo)
        # raises on loops / joined sources (the tables are unchanged but for switch states)
        after = Topology.from_grid(result.apply(grid), "present", checked=True)
        roots = set(after.node_ids[after.root[after.energised]])
        assert roots <= sources
        live = set(after.node_ids[after.energised])
        it = result.interruptions
        assert set(it.loc[it["restored_by"] == "switching", "node_id"]) <= live, line
        assert not set(it.loc[it["restored_by"] == "repair", "node_id"]) & live, line
        row = grid.sections.set_index("section_id").loc[line]
        assert row["from_node"] not in live and row["to_node"] not in live, line


def test_flood_failures_and_multiple_faults(grid, topo):
    depths = pd.DataFrame({"asset_id": ["trafo_114", "bus_103", "load_0"], "max_depth_m": [0.8, 0.2, 0.6]})
    failed = failures_from_flood(grid, depths, critical_depth={"substation": 0.5, "service_point": 0.5, "bus": 1.0})
    assert failed == ["load_0", "trafo_114"]
    result = restore(grid, failed, topo=topo)
    plan = result.plan
    # the HV/MV transformer sits in its source's zone: no device clears it, the source is lost;
    # the flooded MV/LV station (no fuse) trips its feeder breaker
    trips = {tuple(r) for r in plan.query("action == 'trip'")[["switch_id", "device_kind"]].values.tolist()}
    assert trips == {("bus_58", "source"), ("switch_99", "breaker")}
    # isolation opens the two feeder breakers below the transformer; only switch_99 recloses
    assert set(plan.query("purpose == 'isolate'")["switch_id"]) >= {"switch_265", "switch_270"}
    assert plan.query("purpose == 'reclose'")["switch_id"].tolist() == ["switch_99"]
    lost = set(grid.nodes.loc[grid.nodes["feeder"].isin(["switch_265", "switch_270"]), "node_id"])
    it = result.interruptions.set_index("node_id")
    assert lost & set(grid.nodes.loc[grid.nodes["kind"] == "service_point", "node_id"]) <= set(it.index)
    live = _energised_points(result.apply(grid))
    assert set(it.index[it["restored_by"] == "switching"]) <= live
    assert not set(it.index[it["restored_by"] == "repair"]) & live
    assert it.at["load_0", "restored_by"] == "repair"
