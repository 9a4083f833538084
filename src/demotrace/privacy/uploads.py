"""Upload tombstones: the device remembers which raw sessions the collector has acknowledged.

After ``demotrace upload`` commits a sealed bundle and the server acknowledges it, the local
bundle is deleted (unless ``--keep``). Without a record of that, ``demotrace seal`` saw the raw
session as "unsealed" again, sealed it a second time, and the next ``upload`` committed a second
bundle of the same session: duplicate data, and — worse — data the person had deleted or erased
on the collector's portal came back (issue #4). So the upload client writes a *tombstone*
before it deletes the local bundle (:func:`record_uploaded`, called from
:meth:`demotrace.upload.UploadClient.upload_path`), and sealing refuses any session that has
one (:func:`refuse_if_uploaded`; there is deliberately no ``--force``).

One file per session, ``<home>/uploaded/<session_id>.json`` (folder 0700, file 0600, written
atomically)::

    {"session_id": "20261130T091500Z-aaaaaa", "bundle_id": "<server bundle id, hex>",
     "committed_at": "<server acknowledgement time, ISO 8601>", "recorded_utc": "<device UTC>"}

It holds no content: the ids and two times. It survives the deletion of the bundle and of the
raw session (a restored backup of the spool must not be uploaded again either). A tombstone
file that cannot be read still counts as "uploaded" (fail safe: never upload twice).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import SpoolError
from ..paths import Paths

UPLOADED_DIR = "uploaded"


class AlreadyUploaded(SpoolError):
    """The session's bundle was already uploaded and acknowledged by the collector; it is not
    sealed (or uploaded) again. The message names the session, bundle id and ack time."""


@dataclass(frozen=True)
class UploadTombstone:
    """``session_id``; ``bundle_id`` (the collector's id of the committed bundle) and
    ``committed_at`` (server acknowledgement time, ISO 8601 as the server sent it) — both
    ``None`` when the tombstone file is damaged; ``recorded_utc`` (device UTC time written,
    ``Z`` suffix); ``error``: why the file could not be read, else ``None``."""

    session_id: str
    bundle_id: str | None
    committed_at: str | None
    recorded_utc: str | None = None
    error: str | None = None


def uploaded_root(paths: Paths) -> Path:
    """``<home>/uploaded`` — the folder of tombstones."""
    return paths.home / UPLOADED_DIR


def _file(paths: Paths, session_id: str) -> Path:
    if not session_id or "/" in session_id or "\\" in session_id or session_id.startswith(".") or "\0" in session_id:
        raise SpoolError(f"invalid session id {session_id!r} for an upload tombstone")
    return uploaded_root(paths) / f"{session_id}.json"


def record_uploaded(paths: Paths, session_id: str, bundle_id: str, committed_at: str | None,
                    now: dt.datetime | None = None) -> UploadTombstone:
    """Write (atomically, 0600; replacing an older one) the tombstone of ``session_id``.

    Call it after the collector acknowledged the commit and before the local bundle is
    deleted, so no crash can leave neither. ``now``: device time (aware; default: now, UTC).

    Raises:
        SpoolError: ``session_id`` is not a plain folder name. OSError: the file cannot be
            written (then the caller must keep the local bundle).
    """
    target = _file(paths, session_id)
    now = now or dt.datetime.now(dt.timezone.utc)
    tomb = UploadTombstone(session_id, bundle_id, committed_at,
                           now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    tmp = root / f".{target.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps({"session_id": session_id, "bundle_id": bundle_id, "committed_at": committed_at,
                                 "recorded_utc": tomb.recorded_utc}, indent=1).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    return tomb


def read_uploaded(paths: Paths, session_id: str) -> UploadTombstone | None:
    """The tombstone of ``session_id``, or ``None`` if it was never uploaded. A damaged file
    gives a tombstone with ``bundle_id``/``committed_at`` ``None`` and ``error`` set."""
    f = _file(paths, session_id)
    try:
        data = json.loads(f.read_text("utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("bundle_id"), str):
            raise ValueError("not a tombstone object with a bundle_id")
        ca = data.get("committed_at")
        return UploadTombstone(session_id, data["bundle_id"], ca if isinstance(ca, str) else None,
                               data.get("recorded_utc") if isinstance(data.get("recorded_utc"), str) else None)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return UploadTombstone(session_id, None, None, error=f"{f} is damaged: {exc}")


def uploaded_ids(paths: Paths) -> set[str]:
    """Ids of every session with a tombstone (damaged ones included)."""
    root = uploaded_root(paths)
    if not root.is_dir():
        return set()
    return {p.name[:-5] for p in root.iterdir() if p.name.endswith(".json") and not p.name.startswith(".")}


def describe(t: UploadTombstone) -> str:
    """One sentence: which bundle, acknowledged when (or that the tombstone is damaged)."""
    if t.error is not None:
        return f"session {t.session_id} was uploaded (its tombstone {t.error})"
    when = f" at {t.committed_at}" if t.committed_at else ""
    return f"session {t.session_id} was uploaded as bundle {t.bundle_id} (acknowledged by the collector{when})"


def refuse_if_uploaded(paths: Paths, session_id: str) -> None:
    """Raise if ``session_id`` was uploaded (see module docstring).

    Raises:
        AlreadyUploaded: names the bundle and ack time, and why it is not sealed again.
    """
    t = read_uploaded(paths, session_id)
    if t is not None:
        raise AlreadyUploaded(
            f"{describe(t)}; it is not sealed again: a second bundle would duplicate it on the collector"
            " and bring back anything you deleted or erased there. To remove the raw session from this"
            f" device use `demotrace review delete {session_id}`")
