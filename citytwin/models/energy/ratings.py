"""Capacities of the grid assets that building demand is summed onto, from the grid tables.

:func:`citytwin.models.energy.aggregate` flags an asset as overloaded when its peak exceeds its
rating. Transformers and substations carry ``rating_mva`` on their node. A feeder is not a node:
it is the set of nodes below one feeder-head device (:meth:`Topology.feeder_labels`, the same
labels :func:`citytwin.models.grid.assignments` gives buildings), and the grid tables give
switches (the head breaker) no rating. Its capacity is taken from the *head sections*: the
sections through which all of the feeder's load leaves the substation, i.e. the sections whose
downstream node is in the feeder with no other section between them and the feeder's top:

    rating_F = sum_{s in head(F)} rating_s                                          [MVA]

Several head sections (cables leaving the head bus in parallel, or branches starting right at
it) share the feeder's load, so their ratings add. This is the thermal limit of the feeder's
first cable(s) (e.g. 240 mm2 Al XLPE at 20 kV ~ 12 MVA); a branch can still overload below the
feeder's total, which this single figure per feeder does not see. A head section without a
rating makes the feeder's rating unknown (NaN: never flagged).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def feeder_ratings(grid, topology=None) -> pd.Series:
    """Rating of every feeder from its head sections (MVA, NaN = unknown), indexed by feeder id.

    Parameters
    ----------
    grid : :class:`citytwin.models.grid.tables.GridTables`
    topology : its :class:`citytwin.models.grid.topology.Topology` in the normal switch state
        (built when not given).
    """
    from citytwin.models.grid.topology import Topology

    topo = topology if topology is not None else Topology.from_grid(grid, "normal")
    labels = topo.feeder_labels().tolist()
    parent, parent_edge = topo.parent.tolist(), topo.parent_edge.tolist()
    energised = topo.energised.tolist()
    n_sections = topo.n_sections
    section_above = [False] * topo.n_nodes  # a section lies between the node and its feeder's top
    heads: dict[str, list[int]] = {}
    for x in topo.order.tolist():  # preorder: parents before children
        label = labels[x]
        if label is None or not energised[x]:
            continue
        p, e = parent[x], parent_edge[x]
        inside = p >= 0 and labels[p] == label
        above = section_above[p] if inside else False
        is_section = 0 <= e < n_sections
        if is_section and not above:
            heads.setdefault(str(label), []).append(e)
        section_above[x] = above or is_section
    feeders = sorted({str(lb) for lb, on in zip(labels, energised, strict=True) if lb is not None and on})
    rating = grid.sections["rating_mva"].to_numpy(np.float64)
    values = [
        float(rating[heads[f]].sum()) if f in heads and not np.isnan(rating[heads[f]]).any() else np.nan
        for f in feeders
    ]
    return pd.Series(values, index=pd.Index(feeders, name="feeder"), name="rating_mva", dtype=np.float64)


def asset_ratings(grid, topology=None) -> pd.Series:
    """Known ratings (MVA) of the grid's nodes (transformers, substations) and of its feeders.

    The Series :func:`citytwin.models.energy.aggregate` takes as ``ratings`` (unit "MVA"); assets
    without a rating are left out. A feeder id that is also a node id keeps the node's rating.
    """
    nodes = grid.nodes.set_index(grid.nodes["node_id"].astype(str))["rating_mva"].astype(np.float64)
    feeders = feeder_ratings(grid, topology) if len(grid.nodes) else pd.Series(dtype=np.float64)
    both = pd.concat([nodes.dropna(), feeders.dropna()])
    both = both[(both.to_numpy() > 0) & ~both.index.duplicated(keep="first")]  # <= 0: no rating
    both.index.name = "asset"
    return both.rename("rating_mva")
