"""Fixtures of the collector tests (imported by ``tests/conftest.py``).

- ``pg_server`` (session): a REAL PostgreSQL started by the harness — ``initdb`` + ``pg_ctl``
  into a temporary folder, listening on 127.0.0.1 only, on a free port, Unix socket in the
  same temporary folder. As root the server runs as user ``nobody`` (PostgreSQL refuses root).
  It FAILS (never skips) if it cannot start: ``scripts/bootstrap.sh`` installs Debian's
  ``postgresql``. One server per test session; each test gets a fresh database.
- ``db_url``: parametrised over ``sqlite`` and ``postgresql`` — every storage test runs on both.
- ``stack``: a :class:`Stack` — collector + in-process ASGI client + helpers to mint
  credentials of every role.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

PG_BIN_CANDIDATES = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    """A running PostgreSQL: ``port`` on 127.0.0.1, superuser ``postgres`` (trust auth on
    loopback), ``root`` temporary folder."""

    port: int
    root: Path
    bindir: Path
    run_as: list[str]
    _n: Any = field(default_factory=lambda: itertools.count(1))

    def admin_url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        """Create a fresh database; return its SQLAlchemy URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._n)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.admin_url(name)


def start_postgres(*, durable: bool = False) -> PgServer:
    """Start a throw-away PostgreSQL (see module docstring). Raises RuntimeError with the log.

    ``durable``: keep PostgreSQL's default durability (``fsync``, ``full_page_writes``,
    ``synchronous_commit`` on) — for benchmarks; tests turn them off for speed."""
    if not PG_BIN_CANDIDATES:
        raise RuntimeError("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin; run "
                           "scripts/bootstrap.sh (installs Debian package postgresql)")
    bindir = PG_BIN_CANDIDATES[0]
    # /tmp itself (not $TMPDIR): every parent must be traversable by the server's user, and
    # the Unix socket path must stay under the 107-byte limit
    root = Path(tempfile.mkdtemp(prefix="demotrace-pg-", dir="/tmp"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        run_as = ["runuser", "-u", "nobody", "--"]
    os.chmod(root, 0o700)
    data = root / "data"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "TZ": "UTC"}
    r = subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                        "--auth=trust", "-E", "UTF8", "--no-sync"],
                       capture_output=True, text=True, env=env, cwd=root)
    if r.returncode:
        raise RuntimeError(f"initdb failed: {r.stderr}")
    port = free_port()
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections=200"
    if not durable:
        opts += " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
    r = subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l",
                        str(root / "log"), "-o", opts, "-w", "-t", "60", "start"],
                       capture_output=True, text=True, env=env, cwd=root)
    if r.returncode:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {r.stdout}{r.stderr}\n{log}")
    return PgServer(port=port, root=root, bindir=bindir, run_as=run_as)


def stop_postgres(pg: PgServer) -> None:
    """Stop the server immediately and remove its folder."""
    subprocess.run([*pg.run_as, str(pg.bindir / "pg_ctl"), "-D", str(pg.root / "data"),
                    "-m", "immediate", "stop"], capture_output=True, cwd=pg.root)
    shutil.rmtree(pg.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One real PostgreSQL per test session (fails if it cannot start)."""
    pg = start_postgres()
    try:
        yield pg
    finally:
        stop_postgres(pg)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL: SQLite in ``tmp_path`` or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.db'}"
    pg: PgServer = request.getfixturevalue("pg_server")
    return pg.new_database()


# -- collector stack ------------------------------------------------------------------------------
def sha(data: bytes) -> str:
    """Hex SHA-256 (test-side, computed independently of the code under test)."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class Stack:
    """An in-process collector: ``collector``, ``app``, ``client`` (httpx over ASGI, no
    credential), ``config``."""

    collector: Any
    app: Any
    client: Any
    config: Any

    def token(self, role: str, person: str | None = None) -> str:
        """Mint a credential of ``role`` directly in the database (for device/person: bound to
        ``person``'s pseudonym)."""
        from demotrace.server import auth

        sid = self.collector.pseudonyms.subject_id(person) if person else None
        with self.collector.db.session() as s:
            return auth.create_credential(s, role, subject_id=sid, label=f"test {role}")[1]

    def h(self, token: str) -> dict[str, str]:
        """Authorization header for ``token``."""
        return {"authorization": f"Bearer {token}"}

    def subject(self, person: str) -> str:
        """Pseudonymous subject id of ``person``."""
        return str(self.collector.pseudonyms.subject_id(person))


def make_stack(data_dir: Path, db_url: str, **cfg: Any) -> Stack:
    """Build config, collector, app and an in-process client."""
    from fastapi.testclient import TestClient

    from demotrace.server.app import create_app
    from demotrace.server.config import ServerConfig
    from demotrace.server.service import Collector

    config = ServerConfig(data_dir=data_dir, database_url=db_url, **cfg)
    collector = Collector(config)
    app = create_app(config, collector=collector)
    client = TestClient(app)
    return Stack(collector, app, client, config)


@pytest.fixture
def stack(tmp_path: Path, db_url: str) -> Iterator[Stack]:
    """A collector stack on SQLite and on PostgreSQL (parametrised through ``db_url``)."""
    st = make_stack(tmp_path / "server", db_url)
    try:
        yield st
    finally:
        st.client.close()
        st.collector.close()
