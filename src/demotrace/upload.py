"""Upload client: sends sealed bundles to the collector (issue 5 item 3).

Protocol (see :mod:`demotrace.server.app`): ``POST /v1/bundles`` with the manifest → the
server answers which blobs it lacks → those blobs, several per ``POST /v1/bundles/<id>/blobs``
request (large ones alone with ``PUT /v1/bundles/<id>/blobs/<sha256>``) → commit: the last
batch carries ``?commit=true`` (blobs, bundle commit and its access-log entry in one server
transaction), else ``POST /v1/bundles/<id>/commit``. Every step is idempotent on the server,
so the client simply retries: network errors, 5xx and 429 are retried with exponential
backoff and full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015),
honouring ``Retry-After``.
An interrupted upload resumes from what the server already holds (it re-asks which blobs are
missing). The local bundle is deleted only after the server acknowledged the commit.

The device's enrollment (server URL + credential) is kept in ``<home>/collector.json``
(mode 0600), written by ``demotrace device enroll``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .errors import ConfigError
from .server.errors import UploadError
from .server.wire import (
    BATCH_MEDIA_TYPE,
    LocalBundle,
    SealedBundle,
    encode_batch_body,
    read_local_bundle,
)

ENROLLMENT_FILE = "collector.json"


SESSION_DELETED_PHRASE = "was deleted by its person"
"""What the collector's 409 to a manifest says when the session was deleted or erased
(:meth:`demotrace.server.service.Collector.begin`)."""


class SessionRefused(UploadError):
    """The collector refuses this session for good: its person deleted it in the portal or
    erased everything (HTTP 409 to the manifest). Never retried; the local bundle is kept."""


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` per request (count); delays (seconds) grow as ``base_s · 2^n`` capped at
    ``max_s``, each drawn uniformly from [0, that] ("full jitter")."""

    attempts: int = 8
    base_s: float = 0.2
    max_s: float = 10.0

    def delay(self, n: int, rng: random.Random) -> float:
        """Delay before retry ``n`` (0-based), seconds."""
        return rng.uniform(0, min(self.max_s, self.base_s * (2 ** n)))


@dataclass(frozen=True)
class Receipt:
    """The server's acknowledgement: ``bundle_id``, ``n_blobs`` and ``total_bytes`` of the
    bundle, ``sent_blobs`` (blobs this call actually transferred — 0 when the server already
    had everything), ``committed_at`` (server time, ISO 8601), ``deleted_local``."""

    bundle_id: str
    n_blobs: int
    total_bytes: int
    sent_blobs: int
    committed_at: str | None
    deleted_local: bool


@dataclass(frozen=True)
class Enrollment:
    """A device's enrollment: collector ``url``, bearer ``credential``, TLS ``ca`` file (None:
    system trust store). The credential is masked in ``repr``."""

    url: str
    credential: str
    ca: str | None = None

    def __repr__(self) -> str:
        return f"Enrollment(url={self.url!r}, credential=***, ca={self.ca!r})"

    def save(self, home: Path) -> Path:
        """Write ``<home>/collector.json`` with mode 0600 (replacing an older one)."""
        path = home / ENROLLMENT_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"url": self.url, "credential": self.credential, "ca": self.ca}, f)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, home: Path) -> "Enrollment":
        """Read ``<home>/collector.json``.

        Raises:
            ConfigError: absent (fix: ``demotrace device enroll``) or unreadable.
        """
        path = home / ENROLLMENT_FILE
        try:
            d = json.loads(path.read_text())
            return cls(d["url"], d["credential"], d.get("ca"))
        except FileNotFoundError as exc:
            raise ConfigError(f"this device is not enrolled ({path} missing); run "
                              "`demotrace device enroll --server URL --code CODE`") from exc
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"{path} is damaged ({exc}); enroll again") from exc


_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def check_server_url(url: str) -> str:
    """Return the collector ``url`` without a trailing slash if it is usable, before any request.

    Accepted: ``https://host[:port][/path]``, and plain ``http://`` only to this machine (a
    loopback address — 127.0.0.0/8, ::1 — or ``localhost``), since bundles and the device
    credential must not cross a network unencrypted (DESIGN.md: encrypted in transit).

    Raises:
        ConfigError: no scheme / host, another scheme, or plain http to another host; the
            message quotes the URL and names the expected form.
    """
    import ipaddress
    from urllib.parse import urlsplit

    expected = "expected https://host:port or http://127.0.0.1:port"
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number in range)
    except ValueError as exc:
        raise ConfigError(f"invalid server URL {url!r}: {exc}; {expected}") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(f"invalid server URL {url!r}: {expected}")
    if parts.scheme == "http":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host.lower() in _LOOPBACK_NAMES
        if not loopback:
            raise ConfigError(f"invalid server URL {url!r}: plain http is allowed only to this machine; "
                              f"{expected}")
    return url.strip().rstrip("/")


def _detail(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail", r.text))
    except ValueError:
        return r.text[:200]


class UploadClient:
    """Talks the upload protocol to one collector.

    ``transport``: an ``httpx.BaseTransport`` (tests inject faults here; default: real
    network). ``verify``: TLS verification (True, False, or a CA bundle path). ``timeout``:
    seconds per request. ``sleep``: the function that waits between retries.
    ``batch_bytes``: blobs smaller than this travel together in one ``POST …/blobs`` request
    of at most this many bytes (0: one ``PUT`` per blob).

    Raises:
        ConfigError: ``url`` is not a collector URL (:func:`check_server_url`), at once,
            before any request or retry.
    """

    def __init__(self, url: str, credential: str | None = None, *,
                 transport: httpx.BaseTransport | None = None, verify: bool | str = True,
                 timeout: float = 30.0, retry: RetryPolicy = RetryPolicy(),
                 sleep: Callable[[float], None] = time.sleep, seed: int | None = None,
                 batch_bytes: int = 4 * 1024 * 1024) -> None:
        url = check_server_url(url)
        headers = {"authorization": f"Bearer {credential}"} if credential else {}
        if isinstance(verify, str):
            verify = ssl.create_default_context(cafile=verify)  # type: ignore[assignment]
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout,
                                  transport=transport, verify=verify)
        self.retry = retry
        self.batch_bytes = batch_bytes
        self._sleep = sleep
        self._rng = random.Random(seed)
        self.requests = 0
        self.retries = 0

    def __repr__(self) -> str:
        return f"UploadClient({str(self._http.base_url)!r}, credential=***)"

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> "UploadClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, step: str, method: str, path: str, *, ok: tuple[int, ...] = (200,),
              **kw: Any) -> httpx.Response:
        """One request with retries; returns a response whose status is in ``ok``.

        Raises:
            UploadError: a non-retryable answer (4xx other than 429 and not in ``ok``), or
                retries exhausted (the message names ``step`` and the last failure).
        """
        last = ""
        for n in range(self.retry.attempts):
            if n:
                self.retries += 1
            self.requests += 1
            try:
                r = self._http.request(method, path, **kw)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                self._sleep(self.retry.delay(n, self._rng))
                continue
            if r.status_code in ok:
                return r
            if r.status_code == 429 or r.status_code >= 500:
                last = f"HTTP {r.status_code}: {_detail(r)}"
                ra = r.headers.get("retry-after")
                wait = self.retry.delay(n, self._rng)
                if ra and ra.isdigit():
                    wait = max(wait, min(float(ra), self.retry.max_s))
                self._sleep(wait)
                continue
            raise UploadError(f"{step}: server refused with HTTP {r.status_code}: {_detail(r)}")
        raise UploadError(f"{step}: gave up after {self.retry.attempts} attempts; last: {last}")

    def _send_batch(self, bid: str, batch: list[tuple[str, bytes]], *,
                    commit: bool = False) -> httpx.Response:
        """POST one blob batch; with ``commit``, ask the server to commit the bundle in the
        same transaction (answer 200 with a ``commit`` receipt, or 409 listing blobs still
        missing — the batch itself is stored either way)."""
        return self._call(f"send {len(batch)} blobs" + (" and commit" if commit else ""),
                          "POST", f"/v1/bundles/{bid}/blobs",
                          params={"commit": "true"} if commit else None,
                          ok=(200, 409) if commit else (200,),
                          content=encode_batch_body(batch),
                          headers={"content-type": BATCH_MEDIA_TYPE})

    def enroll(self, code: str, label: str = "") -> str:
        """Exchange a one-time enrollment code for a credential (returned; store it)."""
        r = self._call("enroll", "POST", "/v1/enroll", json={"code": code, "label": label})
        return str(r.json()["credential"])

    def upload(self, bundle: LocalBundle | SealedBundle, *, delete_local: bool = False,
               max_rounds: int = 5, on_commit: Callable[[str, dict[str, Any]], None] | None = None) -> Receipt:
        """Upload one bundle (resuming whatever the server already holds) and commit it;
        with ``delete_local``, remove the bundle folder after the commit is acknowledged.
        ``on_commit(bundle_id, ack)`` runs after the acknowledgement and before the deletion
        (:meth:`upload_path` writes the device's upload tombstone there); if it raises, the
        local bundle is kept.

        Raises:
            SessionRefused: the collector refuses the session for good (its person deleted or
                erased it; HTTP 409 to the manifest); nothing is retried, the bundle is kept.
            UploadError: the server refused a step, or retries were exhausted; the local
                bundle is untouched.
            SchemaError: the local bundle is damaged (a blob missing or not matching).
        """
        m = bundle.manifest
        body = m.canonical()
        sent = 0
        for _round in range(max_rounds):
            r = self._call("send manifest", "POST", "/v1/bundles", content=body,
                           headers={"content-type": "application/json"}, ok=(200, 409))
            if r.status_code == 409:
                detail = _detail(r)
                if SESSION_DELETED_PHRASE in detail:  # final: the person deleted it
                    raise SessionRefused(f"collector refuses session {m.session_id}: {detail}; "
                                         "not retried, the local bundle is kept")
                raise UploadError(f"send manifest: server refused with HTTP 409: {detail}")
            ans = r.json()
            bid = ans["bundle_id"]
            if bid != m.bundle_id:
                raise UploadError(f"server computed bundle id {bid}, client {m.bundle_id}")
            batch: list[tuple[str, bytes]] = []
            size = 0
            for sha in ans["missing"]:
                data = bundle.read_blob(sha)
                if self.batch_bytes and len(data) < self.batch_bytes:
                    if batch and size + len(data) > self.batch_bytes:
                        self._send_batch(bid, batch)
                        sent += len(batch)
                        batch, size = [], 0
                    batch.append((sha, data))
                    size += len(data)
                    continue
                self._call(f"send blob {sha[:12]}", "PUT", f"/v1/bundles/{bid}/blobs/{sha}",
                           content=data, headers={"content-type": "application/octet-stream"})
                sent += 1
            ack: dict[str, Any] | None = None
            if batch:
                # the last batch carries the commit: one request and one transaction fewer
                r = self._send_batch(bid, batch, commit=True)
                sent += len(batch)
                if r.status_code == 409:
                    continue  # blobs went missing elsewhere — ask again
                ack = r.json().get("commit")  # None: a server without batch commit
            if ack is None:
                r = self._call("commit", "POST", f"/v1/bundles/{bid}/commit", ok=(200, 409))
                if r.status_code == 200:
                    ack = r.json()
            if ack is not None:
                if on_commit is not None:
                    on_commit(bid, ack)
                deleted = False
                if delete_local:
                    if isinstance(bundle, SealedBundle):
                        bundle.close()
                    shutil.rmtree(bundle.root)
                    deleted = True
                return Receipt(bid, int(ack["n_blobs"]), int(ack["total_bytes"]), sent,
                               ack.get("committed_at"), deleted)
            # 409: blobs went missing between our PUTs and the commit — ask again.
        raise UploadError(f"commit of {m.bundle_id}: server still lacks blobs after "
                          f"{max_rounds} rounds")

    def upload_path(self, path: str | os.PathLike[str], *, delete_local: bool = False,
                    home: str | os.PathLike[str] | None = None) -> Receipt:
        """:meth:`upload` of the bundle folder at ``path`` (sealed bundles are decrypted with
        the key of the demotrace ``home``). For a sealed bundle, the session's upload tombstone
        (:mod:`demotrace.privacy.uploads`) is written in ``home`` once the collector
        acknowledged the commit, before the local copy is deleted, so ``demotrace seal`` never
        seals (and re-uploads) that session again.

        Raises:
            ConfigError: ``path`` does not exist, is not a folder, or holds neither bundle
                layout (the message says what a bundle folder must contain).
        """
        _check_bundle_folder(Path(path))
        b = read_local_bundle(path, home)
        on_commit = None
        if isinstance(b, SealedBundle):
            from .paths import Paths
            from .privacy.uploads import record_uploaded

            paths, sid = Paths.from_env(home), b.manifest.session_id or b.root.name

            def on_commit(bid: str, ack: dict[str, Any]) -> None:
                record_uploaded(paths, sid, bid, ack.get("committed_at"))
        try:
            return self.upload(b, delete_local=delete_local, on_commit=on_commit)
        finally:
            if isinstance(b, SealedBundle) and b.root.exists():
                b.close()


_BUNDLE_LAYOUTS = ("a sealed bundle from `demotrace seal` (<home>/sealed/<session id>/ with SEALED and"
                   " session.db) or a generic bundle (manifest.json and blobs/)")


def _check_bundle_folder(path: Path) -> None:
    """Raise :class:`ConfigError` naming what is wrong with ``path`` as a bundle folder
    (missing, a file, a SEALED marker without ``session.db``, or neither layout)."""
    if not path.exists():
        raise ConfigError(f"{path} does not exist; give a bundle folder: {_BUNDLE_LAYOUTS}"
                          " (with no argument, `demotrace upload` sends every sealed bundle)")
    if not path.is_dir():
        raise ConfigError(f"{path} is a file, not a bundle folder; give {_BUNDLE_LAYOUTS}")
    if (path / "SEALED").is_file() and not (path / "session.db").is_file():
        raise ConfigError(f"{path} has a SEALED marker but no session.db: it is not a complete sealed"
                          f" bundle (seal the session again with `demotrace seal`); a bundle folder is {_BUNDLE_LAYOUTS}")
    if not (path / "SEALED").is_file() and not (path / "manifest.json").is_file():
        raise ConfigError(f"{path} is not a bundle folder: it has neither SEALED nor manifest.json;"
                          f" give {_BUNDLE_LAYOUTS}")
