"""Bulk-read alert (DESIGN.md §8.8 "alert on bulk reads"; issue 5 item 5).

A curator credential that reads (manifest or blob, ``curator.read_manifest`` /
``curator.read_blob`` entries of the access log) more than ``max_bundles`` distinct bundles
within ``window_s`` seconds raises an alert: one ``alert.bulk_read`` entry in the access log
(hash-chained and signed like every entry, actor = that curator, ``subject_id`` none,
``resource`` = ``"curator:<id> read <n> bundles in <window> s (limit <max>)"``), at most one per
curator per window. The count comes from the access log itself (index ``(actor_id, ts)``), so
it holds across restarts and across server processes. Auditors list alerts with
``GET /v1/audit/alerts`` (:func:`list_alerts`).

Defaults (``ServerConfig.bulk_read_max_bundles`` = 100, ``bulk_read_window_s`` = 3600 s): no
standard exists; a person reviewing data reads a few sessions an hour, while copying a fleet's
data reads hundreds, and building a training set is exactly the bulk read auditors should see.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .audit import Access
from .models import AuditEntry

READ_ACTIONS = ("curator.read_manifest", "curator.read_blob")
ALERT_ACTION = "alert.bulk_read"


def _since(window_s: float) -> str:
    # same format as audit.now_ts(), so ISO strings compare in time order
    return (datetime.now(UTC) - timedelta(seconds=window_s)).isoformat(timespec="microseconds")


def bulk_read_check(s: Session, actor_id: str, subject_id: str, bundle_id: str, *,
                    max_bundles: int, window_s: float) -> Access | None:
    """The alert entry to log for a curator about to read ``bundle_id`` of ``subject_id``, or
    ``None``: more than ``max_bundles`` distinct (subject, bundle) pairs read by ``actor_id``
    within the last ``window_s`` seconds (this read included) and no alert for this actor in
    that window yet."""
    since = _since(window_s)
    rows = s.execute(select(AuditEntry.subject_id, AuditEntry.resource).distinct().where(
        AuditEntry.actor_id == actor_id, AuditEntry.ts >= since,
        AuditEntry.action.in_(READ_ACTIONS), AuditEntry.status < 400)).all()
    seen = {(sid, res.split("/", 1)[0]) for sid, res in rows}
    seen.add((subject_id, f"bundle:{bundle_id}"))
    if len(seen) <= max_bundles:
        return None
    raised = s.scalar(select(AuditEntry.seq).where(
        AuditEntry.actor_id == actor_id, AuditEntry.action == ALERT_ACTION,
        AuditEntry.ts >= since).limit(1))
    if raised is not None:
        return None
    return Access(ALERT_ACTION, None,
                  f"curator:{actor_id} read {len(seen)} bundles in {window_s:g} s "
                  f"(limit {max_bundles})")


def list_alerts(s: Session) -> list[dict[str, Any]]:
    """Every alert entry of the access log, newest first (``seq``, ``ts``, ``actor_role``,
    ``actor_id``, ``action``, ``resource``)."""
    return [{"seq": e.seq, "ts": e.ts, "actor_role": e.actor_role, "actor_id": e.actor_id,
             "action": e.action, "resource": e.resource}
            for e in s.scalars(select(AuditEntry).where(AuditEntry.action.like("alert.%"))
                               .order_by(AuditEntry.seq.desc()))]
