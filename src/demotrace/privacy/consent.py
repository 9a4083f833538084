"""Consent: the person's acceptance of the current notice, recorded before any capture.

A consent record is ``<home>/consent.json`` (mode 0600)::

    {"policy_version": 1, "notice_sha256": "<hex>", "scope_sha256": "<hex>",
     "accepted_utc": "2026-11-30T01:02:03Z"}

It holds no name and no device identifier. Declining writes nothing (and leaves no trace that
could be reported: DESIGN.md §2.1). :func:`require_consent` is what the recorder calls before
it installs any hook (DESIGN.md §8.1: re-consent on a new version — and on a changed notice
text with the same version, since the digest no longer matches).

``scope_sha256`` (issue #4) is :attr:`demotrace.privacy.policy.Policy.scope_sha256` of the
*effective* policy accepted: its capture scope (allow-lists, time windows, the merged deny-list),
secret-field rules, redaction settings and raw retention. A consent stays valid only while that
digest is unchanged, so a ``policy.toml`` that changes what is captured — even under the same
version and notice — asks for consent again. A record written before this field existed has no
``scope_sha256``; it cannot show which scope was accepted, so it no longer covers recording
(fail closed: ``demotrace enroll`` once more). Such records still read (``scope_sha256`` is
``None``), so nothing else that reads them breaks.

A ``consent.json`` that exists but cannot be read (not JSON, missing fields, unreadable file)
is *damaged*: it counts as no consent, and :func:`require_consent` says so and names the file.
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
    second precision, ``Z`` suffix), ``scope_sha256`` (hex SHA-256 of the effective capture
    rules, :attr:`~demotrace.privacy.policy.Policy.scope_sha256`; ``None`` in a record made
    before it was kept)."""

    policy_version: int
    notice_sha256: str
    accepted_utc: str
    scope_sha256: str | None = None


class ConsentDamaged(ConsentRequired):
    """``consent.json`` exists but cannot be read; the message names the file and the fix."""


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
        scope_sha256=policy.scope_sha256,
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
    """The stored consent record, or ``None`` if there is none or it is damaged (a damaged
    record counts as no consent: fail closed; :func:`load_consent` says why)."""
    try:
        return load_consent(paths)
    except ConsentDamaged:
        return None


def load_consent(paths: Paths) -> ConsentRecord | None:
    """The stored consent record, or ``None`` if there is none.

    Raises:
        ConsentDamaged: ``<home>/consent.json`` exists but is not a readable record (not
            UTF-8 JSON, not an object, a field missing or of the wrong type); the message
            names the file and what is wrong.
    """
    f = paths.home / CONSENT_FILE
    try:
        raw = f.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConsentDamaged(_damaged(f, f"cannot be read: {exc.strerror or exc}")) from exc
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConsentDamaged(_damaged(f, f"is not valid JSON ({exc})")) from exc
    if not isinstance(data, dict):
        raise ConsentDamaged(_damaged(f, f"holds a JSON {type(data).__name__}, not an object"))
    for key, typ in (("policy_version", int), ("notice_sha256", str), ("accepted_utc", str)):
        if key not in data:
            raise ConsentDamaged(_damaged(f, f"has no field {key!r}"))
        if not isinstance(data[key], typ) or isinstance(data[key], bool):
            raise ConsentDamaged(_damaged(f, f"field {key!r} is not a {typ.__name__}"))
    scope = data.get("scope_sha256")
    if scope is not None and not isinstance(scope, str):
        raise ConsentDamaged(_damaged(f, "field 'scope_sha256' is not a string"))
    return ConsentRecord(data["policy_version"], data["notice_sha256"], data["accepted_utc"], scope)


def _damaged(f: object, what: str) -> str:
    return (f"your consent record {f} is damaged: it {what}; recording needs a readable one: run"
            " `demotrace enroll` to read the notice and accept it again (this replaces the file)")


def withdraw_consent(paths: Paths) -> bool:
    """Delete the consent record; returns True if one existed. Recording then refuses to start."""
    try:
        (paths.home / CONSENT_FILE).unlink()
        return True
    except FileNotFoundError:
        return False


def consent_problem(paths: Paths, policy: Policy) -> tuple[ConsentRecord | None, str | None]:
    """``(record, None)`` if the stored consent covers ``policy``; else ``(record or None,
    reason)`` where ``reason`` is the sentence :func:`require_consent` raises with (it names
    what changed and the fix, ``demotrace enroll``)."""
    try:
        rec = load_consent(paths)
    except ConsentDamaged as exc:
        return None, str(exc)
    if rec is None:
        return None, ("recording needs your consent first: run `demotrace enroll` to read the notice"
                      f" (policy version {policy.version}) and accept it")
    if rec.policy_version != policy.version:
        return rec, (f"the policy changed from version {rec.policy_version} (accepted {rec.accepted_utc})"
                     f" to version {policy.version}: run `demotrace enroll` to read the new notice and"
                     " accept it again")
    if rec.notice_sha256 != policy.notice_sha256:
        return rec, (f"the notice text of policy version {policy.version} differs from the one you accepted"
                     f" on {rec.accepted_utc}: run `demotrace enroll` to read it and accept it again")
    if rec.scope_sha256 is None:
        return rec, (f"your consent of {rec.accepted_utc} does not record which capture scope you accepted"
                     " (it predates that check): run `demotrace enroll` to review what is captured"
                     " (`demotrace policy show`) and accept it again")
    if rec.scope_sha256 != policy.scope_sha256:
        return rec, (f"what is captured changed since you accepted on {rec.accepted_utc} (the capture scope,"
                     f" secret-field or redaction settings of {policy.source} differ, under the same version"
                     f" {policy.version}): see `demotrace policy show`, then run `demotrace enroll` to accept"
                     " it again")
    return rec, None


def require_consent(paths: Paths, policy: Policy) -> ConsentRecord:
    """Return the consent record if it covers ``policy``; otherwise raise.

    Call this before any capture starts (``demotrace record``). A record covers ``policy``
    when its version, notice digest and scope digest (:attr:`Policy.scope_sha256`) all match.

    Raises:
        ConsentDamaged: ``consent.json`` exists but is unreadable (names the file).
        ConsentRequired: no record; a record for another policy version; the notice text
            changed; the effective capture scope / secret-field / redaction settings changed;
            or a record without a scope digest. The message says which, and the fix
            (``demotrace enroll``).
    """
    load_consent(paths)  # ConsentDamaged, with its own type
    rec, problem = consent_problem(paths, policy)
    if problem is not None or rec is None:
        raise ConsentRequired(problem or "recording needs your consent first: run `demotrace enroll`")
    return rec
