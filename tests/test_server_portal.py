"""The portal in Debian's Chromium (Playwright, never `playwright install`), against a real
uvicorn server on loopback: sign in, view sessions and the access log, replay (the frame's
pixels are checked on the screenshot), export, delete, erase; the admin's fleet page shows
devices but no person. Episodes: listed per session with instruction, start/end and steps,
replayed (the observation's pixels checked on the screenshot) and deleted (its frame then 404
for the person and the curator); the consent and its notice text; policy versions managed by
the admin; the bulk-read alert on the auditor's page."""

from __future__ import annotations

import io
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from conftest_pg import Stack, free_port, make_stack, sha
from PIL import Image

from demotrace.schema.events import KeyDown, KeyUp, Marker, encode_batch
from demotrace.server.wire import BlobRef, BundleManifest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
GREEN = (0, 200, 0)
PURPOSE = {"purpose": "agent-training"}


def png(colour: tuple[int, int, int], size: tuple[int, int] = (320, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


class Served:
    """A :class:`Stack` served by uvicorn in a thread on 127.0.0.1."""

    def __init__(self, st: Stack) -> None:
        self.st = st
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(st.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian chromium missing: run scripts/bootstrap.sh"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    st = make_stack(tmp_path / "srv", f"sqlite:///{tmp_path / 'portal.db'}")
    try:
        with Served(st) as s:
            yield s
    finally:
        st.client.close()
        st.collector.close()


def seed(st: Stack, person: str) -> tuple[str, str, bytes]:
    """Two sessions for ``person``: a green frame + key events, and a red frame."""
    c, sid = st.collector, st.subject(person)
    events = encode_batch([Marker(seq=0, t_ns=0, name="session_start"),
                           KeyDown(seq=1, t_ns=1_000_000, key="h", code="KeyH", text="h"),
                           KeyUp(seq=2, t_ns=2_000_000, key="h", code="KeyH")])
    green = png(GREEN)
    ids = []
    for i, files in enumerate(({"frames/0001.png": green, "events/0.msgpack": events},
                               {"frames/0001.png": png((200, 0, 0))})):
        m = BundleManifest(session_id=f"kim-session-{i}", platform="linux-x11",
                           blobs=[BlobRef(sha256=sha(d), size=len(d), path=p)
                                  for p, d in files.items()])
        c.begin(sid, "dev", m)
        for d in files.values():
            c.put_blob(sid, m.bundle_id, sha(d), d)
        c.commit(sid, m.bundle_id)
        ids.append(m.bundle_id)
    return ids[0], ids[1], green


def test_person_portal_flow(browser: object, served: Served, tmp_path: Path) -> None:
    st = served.st
    keep, drop, green = seed(st, "kim@example.org")
    sid = st.subject("kim@example.org")
    cur = st.token("curator")
    r = st.client.get(f"/v1/curator/subjects/{sid}/bundles/{keep}/blobs/{sha(green)}",
                      params=PURPOSE, headers=st.h(cur))
    assert r.content == green
    admin = st.token("admin")
    code = st.client.post("/v1/admin/enrollment-codes", headers=st.h(admin),
                          json={"role": "person", "person": "kim@example.org"}).json()["code"]

    ctx = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)  # type: ignore[attr-defined]
    page = ctx.new_page()
    try:
        # not signed in → refused with a sign-in link
        resp = page.goto(served.url + "/portal/")
        assert resp.status == 401 and "sign in" in page.inner_text("body").lower()
        page.goto(served.url + "/portal/login")
        page.fill("#code", code)
        page.click("#signin")
        page.wait_for_selector("#sessions")
        assert page.locator("tr.session").count() == 2
        assert "kim-session-0" in page.inner_text("#sessions")
        access = page.inner_text("#access")
        assert "curator.read_blob" in access and "agent-training" in access
        assert "kim@example.org" not in page.content()
        page.screenshot(path=str(tmp_path / "home.png"), full_page=True)
        with Image.open(tmp_path / "home.png") as im:
            assert im.size[0] == 1100

        # replay: the frame is shown; its pixels are green on the screenshot
        page.click(f"tr[data-bundle='{keep}'] a.replay")
        page.wait_for_selector("img.frame")
        page.wait_for_function("document.querySelector('img.frame').naturalWidth > 0")
        assert page.locator("tr.event").count() == 3
        assert "key_down" in page.inner_text("#events")
        box = page.locator("img.frame").bounding_box()
        shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
        px = shot.getpixel((int(box["x"] + box["width"] / 2), int(box["y"] + box["height"] / 2)))
        assert all(abs(a - b) <= 8 for a, b in zip(px, GREEN)), px
        page.go_back()

        # export: a zip holding the frame bytes
        with page.expect_download() as dl:
            page.click("#export")
        with zipfile.ZipFile(dl.value.path()) as z:
            assert z.read(f"bundles/{keep}/blobs/{sha(green)}") == green

        # delete one session
        page.click(f"tr[data-bundle='{drop}'] button.delete")
        page.wait_for_selector("#message")
        assert "deleted" in page.inner_text("#message").lower()
        assert page.locator("tr.session").count() == 1
        assert [b["bundle_id"] for b in st.collector.list_bundles(sid)] == [keep]

        # erase without the box → nothing happens; with it → everything gone
        page.click("#erase")
        page.wait_for_selector("#message")
        assert page.locator("tr.session").count() == 1
        page.check("#confirm")
        page.click("#erase")
        page.wait_for_selector("#no-sessions")
        assert "erased" in page.inner_text("#message").lower()
        page.screenshot(path=str(tmp_path / "erased.png"))
    finally:
        ctx.close()
    r = st.client.get(f"/v1/curator/subjects/{sid}/bundles/{keep}", params=PURPOSE,
                      headers=st.h(cur))
    assert r.status_code == 404


def test_admin_fleet_page_shows_devices_not_persons(browser: object, served: Served) -> None:
    st = served.st
    admin = st.token("admin")
    dcode = st.client.post("/v1/admin/enrollment-codes", headers=st.h(admin),
                           json={"role": "device", "person": "lee@example.org"}).json()["code"]
    httpx.post(served.url + "/v1/enroll", json={"code": dcode, "label": "lee-workstation"})
    seed(st, "lee@example.org")
    acode = st.client.post("/v1/admin/enrollment-codes", headers=st.h(admin),
                           json={"role": "admin"}).json()["code"]
    ctx = browser.new_context()  # type: ignore[attr-defined]
    page = ctx.new_page()
    try:
        page.goto(served.url + "/portal/login")
        page.fill("#code", acode)
        page.click("#signin")
        page.wait_for_selector("#devices")
        assert "lee-workstation" in page.inner_text("#devices")
        html = page.content()
        assert st.subject("lee@example.org") not in html and "lee@example.org" not in html
        assert "fewer than 10 persons" in page.inner_text("#volumes")
        page.click("button.revoke")
        page.wait_for_selector("#devices")
        assert "revoked" in page.inner_text("#devices")
        # a person page is refused to the admin
        resp = page.goto(served.url + "/portal/")
        assert resp.status == 403
    finally:
        ctx.close()


# -- episodes, consent, policies, alerts (issue 5 items 5 and 7) ----------------------------------
def test_episodes_consent_replay_and_delete_in_the_browser(browser: object, served: Served,
                                                           tmp_path: Path) -> None:
    import tomllib

    from test_server_admin import (
        BLUE,
        DEFAULT_TOML,
        SEALED_META,
        builtin_consent,
        two_task_files,
        upload,
    )

    st = served.st
    sid = st.subject("kim@example.org")
    files = two_task_files()
    bid = upload(st, sid, files, {**SEALED_META, "consent": builtin_consent()})
    green = sha(files["frames/f-green"])
    admin = st.token("admin")
    code = st.client.post("/v1/admin/enrollment-codes", headers=st.h(admin),
                          json={"role": "person", "person": "kim@example.org"}).json()["code"]
    ctx = browser.new_context(viewport={"width": 1100, "height": 900})  # type: ignore[attr-defined]
    page = ctx.new_page()
    try:
        page.goto(served.url + "/portal/login")
        page.fill("#code", code)
        page.click("#signin")
        page.wait_for_selector("#sessions")
        # consent: version, time and the notice text of that version (from the TOML, by hand)
        consent = page.inner_text("#consent")
        first_line = tomllib.loads(DEFAULT_TOML)["notice"].strip().splitlines()[0]
        assert "Policy version 1" in consent and "2026-11-29T09:00:00Z" in consent
        assert first_line in consent and "matches the notice" in consent
        # the session's two episodes: instruction, start/end, steps
        rows = page.locator("tr.episode")
        assert rows.count() == 2
        assert "Write a greeting" in rows.nth(0).inner_text()
        assert "Confirm with Enter" in rows.nth(1).inner_text()
        assert [rows.nth(i).locator("td.steps").inner_text() for i in range(2)] == ["2", "2"]
        assert "01:00:00" in rows.nth(0).inner_text() and "01:00:01" in rows.nth(1).inner_text()

        # replay episode 2: the blue observation, drawn by demotrace.replay
        page.click("tr.episode[data-index='1'] a.replay-episode")
        page.wait_for_selector("#img-0")
        page.wait_for_function("document.getElementById('img-0').naturalWidth === 320")
        assert "Confirm with Enter" in page.inner_text(".instruction")
        assert page.locator("section.step").count() == 2
        assert "Step 1 of 2" in page.inner_text("#step-0")
        box = page.locator("#img-0").bounding_box()
        shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
        shot.save(tmp_path / "replay.png")
        px = shot.getpixel((int(box["x"] + box["width"] / 2), int(box["y"] + box["height"] / 2)))
        assert all(abs(a - b) <= 8 for a, b in zip(px, BLUE)), px

        # delete episode 1 from the home page; its frame is then refused to everyone
        page.click("#back")
        page.wait_for_selector("#sessions")
        page.click("tr.episode[data-index='0'] button.delete-episode")
        page.wait_for_selector("#message")
        assert "episode deleted" in page.inner_text("#message").lower()
        assert page.locator("tr.episode").count() == 1
        assert "Confirm with Enter" in page.inner_text("tr.episode")
        assert page.locator("tr.deleted-episode").count() == 1
        r = page.request.get(served.url + f"/portal/bundles/{bid}/blobs/{green}")
        assert r.status == 404
        assert "portal.delete_episode" in page.inner_text("#access")
    finally:
        ctx.close()
    cur = st.token("curator")
    r = st.client.get(f"/v1/curator/subjects/{sid}/bundles/{bid}/blobs/{green}", params=PURPOSE,
                      headers=st.h(cur))
    assert r.status_code == 404


def test_admin_manages_policy_versions_and_sees_backlog(browser: object, served: Served) -> None:
    from test_server_admin import DEFAULT_TOML, notice_sha

    st = served.st
    admin = st.token("admin")
    acode = st.client.post("/v1/admin/enrollment-codes", headers=st.h(admin),
                           json={"role": "admin"}).json()["code"]
    dcode = st.client.post("/v1/admin/enrollment-codes", headers=st.h(admin),
                           json={"role": "device", "person": "lee@example.org"}).json()["code"]
    dev = httpx.post(served.url + "/v1/enroll", json={"code": dcode, "label": "lee-workstation"}).json()
    pending = b"p" * 40
    m = BundleManifest(session_id="x", platform="linux-x11",
                       blobs=[BlobRef(sha256=sha(pending), size=40, path="frames/p")])
    httpx.post(served.url + "/v1/bundles", content=m.canonical(),
               headers={"authorization": f"Bearer {dev['credential']}"})
    v2 = DEFAULT_TOML.replace("version = 1", "version = 2", 1).replace(
        'notice = """', 'notice = """Second notice.\n', 1)
    ctx = browser.new_context()  # type: ignore[attr-defined]
    page = ctx.new_page()
    try:
        page.goto(served.url + "/portal/login")
        page.fill("#code", acode)
        page.click("#signin")
        page.wait_for_selector("#policies")
        assert page.locator("tr.policy").count() == 1
        assert "current" in page.inner_text("tr.policy[data-version='1']")
        assert "1 unfinished uploads" in page.inner_text("#backlog")
        assert "40 bytes" in page.inner_text("#backlog")
        row = page.inner_text(f"tr.device[data-device='{dev['credential_id']}']")
        assert "never" in row and "stale" not in row  # enrolled minutes ago (bug bash 3)
        # a broken policy is refused with the reason; a good one is stored and made current
        page.fill("#toml", "version = 2\n")
        page.click("#upload-policy")
        page.wait_for_selector("#error")
        assert "notice" in page.inner_text("#error")
        page.fill("#toml", v2)
        page.check("#make-current")
        page.click("#upload-policy")
        page.wait_for_selector("#message")
        assert "version 2 stored and made current" in page.inner_text("#message")
        assert "current" in page.inner_text("tr.policy[data-version='2']")
        assert notice_sha(v2)[:16] in page.inner_text("tr.policy[data-version='2']")
        page.click("tr.policy[data-version='1'] button.make-current")
        page.wait_for_selector("#message")
        assert "current" in page.inner_text("tr.policy[data-version='1']")
        html = page.content()
        assert st.subject("lee@example.org") not in html and "lee@example.org" not in html
    finally:
        ctx.close()
    cur = httpx.get(served.url + "/v1/policy/current",
                    headers={"authorization": f"Bearer {dev['credential']}"}).json()
    assert cur["version"] == 1


def test_auditor_sees_bulk_read_alert(browser: object, tmp_path: Path) -> None:
    st = make_stack(tmp_path / "srv", f"sqlite:///{tmp_path / 'a.db'}", bulk_read_max_bundles=1)
    try:
        with Served(st) as served:
            keep, drop, _ = seed(st, "kim@example.org")
            sid, cur = st.subject("kim@example.org"), st.token("curator")
            for bid in (keep, drop):
                st.client.get(f"/v1/curator/subjects/{sid}/bundles/{bid}", params=PURPOSE,
                              headers=st.h(cur))
            code = st.client.post("/v1/admin/enrollment-codes", headers=st.h(st.token("admin")),
                                  json={"role": "auditor"}).json()["code"]
            ctx = browser.new_context()  # type: ignore[attr-defined]
            page = ctx.new_page()
            try:
                page.goto(served.url + "/portal/login")
                page.fill("#code", code)
                page.click("#signin")
                page.wait_for_selector("#alerts")
                assert page.locator("tr.alert").count() == 1
                text = page.inner_text("tr.alert")
                assert "alert.bulk_read" in text and "read 2 bundles" in text
                assert cur.split("_")[1] in text
                assert page.goto(served.url + "/portal/").status == 403
            finally:
                ctx.close()
    finally:
        st.client.close()
        st.collector.close()
