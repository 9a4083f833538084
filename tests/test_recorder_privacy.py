"""Capture-time privacy (issue 4, "minimise at the source"; recorder/guard.py): real
`demotrace record` on Xvfb with real xterms driven by xdotool.

- no consent / a changed policy version → `record` refuses before capturing anything;
- a denied app (an xterm whose WM_CLASS is KeePassXC) focused → what is typed into it is absent
  from the RAW spool, no event names it, a private_gap marker with its duration is stored, and no
  frame captured while it had focus is stored;
- the same denied window visible beside the focused allowed xterm → its region (from xwininfo,
  scaled by Frame.scale) is black in every stored frame, the allowed window's is not;
- strict policy → printable keystrokes into an unidentified field are dropped and counted;
- `review forget` refuses while a recorder is running.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from helpers_x11 import recorder_status, start_recorder, stop_recorder, wait_for
from PIL import Image

from demotrace.paths import Paths
from demotrace.privacy import load_policy, record_consent
from demotrace.schema import FocusChange, Frame, KeyDown, KeyUp, Marker
from demotrace.schema.events import event_to_json
from demotrace.spool import DataKey, Spool

DEMOTRACE = [str(Path(sys.executable).parent / "demotrace")]
DEFAULT_TOML = Path(__file__).resolve().parent.parent / "src" / "demotrace" / "privacy" / "default_policy.toml"


def _env(xvfb, home: Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    xauth = home.parent / "Xauthority"
    xauth.touch()
    return dict(xvfb.env, COLUMNS="200", XAUTHORITY=str(xauth))


def _status(home: Path) -> dict:
    return recorder_status(home)


def _start(xvfb, home: Path):  # type: ignore[no-untyped-def]
    return start_recorder(_env(xvfb, home), home, "--no-indicator")


def _stop(rec) -> None:  # type: ignore[no-untyped-def]
    stop_recorder(rec)


def _xterm(xvfb, cls: str, title: str, geom: str) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    return subprocess.Popen(["xterm", "-class", cls, "-T", title, "-geometry", geom, "-fa", "DejaVu Sans Mono",
                             "-fs", "12", "-e", "cat"], env=xvfb.env)


def _wid(xvfb, title: str) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        p = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", f"^{title}$"], env=xvfb.env,
                           capture_output=True, text=True)
        if p.stdout.strip():
            return p.stdout.split()[0]
        time.sleep(0.1)
    raise AssertionError(f"window {title!r} did not appear")


def _geometry(xvfb, wid: str) -> tuple[int, int, int, int]:  # type: ignore[no-untyped-def]
    """(x, y, width, height) of the window's outer rectangle (border included), from xwininfo."""
    out = subprocess.run(["xwininfo", "-id", wid], env=xvfb.env, capture_output=True, text=True, check=True).stdout
    v = {k: int(re.search(rf"{k}:\s+(-?\d+)", out).group(1))  # type: ignore[union-attr]
         for k in ("Absolute upper-left X", "Absolute upper-left Y", "Width", "Height", "Border width")}
    b = v["Border width"]
    return v["Absolute upper-left X"] - b, v["Absolute upper-left Y"] - b, v["Width"] + 2 * b, v["Height"] + 2 * b


def _xdo(xvfb, *args: str) -> None:  # type: ignore[no-untyped-def]
    subprocess.run(["xdotool", *args], env=xvfb.env, check=True, timeout=30)


def _raw(home: Path):  # type: ignore[no-untyped-def]
    paths = Paths(home)
    spool = Spool(paths.spool, DataKey.load(paths.key_file))
    (sid,) = spool.session_ids()
    return spool.open(sid)


def _wait(pred, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    wait_for(pred, timeout, what)


def test_record_refuses_without_consent_and_after_a_policy_change(dt_home: Path) -> None:
    """No consent → exit 1 naming `demotrace enroll`, no session, no socket; consent to version
    1 then a policy file of version 2 → refused again, naming both versions."""
    env = dict(os.environ, COLUMNS="300")
    env.pop("DISPLAY", None)  # refusal comes before any capture backend is touched
    cmd = [*DEMOTRACE, "record", "--home", str(dt_home), "--duration", "1", "--no-indicator"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    err = " ".join(p.stderr.split())
    assert p.returncode == 1 and "demotrace enroll" in err, p.stderr
    paths = Paths(dt_home)
    assert not paths.spool.exists() or not any(paths.spool.iterdir())
    assert not paths.control_socket.exists()

    record_consent(paths, load_policy(paths))  # version 1, the built-in default
    text = DEFAULT_TOML.read_text("utf-8")
    assert re.search(r"(?m)^version = 1$", text)
    (dt_home / "policy.toml").write_text(re.sub(r"(?m)^version = 1$", "version = 2", text), "utf-8")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    err = " ".join(p.stderr.split())
    assert p.returncode == 1 and "version 1" in err and "version 2" in err and "demotrace enroll" in err, p.stderr
    assert not any(paths.spool.iterdir())


def test_recorder_api_refuses_without_consent(xvfb, dt_home: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`Recorder.start` itself raises ConsentRequired (library use cannot skip consent) and
    installs no hook: the session holds no event."""
    import pytest

    from demotrace.capture import get_backend
    from demotrace.privacy import ConsentRequired
    from demotrace.recorder import Recorder, new_manifest
    from demotrace.spool import new_session_id

    monkeypatch.setenv("DISPLAY", xvfb.display)
    paths = Paths(dt_home).ensure()
    spool = Spool(paths.spool, DataKey.load_or_create(paths.key_file))
    backend = get_backend()
    w = spool.create(new_manifest(new_session_id(), backend))
    rec = Recorder(backend, w)
    with pytest.raises(ConsentRequired, match="demotrace enroll"):
        rec.start()
    w.close(duration_ns=0)
    with spool.open(w.session_id) as r:
        assert list(r.iter_events()) == []


def test_denied_app_never_captured_and_painted_out(xvfb, dt_home: Path) -> None:  # type: ignore[no-untyped-def]
    """An allowed xterm (left) and a KeePassXC-class xterm (right, not overlapping) are both
    visible. Typing into the denied one while it has focus leaves no trace in the raw spool but
    a private_gap; every stored frame shows its region black and the allowed one not."""
    work = _xterm(xvfb, "XTerm", "worklog", "60x12+0+0")
    vault = _xterm(xvfb, "KeePassXC", "vault", "50x12+660+260")
    rec = None
    try:
        w_work, w_vault = _wid(xvfb, "worklog"), _wid(xvfb, "vault")
        g_work, g_vault = _geometry(xvfb, w_work), _geometry(xvfb, w_vault)
        assert g_work[0] + g_work[2] < g_vault[0], (g_work, g_vault)  # side by side
        record_consent(Paths(dt_home), load_policy(Paths(dt_home)))
        _xdo(xvfb, "windowfocus", "--sync", w_work)
        rec = _start(xvfb, dt_home)

        def stored_focus_is(title: str) -> bool:
            with _raw(dt_home) as r:
                f = [e for e in r.iter_events() if isinstance(e, FocusChange)]
            return bool(f) and f[-1].title == title and not _status(dt_home)["privacy_scope"]["excluded_now"]

        _wait(lambda: stored_focus_is("worklog"), "the worklog focus")
        _xdo(xvfb, "type", "--delay", "30", "alphaword\n")
        t0 = time.monotonic_ns()
        _xdo(xvfb, "windowfocus", "--sync", w_vault)
        _wait(lambda: _status(dt_home)["privacy_scope"]["excluded_now"], "the excluded context")
        t_in = time.monotonic_ns()
        typed_vault = "vaultsecretmarmot\n"
        _xdo(xvfb, "type", "--delay", "30", typed_vault)
        t_out = time.monotonic_ns()
        _xdo(xvfb, "windowfocus", "--sync", w_work)
        _wait(lambda: not _status(dt_home)["privacy_scope"]["excluded_now"], "the end of the excluded context")
        t1 = time.monotonic_ns()
        _xdo(xvfb, "type", "--delay", "30", "omegaword\n")
        time.sleep(1.0)  # the settle frame ≈0.5 s after the last key
        _stop(rec)
    finally:
        if rec is not None and rec.poll() is None:
            rec.kill()
        for p in (work, vault):
            p.kill()
            p.wait()

    with _raw(dt_home) as r:
        evs = list(r.iter_events())
        frames = [(e, Image.open(io.BytesIO(r.read_blob(e.blob))).convert("RGB")) for e in evs if isinstance(e, Frame)]
    typed = "".join(e.text or "" for e in evs if isinstance(e, KeyDown))
    assert "alphaword" in typed and "omegaword" in typed  # the allowed typing is there …
    assert "vaultsecretmarmot" not in typed and "marmot" not in typed  # … the vault's is not
    blob = "\n".join(event_to_json(e).decode() for e in evs)
    assert "KeePassXC" not in blob and '"vault"' not in blob and "marmot" not in blob
    gaps = [e for e in evs if isinstance(e, Marker) and e.name == "private_gap"]
    assert [g.reason for g in gaps] == ["deny:password_manager:app"]
    gap = gaps[0]
    # the gap covers at least the time from "the recorder reports the excluded context" to
    # "typing into the vault finished" (t_in..t_out, our clock), and at most the time from before
    # focusing the vault until the recorder had left it (t0..t1)
    assert t_out - t_in <= gap.duration_ns <= t1 - t0, (t_out - t_in, gap.duration_ns, t1 - t0)
    # no frame captured while the vault had focus
    for f, _ in frames:
        assert not (gap.t_ns <= f.captured_t_ns < gap.t_ns + gap.duration_ns), (f.captured_t_ns, gap)
    assert len(frames) >= 3 and any(f.captured_t_ns > gap.t_ns + gap.duration_ns for f, _ in frames)

    def region(img: Image.Image, g: tuple[int, int, int, int], s: float, inset: int = 3) -> Image.Image:
        x, y, w, h = g
        return img.crop((int(x * s) + inset, int(y * s) + inset, int((x + w) * s) - inset, int((y + h) * s) - inset))

    for f, img in frames:
        s = f.scale
        assert img.width == round(1280 * s)
        v = np.asarray(region(img, g_vault, s))
        assert v.size and int(v.max()) <= 12, f"vault region not black in frame {f.seq} (max {v.max()})"
        mean = float(np.asarray(region(img, g_work, s)).mean())
        assert mean > 100, f"allowed window painted in frame {f.seq} (mean {mean:.0f})"


def test_strict_policy_drops_printable_keys_in_unknown_fields(xvfb, dt_home: Path) -> None:  # type: ignore[no-untyped-def]
    """Strict policy; an xterm gives no field information (no AT-SPI Element): the 5 printable
    key presses typed are not stored and counted as ``strict_unknown_field``; their releases
    (which carry no text) are stored, so keys do reach the spool."""
    text = DEFAULT_TOML.read_text("utf-8")
    assert 'strictness = "standard"' in text
    (dt_home / "policy.toml").write_text(text.replace('strictness = "standard"', 'strictness = "strict"'), "utf-8")
    record_consent(Paths(dt_home), load_policy(Paths(dt_home)))
    term = _xterm(xvfb, "XTerm", "strictterm", "40x8+0+0")
    rec = None
    try:
        w = _wid(xvfb, "strictterm")
        _xdo(xvfb, "windowfocus", "--sync", w)
        rec = _start(xvfb, dt_home)

        def focused() -> bool:
            with _raw(dt_home) as r:
                f = [e for e in r.iter_events() if isinstance(e, FocusChange)]
            return bool(f) and f[-1].title == "strictterm"

        _wait(focused, "the strictterm focus")
        _xdo(xvfb, "type", "--delay", "40", "qz7wx")
        _wait(lambda: _status(dt_home)["keys_dropped_secret_field"].get("strict_unknown_field") == 5,
              "5 dropped presses", timeout=10)
        # `review forget` refuses while a recorder runs (it would cut under the batch being
        # written) and deletes nothing
        with _raw(dt_home) as r:
            before = len(list(r.iter_events()))
        p = subprocess.run([*DEMOTRACE, "review", "forget", "--last", "10m", "--home", str(dt_home)],
                           env=dict(os.environ, COLUMNS="300"), capture_output=True, text=True, timeout=60)
        assert p.returncode == 1 and "demotrace stop" in " ".join(p.stderr.split()), p.stderr
        with _raw(dt_home) as r:
            assert len(list(r.iter_events())) >= before > 0
        _stop(rec)
    finally:
        if rec is not None and rec.poll() is None:
            rec.kill()
        term.kill()
        term.wait()
    with _raw(dt_home) as r:
        evs = list(r.iter_events())
    assert not [e for e in evs if isinstance(e, KeyDown) and e.text]
    ups = [e.key for e in evs if isinstance(e, KeyUp)]
    assert [k for k in ups if k in list("qz7wx")] == list("qz7wx")


def test_snapshot_survives_a_focused_window_that_was_destroyed(xvfb) -> None:
    """Focus on a window that is then destroyed must not break the window snapshot (it used to
    raise AttributeError on python-xlib's int parent, and the guard withheld every frame)."""
    from Xlib import X, display as xdisplay

    from demotrace.recorder.guard import visible_windows

    d = xdisplay.Display(xvfb.display)
    try:
        root = d.screen().root
        top = root.create_window(10, 10, 50, 40, 0, X.CopyFromParent)
        child = top.create_window(0, 0, 20, 20, 0, X.CopyFromParent)
        top.map()
        child.map()
        d.sync()
        child.set_input_focus(X.RevertToParent, X.CurrentTime)
        d.sync()
        snap = visible_windows(d)
        assert snap.focused == top.id  # walked up from the child to its top-level
        top.destroy()
        d.sync()
        snap = visible_windows(d)  # focus reverted / gone: must not raise
        assert top.id not in {w.window for w in snap.windows}
    finally:
        d.close()
