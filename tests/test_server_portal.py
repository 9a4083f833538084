"""The portal in Debian's Chromium (Playwright, never `playwright install`), against a real
uvicorn server on loopback: sign in, view sessions and the access log, replay (the frame's
pixels are checked on the screenshot), export, delete, erase; the admin's fleet page shows
devices but no person."""

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

    def __enter__(self) -> "Served":
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
