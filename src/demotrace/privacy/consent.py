"""Consent: the person's acceptance of the current notice, recorded before any capture.

A consent record is ``<home>/consent.json`` (mode 0600)::

    {"policy_version": 1, "notice_sha256": "<hex>", "accepted_utc": "2026-11-30T01:02:03Z"}

It holds no name and no device identifier. Declining writes nothing (and leaves no trace that
could be reported: DESIGN.md §2.1). :func:`require_consent` is what the recorder calls before
it installs any hook (DESIGN.md §8.1: re-consent on a new version — and on a changed notice
text with the same version, since the digest no longer matches).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass

from ..paths import Paths
from .errors import ConsentRequired
from .policy import Policy

CONSENT_FILE = "consent.json"


@dataclass(frozen=True)
class ConsentRecord:
    """What was accepted: ``policy_version``, ``notice_sha256`` (hex SHA-256 of the notice
    text, see :func:`demotrace.privacy.policy.notice_digest`), ``accepted_utc`` (ISO-8601 UTC,
    second precision, ``Z`` suffix)."""

    policy_version: int
    notice_sha256: str
    accepted_utc: str


def record_consent(paths: Paths, policy: Policy, now: dt.datetime | None = None) -> ConsentRecord:
    """Write the consent record for ``policy`` (atomically, mode 0600) and return it.

    ``now``: the acceptance time (timezone-aware; default: current UTC time).
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    if now.tzinfo is None:
        raise ValueError("record_consent: now must be timezone-aware")
    rec = ConsentRecord(
        policy_version=policy.version,
        notice_sha256=policy.notice_sha256,
        accepted_utc=now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    paths.ensure()
    target = paths.home / CONSENT_FILE
    tmp = target.with_name(f".{CONSENT_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(rec.__dict__, indent=1).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    return rec


def read_consent(paths: Paths) -> ConsentRecord | None:
    """The stored consent record, or ``None`` if there is none or it is unreadable (an
    unreadable record counts as no consent: fail closed)."""
    try:
        data = json.loads((paths.home / CONSENT_FILE).read_text("utf-8"))
        return ConsentRecord(int(data["policy_version"]), str(data["notice_sha256"]), str(data["accepted_utc"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def withdraw_consent(paths: Paths) -> bool:
    """Delete the consent record; returns True if one existed. Recording then refuses to start."""
    try:
        (paths.home / CONSENT_FILE).unlink()
        return True
    except FileNotFoundError:
        return False


def require_consent(paths: Paths, policy: Policy) -> ConsentRecord:
    """Return the consent record if it covers ``policy``; otherwise raise.

    Call this before any capture starts (``demotrace record``).

    Raises:
        ConsentRequired: no record; a record for another policy version; or the notice text
            changed since it was accepted. The message says which, and the fix
            (``demotrace enroll``).
    """
    rec = read_consent(paths)
    if rec is None:
        raise ConsentRequired(
            "recording needs your consent first: run `demotrace enroll` to read the notice"
            f" (policy version {policy.version}) and accept it"
        )
    if rec.policy_version != policy.version:
        raise ConsentRequired(
            f"the policy changed from version {rec.policy_version} (accepted {rec.accepted_utc})"
            f" to version {policy.version}: run `demotrace enroll` to read the new notice and"
            " accept it again"
        )
    if rec.notice_sha256 != policy.notice_sha256:
        raise ConsentRequired(
            f"the notice text of policy version {policy.version} differs from the one you accepted"
            f" on {rec.accepted_utc}: run `demotrace enroll` to read it and accept it again"
        )
    return rec
