"""The encrypted, crash-safe local spool (see :mod:`demotrace.spool.store`)."""

from __future__ import annotations

import datetime as _dt
import os as _os

from .crypto import DataKey
from .store import SessionReader, SessionStats, SessionWriter, Spool


def new_session_id(now: _dt.datetime | None = None) -> str:
    """A new time-sortable session id, e.g. ``20261130T013816Z-3f9a1c`` (UTC start + random)."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + _os.urandom(3).hex()


__all__ = ["DataKey", "SessionReader", "SessionStats", "SessionWriter", "Spool", "new_session_id"]
