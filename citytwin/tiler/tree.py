"""The spatial tree of a tileset: a kd-tree on building positions, fanning out 2-4 children per node.

Each split cuts a node's buildings at the median along the longer side of their bounding box, so leaves hold
between about ``max_features / 2`` and ``max_features`` buildings however clustered the city is (a regular
quadtree would leave dense centres with overfull tiles and suburbs with near-empty ones). Two successive
binary cuts are merged into one level, giving quadtree-like fan-out and depth ``~log4(n / max_features)``.

Only index arrays live here; geometry never enters the tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Node:
    """A tile of the tree: leaves hold ``rows`` (positions in the input arrays), inner nodes ``children``."""

    address: str
    rows: np.ndarray | None = None
    children: list["Node"] = field(default_factory=list)

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def leaves(self) -> list["Node"]:
        """Leaves in depth-first order: consecutive leaves are spatial neighbours."""
        out: list[Node] = []
        stack = [self]
        while stack:
            node = stack.pop()
            if node.is_leaf:
                out.append(node)
            else:
                stack.extend(reversed(node.children))
        return out

    def walk(self):
        """Every node, parents before children."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))


def _halve(rows: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    px, py = x[rows], y[rows]
    values = px if (px.max() - px.min()) >= (py.max() - py.min()) else py
    mid = len(rows) // 2
    order = np.argpartition(values, mid)
    return rows[order[:mid]], rows[order[mid:]]


def build_tree(x: np.ndarray, y: np.ndarray, max_features: int = 1000) -> Node:
    """A kd-tree over points (x, y) with at most ``max_features`` points per leaf.

    Parameters
    ----------
    x, y
        Representative point of each building (any metric CRS), shape (n,).
    max_features
        Upper bound of buildings per leaf tile.
    """
    if max_features < 1:
        raise ValueError("max_features must be >= 1")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    root = Node("r", rows=np.arange(len(x)))
    stack = [root]
    while stack:
        node = stack.pop()
        rows = node.rows
        if rows is None or len(rows) <= max_features:
            continue
        parts = []
        for half in _halve(rows, x, y):
            parts.extend(_halve(half, x, y) if len(half) > max_features else [half])
        node.rows = None
        node.children = [Node(f"{node.address}{i}", rows=part) for i, part in enumerate(parts)]
        stack.extend(node.children)
    return root


def partition_leaves(leaves: list[Node], target_rows: int) -> list[list[Node]]:
    """Group consecutive (spatially adjacent) leaves into work units of about ``target_rows`` buildings."""
    groups: list[list[Node]] = []
    current: list[Node] = []
    count = 0
    for leaf in leaves:
        current.append(leaf)
        count += len(leaf.rows)
        if count >= target_rows:
            groups.append(current)
            current, count = [], 0
    if current:
        groups.append(current)
    return groups
