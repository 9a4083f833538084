"""The person's portal and the admin's fleet page: server-rendered HTML (Jinja2, no front-end
build), mounted under ``/portal`` by :func:`~.app.create_app` (issue 5 item 7).

Sign-in: the person (or admin) pastes a one-time code from an admin — exchanged for a
credential exactly like ``POST /v1/enroll`` — or an existing credential. The cookie does NOT hold
that credential: sign-in issues a portal session (:func:`.auth.create_portal_session`: random
token, stored hashed with an expiry of :data:`.auth.PORTAL_SESSION_TTL_S`), kept in an
``HttpOnly``, ``SameSite=Strict`` cookie scoped to ``/portal`` (``Secure`` when the request came
over TLS). Logout revokes the session server-side; revoking the credential refuses its sessions.
Pages resolve the cookie in :func:`allow_page` (a cookie holding anything but a live session —
also an old raw credential — is refused); an ``Authorization: Bearer`` header, resolved by
:class:`~.middleware.AuthMiddleware`, is honoured as on the API. State-changing forms
are POSTs, refused when an ``Origin`` header names another host (cross-site request forgery).

Pages (roles; deny by default like the API, refusals are HTML with a sign-in link)::

    GET  /portal/login, POST /portal/login, POST /portal/logout     [anyone]
    GET  /portal/                              [person]  notice and consent, sessions with
                                                         their episodes, access log, actions
    GET  /portal/bundles/{bundle_id}           [person]  a session: frames and events in order
    GET  /portal/bundles/{bundle_id}/episodes/{index}          [person]  replay one episode
    POST /portal/bundles/{bundle_id}/episodes/{index}/delete   [person]  delete one episode
    GET  /portal/bundles/{bundle_id}/blobs/{sha256}   [person]  one blob (image bytes)
    POST /portal/bundles/{bundle_id}/delete    [person]
    GET  /portal/export                        [person]  zip of everything
    POST /portal/erase                         [person]  crypto-shredding (confirm box)
    GET  /portal/admin                         [admin]   devices, backlog, policy versions,
                                                         fleet health; no persons
    POST /portal/admin/devices/{credential_id}/revoke   [admin]
    POST /portal/admin/policies                [admin]   upload a policy version (TOML);
                                                         floor warnings shown on the page
    POST /portal/admin/policies/{version}/current       [admin]
    GET  /portal/audit                         [auditor] bulk-read alerts

The episode replay is the page :func:`demotrace.replay.render_episode` writes for a dataset
(same drawing of each action on its observation), with the frames served by the logged blob
route; episodes come from :mod:`.episodes`.

Every page that shows the person's data is logged (``portal.*`` actions) and so appears in
their own access log.

Messages: the green message box shows only fixed texts (:data:`MESSAGES`) chosen by a ``?msg=``
key that the portal's own redirects set; an unknown key shows nothing, and a refused policy
upload is answered directly (422/409 page) instead of carrying its text in a redirect URL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..errors import SchemaError
from . import auth
from .audit import Access
from . import alerts, fleet, policies
from . import episodes as episodes_
from .errors import AuthError, ConflictError, NotFound

from .middleware import PORTAL_COOKIE as COOKIE
from .models import PolicyVersion
TEMPLATES = Path(__file__).resolve().parent / "templates"

_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))

NOTICE = (
    "This service stores the recordings your devices uploaded after you reviewed and sealed "
    "them on the device (redacted there, before anything left it). They are encrypted with a "
    "key that belongs to you alone. They are used for one purpose only: training computer-use "
    "agents (\"agent-training\"). Curators see them under a pseudonym, every read states that "
    "purpose and is listed below. Nobody — including your employer — gets per-person activity "
    "figures; statistics need at least 10 persons. You can delete a session, export "
    "everything, or erase everything (your key is destroyed, so no copy can be read again)."
)

_IMAGE_MAGIC = ((b"\x89PNG", "image/png"), (b"RIFF", "image/webp"), (b"\xff\xd8", "image/jpeg"))


def sniff(data: bytes) -> str:
    """Media type of a blob from its first bytes (PNG, WebP, JPEG), else octet-stream."""
    for magic, media in _IMAGE_MAGIC:
        if data.startswith(magic):
            return media
    return "application/octet-stream"


MESSAGES: dict[str, str] = {
    "episode-deleted": "Episode deleted",
    "session-deleted": "Session deleted",
    "erase-unconfirmed": "Tick the box to confirm erasure",
    "erased": "Everything was erased",
    "policy-stored": "Policy version {version} stored",
    "policy-stored-current": "Policy version {version} stored and made current",
    "policy-already-stored": "Policy version {version} already stored",
    "policy-already-stored-current": "Policy version {version} already stored and made current",
    "policy-current": "Policy version {version} is now current",
}
"""The only texts the green message box shows, by the ``?msg=`` key the portal's own redirects
set (bug bash: ``?msg=<any text>`` showed a crafted text such as "sign in at http://…" in the
official-looking box). ``{version}`` is filled with the ``?version=`` number when that names a
stored policy version."""

_POLICY_MESSAGES = frozenset(k for k, v in MESSAGES.items() if "{version}" in v)


def message_for(request: Request, versions: Any = ()) -> str | None:
    """The fixed text of the request's ``?msg=`` key (:data:`MESSAGES`), or ``None`` for a
    missing or unknown key. A key whose text names a policy version also needs ``?version=``
    to be one of ``versions`` (ints); otherwise ``None``: no free text reaches the page."""
    text = MESSAGES.get(request.query_params.get("msg", ""))
    if text is None or "{version}" not in text:
        return text
    raw = request.query_params.get("version", "")
    if not raw.isdigit() or int(raw) not in set(versions):
        return None
    return text.format(version=int(raw))


def render(name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    """Render ``templates/<name>`` with ``ctx``."""
    return HTMLResponse(_env.get_template(name).render(**ctx), status_code=status)


class PageError(Exception):
    """A refused page: HTTP ``status`` and a human message (rendered, with a sign-in link)."""

    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


def allow_page(c: Any, *roles: str) -> Any:
    """Like :func:`~.app.allow` for pages over the collector ``c``: no credential or portal
    session → 401 page, other role → 403 page. Without an ``Authorization`` header the
    ``dt_portal`` cookie must hold a live portal session (:func:`.auth.resolve_portal_session`)."""

    def dep(request: Request) -> auth.Principal:
        p = getattr(request.state, "principal", None)
        if request.headers.get("authorization") is None:
            # cookie sign-in: only a live portal session counts (never a raw credential)
            p = None
            token = request.cookies.get(COOKIE)
            if token:
                try:
                    with c.db.session() as s:
                        p = auth.resolve_portal_session(s, token)
                except AuthError:
                    p = None
            request.state.principal = p  # what the access log records
        if p is None:
            raise PageError(401, "Please sign in.")
        if p.role not in roles:
            raise PageError(403, f"This page is not available to the role {p.role!r}.")
        return p

    dep.roles = roles  # type: ignore[attr-defined]
    return dep


def same_origin(request: Request) -> None:
    """Refuse a state-changing request whose ``Origin`` names another host (403)."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlparse(origin).netloc != request.headers.get("host"):
        raise PageError(403, "Cross-site request refused.")


async def form(request: Request) -> dict[str, str]:
    """The urlencoded form fields of a POST (first value of each)."""
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body).items()}


def _log(request: Request, action: str, subject_id: str | None, resource: str) -> None:
    request.state.accesses.append(Access(action, subject_id, resource))


def _events_summary(data: bytes) -> list[dict[str, Any]]:
    from ..schema.events import decode_batch

    rows = []
    for e in decode_batch(data):
        d = {k: getattr(e, k) for k in e.__struct_fields__ if k not in ("seq", "t_ns")}
        detail = ", ".join(f"{k}={v!r}" for k, v in d.items() if v not in (None, (), "", False))
        rows.append({"seq": e.seq, "t_ms": e.t_ns / 1e6, "kind": type(e).__struct_config__.tag,
                     "detail": detail[:160]})
    return rows


def register(app: FastAPI, c: Any) -> None:
    """Add the portal's routes (over the collector ``c``) to ``app``."""
    person = allow_page(c, "person")
    admin = allow_page(c, "admin")

    @app.get("/portal/login", response_class=HTMLResponse)
    def login_page() -> HTMLResponse:
        """Sign-in form."""
        return render("login.html")

    @app.post("/portal/login")
    async def login(request: Request) -> Response:
        """Exchange a one-time code (or check a credential) and set the session cookie."""
        same_origin(request)
        secret = (await form(request)).get("code", "").strip()

        def resolve() -> tuple[auth.Principal, str]:
            with c.db.session() as s:
                if secret.startswith(auth.CODE_PREFIX + "_"):
                    p = auth.enroll(s, secret, "portal sign-in",
                                    roles=("person", "admin", "auditor"))[0]
                else:
                    p = auth.authenticate(s, secret)
                if p.role not in ("person", "admin", "auditor"):
                    return p, ""
                return p, auth.create_portal_session(s, p.credential_id)[0]

        from starlette.concurrency import run_in_threadpool

        try:
            p, token = await run_in_threadpool(resolve)
        except AuthError as exc:
            return render("login.html", 401, error=str(exc))
        if p.role not in ("person", "admin", "auditor"):
            return render("login.html", 403,
                          error=f"the portal is for persons, admins and auditors, not {p.role}")
        home = {"admin": "/portal/admin", "auditor": "/portal/audit"}.get(p.role, "/portal/")
        resp = RedirectResponse(home, 303)
        resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/portal",
                        max_age=auth.PORTAL_SESSION_TTL_S, secure=request.url.scheme == "https")
        return resp

    @app.post("/portal/logout")
    def logout(request: Request) -> Response:
        """End the portal session server-side (the cookie is refused from now on, also if a
        copy of it survives in the browser) and delete the cookie."""
        same_origin(request)
        token = request.cookies.get(COOKIE)
        if token:
            with c.db.session() as s:
                auth.end_portal_session(s, token)
        resp = RedirectResponse("/portal/login", 303)
        resp.delete_cookie(COOKIE, path="/portal", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
        return resp

    @app.get("/portal/", response_class=HTMLResponse)
    def home(request: Request, p: auth.Principal = Depends(person)) -> HTMLResponse:
        """Notice and consent, sessions with their episodes, access log, export and erase."""
        sid = p.subject_id
        assert sid is not None
        _log(request, "portal.home", sid, "portal")
        bundles = c.list_bundles(sid)
        for b in bundles:
            try:
                ss = episodes_.load(c, sid, b["bundle_id"])
                b["session_id"] = ss.session_id
                b["episodes"] = episodes_.summary(ss)
                b["error"] = None
            except (SchemaError, NotFound) as exc:
                b["session_id"], b["episodes"], b["error"] = None, [], str(exc)
            b["deleted"] = episodes_.deleted_spans(c, sid, b["bundle_id"])
        with c.db.session() as s:
            consents = policies.person_consents(s, sid)
        return render("home.html", notice=NOTICE, consents=consents, bundles=bundles,
                      log=c.access_log(sid), message=message_for(request))

    @app.get("/portal/bundles/{bundle_id}/episodes/{index}", response_class=HTMLResponse)
    def replay_episode(bundle_id: str, index: int, request: Request,
                       p: auth.Principal = Depends(person)) -> HTMLResponse:
        """Replay one episode: each step's observation with its action drawn on it (the page
        of ``demotrace replay``), plus a way back and a delete button."""
        sid = p.subject_id
        assert sid is not None
        _log(request, "portal.replay_episode", sid, f"bundle:{bundle_id}/episode:{index}")
        ss = episodes_.load(c, sid, bundle_id)
        ep = episodes_.find(ss, index)
        page = episodes_.replay_html(
            ss, ep, lambda sha: f"/portal/bundles/{bundle_id}/blobs/{sha}")
        bar = _env.get_template("episode_bar.html").render(bundle_id=bundle_id, index=index)
        return HTMLResponse(page.replace("<body>", "<body>" + bar, 1),
                            headers={"cache-control": "no-store"})

    @app.post("/portal/bundles/{bundle_id}/episodes/{index}/delete")
    def delete_episode(bundle_id: str, index: int, request: Request,
                       p: auth.Principal = Depends(person)) -> Response:
        """Delete one episode (its events and frames leave the stored bundle)."""
        same_origin(request)
        assert p.subject_id is not None
        _log(request, "portal.delete_episode", p.subject_id, f"bundle:{bundle_id}/episode:{index}")
        episodes_.delete_episode(c, p.subject_id, bundle_id, index)
        return RedirectResponse("/portal/?msg=episode-deleted", 303)

    @app.get("/portal/bundles/{bundle_id}", response_class=HTMLResponse)
    def replay(bundle_id: str, request: Request, p: auth.Principal = Depends(person)) -> HTMLResponse:
        """Replay one session: frames and events in time order."""
        sid = p.subject_id
        _log(request, "portal.replay", sid, f"bundle:{bundle_id}")
        m = c.read_manifest(sid, bundle_id)
        frames, events, others = [], [], []
        for ref in m.get("blobs", []):
            path = ref.get("path", "")
            if path.startswith("events/"):
                try:
                    events += _events_summary(c.read_blob(sid, bundle_id, ref["sha256"]))
                except SchemaError:
                    others.append(ref)
            elif path.startswith("frames/") or path.endswith((".png", ".webp", ".jpg", ".jpeg")):
                frames.append(ref)
            else:
                others.append(ref)
        events.sort(key=lambda e: e["seq"])
        return render("replay.html", bundle_id=bundle_id, manifest=m, frames=frames,
                      events=events, others=others)

    @app.get("/portal/bundles/{bundle_id}/blobs/{sha256}")
    def blob(bundle_id: str, sha256: str, request: Request,
             p: auth.Principal = Depends(person)) -> Response:
        """One own blob (images are served with their media type)."""
        _log(request, "portal.read_blob", p.subject_id, f"bundle:{bundle_id}/blob:{sha256}")
        data = c.read_blob(p.subject_id, bundle_id, sha256)
        return Response(data, media_type=sniff(data),
                        headers={"x-content-type-options": "nosniff",
                                 "cache-control": "no-store"})

    @app.post("/portal/bundles/{bundle_id}/delete")
    def delete(bundle_id: str, request: Request, p: auth.Principal = Depends(person)) -> Response:
        """Delete one session."""
        same_origin(request)
        _log(request, "portal.delete_bundle", p.subject_id, f"bundle:{bundle_id}")
        c.delete_bundle(p.subject_id, bundle_id)
        return RedirectResponse("/portal/?msg=session-deleted", 303)

    @app.get("/portal/export")
    def export(request: Request, p: auth.Principal = Depends(person)) -> Response:
        """Everything about the person, as a zip download."""
        _log(request, "portal.export", p.subject_id, "export")
        return Response(c.export_person(p.subject_id), media_type="application/zip",
                        headers={"content-disposition":
                                 'attachment; filename="demotrace-export.zip"'})

    @app.post("/portal/erase")
    async def erase(request: Request, p: auth.Principal = Depends(person)) -> Response:
        """Erase everything (needs the confirmation box)."""
        same_origin(request)
        if (await form(request)).get("confirm") != "yes":
            return RedirectResponse("/portal/?msg=erase-unconfirmed", 303)
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(lambda: c.erase(p.subject_id, audit_as=(
            p.role, p.credential_id, "portal.erase")))
        request.state.audited = True  # its entry was written in the erasure's transaction
        return RedirectResponse("/portal/?msg=erased", 303)

    @app.get("/portal/admin", response_class=HTMLResponse)
    def admin_page(request: Request, p: auth.Principal = Depends(admin)) -> HTMLResponse:
        """Devices, upload backlog, policy versions and fleet health — no person, no
        per-person or per-device activity figures (see :mod:`.fleet`)."""
        return _admin_page(request)

    def _admin_page(request: Request, status: int = 200, error: str | None = None) -> HTMLResponse:
        """The admin page; its message comes from :func:`message_for` (a fixed text), and after
        an upload (``?msg=policy-…&version=N``) the floor warnings are computed again from the
        stored text of version N (:func:`.policies.floor_warnings`) — never read from the URL.
        ``error`` (an upload refused) is only passed by the upload route's direct answer."""
        with c.db.session() as s:
            pols = policies.list_policies(s)
            message = message_for(request, [pv["version"] for pv in pols])
            warnings: list[str] = []
            if message and request.query_params.get("msg") in _POLICY_MESSAGES - {"policy-current"}:
                row = s.get(PolicyVersion, int(request.query_params["version"]))
                if row is not None:
                    pol, text = policies.parse_policy(row.toml_text.encode())
                    warnings = policies.floor_warnings(pol, text)
        return render("admin.html", status, devices=fleet.devices(c), health=c.fleet_health(),
                      backlog=fleet.backlog(c), groups=c.stats(), policies=pols,
                      message=message, error=error, warnings=warnings)

    @app.post("/portal/admin/policies")
    async def admin_policy_upload(request: Request, p: auth.Principal = Depends(admin)) -> Response:
        """Store the policy TOML pasted in the form (optionally making it current)."""
        same_origin(request)
        f = await form(request)

        def store() -> dict[str, Any]:
            with c.db.session() as s:
                return policies.store_policy(s, f.get("toml", "").encode(), p.credential_id,
                                             make_current=f.get("current") == "yes")

        from starlette.concurrency import run_in_threadpool

        try:
            r = await run_in_threadpool(store)
        except (policies.PolicyRejected, ConflictError) as exc:
            # answered directly (no redirect): the refusal's text never travels in a URL
            return _admin_page(request, exc.status, error=str(exc))
        key = ("policy-stored" if r["created"] else "policy-already-stored") + (
            "-current" if r["is_current"] else "")
        return RedirectResponse("/portal/admin?" + urlencode(
            {"msg": key, "version": r["version"]}), 303)

    @app.post("/portal/admin/policies/{version}/current")
    def admin_policy_current(version: int, request: Request,
                             p: auth.Principal = Depends(admin)) -> Response:
        """Make a stored version the current one."""
        same_origin(request)
        with c.db.session() as s:
            policies.set_current(s, version)
        return RedirectResponse("/portal/admin?" + urlencode(
            {"msg": "policy-current", "version": version}), 303)

    @app.post("/portal/admin/devices/{credential_id}/revoke")
    def admin_revoke(credential_id: str, request: Request,
                     p: auth.Principal = Depends(admin)) -> Response:
        """Revoke a device."""
        same_origin(request)
        c.revoke(credential_id)
        return RedirectResponse("/portal/admin", 303)

    @app.get("/portal/audit", response_class=HTMLResponse)
    def audit_page(request: Request, p: auth.Principal = Depends(allow_page(c, "auditor"))) -> HTMLResponse:
        """Alerts of the access log (bulk reads), newest first."""
        with c.db.session() as s:
            rows = alerts.list_alerts(s)
        return render("audit.html", alerts=rows)


PAGE_PUBLIC = frozenset({"/portal/login", "/portal/logout"})
"""Portal paths reachable without a credential."""
