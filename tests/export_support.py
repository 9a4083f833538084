"""Test data for the export / replay tests: a real encrypted spool session holding frames made
with Pillow, and hand-built episodes that reference them.

Screen: 1280x800 at (0, 0). Episode A (task marker, success) on full-screen frames; episode B
(failure) on a half-size frame of a left monitor at (-1280, 0) so coordinate conversions are
not the identity. Every expected value in the tests is computed by hand from the numbers here.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from demotrace.schema import (
    Action,
    Context,
    Episode,
    Frame,
    Marker,
    Observation,
    Point,
    Rect,
    SessionManifest,
    Step,
    Target,
)
from demotrace.spool import DataKey, SessionReader, Spool

SID = "20261130T010000Z-a1b2c3"
W, H = 1280, 800
MS = 1_000_000


def frame_image(i: int, size: tuple[int, int] = (W, H)) -> Image.Image:
    """A distinct RGB test picture: a solid colour per index plus a diagonal and a box."""
    im = Image.new("RGB", size, ((40 * i) % 256, (90 + 17 * i) % 256, (200 - 13 * i) % 256))
    d = ImageDraw.Draw(im)
    d.line([(0, 0), (size[0] - 1, size[1] - 1)], fill=(255, 255, 255), width=3)
    d.rectangle([10 + 5 * i, 10, 60 + 5 * i, 40], fill=(0, 0, 0))
    return im


def encode(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "webp":
        im.save(buf, format="WEBP", lossless=True)
    else:
        im.save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Fixture:
    """The spool session, its episodes, and the original images per blob id."""

    spool: Spool
    reader: SessionReader
    episodes: list[Episode]
    images: dict[str, Image.Image]
    blobs: dict[str, bytes]


def _obs(blob: str, fmt: str, t_action: int, captured: int, bounds: Rect = Rect(0, 0, W, H),
         size: tuple[int, int] = (W, H)) -> Observation:
    return Observation(blob=blob, format=fmt, bounds=bounds, width=size[0], height=size[1],
                       captured_t_ns=captured, gap_ns=t_action - captured)


def make_fixture(tmp: Path) -> Fixture:
    """Write a spool session with 9 frames and return two episodes referencing them."""
    key = DataKey.create(tmp / "key")
    spool = Spool(tmp / "spool", key)
    w = spool.create(SessionManifest(session_id=SID, started_utc="2026-11-30T01:00:00Z",
                                     timezone="UTC", platform="test", backend="test",
                                     recorder_version="0"))
    images: dict[str, Image.Image] = {}
    blobs: dict[str, bytes] = {}
    ids: list[tuple[str, str]] = []
    events = [Marker(seq=0, t_ns=0, name="session_start")]
    for i in range(9):
        fmt = "webp" if i % 2 == 0 else "png"
        size = (640, 400) if i == 8 else (W, H)
        im = frame_image(i, size)
        data = encode(im, fmt)
        bid = key.content_id(data)
        w.put_blob(bid, data, fmt)
        images[bid], blobs[bid] = im, data
        ids.append((bid, fmt))
        bounds = Rect(-1280, 0, W, H) if i == 8 else Rect(0, 0, W, H)
        events.append(Frame(seq=len(events), t_ns=i * 1000 * MS, blob=bid, monitor=-1, bounds=bounds,
                            width=size[0], height=size[1], scale=size[0] / W,
                            captured_t_ns=i * 1000 * MS, reason="test", format=fmt))
    w.append(events)
    w.close(duration_ns=20_000 * MS)
    reader = spool.open(SID)

    ctx = Context(window_id=42, app_id="gedit", title="notes.txt – gedit", url=None,
                  window_bounds=Rect(0, 0, W, H))
    ok = Target(role="push button", name="OK", bounds=Rect(600, 380, 80, 40), source="atspi")

    def t(i: int) -> int:  # action i starts 100 ms after frame i
        return i * 1000 * MS + 100 * MS

    def obs(i: int) -> Observation:
        bid, fmt = ids[i]
        return _obs(bid, fmt, t(i), i * 1000 * MS)

    a_steps = [
        Step(index=0, observation=obs(0), action=Action(
            type="click", t_start_ns=t(0), t_end_ns=t(0) + 80 * MS, x=640, y=400, button="left",
            count=1, source_seqs=(20, 21), context=ctx, target=ok)),
        Step(index=1, observation=obs(1), action=Action(
            type="type", t_start_ns=t(1), t_end_ns=t(1) + 900 * MS, text="héllo wörld",
            keys=tuple("héllo wörld"), context=ctx)),
        Step(index=2, observation=obs(2), action=Action(
            type="hotkey", t_start_ns=t(2), t_end_ns=t(2) + 50 * MS, keys=("ctrl", "shift", "alt", "t"))),
        Step(index=3, observation=obs(3), action=Action(
            type="scroll", t_start_ns=t(3), t_end_ns=t(3) + 300 * MS, x=100, y=200, dx=0, dy=-3, unit="tick")),
        Step(index=4, observation=obs(4), action=Action(
            type="scroll", t_start_ns=t(4), t_end_ns=t(4) + 300 * MS, x=320, y=600, dx=0, dy=-250, unit="pixel")),
        Step(index=5, observation=obs(5), action=Action(
            type="drag", t_start_ns=t(5), t_end_ns=t(5) + 500 * MS, x=100, y=100, x2=300, y2=200,
            button="left", path=(Point(100, 100, t(5)), Point(200, 150, t(5) + 250 * MS),
                                 Point(300, 200, t(5) + 500 * MS)))),
        Step(index=6, observation=None, flags=("no_observation",), action=Action(
            type="key", t_start_ns=t(6), t_end_ns=t(6) + 40 * MS, keys=("Enter",))),
        Step(index=7, observation=obs(7), action=Action(
            type="click", t_start_ns=t(7), t_end_ns=t(7) + 200 * MS, x=320, y=200, button="left", count=2)),
        Step(index=8, observation=obs(7), action=Action(
            type="done", t_start_ns=t(7) + 500 * MS, t_end_ns=t(7) + 500 * MS)),
    ]
    # step 8 reuses frame 7 but its gap is from its own start
    a_steps[8] = Step(index=8, observation=_obs(ids[7][0], ids[7][1], t(7) + 500 * MS, 7 * 1000 * MS),
                      action=a_steps[8].action)
    ep_a = Episode(episode_id=f"{SID}-0", session_id=SID, index=0, instruction="Say hello in gedit",
                   status="success", segmented_by="task_marker", t_start_ns=0, t_end_ns=t(7) + 500 * MS,
                   steps=a_steps, screen=Rect(0, 0, W, H))
    bid8, fmt8 = ids[8]
    left = Rect(-1280, 0, W, H)
    b_steps = [
        Step(index=0, observation=_obs(bid8, fmt8, t(8), 8 * 1000 * MS, bounds=left, size=(640, 400)),
             action=Action(type="click", t_start_ns=t(8), t_end_ns=t(8) + 60 * MS, x=-640, y=200,
                           button="right", count=1)),
        Step(index=1, observation=_obs(bid8, fmt8, t(8) + 400 * MS, 8 * 1000 * MS, bounds=left, size=(640, 400)),
             action=Action(type="fail", t_start_ns=t(8) + 400 * MS, t_end_ns=t(8) + 400 * MS)),
    ]
    ep_b = Episode(episode_id=f"{SID}-1", session_id=SID, index=1, instruction=None, status="failure",
                   segmented_by="idle_gap", t_start_ns=t(8), t_end_ns=t(8) + 400 * MS, steps=b_steps,
                   screen=Rect(-1280, 0, 2560, 800))
    return Fixture(spool=spool, reader=reader, episodes=[ep_a, ep_b], images=images, blobs=blobs)


def build_dataset(fx: Fixture, out: Path, **cfg: object) -> Path:
    """Write the fixture's episodes as a canonical dataset in ``out``."""
    from demotrace.export import CanonicalConfig, write_dataset

    write_dataset(out, [(ep, fx.reader.read_blob) for ep in fx.episodes], CanonicalConfig(**cfg))  # type: ignore[arg-type]
    return out
