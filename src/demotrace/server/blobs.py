"""Blob stores: where the collector keeps (already encrypted) blob bytes.

One small interface, :class:`BlobStore`, with two backends registered by URL scheme (the
aw-core pattern: storages behind one abstract class, chosen by a short id, one contract test
suite for all — ``tests/test_server_blobs.py``):

- ``file:///abs/folder`` — :class:`FileBlobStore`, a content-addressed folder
  ``<root>/<name[:2]>/<name>``; writes go to a temp file in the same folder, are fsynced and
  renamed, so a crash never leaves a partial object under its final name.
- ``s3://bucket/prefix`` — :class:`S3BlobStore` (boto3, any S3-compatible service).

Object names are lowercase hex strings of 16–128 characters (the collector uses 64); anything
else is refused, so a name can never escape the folder or the prefix.
"""

from __future__ import annotations

import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ..errors import ConfigError
from .errors import BlobStoreError, NotFound

_NAME = re.compile(r"^[0-9a-f]{16,128}$")


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid object name (lowercase hex, 16–128 chars).

    Raises:
        BlobStoreError: anything else (e.g. a path with ``/`` or ``..``).
    """
    if not _NAME.match(name):
        raise BlobStoreError(f"invalid blob name {name!r}: expected 16-128 lowercase hex digits")
    return name


class BlobStore(ABC):
    """Content-addressed object storage. Sizes are in bytes. ``put`` of an existing name
    replaces it atomically (callers only do so with identical content)."""

    scheme: str = ""

    @abstractmethod
    def put(self, name: str, data: bytes, *, durable: bool = True) -> None:
        """Store ``data`` under ``name``, all or nothing. ``durable=False`` may return before
        the bytes reach stable storage; :meth:`sync` then makes them durable (the collector
        syncs once per bundle commit instead of once per blob).

        Raises:
            BlobStoreError: the backend failed (nothing is left under ``name``).
        """

    def sync(self, names: list[str]) -> None:
        """Make the objects ``names`` durable (no-op for stores whose ``put`` is always
        durable, such as S3)."""

    @abstractmethod
    def get(self, name: str) -> bytes:
        """The bytes stored under ``name``.

        Raises:
            NotFound: no such object.
        """

    @abstractmethod
    def exists(self, name: str) -> bool:
        """Whether an object named ``name`` exists."""

    @abstractmethod
    def delete(self, name: str) -> bool:
        """Remove ``name``; return whether it existed. Idempotent."""

    @abstractmethod
    def names(self) -> Iterator[str]:
        """Every stored object name (any order)."""

    def size_total(self) -> int:
        """Sum of object sizes in bytes (for fleet health; walks the whole store)."""
        return sum(len(self.get(n)) for n in self.names())


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBlobStore(BlobStore):
    """Objects as files under ``root`` (folder mode 0700, files 0600)."""

    scheme = "file"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def __repr__(self) -> str:
        return f"FileBlobStore({str(self.root)!r})"

    def _path(self, name: str) -> Path:
        check_name(name)
        return self.root / name[:2] / name

    def put(self, name: str, data: bytes, *, durable: bool = True) -> None:
        path = self._path(name)
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    if durable:
                        os.fsync(f.fileno())
                os.replace(tmp, path)
                if durable:
                    _fsync_dir(path.parent)
            except BaseException:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                raise
        except OSError as exc:
            raise BlobStoreError(f"cannot write blob {name} under {self.root}: {exc}") from exc

    def sync(self, names: list[str]) -> None:
        """fsync every named object and its folder, in parallel (concurrent fsyncs share the
        file system's journal commits). Not ``syncfs``: on a busy shared disk that would also
        flush every other writer's dirty pages."""
        if not names:
            return
        paths = [self._path(n) for n in names]
        dirs = sorted({p.parent for p in paths})

        def fsync_file(p: Path) -> None:
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                return
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        with ThreadPoolExecutor(max_workers=min(16, len(paths))) as ex:
            list(ex.map(fsync_file, paths))
            list(ex.map(_fsync_dir, dirs))

    def get(self, name: str) -> bytes:
        path = self._path(name)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"blob {name} not in {self!r}") from exc
        except OSError as exc:
            raise BlobStoreError(f"cannot read blob {name} under {self.root}: {exc}") from exc

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def delete(self, name: str) -> bool:
        try:
            self._path(name).unlink()
            return True
        except FileNotFoundError:
            return False

    def names(self) -> Iterator[str]:
        for sub in sorted(self.root.iterdir()):
            if sub.is_dir() and len(sub.name) == 2:
                for f in sorted(sub.iterdir()):
                    if _NAME.match(f.name):
                        yield f.name

    def size_total(self) -> int:
        return sum((self.root / n[:2] / n).stat().st_size for n in self.names())


class S3BlobStore(BlobStore):
    """Objects in an S3-compatible bucket under ``prefix`` (boto3). Credentials and region come
    from the usual AWS environment / config files; ``endpoint_url`` selects a non-AWS service."""

    scheme = "s3"

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 client: Any = None) -> None:
        try:
            import boto3
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError as exc:  # pragma: no cover - optional extra
            raise ConfigError(
                "the S3 blob store needs boto3: pip install 'demotrace[s3]'"
            ) from exc
        self._errors = (BotoCoreError, ClientError)
        self._client_error = ClientError
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url)

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _key(self, name: str) -> str:
        return f"{self.prefix}{check_name(name)}"

    def _missing(self, exc: Exception) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        return code in ("404", "NoSuchKey", "NotFound")

    def put(self, name: str, data: bytes, *, durable: bool = True) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)
        except self._errors as exc:
            raise BlobStoreError(f"S3 put {self.bucket}/{self._key(name)} failed: {exc}") from exc

    def get(self, name: str) -> bytes:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(name))
            return obj["Body"].read()  # type: ignore[no-any-return]
        except self._errors as exc:
            if self._missing(exc):
                raise NotFound(f"blob {name} not in {self!r}") from exc
            raise BlobStoreError(f"S3 get {self.bucket}/{self._key(name)} failed: {exc}") from exc

    def exists(self, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(name))
            return True
        except self._errors as exc:
            if self._missing(exc):
                return False
            raise BlobStoreError(f"S3 head {self.bucket}/{self._key(name)} failed: {exc}") from exc

    def delete(self, name: str) -> bool:
        existed = self.exists(name)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except self._errors as exc:
            raise BlobStoreError(f"S3 delete {self.bucket}/{self._key(name)} failed: {exc}") from exc
        return existed

    def names(self) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(self.prefix):]
                if _NAME.match(name):
                    yield name


def open_blob_store(url: str, *, s3_endpoint_url: str | None = None) -> BlobStore:
    """Open the blob store named by ``url`` (``file:///abs/path`` or ``s3://bucket/prefix``).

    Raises:
        ConfigError: unknown scheme, relative file path, or no bucket.
    """
    u = urlparse(url)
    if u.scheme == "file":
        path = unquote(u.path)
        if not path.startswith("/"):
            raise ConfigError(f"blob URL {url!r}: file path must be absolute")
        return FileBlobStore(Path(path))
    if u.scheme == "s3":
        if not u.netloc:
            raise ConfigError(f"blob URL {url!r}: no bucket (expected s3://BUCKET/PREFIX)")
        return S3BlobStore(u.netloc, u.path, endpoint_url=s3_endpoint_url)
    raise ConfigError(f"blob URL {url!r}: unknown scheme {u.scheme!r}; use file:// or s3://")
