"""The schema on the real PostGIS: twin CRS pinning, constraints, partitions, idempotent keys, spatial
indexes."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError, IntegrityError

from citytwin.db.migrate import MIGRATIONS
from citytwin.db.twin import get_twin, init_twin
from citytwin.errors import ConflictError, InputError


def test_twin_crs_is_chosen_once_and_enforced(engine) -> None:
    with engine.begin() as conn:
        twin = init_twin(conn, "t", "EPSG:28992", "EPSG:5709")
    assert twin.srid == 28992
    with engine.begin() as conn:
        assert init_twin(conn, "t", "EPSG:28992").srid == 28992  # same CRS again: fine
        with pytest.raises(ConflictError, match="EPSG:28992"):
            init_twin(conn, "t", "EPSG:32631")
    with engine.begin() as conn:
        srid = conn.execute(text("SELECT Find_SRID('public', 'buildings', 'footprint')")).scalar()
        assert srid == 28992
    with pytest.raises(DataError, match="SRID"):
        with engine.begin() as conn:  # a geometry in another SRID is refused by PostGIS itself
            conn.execute(text("""INSERT INTO buildings (source, source_id, footprint, height)
                VALUES ('s', '1', ST_GeomFromText('MULTIPOLYGON(((0 0,1 0,1 1,0 0)))', 4326), 3)"""))


@pytest.mark.parametrize("crs, message", [("EPSG:4326", "projected"), ("EPSG:999999", "unknown CRS"),
                                          ("EPSG:2263", "metres")])
def test_twin_rejects_unsuitable_crs(engine, crs: str, message: str) -> None:
    with engine.begin() as conn, pytest.raises(InputError, match=message):
        init_twin(conn, "t", crs)
    with engine.connect() as conn:
        assert get_twin(conn) is None


def test_observations_partitioned_by_day_and_idempotent(engine) -> None:
    with engine.begin() as conn:
        init_twin(conn, "t", "EPSG:32632")
        created = conn.execute(text(
            "SELECT citytwin_ensure_observation_partitions(DATE '2026-01-01', DATE '2026-01-03')")).scalar()
        assert created == 3
        again = conn.execute(text(
            "SELECT citytwin_ensure_observation_partitions(DATE '2026-01-01', DATE '2026-01-03')")).scalar()
        assert again == 0
        thing = conn.execute(text("INSERT INTO things (name) VALUES ('th') RETURNING id")).scalar()
        sensor = conn.execute(text("INSERT INTO sensors (name) VALUES ('s') RETURNING id")).scalar()
        prop = conn.execute(text("INSERT INTO observed_properties (name) VALUES ('p') RETURNING id")).scalar()
        ds = conn.execute(text("INSERT INTO datastreams (name, thing_id, sensor_id, observed_property_id) "
                               "VALUES ('d', :t, :s, :p) RETURNING id"), {"t": thing, "s": sensor, "p": prop}).scalar()
        insert = text("INSERT INTO observations (datastream_id, phenomenon_time, result) "
                      "VALUES (:d, '2026-01-02T10:00:00Z', 1.5) ON CONFLICT DO NOTHING")
        assert conn.execute(insert, {"d": ds}).rowcount == 1
        assert conn.execute(insert, {"d": ds}).rowcount == 0  # same (datastream, time): stored once
        part = conn.execute(text("SELECT tableoid::regclass::text FROM observations")).scalar()
        assert part == "observations_20260102"
        brin = conn.execute(text("SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'observations%brin%' "
                                 "OR (tablename = 'observations_20260102' AND indexdef ILIKE '%brin%')")).scalar()
        assert brin >= 1


def test_grid_constraints_name_the_problem(engine) -> None:
    with pytest.raises(IntegrityError, match="grid_switches_kind_check"):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO grid_nodes (node_id, kind, source) VALUES ('a', 'bus', 's'), ('b', 'bus', 's')"))
            conn.execute(text("INSERT INTO grid_switches (switch_id, kind, from_node, to_node, normal_state, "
                              "present_state, source) VALUES ('x', 'teleporter', 'a', 'b', 'open', 'open', 's')"))
    with engine.connect() as conn:  # rolled back as a whole
        assert conn.execute(text("SELECT count(*) FROM grid_nodes")).scalar() == 0


GEOMETRY_COLUMNS = text("""
    SELECT f_table_name || '.' || f_geometry_column FROM geometry_columns
    WHERE f_table_schema = 'public' ORDER BY 1
""")

# Geometry columns that lead no GiST index of their table (pg_index.indkey[0] is the index's first column).
WITHOUT_GIST = text("""
    SELECT g.f_table_name || '.' || g.f_geometry_column FROM geometry_columns g
    WHERE g.f_table_schema = 'public' AND NOT EXISTS (
        SELECT 1 FROM pg_index i
        JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        JOIN pg_class ix ON ix.oid = i.indexrelid
        JOIN pg_am am ON am.oid = ix.relam
        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]
        WHERE n.nspname = g.f_table_schema AND t.relname = g.f_table_name
          AND a.attname = g.f_geometry_column AND am.amname = 'gist')
    ORDER BY 1
""")


def _alembic(engine, action: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        getattr(command, action)(config, revision)


@pytest.mark.parametrize("pinned", [False, True], ids=["fresh", "srid-pinned"])
def test_every_geometry_column_has_a_gist_index(engine, pinned: bool) -> None:
    if pinned:  # init_twin re-types every geometry column to the twin's SRID: the indexes must survive
        with engine.begin() as conn:
            init_twin(conn, "t", "EPSG:32632")
    with engine.connect() as conn:
        columns = conn.execute(GEOMETRY_COLUMNS).scalars().all()
        missing = conn.execute(WITHOUT_GIST).scalars().all()
    # The check is not vacuous: it sees the schema's geometry columns, these among them.
    assert {"buildings.footprint", "buildings.lod2", "grid_nodes.geom", "grid_sections.geom",
            "grid_switches.geom", "terrain.extent", "locations.location", "outages.geom"} <= set(columns)
    assert missing == []


def test_geometry_index_migration_downgrades_and_upgrades(engine) -> None:
    _alembic(engine, "downgrade", "0003")
    with engine.connect() as conn:  # what the review found missing before 0004: the check catches it
        assert conn.execute(WITHOUT_GIST).scalars().all() == ["buildings.lod2", "grid_switches.geom",
                                                              "terrain.extent"]
    _alembic(engine, "upgrade", "head")
    with engine.connect() as conn:
        assert conn.execute(WITHOUT_GIST).scalars().all() == []
