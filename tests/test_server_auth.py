"""Authentication and authorisation of the collector: the full endpoint × role matrix (and no
credential), enrollment codes, revocation, hashed storage, size and rate limits."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest_pg import Stack, make_stack, sha
from sqlalchemy import select

from demotrace.server.app import route_roles
from demotrace.server.models import Credential, EnrollmentCode

H64 = "ab" * 32
ROLES = ("device", "person", "curator", "admin", "auditor")

# Written by hand from the issue (item 5) — NOT read from the code under test.
EXPECTED: dict[tuple[str, str], set[str] | None] = {
    ("GET", "/healthz"): None,
    ("POST", "/v1/enroll"): None,
    ("GET", "/openapi.json"): None,
    ("GET", "/docs"): None,
    ("GET", "/docs/oauth2-redirect"): None,
    ("GET", "/redoc"): None,
    ("POST", "/v1/bundles"): {"device"},
    ("PUT", "/v1/bundles/{bundle_id}/blobs/{sha256}"): {"device"},
    ("POST", "/v1/bundles/{bundle_id}/blobs"): {"device"},
    ("POST", "/v1/bundles/{bundle_id}/commit"): {"device"},
    ("GET", "/v1/me/bundles"): {"person"},
    ("GET", "/v1/me/bundles/{bundle_id}"): {"person"},
    ("GET", "/v1/me/bundles/{bundle_id}/blobs/{sha256}"): {"person"},
    ("DELETE", "/v1/me/bundles/{bundle_id}"): {"person"},
    ("GET", "/v1/me/bundles/{bundle_id}/episodes"): {"person"},
    ("DELETE", "/v1/me/bundles/{bundle_id}/episodes/{index}"): {"person"},
    ("GET", "/v1/me/consent"): {"person"},
    ("GET", "/v1/me/access-log"): {"person"},
    ("GET", "/v1/me/export"): {"person"},
    ("POST", "/v1/me/erase"): {"person"},
    ("GET", "/v1/curator/bundles"): {"curator"},
    ("GET", "/v1/curator/subjects/{subject_id}/bundles/{bundle_id}"): {"curator"},
    ("GET", "/v1/curator/subjects/{subject_id}/bundles/{bundle_id}/blobs/{sha256}"): {"curator"},
    ("GET", "/v1/curator/stats"): {"curator"},
    ("GET", "/v1/curator/datasets"): {"curator"},
    ("POST", "/v1/curator/datasets"): {"curator"},
    ("POST", "/v1/admin/enrollment-codes"): {"admin"},
    ("GET", "/v1/admin/devices"): {"admin"},
    ("POST", "/v1/admin/credentials/{credential_id}/revoke"): {"admin"},
    ("GET", "/v1/admin/health"): {"admin"},
    ("GET", "/v1/admin/policies"): {"admin"},
    ("POST", "/v1/admin/policies"): {"admin"},
    ("POST", "/v1/admin/policies/{version}/current"): {"admin"},
    ("GET", "/v1/policy/current"): {"device", "person"},
    ("GET", "/v1/audit/alerts"): {"auditor"},
    ("GET", "/v1/audit/export"): {"auditor"},
    ("GET", "/v1/audit/public-key"): {"auditor"},
    ("GET", "/portal/login"): None,
    ("POST", "/portal/login"): None,
    ("POST", "/portal/logout"): None,
    ("GET", "/portal/"): {"person"},
    ("GET", "/portal/bundles/{bundle_id}"): {"person"},
    ("GET", "/portal/bundles/{bundle_id}/blobs/{sha256}"): {"person"},
    ("GET", "/portal/bundles/{bundle_id}/episodes/{index}"): {"person"},
    ("POST", "/portal/bundles/{bundle_id}/episodes/{index}/delete"): {"person"},
    ("POST", "/portal/bundles/{bundle_id}/delete"): {"person"},
    ("GET", "/portal/export"): {"person"},
    ("POST", "/portal/erase"): {"person"},
    ("GET", "/portal/admin"): {"admin"},
    ("POST", "/portal/admin/devices/{credential_id}/revoke"): {"admin"},
    ("POST", "/portal/admin/policies"): {"admin"},
    ("POST", "/portal/admin/policies/{version}/current"): {"admin"},
    ("GET", "/portal/audit"): {"auditor"},
}

BODIES = {
    "/v1/bundles": {"format": "demotrace-bundle/1", "blobs": []},
    "/v1/curator/datasets": {"name": "d", "members": []},
    "/v1/admin/enrollment-codes": {"role": "curator"},
}
RAW_BODIES = {"/v1/admin/policies": b"version = 1\n"}  # invalid (no notice): 422, no change


def _call(st: Stack, method: str, path: str, token: str | None) -> int:
    url = (path.replace("{bundle_id}", H64).replace("{sha256}", H64)
           .replace("{subject_id}", H64).replace("{credential_id}", "0123456789abcdef")
           .replace("{index}", "0").replace("{version}", "1"))
    headers = st.h(token) if token else {}
    kw: dict[str, object] = {"headers": headers, "params": {"purpose": "agent-training"}}
    if path in ("/v1/enroll", "/portal/login") and method == "POST":
        # a fresh valid code each time: public means anyone may enroll / sign in
        from demotrace.server import auth

        role = "auditor" if path == "/v1/enroll" else "admin"
        with st.collector.db.session() as s:
            code, _ = auth.create_enrollment_code(s, role, subject_id=None,
                                                  created_by="test", ttl_s=60)
        if path == "/v1/enroll":
            kw["json"] = {"code": code}
        else:
            kw["data"] = {"code": code}
            kw["follow_redirects"] = False
    elif method in ("POST", "PUT"):
        if path in BODIES:
            kw["json"] = BODIES[path]
        elif path in RAW_BODIES:
            kw["content"] = RAW_BODIES[path]
        elif method == "PUT":
            kw["content"] = b"x"
    kw.setdefault("follow_redirects", False)
    return st.client.request(method, url, **kw).status_code  # type: ignore[arg-type]


def test_authorisation_matrix(stack: Stack) -> None:
    actual = {k: (set(v) if v is not None else None) for k, v in route_roles(stack.app).items()}
    assert actual == EXPECTED, "a route was added or changed: update EXPECTED by hand"
    tokens = {r: stack.token(r, "matrix@example.org" if r in ("device", "person") else None)
              for r in ROLES}
    failures = []
    for (method, path), allowed in EXPECTED.items():
        for who in (*ROLES, None):
            status = _call(stack, method, path, tokens[who] if who else None)
            if status >= 500:
                failures.append(f"{method} {path} as {who}: {status}")
            elif allowed is None:
                if status in (401, 403):
                    failures.append(f"public {method} {path} as {who}: {status}")
            elif who is None:
                if status != 401:
                    failures.append(f"{method} {path} without credential: {status}, want 401")
            elif who in allowed:
                if status in (401, 403):
                    failures.append(f"{method} {path} as {who}: {status}, want access")
            elif status != 403:
                failures.append(f"{method} {path} as {who}: {status}, want 403")
    assert not failures, "\n".join(failures)


def test_enrollment_codes_are_one_time_and_expire(stack: Stack) -> None:
    admin = stack.token("admin")
    mk = lambda: stack.client.post("/v1/admin/enrollment-codes", headers=stack.h(admin),
                                   json={"role": "device", "person": "dana@example.org"}).json()
    code = mk()["code"]
    r1 = stack.client.post("/v1/enroll", json={"code": code, "label": "d1"})
    assert r1.status_code == 200
    r2 = stack.client.post("/v1/enroll", json={"code": code, "label": "d2"})
    assert r2.status_code == 401 and "already used" in r2.json()["detail"]
    old = mk()["code"]
    with stack.collector.db.session() as s:
        row = s.get(EnrollmentCode, old.split("_")[1])
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    r = stack.client.post("/v1/enroll", json={"code": old})
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    forged = old.split("_")
    r = stack.client.post("/v1/enroll", json={"code": f"dte_{forged[1]}_wrongsecret"})
    assert r.status_code == 401
    # device/person codes need a person; staff codes must not name one
    r = stack.client.post("/v1/admin/enrollment-codes", headers=stack.h(admin),
                          json={"role": "device"})
    assert r.status_code == 422 and "person" in r.json()["detail"]
    r = stack.client.post("/v1/admin/enrollment-codes", headers=stack.h(admin),
                          json={"role": "overlord"})
    assert r.status_code == 422 and "unknown role" in r.json()["detail"]


def test_credentials_are_stored_hashed_and_revocable(stack: Stack) -> None:
    admin = stack.token("admin")
    code = stack.client.post("/v1/admin/enrollment-codes", headers=stack.h(admin),
                             json={"role": "device", "person": "erin@example.org"}).json()["code"]
    cred = stack.client.post("/v1/enroll", json={"code": code, "label": "erin-laptop"}).json()
    token = cred["credential"]
    _prefix, cid, secret = token.split("_")
    with stack.collector.db.session() as s:
        row = s.get(Credential, cid)
        assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in repr([getattr(row, c) for c in ("id", "secret_hash", "label")])
    body = (b'{"format":"demotrace-bundle/1","session_id":"erin-1","blobs":[{"sha256":"'
            + hashlib.sha256(b"x").hexdigest().encode() + b'","size":1,"path":"events/0"}]}')
    assert stack.client.post("/v1/bundles", content=body, headers=stack.h(token)).status_code == 200
    devices = stack.client.get("/v1/admin/devices", headers=stack.h(admin)).json()
    assert [d["label"] for d in devices] == ["erin-laptop"]
    assert stack.subject("erin@example.org") not in str(devices)  # admins never see persons
    r = stack.client.post(f"/v1/admin/credentials/{cid}/revoke", headers=stack.h(admin))
    assert r.status_code == 200
    r = stack.client.post("/v1/bundles", content=body, headers=stack.h(token))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert stack.client.get("/v1/admin/devices", headers=stack.h(admin)).json()[0]["revoked"]
    r = stack.client.get("/v1/me/bundles", headers={"authorization": "Basic abc"})
    assert r.status_code == 401


@pytest.fixture
def tight(tmp_path: Path, db_url: str) -> Iterator[Stack]:
    """A collector with a 1000-byte body limit and 2 requests/s, burst 3."""
    st = make_stack(tmp_path / "tight", db_url, max_body_bytes=1000, rate_per_s=2.0, rate_burst=3)
    try:
        yield st
    finally:
        st.client.close()
        st.collector.close()


def test_body_limit_gives_413_with_a_clear_message(tight: Stack) -> None:
    dev = tight.token("device", "fay@example.org")
    big = b"z" * 1001
    r = tight.client.put(f"/v1/bundles/{H64}/blobs/{sha(big)}", content=big, headers=tight.h(dev))
    assert r.status_code == 413
    assert "1001 bytes" in r.json()["detail"] and "1000 bytes" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(3):
            yield b"y" * 400

    r = tight.client.put(f"/v1/bundles/{H64}/blobs/{H64}", content=chunks(), headers=tight.h(dev))
    assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]


def test_rate_limit_gives_429_with_retry_after(tight: Stack) -> None:
    admin = tight.token("admin")
    codes = [tight.client.get("/v1/admin/health", headers=tight.h(admin)).status_code
             for _ in range(4)]
    assert codes[:3] == [200, 200, 200] and codes[3] == 429
    r = tight.client.get("/v1/admin/health", headers=tight.h(admin))
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    # another credential has its own bucket
    other = tight.token("admin")
    assert tight.client.get("/v1/admin/health", headers=tight.h(other)).status_code == 200


def test_rate_limiter_refills_at_the_configured_rate() -> None:
    from demotrace.server.middleware import RateLimitMiddleware

    rl = RateLimitMiddleware(app=None, rate=2.0, burst=3)  # type: ignore[arg-type]
    assert [rl.take("k", now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.take("k", now=100.0) == pytest.approx(0.5)  # one token per 1/2 s
    assert rl.take("k", now=100.5) == 0.0
    assert rl.take("k", now=100.5) == pytest.approx(0.5)


def test_credential_cache_expires_and_clears() -> None:
    from demotrace.server.auth import CredentialCache, Principal

    cache = CredentialCache(ttl_s=2.0)
    p = Principal("0123456789abcdef", "device", "ab" * 32)
    cache.put("dtc_x_y", p, now=10.0)
    assert cache.get("dtc_x_y", now=11.9) is p
    assert cache.get("dtc_x_y", now=12.1) is None  # a revocation elsewhere holds after 2 s
    assert cache.get("dtc_other", now=10.5) is None
    cache.put("dtc_x_y", p, now=20.0)
    cache.clear()  # revocation in this process: immediate
    assert cache.get("dtc_x_y", now=20.1) is None


def test_a_device_code_pasted_into_the_portal_is_refused_and_not_spent(stack: Stack) -> None:
    """Bug bash 3: the portal redeemed a device enrollment code, then refused the device role —
    the code was spent and an orphan credential existed. Now it is refused before spending."""
    h = stack.h(stack.token("admin"))
    code = stack.client.post("/v1/admin/enrollment-codes", headers=h,
                             json={"role": "device", "person": "dee@example.org"}).json()["code"]
    r = stack.client.post("/portal/login", data={"code": code}, follow_redirects=False)
    assert r.status_code == 401 and "device enrollment code" in r.text and "not spent" in r.text
    assert stack.client.get("/v1/admin/devices", headers=h).json() == []  # no orphan credential
    r = stack.client.post("/v1/enroll", json={"code": code, "label": "dee-laptop"})
    assert r.status_code == 200, r.text  # the device can still enroll with it


def _login(client: object, token: str) -> str:
    """Sign in to the portal with ``token``; the Set-Cookie header of the answer."""
    r = client.post("/portal/login", data={"code": token}, follow_redirects=False)  # type: ignore[attr-defined]
    assert r.status_code == 303, r.text
    client.cookies.clear()  # type: ignore[attr-defined]  # each request below names its cookie
    return str(r.headers["set-cookie"])


def _cookie_value(set_cookie: str) -> str:
    name, _, rest = set_cookie.partition("=")
    assert name == "dt_portal"
    return rest.split(";", 1)[0].strip('"')


def _home(st: Stack, cookie: str) -> int:
    st.client.cookies.clear()
    return st.client.get("/portal/", headers={"cookie": f"dt_portal={cookie}"},
                         follow_redirects=False).status_code


def test_portal_cookie_is_a_revocable_session_not_the_credential(stack: Stack) -> None:
    """Bug bash (issue 5): the portal cookie was the raw person credential, so logout could not
    invalidate it. Now: login → the cookie is a server-side session ≠ the credential (stored
    hashed, 8 h); logout → that cookie is refused; revoking the credential → its other
    sessions are refused; an expired session is refused; a raw credential as cookie is refused;
    the session token is no bearer credential; over TLS the cookie is Secure."""
    from demotrace.server.models import PortalSession

    person = stack.token("person", "fay@example.org")
    _prefix, cid, secret = person.split("_")
    sc = _login(stack.client, person)
    cookie = _cookie_value(sc)
    assert cookie != person and secret not in cookie and cid not in cookie
    assert cookie.startswith("dts_")
    attrs = {a.strip().split("=")[0].lower(): a.strip() for a in sc.split(";")[1:]}
    assert attrs["max-age"] == "Max-Age=28800"  # 8 h = 8 * 3600 s
    assert attrs["path"] == "Path=/portal" and "httponly" in attrs
    assert attrs["samesite"].lower() == "samesite=strict" and "secure" not in attrs  # plain HTTP
    with stack.collector.db.session() as s:
        rows = s.scalars(select(PortalSession)).all()
        assert len(rows) == 1 and rows[0].credential_id == cid
        assert rows[0].secret_hash == hashlib.sha256(cookie.split("_")[2].encode()).hexdigest()
        assert cookie.split("_")[2] not in repr([rows[0].id, rows[0].secret_hash])
    assert _home(stack, cookie) == 200
    assert _home(stack, person) == 401  # an old-style cookie holding the credential: refused
    assert _home(stack, cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")) == 401
    # the session token is not a credential on the API
    assert stack.client.get("/v1/me/bundles", headers=stack.h(cookie)).status_code == 401

    # logout ends the session server-side: the same cookie, replayed, is refused
    r = stack.client.post("/portal/logout", headers={"cookie": f"dt_portal={cookie}"},
                          follow_redirects=False)
    assert r.status_code == 303 and 'dt_portal=""' in r.headers["set-cookie"]
    assert _home(stack, cookie) == 401
    # ... while the credential itself (the device-side secret) still works on the API
    assert stack.client.get("/v1/me/bundles", headers=stack.h(person)).status_code == 200

    # expiry
    late = _cookie_value(_login(stack.client, person))
    assert _home(stack, late) == 200
    with stack.collector.db.session() as s:
        s.get(PortalSession, late.split("_")[1]).expires_at = datetime.now(UTC) - timedelta(seconds=1)
    assert _home(stack, late) == 401

    # revoking the credential refuses every portal session made from it
    a, b = (_cookie_value(_login(stack.client, person)) for _ in range(2))
    assert _home(stack, a) == 200 and _home(stack, b) == 200
    admin = stack.token("admin")
    assert stack.client.post(f"/v1/admin/credentials/{cid}/revoke",
                             headers=stack.h(admin)).status_code == 200
    assert _home(stack, a) == 401 and _home(stack, b) == 401
    with stack.collector.db.session() as s:
        assert all(x.revoked_at is not None for x in s.scalars(select(PortalSession)))

    # served over TLS: the cookie is Secure
    from fastapi.testclient import TestClient

    with TestClient(stack.app, base_url="https://testserver") as tls:
        sc = _login(tls, stack.token("person", "fay@example.org"))
        assert "secure" in {a.strip().lower() for a in sc.split(";")[1:]}
