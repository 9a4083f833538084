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

import base64
import hashlib
import logging
import os
import re
import secrets
import threading
import time
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


_log = logging.getLogger(__name__)

#: Age in seconds after which a ``.tmp-*`` file of :class:`FileBlobStore` is a killed writer's
#: leftover (10 minutes: a put of the largest allowed blob takes seconds; the start-up sweep of
#: one worker must not remove a file another worker is writing right now).
TMP_MAX_AGE_S = 600.0


class BlobStore(ABC):
    """Content-addressed object storage. Sizes are in bytes. ``put`` of an existing name
    replaces it atomically (callers only do so with identical content)."""

    scheme: str = ""

    @abstractmethod
    def put(self, name: str, data: bytes, *, durable: bool = True) -> None:
        """Store ``data`` under ``name``, all or nothing. ``durable=False`` may return before
        the bytes reach stable storage; :meth:`sync` then makes them durable (episode deletion
        rewrites objects that way; ingest uses :meth:`put_many`, durable per batch).

        Raises:
            BlobStoreError: the backend failed (nothing is left under ``name``).
        """

    def sync(self, names: list[str]) -> None:
        """Make the objects ``names`` durable (no-op for stores whose ``put`` is always
        durable, such as S3)."""

    def put_many(self, items: list[tuple[str, bytes]], *, durable: bool = True) -> None:
        """Store several objects (``(name, data)`` pairs; each put is all or nothing, as
        :meth:`put`). The default stores them one after another; a backend where each put is
        a network round trip (S3) overrides it to overlap them. Objects stored before a
        failure stay: callers record objects only after this returns, and a retry stores the
        same bytes under the same names again.

        Raises:
            BlobStoreError: a put failed (the message names the first failed object).
        """
        for name, data in items:
            self.put(name, data, durable=durable)

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

    def sweep_temporaries(self, older_than_s: float = TMP_MAX_AGE_S) -> int:
        """Remove partial objects a killed writer left behind, older than ``older_than_s``
        seconds; return how many. No-op (0) for stores without such leftovers (S3: an
        interrupted single PUT stores nothing)."""
        return 0


def _fsync_dir(d: str | Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(p: str | Path) -> None:
    try:
        fd = os.open(p, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
SYNC_THREADS = 16
"""Threads of the process-wide pool that :meth:`FileBlobStore.sync` fsyncs on."""
SYNC_CHUNKS = 8
"""A batch of fsyncs goes to the pool as at most this many tasks (each does its share in a
row); 8 concurrent fsyncs already let the journal group them."""
OPEN_AT_ONCE = 64
"""Most temporary files one :meth:`FileBlobStore.put_many` keeps open (descriptor budget)."""


def _in_chunks(fn: Any, args: list[Any]) -> None:
    """Run ``fn(a)`` for every ``a`` on the fsync pool, as at most :data:`SYNC_CHUNKS` tasks;
    re-raise the first error."""
    if len(args) <= 1:
        for a in args:
            fn(a)
        return
    k = min(SYNC_CHUNKS, len(args))
    parts = [args[i::k] for i in range(k)]

    def run(part: list[Any]) -> None:
        for a in part:
            fn(a)

    list(_sync_pool().map(run, parts))
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _sync_pool() -> ThreadPoolExecutor:
    """The process-wide fsync pool (created on first use, threads started on demand)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=SYNC_THREADS, thread_name_prefix="blob-fsync")
        return _pool


class FileBlobStore(BlobStore):
    """Objects as files under ``root`` (folder mode 0700, files 0600)."""

    scheme = "file"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self._root_str = str(self.root)
        self._dirs: set[str] = set()  # sub-folders known to exist (one mkdir each per process)

    def __repr__(self) -> str:
        return f"FileBlobStore({str(self.root)!r})"

    def _path(self, name: str) -> Path:
        check_name(name)
        return self.root / name[:2] / name

    def _str_path(self, name: str) -> tuple[str, str]:
        """``(folder, file)`` of object ``name`` as plain strings (the hot path avoids
        pathlib's per-call parsing)."""
        check_name(name)
        folder = f"{self._root_str}/{name[:2]}"
        return folder, f"{folder}/{name}"

    def _mkdir(self, folder: str) -> None:
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        self._dirs.add(folder)

    def sweep_temporaries(self, older_than_s: float = TMP_MAX_AGE_S) -> int:
        """Remove ``<shard>/.tmp-*`` files (see :meth:`_open_tmp`) last modified more than
        ``older_than_s`` seconds ago: a ``put`` killed (``kill -9``, power loss) between creating
        its temporary file and renaming it leaves one, holding a partial copy of the object
        (ciphertext); nothing refers to it. Returns how many were removed. Called at collector
        start-up (:class:`~demotrace.server.service.Collector`). Folders are left alone; a file
        that cannot be removed is logged (warning) and skipped."""
        cutoff = time.time() - older_than_s
        removed = 0
        with os.scandir(self._root_str) as shards:
            for shard in shards:
                if not shard.is_dir(follow_symlinks=False):
                    continue
                with os.scandir(shard.path) as files:
                    for f in files:
                        if not f.name.startswith(".tmp-"):
                            continue
                        try:
                            if f.is_dir(follow_symlinks=False):
                                continue  # never made by a put: not ours to remove
                            if f.stat(follow_symlinks=False).st_mtime < cutoff:
                                os.unlink(f.path)
                                removed += 1
                        except FileNotFoundError:
                            pass
                        except OSError as exc:  # a leftover must never stop the collector
                            _log.warning("cannot remove partial blob file %s: %s", f.path, exc.strerror)
        return removed

    def _open_tmp(self, folder: str, name: str) -> tuple[int, str]:
        """Create ``<folder>/.tmp-<name>-<random>`` (O_EXCL, 0600); creates the folder once."""
        if folder not in self._dirs:
            self._mkdir(folder)
        tmp = f"{folder}/.tmp-{name}-{secrets.token_hex(6)}"
        try:
            return os.open(tmp, _O_NEW, 0o600), tmp
        except FileNotFoundError:  # folder removed behind our back: make it again
            self._dirs.discard(folder)
            self._mkdir(folder)
            return os.open(tmp, _O_NEW, 0o600), tmp

    def put(self, name: str, data: bytes, *, durable: bool = True) -> None:
        folder, path = self._str_path(name)
        try:
            fd, tmp = self._open_tmp(folder, name)
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    if durable:
                        os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
                if durable:
                    _fsync_dir(folder)
            except BaseException:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                raise
        except OSError as exc:
            raise BlobStoreError(f"cannot write blob {name} under {self.root}: {exc}") from exc

    def put_many(self, items: list[tuple[str, bytes]], *, durable: bool = True) -> None:
        """Store several objects; with ``durable``, every object and its folder entry are on
        stable storage when this returns. The batch way: write every temporary file, fsync
        their open descriptors in parallel, close and rename them, fsync the folders — the
        parallel fsyncs share the file system's journal commits, and the work goes to the pool
        in :data:`SYNC_CHUNKS` chunks rather than one task per file (each task is a thread
        hand-off: with one per file, 28 blobs cost ~56 wake-ups per batch and the server's
        kernel CPU followed them). At most :data:`OPEN_AT_ONCE` files are open at a time.
        Objects renamed before a failure stay (as :meth:`BlobStore.put_many`).

        Raises:
            BlobStoreError: a write, fsync or rename failed (names the object).
        """
        if not durable or len(items) <= 1:
            super().put_many(items, durable=durable)
            return
        for name, _data in items:
            check_name(name)
        for i in range(0, len(items), OPEN_AT_ONCE):
            self._put_chunk(items[i:i + OPEN_AT_ONCE])

    def _put_chunk(self, items: list[tuple[str, bytes]]) -> None:
        opened: list[tuple[int, str, str, str]] = []  # fd, tmp, folder, final path
        current = items[0][0]
        try:
            try:
                for name, data in items:
                    current = name
                    folder, path = self._str_path(name)
                    fd, tmp = self._open_tmp(folder, name)
                    opened.append((fd, tmp, folder, path))
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                current = "(fsync of the batch)"
                _in_chunks(os.fsync, [o[0] for o in opened])
            finally:
                for fd, *_ in opened:
                    os.close(fd)
            for (_fd, tmp, _folder, path), (name, _d) in zip(opened, items):
                current = name
                os.replace(tmp, path)
            current = "(folder fsync of the batch)"
            _in_chunks(_fsync_dir, sorted({o[2] for o in opened}))
        except OSError as exc:
            for _fd, tmp, _folder, _path in opened:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
            raise BlobStoreError(f"cannot write blob {current} under {self.root}: {exc}") from exc

    def sync(self, names: list[str]) -> None:
        """fsync every named object, then every folder holding one, in parallel on a
        process-wide pool of :data:`SYNC_THREADS` threads (concurrent fsyncs share the file
        system's journal commits). Not ``syncfs``: on a busy shared disk that would also
        flush every other writer's dirty pages. A name with no object is skipped.

        Raises:
            BlobStoreError: an fsync failed (the data may not be on stable storage).
        """
        if not names:
            return
        pairs = [self._str_path(n) for n in names]
        paths = [p for _, p in pairs]
        dirs = sorted({d for d, _ in pairs})
        try:
            if len(paths) == 1:
                _fsync_file(paths[0])
                _fsync_dir(dirs[0])
                return
            _in_chunks(_fsync_file, paths)
            _in_chunks(_fsync_dir, dirs)
        except OSError as exc:
            raise BlobStoreError(f"cannot sync blobs under {self.root}: {exc}") from exc

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
    """Objects in an S3-compatible bucket, one object per blob at key ``<prefix>/<name>``
    (boto3; tested against a real SeaweedFS S3 gateway, ``tests/test_server_s3.py``).

    Settings come from boto3's standard chain, nothing of our own: credentials from
    ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (/ ``AWS_SESSION_TOKEN``), ``AWS_PROFILE``
    and ``~/.aws/credentials``, or an instance / container role; region from
    ``AWS_DEFAULT_REGION`` or ``~/.aws/config``; endpoint from ``endpoint_url`` (the
    ``--s3-endpoint-url`` option) or else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``. A
    non-AWS endpoint gets path-style addressing (``http://host/bucket/key``), which every
    S3-compatible server supports; AWS keeps virtual-hosted style.

    Integrity: every ``put`` sends ``Content-MD5`` (RFC 1864, checked by S3 and every
    S3-compatible server since S3's first API), so bytes altered between this process and the
    server are refused (``BadDigest``) and nothing is stored under the name; reads are
    authenticated one level up (AES-GCM in the collector).

    ``check`` (default on): at construction, :meth:`check` proves endpoint, credentials and
    bucket, so a wrong setting stops the server at start-up instead of failing the first upload.

    Raises (constructor):
        ConfigError: boto3 missing, invalid bucket name or endpoint URL, or (``check``) the
        endpoint unreachable, no credentials, access denied or no such bucket — each message
        names the bucket, the endpoint and the fix.
    """

    scheme = "s3"
    #: Connections kept per client: the collector calls the store from uvicorn's thread pool
    #: (40 threads by default), boto3's default of 10 would make the others queue.
    MAX_POOL_CONNECTIONS = 32
    #: botocore "standard" retry mode (exponential backoff with jitter on throttling, 5xx and
    #: connection errors), attempts in all; ``AWS_RETRY_MODE`` / ``AWS_MAX_ATTEMPTS`` override.
    MAX_ATTEMPTS = 5
    #: Concurrent requests of one :meth:`put_many` (a quarter of the connection pool: several
    #: uploads run at once).
    PUT_CONCURRENCY = 8

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, client: Any = None, check: bool = True) -> None:
        try:
            import boto3
            import boto3.session
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError as exc:  # pragma: no cover - optional extra
            raise ConfigError(
                "the S3 blob store needs boto3: pip install 'demotrace[s3]'"
            ) from exc
        if not _BUCKET.match(bucket):
            raise ConfigError(f"S3 bucket name {bucket!r} is invalid: 3-63 characters of a-z, "
                              "0-9, '.' and '-', starting and ending with a letter or digit")
        self._errors = (BotoCoreError, ClientError)
        self.bucket = bucket
        parts = [p for p in prefix.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ConfigError(f"S3 prefix {prefix!r}: '.' and '..' segments are not allowed")
        self.prefix = "/".join(parts) + "/" if parts else ""
        if client is None:
            # retry settings from the standard AWS_RETRY_MODE / AWS_MAX_ATTEMPTS when set
            retries: dict[str, Any] = {}
            if not os.environ.get("AWS_RETRY_MODE"):
                retries["mode"] = "standard"
            if not os.environ.get("AWS_MAX_ATTEMPTS"):
                retries["total_max_attempts"] = self.MAX_ATTEMPTS  # first try included
            config = Config(max_pool_connections=self.MAX_POOL_CONNECTIONS, retries=retries,
                            connect_timeout=10, read_timeout=60)
            try:
                # A session of its own, not boto3's module-level default one: credentials are
                # resolved now, from the environment as it is now (the default session caches
                # the first ones it found for the life of the process).
                session = boto3.session.Session(region_name=region)
                client = session.client("s3", endpoint_url=endpoint_url, config=config)
                if not _is_aws(client.meta.endpoint_url):
                    client = session.client(
                        "s3", endpoint_url=client.meta.endpoint_url,
                        config=config.merge(Config(s3={"addressing_style": "path"})))
            except (ValueError, BotoCoreError) as exc:
                raise ConfigError(f"S3 blob store: cannot set up a client for endpoint "
                                  f"{endpoint_url!r}: {exc}") from exc
        self.client = client
        self.endpoint_url: str = str(client.meta.endpoint_url)
        if check:
            self.check()

    def __repr__(self) -> str:
        return (f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r}, "
                f"endpoint={self.endpoint_url!r})")

    def check(self) -> None:
        """Prove that the bucket is reachable and listable under the prefix with the configured
        credentials (one ``ListObjectsV2``, ``MaxKeys=1``).

        Raises:
            ConfigError: unreachable endpoint, no credentials, access denied, no such bucket.
        """
        from botocore.exceptions import (
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        where = f"S3 bucket {self.bucket!r} at {self.endpoint_url}"
        try:
            # a one-key listing of the prefix, not HeadBucket: it needs exactly the permission
            # names() needs (s3:ListBucket, which a policy may restrict to the prefix, and
            # then HeadBucket is denied)
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except NoCredentialsError as exc:
            raise ConfigError(f"{where}: no credentials; set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials") from exc
        except EndpointConnectionError as exc:
            raise ConfigError(f"{where}: cannot connect ({exc}); check --s3-endpoint-url / "
                              "AWS_ENDPOINT_URL_S3") from exc
        except ClientError as exc:
            code = _code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise ConfigError(f"{where} does not exist; create it first (the collector "
                                  "never creates buckets)") from exc
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise ConfigError(f"{where}: access denied ({code}); check the credentials and "
                                  "the bucket policy (docs/operations.md)") from exc
            raise ConfigError(f"{where}: {exc}") from exc
        except self._errors as exc:
            raise ConfigError(f"{where}: {exc}") from exc

    def _key(self, name: str) -> str:
        return f"{self.prefix}{check_name(name)}"

    def _fail(self, op: str, name: str, exc: Exception) -> BlobStoreError:
        return BlobStoreError(f"S3 {op} of s3://{self.bucket}/{self.prefix}{name} at "
                              f"{self.endpoint_url} failed: {exc}")

    def put(self, name: str, data: bytes, *, durable: bool = True) -> None:
        """Store ``data`` (one ``PutObject``, atomic on S3: readers see the old object or the
        new one, never part of it). ``durable`` is ignored: S3 acknowledges only stored bytes.

        Raises:
            BlobStoreError: refused (e.g. ``BadDigest``: the bytes changed in transit) or
            unreachable after the retries; nothing new is left under ``name``.
        """
        key = self._key(name)
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentMD5=md5,
                                   ContentType="application/octet-stream")
        except self._errors as exc:
            raise self._fail("put", name, exc) from exc

    def put_many(self, items: list[tuple[str, bytes]], *, durable: bool = True) -> None:
        """:meth:`put` of every item, up to :attr:`PUT_CONCURRENCY` requests at a time (one
        request's latency, not bandwidth, bounds a sequential writer: docs/benchmarks.md,
        ``bench/s3_blobs.py``). Waits for all of them; raises for the first that failed.

        Raises:
            BlobStoreError: a put failed (invalid names are refused before any request).
        """
        for name, _data in items:
            check_name(name)
        if len(items) <= 1:
            for name, data in items:
                self.put(name, data)
            return
        with ThreadPoolExecutor(max_workers=min(self.PUT_CONCURRENCY, len(items))) as ex:
            futures = [ex.submit(self.put, name, data) for name, data in items]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]  # type: ignore[misc]

    def get(self, name: str) -> bytes:
        key = self._key(name)
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
            return obj["Body"].read()  # type: ignore[no-any-return]
        except self._errors as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise NotFound(f"blob {name} not in {self!r}") from exc
            raise self._fail("get", name, exc) from exc

    def exists(self, name: str) -> bool:
        key = self._key(name)
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except self._errors as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail("head", name, exc) from exc

    def delete(self, name: str) -> bool:
        """Delete the current object (``HeadObject`` then ``DeleteObject``). On a versioned
        bucket S3 keeps the older versions; they stay unreadable after erasure because the
        person's key is gone (crypto-shredding, docs/operations.md)."""
        existed = self.exists(name)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except self._errors as exc:
            raise self._fail("delete", name, exc) from exc
        return existed

    def _listing(self) -> Iterator[tuple[str, int]]:
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(self.prefix):]
                    if _NAME.match(name):
                        yield name, int(obj["Size"])
        except self._errors as exc:
            raise BlobStoreError(f"S3 list of s3://{self.bucket}/{self.prefix} at "
                                 f"{self.endpoint_url} failed: {exc}") from exc

    def names(self) -> Iterator[str]:
        """Every object name under the prefix (``ListObjectsV2``, all pages); keys that are not
        blob names (other tools' objects, deeper "folders") are skipped."""
        for name, _size in self._listing():
            yield name

    def size_total(self) -> int:
        """Sum of object sizes (bytes) from the listing (no object is downloaded)."""
        return sum(size for _name, size in self._listing())


#: S3 bucket naming rules (AWS "Bucket naming rules", general purpose buckets).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _is_aws(endpoint_url: str) -> bool:
    host = urlparse(endpoint_url).hostname or ""
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def open_blob_store(url: str, *, s3_endpoint_url: str | None = None) -> BlobStore:
    """Open the blob store named by ``url`` (``file:///abs/path`` or ``s3://bucket/prefix``).

    ``s3_endpoint_url``: an S3-compatible service's URL (``http(s)://host:port``); ``None``
    leaves it to boto3 (``AWS_ENDPOINT_URL_S3`` or AWS itself). An S3 store is checked at once
    (:meth:`S3BlobStore.check`).

    Raises:
        ConfigError: unknown scheme, relative file path, no or invalid bucket, query or fragment
        in an s3 URL, or an S3 store that fails its check (message names the fix).
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
        if u.query or u.fragment or u.params:
            raise ConfigError(f"blob URL {url!r}: s3 URLs take no '?', ';' or '#' part; set the "
                              "endpoint with --s3-endpoint-url or AWS_ENDPOINT_URL_S3")
        return S3BlobStore(u.netloc, unquote(u.path), endpoint_url=s3_endpoint_url)
    raise ConfigError(f"blob URL {url!r}: unknown scheme {u.scheme!r}; use file:// or s3://")
