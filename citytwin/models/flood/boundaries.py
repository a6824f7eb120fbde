"""Boundary conditions at the border of the DEM.

A side of the grid is one of

* ``"closed"``: a wall, no flow;
* ``"open"``: free outflow; the water-surface slope towards the border is continued past it
  (zero curvature), so water leaves as it arrives and a lake at rest stays at rest; no inflow;
* a number or a time series: a fixed water-surface elevation (m, same datum as the DEM) behind
  the border, like a river or the sea; water flows in or out.

``boundary`` is one of these for all four sides, or a dict with keys ``north``, ``south``,
``east``, ``west``; sides missing from the dict are closed. Nodata cells and obstacles inside
the grid are always walls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from citytwin.errors import InputError

from .forcing import as_time_series, linear_at
from .kernels import CLOSED, LEVEL, OPEN
from .validate import Grid

SIDES = ("north", "south", "west", "east")


@dataclass
class Boundaries:
    """Boundary conditions in array order: first row, last row, first column, last column."""

    kinds: np.ndarray  # int64 codes (kernels.CLOSED / OPEN / LEVEL)
    levels: list[tuple[np.ndarray, np.ndarray] | None]  # (times s, water level m) for LEVEL sides

    def levels_at(self, t: np.ndarray) -> np.ndarray:
        """Water levels of the four sides at times ``t``: shape (len(t), 4); NaN where not LEVEL."""
        out = np.full((len(t), 4), np.nan)
        for side, series in enumerate(self.levels):
            if series is not None:
                out[:, side] = linear_at(series[0], series[1], t)
        return out

    @property
    def any_open(self) -> bool:
        return bool(np.any(self.kinds != CLOSED))


def _side(spec: Any, name: str) -> tuple[int, tuple[np.ndarray, np.ndarray] | None]:
    if isinstance(spec, str):
        if spec == "closed":
            return CLOSED, None
        if spec == "open":
            return OPEN, None
        raise InputError(f"boundary {name}: {spec!r} is not 'closed', 'open', or a water level (m)")
    times, values = as_time_series(spec, f"boundary {name} level", "m")
    return LEVEL, (times, values)


def parse_boundary(boundary: Any, grid: Grid) -> Boundaries:
    """Boundary conditions from the user's specification (see the module docstring)."""
    if isinstance(boundary, dict):
        unknown = set(boundary) - set(SIDES)
        if unknown:
            raise InputError(f"boundary: unknown side(s) {sorted(unknown)}; use {list(SIDES)}")
        specs = {side: boundary.get(side, "closed") for side in SIDES}
    else:
        specs = {side: boundary for side in SIDES}
    kinds = np.zeros(4, dtype="int64")
    levels: list[tuple[np.ndarray, np.ndarray] | None] = [None] * 4
    index = grid.side_index()
    for side, spec in specs.items():
        kind, series = _side(spec, side)
        kinds[index[side]] = kind
        levels[index[side]] = series
    return Boundaries(kinds, levels)
