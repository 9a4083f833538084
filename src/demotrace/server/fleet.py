"""Fleet health for admins: devices and the upload backlog, never per-person activity (issue 5
items 5 and 7; DESIGN.md §2.4, §8.11).

What an admin sees per device (:func:`devices`): id, label, enrollment time, revoked or not,
the **day** (UTC date, no time) of its last committed upload, whether it is ``stale`` (no upload
for more than ``STALE_DAYS`` days), and its unfinished uploads (``open_uploads``: the device's
queue on the server side). The last-upload day is the one recorded on the device's credential
row at commit time (``Credential.last_upload_day``), never derived from the person's current
bundles: deriving it leaked a person's deletions (issue 5 bug bash — after the person deleted
their sessions the device turned ``last_upload_day`` null and ``stale``), so a deletion or an
erasure changes nothing on this view. Deliberately **not** shown per device: bundle counts, sizes or upload
times of day — a device belongs to one person, so those would be per-person activity figures.
Volumes are shown fleet-wide only, and grouped figures only for groups of at least
``k_min_persons`` persons (:meth:`~.service.Collector.stats`, the same rule as the curator's).

:func:`backlog`: open (uncommitted) uploads fleet-wide, the age of the oldest (seconds), and the
blobs / bytes they still lack.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, exists, func, select

from .models import Blob, Bundle, BundleBlob, Credential

STALE_DAYS = 7
"""A device that committed nothing for more than this many days is flagged ``stale``
(operational threshold; a weekly review cadence, not a standard). A device that never uploaded
counts from its enrollment (bug bash 3: minutes-old devices were flagged)."""


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def devices(c: Any, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every device credential in enrollment order (see module docstring for the fields:
    ``device_id``, ``label``, ``enrolled_at``, ``revoked``, ``last_upload_day``
    (``"YYYY-MM-DD"`` or ``None``), ``stale`` (bool), ``open_uploads`` (count))."""
    now = now or datetime.now(UTC)
    with c.db.session() as s:
        creds = s.scalars(select(Credential).where(Credential.role == "device")
                          .order_by(Credential.created_at)).all()
        opened = dict(s.execute(select(Bundle.device_id, func.count(Bundle.pk))
                                .where(Bundle.state == "open").group_by(Bundle.device_id)).all())
    out = []
    for d in creds:
        day = d.last_upload_day
        out.append({"device_id": d.id, "label": d.label, "enrolled_at": d.created_at.isoformat(),
                    "revoked": d.revoked_at is not None,
                    "last_upload_day": day.isoformat() if day else None,
                    "stale": (now.date() - (day or _aware(d.created_at).date())).days > STALE_DAYS,
                    "open_uploads": int(opened.get(d.id, 0))})
    return out


def backlog(c: Any, now: datetime | None = None) -> dict[str, Any]:
    """Fleet-wide upload backlog: ``open_uploads`` (bundles begun but not committed),
    ``oldest_open_age_s`` (seconds, ``None`` if none), ``blobs_missing`` and ``bytes_missing``
    (blobs those uploads still lack, bytes)."""
    now = now or datetime.now(UTC)
    with c.db.session() as s:
        n_open, oldest = s.execute(select(func.count(Bundle.pk), func.min(Bundle.created_at))
                                   .where(Bundle.state == "open")).one()
        have = exists().where(and_(Blob.subject_id == Bundle.subject_id,
                                   Blob.sha256 == BundleBlob.sha256))
        nb, nbytes = s.execute(
            select(func.count(), func.coalesce(func.sum(BundleBlob.size), 0))
            .select_from(BundleBlob).join(Bundle, Bundle.pk == BundleBlob.bundle_pk)
            .where(Bundle.state == "open", ~have)).one()
    return {"open_uploads": int(n_open),
            "oldest_open_age_s": round((now - _aware(oldest)).total_seconds(), 1) if oldest else None,
            "blobs_missing": int(nb), "bytes_missing": int(nbytes)}
