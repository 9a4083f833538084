"""Benchmark: canonical dataset build and exports — steps per second and peak memory.

One command::

    .venv/bin/python bench/dataset_throughput.py [--steps 100,400] [--frames 24]

Input: one encrypted spool session holding ``--frames`` distinct 1280x800 screenshots (random
windows, text and noise, stored as lossy WebP quality 60 like the recorder's default) and one
synthetic episode of N steps cycling through click / type / scroll / drag / hotkey actions, each
with an observation. The reduction is not included (see bench/reduce_throughput.py).

Each measurement runs in a fresh subprocess (one core), so ``peak_rss_mb`` (``ru_maxrss``) is
that phase's own peak: writing the canonical dataset from the spool (``build``), and the
``agentnet`` / ``webdataset`` (both re-encode every frame as PNG), ``agentnet
--image-format source`` (recorded bytes copied) and ``sft-chat --coords resized`` (PNG at the
smart_resize size) exports. Memory should not grow with N (streaming);
N is one episode, so this also covers long episodes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

SID = "20261130T030000Z-bench0"


def _frames(n: int) -> list[bytes]:
    from PIL import Image, ImageDraw

    rnd = random.Random(7)
    out = []
    for i in range(n):
        im = Image.new("RGB", (1280, 800), (30, 30, 40))
        d = ImageDraw.Draw(im)
        for _ in range(12):
            x, y = rnd.randrange(0, 1100), rnd.randrange(0, 650)
            d.rectangle([x, y, x + rnd.randrange(80, 500), y + rnd.randrange(40, 300)],
                        fill=tuple(rnd.randrange(256) for _ in range(3)), outline=(255, 255, 255))
            for k in range(8):
                d.text((x + 6, y + 6 + 12 * k), f"line {k} of window {i} " + "lorem ipsum " * 3, fill=(0, 0, 0))
        buf = io.BytesIO()
        im.save(buf, format="WEBP", quality=60)
        out.append(buf.getvalue())
    return out


def setup(tmp: Path, n_frames: int) -> None:
    from demotrace.schema import SessionManifest
    from demotrace.spool import DataKey, Spool

    key = DataKey.create(tmp / "key")
    w = Spool(tmp / "spool", key).create(SessionManifest(
        session_id=SID, started_utc="2026-11-30T03:00:00Z", timezone="UTC", platform="bench",
        backend="bench", recorder_version="0"))
    ids = []
    for data in _frames(n_frames):
        bid = key.content_id(data)
        w.put_blob(bid, data, "webp")
        ids.append(bid)
    w.close()
    (tmp / "blobs.json").write_text(json.dumps(ids))


def episode(tmp: Path, n: int):  # type: ignore[no-untyped-def]
    from demotrace.schema import Action, Episode, Observation, Point, Rect, Step

    ids = json.loads((tmp / "blobs.json").read_text())
    ms = 1_000_000
    steps = []
    for i in range(n):
        t = i * 1000 * ms
        kind = i % 5
        if i == n - 1:
            a = Action(type="done", t_start_ns=t, t_end_ns=t)
        elif kind == 0:
            a = Action(type="click", t_start_ns=t, t_end_ns=t + 80 * ms, x=100 + i % 1000, y=200, button="left", count=1)
        elif kind == 1:
            a = Action(type="type", t_start_ns=t, t_end_ns=t + 900 * ms, text=f"typed text {i}", keys=tuple("typed"))
        elif kind == 2:
            a = Action(type="scroll", t_start_ns=t, t_end_ns=t + 300 * ms, x=640, y=400, dx=0, dy=-3, unit="tick")
        elif kind == 3:
            a = Action(type="drag", t_start_ns=t, t_end_ns=t + 500 * ms, x=10, y=10, x2=300, y2=200, button="left",
                       path=tuple(Point(10 + k, 10 + k, t + k * ms) for k in range(50)))
        else:
            a = Action(type="hotkey", t_start_ns=t, t_end_ns=t + 50 * ms, keys=("ctrl", "s"))
        obs = Observation(blob=ids[i % len(ids)], format="webp", bounds=Rect(0, 0, 1280, 800), width=1280,
                          height=800, captured_t_ns=max(0, t - 100 * ms), gap_ns=min(t, 100 * ms))
        steps.append(Step(index=i, action=a, observation=obs))
    return Episode(episode_id=f"{SID}-0", session_id=SID, index=0, instruction="bench", status="success",
                   segmented_by="task_marker", t_start_ns=0, t_end_ns=n * 1000 * ms, steps=steps,
                   screen=Rect(0, 0, 1280, 800))


def phase(tmp: Path, what: str, n: int) -> dict[str, float]:
    """Run one phase in this process; returns seconds, steps/s and peak RSS."""
    from demotrace.export import CanonicalConfig, CanonicalDataset, get_exporter, write_dataset
    from demotrace.spool import DataKey, Spool

    ds = tmp / f"ds-{n}"
    t0 = time.perf_counter()
    if what == "build":
        reader = Spool(tmp / "spool", DataKey.load(tmp / "key")).open(SID)
        ep = episode(tmp, n)
        t0 = time.perf_counter()
        write_dataset(ds, [(ep, reader.read_blob)], CanonicalConfig(overwrite=True))
    else:
        fmt, settings = {"agentnet": ("agentnet", {}), "webdataset": ("webdataset", {}),
                         "agentnet-source": ("agentnet", {"image_format": "source"}),
                         "sft-resized": ("sft-chat", {"coords": "resized", "max_pixels": 1280 * 28 * 28})}[what]
        get_exporter(fmt).run(CanonicalDataset(ds), tmp / f"out-{what}-{n}", overwrite=True, **settings)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": dt, "steps_per_s": n / dt, "peak_rss_mb": rss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default="100,400", help="comma-separated episode lengths")
    ap.add_argument("--frames", type=int, default=24,
                    help="distinct screenshots, cycled (more than the 16-entry PNG cache: no hits)")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(phase(Path(args.tmp), args.phase, int(args.steps))))
        return
    sizes = [int(s) for s in args.steps.split(",")]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        setup(tmp, args.frames)
        frame_kb = sum(p.stat().st_size for p in (tmp / "spool").rglob("*") if p.parent.name != SID and p.is_file())
        print(f"# {platform.platform()} | {platform.processor() or platform.machine()} | "
              f"{os.cpu_count()} cores | Python {platform.python_version()}")
        print(f"# {args.frames} distinct 1280x800 WebP q60 frames, {frame_kb / args.frames / 1024:.0f} KB each (encrypted)")
        print("| phase | steps | seconds | steps/s | peak RSS MB |")
        print("|---|---:|---:|---:|---:|")
        for what in ("build", "agentnet", "agentnet-source", "webdataset", "sft-resized"):
            for n in sizes:
                out = subprocess.run([sys.executable, __file__, "--phase", what, "--steps", str(n), "--tmp", str(tmp)],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout)
                print(f"| {what} | {n} | {r['seconds']:.2f} | {r['steps_per_s']:.0f} | {r['peak_rss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
