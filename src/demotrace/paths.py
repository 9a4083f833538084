"""Where demotrace keeps its files on the device.

Everything lives under one *home* folder, resolved once by the CLI and passed down explicitly
(no global settings read at import time):

- ``$DEMOTRACE_HOME`` if set, else ``$XDG_DATA_HOME/demotrace`` (default
  ``~/.local/share/demotrace``).
- ``<home>/key`` — the per-user data key (32 bytes, mode 0600).
- ``<home>/spool/<session_id>/`` — one encrypted session (see :mod:`demotrace.spool`).
- ``<home>/run/control.sock`` — the recorder's control socket (folder mode 0700).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    """Resolved locations of demotrace's files (all absolute)."""

    home: Path

    @classmethod
    def from_env(cls, home: str | os.PathLike[str] | None = None) -> "Paths":
        """Resolve the home folder: argument, then ``$DEMOTRACE_HOME``, then XDG default."""
        if home is None:
            home = os.environ.get("DEMOTRACE_HOME")
        if home is None:
            xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(
                os.path.expanduser("~"), ".local", "share"
            )
            home = os.path.join(xdg, "demotrace")
        return cls(Path(home).expanduser().resolve())

    @property
    def key_file(self) -> Path:
        """The per-user data key file (0600)."""
        return self.home / "key"

    @property
    def spool(self) -> Path:
        """Folder of encrypted sessions."""
        return self.home / "spool"

    @property
    def run_dir(self) -> Path:
        """Folder of runtime files (control socket, pid file), mode 0700."""
        return self.home / "run"

    @property
    def control_socket(self) -> Path:
        """The recorder's Unix control socket."""
        return self.run_dir / "control.sock"

    def ensure(self) -> "Paths":
        """Create the home, spool and run folders with owner-only permissions."""
        for d in (self.home, self.spool, self.run_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        return self
