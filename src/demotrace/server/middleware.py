"""Cross-cutting concerns as small pure ASGI middleware (the starlette ``trustedhost`` shape).

Order, outermost first (see :func:`~.app.create_app`)::

    BodyLimitMiddleware   413 for bodies over the limit (Content-Length or counted stream)
    RateLimitMiddleware   token bucket per credential id (or client address) → 429
    AuthMiddleware        resolves "Authorization: Bearer" (or, under /portal/, the portal
                          cookie) → scope["state"]["principal"]; a bad bearer header → 401
    AuditMiddleware       writes the access-log entries before the response starts; if the
                          log cannot be written the response is replaced by 503 (fail closed)

Routes add what they touched to ``request.state.accesses`` (a list of
:class:`~.audit.Access`); the audit middleware logs every request by a non-device principal
(also refusals) and every access a route declares.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from anyio import to_thread

from .audit import Access
from .auth import authenticate, claimed_id
from .errors import AuthError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_json(send: Send, status: int, body: dict[str, Any],
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send a complete JSON response."""
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k == name:
            return v.decode("latin-1")  # type: ignore[no-any-return]
    return None


PORTAL_COOKIE = "dt_portal"
"""The portal's session cookie (read only for ``/portal/`` paths; see :mod:`.portal`)."""


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    from http.cookies import CookieError, SimpleCookie

    try:
        jar = SimpleCookie(raw)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel else None


def _state(scope: Scope) -> dict[str, Any]:
    return scope.setdefault("state", {})  # type: ignore[no-any-return]


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413 and a message naming both sizes and
    the server setting. Checks ``Content-Length`` first, then counts streamed chunks."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _msg(self, size: int | None) -> dict[str, Any]:
        got = (f"request body of {size} bytes exceeds" if size is not None
               else "request body (chunked) exceeds")
        return {"detail": f"{got} the limit of {self.max_bytes} bytes "
                          "(server setting max_body_bytes); split the upload into smaller blobs"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cl = _header(scope, b"content-length")
        if cl is not None and cl.isdigit() and int(cl) > self.max_bytes:
            await send_json(send, 413, self._msg(int(cl)), [(b"connection", b"close")])
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await send_json(send, 413, self._msg(None), [(b"connection", b"close")])


class RateLimitMiddleware:
    """Token bucket: ``rate`` requests/s sustained, ``burst`` at once, per claimed credential
    id, else per client address. Over the limit → 429 with ``Retry-After`` (seconds)."""

    def __init__(self, app: ASGIApp, rate: float, burst: int) -> None:
        self.app = app
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> float:
        """Take one token for ``key``; return 0 if allowed, else seconds until one is free."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > 100_000:  # bound memory: forget idle keys
                self._buckets = {key: (tokens, now)}
            return (1 - tokens) / self.rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = claimed_id(_header(scope, b"authorization"))
        client = scope.get("client") or ("?", 0)
        wait = self.take(f"cred:{cid}" if cid else f"addr:{client[0]}")
        if wait > 0:
            await send_json(send, 429, {"detail": f"rate limit exceeded ({self.rate:g} requests/s"
                                                  f" per credential); retry in {wait:.2f} s"},
                            [(b"retry-after", str(max(1, round(wait + 0.5))).encode())])
            return
        await self.app(scope, receive, send)


class AuthMiddleware:
    """Resolve the bearer credential (if any) into ``scope["state"]["principal"]``; a header
    that does not resolve gets 401 at once. No header → principal ``None`` (routes deny)."""

    def __init__(self, app: ASGIApp, db: Any, cache: Any = None) -> None:
        self.app = app
        self.db = db
        self.cache = cache

    def _cached(self, token: str) -> Any:
        """The cached principal of ``token`` if fresh, else ``None`` (a dict lookup: done on the
        event loop, so a cache hit costs no thread hand-off)."""
        return None if self.cache is None else self.cache.get(token, time.monotonic())

    async def _principal(self, token: str) -> Any:
        """Cached principal, else authenticate on a worker thread (a database query)."""
        hit = self._cached(token)
        return hit if hit is not None else await to_thread.run_sync(self._resolve, token)

    def _resolve(self, token: str) -> Any:
        now = time.monotonic()
        if self.cache is not None:
            hit = self.cache.get(token, now)
            if hit is not None:
                return hit
        with self.db.session() as s:
            p = authenticate(s, token)
        if self.cache is not None:
            self.cache.put(token, p, now)
        return p

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = _state(scope)
        state["principal"] = None
        auth = _header(scope, b"authorization")
        if auth is None and scope["path"].startswith("/portal/"):
            token = _cookie(scope, PORTAL_COOKIE)
            if token:
                try:
                    state["principal"] = await self._principal(token)
                except AuthError:
                    pass  # stale cookie: the page asks to sign in again
        elif auth is not None:
            if auth[:7].lower() != "bearer ":  # auth-scheme is case-insensitive (RFC 7235 §2.1)
                await send_json(send, 401, {"detail": "Authorization must be 'Bearer <credential>'"},
                                [(b"www-authenticate", b"Bearer")])
                return
            try:
                state["principal"] = await self._principal(auth[7:].strip())
            except AuthError as exc:
                await send_json(send, 401, {"detail": str(exc)}, [(b"www-authenticate", b"Bearer")])
                return
        await self.app(scope, receive, send)


class AuditMiddleware:
    """Write the request's access-log entries before its response starts (see module doc)."""

    def __init__(self, app: ASGIApp, db: Any, log: Any) -> None:
        self.app = app
        self.db = db
        self.log = log

    def _write(self, principal: Any, status: int, accesses: list[Access]) -> None:
        with self.db.session() as s:
            self.log.append(s, actor_role=principal.role, actor_id=principal.credential_id,
                            status=status, accesses=accesses)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = _state(scope)
        state.setdefault("accesses", [])
        failed = False

        async def audited_send(msg: Message) -> None:
            nonlocal failed
            if failed:
                return
            if msg["type"] == "http.response.start" and not state.get("audited"):
                principal = state.get("principal")
                accesses: list[Access] = list(state.get("accesses") or [])
                if principal is not None and (accesses or principal.role != "device"):
                    if not accesses:
                        qs = scope.get("query_string", b"").decode("latin-1")
                        purpose = None
                        for part in qs.split("&"):
                            if part.startswith("purpose="):
                                purpose = part[8:][:64]
                        accesses = [Access("http.request", None,
                                           f"{scope['method']} {scope['path']}", purpose)]
                    try:
                        await to_thread.run_sync(self._write, principal, msg["status"], accesses)
                    except Exception:
                        failed = True
                        await send_json(send, 503, {"detail": "access log unavailable; the "
                                                              "request was refused (fail closed)"})
                        return
            await send(msg)

        await self.app(scope, receive, audited_send)
