"""Readers of electric distribution grids into :class:`~citytwin.models.grid.tables.GridTables`.

* :func:`read_rbts` - an RBTS-style CSV folder (``sections.csv``, ``ties.csv``, ``components.csv``,
  ``load_points.csv``), e.g. RBTS Bus 2 (Allan et al., IEEE Trans. Power Systems 6(2), 1991).
* :func:`read_pandapower` - a pandapower JSON network (``pandapower.from_json``).
* :func:`read_grid` - dispatch on what the path is (adds the synthetic city's GeoPackage grid).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from citytwin.errors import InputError
from citytwin.models.grid.tables import GridTables

RBTS_FILES = {
    "sections.csv": ("section", "from_node", "to_node", "length_km", "fuse_or_breaker_at", "disconnector_at",
                     "distribution_transformers"),
    "ties.csv": ("tie", "end_1", "end_2", "switching_time_h"),
    "components.csv": ("component", "failure_rate_per_year", "failure_rate_unit", "repair_time_h"),
    "load_points.csv": ("load_point", "avg_load_mw", "peak_load_mw", "customers", "feeder"),
}
DEVICE_PLACES = ("upstream_end", "downstream_end", "none")


def read_grid(path: str | Path) -> GridTables:
    """Read a grid from a folder of RBTS CSVs, a pandapower ``.json`` or a citytwin grid ``.gpkg``.

    Raises
    ------
    InputError
        When the path is none of these (naming what was expected).
    """
    path = Path(path)
    if path.is_dir():
        if (path / "sections.csv").exists():
            return read_rbts(path)
        raise InputError(f"{path} is a folder without sections.csv; expected an RBTS-style grid folder")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return read_pandapower(path)
    if suffix == ".gpkg":
        from citytwin.io.grid_gpkg import read_grid_gpkg

        return read_grid_gpkg(path)
    raise InputError(f"cannot read a grid from {path.name!r}: expected an RBTS folder (with sections.csv), "
                     f"a pandapower .json or a citytwin grid .gpkg")


# ---------------------------------------------------------------------------------------- RBTS
def _read_csv(folder: Path, name: str) -> pd.DataFrame:
    path = folder / name
    if not path.exists():
        raise InputError(f"RBTS grid folder {folder} has no {name}")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from exc
    missing = [c for c in RBTS_FILES[name] if c not in frame.columns]
    if missing:
        raise InputError(f"{path} lacks column(s) {', '.join(missing)}")
    return frame


def _numbers(frame: pd.DataFrame, column: str, path: str, key: str) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | (values < 0)
    if bad.any():
        row = frame[bad].iloc[0]
        raise InputError(f"{path}: {row[key]!r} has {column} {row[column]!r}; expected a number >= 0")
    return values.astype(float)


def _voltages(name: str) -> list[float]:
    """Voltages in kV from a component name such as ``transformer_11_0.415kV`` or ``line_11kV``."""
    match = re.search(r"(\d+(?:\.\d+)?)(?:_(\d+(?:\.\d+)?))?kV", name)
    return [float(g) for g in match.groups() if g] if match else []


def _rbts_components(frame: pd.DataFrame, folder: Path) -> tuple[pd.Series, pd.Series]:
    """(line class row, transformer class row) from components.csv."""
    path = f"{folder / 'components.csv'}"
    frame = frame.assign(rate=_numbers(frame, "failure_rate_per_year", path, "component"),
                         repair=_numbers(frame, "repair_time_h", path, "component"))
    unit = frame["failure_rate_unit"].str.strip().str.lower()
    lines = frame[unit == "per km"]
    if len(lines) != 1:
        raise InputError(f"{path}: expected exactly one component with failure_rate_unit 'per km' (the line "
                         f"class), found {len(lines)}")
    tx = frame[(unit == "per unit") & frame["component"].str.lower().str.startswith("transformer")]
    if len(tx) != 1:
        raise InputError(f"{path}: expected exactly one 'transformer...' component with failure_rate_unit "
                         f"'per unit', found {len(tx)}")
    return lines.iloc[0], tx.iloc[0]


def read_rbts(folder: str | Path) -> GridTables:
    """Read an RBTS-style distribution system (e.g. RBTS Bus 2) into GridTables.

    Mapping (see the folder's README): a protective device at a section's upstream end is the
    feeder *breaker* when the section leaves a source node, else a *fuse*; a disconnector there is
    a *disconnector*; each device sits between the upstream node and a new node ``<section>_up``
    (``<section>_down`` for devices at the downstream end). Sections fail at the per-km rate of the
    line class of ``components.csv`` times their length. A section with distribution transformers
    ends at a transformer node ``<load point>_tx`` (failure rate and repair time of the transformer
    class, times the count) that feeds the load point through a zero-length LV connection
    ``<load point>_lv``; load points are service points with customers, average and peak load.
    Ties are normally-open switches. RBTS uses one switching time for every manual action, so
    breakers, fuses and disconnectors get the ties' switching time (1 h in RBTS Bus 2).
    The grid has no coordinates (``crs`` None).
    """
    folder = Path(folder)
    sections = _read_csv(folder, "sections.csv")
    ties = _read_csv(folder, "ties.csv")
    line_cls, tx_cls = _rbts_components(_read_csv(folder, "components.csv"), folder)
    lps = _read_csv(folder, "load_points.csv")
    spath, lpath = str(folder / "sections.csv"), str(folder / "load_points.csv")
    sections = sections.assign(length=_numbers(sections, "length_km", spath, "section"),
                               n_tx=_numbers(sections, "distribution_transformers", spath, "section").astype(int))
    for column in ("fuse_or_breaker_at", "disconnector_at"):
        bad = ~sections[column].str.strip().str.lower().isin(DEVICE_PLACES)
        if bad.any():
            row = sections[bad].iloc[0]
            raise InputError(f"{spath}: section {row['section']!r} has {column} {row[column]!r}; "
                             f"expected one of {', '.join(DEVICE_PLACES)}")
    tie_time = _numbers(ties, "switching_time_h", str(folder / "ties.csv"), "tie")
    switch_time = float(tie_time.max()) if len(tie_time) else 1.0
    mv_kv = (_voltages(line_cls["component"]) or [np.nan])[0]
    tx_kv = _voltages(tx_cls["component"])
    lv_kv = tx_kv[1] if len(tx_kv) > 1 else np.nan
    lp = lps.set_index("load_point")
    lp_customers = _numbers(lps, "customers", lpath, "load_point").set_axis(lps["load_point"])
    lp_avg = _numbers(lps, "avg_load_mw", lpath, "load_point").set_axis(lps["load_point"])
    lp_peak = _numbers(lps, "peak_load_mw", lpath, "load_point").set_axis(lps["load_point"])

    downstream = set(sections["to_node"])
    sources = sorted(set(sections["from_node"]) - downstream)
    nodes: dict[str, dict] = {}

    def node(node_id: str, kind: str, voltage: float, **extra) -> None:
        if node_id not in nodes:
            nodes[node_id] = {"node_id": node_id, "kind": kind, "name": node_id, "voltage_kv": voltage, **extra}

    for s in sources:
        node(s, "source", mv_kv)
    sec_rows, sw_rows = [], []

    def device(sec: pd.Series, kind: str, a: str, b: str) -> None:
        sw_rows.append({"switch_id": f"{sec['section']}_{kind}", "kind": kind, "from_node": a, "to_node": b,
                        "normal_state": "closed", "present_state": "closed", "switching_time_h": switch_time})

    for _, sec in sections.iterrows():
        sid, a, b = sec["section"], sec["from_node"], sec["to_node"]
        place = {"fuse_or_breaker": sec["fuse_or_breaker_at"].strip().lower(),
                 "disconnector": sec["disconnector_at"].strip().lower()}
        prot_kind = "breaker" if a in sources else "fuse"
        start = a
        for i, (what, kind) in enumerate((("fuse_or_breaker", prot_kind), ("disconnector", "disconnector"))):
            if place[what] == "upstream_end":
                mid = f"{sid}_up" if start == a else f"{sid}_up{i}"
                node(mid, "bus", mv_kv)
                device(sec, kind, start, mid)
                start = mid
        end = b
        if b in lp.index:
            node(b, "service_point", lv_kv if sec["n_tx"] > 0 else mv_kv, customers=lp_customers[b],
                 load_mw=lp_avg[b], peak_load_mw=lp_peak[b], feeder=lp.at[b, "feeder"],
                 customer_type=lp.at[b, "customer_type"] if "customer_type" in lp.columns else None)
        else:
            node(b, "bus", mv_kv)
        if sec["n_tx"] > 0:
            tx = f"{b}_tx"
            node(tx, "transformer", mv_kv, failure_rate=float(tx_cls["rate"]) * sec["n_tx"],
                 repair_time_h=float(tx_cls["repair"]), component_class=tx_cls["component"])
            sec_rows.append({"section_id": f"{b}_lv", "from_node": tx, "to_node": b, "length_km": 0.0})
            end = tx
        downs = [w for w in ("fuse_or_breaker", "disconnector") if place[w] == "downstream_end"]
        for i, what in enumerate(downs):
            mid = f"{sid}_down" if i == 0 else f"{sid}_down{i}"
            node(mid, "bus", mv_kv)
            device(sec, prot_kind if what == "fuse_or_breaker" else "disconnector", mid, end)
            end = mid
        sec_rows.append({"section_id": sid, "from_node": start, "to_node": end, "length_km": sec["length"],
                         "failure_rate": float(line_cls["rate"]) * sec["length"],
                         "repair_time_h": float(line_cls["repair"]), "component_class": line_cls["component"]})
    for _, tie in ties.iterrows():
        sw_rows.append({"switch_id": tie["tie"], "kind": "tie", "from_node": tie["end_1"], "to_node": tie["end_2"],
                        "normal_state": "open", "present_state": "open",
                        "switching_time_h": float(tie["switching_time_h"])})
    missing = sorted(set(lp.index) - set(nodes))
    if missing:
        raise InputError(f"{lpath}: load point(s) {', '.join(missing[:5])} are not the end of any section")
    grid = GridTables(nodes=pd.DataFrame(list(nodes.values())), sections=pd.DataFrame(sec_rows),
                      switches=pd.DataFrame(sw_rows), crs=None, name=folder.name)
    _label_feeders(grid)
    return grid


def _label_feeders(grid: GridTables) -> None:
    """Give sections, switches and unlabelled nodes the feeder of the load points they supply.

    Each feeder head (breaker) takes the label most of the load points below it carry.
    """
    from citytwin.models.grid.topology import Topology

    topo = Topology.from_grid(grid, "normal")
    heads = topo.feeder_labels(use_table=False)
    labels = grid.nodes["feeder"].astype(object).where(grid.nodes["feeder"].notna(), None).to_numpy(object)
    known = pd.notna(labels) & pd.notna(heads)
    pairs = pd.DataFrame({"head": heads[known], "label": labels[known]})
    name_of = pairs.groupby("head")["label"].agg(lambda s: s.mode().iloc[0]).to_dict()
    node_feeder = np.array([labels[i] if pd.notna(labels[i]) else name_of.get(h, h) for i, h in enumerate(heads)],
                           dtype=object)
    grid.nodes["feeder"] = pd.Series(node_feeder, dtype="string")
    # An edge belongs to the feeder of its downstream end; open ties belong to none.
    lower = np.where(topo.pos[topo.edge_u] > topo.pos[topo.edge_v], topo.edge_u, topo.edge_v)
    edge_feeder = np.where(topo.edge_closed, node_feeder[lower], None)
    grid.sections["feeder"] = pd.Series(edge_feeder[: topo.n_sections], dtype="string")
    grid.switches["feeder"] = pd.Series(edge_feeder[topo.n_sections:], dtype="string")


# ---------------------------------------------------------------------------------- pandapower
PP_SWITCH_KINDS = {"CB": "breaker", "LBS": "disconnector", "LS": "disconnector", "DS": "disconnector"}


def _pp_point(geo) -> tuple[float, float]:
    if isinstance(geo, str) and geo:
        coords = json.loads(geo).get("coordinates") or [np.nan, np.nan]
        return float(coords[0]), float(coords[1])
    return np.nan, np.nan


def _pp_line(geo):
    import shapely

    if isinstance(geo, str) and geo:
        coords = json.loads(geo).get("coordinates") or []
        if len(coords) >= 2:
            return shapely.linestrings(np.asarray(coords, float)[:, :2])
    return None


def _pp_bus_xy(net) -> pd.DataFrame:
    """Bus coordinates: pandapower 3 ``bus.geo`` (GeoJSON) or pandapower 2 ``bus_geodata``."""
    if "geo" in net.bus.columns:
        xy = [_pp_point(g) for g in net.bus["geo"]]
        return pd.DataFrame(xy, index=net.bus.index, columns=["x", "y"])
    geodata = getattr(net, "bus_geodata", None)
    if geodata is not None and len(geodata):
        return geodata[["x", "y"]].reindex(net.bus.index).astype(float)
    return pd.DataFrame({"x": np.nan, "y": np.nan}, index=net.bus.index)


def read_pandapower(path: str | Path) -> GridTables:
    """Read a pandapower JSON network into GridTables.

    Mapping: in-service buses -> nodes ``bus_<i>`` (the bus of an in-service ``ext_grid`` or
    slack ``gen`` is a *source*); lines -> sections ``line_<i>`` (length, rating
    sqrt(3) * vn_kv * max_i_ka * parallel * df in MVA, geometry from ``line.geo``); transformers
    -> nodes ``trafo_<i>`` (kind *substation* when the LV side is above 1 kV, else *transformer*;
    rating sn_mva * parallel) joined to their buses by zero-length sections ``trafo_<i>_hv`` and
    ``trafo_<i>_lv``; loads -> service points ``load_<i>`` (one customer each, ``load_mw`` =
    p_mw * scaling, ``peak_load_mw`` = p_mw) joined by zero-length sections ``load_<i>_conn``.
    Switches -> ``switch_<i>``: CB -> breaker, LBS/LS/DS -> disconnector, and every open switch a
    normally-open *tie*. A bus-line (et 'l') or bus-trafo (et 't') switch sits between the bus and
    a new node ``switch_<i>_node`` that the line or transformer connects to; bus-bus switches join
    the two buses. Out-of-service elements are left out. Failure rates and repair times are not in
    pandapower (NaN: set them with overrides). Generation (sgen) is not modelled (no islanding).

    Coordinates stay as stored: bus geodata in WGS84 give ``crs = 'EPSG:4326'`` (x = lon,
    y = lat); the twin reprojects to its metric CRS on import. Coordinates outside lon/lat range
    (e.g. the IEEE European LV feeder's local metres) give ``crs = None``.
    """
    path = Path(path)
    try:
        import pandapower as pp

        net = pp.from_json(str(path))
    except ImportError as exc:
        raise InputError("reading pandapower networks needs the 'pandapower' package") from exc
    except Exception as exc:  # pandapower raises many types for a bad file
        raise InputError(f"{path}: not a readable pandapower JSON network ({type(exc).__name__}: {exc})") from exc
    if "trafo3w" in net and len(net.trafo3w) and net.trafo3w["in_service"].any():
        raise InputError(f"{path}: three-winding transformers (trafo3w) are not supported")
    bus = net.bus[net.bus["in_service"].astype(bool)]
    xy = _pp_bus_xy(net).reindex(bus.index)
    slack = set(net.ext_grid.loc[net.ext_grid["in_service"].astype(bool), "bus"])
    if len(net.gen) and "slack" in net.gen.columns:
        slack |= set(net.gen.loc[net.gen["in_service"].astype(bool) & net.gen["slack"].astype(bool), "bus"])
    nodes = pd.DataFrame({"node_id": [f"bus_{i}" for i in bus.index],
                          "kind": ["source" if i in slack else "bus" for i in bus.index],
                          "name": bus["name"].astype(object).where(bus["name"].notna(), None).to_numpy(),
                          "voltage_kv": bus["vn_kv"].to_numpy(float), "x": xy["x"].to_numpy(), "y": xy["y"].to_numpy()})
    bus_xy = {f"bus_{i}": (x, y) for i, x, y in zip(bus.index, xy["x"], xy["y"])}
    bus_kv = dict(zip(nodes["node_id"], nodes["voltage_kv"]))
    extra_nodes, sections, switches = [], [], []
    # Element ends that a switch moves off the bus: (element type, element, bus) -> inserted node.
    end_node: dict[tuple[str, int, int], str] = {}
    for i, sw in net.switch.iterrows():
        b = int(sw["bus"])
        if f"bus_{b}" not in bus_kv:
            continue
        kind = "tie" if not bool(sw["closed"]) else PP_SWITCH_KINDS.get(str(sw.get("type")), "disconnector")
        state = "closed" if bool(sw["closed"]) else "open"
        if sw["et"] == "b":
            other = f"bus_{int(sw['element'])}"
            if other not in bus_kv:
                continue
        elif sw["et"] in ("l", "t"):
            other = f"switch_{i}_node"
            end_node[(sw["et"], int(sw["element"]), b)] = other
            extra_nodes.append({"node_id": other, "kind": "bus", "name": f"{sw.get('name') or i} end",
                                "voltage_kv": bus_kv[f"bus_{b}"], "x": bus_xy[f"bus_{b}"][0],
                                "y": bus_xy[f"bus_{b}"][1]})
        else:
            continue
        switches.append({"switch_id": f"switch_{i}", "kind": kind, "from_node": f"bus_{b}", "to_node": other,
                         "normal_state": state, "present_state": state, "component_class": str(sw.get("type"))})

    def end(et: str, element: int, b: int) -> str:
        return end_node.get((et, element, b), f"bus_{b}")

    live = net.line[net.line["in_service"].astype(bool)]
    geo = live["geo"] if "geo" in live.columns else pd.Series(None, index=live.index)
    for i, ln in live.iterrows():
        a, b = int(ln["from_bus"]), int(ln["to_bus"])
        if f"bus_{a}" not in bus_kv or f"bus_{b}" not in bus_kv:
            continue
        rating = np.sqrt(3) * bus_kv[f"bus_{a}"] * ln["max_i_ka"] * ln.get("parallel", 1) * ln.get("df", 1.0)
        sections.append({"section_id": f"line_{i}", "from_node": end("l", i, a), "to_node": end("l", i, b),
                         "length_km": float(ln["length_km"]), "rating_mva": float(rating),
                         "component_class": ln.get("std_type"), "geometry": _pp_line(geo.get(i))})
    for i, tr in net.trafo[net.trafo["in_service"].astype(bool)].iterrows():
        hv, lv = int(tr["hv_bus"]), int(tr["lv_bus"])
        if f"bus_{hv}" not in bus_kv or f"bus_{lv}" not in bus_kv:
            continue
        tid = f"trafo_{i}"
        extra_nodes.append({"node_id": tid, "kind": "substation" if tr["vn_lv_kv"] > 1.0 else "transformer",
                            "name": tr.get("name"), "voltage_kv": float(tr["vn_lv_kv"]),
                            "rating_mva": float(tr["sn_mva"] * tr.get("parallel", 1)),
                            "component_class": tr.get("std_type"),
                            "x": bus_xy[f"bus_{lv}"][0], "y": bus_xy[f"bus_{lv}"][1]})
        sections.append({"section_id": f"{tid}_hv", "from_node": end("t", i, hv), "to_node": tid, "length_km": 0.0})
        sections.append({"section_id": f"{tid}_lv", "from_node": tid, "to_node": end("t", i, lv), "length_km": 0.0})
    for i, ld in net.load[net.load["in_service"].astype(bool)].iterrows():
        b = f"bus_{int(ld['bus'])}"
        if b not in bus_kv:
            continue
        lid = f"load_{i}"
        extra_nodes.append({"node_id": lid, "kind": "service_point", "name": ld.get("name"),
                            "voltage_kv": bus_kv[b], "customers": 1,
                            "load_mw": float(ld["p_mw"] * ld.get("scaling", 1.0)), "peak_load_mw": float(ld["p_mw"]),
                            "component_class": ld.get("type"), "x": bus_xy[b][0], "y": bus_xy[b][1]})
        sections.append({"section_id": f"{lid}_conn", "from_node": b, "to_node": lid, "length_km": 0.0})
    nodes = pd.concat([nodes, pd.DataFrame(extra_nodes)], ignore_index=True)
    finite = nodes[["x", "y"]].dropna()
    geographic = len(finite) > 0 and finite["x"].abs().le(180).all() and finite["y"].abs().le(90).all()
    name = net.name if isinstance(getattr(net, "name", None), str) and net.name else path.stem
    grid = GridTables(nodes=nodes, sections=pd.DataFrame(sections), switches=pd.DataFrame(switches),
                      crs="EPSG:4326" if geographic else None, name=name)
    from citytwin.models.grid.topology import Topology

    topo = Topology.from_grid(grid, "normal")
    grid.nodes["feeder"] = pd.Series(topo.feeder_labels(), dtype="string")
    feeders = grid.nodes["feeder"].to_numpy(object)
    lower = np.where(topo.pos[topo.edge_u] > topo.pos[topo.edge_v], topo.edge_u, topo.edge_v)
    edge_feeder = np.where(topo.edge_closed, feeders[lower], None)
    grid.sections["feeder"] = pd.Series(edge_feeder[: topo.n_sections], dtype="string")
    grid.switches["feeder"] = pd.Series(edge_feeder[topo.n_sections:], dtype="string")
    return grid
