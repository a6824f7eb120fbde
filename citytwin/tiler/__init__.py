"""3D Tiles 1.1 from the twin's buildings: meshes, glb with feature metadata, tileset.json.

Entry points: :func:`build_tileset` (from a GeoDataFrame), :func:`build_from_twin` (from PostGIS) and
:func:`build_tiles` (what the CLI calls).
"""

from __future__ import annotations

from citytwin.tiler.build import BuildResult, build_tileset

__all__ = ["BuildResult", "build_tileset", "build_from_twin", "build_tiles"]


def __getattr__(name: str):
    # The database path imports SQLAlchemy lazily: the GeoDataFrame path must work without it.
    if name in ("build_from_twin", "build_tiles"):
        from citytwin.tiler import source

        return getattr(source, name)
    raise AttributeError(name)
