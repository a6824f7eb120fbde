"""The zero-config database: a private PostgreSQL + PostGIS cluster under the user's data directory.

It listens on a Unix socket only (no TCP port). PostgreSQL refuses to run as root, so when citytwin
runs as root the server runs as an unprivileged system user (``citytwin``), created on first use;
the cluster then lives where that user can reach it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from citytwin.errors import ConfigurationError, ExternalServiceError

SERVICE_USER = "citytwin"
DATABASE = "citytwin"
ROOT_FALLBACK_BASE = Path("/var/lib/citytwin")
SERVER_SETTINGS = {
    "listen_addresses": "''",
    "max_connections": "100",
    "shared_buffers": "'256MB'",
    "work_mem": "'32MB'",
    "maintenance_work_mem": "'256MB'",
    "max_wal_size": "'2GB'",
    "checkpoint_timeout": "'15min'",
    "wal_compression": "on",
    # A private, single-node cluster: no replication, so bulk loads into tables truncated in the
    # same transaction skip the WAL entirely.
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "unix_socket_permissions": "0770",
    "log_min_messages": "warning",
}


def find_pg_bindir() -> Path:
    """The directory of the newest installed PostgreSQL server binaries (initdb, pg_ctl)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise ConfigurationError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; run the README's setup "
        "(it installs postgresql-15-postgis-3) or set CITYTWIN_DATABASE_URL to an existing server."
    )


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _traversable_by_others(path: Path) -> bool:
    """True if a user other than the owner can reach ``path`` (every parent has o+x)."""
    for parent in [path, *path.parents]:
        if not parent.exists():
            continue
        if not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return True


@dataclass(frozen=True)
class EmbeddedCluster:
    """A private cluster rooted at ``base`` (``pgdata/``, ``run/`` socket dir, ``server.log``)."""

    base: Path

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> "EmbeddedCluster":
        """The cluster for a data directory; as root, a place the service user can reach."""
        data_dir = Path(data_dir).expanduser().resolve()
        base = data_dir / "postgres"
        if _running_as_root() and not _traversable_by_others(data_dir):
            digest = hashlib.sha1(str(data_dir).encode()).hexdigest()[:12]
            base = ROOT_FALLBACK_BASE / digest
        return cls(base)

    @property
    def pgdata(self) -> Path:
        return self.base / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.base / "run"

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the cluster's database over its Unix socket."""
        return f"postgresql+psycopg://{SERVICE_USER if _running_as_root() else _current_user()}@/{DATABASE}?host={self.socket_dir}"

    # -- lifecycle ---------------------------------------------------------------------------
    def is_initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def is_running(self) -> bool:
        if not self.is_initialised():
            return False
        result = self._pg_ctl("status", check=False)
        return result.returncode == 0

    def ensure_running(self) -> str:
        """Initialise (first time), start if stopped, create the database with PostGIS; return the URL."""
        self.base.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if not self.is_initialised():
                self._initdb()
            if not self.is_running():
                self._start()
            self._ensure_database()
        return self.url

    def stop(self) -> bool:
        """Stop the server; True if it was running."""
        if not self.is_running():
            return False
        self._pg_ctl("stop", "-m", "fast", "-w")
        return True

    def status(self) -> dict:
        return {
            "cluster": str(self.base),
            "initialised": self.is_initialised(),
            "running": self.is_running(),
            "socket_dir": str(self.socket_dir),
            "url": self.url,
        }

    # -- internals -----------------------------------------------------------------------------
    @contextmanager
    def _lock(self) -> Iterator[None]:
        lock_path = self.base / ".lock"
        with open(lock_path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _run_as_owner(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
        kwargs: dict = {"capture_output": True, "text": True, "env": {**os.environ, "LC_ALL": "C.UTF-8"}}
        if _running_as_root():
            kwargs.update(user=SERVICE_USER, group=SERVICE_USER, extra_groups=[])
        result = subprocess.run(args, cwd="/", **kwargs)
        if check and result.returncode != 0:
            raise ExternalServiceError(
                f"embedded PostgreSQL: {' '.join(Path(a).name if i == 0 else a for i, a in enumerate(args))} "
                f"failed: {result.stderr.strip() or result.stdout.strip()} (log: {self.log_file})"
            )
        return result

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self._run_as_owner([str(find_pg_bindir() / "pg_ctl"), "-D", str(self.pgdata), *args], check=check)

    def _prepare_owner(self) -> None:
        if not _running_as_root():
            return
        ensure_service_user()
        owner = pwd.getpwnam(SERVICE_USER)
        for path in (self.base, self.pgdata, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, owner.pw_uid, owner.pw_gid)
        if not self.log_file.exists():
            self.log_file.touch()
        os.chown(self.log_file, owner.pw_uid, owner.pw_gid)

    def _initdb(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.pgdata, 0o700)
        self._prepare_owner()
        user = SERVICE_USER if _running_as_root() else _current_user()
        self._run_as_owner([str(find_pg_bindir() / "initdb"), "-D", str(self.pgdata), "-U", user,
                            "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"])
        with open(self.pgdata / "postgresql.auto.conf", "a") as conf:
            for key, value in SERVER_SETTINGS.items():
                conf.write(f"{key} = {value}\n")
            conf.write(f"unix_socket_directories = '{self.socket_dir}'\n")

    def _start(self) -> None:
        self._prepare_owner()
        self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file))
        deadline = time.monotonic() + 30
        while not (self.socket_dir / ".s.PGSQL.5432").exists():
            if time.monotonic() > deadline:
                raise ExternalServiceError(f"embedded PostgreSQL did not open its socket (log: {self.log_file})")
            time.sleep(0.1)

    def _ensure_database(self) -> None:
        import psycopg

        user = SERVICE_USER if _running_as_root() else _current_user()
        with psycopg.connect(host=str(self.socket_dir), user=user, dbname="postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
        with psycopg.connect(host=str(self.socket_dir), user=user, dbname=DATABASE, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")


def _current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def ensure_service_user() -> None:
    """Create the unprivileged system user the server runs as (root only)."""
    try:
        pwd.getpwnam(SERVICE_USER)
        return
    except KeyError:
        pass
    result = subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", SERVICE_USER],
        capture_output=True, text=True,
    )
    if result.returncode != 0 and "already exists" not in result.stderr:
        raise ConfigurationError(f"could not create system user {SERVICE_USER!r}: {result.stderr.strip()}")
