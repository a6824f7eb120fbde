"""GiST indexes on the geometry columns that lacked one: switches, terrain extents, LoD2 shells.

Every geometry column is searched spatially somewhere (bbox queries of the OGC collections, the tiler,
"which DEM covers this building"); without a GiST index each of those is a sequential scan.
``tests/test_db_schema.py`` checks that every geometry column of the schema has one.

Revision ID: 0004
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# (index, table, column)
INDEXES = (
    ("grid_switches_geom_gist", "grid_switches", "geom"),
    ("terrain_extent_gist", "terrain", "extent"),
    ("buildings_lod2_gist", "buildings", "lod2"),
)


def upgrade() -> None:
    for index, table, column in INDEXES:
        op.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {table} USING gist ({column})")


def downgrade() -> None:
    for index, _, _ in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {index}")
