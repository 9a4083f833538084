"""Credentials, one-time enrollment codes and roles (DESIGN.md §8.8; issue 5 items 2 and 5).

- A **credential** is a bearer token ``dtc_<id>_<secret>`` (``id``: 16 hex digits, public;
  ``secret``: 256 random bits, URL-safe base64). The server stores only SHA-256(secret) (a fast
  hash suffices: the secret has 256 bits of entropy, so there is nothing to brute-force) and
  compares in constant time.
- An **enrollment code** ``dte_<id>_<secret>`` is created by an admin (API or the
  ``demotrace admin enroll-code`` command on the server host), lives ``enrollment_ttl_s``, and
  is exchanged exactly once for a credential of its role; for ``device`` and ``person`` codes
  the credential is bound to the person's subject id.
- A **portal session** ``dts_<id>_<secret>`` (same shape) is what the portal's cookie holds —
  never the credential itself (issue 5 bug bash: the cookie was the raw credential, so logging
  out could not invalidate it). :func:`create_portal_session` issues one at sign-in; the server
  stores only SHA-256(secret), the credential it acts as and its expiry
  (:data:`PORTAL_SESSION_TTL_S`); :func:`end_portal_session` revokes it on logout and
  :func:`revoke` revokes every session of a revoked credential (and :func:`resolve_portal_session`
  refuses a session whose credential is revoked in any case). A session token is not a
  bearer credential: the API refuses it.
- **Roles**: ``device`` (uploads for its person), ``person`` (own data only), ``curator``
  (pseudonymised data, purpose "agent-training"), ``admin`` (devices, codes, policy versions,
  fleet health — never captures), ``auditor`` (the access log and its bulk-read alerts). A
  route states the roles it admits with
  :func:`allow`; a route without such a statement makes :func:`~.app.create_app` fail (deny by
  default).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from ..errors import ConfigError
from .errors import AuthError, NotFound
from .models import ROLES, Credential, EnrollmentCode, PortalSession

CREDENTIAL_PREFIX = "dtc"
CODE_PREFIX = "dte"
SESSION_PREFIX = "dts"
PORTAL_SESSION_TTL_S = 8 * 3600
"""Lifetime of a portal session, seconds (absolute, from sign-in): a working day. Source: the
OWASP Session Management Cheat Sheet's absolute timeouts of 4-8 hours for applications used
over an office day; the cookie's ``Max-Age`` is the same."""
_KINDS = {CREDENTIAL_PREFIX: "credential", CODE_PREFIX: "enrollment code",
          SESSION_PREFIX: "portal session"}
SUBJECT_ROLES = frozenset({"device", "person"})
"""Roles whose credential is bound to one person's subject id."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``credential_id`` (public id), ``role``, and ``subject_id`` (for
    ``device``/``person``; ``None`` otherwise)."""

    credential_id: str
    role: str
    subject_id: str | None = None


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of a token secret (what the database stores)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(prefix: str) -> tuple[str, str, str]:
    """A fresh ``(id, secret, token)`` with ``token = f"{prefix}_{id}_{secret}"``."""
    tid = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32).replace("_", "-")
    return tid, secret, f"{prefix}_{tid}_{secret}"


def parse_token(token: str, prefix: str) -> tuple[str, str]:
    """Split ``prefix_id_secret`` into ``(id, secret)``.

    Raises:
        AuthError: any other shape (the message says which kind of token was expected).
    """
    parts = token.strip().split("_")
    if len(parts) != 3 or parts[0] != prefix or len(parts[1]) != 16 or not parts[2]:
        kind = _KINDS.get(prefix, prefix)
        raise AuthError(f"malformed {kind}: expected {prefix}_<id>_<secret>")
    return parts[1], parts[2]


def claimed_id(authorization: str | None) -> str | None:
    """The credential id claimed by an ``Authorization: Bearer dtc_…`` header, unverified
    (used only to key the rate limiter)."""
    if not authorization or authorization[:7].lower() != "bearer ":  # RFC 7235: any case
        return None
    try:
        return parse_token(authorization[7:].strip(), CREDENTIAL_PREFIX)[0]
    except AuthError:
        return None


def authenticate(s: Session, token: str) -> Principal:
    """Resolve a bearer token.

    Raises:
        AuthError: malformed, unknown, wrong secret, or revoked (one message for the last three,
            so a caller cannot probe which ids exist).
    """
    cid, secret = parse_token(token, CREDENTIAL_PREFIX)
    cred = s.get(Credential, cid)
    ok = cred is not None and hmac.compare_digest(cred.secret_hash, hash_secret(secret))
    if not ok or cred is None or cred.revoked_at is not None:
        raise AuthError("credential unknown or revoked")
    return Principal(cred.id, cred.role, cred.subject_id)


class CredentialCache:
    """Recently authenticated credentials, kept ``ttl_s`` seconds (default 2 s) so that a
    burst of uploads does not cost a database round trip per request. Revocation through this
    process clears it at once; another process of the same deployment honours a revocation
    within ``ttl_s``. Keys are SHA-256 of the whole token (the token itself is not kept)."""

    def __init__(self, ttl_s: float = 2.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._d: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, token: str, now: float) -> Principal | None:
        """The cached principal for ``token`` if still fresh."""
        k = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            hit = self._d.get(k)
        if hit is None or hit[0] < now:
            return None
        return hit[1]

    def put(self, token: str, p: Principal, now: float) -> None:
        """Remember ``p`` for ``token`` until ``now + ttl_s``."""
        k = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            if len(self._d) >= self.max_entries:
                self._d.clear()
            self._d[k] = (now + self.ttl_s, p)

    def clear(self) -> None:
        """Forget everything (called on revocation)."""
        with self._lock:
            self._d.clear()


def create_credential(s: Session, role: str, *, subject_id: str | None = None,
                      label: str = "") -> tuple[Principal, str]:
    """Create a credential directly (server-side tooling and tests); return it and its token.

    Raises:
        ConfigError: unknown role, or a subject id missing/present against the role.
    """
    _check_role(role, subject_id)
    tid, secret, token = new_token(CREDENTIAL_PREFIX)
    s.add(Credential(id=tid, secret_hash=hash_secret(secret), role=role, subject_id=subject_id,
                     label=label[:200], created_at=datetime.now(UTC)))
    s.flush()
    return Principal(tid, role, subject_id), token


def _check_role(role: str, subject_id: str | None) -> None:
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if role in SUBJECT_ROLES and not subject_id:
        raise ConfigError(f"a {role} code or credential needs the person it belongs to")
    if role not in SUBJECT_ROLES and subject_id:
        raise ConfigError(f"a {role} code or credential is not bound to a person")


def create_enrollment_code(s: Session, role: str, *, subject_id: str | None, created_by: str,
                           ttl_s: int) -> tuple[str, datetime]:
    """Create a one-time code; return ``(code, expires_at)``.

    Raises:
        ConfigError: as :func:`create_credential`, or ``ttl_s`` not positive.
    """
    _check_role(role, subject_id)
    if ttl_s <= 0:
        raise ConfigError(f"enrollment code lifetime must be positive, got {ttl_s} s")
    tid, secret, code = new_token(CODE_PREFIX)
    now = datetime.now(UTC)
    expires = now + timedelta(seconds=ttl_s)
    s.add(EnrollmentCode(id=tid, secret_hash=hash_secret(secret), role=role,
                         subject_id=subject_id, created_by=created_by[:64], created_at=now,
                         expires_at=expires))
    s.flush()
    return code, expires


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def enroll(s: Session, code: str, label: str = "", *,
           roles: tuple[str, ...] | None = None) -> tuple[Principal, str]:
    """Exchange a one-time code for a credential (the code is spent atomically: of two
    concurrent exchanges exactly one succeeds). ``roles``: the roles this exchange may create;
    a code for another role is refused BEFORE it is spent (the portal takes person, admin and
    auditor codes; a device code pasted there stays usable by the device — bug bash 3).

    Raises:
        AuthError: malformed, unknown, expired or already used code, or a role not in ``roles``
            (the message names the role; the code is not spent).
    """
    cid, secret = parse_token(code, CODE_PREFIX)
    row = s.get(EnrollmentCode, cid)
    if row is None or not hmac.compare_digest(row.secret_hash, hash_secret(secret)):
        raise AuthError("enrollment code unknown")
    now = datetime.now(UTC)
    if row.used_at is not None:
        raise AuthError("enrollment code already used; ask an admin for a new one")
    if _aware(row.expires_at) <= now:
        raise AuthError("enrollment code expired; ask an admin for a new one")
    if roles is not None and row.role not in roles:
        raise AuthError(f"this is a {row.role} enrollment code, which cannot be used here "
                        f"(accepted: {', '.join(roles)}); it was not spent")
    spent = s.execute(update(EnrollmentCode).where(EnrollmentCode.id == cid,
                                                   EnrollmentCode.used_at.is_(None))
                      .values(used_at=now)).rowcount
    if spent != 1:
        raise AuthError("enrollment code already used; ask an admin for a new one")
    principal, token = create_credential(s, row.role, subject_id=row.subject_id, label=label)
    row.credential_id = principal.credential_id
    return principal, token


def revoke(s: Session, credential_id: str) -> None:
    """Revoke a credential (idempotent).

    Raises:
        NotFound: no such credential.
    """
    cred = s.get(Credential, credential_id)
    if cred is None:
        raise NotFound(f"no credential {credential_id!r}")
    now = datetime.now(UTC)
    if cred.revoked_at is None:
        cred.revoked_at = now
    s.execute(update(PortalSession).where(PortalSession.credential_id == credential_id,
                                          PortalSession.revoked_at.is_(None))
              .values(revoked_at=now))


def create_portal_session(s: Session, credential_id: str,
                          ttl_s: int = PORTAL_SESSION_TTL_S) -> tuple[str, datetime]:
    """Issue a portal session acting as ``credential_id``; return ``(token, expires_at)``.
    ``token`` = ``dts_<id>_<secret>`` (256-bit secret, only its SHA-256 is stored); it goes in
    the portal cookie instead of the credential.

    Raises:
        ConfigError: ``ttl_s`` not positive.
    """
    if ttl_s <= 0:
        raise ConfigError(f"portal session lifetime must be positive, got {ttl_s} s")
    tid, secret, token = new_token(SESSION_PREFIX)
    now = datetime.now(UTC)
    expires = now + timedelta(seconds=ttl_s)
    s.add(PortalSession(id=tid, secret_hash=hash_secret(secret), credential_id=credential_id,
                        created_at=now, expires_at=expires))
    s.flush()
    return token, expires


def resolve_portal_session(s: Session, token: str) -> Principal:
    """The principal a portal session token acts as.

    Raises:
        AuthError: malformed token (also a credential or code: the cookie must hold a session),
            unknown, wrong secret, ended (logout), expired, or its credential revoked — one
            message for all but the first, so a caller cannot probe which ids exist.
    """
    sid, secret = parse_token(token, SESSION_PREFIX)
    row = s.get(PortalSession, sid)
    ok = row is not None and hmac.compare_digest(row.secret_hash, hash_secret(secret))
    if not ok or row is None or row.revoked_at is not None \
            or _aware(row.expires_at) <= datetime.now(UTC):
        raise AuthError("portal session unknown, ended or expired; sign in again")
    cred = s.get(Credential, row.credential_id)
    if cred is None or cred.revoked_at is not None:
        raise AuthError("portal session unknown, ended or expired; sign in again")
    return Principal(cred.id, cred.role, cred.subject_id)


def end_portal_session(s: Session, token: str) -> bool:
    """Revoke the portal session ``token`` (logout). Idempotent; a malformed or unknown token
    (or a wrong secret) changes nothing. Returns whether a live session was ended."""
    try:
        sid, secret = parse_token(token, SESSION_PREFIX)
    except AuthError:
        return False
    row = s.get(PortalSession, sid)
    if row is None or not hmac.compare_digest(row.secret_hash, hash_secret(secret)) \
            or row.revoked_at is not None:
        return False
    row.revoked_at = datetime.now(UTC)
    return True
