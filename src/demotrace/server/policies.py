"""Policy versions and consent records on the collector (issue 5 items 5 and 7; DESIGN.md §8.1).

- **Policy versions**: an admin uploads a capture policy (the TOML that
  :class:`demotrace.privacy.policy.Policy` reads; validated the same way). Versions are
  immutable: uploading the same version again with the same text is a no-op, with another
  text a 409. Exactly one version is *current*; devices fetch it (``GET /v1/policy/current``).
  On first start an empty table is seeded with the built-in policy that ships with demotrace
  (the one a device uses until told otherwise), marked current, ``uploaded_by="built-in"``.
- **Consent**: a sealed bundle carries the consent record its person made on the device
  (``meta.consent`` of the wire manifest: ``policy_version``, ``notice_sha256``,
  ``accepted_utc`` and, from devices that carry it, ``scope_sha256``; see
  :mod:`demotrace.privacy.bundle`). :func:`check_consent` refuses (:class:`ConsentRefused`,
  HTTP 422) a bundle whose consent names a version the server does not know, a notice whose
  digest differs from that version's notice, or a scope digest that differs from
  :func:`scope_digest` of that version's stored TOML (the capture rules the person accepted
  are not the ones this server has under that version); a sealed-session bundle without a
  consent record is refused too. A record without ``scope_sha256`` (older devices) is
  accepted on version and notice alone (documented in docs/operations.md). Bundles of the
  generic layout
  (:func:`demotrace.server.wire.write_local_bundle`: tests, benchmarks, other producers) that
  carry no consent are accepted without a record (documented gap, see docs/operations.md).
  Accepted consent records are stored per person (:class:`~.models.ConsentRecord`) and shown
  in the person's portal with the notice text of their version.
- **Floor warnings**: a device merges every policy over the built-in floor
  (:func:`demotrace.privacy.policy.with_builtin_floor`): built-in deny entries and secret-field
  markers can be extended, never removed. An uploaded policy that tries to remove some (e.g.
  ``[scope.deny.password_manager] apps = []``) is stored — the attempt is ignored on every
  device — but the admin gets the warnings (:func:`floor_warnings`: the same floor function's
  notes, plus one for each built-in deny field the document empties outright) in the upload's
  answer (``"warnings"``) and on the admin page (issue 5 bug bash: it answered 200 silently).
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.orm import Session

from ..privacy.errors import PolicyError
from ..privacy.policy import Policy, default_policy, notice_digest, with_builtin_floor
from .errors import ConflictError, NotFound, ServerError
from .models import ConsentRecord, PolicyVersion

MAX_POLICY_BYTES = 256 * 1024
"""Largest policy TOML accepted (bytes); the shipped default is about 4 KiB."""
MAX_VERSION = 2**31 - 1
"""Largest policy version number (the column is a 32-bit SQL INTEGER)."""


class ConsentRefused(ServerError, PermissionError):
    """A bundle's consent record does not match a policy version the server knows (422)."""

    status = 422


class PolicyRejected(ServerError, ValueError):
    """An uploaded policy is not a valid policy TOML (422; the message names the field)."""

    status = 422


def _row_dict(p: PolicyVersion, *, text: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {"version": p.version, "notice_sha256": p.notice_sha256,
                         "is_current": p.is_current, "uploaded_by": p.uploaded_by,
                         "uploaded_at": p.uploaded_at.isoformat(), "notice": p.notice}
    if text:
        d["toml"] = p.toml_text
    return d


def ensure_builtin(s: Session) -> None:
    """Seed an empty ``policy_versions`` table with the built-in policy, marked current.
    Safe to race (a concurrent seed wins, this one is dropped)."""
    if s.scalar(select(PolicyVersion.version).limit(1)) is not None:
        return
    from importlib import resources

    text = resources.files("demotrace.privacy").joinpath("default_policy.toml").read_text("utf-8")
    pol = default_policy()
    try:
        with s.begin_nested():
            s.add(PolicyVersion(version=pol.version, toml_text=text, notice=pol.notice,
                                notice_sha256=pol.notice_sha256, is_current=True,
                                uploaded_by="built-in", uploaded_at=datetime.now(UTC)))
    except SAIntegrityError:
        pass


def parse_policy(body: bytes) -> tuple[Policy, str]:
    """Validate an uploaded policy; return it and its text.

    Raises:
        PolicyRejected: empty, larger than :data:`MAX_POLICY_BYTES`, not UTF-8, or invalid
            (the message from :meth:`Policy.from_toml` names the field).
    """
    if not body.strip():
        raise PolicyRejected("policy upload is empty: send the policy TOML as the request body")
    if len(body) > MAX_POLICY_BYTES:
        raise PolicyRejected(f"policy upload is {len(body)} bytes, more than {MAX_POLICY_BYTES}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyRejected(f"uploaded policy: not UTF-8 (invalid byte at offset {exc.start})") from exc
    try:
        pol = Policy.from_toml(text, "uploaded policy")
    except PolicyError as exc:
        raise PolicyRejected(str(exc)) from exc
    if pol.version > MAX_VERSION:
        raise PolicyRejected(f"uploaded policy: version {pol.version} is larger than {MAX_VERSION}")
    return pol, text




def floor_warnings(pol: Policy, text: str) -> list[str]:
    """What a device will ignore in this policy, in words (empty: nothing): the notes of
    :func:`demotrace.privacy.policy.with_builtin_floor` (the function a device merges the policy
    with, which also names built-in deny fields the document empties) for ``pol`` and its
    parsed TOML ``text``."""
    return list(with_builtin_floor(pol, declared=tomllib.loads(text)).notes)


def store_policy(s: Session, body: bytes, uploaded_by: str, *, make_current: bool = False) -> dict[str, Any]:
    """Store an uploaded policy version (see module docstring); with ``make_current`` it
    becomes the current one. Returns the stored version's summary plus ``"created"`` and
    ``"warnings"`` (list of str, :func:`floor_warnings`: parts of the policy every device
    ignores because the built-in floor keeps them; the version is stored regardless).

    Raises:
        PolicyRejected: invalid TOML or policy. ConflictError: the version exists with another
            text (versions are immutable; upload it as a new version).
    """
    pol, text = parse_policy(body)
    row = s.get(PolicyVersion, pol.version)
    created = row is None
    if row is None:
        row = PolicyVersion(version=pol.version, toml_text=text, notice=pol.notice,
                            notice_sha256=pol.notice_sha256, is_current=False,
                            uploaded_by=uploaded_by[:64], uploaded_at=datetime.now(UTC))
        s.add(row)
        s.flush()
    elif row.toml_text != text:
        raise ConflictError(f"policy version {pol.version} is already stored with another text; "
                            "versions are immutable: raise `version` in the TOML and upload again")
    if make_current:
        set_current(s, pol.version)
    return {**_row_dict(row), "created": created, "warnings": floor_warnings(pol, text)}


def set_current(s: Session, version: int) -> None:
    """Make ``version`` the current policy (and no other).

    Raises:
        NotFound: no such version.
    """
    if not 1 <= version <= MAX_VERSION or s.get(PolicyVersion, version) is None:
        raise NotFound(f"no policy version {version}")
    s.execute(update(PolicyVersion).where(PolicyVersion.version != version).values(is_current=False))
    s.execute(update(PolicyVersion).where(PolicyVersion.version == version).values(is_current=True))


def list_policies(s: Session) -> list[dict[str, Any]]:
    """Every stored version, newest first (summary with notice text, no TOML)."""
    return [_row_dict(p) for p in
            s.scalars(select(PolicyVersion).order_by(PolicyVersion.version.desc()))]


def current_policy(s: Session) -> dict[str, Any]:
    """The current version with its TOML (``toml``).

    Raises:
        NotFound: no version is current (cannot happen after :func:`ensure_builtin`).
    """
    p = s.scalars(select(PolicyVersion).where(PolicyVersion.is_current.is_(True))).first()
    if p is None:
        raise NotFound("no current policy version; an admin must upload one")
    return _row_dict(p, text=True)


@lru_cache(maxsize=64)
def scope_digest(toml_text: str) -> str:
    """The scope digest a device computes for this policy TOML: the
    :attr:`~demotrace.privacy.policy.Policy.scope_sha256` (hex SHA-256 of the effective capture
    rules) of the policy as :func:`demotrace.privacy.policy.load_policy` loads a
    ``policy.toml`` — parsed, then merged over the built-in floor
    (:func:`~demotrace.privacy.policy.with_builtin_floor`). Cached per text (versions are
    immutable), so ingest pays the parse once per version and process.

    Raises:
        PolicyError: the text is not a valid policy (cannot happen for stored versions, which
            were validated on upload).
    """
    data = tomllib.loads(toml_text)
    return with_builtin_floor(Policy.from_dict(data, "stored policy"), declared=data).scope_sha256


_HEX = frozenset("0123456789abcdef")


def check_consent(s: Session, meta: dict[str, Any], subject_id: str) -> dict[str, Any] | None:
    """Check the consent record of an uploaded bundle's ``meta`` (see module docstring) and
    store it for the person; return it, or ``None`` for a generic bundle without one.

    Raises:
        ConsentRefused: malformed record (also a ``scope_sha256`` that is not 64 lowercase hex
            digits); unknown policy version; notice digest or scope digest that differs from
            the stored version's; a sealed-session bundle without a record.
    """
    c = meta.get("consent")
    if c is None:
        if meta.get("kind") == "sealed-session":
            raise ConsentRefused("bundle refused: it carries no consent record (sealed before "
                                 "consent was recorded in bundles?); run `demotrace enroll`, "
                                 "then seal the session again")
        return None
    try:
        version = int(c["policy_version"])
        digest = str(c["notice_sha256"])
        accepted = str(c["accepted_utc"])[:40]
    except (KeyError, TypeError, ValueError) as exc:
        raise ConsentRefused(f"bundle refused: meta.consent is malformed ({exc!r}); expected "
                             "policy_version, notice_sha256, accepted_utc") from exc
    scope = c.get("scope_sha256")
    if scope is not None and not (isinstance(scope, str) and len(scope) == 64
                                  and set(scope) <= _HEX):
        raise ConsentRefused(f"bundle refused: meta.consent.scope_sha256 is malformed "
                             f"({str(scope)[:80]!r}); expected 64 lowercase hex digits")
    row = s.get(PolicyVersion, version) if 1 <= version <= MAX_VERSION else None
    if row is None:
        known = ", ".join(str(v) for v in s.scalars(select(PolicyVersion.version)
                                                    .order_by(PolicyVersion.version)))
        raise ConsentRefused(f"bundle refused: its consent names policy version {version}, "
                             f"which this server does not know (known: {known or 'none'}); "
                             "an admin must upload that policy version")
    if row.notice_sha256 != digest:
        raise ConsentRefused(f"bundle refused: the notice consented to (sha256 {digest[:12]}…) is "
                             f"not the notice of policy version {version} on this server "
                             f"(sha256 {row.notice_sha256[:12]}…)")
    if scope is not None and scope != (known_scope := scope_digest(row.toml_text)):
        raise ConsentRefused(f"bundle refused: the capture rules consented to (scope sha256 "
                             f"{scope[:12]}…) are not the rules of policy version {version} on "
                             f"this server (scope sha256 {known_scope[:12]}…); the device "
                             "recorded under a changed policy.toml: fetch the current policy, "
                             "run `demotrace enroll` again and re-seal")
    if s.get(ConsentRecord, (subject_id, version, accepted)) is None:
        try:
            with s.begin_nested():
                s.add(ConsentRecord(subject_id=subject_id, policy_version=version,
                                    accepted_utc=accepted, notice_sha256=digest,
                                    first_seen_at=datetime.now(UTC)))
        except SAIntegrityError:
            pass  # stored by a concurrent upload of another bundle
    out = {"policy_version": version, "notice_sha256": digest, "accepted_utc": accepted}
    if scope is not None:
        out["scope_sha256"] = scope
    return out


def person_consents(s: Session, subject_id: str) -> list[dict[str, Any]]:
    """The person's consent records (newest acceptance first), each with the ``notice`` text of
    its policy version and whether the digest still matches (``notice_matches``)."""
    out = []
    for r in s.scalars(select(ConsentRecord).where(ConsentRecord.subject_id == subject_id)
                       .order_by(ConsentRecord.accepted_utc.desc())):
        p = s.get(PolicyVersion, r.policy_version)
        out.append({"policy_version": r.policy_version, "accepted_utc": r.accepted_utc,
                    "notice_sha256": r.notice_sha256,
                    "notice": p.notice if p is not None else None,
                    "notice_matches": p is not None and notice_digest(p.notice) == r.notice_sha256,
                    "first_seen_at": r.first_seen_at.isoformat()})
    return out
