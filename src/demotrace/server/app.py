"""The collector's HTTP API (FastAPI). Build it with :func:`create_app`.

Endpoints (all JSON unless noted; roles in brackets; deny by default)::

    GET    /healthz                                        [anyone]   liveness only
    POST   /v1/enroll                                      [anyone with a one-time code]
    POST   /v1/bundles                                     [device]   manifest → missing blobs
    PUT    /v1/bundles/{bundle_id}/blobs/{sha256}          [device]   raw bytes, verified
    POST   /v1/bundles/{bundle_id}/blobs                   [device]   many blobs, one request
    POST   /v1/bundles/{bundle_id}/commit                  [device]   409 while blobs missing
    GET    /v1/me/bundles                                  [person]   own bundles
    GET    /v1/me/bundles/{bundle_id}                      [person]   own manifest
    GET    /v1/me/bundles/{bundle_id}/blobs/{sha256}       [person]   own blob (bytes)
    DELETE /v1/me/bundles/{bundle_id}                      [person]
    GET    /v1/me/bundles/{bundle_id}/episodes             [person]   own session's episodes
    DELETE /v1/me/bundles/{bundle_id}/episodes/{index}     [person]   delete one episode
    GET    /v1/me/consent                                  [person]   own consent records
    GET    /v1/me/access-log                               [person]   every access to own data
    GET    /v1/me/export                                   [person]   zip of everything
    POST   /v1/me/erase  {"confirm": "erase everything"}  [person]   crypto-shredding
    GET    /v1/curator/bundles?purpose=agent-training      [curator]  pseudonymous listing
    GET    /v1/curator/subjects/{sid}/bundles/{bid}?purpose=…            [curator]
    GET    /v1/curator/subjects/{sid}/bundles/{bid}/blobs/{sha}?purpose=…  [curator] (bytes)
    GET    /v1/curator/stats?purpose=…                     [curator]  groups of ≥ k persons
    GET    /v1/curator/datasets?purpose=…                  [curator]
    POST   /v1/curator/datasets?purpose=…                  [curator]
    POST   /v1/admin/enrollment-codes                      [admin]
    GET    /v1/admin/devices                               [admin]    no person ids, no activity
    POST   /v1/admin/credentials/{credential_id}/revoke    [admin]
    GET    /v1/admin/health                                [admin]    fleet-level only
    GET    /v1/admin/policies                              [admin]    policy versions
    POST   /v1/admin/policies?current=true                 [admin]    upload a policy TOML
    POST   /v1/admin/policies/{version}/current            [admin]
    GET    /v1/policy/current                              [device, person]  policy in force
    GET    /v1/audit/export                                [auditor]  signed export document
    GET    /v1/audit/alerts                                [auditor]  bulk-read alerts
    GET    /v1/audit/public-key                            [auditor]
    /portal/…                                              the person's portal and the admin's
                                                           fleet page (see :mod:`.portal`)

No endpoint returns per-person activity figures; aggregates need ``k_min_persons`` (10).
Every curator read must state ``purpose=agent-training`` and is logged with the subject id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from .. import __version__
from ..errors import ConfigError, DecryptionError, SchemaError
from . import alerts, auth, fleet, policies, portal
from . import episodes as episodes_
from .audit import PURPOSE_AGENT_TRAINING, Access
from .config import ServerConfig
from .errors import BlobStoreError, ConflictError, ServerError
from .middleware import (
    AuditMiddleware,
    AuthMiddleware,
    BodyLimitMiddleware,
    RateLimitMiddleware,
)
from .service import Collector
from .wire import BATCH_MEDIA_TYPE, decode_batch_body

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/healthz", "/v1/enroll", "/openapi.json", "/docs",
                          "/docs/oauth2-redirect", "/redoc", "/portal/login", "/portal/logout"})
"""Routes reachable without a credential (everything else must declare its roles)."""


class ApiError(Exception):
    """Raised by :func:`allow`: an HTTP status and a message."""

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail


def allow(*roles: str) -> Callable[[Request], auth.Principal]:
    """Dependency admitting only ``roles``: no credential → 401, another role → 403."""

    def dep(request: Request) -> auth.Principal:
        p: auth.Principal | None = request.state.principal if hasattr(request.state, "principal") else None
        if p is None:
            raise ApiError(401, "credential required (Authorization: Bearer dtc_…)")
        if p.role not in roles:
            raise ApiError(403, f"role {p.role!r} may not call this endpoint "
                                f"(allowed: {', '.join(roles)})")
        return p

    dep.roles = roles  # type: ignore[attr-defined]
    return dep


_SUBJECT_ACTIONS = {"cur_manifest": "curator.read_manifest", "cur_blob": "curator.read_blob"}


def curator_purpose(request: Request,
                    purpose: str | None = Query(None, description="must be 'agent-training'")) -> str:
    """The purpose a curator states; anything but "agent-training" is refused (403), none 400.

    On routes that name a subject the attempt is logged against that subject whether or not
    it is allowed, so the person sees refused attempts too.
    """
    pp = request.path_params
    action = _SUBJECT_ACTIONS.get(getattr(request.scope.get("endpoint"), "__name__", ""))
    if action and "subject_id" in pp:
        res = f"bundle:{pp.get('bundle_id', '')}" + (f"/blob:{pp['sha256']}" if "sha256" in pp else "")
        _log(request, action, str(pp["subject_id"])[:64], res, (purpose or "")[:64] or None)
    if purpose is None:
        raise ApiError(400, "curator reads must state ?purpose=agent-training")
    if purpose != PURPOSE_AGENT_TRAINING:
        raise ApiError(403, f"purpose {purpose[:64]!r} is not permitted; the only purpose is "
                            f"{PURPOSE_AGENT_TRAINING!r}")
    p = getattr(request.state, "principal", None)
    if action and "subject_id" in pp and p is not None and p.role == "curator":
        c = request.app.state.collector
        with c.db.session() as s:
            alert = alerts.bulk_read_check(
                s, p.credential_id, str(pp["subject_id"])[:64], str(pp.get("bundle_id", ""))[:64],
                max_bundles=c.config.bulk_read_max_bundles, window_s=c.config.bulk_read_window_s)
        if alert is not None:
            request.state.accesses.append(alert)
    return purpose


def _log(request: Request, action: str, subject_id: str | None, resource: str,
         purpose: str | None = None) -> None:
    request.state.accesses.append(Access(action, subject_id, resource, purpose))


class EnrollIn(BaseModel):
    """A one-time code and a label for the new credential (e.g. the device name)."""

    code: str = Field(max_length=200)
    label: str = Field("", max_length=200)


ERASE_CONFIRMATION = "erase everything"
"""The text ``POST /v1/me/erase`` needs in its ``confirm`` field."""


class EraseIn(BaseModel):
    """Body of ``POST /v1/me/erase``: ``confirm`` must be exactly ``"erase everything"``."""

    confirm: str | None = Field(None, description='exactly "erase everything"')


class CodeIn(BaseModel):
    """Role of the code; ``person``: the person's identity (e-mail-like) for device/person."""

    role: str = Field(max_length=16)
    person: str | None = Field(None, max_length=320)


class Member(BaseModel):
    """One (subject, bundle) pair of a dataset."""

    subject_id: str = Field(max_length=64)
    bundle_id: str = Field(max_length=64)


class DatasetIn(BaseModel):
    """A derived dataset's name and the bundles it was built from."""

    name: str = Field(max_length=200)
    members: list[Member] = Field(max_length=100_000)


SHORT_VALUE_CHARS = 100
"""How many characters of an offending value a 422 answer echoes (enough to recognise it)."""


def short_value(value: Any) -> Any:
    """``value`` for a validation-error answer: JSON scalars and strings/containers whose
    ``repr`` has at most :data:`SHORT_VALUE_CHARS` characters as they are; anything longer as a
    string of its first :data:`SHORT_VALUE_CHARS` characters (of the string itself, or of its
    ``repr``) plus ``"… (N characters)"``, N being the full length."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= SHORT_VALUE_CHARS:
        return value if isinstance(value, str) else jsonable_encoder(value)
    return f"{text[:SHORT_VALUE_CHARS]}… ({len(text)} characters)"


def _short_error(err: Any) -> dict[str, Any]:
    d = dict(err)
    if "input" in d:
        d["input"] = short_value(d["input"])
    if isinstance(d.get("ctx"), dict):
        d["ctx"] = {k: short_value(v) for k, v in d["ctx"].items()}
    if isinstance(d.get("msg"), str) and len(d["msg"]) > 10 * SHORT_VALUE_CHARS:
        d["msg"] = short_value(d["msg"])
    return jsonable_encoder(d)


def create_app(config: ServerConfig, *, collector: Collector | None = None) -> FastAPI:
    """Build the API for ``config`` (opens database, blob store and keys, runs migrations).

    Raises:
        ConfigError: a route declares no roles (deny by default is enforced at build time).
    """
    c = collector or Collector(config)
    app = FastAPI(title="demotrace collector", version=__version__,
                  description=(__doc__ or "").split("\n\n")[0])
    app.state.collector = c

    @app.exception_handler(ApiError)
    async def _api_error(_r: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_r: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422 shape (``{"detail": [{"type", "loc", "msg", "input", "ctx"?}, …]}``)
        with each ``input``/``ctx`` value cut by :func:`short_value` (bug bash: a 60 MB
        ``code`` came back whole in the 422 body)."""
        return JSONResponse({"detail": [_short_error(e) for e in exc.errors()]}, status_code=422)

    @app.exception_handler(portal.PageError)
    async def _page_error(_r: Request, exc: portal.PageError) -> Response:
        return portal.render("message.html", exc.status, code=exc.status, text=exc.message)

    @app.exception_handler(ServerError)
    async def _server_error(r: Request, exc: ServerError) -> Response:
        if r.url.path.startswith("/portal/"):
            return portal.render("message.html", exc.status, code=exc.status, text=str(exc))
        body: dict[str, Any] = {"detail": str(exc)}
        if isinstance(exc, ConflictError) and hasattr(exc, "missing"):
            body["missing"] = exc.missing
        return JSONResponse(body, status_code=exc.status)

    def _store_failure(r: Request, status: int, text: str) -> Response:
        if r.url.path.startswith("/portal/"):
            return portal.render("message.html", status, code=status, text=text)
        return JSONResponse({"detail": text}, status_code=status)

    @app.exception_handler(DecryptionError)
    async def _stored_data_altered(r: Request, exc: DecryptionError) -> Response:
        """A stored object (blob or manifest) fails authentication: it was altered inside
        the blob store or database — the collector's upstream storage gave a bad answer
        (502). The message names the blob, never its content."""
        log.error("%s %s: stored data fails its integrity check: %s", r.method, r.url.path, exc)
        return _store_failure(r, 502, f"stored data failed its integrity check: {exc}")

    @app.exception_handler(BlobStoreError)
    async def _blob_store_down(r: Request, exc: BlobStoreError) -> Response:
        """The blob store failed or is unreachable (503: retry later); the message names the
        backend and the object."""
        log.error("%s %s: blob store failed: %s", r.method, r.url.path, exc)
        return _store_failure(r, 503, f"blob store unavailable, retry later: {exc}")

    @app.exception_handler(SchemaError)
    async def _schema_error(_r: Request, exc: SchemaError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(ConfigError)
    async def _config_error(_r: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    # -- public ---------------------------------------------------------------------------------
    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness: the process answers (no data, no figures)."""
        return {"status": "ok"}

    @app.post("/v1/enroll")
    def enroll(body: EnrollIn) -> dict[str, str]:
        """Exchange a one-time code for a credential (shown once; stored hashed)."""
        with c.db.session() as s:
            p, token = auth.enroll(s, body.code, body.label)
        return {"credential": token, "credential_id": p.credential_id, "role": p.role}

    # -- device: upload protocol --------------------------------------------------------------
    device = allow("device")

    @app.post("/v1/bundles", openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": {"type": "object"}}}}})
    async def begin_upload(request: Request, p: auth.Principal = Depends(device)) -> dict[str, Any]:
        """Send a manifest; the answer lists the blobs the server lacks."""
        manifest = c.parse_manifest(await request.body())
        assert p.subject_id is not None
        r = await run_in_threadpool(c.begin, p.subject_id, p.credential_id, manifest)
        return {"bundle_id": r.bundle_id, "state": r.state, "missing": r.missing}

    @app.put("/v1/bundles/{bundle_id}/blobs/{sha256}", openapi_extra={"requestBody": {
        "required": True, "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}}})
    async def put_blob(bundle_id: str, sha256: str, request: Request,
                       p: auth.Principal = Depends(device)) -> dict[str, Any]:
        """Upload one blob's raw bytes (``application/octet-stream``); verified against the
        manifest's sha256 and size."""
        data = await request.body()
        assert p.subject_id is not None
        new = await run_in_threadpool(c.put_blob, p.subject_id, bundle_id, sha256, data)
        return {"sha256": sha256, "stored": True, "new": new}

    @app.post("/v1/bundles/{bundle_id}/blobs", openapi_extra={"requestBody": {
        "required": True, "description": f"framed blobs ({BATCH_MEDIA_TYPE}): per blob 64 hex "
        "digits of its sha256, 16 decimal digits of its size, then its bytes",
        "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}}})
    async def put_blobs(bundle_id: str, request: Request,
                        p: auth.Principal = Depends(device),
                        commit: bool = Query(False, description=(
                            "also commit the bundle in the same transaction (the last batch "
                            "of an upload); the answer then carries the commit receipt, or "
                            "409 listing blobs still missing (this batch is kept)"))
                        ) -> dict[str, Any]:
        """Upload several blobs in one request (framing: ``wire.BATCH_MEDIA_TYPE``); each
        is verified like a single PUT; all or nothing."""
        blobs = decode_batch_body(await request.body())
        assert p.subject_id is not None
        if commit:
            new, receipt = await run_in_threadpool(c.put_blobs_and_commit, p.subject_id,
                                                   bundle_id, blobs, actor_id=p.credential_id)
            return {"stored": len(blobs), "new": new, "commit": receipt}
        new = await run_in_threadpool(c.put_blobs, p.subject_id, bundle_id, blobs)
        return {"stored": len(blobs), "new": new}

    @app.post("/v1/bundles/{bundle_id}/commit")
    def commit(bundle_id: str, p: auth.Principal = Depends(device)) -> dict[str, Any]:
        """Commit a bundle whose blobs all arrived (409 lists those still missing). The
        ``device.commit`` access-log entry is written in the commit's own transaction."""
        assert p.subject_id is not None
        return c.commit(p.subject_id, bundle_id, actor_id=p.credential_id)

    # -- person: own data -----------------------------------------------------------------------
    person = allow("person")

    @app.get("/v1/me/bundles")
    def my_bundles(request: Request, p: auth.Principal = Depends(person)) -> list[dict[str, Any]]:
        """The caller's committed bundles."""
        _log(request, "person.list_bundles", p.subject_id, "bundles")
        return c.list_bundles(p.subject_id)

    @app.get("/v1/me/bundles/{bundle_id}")
    def my_manifest(bundle_id: str, request: Request,
                    p: auth.Principal = Depends(person)) -> dict[str, Any]:
        """One own bundle's manifest."""
        assert p.subject_id is not None
        _log(request, "person.read_manifest", p.subject_id, f"bundle:{bundle_id}")
        return c.read_manifest(p.subject_id, bundle_id)

    @app.get("/v1/me/bundles/{bundle_id}/blobs/{sha256}")
    def my_blob(bundle_id: str, sha256: str, request: Request,
                p: auth.Principal = Depends(person)) -> Response:
        """One own blob's bytes."""
        assert p.subject_id is not None
        _log(request, "person.read_blob", p.subject_id, f"bundle:{bundle_id}/blob:{sha256}")
        return Response(c.read_blob(p.subject_id, bundle_id, sha256),
                        media_type="application/octet-stream")

    @app.delete("/v1/me/bundles/{bundle_id}")
    def my_delete(bundle_id: str, request: Request,
                  p: auth.Principal = Depends(person)) -> dict[str, Any]:
        """Delete one own bundle (datasets that used it are marked for rebuild)."""
        assert p.subject_id is not None
        _log(request, "person.delete_bundle", p.subject_id, f"bundle:{bundle_id}")
        return c.delete_bundle(p.subject_id, bundle_id)

    @app.get("/v1/me/bundles/{bundle_id}/episodes")
    def my_episodes(bundle_id: str, request: Request,
                    p: auth.Principal = Depends(person)) -> list[dict[str, Any]]:
        """The episodes of one own session: index, instruction, start/end, step count."""
        assert p.subject_id is not None
        _log(request, "person.list_episodes", p.subject_id, f"bundle:{bundle_id}")
        return episodes_.summary(episodes_.load(c, p.subject_id, bundle_id))

    @app.delete("/v1/me/bundles/{bundle_id}/episodes/{index}")
    def my_delete_episode(bundle_id: str, index: int, request: Request,
                          p: auth.Principal = Depends(person)) -> dict[str, Any]:
        """Delete one episode of an own session: its events and frames are removed from the
        stored bundle for every reader (datasets that used the bundle are marked for rebuild)."""
        assert p.subject_id is not None
        _log(request, "person.delete_episode", p.subject_id, f"bundle:{bundle_id}/episode:{index}")
        return episodes_.delete_episode(c, p.subject_id, bundle_id, index)

    @app.get("/v1/me/consent")
    def my_consent(request: Request, p: auth.Principal = Depends(person)) -> list[dict[str, Any]]:
        """The caller's consent records (as carried by their bundles) with each notice text."""
        assert p.subject_id is not None
        _log(request, "person.read_consent", p.subject_id, "consent")
        with c.db.session() as s:
            return policies.person_consents(s, p.subject_id)

    @app.get("/v1/me/access-log")
    def my_access_log(request: Request, p: auth.Principal = Depends(person)) -> list[dict[str, Any]]:
        """Every logged access to the caller's data (DESIGN.md §8.9)."""
        assert p.subject_id is not None
        _log(request, "person.read_access_log", p.subject_id, "access-log")
        return c.access_log(p.subject_id)

    @app.get("/v1/me/export")
    def my_export(request: Request, p: auth.Principal = Depends(person)) -> Response:
        """Everything stored about the caller, as a zip."""
        assert p.subject_id is not None
        _log(request, "person.export", p.subject_id, "export")
        return Response(c.export_person(p.subject_id), media_type="application/zip",
                        headers={"content-disposition": 'attachment; filename="demotrace-export.zip"'})

    @app.post("/v1/me/erase")
    def my_erase(request: Request, body: EraseIn | None = None,
                 p: auth.Principal = Depends(person)) -> dict[str, Any]:
        """Erase everything about the caller (crypto-shredding; datasets marked for rebuild).
        Irreversible, so the body must confirm it: ``{"confirm": "erase everything"}`` (422
        otherwise; the portal's form has the same confirm box)."""
        assert p.subject_id is not None
        if body is None or body.confirm != ERASE_CONFIRMATION:
            raise ApiError(422, "erasure is irreversible: send the JSON body "
                                f'{{"confirm": "{ERASE_CONFIRMATION}"}} to confirm it')
        out = c.erase(p.subject_id, audit_as=(p.role, p.credential_id, "person.erase"))
        request.state.audited = True  # its entry was written in the erasure's transaction
        return out

    # -- curator: pseudonymised, purpose-bound --------------------------------------------------
    curator = allow("curator")

    @app.get("/v1/curator/bundles")
    def cur_bundles(request: Request, p: auth.Principal = Depends(curator),
                    purpose: str = Depends(curator_purpose)) -> list[dict[str, Any]]:
        """Every committed bundle, by pseudonymous subject id (one log entry per subject)."""
        rows = c.list_bundles()
        for sid in sorted({r["subject_id"] for r in rows}):
            _log(request, "curator.list_bundles", sid, "bundles", purpose)
        if not rows:
            _log(request, "curator.list_bundles", None, "bundles", purpose)
        return rows

    @app.get("/v1/curator/subjects/{subject_id}/bundles/{bundle_id}")
    def cur_manifest(subject_id: str, bundle_id: str, request: Request,
                     p: auth.Principal = Depends(curator),
                     purpose: str = Depends(curator_purpose)) -> dict[str, Any]:
        """A committed bundle's manifest (logged by :func:`curator_purpose`)."""
        return c.read_manifest(subject_id, bundle_id)

    @app.get("/v1/curator/subjects/{subject_id}/bundles/{bundle_id}/blobs/{sha256}")
    def cur_blob(subject_id: str, bundle_id: str, sha256: str, request: Request,
                 p: auth.Principal = Depends(curator),
                 purpose: str = Depends(curator_purpose)) -> Response:
        """A blob's bytes (logged by :func:`curator_purpose`)."""
        return Response(c.read_blob(subject_id, bundle_id, sha256),
                        media_type="application/octet-stream")

    @app.get("/v1/curator/stats")
    def cur_stats(request: Request, p: auth.Principal = Depends(curator),
                  purpose: str = Depends(curator_purpose)) -> dict[str, Any]:
        """Aggregates by platform, only for groups of at least k persons."""
        return c.stats()

    @app.get("/v1/curator/datasets")
    def cur_datasets(request: Request, p: auth.Principal = Depends(curator),
                     purpose: str = Depends(curator_purpose)) -> list[dict[str, Any]]:
        """Registered derived datasets and whether they need a rebuild after erasures."""
        return c.list_datasets()

    @app.post("/v1/curator/datasets")
    def cur_register(body: DatasetIn, request: Request, p: auth.Principal = Depends(curator),
                     purpose: str = Depends(curator_purpose)) -> dict[str, Any]:
        """Record which bundles a derived dataset was built from."""
        for m in body.members:
            _log(request, "curator.register_dataset", m.subject_id, f"dataset:{body.name}",
                 purpose)
        return c.register_dataset(body.name, p.credential_id,
                                  [(m.subject_id, m.bundle_id) for m in body.members])

    # -- admin: fleet, never captures -----------------------------------------------------------
    admin = allow("admin")

    @app.post("/v1/admin/enrollment-codes")
    def admin_code(body: CodeIn, p: auth.Principal = Depends(admin)) -> dict[str, str]:
        """Create a one-time enrollment code (device/person codes name the person)."""
        sid = c.pseudonyms.subject_id(body.person) if body.person else None
        with c.db.session() as s:
            code, exp = auth.create_enrollment_code(s, body.role, subject_id=sid,
                                                    created_by=p.credential_id,
                                                    ttl_s=config.enrollment_ttl_s)
        return {"code": code, "role": body.role, "expires_at": exp.isoformat()}

    @app.get("/v1/admin/devices")
    def admin_devices(p: auth.Principal = Depends(admin)) -> list[dict[str, Any]]:
        """Enrolled devices: id, label, enrollment time, revoked or not, day of the last upload,
        stale flag, unfinished uploads (no person, no per-device counts: see :mod:`.fleet`)."""
        return fleet.devices(c)

    @app.post("/v1/admin/credentials/{credential_id}/revoke")
    def admin_revoke(credential_id: str, p: auth.Principal = Depends(admin)) -> dict[str, Any]:
        """Revoke a credential (device or staff); effective on the next request."""
        c.revoke(credential_id)
        return {"credential_id": credential_id, "revoked": True,
                "at": datetime.now(UTC).isoformat()}

    @app.get("/v1/admin/health")
    def admin_health(p: auth.Principal = Depends(admin)) -> dict[str, Any]:
        """Fleet health (no per-person or per-device activity), with the upload ``backlog``
        and platform ``groups`` of at least k persons."""
        return {**c.fleet_health(), "backlog": fleet.backlog(c), "groups": c.stats()["groups"]}

    @app.get("/v1/admin/policies")
    def admin_policies(p: auth.Principal = Depends(admin)) -> list[dict[str, Any]]:
        """Every stored policy version, newest first; one is current."""
        with c.db.session() as s:
            return policies.list_policies(s)

    @app.post("/v1/admin/policies", openapi_extra={"requestBody": {
        "required": True, "description": "the policy TOML (UTF-8); any content type",
        "content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def admin_upload_policy(request: Request, p: auth.Principal = Depends(admin),
                                  current: bool = Query(False, description="make it current")
                                  ) -> dict[str, Any]:
        """Store a policy version (the TOML as the body; validated like `demotrace policy`).
        Same version and text again: no-op; same version, other text: 409."""
        body = await request.body()

        def store() -> dict[str, Any]:
            with c.db.session() as s:
                return policies.store_policy(s, body, p.credential_id, make_current=current)

        return await run_in_threadpool(store)

    @app.post("/v1/admin/policies/{version}/current")
    def admin_current_policy(version: int, p: auth.Principal = Depends(admin)) -> dict[str, Any]:
        """Make a stored version the current one (what devices fetch)."""
        with c.db.session() as s:
            policies.set_current(s, version)
            return policies.current_policy(s)

    # -- devices and persons: the policy in force -------------------------------------------
    @app.get("/v1/policy/current")
    def policy_current(p: auth.Principal = Depends(allow("device", "person"))) -> dict[str, Any]:
        """The current policy version: ``version``, ``notice``, ``notice_sha256``, ``toml``."""
        with c.db.session() as s:
            return policies.current_policy(s)

    # -- auditor --------------------------------------------------------------------------------
    auditor = allow("auditor")

    @app.get("/v1/audit/export")
    def audit_export(p: auth.Principal = Depends(auditor)) -> dict[str, Any]:
        """The whole access log with signed checkpoints (check with `demotrace audit verify`)."""
        return c.audit_export()

    @app.get("/v1/audit/alerts")
    def audit_alerts(p: auth.Principal = Depends(auditor)) -> list[dict[str, Any]]:
        """Alert entries of the access log (bulk reads), newest first."""
        with c.db.session() as s:
            return alerts.list_alerts(s)

    @app.get("/v1/audit/public-key")
    def audit_key(p: auth.Principal = Depends(auditor)) -> dict[str, str]:
        """The Ed25519 checkpoint public key (hex of 32 raw bytes) and its id."""
        return {"public_key": c.signer.public_raw.hex(), "key_id": c.signer.key_id}

    portal.register(app, c)
    _check_policies(app)
    app.add_middleware(AuditMiddleware, db=c.db, log=c.audit)
    app.add_middleware(AuthMiddleware, db=c.db, cache=c.auth_cache)
    app.add_middleware(RateLimitMiddleware, rate=config.rate_per_s, burst=config.rate_burst)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    return app


WORKER_HEADER_ENV = "DEMOTRACE_SERVER_WORKER_HEADER"
"""Set to ``1`` (``demotrace server --debug-worker-header``) to add ``X-Demotrace-Worker:
<pid>`` to every response — a debugging aid showing which worker process answered."""


SUPERVISOR_PID_ENV = "DEMOTRACE_SERVER_SUPERVISOR_PID"
"""Set by ``demotrace server --workers N`` to its own pid (decimal) before it starts the
workers; a worker whose parent pid differs at start-up exits at once (see
:func:`_die_with_supervisor`)."""

PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal this process gets when the thread that created it exits
(``<linux/prctl.h>``; prctl(2))."""


def _die_with_supervisor() -> None:
    """Tie this worker process's life to its supervisor's (Linux): ask the kernel for SIGTERM
    when the parent dies (``prctl(PR_SET_PDEATHSIG, SIGTERM)`` through libc), then — to close
    the race where the parent died before that call — exit at once (status 0, one line on
    stderr) if ``os.getppid()`` is no longer the pid in ``$DEMOTRACE_SERVER_SUPERVISOR_PID``
    (:data:`SUPERVISOR_PID_ENV`; a re-parented orphan has the init or subreaper pid).

    Why: a ``kill -9`` of the supervisor otherwise leaves the workers serving the port as
    orphans, and a new ``demotrace server`` on that port fails "Address already in use".
    SIGTERM (not SIGKILL) so uvicorn shuts the worker down cleanly (it stops accepting, lets
    requests in flight finish, runs the shutdown handlers); uvicorn's handler is installed
    before the app factory runs, so a SIGTERM that arrives during start-up is also graceful.
    The kernel sends the signal when the parent *thread* that forked the worker ends; uvicorn's
    supervisor starts its workers from its main thread.

    Does nothing when the variable is unset (the app run by plain uvicorn, or in-process).
    Elsewhere than Linux only the parent-pid check is done. If prctl fails, a warning is
    printed and the worker runs on without the tie.

    Raises:
        ConfigError: the variable is set but is not a positive decimal pid.
    """
    import os
    import signal
    import sys

    text = os.environ.get(SUPERVISOR_PID_ENV)
    if text is None:
        return
    try:
        supervisor = int(text)
    except ValueError:
        supervisor = 0
    if supervisor <= 0:
        raise ConfigError(f"${SUPERVISOR_PID_ENV}: not a process id: {text!r}")
    if sys.platform == "linux":
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            err = ctypes.get_errno()
            print(f"warning: worker {os.getpid()}: prctl(PR_SET_PDEATHSIG) failed: "
                  f"{os.strerror(err)}; it will not stop if its supervisor is killed",
                  file=sys.stderr, flush=True)
    if os.getppid() != supervisor:
        print(f"worker {os.getpid()}: supervisor {supervisor} is gone (parent is now "
              f"{os.getppid()}); exiting", file=sys.stderr, flush=True)
        os._exit(0)


def create_app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes (``demotrace.server.app:create_app_from_env``,
    ``factory=True``): builds this process's own :class:`Collector` from the config JSON in
    ``$DEMOTRACE_SERVER_CONFIG`` (:data:`.config.CONFIG_ENV`).

    The parent (``demotrace server --workers N``) has already run the migrations, created the
    key files, the audit head and the built-in policy, and swept pending blob deletes, so a
    worker runs none of them again: no two processes migrate at once and the sweep happens once.

    First of all, the worker ties its life to the supervisor's (:func:`_die_with_supervisor`):
    it gets SIGTERM when the supervisor dies, and exits at once if that already happened.

    Raises:
        ConfigError: the variable is unset or does not hold a valid config;
            ``$DEMOTRACE_SERVER_SUPERVISOR_PID`` is set but not a pid.
    """
    import os

    from .config import CONFIG_ENV
    from .db import Database

    _die_with_supervisor()
    text = os.environ.get(CONFIG_ENV)
    if not text:
        raise ConfigError(f"${CONFIG_ENV} is not set: worker processes are started by "
                          "`demotrace server --workers N`")
    cfg = ServerConfig.from_json(text)
    c = Collector(cfg, db=Database(cfg.db_url, run_migrations=False), sweep_pending=False)
    app = create_app(cfg, collector=c)
    app.add_middleware(_ResponseHeader, header=(b"connection", b"close"), when=_is_commit)
    if os.environ.get(WORKER_HEADER_ENV) == "1":
        app.add_middleware(_ResponseHeader, header=(b"x-demotrace-worker", str(os.getpid()).encode()))
    return app


class _ResponseHeader:
    """ASGI middleware adding one ``header`` (``(name, value)`` bytes) to every HTTP response
    whose request ``when(scope)`` accepts (all of them by default)."""

    def __init__(self, app: Any, header: tuple[bytes, bytes], when: Any = None) -> None:
        self.app = app
        self.header = header
        self.when = when

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or (self.when is not None and not self.when(scope)):
            await self.app(scope, receive, send)
            return

        async def send_with_header(msg: Any) -> None:
            if msg["type"] == "http.response.start":
                msg["headers"] = [*msg.get("headers", []), self.header]
            await send(msg)

        await self.app(scope, receive, send_with_header)


def _is_commit(scope: Any) -> bool:
    """Whether an ASGI ``scope`` is a bundle commit request (``POST /v1/bundles/{id}/commit``, or
    a blob batch with ``commit=true``).

    In worker processes the answer to it carries ``Connection: close``, so a device's next upload
    opens a new connection, which whichever worker is free to accept it takes. Why: workers share
    one listening socket, and a connection stays with the worker that accepted it. A device keeps
    its connection for every bundle it uploads in a row, so a few busy devices could all sit on
    one worker while another idles — in ``bench/ingest.py`` (4 devices, 2 workers) the split was
    0.73 / 0.25 cores in one run (34.4 MB/s) and 0.56 / 0.56 in the next (45.7 MB/s).
    Reconnecting once per bundle costs one TCP (and, with TLS, one handshake) per bundle of
    megabytes."""
    if scope.get("method") != "POST":
        return False
    path = scope.get("path", "")
    if not path.startswith("/v1/bundles/"):
        return False
    if path.endswith("/commit"):
        return True
    return path.endswith("/blobs") and b"commit=true" in scope.get("query_string", b"")


def route_roles(app: FastAPI) -> dict[tuple[str, str], tuple[str, ...] | None]:
    """``(method, path) → roles`` of every route (``None``: public). Used by the start-up check
    and the authorisation-matrix test."""
    out: dict[tuple[str, str], tuple[str, ...] | None] = {}
    for r in app.routes:
        if not isinstance(r, Route):
            raise ConfigError(f"route entry {r!r} cannot be checked for roles; register "
                              "routes directly on the app (deny by default)")
        roles = None
        dependant = getattr(r, "dependant", None)
        if dependant is not None:
            for d in dependant.dependencies:
                if hasattr(d.call, "roles"):
                    roles = d.call.roles
        for m in sorted(getattr(r, "methods", None) or []):
            if m != "HEAD":
                out[(m, r.path)] = roles  # type: ignore[attr-defined]
    return out


def _check_policies(app: FastAPI) -> None:
    for (m, path), roles in route_roles(app).items():
        if roles is None and path not in PUBLIC_PATHS:
            raise ConfigError(f"route {m} {path} declares no roles (deny by default)")
