"""Shared fixtures: a real PostgreSQL + PostGIS for every test that needs one.

By default the tests run their own embedded cluster (the same code path as the zero-config CLI) in
``/tmp/citytwin-tests``; set ``CITYTWIN_TEST_DATABASE_URL`` (a superuser URL of a server with PostGIS)
to use another server. Each test gets a fresh database cloned from a migrated template.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from sqlalchemy import Engine

from citytwin.db.engine import make_engine
from citytwin.db.migrate import head_revision, upgrade
from _paths import SHARED_DATA

TEMPLATE = "citytwin_test_template"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), (f"real test data not found at {SHARED_DATA}: put the shared/ folder beside the "
                                    "project or set CITYTWIN_SHARED_DATA to its data/ folder")
    return SHARED_DATA


class PgServer:
    """Admin access to a test server: create/drop databases from the migrated template."""

    def __init__(self, conninfo: dict) -> None:
        self.conninfo = conninfo

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(**self.conninfo, dbname="postgres", autocommit=True)

    def url(self, dbname: str) -> str:
        host = self.conninfo["host"]
        user = self.conninfo["user"]
        if host.startswith("/"):
            return f"postgresql+psycopg://{user}@/{dbname}?host={host}"
        port = self.conninfo.get("port", 5432)
        return f"postgresql+psycopg://{user}@{host}:{port}/{dbname}"

    def ensure_template(self) -> None:
        with self.admin() as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (TEMPLATE,)).fetchone()
        if exists:
            engine = make_engine(self.url(TEMPLATE))
            from citytwin.db.migrate import current_revision

            current = current_revision(engine)
            engine.dispose()
            if current == head_revision():
                return
            with self.admin() as conn:
                conn.execute(f'DROP DATABASE "{TEMPLATE}" WITH (FORCE)')
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        engine = make_engine(self.url(TEMPLATE))
        upgrade(engine)
        engine.dispose()

    def create_database(self) -> str:
        name = f"citytwin_test_{uuid.uuid4().hex[:10]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    external = os.environ.get("CITYTWIN_TEST_DATABASE_URL")
    if external:
        info = psycopg.conninfo.conninfo_to_dict(external.replace("postgresql+psycopg://", "postgresql://"))
        info.pop("dbname", None)
        server = PgServer(info)
    else:
        from citytwin.db.embedded import EmbeddedCluster

        cluster = EmbeddedCluster.for_data_dir(Path("/tmp/citytwin-tests"))
        cluster.ensure_running()
        user = "citytwin" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
        server = PgServer({"host": str(cluster.socket_dir), "user": user})
    server.ensure_template()
    yield server


@pytest.fixture
def database_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, migrated, empty twin database for one test."""
    name = pg_server.create_database()
    yield pg_server.url(name)
    pg_server.drop_database(name)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def module_database_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, migrated database shared by the tests of one module (for expensive set-ups)."""
    name = pg_server.create_database()
    yield pg_server.url(name)
    pg_server.drop_database(name)


@pytest.fixture(scope="module")
def demo_twin(module_database_url: str, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A small synthetic city loaded into its own database: (database URL, data dir)."""
    from citytwin.scenarios.demo import load_demo_city

    data_dir = tmp_path_factory.mktemp("twin-data")
    engine = make_engine(module_database_url)
    load_demo_city(engine, out_dir=data_dir / "city", buildings=400, seed=3, log=lambda line: None)
    engine.dispose()
    yield module_database_url, data_dir


@pytest.fixture(scope="module")
def demo_engine(demo_twin) -> Iterator[Engine]:
    """An engine on the module's demo twin."""
    engine = make_engine(demo_twin[0])
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def demo_app(demo_twin, demo_engine):
    """The full API on the demo twin. Its own webhook sender is off: tests that check deliveries drive
    them with ``dispatch_due``."""
    from citytwin.api.app import create_app
    from citytwin.config import Settings

    url, data_dir = demo_twin
    return create_app(Settings(database_url=url, data_dir=data_dir, tiles_dir=data_dir / "tiles",
                               webhook_dispatch_interval_s=0), engine=demo_engine)
