"""The replay page, opened in Debian's Chromium (Playwright, never `playwright install`): the
click marker is drawn on the right pixel of the rendered screenshot, and every kind of action
is drawn."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from export_support import SID, build_dataset, make_fixture
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
MAGENTA = (255, 0, 255)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian chromium missing: run scripts/bootstrap.sh (APT_PACKAGES)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("replay")
    fx = make_fixture(tmp)
    return build_dataset(fx, tmp / "ds"), tmp


def _near(px: tuple[int, ...], colour: tuple[int, int, int], tol: int = 40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(px[:3], colour))


def _marker_check(page, shot: Image.Image, step: int, x_img: float, y_img: float) -> None:
    """The pixel at the click point of step ``step`` (image pixels) is magenta; 45 page px
    below it is the frame, not the marker."""
    box = page.evaluate(
        """(i) => { const im = document.getElementById('img-' + i); const r = im.getBoundingClientRect();
                    return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height,
                            im.naturalWidth, im.naturalHeight]; }""", step)
    left, top, w, h, nw, nh = box
    assert nw > 0 and nh > 0, "image did not load"
    px = round(left + x_img * w / nw)
    py = round(top + y_img * h / nh)
    assert _near(shot.getpixel((px, py)), MAGENTA), (step, px, py, shot.getpixel((px, py)))
    assert not _near(shot.getpixel((px, py + 45)), MAGENTA)


def test_replay_click_marker_position(browser, dataset) -> None:
    ds, tmp = dataset
    out = tmp / "replay-a.html"
    # through the CLI, as a person would
    proc = subprocess.run([str(Path(sys.executable).parent / "demotrace"), "replay", f"{SID}-0", "--dataset", str(ds),
                           "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    page = browser.new_page(viewport={"width": 1000, "height": 900}, device_scale_factor=1)
    page.goto(out.as_uri())
    shot_path = tmp / "replay-a.png"
    page.screenshot(path=str(shot_path), full_page=True)
    shot = Image.open(shot_path).convert("RGB")
    # step 0: click at desktop (640, 400) on a 1280x800 frame at (0, 0) -> image (640, 400)
    _marker_check(page, shot, 0, 640, 400)
    # step 7: double click at (320, 200) -> image (320, 200)
    _marker_check(page, shot, 7, 320, 200)
    text = page.inner_text("body")
    assert "Say hello in gedit" in text
    assert "observation gap 100 ms" in text
    assert "no observation was captured before this action" in text       # step 6
    assert "héllo wörld" in page.inner_text("#step-1")                     # typed text box
    assert "ctrl+shift+alt+t" in page.inner_text("#step-2")                # hotkey label
    assert page.locator("#step-3 line.scroll-arrow").count() == 1          # scroll arrow
    # scroll down (dy = -3): the arrow points down from (100, 200)
    y1, y2 = (float(page.get_attribute("#step-3 line.scroll-arrow", a)) for a in ("y1", "y2"))
    assert y2 > y1
    assert page.locator("#step-5 polyline").count() == 1                   # drag path
    assert page.locator("#step-5 polyline").get_attribute("points") == "100.0,100.0 200.0,150.0 300.0,200.0"
    assert "DONE" in page.inner_text("#step-8")
    page.close()


def test_replay_offset_monitor_and_files(browser, dataset) -> None:
    ds, tmp = dataset
    from demotrace.replay import write_replay

    out = write_replay(ds, f"{SID}-1", tmp / "b" / "replay-b.html", embed=False)
    assert (tmp / "b" / "replay-b_files" / "step-0000.webp").is_file()
    page = browser.new_page(viewport={"width": 900, "height": 700}, device_scale_factor=1)
    page.goto(out.as_uri())
    shot_path = tmp / "replay-b.png"
    page.screenshot(path=str(shot_path), full_page=True)
    shot = Image.open(shot_path).convert("RGB")
    # right click at desktop (-640, 200); the frame shows (-1280, 0, 1280x800) as 640x400:
    # image pixel ((-640 + 1280) / 2, 200 / 2) = (320, 100)
    _marker_check(page, shot, 0, 320, 100)
    assert "instruction unknown" in page.inner_text("header")
    assert "FAIL" in page.inner_text("#step-1")
    page.close()


def test_replay_unknown_episode(dataset) -> None:
    ds, tmp = dataset
    from demotrace.errors import ExportError
    from demotrace.replay import write_replay

    with pytest.raises(ExportError, match=f"no episode 'nope'.*{SID}-0"):
        write_replay(ds, "nope", tmp / "x.html")


# -- a session recorded by `demotrace record` on Xvfb, replayed in Chromium ------------------

APP = Path(__file__).resolve().parent / "apps" / "rec_colour_app.py"
GREEN = (0, 200, 0)
RED = (200, 0, 0)


def _demotrace(home: Path | None, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    tail = ["--home", str(home)] if home is not None else []
    proc = subprocess.run([str(Path(sys.executable).parent / "demotrace"), *args, *tail],
                          capture_output=True, text=True, timeout=120, env=env or dict(os.environ, COLUMNS="200"))
    assert proc.returncode == 0, f"demotrace {args}: {proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.x11
def test_recorded_session_replay_shows_screen_before_click(xvfb, browser, tmp_path: Path) -> None:
    """Tk app at (200, 150): its top half (x 200–500, y 150–250) is a green button that turns
    red when pressed. We record a click at (300, 190) inside a task, build, replay, and check
    in Chromium's screenshot that the marker sits at (300, 190) on the observation and that the
    observation still shows the button green (it was taken before the click)."""
    import os
    import signal
    import time

    from demotrace.errors import ControlError
    from demotrace.paths import Paths
    from demotrace.recorder.control import call

    home = tmp_path / "home"
    app = subprocess.Popen([sys.executable, str(APP), "Replay test", "200", "150"], env=xvfb.env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rec = None
    try:
        assert app.stdout.readline().strip() == "READY"
        from demotrace.privacy import load_policy, record_consent

        record_consent(Paths(home), load_policy(Paths(home)))  # `demotrace record` needs consent (issue 4)
        rec = subprocess.Popen([str(Path(sys.executable).parent / "demotrace"), "record", "--home", str(home),
                                "--no-indicator"], env=dict(xvfb.env, COLUMNS="200"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while True:
            assert rec.poll() is None, f"recorder exited: {rec.communicate()}"
            assert time.monotonic() < deadline, "recorder did not start"
            try:
                if call(Paths(home).control_socket, "status", timeout=2).get("state") == "recording":
                    break
            except ControlError:
                pass
            time.sleep(0.05)
        env = dict(xvfb.env, COLUMNS="200")
        _demotrace(home, "task", "start", "Press the green button", env=env)
        time.sleep(0.5)
        subprocess.run(["xdotool", "mousemove", "300", "190"], env=xvfb.env, check=True)
        time.sleep(0.5)
        subprocess.run(["xdotool", "click", "1"], env=xvfb.env, check=True)
        assert app.stdout.readline().strip() == "CLICKED"
        time.sleep(0.7)
        _demotrace(home, "task", "end", "--status", "success", env=env)
        time.sleep(0.3)
        rec.send_signal(signal.SIGINT)
        out, err = rec.communicate(timeout=60)
        assert rec.returncode == 0, out + err
    finally:
        if rec is not None and rec.poll() is None:
            rec.kill()
            rec.communicate()
        app.kill()
        app.communicate()  # reaps it and closes its pipes
    ds = tmp_path / "ds"
    _demotrace(home, "seal", env=dict(os.environ, COLUMNS="200"))  # build reads only sealed bundles
    _demotrace(home, "build", "--out", str(ds), env=dict(os.environ, COLUMNS="200"))
    import json

    episodes = [json.loads(x) for x in (ds / "episodes.jsonl").read_text().splitlines()]
    task = [e for e in episodes if e["instruction"] == "Press the green button"]
    assert len(task) == 1 and task[0]["status"] == "success"
    out_html = tmp_path / "recorded.html"
    _demotrace(None, "replay", task[0]["episode_id"], "--dataset", str(ds), "--out", str(out_html))
    page = browser.new_page(viewport={"width": 1000, "height": 800}, device_scale_factor=1)
    page.goto(out_html.as_uri())
    click_steps = page.locator("section.step[data-action='click']")
    assert click_steps.count() == 1
    step = int(click_steps.first.get_attribute("data-step"))
    shot_path = tmp_path / "recorded.png"
    page.screenshot(path=str(shot_path), full_page=True)
    shot = Image.open(shot_path).convert("RGB")
    # the stored frame shows the 1280x800 Xvfb desktop at (0, 0), possibly downscaled
    # (the recorder's --frame-scale): image pixel = desktop pixel * width / 1280
    import pyarrow.parquet as pq

    obs = [r["observation"] for r in pq.read_table(ds / "data").to_pylist()
           if r["episode_id"] == task[0]["episode_id"] and r["step_index"] == step][0]
    assert obs["bounds"] == [0.0, 0.0, 1280.0, 800.0]
    k = obs["width"] / 1280
    assert obs["height"] / 800 == k
    _marker_check(page, shot, step, 300 * k, 190 * k)
    left, top, w, h, nw, nh = page.evaluate(
        """(i) => { const im = document.getElementById('img-' + i); const r = im.getBoundingClientRect();
                    return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height,
                            im.naturalWidth, im.naturalHeight]; }""", step)
    # 50 desktop px left of the click, still on the button, clear of the marker ring: green
    gx, gy = round(left + 250 * k * w / nw), round(top + 190 * k * h / nh)
    assert _near(shot.getpixel((gx, gy)), GREEN), shot.getpixel((gx, gy))
    page.close()
