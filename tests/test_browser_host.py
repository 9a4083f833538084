"""Browser capture pieces without a browser: the CSS→screen mapping (hand-computed cases), the
browser clock mapping, the native messaging host as a real process speaking Chrome's framing to
a real control socket, host installation (files and CLI), and the Mind2Web validator."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from demotrace.capture.browser import merge
from demotrace.errors import SchemaError

DEMOTRACE = [str(Path(sys.executable).parent / "demotrace")]


def _report(**kw: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "type": "action", "event": "pointerdown", "t_epoch_ms": None,
        "element": {"tag": "button", "role": "button", "name": "OK", "selector": "#ok", "node_id": "7",
                    "attributes": {"id": "ok"}, "secret": False,
                    "bounds": {"x": 10, "y": 20, "width": 30, "height": 40}},
        "view": {"screenX": 100, "screenY": 50, "outerWidth": 808, "outerHeight": 700,
                 "innerWidth": 800, "innerHeight": 600, "dpr": 1},
        "url": "http://127.0.0.1:1/", "title": "T",
    }
    r.update(kw)
    return r


def test_mapping_from_pointer_calibration() -> None:
    # zoom 1.5 on a 2x screen: dpr = 3. Pointer at screen (400, 300) DIP, client (100, 60) CSS:
    # viewport origin = (400 - 100*1.5, 300 - 60*1.5) = (250, 210) DIP = (500, 420) physical.
    # Element at CSS (10, 20) 30x40 → physical (500 + 10*3, 420 + 20*3) = (530, 480), 90x120.
    r = _report(zoom=1.5, view={**_report()["view"], "dpr": 3},
                pointer={"screenX": 400, "screenY": 300, "clientX": 100, "clientY": 60})
    f = merge.element_fields(r)
    assert f["bounds"] == [530.0, 480.0, 90.0, 120.0]
    assert f["attributes"]["mapping"] == "pointer" and f["attributes"]["css_bounds"] == "10,20,30,40"


def test_mapping_from_window_geometry_with_frame_offset() -> None:
    # No pointer: border = (808 - 800)/2 = 4, top chrome = 700 - 600 - 4 = 96; viewport origin
    # (100 + 4, 50 + 96) = (104, 146); a same-origin iframe at CSS (5, 7) of the top viewport;
    # element at (10, 20) in the frame → screen (104 + 5 + 10, 146 + 7 + 20) = (119, 173).
    f = merge.element_fields(_report(frame_offset={"x": 5, "y": 7}))
    assert f["bounds"] == [119.0, 173.0, 30.0, 40.0]
    assert f["attributes"]["mapping"] == "window_estimate"


def test_secret_element_never_carries_a_value_and_bad_reports_are_named() -> None:
    r = _report()
    r["element"] = {**r["element"], "secret": True, "attributes": {"type": "password", "value": "x", "selected_text": "y"}}
    f = merge.element_fields(r)
    assert f["secret"] is True and "value" not in f["attributes"] and "selected_text" not in f["attributes"]
    with pytest.raises(SchemaError, match="view.dpr"):
        merge.element_fields(_report(view={"screenX": 0, "screenY": 0, "outerWidth": 1, "outerHeight": 1,
                                           "innerWidth": 1, "innerHeight": 1, "dpr": "2"}))
    with pytest.raises(SchemaError, match="element"):
        merge.element_fields({"type": "action"})


def test_policy_named_field_is_secret_whatever_the_page_said() -> None:
    from demotrace.privacy.policy import default_policy

    r = _report()
    r["element"] = {**r["element"], "tag": "input", "secret": False,
                    "attributes": {"name": "card_cvc", "value": "123"}}
    # the default policy's name pattern "(?i)\b(cvv|cvc|csc)\b" does not match "card_cvc"
    # ("_" is a word character) ...
    assert merge.element_fields(r, default_policy())["secret"] is False
    r["element"]["attributes"] = {"name": "cvc", "value": "123"}
    # ... but matches "cvc": secret, and the value is gone
    f = merge.element_fields(r, default_policy())
    assert f["secret"] is True and "value" not in f["attributes"]


def test_browser_clock_to_monotonic() -> None:
    wall, mono = 1_800_000_000_000_000_000, 5_000_000_000
    # 12.5 ms before "now" on the wall clock → 12.5 ms before now on the monotonic clock
    t = merge.epoch_ms_to_monotonic_ns(1_800_000_000_000 - 12.5, now_mono_ns=mono, now_wall_ns=wall)
    assert abs(t - (mono - 12_500_000)) < 1_000  # float64 epoch ms resolve ~0.25 µs in 2027
    assert merge.epoch_ms_to_monotonic_ns(1_800_000_000_000 + 5, now_mono_ns=mono, now_wall_ns=wall) == mono
    assert merge.epoch_ms_to_monotonic_ns(1_800_000_000_000 - 11_000, now_mono_ns=mono, now_wall_ns=wall) == mono
    assert merge.epoch_ms_to_monotonic_ns(None, now_mono_ns=mono, now_wall_ns=wall) == mono


def _frame(obj: Any) -> bytes:
    body = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
    return struct.pack("=I", len(body)) + body


def test_native_host_process_forwards_to_the_control_socket(tmp_path: Path) -> None:
    """The real host process, fed Chrome's length-prefixed messages on stdin, forwards each
    report as a ``browser_event`` to the control socket of DEMOTRACE_HOME; a malformed message
    is skipped (the next one still arrives); it answers the hello with its status."""
    from demotrace.paths import Paths
    from demotrace.recorder.control import ControlServer

    home = tmp_path / "home"
    got: list[dict[str, Any]] = []
    done = threading.Event()

    def handler(req: dict[str, Any]) -> dict[str, Any]:
        got.append(req)
        if len(got) == 2:
            done.set()
        return {"ok": True}

    server = ControlServer(Paths(home).control_socket, handler)
    server.start()
    try:
        t0 = time.time() * 1000
        stdin = (_frame({"type": "hello"}) + _frame(_report(t_epoch_ms=t0 - 3))
                 + _frame(b"{not json") + _frame({"type": "navigation", "url": "http://127.0.0.1:1/next", "title": "Next",
                                                  "window": {"left": 0, "top": 0, "width": 800, "height": 600}}))
        proc = subprocess.run([sys.executable, "-m", "demotrace.capture.browser.nativehost", "chrome-extension://x/"],
                              input=stdin, capture_output=True, timeout=30, check=False, env=dict(os.environ, DEMOTRACE_HOME=str(home)))
        assert proc.returncode == 0, proc.stderr
        assert done.wait(5)
    finally:
        server.close()
    assert [r["cmd"] for r in got] == ["browser_event", "browser_event"]
    el, fc = got[0]["event"], got[1]["event"]
    assert el["kind"] == "element" and el["selector"] == "#ok" and el["bounds"] == [114.0, 166.0, 30.0, 40.0]
    # the DOM event happened ~3 ms before the host got it (bounded by the process start-up)
    assert 2_000_000 <= int(el["attributes"]["dom_lead_ns"]) < 10_000_000_000
    assert fc == {"kind": "focus_change", "t_ns_abs": fc["t_ns_abs"], "url": "http://127.0.0.1:1/next",
                  "title": "Next", "pid": os.getpid(), "bounds": [0.0, 0.0, 800.0, 600.0]}
    assert b"not JSON" in proc.stderr and b"{not json" not in proc.stderr  # logged by error, not content
    # stdout is Chrome's framing: the policy's secret-field rules (answering the hello), then
    # one status message after connecting
    out, msgs = proc.stdout, []
    while out:
        (n,) = struct.unpack("=I", out[:4])
        msgs.append(json.loads(out[4:4 + n]))
        out = out[4 + n:]
    assert [m["type"] for m in msgs] == ["policy", "status"]
    # from privacy/default_policy.toml [secrets]: "(?i)pass(word|code|phrase)" → JS source + flag i
    assert ["pass(word|code|phrase)", "i"] in msgs[0]["name_patterns"]
    assert "one-time-code" in msgs[0]["autocomplete"] and msgs[0]["types"] == ["password"]
    assert msgs[1] == {"type": "status", "recording": True}


def test_install_writes_manifest_and_launcher_and_cli_reports_status(tmp_path: Path) -> None:
    from demotrace.capture.browser.install import HOST_NAME, extension_id

    home, udd = tmp_path / "home", tmp_path / "profile"
    env = dict(os.environ, COLUMNS="200")
    st = subprocess.run([*DEMOTRACE, "browser", "status", "--home", str(home), "--user-data-dir", str(udd)],
                        capture_output=True, text=True, env=env, check=False)
    assert st.returncode == 1 and "no host manifest" in st.stderr
    subprocess.run([*DEMOTRACE, "browser", "install", "--home", str(home), "--user-data-dir", str(udd)],
                   check=True, capture_output=True, env=env)
    manifest = json.loads((udd / "NativeMessagingHosts" / f"{HOST_NAME}.json").read_text())
    launcher = home / "browser" / "demotrace-native-host"
    assert manifest["name"] == "org.demotrace.browser" and manifest["type"] == "stdio"
    assert manifest["path"] == str(launcher.resolve()) and os.access(launcher, os.X_OK)
    assert manifest["allowed_origins"] == [f"chrome-extension://{extension_id()}/"]
    assert f"DEMOTRACE_HOME={home}" in launcher.read_text()
    st = subprocess.run([*DEMOTRACE, "browser", "status", "--home", str(home), "--user-data-dir", str(udd)],
                        capture_output=True, text=True, env=env, check=False)
    assert st.returncode == 0, st.stderr
    subprocess.run([*DEMOTRACE, "browser", "uninstall", "--home", str(home), "--user-data-dir", str(udd)],
                   check=True, capture_output=True, env=env)
    assert not launcher.exists() and not (udd / "NativeMessagingHosts" / f"{HOST_NAME}.json").exists()


def test_extension_manifest_keeps_out_of_incognito_and_loads_no_remote_code() -> None:
    from demotrace.capture.browser.install import EXTENSION_DIR

    m = json.loads((EXTENSION_DIR / "manifest.json").read_text())
    assert m["manifest_version"] == 3 and m["incognito"] == "not_allowed"
    assert m["permissions"] == ["nativeMessaging", "tabs"]
    assert sorted(f.name for f in EXTENSION_DIR.iterdir()) == ["content.js", "manifest.json", "service_worker.js"]
    for name in ("content.js", "service_worker.js"):
        text = (EXTENSION_DIR / name).read_text()
        for remote in ("importScripts", "import(", "eval(", "new Function", "fetch(", "XMLHttpRequest", "WebSocket"):
            assert remote not in text, (name, remote)


def test_mind2web_validator_names_problems() -> None:
    from demotrace.export.mind2web import validate_task

    ok = {"annotation_id": "e", "website": "w", "domain": "", "subdomain": "", "confirmed_task": "t",
          "action_reprs": ["[button]  OK -> CLICK"],
          "actions": [{"action_uid": "e-0000", "raw_html": "", "cleaned_html": "", "operation":
                       {"op": "CLICK", "original_op": "CLICK", "value": ""}, "neg_candidates": [],
                       "pos_candidates": [{"tag": "button", "is_original_target": True, "is_top_level_target": True,
                                           "backend_node_id": "3", "attributes": json.dumps({"bounding_box_rect": "1,2,3,4"})}]}]}
    assert validate_task(ok) == []
    bad = json.loads(json.dumps(ok))
    del bad["website"]
    bad["actions"][0]["operation"]["op"] = "HOVER"
    bad["actions"][0]["pos_candidates"][0]["attributes"] = json.dumps({"bounding_box_rect": "1,2"})
    problems = validate_task(bad)
    assert "task lacks 'website'" in problems
    assert any("operation.op 'HOVER'" in p for p in problems)
    assert any("bounding_box_rect '1,2'" in p for p in problems)
