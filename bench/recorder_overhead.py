"""Recorder overhead benchmark (DESIGN.md §9, issue 2).

One command: ``.venv/bin/python bench/recorder_overhead.py [--seconds 60] [--no-write]``.

It starts its own Xvfb at 1920x1080 (+extension RECORD) with an xterm running ``cat``,
runs ``demotrace record`` (with the REC indicator) as a subprocess in a fresh home, and drives
input through XTest (python-xlib) from this process:

- **steady phase** (``--seconds``, default 60): 35 input events/s in a repeating 4-second
  pattern — a pointer path of moves (≈24/s), two clicks, two typed words with a space / Enter,
  a wheel burst of 3 ticks — i.e. about 1.25 discrete actions/s, each wanting one pre-action
  frame (plus settle frames after typing and scrolling);
- **burst phase**: 5 bursts of 1 s at 400 events/s (moves and key presses) with 1 s gaps.

It reports the recorder's CPU (% of one core, user+system from ``/proc`` via psutil, over the
steady phase only), peak RSS (``VmHWM``), bytes on disk per active hour (spool growth over the
steady phase, extrapolated), events lost per phase (driven vs stored, per kind), the recorder's
own p50 / p99 delay from event capture to the commit of its batch, and frame counts. Results go
to the terminal and to this benchmark's section of ``docs/benchmarks.md`` with machine details.

Budget (DESIGN.md §9): ≤ 3 % CPU at 35 events/s, ≤ 200 MB RSS, 0 lost at 400 events/s,
≤ 50 MB per active hour.

Before / after in one run: unless ``--no-before``, a second recorder (its own home, no REC
indicator) records the same display at the same time, so both see the same input and the same
machine load; docs/benchmarks.md gets both columns and their ratio. The "before" recorder is
described by up to three things, combined:

- ``--before-rev REV``: the code of git revision ``REV`` (``git archive REV src`` unpacked into a
  temporary folder, put first on the before recorder's ``PYTHONPATH``; same venv, same libraries);
- ``--before-args "..."``: extra ``demotrace record`` arguments (e.g. ``--frame-format webp``, to
  isolate one lever in today's code);
- ``--before-env K=V``: environment variables (e.g. ``DEMOTRACE_GUARD_WINDOW_CACHE=0``, the
  privacy guard's per-frame window snapshot measured by the previous round).

Default: ``--before-rev`` :data:`BEFORE_REV` (the code before the JPEG frames and the window
tracker's cached window-manager check).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from importlib import metadata
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from demotrace.paths import Paths

WIDTH, HEIGHT = 1920, 1080
SECTION_START = "<!-- bench:recorder_overhead:start -->"
SECTION_END = "<!-- bench:recorder_overhead:end -->"
#: bench/frame_codecs.py's table inside this section (kept when this section is rewritten)
CODECS_START, CODECS_END = "<!-- bench:frame_codecs:start -->", "<!-- bench:frame_codecs:end -->"
#: Other recorder settings measured with ``--compare``.
COMPARE = ["--frame-scale 1", "--frame-scale 1 --grab-hz 2", "--grab-hz 2"]
BUDGET = {"cpu_pct": 3.0, "rss_mb": 200.0, "lost_burst": 0, "mb_per_hour": 50.0}


def start_xvfb() -> tuple[subprocess.Popen[bytes], str]:
    """Xvfb at 1920x1080x24 with RECORD on a display it picks."""
    exe = shutil.which("Xvfb")
    if exe is None:
        sys.exit("Xvfb not found; run scripts/bootstrap.sh")
    r, w = os.pipe()
    proc = subprocess.Popen([exe, "-displayfd", str(w), "-screen", "0", f"{WIDTH}x{HEIGHT}x24", "+extension", "RECORD",
                             "-nolisten", "tcp", "-noreset"], pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        num = f.readline().decode().strip()
    if not num:
        proc.kill()
        sys.exit("Xvfb did not start")
    return proc, ":" + num


class Driver:
    """XTest input with per-kind counts of the events the recorder should store."""

    def __init__(self, display: str) -> None:
        from Xlib import XK, X
        from Xlib import display as xdisplay
        from Xlib.ext import xtest

        self.X, self.XK, self.xtest = X, XK, xtest
        self.d = xdisplay.Display(display)
        self.expected: Counter[str] = Counter()
        self.x, self.y = 400, 300
        self._kc: dict[str, int] = {}
        self.sent_at: list[float] = []

    def keycode(self, name: str) -> int:
        if name not in self._kc:
            self._kc[name] = self.d.keysym_to_keycode(self.XK.string_to_keysym(name))
        return self._kc[name]

    def _sync(self) -> None:
        self.d.sync()

    def move(self, x: int, y: int) -> None:
        if (x, y) == (self.x, self.y):
            x += 1
        self.x, self.y = x, y
        self.xtest.fake_input(self.d, self.X.MotionNotify, x=x, y=y)
        self._sync()
        self.expected["pointer_move"] += 1

    def button(self, b: int, press: bool) -> None:
        self.xtest.fake_input(self.d, self.X.ButtonPress if press else self.X.ButtonRelease, b)
        self._sync()
        if b in (4, 5):
            if press:
                self.expected["wheel"] += 1  # a wheel tick is stored once (on the press)
        else:
            self.expected["pointer_down" if press else "pointer_up"] += 1

    def key(self, name: str, press: bool) -> None:
        self.xtest.fake_input(self.d, self.X.KeyPress if press else self.X.KeyRelease, self.keycode(name))
        self._sync()
        self.expected["key_down" if press else "key_up"] += 1


def _at(t0: float, offset: float) -> None:
    delay = t0 + offset - time.monotonic()
    if delay > 0:
        time.sleep(delay)


WORDS = ["report", "budget", "quarter", "meeting", "summary", "invoice", "planning", "review"]


def steady_block(drv: Driver, t0: float, block: int) -> int:
    """One 4-second block of 140 events (35/s). Returns events driven."""
    plan: list[tuple[float, object]] = []
    word1 = WORDS[block % len(WORDS)]
    word2 = WORDS[(block + 3) % len(WORDS)]
    # clicks at 0.9 s and 3.1 s
    plan += [(0.90, ("b", 1, True)), (0.98, ("b", 1, False)), (3.10, ("b", 1, True)), (3.17, ("b", 1, False))]
    # word 1 from 1.2 s, 110 ms per key, then space; word 2 from 2.3 s (≥ 0.5 s gap → a new run), then Return
    t = 1.2
    for ch in word1[:7] + " ":
        k = "space" if ch == " " else ch
        plan += [(t, ("k", k, True)), (t + 0.05, ("k", k, False))]
        t += 0.11
    t = 2.3
    for ch in word2[:7] + "\n":
        k = "Return" if ch == "\n" else ch
        plan += [(t, ("k", k, True)), (t + 0.05, ("k", k, False))]
        t += 0.09
    # wheel burst of 3 ticks at 3.5 s
    for i in range(3):
        plan += [(3.5 + 0.06 * i, ("b", 5, True)), (3.52 + 0.06 * i, ("b", 5, False))]
    n_other = 4 + 32 + 3  # expected stored events that are not moves
    n_moves = 140 - n_other
    for i in range(n_moves):
        plan.append((i * 4.0 / n_moves, ("m", i)))
    plan.sort(key=lambda p: p[0])
    for off, act in plan:
        _at(t0, off)
        kind = act[0]  # type: ignore[index]
        if kind == "m":
            i = act[1]  # type: ignore[index]
            drv.move(100 + (i * 37 + block * 53) % 800, 80 + (i * 23 + block * 29) % 560)
        elif kind == "b":
            drv.button(act[1], act[2])  # type: ignore[index]
        else:
            drv.key(act[1], act[2])  # type: ignore[index]
    return 140


def burst(drv: Driver, t0: float, n: int = 400) -> int:
    """One second at ``n`` events/s: moves and key presses (letters)."""
    letters = "abcdefghij"
    for i in range(n // 4):
        _at(t0, i * 4 / n)
        drv.move(100 + (i * 13) % 800, 80 + (i * 7) % 560)
        drv.move(101 + (i * 13) % 800, 81 + (i * 7) % 560)
        drv.key(letters[i % 10], True)
        drv.key(letters[i % 10], False)
    return n


def stored_counts(home: Path) -> tuple[Counter[str], Counter[str]]:
    from demotrace.schema import Frame
    from demotrace.spool import DataKey, Spool

    paths = Paths(home)
    spool = Spool(paths.spool, DataKey.load(paths.key_file))
    (sid,) = spool.session_ids()
    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    with spool.open(sid) as r:
        for ev in r.iter_events():
            kinds[ev.__struct_config__.tag] += 1  # type: ignore[attr-defined]
            if isinstance(ev, Frame):
                reasons[ev.reason] += 1
    return kinds, reasons


def folder_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def logical_bytes(spool_dir: Path) -> int:
    """Durable data of the (single) session: encrypted batch payloads + blob files. The WAL is
    left out (a bounded, recycled journal whose growth over a short run is not data)."""
    import sqlite3

    total = 0
    for db in spool_dir.glob("*/session.db"):
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            total += con.execute("SELECT COALESCE(SUM(length(payload)), 0) FROM batches").fetchone()[0]
        finally:
            con.close()
        total += folder_bytes(db.parent / "blobs")
    return total


def control(home: Path, cmd: str) -> dict[str, object]:
    from demotrace.recorder.control import call

    return call(Paths(home).control_socket, cmd)


def machine() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from PIL import features

    libs = {}
    for name in ("pynput", "python-xlib", "mss", "Pillow", "msgspec", "cryptography"):
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libs[name] = "?"
    return {
        "cpu": model, "cores": str(os.cpu_count()), "ram_gb": f"{psutil.virtual_memory().total / 2**30:.1f}",
        "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}",
        "libwebp": str(features.version("webp")), **libs,
    }


#: Default code of the "before" recorder run beside the measured one (unless ``--no-before``):
#: the last commit before stored frames became JPEG and the window tracker cached its
#: window-manager check (WebP q60 m0 frames, the guard's window cache already in).
BEFORE_REV = "0bdd307"


def before_tree(rev: str) -> Path:
    """``src/`` of git revision ``rev`` unpacked into a fresh temporary folder (``git archive``:
    nothing in the repository changes). Returns the folder to put on ``PYTHONPATH``."""
    dest = Path(tempfile.mkdtemp(prefix="dt-bench-before-"))
    arch = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], capture_output=True, check=False)
    if arch.returncode != 0:
        raise SystemExit(f"git archive {rev} failed: {arch.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=arch.stdout, check=True)
    return dest / "src"


def _start_recorder(cmd: list[str], env: dict[str, str], extra_args: list[str]) -> tuple[Path, subprocess.Popen[bytes]]:
    home = Path(tempfile.mkdtemp(prefix="dt-bench-"))
    subprocess.run([*cmd, "enroll", "--yes", "--home", str(home)], env=env, check=False,
                   stdout=subprocess.DEVNULL, timeout=60)  # `record` needs consent (issue 4)
    rec = subprocess.Popen([*cmd, "record", "--home", str(home), *extra_args],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return home, rec


def _wait_recording(home: Path, rec: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if control(home, "status").get("state") == "recording":
                return
        except Exception:  # noqa: BLE001 - not up yet
            if rec.poll() is not None:
                raise SystemExit(f"recorder exited: {rec.communicate()}")
        if time.monotonic() > deadline:
            raise SystemExit("recorder did not start")
        time.sleep(0.1)


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def run(seconds: int, extra_args: list[str], cmd: list[str], use_wm: bool = True,
        before_env: dict[str, str] | None = None, before_args: list[str] | None = None,
        before_label: str = "") -> dict[str, object]:
    """One benchmark run. With ``before_env`` (possibly empty) a second recorder (its own home,
    the same arguments plus ``before_args``, these extra environment variables — a
    ``PYTHONPATH`` there selects other code) records the same display at the same time, so both
    see the same input and the same machine load; its figures are under ``"before"``, described
    by ``before_label``."""
    load_avg = [round(os.getloadavg()[0], 2)]
    started = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    xvfb, display = start_xvfb()
    env = dict(os.environ, DISPLAY=display)
    env.pop("WAYLAND_DISPLAY", None)
    env.pop("DEMOTRACE_GUARD_WINDOW_CACHE", None)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        wm = shutil.which("openbox") if use_wm else None
        if wm:
            procs.append(subprocess.Popen([wm], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(1.0)
        term = subprocess.Popen(["xterm", "-geometry", "150x45+0+0", "-e", "cat"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(term)
        time.sleep(1.5)
        subprocess.run(["xdotool", "search", "--sync", "--class", "xterm", "windowactivate" if wm else "windowfocus"],
                       env=env, timeout=20, stdout=subprocess.DEVNULL, check=False)
        recs: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
        for label, extra_env in [("after", {}), *([("before", before_env)] if before_env is not None else [])]:
            # one REC indicator only: two would keep raising themselves over each other
            # (damage, restacks) every second, which a single recorder never sees
            args = extra_args if label == "after" else [*extra_args, *(before_args or [])]
            if label == "before" and "--no-indicator" not in args:
                args = [*args, "--no-indicator"]
            home, rec = _start_recorder(cmd, dict(env, **extra_env), args)
            procs.append(rec)
            recs.append((label, home, rec))
        for _, home, rec in recs:
            _wait_recording(home, rec)
        ps = [psutil.Process(rec.pid) for _, _, rec in recs]
        drv = Driver(display)
        time.sleep(1.0)
        # -- steady phase ----------------------------------------------------------------------
        bytes0 = [logical_bytes(Paths(h).spool) for _, h, _ in recs]
        c0 = [_cpu(p) for p in ps]
        kids0 = [{c.pid: _cpu(c) for c in p.children()} for p in ps]
        th0 = [control(h, "status").get("threads_cpu_s", {}) for _, h, _ in recs]
        t0 = time.monotonic()
        blocks = max(1, seconds // 4)
        for b in range(blocks):
            steady_block(drv, t0 + 4.0 * b, b)
        _at(t0, 4.0 * blocks)
        wall = time.monotonic() - t0
        c1 = [_cpu(p) for p in ps]
        load_avg.append(round(os.getloadavg()[0], 2))
        th1 = [control(h, "status").get("threads_cpu_s", {}) for _, h, _ in recs]
        kid_cpu = []
        for p, k0 in zip(ps, kids0):
            kid_cpu.append(sum(_cpu(c) - k0[c.pid] for c in p.children() if c.pid in k0))
        time.sleep(1.2)  # settle frames + one flush
        bytes1 = [logical_bytes(Paths(h).spool) for _, h, _ in recs]
        st_steady = [control(h, "status") for _, h, _ in recs]
        expected_steady = Counter(drv.expected)
        # -- burst phase -----------------------------------------------------------------------
        tb = time.monotonic()
        for i in range(5):
            burst(drv, tb + 2.0 * i)
        time.sleep(2.0)
        st_end = [control(h, "status") for _, h, _ in recs]
        hwm_kb = []
        for _, _, rec in recs:
            kb = 0
            for line in Path(f"/proc/{rec.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    kb = int(line.split()[1])
            hwm_kb.append(kb)
        for _, _, rec in recs:
            rec.send_signal(signal.SIGINT)
        for _, _, rec in recs:
            rec.communicate(timeout=120)
        stored = [stored_counts(h) for _, h, _ in recs]
        # page / file-system overhead factor of the closed session (WAL checkpointed away)
        overhead = [folder_bytes(Paths(h).spool) / max(1, logical_bytes(Paths(h).spool)) for _, h, _ in recs]
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
                pr.wait()
        xvfb.terminate()
        xvfb.wait()
    input_kinds = ("pointer_move", "pointer_down", "pointer_up", "wheel", "key_down", "key_up")
    out: dict[str, object] = {}
    for i, (label, _, _) in enumerate(recs):
        kinds, reasons = stored[i]
        lost_total = {k: drv.expected[k] - kinds.get(k, 0) for k in input_kinds}
        steady_stored = st_steady[i].get("by_kind", {})
        lost_steady = {k: expected_steady[k] - steady_stored.get(k, 0) for k in input_kinds}  # type: ignore[union-attr]
        bursts_expected = {k: drv.expected[k] - expected_steady[k] for k in input_kinds}
        bursts_stored = {k: kinds.get(k, 0) - steady_stored.get(k, 0) for k in input_kinds}  # type: ignore[union-attr]
        end = st_end[i]
        res: dict[str, object] = {
            "seconds": 4 * blocks,
            "events_per_s_steady": round(sum(expected_steady.values()) / wall, 1),
            "cpu_pct": round(100.0 * (c1[i] - c0[i]) / wall, 2),
            "cpu_pct_by_thread": {k: round(100.0 * (v - th0[i].get(k, 0.0)) / wall, 2)  # type: ignore[union-attr]
                                  for k, v in th1[i].items()},  # type: ignore[union-attr]
            "window_manager": Path(wm).name if wm else "none",
            "indicator_cpu_pct": round(100.0 * kid_cpu[i] / wall, 2),
            "rss_peak_mb": round(hwm_kb[i] / 1024, 1),
            "mb_per_hour": round((bytes1[i] - bytes0[i]) * overhead[i] / 1e6 * 3600 / wall, 1),
            "disk_overhead_factor": round(overhead[i], 3),
            "lost_steady": sum(lost_steady.values()),
            "lost_burst": sum(bursts_expected[k] - bursts_stored[k] for k in input_kinds),
            "lost_total": sum(lost_total.values()),
            "lost_by_kind": lost_total,
            "driven_total": sum(drv.expected.values()),
            "delay_p50_ms": end.get("delay_p50_ms"),
            "delay_p99_ms": end.get("delay_p99_ms"),
            "delay_max_ms": end.get("delay_max_ms"),
            "frames_stored": kinds.get("frame", 0),
            "frame_reasons": dict(reasons),
            "frames_encoded": end.get("frames_encoded"),
            "frames_missed": end.get("frames_missed"),
            "grabs": end.get("grabs"),
            "grabs_unchanged": end.get("grabs_unchanged"),
            "load_avg": load_avg,
            "started_utc": started,
            "encoded_kb_per_frame": round((end.get("encoded_bytes") or 0) / max(1, end.get("frames_encoded") or 1) / 1000, 1),  # type: ignore[operator]
            "recorder_args": " ".join(extra_args),
            "recorder_env": " ".join(f"{k}={v}" for k, v in (before_env or {}).items()) if label == "before" else "",
            "before_label": before_label if label == "before" else "",
            "cpu_s_by_stage": end.get("cpu_s"),
            "cpu_s_by_thread": end.get("threads_cpu_s"),
            "privacy_scope": end.get("privacy_scope"),
            "problems": end.get("problems"),
        }
        if label == "after":
            out.update(res)
        else:
            out[label] = res
    return out


#: Earlier before / after pairs of this benchmark (each pair from one run), so one run's ratio can
#: be judged against the others.
EARLIER_PAIRS = [
    "Earlier same-run pairs of the previous round (the guard's window cache; before = `DEMOTRACE_GUARD_WINDOW_CACHE=0`),",
    "after / before, % of one core: 2026-11-30 04:53 UTC 4.5 / 5.3 (ratio",
    "0.85, load 11.8 → 10.75); 04:57 UTC 4.18 / 5.12 (0.82, load 15.2 → 16.6); 05:11 UTC 3.6 / 4.32 (0.83, load",
    "5.73 → 7.43). The round before that (03:43 UTC, commit 9530c1c, one recorder alone, load 2.0 → 0.83)",
    "measured 5.87 %.",
]

#: Same-run pairs that isolate a lever or the benchmark's own bias (2026-11-30, this round).
ISOLATION = [
    "Two more same-run pairs of this round, after / before, % of one core:",
    "- today's code in both slots (`--before-rev ''`, 05:40 UTC, load 7.11 → 4.96): 2.73 / 2.5 (1.09). The",
    "  measured slot (the recorder that owns the REC indicator) costs ~9 % more than the other by itself,",
    "  mostly in its frame thread (1.14 vs 0.94), so the before / after ratio above understates the gain;",
    "- the codec alone (`--before-rev '' --before-args '--frame-format webp'`, 05:41 UTC, load 4.07 → 5.06):",
    "  2.57 / 3.05 (0.84); encoder thread 0.58 / 1.12; 11.1 / 4.4 KB per encoded frame; 47.6 / 27.8 MB per",
    "  active hour. Both recorders there hash the encoded bytes, so the rest of the encoder gain above is",
    "  the content id.",
]

#: This round's levers: what was taken, what was not, and why (2026-11-30).
LEVERS = [
    "Levers of this round (recorder CPU 3.6 % → under 3 %), each measured above or in the codec table below:",
    "- taken: stored frames as JPEG q87 4:2:0 with optimised Huffman tables (`--frame-format`, `--jpeg-quality`;",
    "  `Frame.format` \"jpeg\", additive): 2-4 ms per frame instead of 7-12 ms, PSNR and SSIM at least those of",
    "  WebP q60 on every screen measured, 1.75-2.4x the bytes. 4:4:4 would keep coloured text sharper (+7 dB",
    "  on a coloured terminal) but costs ~35 % more bytes on the bench desktop (12.7 vs 9.4 KB), which would",
    "  take disk over the 50 MB / active hour budget; q85 4:4:4 without optimised tables was 23.7 KB per frame",
    "  here (86.4 MB / hour in a first run of this round);",
    "- taken: the content id is the keyed hash of the encoded bytes (as the importers and sealing name their",
    "  blobs) instead of the 1.5 MB of downscaled pixels: a new frame costs one encode, not hash + encode;",
    "- taken: the window tracker caches its window-manager check (x11-windows 0.13 → 0.09 %);",
    "- not taken: grab pacing (fewer grabs make pre-action frames older); the frame thread's 8 MB copy per",
    "  changed grab (X11 backend, MIT-SHM via mss: a pool of SHM segments would avoid it); writer batching",
    "  (0.3 %, already one transaction per 0.25-0.5 s).",
    "Disk is now the tighter budget: 47.6 of 50 MB per active hour on this nearly empty desktop.",
]

#: What changed per thread between the before and after recorders (the default comparison).
WHY = {
    "demotrace-encoder": "JPEG q87 4:2:0 (optimised Huffman) instead of WebP q60 m0, and the content id hashes the "
                         "encoded bytes instead of the 1.5 MB of downscaled pixels",
    "demotrace-x11-windows": "the window-manager check (two round trips) is cached instead of re-read at every wake-up",
}


def before_after(res: dict[str, object]) -> list[str]:
    """A before / after table from the SAME run: ``res["before"]`` is the recorder that ran at
    the same time on the same display (its code, arguments and environment in ``before_label``)."""
    b: dict[str, object] | None = res.get("before")  # type: ignore[assignment]
    if not b:
        return []
    th: dict[str, float] = res["cpu_pct_by_thread"]  # type: ignore[assignment]
    bth: dict[str, float] = b["cpu_pct_by_thread"]  # type: ignore[assignment]
    ratio = round(float(res["cpu_pct"]) / max(1e-9, float(b["cpu_pct"])), 2)  # type: ignore[arg-type]
    rows = [f"Before / after in the same run: a second `demotrace record` ({b.get('before_label') or 'same code'})",
            "recorded the same display at the same time, with the same input and the same machine load (it ran",
            "without its own REC indicator: two indicators raise themselves over each other every second, which",
            "one recorder never sees).", "",
            "| steady phase | before | after | what changed |",
            "|---|---|---|---|",
            f"| recorder process, % of one core | {b['cpu_pct']} | {res['cpu_pct']} | after / before = {ratio} |"]
    for k in sorted(set(th) | set(bth)):
        if max(th.get(k, 0.0), bth.get(k, 0.0)) >= 0.05:
            rows.append(f"| {k} | {bth.get(k, 0.0)} | {th.get(k, 0.0)} | {WHY.get(k, '') if b.get('before_label', '').startswith('code of') else ''} |")
    bst: dict[str, float] = b.get("cpu_s_by_stage") or {}  # type: ignore[assignment]
    st: dict[str, float] = res.get("cpu_s_by_stage") or {}  # type: ignore[assignment]
    rows.append(f"| encode CPU s, whole run (frames encoded) | {bst.get('encode')} ({b['frames_encoded']}) | "
                f"{st.get('encode')} ({res['frames_encoded']}) | |")
    rows.append(f"| KB per encoded frame | {b['encoded_kb_per_frame']} | {res['encoded_kb_per_frame']} | |")
    rows.append(f"| disk per active hour, MB | {b['mb_per_hour']} | {res['mb_per_hour']} | budget 50 |")
    rows.append(f"| input events lost, steady / bursts | {b['lost_steady']} / {b['lost_burst']} | "
                f"{res['lost_steady']} / {res['lost_burst']} | |")
    ps: dict[str, object] = res.get("privacy_scope") or {}  # type: ignore[assignment]
    bps: dict[str, object] = b.get("privacy_scope") or {}  # type: ignore[assignment]
    rows.append(f"| frames stored / encoded / missed / withheld by the guard | {b['frames_stored']} / {b['frames_encoded']} / "
                f"{b['frames_missed']} / {bps.get('frames_withheld')} | {res['frames_stored']} / {res['frames_encoded']} / "
                f"{res['frames_missed']} / {ps.get('frames_withheld')} | |")
    rows.append(f"| screen grabs (unchanged) | {b['grabs']} ({b['grabs_unchanged']}) | {res['grabs']} ({res['grabs_unchanged']}) | |")
    rows += ["", *ISOLATION, "", *EARLIER_PAIRS, "CPU seconds per wall second grow with the machine's load (shared caches, frequency), which is",
             "why comparisons are taken from one run with both recorders side by side rather than from two runs",
             "at different times."]
    return rows + [""]


def analysis(res: dict[str, object]) -> list[str]:
    """Where the CPU goes, from the per-thread figures (so the text cannot drift from them)."""
    th: dict[str, float] = res["cpu_pct_by_thread"]  # type: ignore[assignment]
    backend = round(sum(v for k, v in th.items() if k.startswith("demotrace-x11")), 2)
    grabs = th.get("demotrace-frames", 0.0)
    enc = th.get("demotrace-encoder", 0.0)
    writer = th.get("demotrace-writer", 0.0)
    st: dict[str, float] = res.get("cpu_s_by_stage") or {}  # type: ignore[assignment]
    ths: dict[str, float] = res.get("cpu_s_by_thread") or {}  # type: ignore[assignment]
    enc_s = ths.get("demotrace-encoder", 0.0)
    rest = round(enc_s - st.get("hash", 0.0) - st.get("encode", 0.0), 3)
    real = int(res["grabs"] or 0) - int(res["grabs_unchanged"] or 0)  # type: ignore[call-overload]
    lines = [
        "Where the CPU goes: the X11 capture backend's own threads (RECORD input, key release pairing,",
        f"focus / RandR) {backend} %; the frame thread {grabs} % (screen grabs into the ring, 1920x1080 via",
        "MIT-SHM about 4 per second while input is active, and the privacy guard's window-cache check after",
        f"each); the encoder thread {enc} % (downscale, encode and keyed hash of the kept frames); the",
        f"writer (seq, pause, frame triggers, batches, AES-GCM, SQLite) {writer} %.",
        f"Over the whole run (steady + bursts) the encoder thread used {enc_s} s: downscale + content hash",
        f"{st.get('hash')} s, encode {st.get('encode')} s for {res['frames_encoded']} new images, {rest} s",
        f"else (blob writes, guard decisions); the frame thread's grabs {st.get('grab')} s for {res['grabs']} grabs,",
        f"of which {res['grabs_unchanged']} found the screen unchanged (X DAMAGE reported nothing: the previous",
        "buffer is reused, no copy, no hash, no encode).",
    ]
    if res["cpu_pct"] > BUDGET["cpu_pct"]:  # type: ignore[operator]
        lines += [
            "The 3 % budget is still missed. What is left is the work itself: in this scenario the screen",
            f"changes with almost every action (typed text echoes, clicks select text, the wheel scrolls), so {real}",
            "real grabs (each one 8 MB copy out of the SHM segment, ~2.5 ms, plus ~0.8 ms of DAMAGE round trips)",
            f"and {res['frames_encoded']} new images (each a keyed BLAKE2b of its 1.5 MB downscaled pixels, ~2.5 ms,",
            "and a lossy WebP encode at 960x540, 13-14 ms) remain, plus the input and writer threads, which",
            "this work did not touch. Levers measured and not taken: lossless WebP (m0) is faster and about",
            "as small on a terminal, but on a web page 4x larger and slower (see below); recycling grab buffers",
            "saves only ~0.8 ms of the 2.3 ms copy (the copy is bandwidth-bound here); `--grab-hz 2` halves",
            "the grabs but lets pre-action frames be up to 0.5 s old.",
        ]
    lines += [
        "Disk caveat: an xterm on an empty desktop compresses far better than a busy real desktop (browser,",
        f"images); at {res['encoded_kb_per_frame']} KB per kept frame here, expect several times the disk on real",
        "content (bench/frame_codecs.py below: 32-99 KB per JPEG frame of a form, a web page, a full terminal;",
        "WebP: 15-57 KB), which is why frames are stored at half resolution by default.",
    ]
    return lines + [""]


#: WebP options measured per frame in the previous round (``Image.save``, thread CPU, median of 5;
#: 960x540 = a 1920x1080 screen at the default scale 0.5), 2026-11-30, load ~10 on 2 cores.
ENCODE_TABLE = [
    "WebP options of the previous round, per 960x540 frame (median of 5, thread CPU time, Pillow 13 / libwebp",
    "1.6, load ~10): an xterm listing (UI text), a Chromium page with text and a gradient, and a smooth",
    "photo-like image. Lossless WebP is the cheaper choice only on terminal-like content.",
    "",
    "| WebP settings | xterm ms / KB | web page ms / KB | photo-like ms / KB |",
    "|---|---|---|---|",
    "| lossy q60 m0 (the default until 2026-11-30) | 13.3 / 20.8 | 13.4 / 45.5 | 22.8 / 86.3 |",
    "| lossy q60 m1 | 16.0 / 20.3 | 19.1 / 44.0 | 29.1 / 83.2 |",
    "| lossy q40 m0 | 12.6 / 18.6 | 15.9 / 39.3 | 21.6 / 73.3 |",
    "| lossless q0 m0 | 8.5 / 20.0 | 20.0 / 177.8 | 39.8 / 1071.6 |",
    "| lossless q25 m1 | 24.9 / 5.1 | 29.1 / 87.3 | 195.9 / 679.1 |",
    "",
    "Keyed BLAKE2b of the 1.5 MB downscaled pixels (the content id until 2026-11-30): 2.1-3.0 ms;",
    "`Image.tobytes()` 0.6-0.9 ms; of an 11 KB JPEG (the content id now): ~0.02 ms. A changed",
    "grab: MIT-SHM grab 2.5 ms (of which the 8 MB copy into a fresh buffer 2.3 ms; into a recycled one",
    "1.5 ms), DAMAGE poll with round trip 0.6 ms, DAMAGE subtract 0.2 ms; an unchanged grab 0.45 ms. The",
    "window cache's check when nothing changed: 0.21 ms (of which the `GetInputFocus` round trip 0.13 ms).",
    "",
]


def variant_lines(variants: list[dict[str, object]]) -> list[str]:
    """A comparison table of other recorder settings (``--compare``)."""
    if not variants:
        return []
    out = ["Other settings, same input (steady phase; `--compare`: separate runs one after the other, each",
           "with its own load, so compare them with the main run only roughly):", "",
           "| `demotrace record` args | CPU % | of which frame + encoder threads | peak RSS MB | MB / active hour | KB per encoded frame | load average start → end |",
           "|---|---|---|---|---|---|---|"]
    for v in variants:
        th = v["cpu_pct_by_thread"]  # type: ignore[index]
        fe = round(th.get("demotrace-frames", 0) + th.get("demotrace-encoder", 0), 2)  # type: ignore[union-attr]
        la = v.get("load_avg") or ["?", "?"]
        out.append(f"| `{v['recorder_args']}` | {v['cpu_pct']} | {fe} | {v['rss_peak_mb']} | {v['mb_per_hour']} | "
                   f"{v['encoded_kb_per_frame']} | {la[0]} → {la[1]} |")  # type: ignore[index]
    return out + [""]


def write_section(res: dict[str, object], mach: dict[str, str], variants: list[dict[str, object]]) -> None:
    ok = lambda good: "within budget" if good else "**over budget**"
    lines = [
        SECTION_START,
        "## Recorder overhead (`bench/recorder_overhead.py`)",
        "",
        f"Run {res.get('started_utc') or _dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}: "
        f"`.venv/bin/python bench/recorder_overhead.py --seconds {res['seconds']}`"
        + (f" (recorder args `{res['recorder_args']}`)" if res["recorder_args"] else " (default settings: frames at scale 0.5, JPEG q87 4:2:0, 4 Hz grabs while active)") + ".",
        f"Xvfb 1920x1080, window manager {res['window_manager']}, an xterm running `cat`, `demotrace record` with the REC",
        f"indicator, XTest input from the benchmark: {res['seconds']} s steady at {res['events_per_s_steady']} events/s (pointer moves,",
        "2 clicks, 2 typed words ending in space / Enter and a 3-tick wheel burst every 4 s: 1.25 discrete",
        "actions/s), then 5 bursts of 1 s at 400 events/s. One run; numbers are that run's. The machine is",
        f"shared with other engineers' test runs (1-minute load average {res['load_avg'][0]} at the start, {res['load_avg'][1]} at the",  # type: ignore[index]
        "end of the steady phase, on 2 cores); the CPU figure is the recorder process's own user + system time.",
        "",
        "| measure | result | budget (DESIGN.md §9) | |",
        "|---|---|---|---|",
        f"| recorder CPU, steady phase (% of one core) | {res['cpu_pct']} % | ≤ 3 % | {ok(res['cpu_pct'] <= BUDGET['cpu_pct'])} |",  # type: ignore[operator]
        f"| of which, per thread (% of one core) | {', '.join(f'{k} {v}' for k, v in res['cpu_pct_by_thread'].items() if v >= 0.05)} | | |",  # type: ignore[union-attr]
        f"| indicator process CPU (separate process) | {res['indicator_cpu_pct']} % | — | |",
        f"| recorder peak RSS (VmHWM) | {res['rss_peak_mb']} MB | ≤ 200 MB | {ok(res['rss_peak_mb'] <= BUDGET['rss_mb'])} |",  # type: ignore[operator]
        f"| disk per active hour (steady-phase growth of batches + blobs × on-disk overhead {res['disk_overhead_factor']}, extrapolated) | {res['mb_per_hour']} MB | ≤ 50 MB | {ok(res['mb_per_hour'] <= BUDGET['mb_per_hour'])} |",  # type: ignore[operator]
        f"| input events lost, steady / 400 ev/s bursts (driven {res['driven_total']}) | {res['lost_steady']} / {res['lost_burst']} | 0 | {ok(res['lost_burst'] == 0 and res['lost_steady'] == 0)} |",
        f"| delay event → durable batch, p50 / p99 / max | {res['delay_p50_ms']} / {res['delay_p99_ms']} / {res['delay_max_ms']} ms | flush ≤ 500 ms | {ok((res['delay_p99_ms'] or 1e9) <= 600)} |",  # type: ignore[operator]
        f"| frames stored (reasons) | {res['frames_stored']} {res['frame_reasons']} | — | |",
        f"| frames encoded / missed / screen grabs | {res['frames_encoded']} / {res['frames_missed']} / {res['grabs']} ({res['encoded_kb_per_frame']} KB per encoded frame) | — | |",
        "",
        *analysis(res),
        *before_after(res),
        *LEVERS, "",
        *ENCODE_TABLE,
        "Delay is measured by the recorder itself: from the capture hook's timestamp to the return of the",
        "batch's commit (reported by `demotrace status --json`). Lost = driven XTest events minus stored",
        "events per kind (a wheel tick counts once). Frames include the REC indicator window.",
        "",
        *variant_lines(variants),
        "Machine: " + ", ".join(f"{k} {v}" for k, v in mach.items()) + ".",
        "",
        SECTION_END,
    ]
    doc = REPO / "docs" / "benchmarks.md"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\nEach benchmark writes its own section.\n"
    if SECTION_START in text and SECTION_END in text:
        a = text.index(SECTION_START)
        b = text.index(SECTION_END) + len(SECTION_END)
        old = text[a:b]
        if CODECS_START in old and CODECS_END in old:  # bench/frame_codecs.py's table: keep it
            codecs = old[old.index(CODECS_START):old.index(CODECS_END) + len(CODECS_END)]
            lines[-1:-1] = [codecs, ""]
        text = text[:a] + "\n".join(lines) + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    doc.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=60, help="length of the steady 35 events/s phase (multiple of 4)")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    ap.add_argument("--recorder-args", default="", help="extra arguments for `demotrace record`, e.g. '--frame-scale 0.5'")
    ap.add_argument("--compare", action="store_true", help="also run the settings in COMPARE and tabulate them")
    ap.add_argument("--from-json", default=None, help=argparse.SUPPRESS)  # re-write the docs section from saved output
    ap.add_argument("--no-wm", action="store_true", help="do not start openbox (focus is then polled by the backend)")
    ap.add_argument("--no-before", action="store_true", help="do not run a 'before' recorder beside the measured one")
    ap.add_argument("--before-rev", default=BEFORE_REV,
                    help=f"git revision whose code the 'before' recorder runs (default {BEFORE_REV}; '' = today's code)")
    ap.add_argument("--before-args", default="", help="extra `demotrace record` arguments of the 'before' recorder")
    ap.add_argument("--before-env", action="append", default=[], metavar="K=V",
                    help="environment variable of the 'before' recorder (repeatable)")
    ap.add_argument("--demotrace", default=str(Path(sys.executable).parent / "demotrace"),
                    help="the demotrace command to benchmark (default: this venv's)")
    ns = ap.parse_args()
    if ns.from_json:  # the JSON this script printed (result, machine, variants): docs only
        dec = json.JSONDecoder()
        text, objs, i = Path(ns.from_json).read_text(), [], 0
        while i < len(text):
            if text[i].isspace():
                i += 1
                continue
            try:
                obj, i = dec.raw_decode(text, i)
            except json.JSONDecodeError:
                break  # the trailing "updated docs/benchmarks.md" line
            objs.append(obj)
        write_section(objs[0]["result"], objs[0]["machine"], [o["variant"] for o in objs[1:] if "variant" in o])
        return
    before_env: dict[str, str] | None = None
    label = ""
    if not ns.no_before:
        before_env = dict(kv.split("=", 1) for kv in ns.before_env)
        parts = []
        if ns.before_rev:
            sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", ns.before_rev], capture_output=True,
                                 text=True, check=True).stdout.strip()
            before_env["PYTHONPATH"] = str(before_tree(ns.before_rev))
            parts.append(f"code of commit {sha}")
        else:
            parts.append("today's code")
        if ns.before_args:
            parts.append(f"args `{ns.before_args}`")
        if ns.before_env:
            parts.append(f"env `{' '.join(ns.before_env)}`")
        label = ", ".join(parts)
    res = run(ns.seconds, ns.recorder_args.split(), ns.demotrace.split(), use_wm=not ns.no_wm,
              before_env=before_env, before_args=ns.before_args.split(), before_label=label)
    mach = machine()
    print(json.dumps({"result": res, "machine": mach}, indent=2, ensure_ascii=False))
    variants = []
    if ns.compare:
        for args in COMPARE:
            v = run(ns.seconds, args.split(), ns.demotrace.split(), use_wm=not ns.no_wm)
            print(json.dumps({"variant": v}, indent=2, ensure_ascii=False))
            variants.append(v)
    if not ns.no_write:
        write_section(res, mach, variants)
        print(f"updated {REPO / 'docs' / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
