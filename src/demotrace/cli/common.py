"""Helpers shared by the CLI modules: resolving paths, opening the spool, the console."""

from __future__ import annotations

from rich.console import Console

from ..errors import KeyLost
from ..paths import Paths
from ..spool import DataKey, Spool

console = Console()
err_console = Console(stderr=True)


def open_spool(home: str | None = None, *, create_key: bool = False) -> tuple[Paths, Spool]:
    """Resolve the home folder and open its spool with the user's data key.

    ``create_key``: create the key file (0600) if it does not exist yet (the recorder does; the
    readers do not, since a new key could not decrypt existing data).

    Raises:
        KeyLost: no key file, but encrypted sessions or sealed bundles exist (never replaced by
            a new key, whatever ``create_key`` says: that would make them unreadable for good).
        KeyMissing: no key file, no encrypted data, and ``create_key`` is false.
    """
    paths = Paths.from_env(home).ensure()
    if not paths.key_file.exists():
        stored = encrypted_items(paths)
        if stored:
            raise KeyLost(
                f"the data key {paths.key_file} is missing, but {stored} encrypted session(s) or "
                f"bundle(s) under {paths.home} need it; only that key can read them. Restore the "
                f"key file from your backup (mode 0600). To discard that data instead, delete "
                f"{paths.spool} and {paths.home / 'sealed'} yourself; demotrace never replaces the key."
            )
    key = DataKey.load_or_create(paths.key_file) if create_key else DataKey.load(paths.key_file)
    return paths, Spool(paths.spool, key)


def encrypted_items(paths: Paths) -> int:
    """Number of session folders in the spool plus sealed bundle folders under ``paths.home``."""
    n = 0
    for root in (paths.spool, paths.home / "sealed"):
        if root.is_dir():
            n += sum(1 for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return n
