"""Bad grids and bad inputs: clear InputErrors naming the element; small hand-checked grids."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from citytwin.errors import InputError
from citytwin.io.grids import read_grid, read_rbts
from citytwin.models.grid import (
    GridTables,
    ImpactTable,
    Topology,
    apply_overrides,
    assignments,
    failures_from_event,
    outage,
    reliability_report,
    restore,
    sample_failures,
    validate_grid,
)
from _paths import SHARED_DATA

RBTS = SHARED_DATA / "rbts_bus2"


def small_grid(**changes) -> GridTables:
    """S -breaker- A -section- B -disconnector- C -section- D(service point); tie from D to E on a 2nd feeder.

    ::

        S --brk1-- A ==L1== B --dis1-- C ==L2== D (sp, 10 cust)
        S --brk2-- F ==L3== E (sp, 5 cust) --tie-- D
    """
    nodes = pd.DataFrame([
        ("S", "source", 0, 0.0), ("A", "bus", 0, 0.0), ("B", "bus", 0, 0.0), ("C", "bus", 0, 0.0),
        ("D", "service_point", 10, 2.0), ("F", "bus", 0, 0.0), ("E", "service_point", 5, 1.0),
    ], columns=["node_id", "kind", "customers", "load_mw"])
    sections = pd.DataFrame([("L1", "A", "B", 1.0, 0.1, 4.0), ("L2", "C", "D", 1.0, 0.2, 6.0),
                             ("L3", "F", "E", 1.0, 0.1, 4.0)],
                            columns=["section_id", "from_node", "to_node", "length_km", "failure_rate", "repair_time_h"])
    switches = pd.DataFrame([("brk1", "breaker", "S", "A", "closed"), ("dis1", "disconnector", "B", "C", "closed"),
                             ("brk2", "breaker", "S", "F", "closed"), ("tie", "tie", "D", "E", "open")],
                            columns=["switch_id", "kind", "from_node", "to_node", "normal_state"])
    switches["present_state"] = switches["normal_state"]
    switches["switching_time_h"] = 0.5
    connections = pd.DataFrame(columns=["building_id", "node_id", "customers"])
    tables = {"nodes": nodes, "sections": sections, "switches": switches, "connections": connections}
    for name, fn in changes.items():
        tables[name] = fn(tables[name].copy())
    return GridTables(**tables, name="small")


def test_small_grid_by_hand():
    grid = small_grid()
    validate_grid(grid)
    # L1 fault: brk1 trips A..D; dis1 isolates; D is back-fed from the brk2 feeder through the tie
    result = restore(grid, ["L1"])
    assert result.plan[["action", "switch_id"]].values.tolist() == [["trip", "brk1"], ["open", "dis1"],
                                                                    ["close", "tie"]]
    assert result.interruptions.set_index("node_id").at["D", "interruption_h"] == 0.5
    # analytical: D sees L1 (restored by switching, 0.5 h) and L2 (repair 6 h); E sees L3 (4 h)
    report = reliability_report(grid)
    d = report["load_points"]["D"]
    assert d["failure_rate"] == pytest.approx(0.1 + 0.2)
    assert d["unavailability_h"] == pytest.approx(0.1 * 0.5 + 0.2 * 6.0)
    assert report["load_points"]["E"]["unavailability_h"] == pytest.approx(0.1 * 4.0)
    assert report["system"]["SAIDI"] == pytest.approx((10 * 1.25 + 5 * 0.4) / 15)
    assert report["system"]["ENS"] == pytest.approx(2.0 * 1.25 + 1.0 * 0.4)
    # no room on the brk2 feeder: the tie stays open and D waits for the repair of L1
    tight = apply_overrides(grid, ["L3.rating_mva=1.5"])
    assert restore(tight, ["L1"]).interruptions.set_index("node_id").at["D", "interruption_h"] == 4.0
    assert reliability_report(tight)["load_points"]["D"]["unavailability_h"] == pytest.approx(0.1 * 4 + 0.2 * 6)


def test_momentary_restorations_count_in_maifi_not_saifi():
    grid = apply_overrides(small_grid(), ["tie.switching_time_h=0.05", "dis1.switching_time_h=0.05"])
    report = reliability_report(grid)
    assert report["load_points"]["D"]["failure_rate"] == pytest.approx(0.2)     # L1 is now momentary for D
    assert report["system"]["MAIFI"] == pytest.approx(0.1 * 10 / 15)


def test_impact_table_and_outage():
    grid = small_grid()
    topo = Topology.from_grid(grid, "normal")
    table = ImpactTable.build(topo).table().set_index("asset_id")
    assert table.at["L1", "clearing_device"] == "brk1"
    assert table.at["L1", "customers_unsupplied"] == 10 and table.at["L1", "customers_tripped"] == 10
    assert table.at["L3", "customers_tripped"] == 5
    impact = ImpactTable.build(topo)
    assert impact.service_points(impact.index_of("L1")).tolist() == ["D"]
    out = outage(grid, ["L2"])
    assert out.clearing["device_id"].tolist() == ["brk1"] and out.customers == 10 and out.load_mw == 2.0
    assert set(out.nodes) == {"A", "B", "C", "D"}


def test_assignments_with_buildings():
    grid = small_grid(connections=lambda c: pd.DataFrame({"building_id": ["b1", "b2"], "node_id": ["D", "D"],
                                                          "customers": [4, 6]}))
    table = assignments(grid)
    linked = table[table["building_id"].notna()].set_index("building_id")
    assert linked.loc["b1", ["service_point", "feeder", "substation"]].tolist() == ["D", "brk1", "S"]
    assert table.loc[table["building_id"].isna(), "service_point"].tolist() == ["E"]
    result = restore(grid, ["L2"])
    assert set(result.buildings["building_id"]) == {"b1", "b2"}


def test_loop_in_normal_state_names_the_elements():
    grid = small_grid(switches=lambda s: s.assign(normal_state="closed"))
    with pytest.raises(InputError, match="sources|loop"):
        validate_grid(grid)
    looped = small_grid(sections=lambda s: pd.concat([s, pd.DataFrame(
        [{"section_id": "L9", "from_node": "A", "to_node": "C", "length_km": 1.0}])]))
    with pytest.raises(InputError, match="loop .*'L9'|'L9'.*loop"):
        validate_grid(looped)


def test_two_sources_connected_are_rejected():
    grid = small_grid(nodes=lambda n: n.assign(kind=np.where(n["node_id"] == "F", "source", n["kind"])))
    with pytest.raises(InputError, match="sources 'S' and 'F'|sources 'F' and 'S'"):
        validate_grid(grid)


def test_dangling_section_names_the_section():
    grid = small_grid(sections=lambda s: s.assign(to_node=np.where(s["section_id"] == "L2", "X", s["to_node"])))
    with pytest.raises(InputError, match="section 'L2' names to_node 'X'"):
        validate_grid(grid)


def test_switch_with_unknown_node_names_the_switch():
    grid = small_grid(switches=lambda s: s.assign(from_node=np.where(s["switch_id"] == "dis1", "Q", s["from_node"])))
    with pytest.raises(InputError, match="switch 'dis1' names from_node 'Q'"):
        validate_grid(grid)


@pytest.mark.parametrize("change, message", [
    ({"switches": lambda s: s.assign(kind=np.where(s["switch_id"] == "tie", "valve", s["kind"]))}, "'tie' has kind 'valve'"),
    ({"sections": lambda s: s.assign(section_id=["L1", "L1", "L3"])}, "duplicate section_id 'L1'"),
    ({"sections": lambda s: s.assign(section_id=["L1", "A", "L3"])}, "'A' used twice"),
    ({"sections": lambda s: s.assign(failure_rate=[0.1, -1.0, 0.1])}, "'L2' has negative failure_rate"),
    ({"nodes": lambda n: n.assign(kind="bus")}, "no source"),
])
def test_bad_tables(change, message):
    with pytest.raises(InputError, match=message):
        validate_grid(small_grid(**change))


def test_unknown_assets_and_events():
    grid = small_grid()
    with pytest.raises(InputError, match="'nope'"):
        restore(grid, ["nope"])
    with pytest.raises(InputError, match="'nope'"):
        outage(grid, ["L1", "nope"])
    assert failures_from_event(grid, {"Equipments": [{"mRID": "L2"}]}) == ["L2"]
    assert failures_from_event(grid, {"faulted_assets": "L1"}) == ["L1"]
    with pytest.raises(InputError, match="no faulted equipment"):
        failures_from_event(grid, {"objectID": "meter-1"})
    with pytest.raises(InputError, match="'Z9'"):
        failures_from_event(grid, {"faulted_assets": ["Z9"]})


def test_sampled_failures_follow_the_rates():
    grid = apply_overrides(small_grid(), ["L1.failure_rate=0.5", "L2.failure_rate=0", "L3.failure_rate=0"])
    hits = sum("L1" in sample_failures(grid, years=1.0, seed=s) for s in range(1000))
    # P = 1 - exp(-0.5) = 0.3935; binomial sd over 1000 draws = 0.0154, 4 sd band
    assert abs(hits / 1000 - (1 - np.exp(-0.5))) < 4 * 0.0154
    assert all("L2" not in sample_failures(grid, seed=s) for s in range(50))


def test_reliability_needs_repair_times_and_a_known_method():
    grid = small_grid(sections=lambda s: s.assign(repair_time_h=[4.0, np.nan, 4.0]))
    with pytest.raises(InputError, match="'L2' has a failure rate but no repair_time_h"):
        reliability_report(grid)
    with pytest.raises(InputError, match="method"):
        reliability_report(small_grid(), method="guess")
    with pytest.raises(InputError, match="unknown grid component 'L7'"):
        reliability_report(small_grid(), overrides=["L7.failure_rate=1"])


def test_read_grid_dispatch_errors(tmp_path):
    with pytest.raises(InputError, match="without sections.csv"):
        read_grid(tmp_path)
    bad = tmp_path / "grid.txt"
    bad.write_text("x")
    with pytest.raises(InputError, match="cannot read a grid"):
        read_grid(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InputError, match="not a readable pandapower"):
        read_grid(broken)


def test_rbts_folder_errors(tmp_path):
    for name in ("sections.csv", "ties.csv", "components.csv", "load_points.csv"):
        (tmp_path / name).write_text((RBTS / name).read_text())
    read_rbts(tmp_path)
    sections = (RBTS / "sections.csv").read_text().replace("S7,B4,B5,0.75", "S7,B4,B5,long")
    (tmp_path / "sections.csv").write_text(sections)
    with pytest.raises(InputError, match="'S7' has length_km 'long'"):
        read_rbts(tmp_path)
    (tmp_path / "sections.csv").write_text((RBTS / "sections.csv").read_text())
    ties = (RBTS / "ties.csv").read_text().replace("BS2,B12,B16", "BS2,B12,B99")
    (tmp_path / "ties.csv").write_text(ties)
    with pytest.raises(InputError, match="switch 'BS2' names to_node 'B99'"):
        validate_grid(read_rbts(tmp_path))
    (tmp_path / "ties.csv").write_text("tie,end_1\nBS1,B6\n")
    with pytest.raises(InputError, match="ties.csv lacks column"):
        read_rbts(tmp_path)
    (tmp_path / "ties.csv").unlink()
    with pytest.raises(InputError, match="has no ties.csv"):
        read_rbts(tmp_path)


def test_nested_protection_recloses_only_below_live_parts():
    """brk -> L1 -> dis1 -> L2 -> fuse -> L3 (G, 4 customers) -> dis2 -> L4 (I); faults on L1 and L4.

    L1 trips the breaker and L4 the fuse. The fuse must not reclose onto the dead part above it:
    G waits for the repair of L1 (the fault above it), not for a switching time.
    """
    nodes = pd.DataFrame({"node_id": list("SABCDEGHI"),
                          "kind": ["source"] + ["bus"] * 5 + ["service_point", "bus", "service_point"],
                          "customers": [0, 0, 0, 0, 0, 0, 4, 0, 2], "load_mw": [0.0] * 6 + [1.0, 0.0, 1.0]})
    sections = pd.DataFrame({"section_id": ["L1", "L2", "L3", "L4"], "from_node": ["A", "C", "E", "H"],
                             "to_node": ["B", "D", "G", "I"], "length_km": 1.0, "failure_rate": 0.1,
                             "repair_time_h": [7.0, 3.0, 3.0, 2.0]})
    switches = pd.DataFrame({"switch_id": ["brk", "dis1", "fuse", "dis2"],
                             "kind": ["breaker", "disconnector", "fuse", "disconnector"],
                             "from_node": ["S", "B", "D", "G"], "to_node": ["A", "C", "E", "H"],
                             "normal_state": "closed", "present_state": "closed", "switching_time_h": 1.0})
    grid = GridTables(nodes=nodes, sections=sections, switches=switches, name="nested")
    result = restore(grid, ["L1", "L4"])
    trips = set(result.plan.query("action == 'trip'")["switch_id"])
    assert trips == {"brk", "fuse"}
    assert not (result.plan["purpose"] == "reclose").any()
    it = result.interruptions.set_index("node_id")
    assert it.at["G", "restored_by"] == "repair" and it.at["G", "interruption_h"] == 7.0
    assert it.at["I", "interruption_h"] == 7.0          # its own repair (2 h) and L1's above it (7 h)
    after = Topology.from_grid(result.apply(grid), "present")
    assert not after.energised[after.node_index().get_loc("G")]
