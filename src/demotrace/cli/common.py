"""Helpers shared by the CLI modules: resolving paths, opening the spool, the console."""

from __future__ import annotations

from rich.console import Console

from ..paths import Paths
from ..spool import DataKey, Spool

console = Console()
err_console = Console(stderr=True)


def open_spool(home: str | None = None, *, create_key: bool = False) -> tuple[Paths, Spool]:
    """Resolve the home folder and open its spool with the user's data key.

    ``create_key``: create the key file (0600) if it does not exist yet (the recorder does; the
    readers do not, since a new key could not decrypt existing data).

    Raises:
        KeyMissing: no key file and ``create_key`` is false.
    """
    paths = Paths.from_env(home).ensure()
    key = DataKey.load_or_create(paths.key_file) if create_key else DataKey.load(paths.key_file)
    return paths, Spool(paths.spool, key)
