"""At-rest encryption of the local spool.

AES-256-GCM (``cryptography``) with a per-user 32-byte data key kept in a key file of mode
0600 (created with ``O_EXCL`` so it is never readable by others, even for an instant). Each
sealed item is ``nonce (12 bytes) || ciphertext+tag``; the associated data binds it to its
place (session id and sequence number, or blob id), so items cannot be swapped undetected.

Blob ids are keyed BLAKE2b-256 digests (key derived with HKDF-SHA256 from the data key): equal
content deduplicates, yet a third party cannot test whether a known screenshot is present.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import ConfigError, DecryptionError, KeyMissing

KEY_BYTES = 32
NONCE_BYTES = 12


def _derive(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


class DataKey:
    """A per-user data key and the operations that use it.

    The key bytes never appear in ``repr``. Construct with :meth:`load`, :meth:`create` or
    :meth:`load_or_create`.
    """

    __slots__ = ("_aead", "_id_key", "fingerprint")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ConfigError(f"data key must be {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(_derive(key, b"demotrace spool aes-256-gcm v1"))
        self._id_key = _derive(key, b"demotrace blob id v1")
        #: Short public fingerprint (first 8 hex of SHA-256 of a derived value), for display.
        self.fingerprint = hashlib.sha256(_derive(key, b"fingerprint")).hexdigest()[:8]

    def __repr__(self) -> str:
        return f"DataKey(fingerprint={self.fingerprint!r}, key=***)"

    # -- key file -----------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path) -> "DataKey":
        """Create a new random key file at ``path`` with mode 0600.

        Raises:
            FileExistsError: a key file already exists (never overwritten).
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        key = os.urandom(KEY_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        return cls(key)

    @classmethod
    def load(cls, path: Path) -> "DataKey":
        """Load the key file.

        Raises:
            KeyMissing: no file at ``path``.
            ConfigError: the file is readable by group or others (fix: ``chmod 600 PATH``), or
                has the wrong size.
        """
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            raise KeyMissing(f"data key not found at {path}") from exc
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"data key {path} is accessible to other users (mode {oct(st.st_mode & 0o777)});"
                f" fix: chmod 600 {path}"
            )
        data = path.read_bytes()
        if len(data) != KEY_BYTES:
            raise ConfigError(f"data key {path} has {len(data)} bytes, expected {KEY_BYTES}")
        return cls(data)

    @classmethod
    def load_or_create(cls, path: Path) -> "DataKey":
        """Load the key at ``path``, creating it (0600) if absent."""
        try:
            return cls.load(path)
        except KeyMissing:
            try:
                return cls.create(path)
            except FileExistsError:  # created concurrently
                return cls.load(path)

    # -- operations ---------------------------------------------------------------------------
    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        """Return ``nonce || AES-256-GCM(plaintext)`` bound to ``aad``."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        """Inverse of :meth:`encrypt`.

        Raises:
            DecryptionError: wrong key, wrong ``aad``, truncated or altered data.
        """
        if len(blob) < NONCE_BYTES + 16:
            raise DecryptionError(f"ciphertext too short ({len(blob)} bytes)")
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag as exc:
            raise DecryptionError("authentication failed: wrong key or altered data") from exc

    def content_id(self, data: bytes | memoryview) -> str:
        """Keyed BLAKE2b-256 of ``data`` as 64 hex characters (the blob id)."""
        return hashlib.blake2b(data, digest_size=32, key=self._id_key).hexdigest()
