"""Stored frames as JPEG (the recorder's default since 2026-11-30, bench/frame_codecs.py): settings
and their errors, the encoding itself, every consumer of ``Frame.format`` reading "jpeg", sealing
JPEG frames (redaction still finds planted values at 10 px and above), and the window tracker's
cached window-manager check (bench/recorder_overhead.py: the tracker re-read it at every wake-up)."""

from __future__ import annotations

import io
import shutil
import subprocess
import time
from pathlib import Path

import msgspec
import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from demotrace.errors import ConfigError
from demotrace.export.base import image_file, to_png
from demotrace.recorder.frames import encode_image
from demotrace.recorder.settings import RecorderSettings
from demotrace.replay import _MIME
from demotrace.schema import Frame
from demotrace.server.portal import sniff

#: four flat quadrants of a 960x540 frame (the default stored size of a 1920x1080 screen)
QUADS = {(0, 0): (200, 30, 90), (480, 0): (20, 160, 240), (0, 270): (250, 250, 250), (480, 270): (12, 12, 12)}


def quadrants() -> Image.Image:
    img = Image.new("RGB", (960, 540))
    for (x, y), rgb in QUADS.items():
        img.paste(rgb, (x, y, x + 480, y + 270))
    return img


def test_settings_default_is_jpeg_q87_420_and_bad_values_are_named() -> None:
    s = RecorderSettings()
    assert (s.frame_format, s.jpeg_quality, s.jpeg_subsampling) == ("jpeg", 87, "4:2:0")
    for kw, word in (({"frame_format": "gif"}, "'gif'"), ({"jpeg_quality": 0}, "jpeg_quality"),
                     ({"jpeg_quality": 101}, "jpeg_quality"), ({"jpeg_subsampling": "4:1:1"}, "'4:1:1'")):
        with pytest.raises(ConfigError, match=word):
            RecorderSettings(**kw)  # type: ignore[arg-type]
    RecorderSettings(frame_format="webp")  # the earlier formats stay available
    RecorderSettings(frame_format="png")


def test_jpeg_encoding_keeps_flat_colours_and_is_deterministic() -> None:
    data = encode_image(quadrants(), RecorderSettings())
    assert data[:3] == b"\xff\xd8\xff"  # JPEG SOI + marker
    assert encode_image(quadrants(), RecorderSettings()) == data  # the content id relies on it
    im = Image.open(io.BytesIO(data))
    assert im.format == "JPEG" and im.size == (960, 540) and im.mode == "RGB"
    assert JpegImagePlugin.get_sampling(im) == 2  # 4:2:0, as WebP
    a = np.asarray(im.convert("RGB")).astype(int)
    for (x, y), rgb in QUADS.items():  # block interiors of flat areas: within the codec's rounding
        centre = a[y + 100:y + 170, x + 200:x + 280]
        assert np.abs(centre - np.array(rgb)).max() <= 3, ((x, y), centre.mean(axis=(0, 1)))
    # 4:4:4 when asked: chroma at full resolution
    full = encode_image(quadrants(), RecorderSettings(jpeg_subsampling="4:4:4"))
    assert JpegImagePlugin.get_sampling(Image.open(io.BytesIO(full))) == 0
    # the earlier formats still come out as themselves
    assert encode_image(quadrants(), RecorderSettings(frame_format="webp"))[8:12] == b"WEBP"
    png = encode_image(quadrants(), RecorderSettings(frame_format="png"))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), np.asarray(quadrants()))


def test_content_id_is_the_keyed_hash_of_the_stored_bytes_and_repeats_are_stored_once(tmp_path: Path) -> None:
    """Three frames: A, then B (other pixels), then A's pixels again in a new buffer (a screen
    that changed back): two blobs, the third frame names A's blob, and every blob id is the
    keyed BLAKE2b of the bytes stored under it (computed here with hashlib from the key)."""
    import hashlib

    from demotrace.capture._base import RawFrame
    from demotrace.paths import Paths
    from demotrace.recorder.frames import FramePipeline
    from demotrace.schema.events import Rect
    from demotrace.spool import DataKey, Spool
    from privacy_corpus import manifest

    paths = Paths(tmp_path).ensure()
    spool = Spool(paths.spool, DataKey.create(paths.key_file))
    w = spool.create(manifest("s1", ended=False))
    out: list[dict[str, object]] = []
    pipe = FramePipeline(None, w, RecorderSettings(), lambda cls, t, f: out.append(f), 0)  # type: ignore[arg-type]

    def raw(img: Image.Image) -> RawFrame:
        px = img.convert("RGBA").tobytes("raw", "BGRA")
        return RawFrame(pixels=bytes(px), width=img.width, height=img.height, bounds=Rect(0, 0, img.width, img.height),
                        monitor=-1, captured_ns=1)

    a, b = quadrants().resize((1920, 1080)), Image.new("RGB", (1920, 1080), (90, 90, 200))
    for img in (a, b, a):
        pipe._store(raw(img), "key")
    assert [f["format"] for f in out] == ["jpeg"] * 3 and (out[0]["width"], out[0]["height"]) == (960, 540)
    assert out[2]["blob"] == out[0]["blob"] != out[1]["blob"]
    assert (pipe.stats.encoded, pipe.stats.deduplicated, pipe.stats.encoded_repeats) == (2, 1, 1)
    w.close(duration_ns=1)
    id_key = DataKey.load(paths.key_file)
    with spool.open("s1") as r:
        for f in out[:2]:
            data = r.read_blob(str(f["blob"]))
            assert data == encode_image(a.reduce(2) if f is out[0] else b.reduce(2), RecorderSettings())
            assert id_key.content_id(data) == f["blob"]
            assert hashlib.blake2b(data, digest_size=32, key=id_key._id_key).hexdigest() == f["blob"]


def test_consumers_read_jpeg_frames() -> None:
    data = encode_image(quadrants(), RecorderSettings())
    row = {"observation": {"format": "jpeg"}, "image": {"bytes": data}}
    # export "source": the recorded bytes under a .jpeg name; "png": a decoded, lossless PNG
    assert image_file(row, "source", "ep-0001") == ("ep-0001.jpeg", data)
    name, png = image_file(row, "png", "ep-0001")
    assert name == "ep-0001.png" and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")),
                          np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    half = Image.open(io.BytesIO(to_png(data, size=(480, 270))))
    assert half.size == (480, 270)
    assert _MIME["jpeg"] == "image/jpeg"  # replay pages' data URIs
    assert sniff(data) == "image/jpeg"  # the portal's media type
    # the schema takes "jpeg" and still reads an older event without the field as WebP
    f = Frame(seq=0, t_ns=0, blob="b" * 64, monitor=-1, bounds=(0, 0, 1920, 1080), width=960, height=540,  # type: ignore[arg-type]
              scale=0.5, captured_t_ns=0, reason="key", format="jpeg")
    assert f.format == "jpeg"
    old = msgspec.json.encode(f).replace(b',"format":"jpeg"', b"")
    assert b"jpeg" not in old and msgspec.json.decode(old, type=Frame).format == "webp"


def test_sealing_jpeg_frames_still_redacts_planted_values(tmp_path: Path) -> None:
    """The planted-values session of test_seal.py with its frames encoded as the recorder
    encodes them now (JPEG q87 4:2:0): sealed frames are PNG and hold no planted value at 10 px
    and above (OCR at 4x, independent of the redaction's own OCR pass)."""
    from privacy_corpus import FONT_SIZES, all_probes, planted_session

    from demotrace.paths import Paths
    from demotrace.privacy.bundle import open_bundle
    from demotrace.privacy.policy import default_policy
    from demotrace.privacy.redact_image import ocr_words
    from demotrace.privacy.seal import seal_session
    from demotrace.spool import DataKey, Spool

    paths = Paths(tmp_path).ensure()
    spool = Spool(paths.spool, DataKey.create(paths.key_file))
    b = planted_session(spool.key)
    settings = RecorderSettings()
    for i, ev in enumerate(b.events):
        if isinstance(ev, Frame):
            img = Image.open(io.BytesIO(b.blobs.pop(ev.blob))).convert("RGB")
            data = encode_image(img, settings)
            bid = spool.key.content_id(img.tobytes())
            b.blobs[bid] = data
            b.events[i] = msgspec.structs.replace(ev, blob=bid, format="jpeg")
    b.write(spool, "s1")
    with spool.open("s1") as r:  # the raw frames are JPEG
        raw = [e for e in r.iter_events() if isinstance(e, Frame)]
        assert [e.format for e in raw] == ["jpeg"] * len(FONT_SIZES)
        assert all(r.read_blob(e.blob)[:3] == b"\xff\xd8\xff" for e in raw)
    rep = seal_session(paths, spool, "s1", default_policy())
    assert rep.frames_out == len(FONT_SIZES)
    probes = [p for ps in all_probes().values() for p in ps]
    with open_bundle(paths, "s1") as bundle:
        frames = [e for e in bundle.iter_events() if isinstance(e, Frame)]
        for px, ev in zip(FONT_SIZES, frames):
            data = bundle.read_blob(ev.blob)
            assert ev.format == "png" and data[:8] == b"\x89PNG\r\n\x1a\n"
            if px < 10:
                continue
            text = " ".join(w.text for w in ocr_words(Image.open(io.BytesIO(data)), upscale=4))
            leaks = [p for p in probes if p in text or p.replace(" ", "") in text.replace(" ", "")]
            assert leaks == [], (px, leaks)


def test_window_tracker_reads_the_wm_check_only_when_it_may_have_changed() -> None:
    """Without a window manager the tracker polls focus every ``poll_s``, and a watched
    window's title changes wake it too; neither re-reads the root's window-manager properties
    (before: two round trips at every wake-up). A window manager starting (openbox sets
    ``_NET_SUPPORTING_WM_CHECK`` on the root) is noticed from its PropertyNotify alone: the
    periodic re-check is 60 s away in this test."""
    from conftest import start_xvfb
    from helpers_x11 import wait_for
    from Xlib import X
    from Xlib import display as xdisplay

    from demotrace.capture._xorg_window import WindowTracker

    exe = shutil.which("openbox")
    assert exe is not None, "openbox not installed (scripts/bootstrap.sh installs it)"
    server = start_xvfb(800, 600)
    wm = None
    dpy = xdisplay.Display(server.display)
    titles: list[str | None] = []
    tracker = None
    try:
        win = dpy.screen().root.create_window(10, 10, 300, 200, 0, dpy.screen().root_depth)
        win.set_wm_class("wmcheck", "WmCheck")
        win.set_wm_name("title 0")
        win.map()
        dpy.sync()
        win.set_input_focus(X.RevertToParent, X.CurrentTime)
        dpy.sync()
        tracker = WindowTracker(server.display, lambda info, t_ns: titles.append(info.title), lambda *a: None,
                                lambda: None, poll_s=0.05, screen_poll_s=60.0)
        tracker.start()
        wait_for(lambda: titles[-1:] == ["title 0"], 10, "the tracker to report the focused window")
        assert tracker._wm is False
        reads0 = tracker.wm_reads
        t0 = time.monotonic()
        for i in range(1, 21):
            win.set_wm_name(f"title {i}")
            dpy.sync()
            time.sleep(0.02)
        wait_for(lambda: titles[-1:] == ["title 20"], 10, "the last title change")
        time.sleep(max(0.0, 0.5 - (time.monotonic() - t0)))  # >= 10 focus polls at 0.05 s
        assert tracker.wm_reads == reads0, (tracker.wm_reads, reads0)
        wm = subprocess.Popen([exe, "--sm-disable"], env=server.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # openbox sets _NET_SUPPORTING_WM_CHECK at once: re-read on that event (no active window yet: still no
        # EWMH focus, as before the cache)
        wait_for(lambda: tracker.wm_reads > reads0, 15, "the tracker to re-read on openbox's root property")  # type: ignore[union-attr]
        # activating the window through openbox sets _NET_ACTIVE_WINDOW: now EWMH focus, the window named again
        subprocess.run(["xdotool", "windowactivate", str(win.id)], env=server.env, timeout=10, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: tracker._wm is True, 15, "the tracker to use openbox's _NET_ACTIVE_WINDOW")  # type: ignore[union-attr]
        wait_for(lambda: titles[-1:] == ["title 20"], 10, "the activated window reported again")
        assert 2 <= tracker.wm_reads - reads0 <= 20  # re-read on the root's property events only
    finally:
        if tracker is not None:
            tracker.stop()
        dpy.close()
        if wm is not None:
            wm.terminate()
            wm.wait(5)
        server.proc.terminate()
        server.proc.wait(5)
