"""Server-side keys: envelope encryption, pseudonyms, crypto-shredding.

- :class:`KeyManager` — wraps and unwraps data keys under a master key, with an *encryption
  context* bound as associated data (the shape of AWS KMS ``Encrypt``/``Decrypt`` and
  Vault Transit, so a KMS-backed implementation only has to implement two methods).
  :class:`LocalKeyManager` keeps the 32-byte master key in a file of mode 0600.
- :class:`DataCipher` — AES-256-GCM under one person's data key (subkeys derived with
  HKDF-SHA256): ``encrypt``/``decrypt`` with associated data, and ``object_name`` which turns a
  blob's sha256 into its blob-store name (keyed, so a store listing reveals neither the content
  hash nor, once the key is destroyed, which objects belonged to whom).
- :class:`Keyring` — the ``person_keys`` table: one wrapped data key per subject, created on
  first use; :meth:`Keyring.destroy` deletes it (crypto-shredding, DESIGN.md §8.6).
- :class:`Pseudonymiser` — ``subject_id = HMAC-SHA256(secret, normalised identity)`` as 64 hex
  digits; the secret lives in its own 0600 file, so subject ids cannot be recomputed from a
  list of e-mail addresses without it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import threading
import unicodedata
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from ..errors import ConfigError, DecryptionError, KeyMissing
from .errors import KeyDestroyed
from .models import Person, PersonKey

KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID = text("SELECT key_id FROM person_keys WHERE subject_id = :sid")


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def read_secret_file(path: Path, nbytes: int = KEY_BYTES, *, create: bool = False) -> bytes:
    """Read an ``nbytes`` secret from ``path`` (must be mode 0600 or stricter).

    ``create``: make a new random one with ``O_EXCL`` and mode 0600 when the file is absent.

    Raises:
        KeyMissing: absent and ``create`` is false.
        ConfigError: readable by group/others (fix named), or wrong size.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        if not create:
            raise KeyMissing(f"key file not found: {path}") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return read_secret_file(path, nbytes)
        try:
            os.write(fd, secrets.token_bytes(nbytes))
            os.fsync(fd)
        finally:
            os.close(fd)
        return read_secret_file(path, nbytes)
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"key file {path} is accessible to other users (mode {oct(st.st_mode & 0o777)}); "
            f"fix: chmod 600 {path}"
        )
    data = path.read_bytes()
    if len(data) != nbytes:
        raise ConfigError(f"key file {path} has {len(data)} bytes, expected {nbytes}")
    return data


class KeyManager(ABC):
    """Wraps data keys under a master key. ``context`` is bound as associated data: a wrapped
    key only unwraps with the same context (the subject id), so wrapped keys cannot be swapped
    between persons."""

    @abstractmethod
    def wrap(self, data_key: bytes, context: str) -> bytes:
        """Encrypt ``data_key`` (32 bytes) for storage."""

    @abstractmethod
    def unwrap(self, wrapped: bytes, context: str) -> bytes:
        """Inverse of :meth:`wrap`.

        Raises:
            DecryptionError: wrong master key, wrong context or altered bytes.
        """


class LocalKeyManager(KeyManager):
    """Master key from a local file (32 random bytes, mode 0600); AES-256-GCM key wrapping."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != KEY_BYTES:
            raise ConfigError(f"master key must be {KEY_BYTES} bytes, got {len(master_key)}")
        self._aead = AESGCM(_hkdf(master_key, b"demotrace server key-wrap v1"))

    def __repr__(self) -> str:
        return "LocalKeyManager(master_key=***)"

    @classmethod
    def from_file(cls, path: Path, *, create: bool = False) -> "LocalKeyManager":
        """Load (or with ``create``, make) the master key file. Errors as :func:`read_secret_file`."""
        return cls(read_secret_file(path, create=create))

    def wrap(self, data_key: bytes, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data_key, b"wrap:" + context.encode())

    def unwrap(self, wrapped: bytes, context: str) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:],
                                      b"wrap:" + context.encode())
        except InvalidTag as exc:
            raise DecryptionError(f"wrapped key for {context[:12]}… does not unwrap") from exc


class DataCipher:
    """AES-256-GCM under one person's data key. Ciphertext = ``nonce(12) || ct+tag(16)``."""

    __slots__ = ("_aead", "_name_key", "key_id")

    def __init__(self, data_key: bytes, key_id: str) -> None:
        self._aead = AESGCM(_hkdf(data_key, b"demotrace server data v1"))
        self._name_key = _hkdf(data_key, b"demotrace server object name v1")
        self.key_id = key_id

    def __repr__(self) -> str:
        return f"DataCipher(key_id={self.key_id!r}, key=***)"

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt ``plaintext`` bound to ``aad``; output is 28 bytes longer."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        """Inverse of :meth:`encrypt`.

        Raises:
            DecryptionError: wrong key or ``aad``, or altered bytes.
        """
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError("server ciphertext does not authenticate") from exc

    def object_name(self, sha256_hex: str) -> str:
        """Blob-store name of the blob with this sha256: HMAC-SHA256(name key, sha256), hex."""
        return hmac.new(self._name_key, sha256_hex.encode(), hashlib.sha256).hexdigest()


class Keyring:
    """Per-person data keys in the ``person_keys`` table, wrapped by a :class:`KeyManager`.

    Unwrapped keys are cached in memory (per process) for ``cache_size`` subjects; ``destroy``
    evicts. Thread-safe.
    """

    def __init__(self, km: KeyManager, cache_size: int = 1024) -> None:
        self.km = km
        self._cache: dict[str, DataCipher] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def get(self, s: Session, subject_id: str, *, create: bool = False) -> DataCipher:
        """The person's cipher; with ``create``, make the person and key on first use.

        Raises:
            KeyDestroyed: no key (never created, or destroyed by erasure) and not ``create``.
        """
        with self._lock:
            c = self._cache.get(subject_id)
        if c is not None:
            # The row may have been destroyed by another process — and REPLACED by a new key
            # if the person uploaded again after an erasure: the cached cipher is used only if
            # the stored row is still the same key (its key_id), else a destroyed key would
            # encrypt new data (bug bash 3, --workers 2). One fixed-text Core query, no ORM.
            row = s.connection().execute(_KEY_ID, {"sid": subject_id}).first()
            if row is not None and row[0] == c.key_id:
                return c
            with self._lock:
                self._cache.pop(subject_id, None)
        row = s.get(PersonKey, subject_id)
        if row is None:
            if not create:
                raise KeyDestroyed(f"no data key for subject {subject_id[:12]}… (erased or unknown)")
            now = datetime.now(UTC)
            person = s.get(Person, subject_id)
            if person is None:
                s.add(Person(subject_id=subject_id, created_at=now))
            else:
                person.erased_at = None
            dk = secrets.token_bytes(KEY_BYTES)
            row = PersonKey(subject_id=subject_id, key_id=secrets.token_hex(16),
                            wrapped=self.km.wrap(dk, subject_id), created_at=now)
            s.add(row)
            s.flush()
        else:
            dk = self.km.unwrap(row.wrapped, subject_id)
        c = DataCipher(dk, row.key_id)
        with self._lock:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[subject_id] = c
        return c

    def destroy(self, s: Session, subject_id: str) -> bool:
        """Delete the person's wrapped key (crypto-shredding); return whether one existed."""
        with self._lock:
            self._cache.pop(subject_id, None)
        n = s.execute(delete(PersonKey).where(PersonKey.subject_id == subject_id)).rowcount
        return bool(n)

    def subjects(self, s: Session) -> list[str]:
        """Subjects that currently hold a key."""
        return list(s.scalars(select(PersonKey.subject_id)))


class Pseudonymiser:
    """``subject_id(identity)`` = HMAC-SHA256(secret, NFC-normalised, case-folded, stripped
    identity) as 64 hex digits (identities are e-mail-like account names)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ConfigError("pseudonym secret must be at least 16 bytes")
        self._secret = secret

    def __repr__(self) -> str:
        return "Pseudonymiser(secret=***)"

    @classmethod
    def from_file(cls, path: Path, *, create: bool = False) -> "Pseudonymiser":
        """Load (or with ``create``, make) the 0600 secret file."""
        return cls(read_secret_file(path, create=create))

    @staticmethod
    def normalise(identity: str) -> str:
        """The canonical form hashed: NFC, trimmed, case-folded.

        Raises:
            ConfigError: empty identity.
        """
        norm = unicodedata.normalize("NFC", identity).strip().casefold()
        if not norm:
            raise ConfigError("person identity is empty")
        return norm

    def subject_id(self, identity: str) -> str:
        """The pseudonymous subject id of ``identity``."""
        return hmac.new(self._secret, self.normalise(identity).encode(), hashlib.sha256).hexdigest()

    def session_key(self, subject_id: str, session_id: str) -> str:
        """Keyed hash naming one recording session of one subject in a tombstone: hex
        HMAC-SHA256(secret, ``"session-tombstone\\0" + subject_id + "\\0" + session_id``)
        (domain-separated from :meth:`subject_id`; session ids are compared exactly)."""
        msg = f"session-tombstone\0{subject_id}\0{session_id}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()
