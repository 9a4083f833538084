"""Browser capture end to end: Debian's Chromium (headful on the Xvfb display, driven by
Playwright with the extension loaded) → extension → native messaging host (installed into the
test's own user-data-dir) → `demotrace record` on the same display → spool → build → Mind2Web.

One browser and one recording per module. The person's actions are real X input (xdotool), so
the X11 backend records the clicks and keys while the extension records the DOM targets.
Expected values are worked out by hand from tests/webapp/index.html, and screen positions from a
calibration made by the test itself (a pointer moved by xdotool to a known screen point, its
clientX/Y read in the page).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from webapp.server import WebApp

CHROMIUM = "/usr/bin/chromium"
DEMOTRACE = [str(Path(sys.executable).parent / "demotrace")]
PASSWORD = "Tr0ub4dor-Zq"
CODE = "492817"
USER = "alice"
TASK = "Sign in to the demo portal and open the reports"

pytestmark = pytest.mark.x11

#: What each clicked element is, by hand from tests/webapp/index.html: name → (selector the
#: extension must produce, tag, a JS expression over `el` that identifies it after a reload).
CLICKED = {
    "username": ("#username", "input", "el.id === 'username'"),
    "password": ("#password", "input", "el.id === 'password'"),
    "otc": ('input[name="otc"]', "input", "el.name === 'otc'"),
    "country": ("#country", "select", "el.id === 'country'"),
    "sign_in": ('[data-testid="sign-in"]', "button", "el.textContent === 'Sign in'"),
    # the third <button> among the form's div children: no id/testid/name/aria-label
    "help2": ("button:nth-of-type(3)", "button", "el === document.querySelectorAll('#login button')[2]"),
    # inside the same-origin iframe: the iframe, then the button in its document
    "pay": ("#payframe >>> #pay", "button", "el.id === 'pay' && el.ownerDocument !== document"),
    # inside the open shadow root of <demo-widget id=widget>: its only button
    "increment": ("#widget >>> button", "button", "el.className === 'inc' && el.getRootNode() instanceof ShadowRoot"),
    "reports": ("#to-reports", "a", "el.id === 'to-reports'"),
}

# The test's own resolver for the " >>> " paths: each step is a CSS selector in the current
# root; an <iframe> continues in its document, any other element in its open shadow root.
RESOLVE_JS = """(sel) => {
  let root = document, el = null;
  for (const part of sel.split(' >>> ')) {
    const all = root.querySelectorAll(part);
    if (all.length !== 1) return null;
    el = all[0];
    root = el.tagName === 'IFRAME' ? el.contentDocument : el.shadowRoot;
  }
  return el;
}"""


def _cli(home: Path | None, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    extra = [] if home is None else ["--home", str(home)]
    proc = subprocess.run([*DEMOTRACE, *args, *extra], capture_output=True, text=True, timeout=120, check=False,
                          env=env or dict(os.environ, COLUMNS="200"))
    assert proc.returncode == 0, f"demotrace {args} failed: {proc.stdout}\n{proc.stderr}"
    return proc


def _status(home: Path) -> dict[str, Any]:
    from demotrace.paths import Paths
    from demotrace.recorder.control import call

    return call(Paths(home).control_socket, "status", timeout=5)


def _wait(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Session:
    """What the module's recording left: home, dataset, export, the page, the calibration and
    the screen points clicked."""

    home: Path
    events: list[Any]
    clicks: dict[str, tuple[int, int]]
    css_boxes: dict[str, dict[str, float]]
    offset: tuple[float, float]
    page: Any
    context: Any
    tmp: Path
    ds: Path
    m2w: Path


@pytest.fixture(scope="module")
def session(xvfb, tmp_path_factory: pytest.TempPathFactory):
    from playwright.sync_api import sync_playwright

    from demotrace.capture.browser.install import EXTENSION_DIR, extension_id, install

    assert Path(CHROMIUM).exists(), "Debian chromium missing: run scripts/bootstrap.sh (APT_PACKAGES)"
    tmp = tmp_path_factory.mktemp("browser")
    home = tmp / "home"
    home.mkdir(mode=0o700)
    udd = tmp / "chromium-profile"
    inst = install(home / "browser", user_data_dir=udd, home=home)
    assert inst.manifest == udd / "NativeMessagingHosts" / "org.demotrace.browser.json"
    app = WebApp()
    (tmp / "xauth").write_bytes(b"")  # python-xlib wants an Xauthority file; this Xvfb has no auth
    env = dict(xvfb.env, COLUMNS="200", XAUTHORITY=str(tmp / "xauth"))
    from demotrace.paths import Paths
    from demotrace.privacy import load_policy, record_consent

    record_consent(Paths(home), load_policy(Paths(home)))  # `demotrace record` needs consent (issue 4)
    rec = subprocess.Popen([*DEMOTRACE, "record", "--home", str(home), "--no-indicator"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    s = Session()
    s.home, s.tmp, s.clicks, s.css_boxes = home, tmp, {}, {}
    try:
        def recording() -> bool:
            assert rec.poll() is None, f"recorder exited: {rec.communicate()}"
            try:
                return _status(home).get("state") == "recording"
            except Exception:  # noqa: BLE001 - not up yet
                return False

        _wait(recording, 30, "the recorder")
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                str(udd), executable_path=CHROMIUM, headless=False, env=xvfb.env, viewport=None,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--no-first-run", "--window-position=0,0",
                      f"--disable-extensions-except={EXTENSION_DIR}", f"--load-extension={EXTENSION_DIR}"])
            try:
                # Playwright may attach after the worker started: then it is announced as an event
                sw = ctx.service_workers[0] if ctx.service_workers else ctx.wait_for_event("serviceworker", timeout=60_000)
                # the id Chromium gave the extension is the one derived from manifest.json's key
                assert sw.url.startswith(f"chrome-extension://{extension_id()}/")
                # the host answered the extension's hello: a recorder receives the reports
                _wait(lambda: sw.evaluate("recording"), 30, "the native host to reach the recorder")
                page = ctx.pages[0] if ctx.pages else ctx.new_page()
                page.goto(app.url)
                page.wait_for_function("customElements.get('demo-widget') && document.getElementById('payframe').contentDocument.getElementById('pay')")
                s.page, s.context = page, ctx
                _record(s, xvfb, page, env)
                rec.send_signal(signal.SIGINT)
                out, err = rec.communicate(timeout=60)
                assert rec.returncode == 0, out + err
                s.events = _read_spool(home)
                _cli(home, "seal")  # datasets are built from sealed bundles only
                s.ds = tmp / "ds"
                _cli(home, "build", "--out", str(s.ds))
                s.m2w = tmp / "m2w"
                _cli(None, "export", "--format", "mind2web", "--dataset", str(s.ds), "--out", str(s.m2w))
                yield s
            finally:
                ctx.close()
    finally:
        if rec.poll() is None:
            rec.kill()
            rec.communicate()
        app.close()


def _xdo(xvfb, *args: str) -> None:
    subprocess.run(["xdotool", *args], env=xvfb.env, check=True, timeout=30)


def _record(s: Session, xvfb, page, env: dict[str, str]) -> None:
    # calibration, independent of the extension: where does CSS (0, 0) of the page sit on screen?
    page.evaluate("window.__mv = null; addEventListener('mousemove', e => { window.__mv = [e.clientX, e.clientY]; }, true)")
    _xdo(xvfb, "mousemove", "600", "450")
    _xdo(xvfb, "mousemove", "601", "451")
    cx, cy = _wait(lambda: page.evaluate("window.__mv"), 5, "a mousemove in the page")
    s.offset = (601 - cx, 451 - cy)  # devicePixelRatio 1, zoom 1 (asserted below)
    assert page.evaluate("devicePixelRatio") == 1
    # a malformed browser_event gets an error naming the field; the recording goes on
    from demotrace.errors import ControlError
    from demotrace.paths import Paths
    from demotrace.recorder.control import call

    with pytest.raises(ControlError, match="bounds"):
        call(Paths(s.home).control_socket, "browser_event", event={"kind": "element", "t_ns_abs": 1, "bounds": "wide"})
    with pytest.raises(ControlError, match="kind must be one of"):
        call(Paths(s.home).control_socket, "browser_event", event={"kind": "key_down"})
    _cli(s.home, "task", "start", TASK, env=env)

    def box(name: str) -> dict[str, float]:
        sel = CLICKED[name][0]
        b = page.evaluate(f"(() => {{ const el = ({RESOLVE_JS})({json.dumps(sel)}); const r = el.getBoundingClientRect();"
                          " let x = r.left, y = r.top; if (el.ownerDocument !== document) { const f = document.getElementById('payframe').getBoundingClientRect();"
                          " x += f.left + 2; y += f.top + 2; } return {x, y, width: r.width, height: r.height}; })()")
        s.css_boxes[name] = b
        return b

    def click(name: str) -> None:
        b = box(name)
        x = round(s.offset[0] + b["x"] + b["width"] / 2)
        y = round(s.offset[1] + b["y"] + b["height"] / 2)
        s.clicks[name] = (x, y)
        _xdo(xvfb, "mousemove", str(x), str(y))
        time.sleep(0.1)
        _xdo(xvfb, "click", "1")
        time.sleep(0.7)  # a person's pace: more than the 0.5 s multi-click interval

    def elements() -> int:
        return int(_status(s.home)["by_kind"].get("element", 0))

    # a page script's own events are not the person's actions: the first "Help" button gets
    # synthetic ones only (it is never really clicked)
    page.evaluate("""(() => { const b = document.querySelectorAll('#login button')[1];
        for (const t of ['pointerdown', 'click', 'focusin']) b.dispatchEvent(new PointerEvent(t, {bubbles: true, composed: true}));
        b.dispatchEvent(new WheelEvent('wheel', {bubbles: true, deltaY: 100})); })()""")
    click("username")
    _xdo(xvfb, "type", "--delay", "40", USER)
    time.sleep(0.7)
    n = elements()
    click("password")
    _wait(lambda: elements() > n, 5, "the secret-field report to reach the recorder")
    _xdo(xvfb, "type", "--delay", "40", PASSWORD)
    time.sleep(0.7)
    n = elements()
    click("otc")
    _wait(lambda: elements() > n, 5, "the one-time-code report to reach the recorder")
    _xdo(xvfb, "type", "--delay", "40", CODE)
    time.sleep(0.7)
    click("country")
    # keys held ~150 ms like a person's (xdotool's own taps last ~10 ms): the builder takes the
    # latest element when a key action closes at its release, and the select's change report
    # travels browser → host → recorder in the meantime
    for key in ("Down", "Return"):
        _xdo(xvfb, "keydown", key)
        time.sleep(0.15)
        _xdo(xvfb, "keyup", key)
        time.sleep(0.3)
    _wait(lambda: page.evaluate("document.getElementById('country').value") == "de", 5, "the select to change")
    time.sleep(0.7)
    for name in ("sign_in", "help2", "pay", "increment", "reports"):
        click(name)
    _wait(lambda: page.evaluate("location.pathname") == "/reports", 5, "the SPA navigation")
    assert page.evaluate("document.getElementById('widget').shadowRoot.querySelector('output').textContent") == "1"
    # one wheel notch over the heading
    h1 = page.evaluate("(() => { const r = document.querySelector('h1').getBoundingClientRect(); return [r.left + 40, r.top + r.height / 2]; })()")
    s.wheel_point = (round(s.offset[0] + h1[0]), round(s.offset[1] + h1[1]))
    _xdo(xvfb, "mousemove", *map(str, s.wheel_point))
    time.sleep(0.1)
    _xdo(xvfb, "click", "5")
    time.sleep(0.7)
    # a second tab, then back: tab switches reach the stream with the tab's URL
    other = page.context.new_page()
    other.goto(page.url.split("/reports")[0] + "/?tab=2")
    other.bring_to_front()
    time.sleep(0.7)
    page.bring_to_front()
    time.sleep(0.7)
    time.sleep(0.5)
    _cli(s.home, "task", "end", "--status", "success", env=env)
    time.sleep(0.3)
    # an incognito window (Ctrl+Shift+N, real keys): the same page there must leave no DOM trace
    _xdo(xvfb, "key", "ctrl+shift+n")
    wid = _wait(lambda: subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "Incognito"], env=xvfb.env,
                                       capture_output=True, text=True, check=False).stdout.split(), 15, "the incognito window")[0]
    _xdo(xvfb, "windowfocus", "--sync", wid)  # no window manager on this display: plain X focus
    _xdo(xvfb, "key", "ctrl+l")
    _xdo(xvfb, "type", "--delay", "20", page.url.split("/reports")[0] + "/?incognito=1")
    _xdo(xvfb, "key", "Return")
    _wait(lambda: "Demo Portal" in subprocess.run(["xdotool", "getwindowname", wid], env=xvfb.env,
                                                  capture_output=True, text=True, check=False).stdout, 15, "the page in incognito")
    geo = subprocess.run(["xdotool", "getwindowgeometry", "--shell", wid], env=xvfb.env, capture_output=True,
                         text=True, check=True).stdout
    g = dict(line.split("=") for line in geo.split())
    _xdo(xvfb, "mousemove", str(int(g["X"]) + int(g["WIDTH"]) // 2), str(int(g["Y"]) + int(g["HEIGHT"]) // 2))
    _xdo(xvfb, "click", "1")
    _xdo(xvfb, "key", "Tab")
    s.incognito_title = subprocess.run(["xdotool", "getwindowname", wid], env=xvfb.env, capture_output=True, text=True,
                                      check=True).stdout
    time.sleep(1.0)


def _read_spool(home: Path) -> list[Any]:
    from demotrace.cli.common import open_spool

    _, sp = open_spool(str(home))
    (sid,) = sp.session_ids()
    with sp.open(sid) as r:
        return list(r.iter_events())


def _kind(e: Any) -> str:
    return e.__struct_config__.tag


def _presses(s: Session) -> dict[str, Any]:
    """name → the DOM ``pointerdown`` element event reported for that click."""
    out = {}
    for name, (sel, _tag, _js) in CLICKED.items():
        hits = [e for e in s.events if _kind(e) == "element" and e.attributes.get("dom_event") == "pointerdown"
                and e.selector == sel]
        assert len(hits) == 1, (name, sel, [(e.selector, e.attributes.get("dom_event")) for e in s.events if _kind(e) == "element"])
        out[name] = hits[0]
    return out


def test_targets_and_selectors(session: Session) -> None:
    presses = _presses(session)
    for name, (_sel, tag, _js) in CLICKED.items():
        e = presses[name]
        assert e.source == "dom" and e.tag == tag, (name, e)
    assert presses["username"].name == "User name" and presses["username"].role == "textbox"
    assert presses["country"].role == "combobox" and presses["country"].name == "Country"
    assert presses["pay"].name == "Pay now"  # aria-label
    assert presses["sign_in"].name == "Sign in" and presses["sign_in"].role == "button"
    assert presses["reports"].role == "link" and presses["reports"].name == "Reports"
    assert presses["password"].secret and presses["otc"].secret and not presses["username"].secret
    # the select's change carried the chosen option (a non-secret value)
    changes = [e for e in session.events if _kind(e) == "element" and e.attributes.get("dom_event") == "change"
               and e.selector == "#country"]
    assert changes and changes[-1].attributes["value"] == "de" and changes[-1].attributes["selected_text"] == "Germany"
    # navigations reached the stream as focus changes with the page URL, incl. the pushState one
    urls = [e.url for e in session.events if _kind(e) == "focus_change" and e.url]
    assert any(u.startswith("http://127.0.0.1:") and u.endswith("/reports") for u in urls), urls
    assert any(u.startswith("http://127.0.0.1:") and u.count("/") == 3 and u.endswith("/") for u in urls), urls


def test_synthetic_page_events_are_not_reported(session: Session) -> None:
    # "button:nth-of-type(2)" is the first Help button (hand-derived like CLICKED["help2"])
    assert not [e for e in session.events if _kind(e) == "element" and e.selector == "button:nth-of-type(2)"]


def test_wheel_target_and_tab_switch(session: Session) -> None:
    (wheel,) = [e for e in session.events if _kind(e) == "wheel"]
    assert (wheel.x, wheel.y) == session.wheel_point and wheel.dy < 0  # button 5 = down
    (el,) = [e for e in session.events if _kind(e) == "element" and e.attributes.get("dom_event") == "wheel"]
    assert el.tag == "h1" and el.bounds is not None and el.bounds.contains(wheel.x, wheel.y)
    urls = [e.url or "" for e in session.events if _kind(e) == "focus_change"]
    i = max(i for i, u in enumerate(urls) if u.endswith("/?tab=2"))
    assert any(u.endswith("/reports") for u in urls[i + 1:]), urls  # switched back


def test_incognito_window_never_captured(session: Session) -> None:
    assert "Demo Portal" in session.incognito_title  # the page really was open there
    leaked = [e for e in session.events if _kind(e) in ("element", "focus_change")
              and "incognito=1" in (getattr(e, "url", None) or "") + json.dumps(getattr(e, "attributes", {}))]
    assert leaked == []
    # ... while the normal window's page was captured with its URL
    assert any(_kind(e) == "element" and e.attributes.get("url", "").startswith("http://127.0.0.1:") for e in session.events)


def test_selectors_refind_elements_after_reload(session: Session) -> None:
    page = session.page
    assert page.url.endswith("/reports")  # the SPA route; the server serves the same app there
    page.reload()
    page.wait_for_function("customElements.get('demo-widget') && document.getElementById('payframe').contentDocument && document.getElementById('payframe').contentDocument.getElementById('pay')")
    presses = _presses(session)
    for name, (_sel, _tag, js) in CLICKED.items():
        recorded = presses[name].selector
        ok = page.evaluate(f"(() => {{ const el = ({RESOLVE_JS})({json.dumps(recorded)}); return !!el && ({js}); }})()")
        assert ok, (name, recorded)


def test_secret_values_never_stored(session: Session) -> None:
    from demotrace.schema.events import event_to_json

    dumped = "\n".join(event_to_json(e).decode() for e in session.events)
    (t_end,) = [e.t_ns for e in session.events if _kind(e) == "marker" and e.name == "task_end"]
    # the task's keystrokes (after it, the incognito check types a URL with digits)
    keys_text = "".join(e.text or "" for e in session.events if _kind(e) == "key_down" and e.t_ns < t_end)
    assert USER in keys_text  # desktop keystrokes are recorded ...
    for secret in (PASSWORD, CODE):  # ... but not those typed into secret fields
        assert secret not in keys_text and secret not in dumped
    assert not any(c in keys_text for c in "4928"), keys_text  # no digit of the code leaked at all
    # one keydown report per focused field, never one per key (that would give away the length)
    for sel in ("#password", 'input[name="otc"]'):
        assert sum(1 for e in session.events if _kind(e) == "element" and e.selector == sel
                   and e.attributes.get("dom_event") == "keydown") == 1, sel
    for e in session.events:
        if _kind(e) == "element" and e.secret:
            assert "value" not in e.attributes and "selected_text" not in e.attributes
    # nothing demotrace wrote on disk holds them either (dataset, export, home incl. the spool)
    for root in (session.home, session.ds, session.m2w):
        for f in root.rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                for secret in (PASSWORD, CODE):
                    assert secret.encode() not in data, f


def test_screen_bounds_contain_recorded_click_point(session: Session) -> None:
    presses = _presses(session)
    downs = [e for e in session.events if _kind(e) == "pointer_down"]
    for name, (x, y) in session.clicks.items():
        el = presses[name]
        # the X11 backend's press for this click (the pointer was at the point xdotool moved to)
        (down,) = [d for d in downs if d.x == x and d.y == y]
        assert el.bounds is not None and el.bounds.contains(down.x, down.y), (name, el.bounds, (down.x, down.y))
        # and the mapping agrees with the test's own calibration to within a pixel
        b = session.css_boxes[name]
        exp = (session.offset[0] + b["x"], session.offset[1] + b["y"], b["width"], b["height"])
        got = (el.bounds.x, el.bounds.y, el.bounds.width, el.bounds.height)
        assert all(abs(g - w) <= 1.0 for g, w in zip(got, exp)), (name, got, exp)


def test_episode_steps_carry_dom_targets(session: Session) -> None:
    import pyarrow.parquet as pq

    episodes = [json.loads(x) for x in (session.ds / "episodes.jsonl").read_text().splitlines()]
    (ep,) = [e for e in episodes if e["instruction"] == TASK]
    rows = sorted((r for r in pq.read_table(session.ds / "data").to_pylist() if r["episode_id"] == ep["episode_id"]),
                  key=lambda r: r["step_index"])
    clicks = [(r["target"] or {}).get("selector") for r in rows if r["action"]["type"] == "click"]
    for name in ("username", "password", "otc", "country", "sign_in", "help2", "pay", "increment", "reports"):
        assert CLICKED[name][0] in clicks, (name, clicks)
    types = [(r["action"]["text"], (r["target"] or {}).get("selector")) for r in rows if r["action"]["type"] == "type"]
    assert (USER, "#username") in types, types
    assert all(PASSWORD not in t and CODE not in t for t, _ in types)


# Mind2Web's published field list (osunlp/Mind2Web dataset card, "Data Fields"), typed here by hand.
M2W_TASK = {"annotation_id": str, "website": str, "domain": str, "subdomain": str, "confirmed_task": str,
            "action_reprs": list, "actions": list}
M2W_ACTION = {"action_uid": str, "raw_html": str, "cleaned_html": str, "operation": dict,
              "pos_candidates": list, "neg_candidates": list}
M2W_CANDIDATE = {"tag": str, "is_original_target": bool, "is_top_level_target": bool, "backend_node_id": str,
                 "attributes": str}


def test_mind2web_export_validates(session: Session) -> None:
    tasks = json.loads((session.m2w / "mind2web.json").read_text())
    (task,) = [t for t in tasks if t["confirmed_task"] == TASK]
    for f, typ in M2W_TASK.items():
        assert isinstance(task[f], typ), f
    # the page's host: 127.0.0.1 — a loopback address is no one's data, so sealing keeps it
    # (bug bash 6 M3; other addresses are replaced: tests/test_seal.py, test_redact_text.py)
    assert task["website"] == "127.0.0.1"
    assert len(task["action_reprs"]) == len(task["actions"]) > 0
    for a in task["actions"]:
        for f, typ in M2W_ACTION.items():
            assert isinstance(a[f], typ), f
        assert a["operation"]["op"] in ("CLICK", "TYPE", "SELECT")
        assert set(a["operation"]) == {"op", "original_op", "value"}
        (c,) = a["pos_candidates"]
        for f, typ in M2W_CANDIDATE.items():
            assert isinstance(c[f], typ), f
        attrs = json.loads(c["attributes"])
        _x, _y, w, h = (float(v) for v in attrs["bounding_box_rect"].split(","))
        assert w > 0 and h > 0
        # the candidate is the element numbered so in the cleaned HTML snapshot
        if a["cleaned_html"]:
            assert f'backend_node_id="{c["backend_node_id"]}"' in a["cleaned_html"]
    ops = [(a["operation"]["op"], a["operation"]["value"]) for a in task["actions"]]
    assert ("TYPE", USER) in ops
    assert ("SELECT", "Germany") in ops
    assert sum(1 for o, _ in ops if o == "CLICK") >= 6
    assert "[textbox]  User name -> TYPE: alice" in task["action_reprs"]
    assert "[combobox]  Country -> SELECT: Germany" in task["action_reprs"]
    blob = json.dumps(task)
    assert PASSWORD not in blob and CODE not in blob
