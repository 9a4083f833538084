"""The upload wire format, shared by the client (:mod:`demotrace.upload`) and the collector.

A bundle on the wire is a **manifest** (JSON, :class:`BundleManifest`) plus
**content-addressed blobs**: each blob is named by the lowercase hex SHA-256 of its bytes and
carries its size in bytes and its path inside the bundle. ``bundle_id`` is the SHA-256 of the
canonical manifest JSON (keys sorted, compact), so the same bundle always has the same id and
uploading it twice stores it once.

This is the ONE module that maps a device-side bundle onto the wire format
(:func:`read_local_bundle`). It reads two local layouts:

1. A **sealed bundle** of the privacy layer (:mod:`demotrace.privacy.bundle`, a folder with a
   ``SEALED`` marker, encrypted on the device under the bundle key). It is decrypted on the
   device and sent over TLS as these blobs (the server re-encrypts them under the person's
   server-side data key):

   - ``session.json`` — the session manifest (JSON);
   - ``report.json`` — the redaction report (counts only);
   - ``events/<first_seq>.msgpack`` — one blob per event batch (schema v1 MessagePack array);
   - ``frames/<blob_id>`` — each redacted, encoded frame.

   ``meta`` carries ``{"kind": "sealed-session", "schema_version": …, "consent": {…}}``
   (``consent``: the consent record the bundle was sealed under, see
   :attr:`demotrace.privacy.bundle.BundleReader.consent`; absent if it has none).
2. The **generic** layout written by :func:`write_local_bundle` (tests, benchmarks, other
   producers)::

       <bundle>/manifest.json     {"format", "session_id", "platform", "created_utc", "meta",
                                   "blobs": [{"sha256", "size", "path"}]}
       <bundle>/blobs/<sha256>    the blob bytes
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ..errors import SchemaError

WIRE_FORMAT = "demotrace-bundle/1"
MAX_BLOBS = 200_000
"""Most blobs one manifest may list (a bound on server memory per request)."""
MAX_BLOB_BYTES = 1 << 30
"""Largest blob a manifest may declare (1 GiB; a frame is ~10-100 KB, an event batch less). A
larger size is a damaged or hostile manifest: it reached the database as an integer out of
SQLite's range (500) and inflated the open-upload backlog (bug bash 3)."""

_SHA = re.compile(r"^[0-9a-f]{64}$")


class BlobRef(msgspec.Struct, kw_only=True, frozen=True):
    """One blob of a bundle: ``sha256`` (64 lowercase hex), ``size`` (bytes), ``path`` (its
    place in the bundle, e.g. ``frames/000123.webp``; informational)."""

    sha256: str
    size: int
    path: str = ""


class BundleManifest(msgspec.Struct, kw_only=True, frozen=True):
    """The manifest of one sealed bundle.

    ``session_id``: the recording session the bundle was sealed from (opaque);
    ``platform``: e.g. ``"linux-x11"`` (the only clear-text grouping key for aggregates);
    ``created_utc``: ISO-8601 UTC sealing time; ``meta``: further sealed-bundle metadata (kept
    encrypted server-side); ``blobs``: every blob, each sha256 once.
    """

    format: str = WIRE_FORMAT
    session_id: str | None = None
    platform: str = ""
    created_utc: str = ""
    meta: dict[str, Any] = {}
    blobs: list[BlobRef] = []

    def canonical(self) -> bytes:
        """Canonical JSON (keys sorted, compact) — what ``bundle_id`` hashes."""
        return msgspec.json.encode(msgspec.to_builtins(self, order="sorted"))

    @property
    def bundle_id(self) -> str:
        """Hex SHA-256 of :meth:`canonical`."""
        return hashlib.sha256(self.canonical()).hexdigest()

    @property
    def total_bytes(self) -> int:
        """Sum of blob sizes (bytes)."""
        return sum(b.size for b in self.blobs)


def parse_manifest(data: bytes | str | Mapping[str, Any], *, where: str = "manifest") -> BundleManifest:
    """Decode and validate a manifest.

    Raises:
        SchemaError: bad JSON, unknown format, a sha256 that is not 64 lowercase hex digits, a
            negative size or one above :data:`MAX_BLOB_BYTES`, a duplicate sha256, or more than :data:`MAX_BLOBS` blobs (the message
            names ``where`` and the offending blob index).
    """
    try:
        if isinstance(data, Mapping):
            m = msgspec.convert(data, BundleManifest)
        else:
            m = msgspec.json.decode(data, type=BundleManifest)
    except msgspec.ValidationError as exc:
        raise SchemaError(f"{where}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise SchemaError(f"{where}: not valid JSON ({exc})") from exc
    if m.format != WIRE_FORMAT:
        raise SchemaError(f"{where}: format {m.format!r} is not {WIRE_FORMAT!r}")
    if len(m.blobs) > MAX_BLOBS:
        raise SchemaError(f"{where}: {len(m.blobs)} blobs, more than the limit {MAX_BLOBS}")
    seen: set[str] = set()
    for i, b in enumerate(m.blobs):
        if not _SHA.match(b.sha256):
            raise SchemaError(f"{where}: blobs[{i}].sha256 {b.sha256!r} is not 64 lowercase hex")
        if b.size < 0:
            raise SchemaError(f"{where}: blobs[{i}].size {b.size} is negative")
        if b.size > MAX_BLOB_BYTES:
            raise SchemaError(f"{where}: blobs[{i}].size {b.size} bytes is more than the limit "
                              f"{MAX_BLOB_BYTES} (1 GiB)")
        if b.sha256 in seen:
            raise SchemaError(f"{where}: blobs[{i}].sha256 {b.sha256} listed twice")
        if len(b.path) > 500:
            raise SchemaError(f"{where}: blobs[{i}].path longer than 500 characters")
        seen.add(b.sha256)
    return m


BATCH_MEDIA_TYPE = "application/x-demotrace-blobs"
"""Media type of a blob batch: for each blob, 64 ASCII hex digits of its sha256, 16 ASCII
decimal digits of its size in bytes (zero-padded), then exactly that many bytes."""
_HEAD = 64 + 16


def encode_batch_body(blobs: list[tuple[str, bytes]]) -> bytes:
    """Frame ``(sha256, bytes)`` pairs as one batch body (:data:`BATCH_MEDIA_TYPE`)."""
    parts: list[bytes] = []
    for sha, data in blobs:
        parts += [sha.encode("ascii"), b"%016d" % len(data), data]
    return b"".join(parts)


def decode_batch_body(body: bytes) -> list[tuple[str, bytes]]:
    """Split a batch body into ``(sha256, bytes)`` pairs (hashes are NOT checked here).

    Raises:
        SchemaError: truncated framing or a header that is not hex + digits (names the offset).
    """
    out: list[tuple[str, bytes]] = []
    view = memoryview(body)
    pos = 0
    while pos < len(body):
        head = bytes(view[pos:pos + _HEAD])
        sha, size = head[:64].decode("ascii", "replace"), head[64:]
        if len(head) < _HEAD or not _SHA.match(sha) or not size.isdigit():
            raise SchemaError(f"blob batch: bad header at byte {pos} (want 64 hex + 16 digits)")
        n = int(size)
        start = pos + _HEAD
        if start + n > len(body):
            raise SchemaError(f"blob batch: blob {sha} at byte {pos} truncated "
                              f"({len(body) - start} of {n} bytes)")
        out.append((sha, bytes(view[start:start + n])))
        pos = start + n
    return out


@dataclass(frozen=True)
class LocalBundle:
    """A bundle on the device: its ``root`` folder and parsed ``manifest``."""

    root: Path
    manifest: BundleManifest

    def blob_path(self, sha256: str) -> Path:
        """File holding the blob ``sha256``."""
        return self.root / "blobs" / sha256

    def read_blob(self, sha256: str) -> bytes:
        """The blob's bytes.

        Raises:
            SchemaError: missing, or its content does not hash to ``sha256`` (bundle damaged).
        """
        p = self.blob_path(sha256)
        try:
            data = p.read_bytes()
        except FileNotFoundError as exc:
            raise SchemaError(f"bundle {self.root}: blob {sha256} missing ({p})") from exc
        if hashlib.sha256(data).hexdigest() != sha256:
            raise SchemaError(f"bundle {self.root}: blob {p} does not match its sha256")
        return data


class SealedBundle:
    """A privacy-layer sealed bundle seen through the wire format (layout 1 in the module
    docstring). Encoded event batches are kept in memory (they are small); frames are read
    from the bundle on demand. Same interface as :class:`LocalBundle` (``root``,
    ``manifest``, ``read_blob``)."""

    def __init__(self, root: Path, home: Path | None = None) -> None:
        from ..paths import Paths
        from ..privacy.bundle import BundleReader, bundle_key
        from ..schema.events import encode_batch

        self.root = root
        self._reader = BundleReader(root, bundle_key(Paths.from_env(home)))
        self._mem: dict[str, bytes] = {}
        self._frames: dict[str, str] = {}
        refs: list[BlobRef] = []

        def add_mem(path: str, data: bytes) -> None:
            h = hashlib.sha256(data).hexdigest()
            if h not in self._mem and h not in self._frames:
                self._mem[h] = data
                refs.append(BlobRef(sha256=h, size=len(data), path=path))

        m = self._reader.manifest
        add_mem("session.json", msgspec.json.encode(m))
        add_mem("report.json", json.dumps(self._reader.report, sort_keys=True).encode())
        for batch in self._reader.iter_batches():
            if batch:
                add_mem(f"events/{batch[0].seq}.msgpack", encode_batch(batch))
        for bid in self._reader.blob_ids():
            data = self._reader.read_blob(bid)
            h = hashlib.sha256(data).hexdigest()
            if h not in self._mem and h not in self._frames:
                self._frames[h] = bid
                refs.append(BlobRef(sha256=h, size=len(data), path=f"frames/{bid}"))
        self.manifest = BundleManifest(
            session_id=m.session_id, platform=m.platform, created_utc=m.started_utc,
            meta={"kind": "sealed-session", "schema_version": m.schema_version,
                  **({"consent": c} if (c := self._reader.consent) else {})}, blobs=refs)

    def read_blob(self, sha256: str) -> bytes:
        """The blob's plaintext bytes.

        Raises:
            SchemaError: not part of this bundle, or the frame changed since it was indexed.
        """
        if sha256 in self._mem:
            return self._mem[sha256]
        bid = self._frames.get(sha256)
        if bid is None:
            raise SchemaError(f"sealed bundle {self.root}: no blob {sha256}")
        data = self._reader.read_blob(bid)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise SchemaError(f"sealed bundle {self.root}: frame {bid} changed while uploading")
        return data

    def close(self) -> None:
        """Close the bundle's database."""
        self._reader.close()


def read_local_bundle(root: str | os.PathLike[str],
                      home: str | os.PathLike[str] | None = None) -> LocalBundle | SealedBundle:
    """Open a local bundle folder: a sealed bundle (``SEALED`` marker; decrypted with the
    bundle key of the demotrace ``home``) or the generic layout (module docstring).

    Raises:
        SchemaError: no ``manifest.json`` or an invalid one (see :func:`parse_manifest`).
        KeyMissing: a sealed bundle but no data key in ``home``.
    """
    root = Path(root)
    if (root / "SEALED").is_file():
        return SealedBundle(root, Path(home) if home is not None else None)
    mpath = root / "manifest.json"
    try:
        data = mpath.read_bytes()
    except FileNotFoundError as exc:
        raise SchemaError(f"{root} is not a bundle: {mpath.name} missing") from exc
    return LocalBundle(root, parse_manifest(data, where=str(mpath)))


def write_local_bundle(root: str | os.PathLike[str], files: Mapping[str, bytes], *,
                       session_id: str | None = None, platform: str = "",
                       created_utc: str = "", meta: Mapping[str, Any] | None = None) -> LocalBundle:
    """Write ``files`` (bundle path → bytes) as a local bundle folder at ``root`` (created;
    must not exist). Written to a temp folder beside it and renamed, so a crash leaves no
    half bundle. Returns the opened bundle.

    Raises:
        FileExistsError: ``root`` exists.
    """
    root = Path(root)
    if root.exists():
        raise FileExistsError(f"bundle folder exists: {root}")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=".bundle-"))
    try:
        (tmp / "blobs").mkdir()
        refs: dict[str, BlobRef] = {}
        for path, data in files.items():
            h = hashlib.sha256(data).hexdigest()
            if h not in refs:
                (tmp / "blobs" / h).write_bytes(data)
                refs[h] = BlobRef(sha256=h, size=len(data), path=path)
        m = BundleManifest(session_id=session_id, platform=platform, created_utc=created_utc,
                           meta=dict(meta or {}), blobs=list(refs.values()))
        (tmp / "manifest.json").write_bytes(msgspec.json.encode(m))
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return LocalBundle(root, m)
