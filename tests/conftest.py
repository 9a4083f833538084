"""Shared fixtures.

- ``xvfb``: one real Xvfb server per test session (``+extension RECORD``, 1280x800x24), on a
  free display number chosen by Xvfb itself (``-displayfd``). Fails (never skips) if Xvfb
  cannot start: the README's test command installs it.
- ``dt_home``: a fresh DEMOTRACE_HOME (0700) per test.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from demotrace.demo.display import start_xvfb as _start_xvfb
from conftest_pg import db_url, pg_server, stack  # noqa: F401  (collector fixtures)
from conftest_s3 import s3_env, s3_server  # noqa: F401  (S3 blob-store fixtures)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@dataclass
class XServer:
    """A running Xvfb: ``display`` (e.g. ":7"), ``width``/``height`` in pixels, ``env`` to run
    X clients against it."""

    display: str
    width: int
    height: int
    proc: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DISPLAY"] = self.display
        env.pop("WAYLAND_DISPLAY", None)
        return env


def start_xvfb(width: int = 1280, height: int = 800) -> XServer:
    """Start Xvfb with RECORD on a display it picks; wait until it accepts clients."""
    proc, display = _start_xvfb(width, height)
    return XServer(display=display, width=width, height=height, proc=proc)


@pytest.fixture(scope="session")
def xvfb() -> Iterator[XServer]:
    """A session-wide Xvfb (see module docstring)."""
    server = start_xvfb()
    try:
        yield server
    finally:
        server.proc.terminate()
        try:
            server.proc.wait(5)
        except subprocess.TimeoutExpired:
            server.proc.kill()


@pytest.fixture
def dt_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, private DEMOTRACE_HOME for one test."""
    home = tmp_path / "dthome"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("DEMOTRACE_HOME", str(home))
    return home


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (real recordings). Fails if absent."""
    assert SHARED_DATA.is_dir(), f"shared data folder missing: {SHARED_DATA}"
    return SHARED_DATA
