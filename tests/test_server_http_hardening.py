"""Bug-bash fixes on the collector's HTTP surface (in-process app over a real SQLite database):

1. a validation error (422) no longer echoes a huge offending value whole;
2. the portal's message box shows only texts the portal itself chose (``?msg=`` keys);
3. the SQLite database file and its ``-wal``/``-shm`` files are owner-only (0600).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest_pg import Stack, make_stack, sha

from demotrace.server.wire import BlobRef, BundleManifest

EVIL = "Your session expired: sign in again at http://evil.example"


@pytest.fixture
def st(tmp_path: Path) -> Iterator[Stack]:
    """A collector on SQLite in ``tmp_path`` (the hardening does not depend on the database)."""
    s = make_stack(tmp_path / "server", f"sqlite:///{tmp_path / 'meta.db'}")
    try:
        yield s
    finally:
        s.client.close()
        s.collector.close()


# -- 1. validation errors ----------------------------------------------------------------------
def test_huge_enroll_code_gives_a_small_422_naming_the_field(st: Stack) -> None:
    n = 1_000_000
    r = st.client.post("/v1/enroll", json={"code": "a" * n, "label": "laptop"})
    assert r.status_code == 422
    assert len(r.content) < 10_000, len(r.content)
    [err] = r.json()["detail"]
    assert err["loc"] == ["body", "code"] and err["type"] == "string_too_long"
    assert err["ctx"] == {"max_length": 200}  # EnrollIn.code: Field(max_length=200)
    assert err["input"] == "a" * 100 + f"… ({n} characters)"


def test_short_invalid_values_are_echoed_unchanged(st: Stack) -> None:
    r = st.client.post("/v1/enroll", json={"code": 42})
    assert r.status_code == 422
    [err] = r.json()["detail"]
    assert err["loc"] == ["body", "code"] and err["type"] == "string_type" and err["input"] == 42
    r = st.client.post("/v1/enroll", json={"label": "x"})
    [err] = r.json()["detail"]
    assert err["loc"] == ["body", "code"] and err["type"] == "missing"
    assert err["input"] == {"label": "x"}


def test_other_json_endpoints_share_the_handler(st: Stack) -> None:
    """``POST /v1/me/erase`` (another model, a person's credential) with a 200 000-item list
    where a string belongs: the list's repr is cut too."""
    h = st.h(st.token("person", "kim@example.org"))
    items = ["x"] * 200_000
    r = st.client.post("/v1/me/erase", json={"confirm": items}, headers=h)
    assert r.status_code == 422 and len(r.content) < 10_000, len(r.content)
    [err] = r.json()["detail"]
    assert err["loc"] == ["body", "confirm"] and err["type"] == "string_type"
    # repr(["x", "x", …]) = "['x', " * n minus the last ", " plus "]": 5 n characters
    # repr(["x"] * n) is "[" + "'x', " * (n - 1) + "'x']": 3 n + 2 (n - 1) + 2 = 5 n characters;
    # its first 100 are "[" and 19 times "'x', " (96) and "'x',"
    assert err["input"] == "[" + "'x', " * 19 + "'x'," + f"… ({5 * len(items)} characters)"
    # nothing was erased: the person's access still works
    assert st.client.get("/v1/me/bundles", headers=h).status_code == 200


# -- 2. portal messages --------------------------------------------------------------------------
def _store_bundle(st: Stack, person: str) -> str:
    data = b"\x89PNG synthetic frame"
    m = BundleManifest(session_id="kim-session-0", platform="linux-x11",
                       blobs=[BlobRef(sha256=sha(data), size=len(data), path="frames/0001.png")])
    sid = st.subject(person)
    st.collector.begin(sid, "dev", m)
    st.collector.put_blob(sid, m.bundle_id, sha(data), data)
    st.collector.commit(sid, m.bundle_id)
    return m.bundle_id


def _message(html: str) -> str | None:
    if 'id="message">' not in html:
        return None
    return html.split('id="message">', 1)[1].split("</section>", 1)[0]


def _msg_of(location: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(location).query)


def test_portal_home_shows_only_its_own_messages(st: Stack) -> None:
    person = "kim@example.org"
    bid = _store_bundle(st, person)
    r = st.client.post("/portal/login", data={"code": st.token("person", person)})
    assert r.status_code == 200 and r.url.path == "/portal/"

    # free text, even escaped, never reaches the box; nor does an unknown key
    for msg in (EVIL, "Session deleted", "nonsense-key", ""):
        r = st.client.get("/portal/", params={"msg": msg})
        assert r.status_code == 200 and _message(r.text) is None, msg
        assert "evil.example" not in r.text
    # a known key shows its fixed text
    r = st.client.get("/portal/", params={"msg": "erased"})
    assert _message(r.text) == "Everything was erased"

    # the portal's own redirects use keys, and the page they land on shows the text
    r = st.client.post("/portal/erase", data={}, follow_redirects=False)
    assert r.status_code == 303 and _msg_of(r.headers["location"]) == {"msg": ["erase-unconfirmed"]}
    r = st.client.post(f"/portal/bundles/{bid}/delete", follow_redirects=False)
    assert r.status_code == 303 and _msg_of(r.headers["location"]) == {"msg": ["session-deleted"]}
    assert _message(st.client.get(r.headers["location"]).text) == "Session deleted"
    assert st.collector.list_bundles(st.subject(person)) == []


def test_admin_page_shows_only_its_own_messages(st: Stack) -> None:
    """Upload through the form: the redirect carries a key and the version number, the page
    shows the fixed text and recomputes the floor warnings from the stored version; ``err`` and
    ``warn`` in the URL show nothing; a refused upload is answered directly with its reason."""
    import re
    import tomllib
    from importlib import resources

    default = resources.files("demotrace.privacy").joinpath("default_policy.toml").read_text("utf-8")
    kept = tomllib.loads(default)["scope"]["deny"]["password_manager"]["apps"]
    # version 5 empties a built-in deny category: every device keeps it (one floor warning)
    v5 = re.sub(r"(\[scope\.deny\.password_manager\]\s*\n)apps\s*=\s*\[[^\]]*\]",
                r"\1apps = []", default.replace("version = 1", "version = 5", 1), count=1)
    assert tomllib.loads(v5)["scope"]["deny"]["password_manager"]["apps"] == []
    r = st.client.post("/portal/login", data={"code": st.token("admin")})
    assert r.status_code == 200 and r.url.path == "/portal/admin"

    r = st.client.post("/portal/admin/policies", data={"toml": v5}, follow_redirects=False)
    assert r.status_code == 303
    assert _msg_of(r.headers["location"]) == {"msg": ["policy-stored"], "version": ["5"]}
    page = st.client.get(r.headers["location"]).text
    assert _message(page) == "Policy version 5 stored"
    item = page.split('class="policy-warning">', 1)[1].split("</li>", 1)[0]
    assert "scope.deny.password_manager.apps" in item and all(a in item for a in kept)

    # the same text again, made current this time
    r = st.client.post("/portal/admin/policies", data={"toml": v5, "current": "yes"},
                       follow_redirects=False)
    assert _msg_of(r.headers["location"]) == {"msg": ["policy-already-stored-current"],
                                              "version": ["5"]}
    r = st.client.post("/portal/admin/policies/1/current", follow_redirects=False)
    assert _msg_of(r.headers["location"]) == {"msg": ["policy-current"], "version": ["1"]}
    assert _message(st.client.get(r.headers["location"]).text) == "Policy version 1 is now current"

    # crafted URLs: free text, a version that is not stored, err and warn show nothing
    for params in ({"msg": EVIL}, {"msg": "policy-stored", "version": "99"},
                   {"msg": "policy-stored", "version": "5 " + EVIL},
                   {"err": EVIL}, {"warn": EVIL}):
        r = st.client.get("/portal/admin", params=params)
        assert r.status_code == 200 and "evil.example" not in r.text, params
        assert _message(r.text) is None and 'id="error"' not in r.text, params
        assert 'id="policy-warnings"' not in r.text, params

    # a refused upload: answered on the spot (422) with the reason, not via a URL
    r = st.client.post("/portal/admin/policies", data={"toml": "version = "},
                       follow_redirects=False)
    assert r.status_code == 422 and 'id="error"' in r.text and "location" not in r.headers
    # another text under a stored version number: 409
    r = st.client.post("/portal/admin/policies", data={"toml": v5 + "\n# changed\n"},
                       follow_redirects=False)
    assert r.status_code == 409 and "version 5" in r.text.split('id="error">', 1)[1]


# -- 3. database file modes ----------------------------------------------------------------------
def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_collector_db_and_its_wal_files_are_owner_only(tmp_path: Path) -> None:
    from demotrace.server.config import ServerConfig
    from demotrace.server.service import Collector

    old = os.umask(0o022)  # the usual umask, under which files are created 0644
    try:
        c = Collector(ServerConfig(data_dir=tmp_path / "srv"))
        try:
            with c.db.session() as s:  # a write: the -wal and -shm files exist now
                from demotrace.server import auth
                auth.create_credential(s, "admin", label="test admin")
            db = tmp_path / "srv" / "collector.db"
            files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
            assert all(f.exists() for f in files), [f for f in files if not f.exists()]
            for f in files:
                assert _mode(f) & 0o077 == 0, (f, oct(_mode(f)))
        finally:
            c.close()
        # a database left 0644 (e.g. by an older version) is tightened when it is opened
        db.chmod(0o644)
        c = Collector(ServerConfig(data_dir=tmp_path / "srv"))
        try:
            assert _mode(db) & 0o077 == 0, oct(_mode(db))
        finally:
            c.close()
    finally:
        os.umask(old)
