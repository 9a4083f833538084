"""The grab/encode fast path: incremental downscale of damaged regions (recorder/frames.py
``downscale_patch``), the ring's damage log (recorder/ring.py) and, on a real Xvfb, the chain
X11 region grabs → ring → patched downscale against a full downscale of a full grab."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from demotrace.capture._base import RawFrame
from demotrace.capture.x11 import X11Backend
from demotrace.recorder import FrameRing, RecorderSettings
from demotrace.recorder.frames import downscale_patch, frame_image
from demotrace.schema.events import Rect
from helpers_x11 import wait_for, xdotool, xterm

HALF = RecorderSettings(frame_scale=0.5)


def _frame(px: bytearray, w: int, h: int, t: int = 1, damage: Any = None, ox: int = 0, oy: int = 0) -> RawFrame:
    return RawFrame(pixels=bytes(px), width=w, height=h, bounds=Rect(ox, oy, w, h), monitor=-1, captured_ns=t,
                    damage=damage)


def _fill(px: bytearray, w: int, x: int, y: int, rw: int, rh: int, rng: random.Random) -> None:
    for row in range(y, y + rh):
        px[(row * w + x) * 4:(row * w + x + rw) * 4] = bytes(rng.randrange(256) for _ in range(rw * 4))


@pytest.mark.parametrize(("w", "h", "ox", "oy"), [(64, 40, 0, 0), (101, 57, 0, 0), (64, 40, 1920, 0)])
def test_patched_downscale_equals_full_downscale(w: int, h: int, ox: int, oy: int) -> None:
    """Odd-aligned rectangles (x=3, width 5 …), one on the odd right / bottom edge, a desktop
    origin that is not 0: the patched image equals the full reduce of the new frame."""
    rng = random.Random(7)
    px = bytearray(rng.randrange(256) for _ in range(w * h * 4))
    base = frame_image(_frame(px, w, h, ox=ox, oy=oy), HALF)
    changes = [(3, 5, 5, 3), (w - 3, h - 2, 3, 2), (10, 20, 1, 1)]
    for x, y, rw, rh in changes:
        _fill(px, w, x, y, rw, rh, rng)
    new = _frame(px, w, h, ox=ox, oy=oy)
    rects = tuple(Rect(ox + x, oy + y, rw, rh) for x, y, rw, rh in changes)
    got = downscale_patch(base, new, rects, 2)
    assert got is not None
    assert got.tobytes() == frame_image(new, HALF).tobytes()
    if w % 2 == 0 and h % 2 == 0:  # independently: mean of each 2x2 block, rounded half up, BGRA -> RGB
        a = np.frombuffer(bytes(px), np.uint8).reshape(h // 2, 2, w // 2, 2, 4).astype(np.uint32)
        mean = (a.sum(axis=(1, 3)) + 2) // 4
        assert got.tobytes() == mean[:, :, [2, 1, 0]].astype(np.uint8).tobytes()


def test_patched_downscale_refuses_large_changes_and_other_sizes() -> None:
    px = bytearray(64 * 40 * 4)
    base = frame_image(_frame(px, 64, 40), HALF)
    assert downscale_patch(base, _frame(px, 64, 40), (Rect(0, 0, 64, 30),), 2) is None  # 75 % of the frame
    assert downscale_patch(base, _frame(bytearray(66 * 40 * 4), 66, 40), (Rect(0, 0, 2, 2),), 2) is None


def test_ring_damage_log_unions_changes_between_grabs() -> None:
    ring = FrameRing(max_age_ns=10**12, max_frames=3)
    r1, r2 = Rect(0, 0, 2, 2), Rect(5, 5, 1, 1)
    px = bytes(16)
    s1 = ring.push(RawFrame(px, 2, 2, Rect(0, 0, 2, 2), -1, 1, None))
    s2 = ring.push(RawFrame(px, 2, 2, Rect(0, 0, 2, 2), -1, 2, (r1,)))
    s3 = ring.push(RawFrame(px, 2, 2, Rect(0, 0, 2, 2), -1, 3, ()))
    s4 = ring.push(RawFrame(px, 2, 2, Rect(0, 0, 2, 2), -1, 4, (r2,)))
    assert (s1, s2, s3, s4) == (1, 2, 3, 4)
    assert ring.changes_between(2, 4) == (r2,)
    assert ring.changes_between(4, 1) == (r1, r2)  # either order
    assert ring.changes_between(0, 2) is None  # grab 1's damage is unknown
    assert ring.push(RawFrame(px, 2, 2, Rect(0, 0, 2, 2), -1, 3, ())) is None  # out of order
    ring.clear()
    assert ring.changes_between(3, 4) is None


@pytest.mark.x11
def test_region_grabs_through_the_ring_patch_to_a_full_downscale(xvfb: Any) -> None:
    """Real chain: X11 DAMAGE region grabs of an xterm echoing typed words go through the ring;
    the base downscale patched with the ring's changes equals the full downscale of a full grab
    (no DAMAGE) of the final screen."""
    env = xvfb.env
    with xterm(env, "Patch term", "30x6+41+43") as term:
        backend = X11Backend(xvfb.display)
        plain = X11Backend(xvfb.display, use_damage=False)
        ring = FrameRing(max_age_ns=10**12, max_frames=64)
        try:
            def stable() -> Any:
                a = plain.grab().pixels
                f = backend.grab()
                seq = ring.push(f)
                return (f, seq) if plain.grab().pixels == a == f.pixels else None

            first, s0 = wait_for(stable, timeout=10, what="xterm to finish drawing")
            base = frame_image(first, HALF)
            xdotool(env, "mousemove", "60", "60")  # keyboard focus follows the pointer (no WM): no focus change
            for word in ("echo", "foxtrot", "golf"):
                xdotool(env, "type", "--delay", "15", word + " ")
                ring.push(backend.grab())  # grabs while the terminal may still be drawing
            final = plain.grab().pixels
            last, s1 = wait_for(lambda: (r := stable()) and r[0].pixels == final and r, timeout=10,
                                what="a damage grab equal to the final full grab")
            changed = ring.changes_between(s0, s1)
            assert changed, "the typed words left no damage rectangles"
            got = downscale_patch(base, last, changed, 2)
            assert got is not None
            full = frame_image(RawFrame(final, xvfb.width, xvfb.height, Rect(0, 0, xvfb.width, xvfb.height), -1, 0), HALF)
            assert got.tobytes() == full.tobytes()
            assert got.tobytes() != base.tobytes()  # the words are in it
        finally:
            backend.stop()
            plain.stop()
