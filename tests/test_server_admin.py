"""Collector admin and person features of issue 5 items 5 and 7, on SQLite and PostgreSQL:
policy versions (upload, list, current, fetched by devices), consent carried by bundles and
checked against known versions, episodes of an uploaded session (list, delete: gone for every
reader), fleet health without per-person figures, and the bulk-read alert."""

from __future__ import annotations

import hashlib
import io
import json
import tomllib
import zipfile
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest_pg import Stack, make_stack, sha
from PIL import Image

from demotrace.schema.events import (
    Frame,
    KeyDown,
    KeyUp,
    Marker,
    Rect,
    decode_batch,
    encode_batch,
)
from demotrace.schema.manifest import SessionManifest
from demotrace.server.audit import verify
from demotrace.server.wire import BlobRef, BundleManifest

PURPOSE = {"purpose": "agent-training"}
GREEN, BLUE = (0, 200, 0), (0, 0, 220)
DEFAULT_TOML = resources.files("demotrace.privacy").joinpath("default_policy.toml").read_text("utf-8")


def notice_sha(toml_text: str) -> str:
    """The notice digest of a policy TOML, computed here (stripped notice, UTF-8, SHA-256)."""
    return hashlib.sha256(tomllib.loads(toml_text)["notice"].strip().encode()).hexdigest()


def builtin_consent(accepted: str = "2026-11-29T09:00:00Z") -> dict[str, Any]:
    return {"policy_version": tomllib.loads(DEFAULT_TOML)["version"],
            "notice_sha256": notice_sha(DEFAULT_TOML), "accepted_utc": accepted}


def png(colour: tuple[int, int, int], size: tuple[int, int] = (320, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def _frame(seq: int, t: int, blob: str) -> Frame:
    return Frame(seq=seq, t_ns=t, blob=blob, monitor=0, bounds=Rect(0, 0, 320, 200), width=320,
                 height=200, scale=1.0, captured_t_ns=t, reason="pointer_down", format="png")


def two_task_files() -> dict[str, bytes]:
    """A session with two explicit tasks, written by hand: task 1 "Write a greeting" (green
    frame, types "hi", success) and task 2 "Confirm with Enter" (blue frame, Enter, failure).
    Expected episodes: (type "hi", done) and (key enter, fail): 2 steps each."""
    ms = 1_000_000
    first = [Marker(seq=0, t_ns=0, name="session_start"),
             Marker(seq=1, t_ns=1 * ms, name="task_start", instruction="Write a greeting"),
             _frame(2, 2 * ms, "f-green"),
             KeyDown(seq=3, t_ns=3 * ms, key="h", code="KeyH", text="h"),
             KeyUp(seq=4, t_ns=4 * ms, key="h", code="KeyH"),
             KeyDown(seq=5, t_ns=5 * ms, key="i", code="KeyI", text="i"),
             KeyUp(seq=6, t_ns=6 * ms, key="i", code="KeyI"),
             Marker(seq=7, t_ns=7 * ms, name="task_end", status="success")]
    second = [Marker(seq=8, t_ns=1000 * ms, name="task_start", instruction="Confirm with Enter"),
              _frame(9, 1001 * ms, "f-blue"),
              KeyDown(seq=10, t_ns=1002 * ms, key="Enter", code="Enter"),
              KeyUp(seq=11, t_ns=1003 * ms, key="Enter", code="Enter"),
              Marker(seq=12, t_ns=1004 * ms, name="task_end", status="failure"),
              Marker(seq=13, t_ns=1005 * ms, name="session_stop")]
    session = SessionManifest(session_id="kim-s1", started_utc="2026-11-30T01:00:00Z",
                              timezone="UTC", platform="linux-x11", backend="x11",
                              recorder_version="0")
    return {"session.json": msgspec.json.encode(session),
            "events/0.msgpack": encode_batch(first), "events/8.msgpack": encode_batch(second),
            "frames/f-green": png(GREEN), "frames/f-blue": png(BLUE)}


def upload(st: Stack, sid: str, files: dict[str, bytes], meta: dict[str, Any],
           session_id: str = "kim-s1", device: str = "dev") -> str:
    """Store a bundle directly through the collector (begin, blobs, commit); its id."""
    m = BundleManifest(session_id=session_id, platform="linux-x11", meta=meta,
                       blobs=[BlobRef(sha256=sha(d), size=len(d), path=p) for p, d in files.items()])
    st.collector.begin(sid, device, m)
    for d in files.values():
        st.collector.put_blob(sid, m.bundle_id, sha(d), d)
    st.collector.commit(sid, m.bundle_id)
    return m.bundle_id


SEALED_META = {"kind": "sealed-session", "schema_version": 1}


# -- policy versions ---------------------------------------------------------------------------
def test_policy_versions_upload_list_current_and_device_fetch(stack: Stack) -> None:
    h = stack.h(stack.token("admin"))
    dev = stack.token("device", "pat@example.org")
    # the built-in policy is known and current from the start
    listed = stack.client.get("/v1/admin/policies", headers=h).json()
    assert [(p["version"], p["is_current"], p["uploaded_by"]) for p in listed] == [(1, True, "built-in")]
    assert listed[0]["notice_sha256"] == notice_sha(DEFAULT_TOML)

    v2 = DEFAULT_TOML.replace("version = 1", "version = 2", 1)
    v2 = v2.replace('notice = """', 'notice = """Version two of the notice.\n', 1)
    assert v2 != DEFAULT_TOML and "version = 2" in v2
    r = stack.client.post("/v1/admin/policies", content=v2.encode(), params={"current": "true"},
                          headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.json()["created"] and r.json()["is_current"]
    cur = stack.client.get("/v1/policy/current", headers=stack.h(dev)).json()
    assert cur["version"] == 2 and cur["toml"] == v2 and cur["notice_sha256"] == notice_sha(v2)
    assert cur["notice"].startswith("Version two of the notice.")
    # same text again: no-op; other text under the same version: 409 naming the fix
    r = stack.client.post("/v1/admin/policies", content=v2.encode(), headers=h)
    assert r.status_code == 200 and r.json()["created"] is False
    r = stack.client.post("/v1/admin/policies", content=(v2 + "\n# changed\n").encode(), headers=h)
    assert r.status_code == 409 and "immutable" in r.json()["detail"]
    # invalid policies: 422 naming what is wrong
    r = stack.client.post("/v1/admin/policies", content=b"version = 3\n", headers=h)
    assert r.status_code == 422 and "notice" in r.json()["detail"]
    r = stack.client.post("/v1/admin/policies", content=b"version = [", headers=h)
    assert r.status_code == 422 and "TOML" in r.json()["detail"]
    r = stack.client.post("/v1/admin/policies", content=b"", headers=h)
    assert r.status_code == 422 and "empty" in r.json()["detail"]
    # switch back; unknown version is 404
    assert stack.client.post("/v1/admin/policies/1/current", headers=h).json()["version"] == 1
    assert stack.client.post("/v1/admin/policies/99/current", headers=h).status_code == 404
    listed = stack.client.get("/v1/admin/policies", headers=h).json()
    assert [(p["version"], p["is_current"]) for p in listed] == [(2, False), (1, True)]


# -- consent --------------------------------------------------------------------------------------
def test_bundle_consent_is_checked_stored_and_shown_to_the_person(stack: Stack) -> None:
    sid = stack.subject("kim@example.org")
    dev = stack.token("device", "kim@example.org")
    files = {"session.json": b"{}", "events/0.msgpack": b"\x90", "frames/a.png": png(GREEN)}

    def begin(meta: dict[str, Any]) -> Any:
        m = BundleManifest(session_id="s", platform="linux-x11", meta=meta,
                           blobs=[BlobRef(sha256=sha(d), size=len(d), path=p) for p, d in files.items()])
        return stack.client.post("/v1/bundles", content=m.canonical(), headers=stack.h(dev))

    r = begin({**SEALED_META, "consent": {**builtin_consent(), "policy_version": 7}})
    assert r.status_code == 422 and "policy version 7" in r.json()["detail"] \
        and "does not know" in r.json()["detail"]
    r = begin({**SEALED_META, "consent": {**builtin_consent(), "notice_sha256": "0" * 64}})
    assert r.status_code == 422 and "not the notice of policy version 1" in r.json()["detail"]
    r = begin(dict(SEALED_META))
    assert r.status_code == 422 and "no consent record" in r.json()["detail"]
    r = begin({**SEALED_META, "consent": {"policy_version": "x"}})
    assert r.status_code == 422 and "malformed" in r.json()["detail"]
    assert stack.collector.list_bundles(sid) == [] and stack.client.get(
        "/v1/me/consent", headers=stack.h(stack.token("person", "kim@example.org"))).json() == []

    r = begin({**SEALED_META, "consent": builtin_consent()})
    assert r.status_code == 200 and sorted(r.json()["missing"]) == sorted(sha(d) for d in files.values())
    person = stack.token("person", "kim@example.org")
    got = stack.client.get("/v1/me/consent", headers=stack.h(person)).json()
    notice = tomllib.loads(DEFAULT_TOML)["notice"].strip()
    assert [(g["policy_version"], g["accepted_utc"], g["notice_sha256"], g["notice"], g["notice_matches"])
            for g in got] == [(1, "2026-11-29T09:00:00Z", notice_sha(DEFAULT_TOML), notice, True)]
    z = zipfile.ZipFile(io.BytesIO(stack.client.get("/v1/me/export", headers=stack.h(person)).content))
    exported = json.loads(z.read("consent.json"))
    assert [(e["policy_version"], e["accepted_utc"]) for e in exported] == [(1, "2026-11-29T09:00:00Z")]
    # another person does not see it; erasure removes it
    other = stack.token("person", "lee@example.org")
    assert stack.client.get("/v1/me/consent", headers=stack.h(other)).json() == []
    stack.client.post("/v1/me/erase", headers=stack.h(person),
                      json={"confirm": "erase everything"})
    assert stack.client.get("/v1/me/consent", headers=stack.h(person)).json() == []


def test_real_sealed_bundle_carries_the_consent_record(tmp_path: Path, stack: Stack) -> None:
    """seal → the wire manifest's meta.consent is the device's consent.json; the collector
    accepts it; a bundle sealed without consent is refused."""
    from privacy_corpus import Builder

    from demotrace.paths import Paths
    from demotrace.privacy import record_consent
    from demotrace.privacy.policy import default_policy
    from demotrace.privacy.seal import seal_session
    from demotrace.server.wire import read_local_bundle
    from demotrace.spool import DataKey, Spool

    paths = Paths(tmp_path / "home").ensure()
    spool = Spool(paths.spool, DataKey.create(paths.key_file))
    for sid in ("with-consent", "without-consent"):
        b = Builder(spool.key)
        b.add(Marker, name="session_start")
        b.frame(Image.new("RGB", (64, 48), GREEN))
        b.type_text("ok")
        b.write(spool, sid)
    seal_session(paths, spool, "without-consent", default_policy())
    rec = record_consent(paths, default_policy(), now=datetime(2026, 11, 29, 8, 30, tzinfo=UTC))
    seal_session(paths, spool, "with-consent", default_policy())
    bundle = read_local_bundle(paths.home / "sealed" / "with-consent", paths.home)
    try:
        assert bundle.manifest.meta["consent"] == {
            "policy_version": 1, "notice_sha256": notice_sha(DEFAULT_TOML),
            "accepted_utc": "2026-11-29T08:30:00Z", "scope_sha256": rec.scope_sha256}
        assert rec.scope_sha256 and rec.accepted_utc == "2026-11-29T08:30:00Z"
        subject = stack.subject("sam@example.org")
        assert stack.collector.begin(subject, "dev", bundle.manifest).state == "open"
    finally:
        bundle.close()
    old = read_local_bundle(paths.home / "sealed" / "without-consent", paths.home)
    try:
        assert "consent" not in old.manifest.meta
        from demotrace.server.policies import ConsentRefused

        with pytest.raises(ConsentRefused, match="no consent record"):
            stack.collector.begin(stack.subject("sam@example.org"), "dev", old.manifest)
    finally:
        old.close()


# -- episodes ---------------------------------------------------------------------------------
def test_episodes_listed_and_deleted_for_every_reader(stack: Stack) -> None:
    files = two_task_files()
    sid = stack.subject("kim@example.org")
    bid = upload(stack, sid, files, {**SEALED_META, "consent": builtin_consent()})
    person, cur = stack.token("person", "kim@example.org"), stack.token("curator")
    hp, hc = stack.h(person), stack.h(cur)
    r = stack.client.post("/v1/curator/datasets", params=PURPOSE, headers=hc,
                          json={"name": "train-1", "members": [{"subject_id": sid, "bundle_id": bid}]})
    assert r.status_code == 200

    eps = stack.client.get(f"/v1/me/bundles/{bid}/episodes", headers=hp).json()
    assert [(e["index"], e["instruction"], e["status"], e["n_steps"]) for e in eps] == [
        (0, "Write a greeting", "success", 2), (1, "Confirm with Enter", "failure", 2)]
    assert eps[0]["start_utc"] == "2026-11-30T01:00:00Z" and eps[1]["start_utc"] == "2026-11-30T01:00:01Z"
    assert eps[0]["t_start_ns"] == 1_000_000 and eps[0]["t_end_ns"] == 7_000_000

    green, ev0 = sha(files["frames/f-green"]), sha(files["events/0.msgpack"])
    with stack.collector.db.session() as s:
        from sqlalchemy import select

        from demotrace.server.models import Blob
        green_obj = s.scalar(select(Blob.stored_name).where(Blob.sha256 == green))
    assert stack.collector.blobs.exists(green_obj)

    r = stack.client.delete(f"/v1/me/bundles/{bid}/episodes/0", headers=hp)
    assert r.status_code == 200, r.text
    assert r.json()["frames_deleted"] == 1 and r.json()["datasets_marked"] == 1
    # the frame and the old events batch are gone for the person and the curator
    for path in (f"/v1/me/bundles/{bid}/blobs/{green}", f"/v1/me/bundles/{bid}/blobs/{ev0}"):
        assert stack.client.get(path, headers=hp).status_code == 404
    for h in (green, ev0):
        r = stack.client.get(f"/v1/curator/subjects/{sid}/bundles/{bid}/blobs/{h}",
                             params=PURPOSE, headers=hc)
        assert r.status_code == 404
    assert not stack.collector.blobs.exists(green_obj)
    # the manifest: first batch now holds only session_start; the second is untouched
    m = stack.client.get(f"/v1/curator/subjects/{sid}/bundles/{bid}", params=PURPOSE, headers=hc).json()
    paths = {b["path"]: b["sha256"] for b in m["blobs"]}
    assert set(paths) == {"session.json", "events/0.msgpack", "events/8.msgpack", "frames/f-blue"}
    assert paths["events/8.msgpack"] == sha(files["events/8.msgpack"])
    b0 = stack.client.get(f"/v1/curator/subjects/{sid}/bundles/{bid}/blobs/{paths['events/0.msgpack']}",
                          params=PURPOSE, headers=hc).content
    assert [(e.seq, type(e).__name__) for e in decode_batch(b0)] == [(0, "Marker")]
    assert m["meta"]["deleted_episodes"][0]["t_start_ns"] == 1_000_000
    # one episode left; the export zip holds no trace of the deleted one's frame
    eps = stack.client.get(f"/v1/me/bundles/{bid}/episodes", headers=hp).json()
    assert [(e["index"], e["instruction"]) for e in eps] == [(0, "Confirm with Enter")]
    z = zipfile.ZipFile(io.BytesIO(stack.client.get("/v1/me/export", headers=hp).content))
    assert f"bundles/{bid}/blobs/{green}" not in z.namelist()
    assert files["frames/f-green"] not in b"".join(z.read(n) for n in z.namelist())
    # dataset marked; deletion logged for the person; uploading the original again stores nothing
    ds = stack.client.get("/v1/curator/datasets", params=PURPOSE, headers=hc).json()
    assert ds[0]["needs_rebuild"] and "episode" in ds[0]["rebuild_reason"]
    log = stack.client.get("/v1/me/access-log", headers=hp).json()
    assert any(e["action"] == "person.delete_episode" and e["resource"] == f"bundle:{bid}/episode:0"
               for e in log)
    m0 = BundleManifest(session_id="kim-s1", platform="linux-x11",
                        meta={**SEALED_META, "consent": builtin_consent()},
                        blobs=[BlobRef(sha256=sha(d), size=len(d), path=p) for p, d in files.items()])
    again = stack.collector.begin(sid, "dev", m0)
    assert again.state == "committed" and again.missing == []
    assert stack.client.get(f"/v1/me/bundles/{bid}/blobs/{green}", headers=hp).status_code == 404
    # no such episode: 404 with the count
    r = stack.client.delete(f"/v1/me/bundles/{bid}/episodes/5", headers=hp)
    assert r.status_code == 404 and "has 1" in r.json()["detail"]


def test_policy_emptying_a_builtin_deny_category_is_stored_with_warnings(stack: Stack) -> None:
    """Bug bash (issue 5): an org policy with ``[scope.deny.password_manager] apps = []``
    answered 200 silently although every device keeps those apps excluded. The answer now
    carries a warning naming the category, the field and each kept app, and the admin page shows
    it after an upload through its form; a policy that only bumps the version has none."""
    import re

    h = stack.h(stack.token("admin"))
    kept = tomllib.loads(DEFAULT_TOML)["scope"]["deny"]["password_manager"]["apps"]
    assert "KeePassXC" in kept
    v3 = re.sub(r"(\[scope\.deny\.password_manager\]\s*\n)apps\s*=\s*\[[^\]]*\]", r"\1apps = []",
                DEFAULT_TOML.replace("version = 1", "version = 3", 1), count=1)
    doc = tomllib.loads(v3)
    assert doc["scope"]["deny"]["password_manager"]["apps"] == [] and doc["version"] == 3
    r = stack.client.post("/v1/admin/policies", content=v3.encode(), headers=h)
    assert r.status_code == 200, r.text
    warnings = r.json()["warnings"]
    assert len(warnings) == 1, warnings
    assert "scope.deny.password_manager.apps" in warnings[0]
    assert all(app in warnings[0] for app in kept)
    # stored as sent (devices fetch this text and merge it over the floor themselves)
    assert [p["version"] for p in stack.client.get("/v1/admin/policies", headers=h).json()] == [3, 1]
    # a plain version bump: nothing to warn about
    v4 = DEFAULT_TOML.replace("version = 1", "version = 4", 1)
    r = stack.client.post("/v1/admin/policies", content=v4.encode(), headers=h)
    assert r.status_code == 200 and r.json()["warnings"] == []

    # the admin page: sign in, upload through the form, the warning is on the page it lands on
    stack.client.cookies.clear()
    r = stack.client.post("/portal/login", data={"code": stack.token("admin")})
    assert r.status_code == 200 and r.url.path == "/portal/admin"
    v5 = v3.replace("version = 3", "version = 5", 1)
    r = stack.client.post("/portal/admin/policies", data={"toml": v5})
    assert r.status_code == 200 and r.url.path == "/portal/admin", r.text
    page = r.text
    assert "Policy version 5 stored" in page and 'id="policy-warnings"' in page
    item = page.split('class="policy-warning">', 1)[1].split("</li>", 1)[0]
    assert "scope.deny.password_manager.apps" in item and all(app in item for app in kept)
    r = stack.client.post("/portal/admin/policies", data={"toml": v4.replace("version = 4", "version = 6", 1)})
    assert "Policy version 6 stored" in r.text and 'id="policy-warnings"' not in r.text
    stack.client.cookies.clear()


# -- fleet health -------------------------------------------------------------------------------
def test_fleet_health_devices_and_backlog_without_person_figures(stack: Stack) -> None:
    admin = stack.token("admin")
    h = stack.h(admin)
    code = stack.client.post("/v1/admin/enrollment-codes", headers=h,
                             json={"role": "device", "person": "ada@example.org"}).json()["code"]
    dev = stack.client.post("/v1/enroll", json={"code": code, "label": "ada-laptop"}).json()
    idle = stack.client.post("/v1/enroll", json={"code": stack.client.post(
        "/v1/admin/enrollment-codes", headers=h, json={"role": "device", "person": "bo@example.org"}
    ).json()["code"], "label": "bo-desktop"}).json()
    hd = stack.h(dev["credential"])
    done = {"frames/x.png": png(GREEN)}
    m = BundleManifest(session_id="a", platform="linux-x11",
                       blobs=[BlobRef(sha256=sha(d), size=len(d), path=p) for p, d in done.items()])
    stack.client.post("/v1/bundles", content=m.canonical(), headers=hd)
    d = done["frames/x.png"]
    stack.client.put(f"/v1/bundles/{m.bundle_id}/blobs/{sha(d)}", content=d, headers=hd)
    assert stack.client.post(f"/v1/bundles/{m.bundle_id}/commit", headers=hd).status_code == 200
    pending = {"frames/y.png": b"y" * 10, "frames/z.png": b"z" * 20}
    m2 = BundleManifest(session_id="b", platform="linux-x11",
                        blobs=[BlobRef(sha256=sha(d), size=len(d), path=p) for p, d in pending.items()])
    stack.client.post("/v1/bundles", content=m2.canonical(), headers=hd)
    today = datetime.now(UTC).date().isoformat()

    devices = {x["label"]: x for x in stack.client.get("/v1/admin/devices", headers=h).json()}
    a, b = devices["ada-laptop"], devices["bo-desktop"]
    assert (a["last_upload_day"], a["stale"], a["open_uploads"], a["revoked"]) == (today, False, 1, False)
    # enrolled minutes ago, nothing uploaded yet: not stale (bug bash 3); stale once the
    # threshold has passed since the last upload / the enrollment
    assert (b["last_upload_day"], b["stale"], b["open_uploads"]) == (None, False, 0)
    from demotrace.server import fleet

    later = {x["label"]: x["stale"] for x in fleet.devices(
        stack.collector, now=datetime.now(UTC) + timedelta(days=fleet.STALE_DAYS + 1))}
    assert later == {"ada-laptop": True, "bo-desktop": True}
    assert a["device_id"] == dev["credential_id"] and b["device_id"] == idle["credential_id"]
    assert set(a) == {"device_id", "label", "enrolled_at", "revoked", "last_upload_day", "stale",
                      "open_uploads"}  # no counts, sizes or times of day per device
    health = stack.client.get("/v1/admin/health", headers=h).json()
    assert health["backlog"]["open_uploads"] == 1
    assert (health["backlog"]["blobs_missing"], health["backlog"]["bytes_missing"]) == (2, 30)
    assert health["volumes"] is None and health["groups"] == []  # 1 person < k = 10
    text = str(devices) + str(health)
    for person in ("ada@example.org", "bo@example.org"):
        assert person not in text and stack.subject(person) not in text


def test_person_deleting_or_erasing_changes_nothing_in_the_admin_device_view(stack: Stack) -> None:
    """Bug bash (issue 5): the fleet view derived a device's last upload from the person's
    current bundles, so the person's DELETE turned it null/stale for the admin. The day is
    kept on the device's row at commit time: deleting the session, then erasing the person,
    leaves the admin's view of the device exactly as it was after the upload."""
    admin = stack.token("admin")
    h = stack.h(admin)
    code = stack.client.post("/v1/admin/enrollment-codes", headers=h,
                             json={"role": "device", "person": "cy@example.org"}).json()["code"]
    dev = stack.client.post("/v1/enroll", json={"code": code, "label": "cy-laptop"}).json()
    hd = stack.h(dev["credential"])
    files = {"frames/x.png": png(BLUE)}
    m = BundleManifest(session_id="c1", platform="linux-x11",
                       blobs=[BlobRef(sha256=sha(d), size=len(d), path=p) for p, d in files.items()])
    assert stack.client.post("/v1/bundles", content=m.canonical(), headers=hd).status_code == 200
    d = files["frames/x.png"]
    stack.client.put(f"/v1/bundles/{m.bundle_id}/blobs/{sha(d)}", content=d, headers=hd)
    assert stack.client.post(f"/v1/bundles/{m.bundle_id}/commit", headers=hd).status_code == 200
    today = datetime.now(UTC).date().isoformat()

    def view() -> dict[str, Any]:
        r = stack.client.get("/v1/admin/devices", headers=h)
        assert r.status_code == 200, r.text
        return {x["device_id"]: x for x in r.json()}[dev["credential_id"]]

    after_upload = view()
    assert (after_upload["last_upload_day"], after_upload["stale"]) == (today, False)
    hp = stack.h(stack.token("person", "cy@example.org"))
    r = stack.client.delete(f"/v1/me/bundles/{m.bundle_id}", headers=hp)
    assert r.status_code == 200, r.text
    assert stack.client.get("/v1/me/bundles", headers=hp).json() == []  # really gone
    assert view() == after_upload
    r = stack.client.post("/v1/me/erase", headers=hp, json={"confirm": "erase everything"})
    assert r.status_code == 200, r.text
    assert view() == after_upload


def test_migration_0005_backfills_the_last_upload_day_once(db_url: str) -> None:
    """A database at revision 0004 holding two committed bundles of device A (2026-11-20
    23:30 UTC and 2026-11-28 08:00 UTC), an open one of A dated later, and an idle device B:
    after ``upgrade head`` A's ``last_upload_day`` is 2026-11-28 (the latest COMMIT's day), B's
    is NULL."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    from demotrace.server.db import MIGRATIONS_DIR

    engine = create_engine(db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0004")
        t0 = datetime(2026, 11, 1, tzinfo=UTC)
        with engine.begin() as conn:
            for cid in ("aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"):
                conn.execute(text("INSERT INTO credentials (id, secret_hash, role, subject_id, label,"
                                  " created_at) VALUES (:i, :h, 'device', 's', '', :t)"),
                             {"i": cid, "h": "0" * 64, "t": t0})
            for n, (state, created, committed) in enumerate([
                    ("committed", datetime(2026, 11, 20, 23, 0, tzinfo=UTC),
                     datetime(2026, 11, 20, 23, 30, tzinfo=UTC)),
                    ("committed", datetime(2026, 11, 28, 7, 0, tzinfo=UTC),
                     datetime(2026, 11, 28, 8, 0, tzinfo=UTC)),
                    ("open", datetime(2026, 11, 29, 9, 0, tzinfo=UTC), None)]):
                conn.execute(text("INSERT INTO bundles (bundle_id, subject_id, device_id, state,"
                                  " platform, manifest_ct, n_blobs, total_bytes, created_at,"
                                  " committed_at) VALUES (:b, 's', 'aaaaaaaaaaaaaaaa', :st, '',"
                                  " :m, 0, 0, :c, :ca)"),
                             {"b": f"{n:064d}", "st": state, "m": b"x", "c": created, "ca": committed})
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        with engine.connect() as conn:
            got = dict(conn.execute(text("SELECT id, last_upload_day FROM credentials")).all())
        as_text = {k: (str(v)[:10] if v is not None else None) for k, v in got.items()}
        assert as_text == {"aaaaaaaaaaaaaaaa": "2026-11-28", "bbbbbbbbbbbbbbbb": None}
    finally:
        engine.dispose()


def test_platform_groups_shown_only_with_ten_persons(stack: Stack) -> None:
    for i in range(10):
        sid = stack.subject(f"p{i}@example.org")
        upload(stack, sid, {"frames/a.png": png((i, 0, 0))}, {}, session_id=f"s{i}")
    upload(stack, stack.subject("solo@example.org"), {"frames/a.png": png((0, 0, 9))}, {},
           session_id="solo")
    # make the solo person's platform differ: a separate group of 1 must stay hidden
    with stack.collector.db.session() as s:
        from sqlalchemy import update

        from demotrace.server.models import Bundle
        s.execute(update(Bundle).where(Bundle.subject_id == stack.subject("solo@example.org"))
                  .values(platform="darwin"))
    health = stack.client.get("/v1/admin/health", headers=stack.h(stack.token("admin"))).json()
    assert [(g["platform"], g["persons"], g["bundles"]) for g in health["groups"]] == [("linux-x11", 10, 10)]
    assert health["volumes"]["persons_with_data"] == 11


# -- bulk-read alert ------------------------------------------------------------------------------
def test_bulk_read_alert_is_logged_once_and_shown_to_auditors(tmp_path: Path, db_url: str) -> None:
    st = make_stack(tmp_path / "srv", db_url, bulk_read_max_bundles=3, bulk_read_window_s=600)
    try:
        bundles = []
        for i in range(5):
            sid = st.subject(f"p{i % 2}@example.org")
            data = png((i * 40, 0, 0))
            bundles.append((sid, upload(st, sid, {"frames/a.png": data}, {}, session_id=f"s{i}"), sha(data)))
        cur, aud = st.token("curator"), st.token("auditor")
        hc, ha = st.h(cur), st.h(aud)
        # three bundles, manifest and blob of each: 3 distinct bundles = at the limit, no alert
        for sid, bid, h in bundles[:3]:
            assert st.client.get(f"/v1/curator/subjects/{sid}/bundles/{bid}", params=PURPOSE,
                                 headers=hc).status_code == 200
            assert st.client.get(f"/v1/curator/subjects/{sid}/bundles/{bid}/blobs/{h}",
                                 params=PURPOSE, headers=hc).status_code == 200
        assert st.client.get("/v1/audit/alerts", headers=ha).json() == []
        sid, bid, _ = bundles[3]
        st.client.get(f"/v1/curator/subjects/{sid}/bundles/{bid}", params=PURPOSE, headers=hc)
        alerts = st.client.get("/v1/audit/alerts", headers=ha).json()
        cid = cur.split("_")[1]
        assert [(a["action"], a["actor_role"], a["actor_id"]) for a in alerts] == [
            ("alert.bulk_read", "curator", cid)]
        assert "read 4 bundles" in alerts[0]["resource"] and "limit 3" in alerts[0]["resource"]
        # a fifth bundle within the window: still one alert; another curator has its own count
        sid, bid, _ = bundles[4]
        st.client.get(f"/v1/curator/subjects/{sid}/bundles/{bid}", params=PURPOSE, headers=hc)
        assert len(st.client.get("/v1/audit/alerts", headers=ha).json()) == 1
        other = st.h(st.token("curator"))
        st.client.get(f"/v1/curator/subjects/{sid}/bundles/{bid}", params=PURPOSE, headers=other)
        assert len(st.client.get("/v1/audit/alerts", headers=ha).json()) == 1
        # the alert is part of the signed, hash-chained log
        doc = st.client.get("/v1/audit/export", headers=ha).json()
        assert any(e["action"] == "alert.bulk_read" for e in doc["entries"])
        assert verify(doc).entries == len(doc["entries"])
    finally:
        st.client.close()
        st.collector.close()


# -- command line ---------------------------------------------------------------------------------
def test_cli_policy_add_list_and_device_fetch(tmp_path: Path) -> None:
    """`demotrace admin policy-add/policies` on the server host; `demotrace device policy
    --save` on an enrolled device writes the current policy into its home."""
    import os
    import subprocess

    from test_server_upload import DEMOTRACE, ServerProc, enroll

    from demotrace.upload import Enrollment

    srv = ServerProc(tmp_path / "srv", f"sqlite:///{tmp_path / 'srv' / 'c.db'}")
    srv.data_dir.mkdir()
    v2 = DEFAULT_TOML.replace("version = 1", "version = 2", 1).replace(
        'notice = """', 'notice = """CLI notice.\n', 1)
    (tmp_path / "v2.toml").write_text(v2)
    home = tmp_path / "device-home"
    home.mkdir()
    try:
        srv.start()
        out = srv.cli("admin", "policy-add", str(tmp_path / "v2.toml"), "--current")
        assert out == "policy version 2 stored, current"
        lines = srv.cli("admin", "policies").splitlines()
        assert [ln.split()[:2] for ln in lines] == [["*", "2"], ["1", "notice"]]
        Enrollment(srv.url, enroll(srv, srv.code("device", "cy@example.org"))).save(home)
        r = subprocess.run([DEMOTRACE, "device", "policy", "--save"], capture_output=True,
                           text=True, env={**os.environ, "DEMOTRACE_HOME": str(home)},
                           timeout=120, check=False)
        assert r.returncode == 0, r.stderr
        assert "version 2" in r.stdout and "CLI notice." in r.stdout
        assert (home / "policy.toml").read_text() == v2
    finally:
        srv.stop()
