"""Session manifest: what a session is, stored beside its events.

A manifest holds no personal content beyond what the person can see in ``sessions show``:
no host name, no user name. Times: ``started_utc`` is an ISO-8601 UTC wall-clock string taken
once at start, for display only; every event time is ``t_ns`` on ``clock_source``.
"""

from __future__ import annotations

import msgspec

from .events import SCHEMA_VERSION


class SessionManifest(msgspec.Struct, kw_only=True):
    """Metadata of one recording session.

    ``session_id``: opaque id (time-sortable, e.g. ``20261130T013816Z-3f9a1c``);
    ``schema_version``: event schema version (1); ``started_utc``: ISO-8601 UTC wall time at
    start; ``timezone``: IANA name or UTC offset of the device at start; ``clock_source``:
    the monotonic clock of ``t_ns`` ("CLOCK_MONOTONIC"); ``platform``: "linux-x11", …;
    ``backend``: capture backend id; ``source``: "demotrace" or the importer name
    ("ducktrack"); ``recorder_version``: demotrace version; ``ended``: true once the
    session was closed cleanly (false after a crash: data up to the last flush is still valid);
    ``duration_ns``: ``t_ns`` of the last event, if known.
    """

    session_id: str
    schema_version: int = SCHEMA_VERSION
    started_utc: str
    timezone: str
    clock_source: str = "CLOCK_MONOTONIC"
    platform: str
    backend: str
    source: str = "demotrace"
    recorder_version: str
    ended: bool = False
    duration_ns: int | None = None
    extra: dict[str, str] = {}
