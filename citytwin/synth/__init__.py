"""Deterministic synthetic cities of any size: street blocks, buildings, terrain, an electric grid, sensors.

``generate_city(n_buildings, seed, out_dir)`` writes standard files (GeoPackage, GeoTIFF, JSON) that
the importers read; see :mod:`citytwin.synth.city`.
"""

from __future__ import annotations

from citytwin.synth.city import generate_city

__all__ = ["generate_city"]
