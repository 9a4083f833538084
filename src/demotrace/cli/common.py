"""Helpers shared by the CLI modules: resolving paths, opening the spool, the console."""

from __future__ import annotations

import errno

from rich.console import Console

from ..errors import HomeNotWritable, KeyLost
from ..paths import Paths
from ..spool import DataKey, Spool

console = Console()
err_console = Console(stderr=True)

#: Commands that work on a read-only home (they create, clean and change nothing there).
READ_ONLY_COMMANDS = "`demotrace review list`, `review show`, `sessions list`, `sessions show` and `policy show`"


def _command_words() -> str:
    """``demotrace`` and the (sub)command words of this process's command line (at most two
    lower-case words before the first option or argument, e.g. ``demotrace review forget``), or
    ``""`` when not run as ``demotrace``."""
    import re
    import sys

    if not sys.argv or not sys.argv[0].endswith("demotrace"):
        return ""
    words = ["demotrace"]
    for a in sys.argv[1:3]:
        if not re.fullmatch(r"[a-z][a-z-]*", a):
            break
        words.append(a)
    return " ".join(words)


def writable_paths(home: str | None = None) -> Paths:
    """Resolve the home folder for a command that writes there, creating its folders
    (:meth:`Paths.ensure`).

    Raises:
        HomeNotWritable: the home or a folder in it cannot be created or written (read-only
            mount, no permission); names that path, the running command and what still works.
            Nothing was changed.
    """
    paths = Paths.from_env(home)
    try:
        return paths.ensure()
    except OSError as exc:
        raise_if_not_writable(exc, paths)
        raise


def raise_if_not_writable(exc: OSError, paths: Paths) -> None:
    """Turn ``exc`` into :class:`HomeNotWritable` (naming the path, the running command and what
    still works) when it says the home cannot be written (read-only file system, no
    permission); return otherwise (the caller re-raises).

    Raises:
        HomeNotWritable: ``exc`` is EROFS, EACCES or EPERM.
    """
    if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
        return
    words = _command_words()
    cmd = f"`{words}`" if words else "this command"
    where = exc.filename or paths.home
    raise HomeNotWritable(
        f"{where} is not writable ({exc.strerror}): {cmd} has to write to the demotrace home"
        f" {paths.home}. Nothing was changed. Make it writable, or point --home / DEMOTRACE_HOME"
        f" at a writable copy; {READ_ONLY_COMMANDS} work on a read-only home."
    ) from exc


def open_spool(home: str | None = None, *, create_key: bool = False,
               readonly: bool = False) -> tuple[Paths, Spool]:
    """Resolve the home folder and open its spool with the user's data key.

    ``create_key``: create the key file (0600) if it does not exist yet (the recorder does; the
    readers do not, since a new key could not decrypt existing data). ``readonly``: for the
    reading commands (:data:`READ_ONLY_COMMANDS`): nothing is created or changed, so they work
    on a read-only home (bug bash 4 F18); otherwise the home's folders are created first.

    Raises:
        HomeNotWritable: not ``readonly`` and the home cannot be written (:func:`writable_paths`).
        KeyLost: no key file, but encrypted sessions or sealed bundles exist (never replaced by
            a new key, whatever ``create_key`` says: that would make them unreadable for good).
        KeyMissing: no key file, no encrypted data, and ``create_key`` is false.
    """
    paths = Paths.from_env(home) if readonly else writable_paths(home)
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
    return paths, Spool(paths.spool, key, readonly=readonly)


def encrypted_items(paths: Paths) -> int:
    """Number of session folders in the spool plus sealed bundle folders under ``paths.home``."""
    n = 0
    for root in (paths.spool, paths.home / "sealed"):
        if root.is_dir():
            n += sum(1 for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return n
