"""Browser windows of a process started in private mode (bug bash 4: Chromium 156's incognito
windows are titled like normal ones, "Quarterly notes - Chromium", so the built-in
``private_browsing`` title patterns never matched and they were recorded in full).

A window's process (``_NET_WM_PID``, as ``FocusChange.pid``) counts as private when its command
line (``/proc/<pid>/cmdline``) holds a browser's private-mode switch: Chromium / Chrome / Brave
``--incognito``, Edge ``--inprivate``, Firefox ``-private-window`` / ``--private-window`` /
``-private``. Not detected (docs/privacy.md, row 4): an incognito window opened from a normal
browser process (Ctrl+Shift+N) — its process is the normal one and X shows nothing else; only
the title patterns can catch it (older Chromium titles end in "(Incognito)")."""

from __future__ import annotations

from functools import lru_cache

#: Command-line switches that start a browser in private mode (see module doc).
PRIVATE_SWITCHES = frozenset({"--incognito", "-incognito", "--inprivate", "-inprivate", "-private-window",
                              "--private-window", "-private", "--private"})


@lru_cache(maxsize=256)
def _cmdline(pid: int, start: str) -> tuple[str, ...]:
    """``/proc/<pid>/cmdline`` split at NUL (``start``: the process start time, part of the cache
    key so a reused pid is read again)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return tuple(a.decode(errors="replace") for a in f.read().split(b"\0") if a)
    except OSError:
        return ()


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def is_private_process(pid: int | None) -> bool:
    """True if process ``pid`` was started with a private-browsing switch (also for a switch
    given as ``--incognito=...``); False for ``None``, a gone process or an unreadable one."""
    if not pid or pid <= 0:
        return False
    start = _start_time(pid)
    if start is None:
        return False
    return any(a.split("=", 1)[0] in PRIVATE_SWITCHES for a in _cmdline(pid, start)[1:])
