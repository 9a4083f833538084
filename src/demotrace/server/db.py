"""Database engine, sessions and programmatic Alembic migrations.

- SQLite (embedded default): WAL journal, ``foreign_keys=ON``, ``secure_delete=ON`` (deleted
  rows — e.g. a destroyed wrapped key — are overwritten with zeros in the file, not left in free
  pages), ``busy_timeout`` 30 s, and every transaction starts with ``BEGIN IMMEDIATE`` so that
  concurrent writers queue instead of failing on a read→write lock upgrade (the SQLAlchemy
  "pysqlite serializable" recipe). The database file and its ``-wal``/``-shm`` files are
  owner-only (mode 0600, :func:`restrict_sqlite_files`): created so before SQLite opens it, and
  chmodded on every new connection (bug bash: ``collector.db`` was 0644 inside a 0700 folder).
- PostgreSQL: ``postgresql+psycopg://…`` (psycopg 3); plain ``postgresql://`` URLs are mapped to
  the psycopg driver.

:func:`migrate` runs ``alembic upgrade head`` on start-up from ``migrations/`` inside the
package (no ``alembic.ini``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import ConfigError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def normalise_url(url: str) -> str:
    """Map ``postgresql://`` / ``postgres://`` to the psycopg 3 driver; leave others alone.

    Raises:
        ConfigError: the URL cannot be parsed or names a database other than SQLite/PostgreSQL.
    """
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    try:
        u = make_url(url)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError
        raise ConfigError(f"database URL cannot be parsed: {url!r} ({exc})") from exc
    if u.get_backend_name() == "postgresql" and u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    if u.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"unsupported database {u.get_backend_name()!r} in URL; use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST:PORT/DB"
        )
    return u.render_as_string(hide_password=False)


SQLITE_FILE_MODE = 0o600
"""Mode of the SQLite database file and its ``-wal``/``-shm`` siblings: read/write for the
collector's user only (they hold wrapped keys and personal metadata; DESIGN.md security)."""


def restrict_sqlite_files(path: str | os.PathLike[str]) -> None:
    """Create the SQLite file ``path`` (empty, which SQLite accepts as a new database) with mode
    :data:`SQLITE_FILE_MODE` when it does not exist (an existing file is never opened here), and
    chmod it and any existing ``-wal`` /
    ``-shm`` / ``-journal`` file to that mode. SQLite creates its ``-wal``/``-shm`` files with
    the mode of the database file (sqlite.org/tempfiles.html; ``robust_open`` in os_unix.c), so
    they follow.

    Raises:
        ConfigError: a file cannot be created or chmodded (names the file and the reason).
    """
    base = os.fspath(path)
    try:
        try:
            os.close(os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             SQLITE_FILE_MODE))
        except FileExistsError:
            # never open an EXISTING database here: closing any descriptor of it drops every
            # POSIX lock this process holds on it, under its open SQLite connections — that
            # corrupted the database with --workers 2 (sqlite.org/howtocorrupt.html §2.2)
            pass
        for name in (base, base + "-wal", base + "-shm", base + "-journal"):
            try:
                if os.stat(name).st_mode & 0o777 != SQLITE_FILE_MODE:
                    os.chmod(name, SQLITE_FILE_MODE)
            except FileNotFoundError:
                pass
    except OSError as exc:
        raise ConfigError(f"cannot make the database file {base} owner-only (mode 0600): "
                          f"{exc.strerror or exc}") from exc


def make_engine(url: str, **kw: Any) -> Engine:
    """Create an engine for ``url`` with the settings described in the module docstring."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = make_url(url).database
        on_disk = bool(path) and path != ":memory:" and not path.startswith("file:")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        if on_disk:
            restrict_sqlite_files(path)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kw)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_con: Any, _rec: Any) -> None:
            dbapi_con.isolation_level = None  # we emit BEGIN ourselves
            cur = dbapi_con.cursor()
            for pragma in ("journal_mode=WAL", "foreign_keys=ON", "secure_delete=ON",
                           "synchronous=NORMAL", "busy_timeout=30000"):
                cur.execute(f"PRAGMA {pragma}")
            cur.close()
            if on_disk:  # -wal/-shm exist from here on (journal_mode=WAL)
                restrict_sqlite_files(path)

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, **kw)


def unreachable(url: str, exc: BaseException) -> ConfigError:
    """A one-line :class:`ConfigError` for a database that cannot be opened: the URL with its
    password masked (``***``) and the first line of the driver's reason."""
    shown = make_url(normalise_url(url)).render_as_string(hide_password=True)
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return ConfigError(f"cannot connect to database {shown}: "
                       f"{reason[0] if reason else type(exc).__name__}")


def migrate(engine: Engine) -> None:
    """Upgrade the database to the newest schema (``alembic upgrade head``). Idempotent."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Database:
    """An engine plus its session factory. ``session()`` is a context manager that commits on
    success and rolls back on error."""

    def __init__(self, url: str, *, run_migrations: bool = True) -> None:
        """Raises:
            ConfigError: unparsable/unsupported URL, or the database cannot be reached (one
                line naming the URL without its password and the driver's reason).
        """
        self.engine = make_engine(url)
        if run_migrations:
            try:
                migrate(self.engine)
            except OperationalError as exc:
                self.engine.dispose()
                raise unreachable(url, exc) from None
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: commit when the block ends normally, roll back if it raises."""
        with self._factory() as s:
            with s.begin():
                yield s

    def checkpoint_wal(self) -> None:
        """SQLite: fold the WAL back into the main file and truncate it (so erased pages leave
        no copy in ``-wal``). PostgreSQL: no-op (see docs/operations.md on VACUUM)."""
        if self.dialect == "sqlite":
            raw = self.engine.raw_connection()
            try:
                raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                raw.close()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
