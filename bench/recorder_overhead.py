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

from demotrace.paths import Paths  # noqa: E402

WIDTH, HEIGHT = 1920, 1080
SECTION_START = "<!-- bench:recorder_overhead:start -->"
SECTION_END = "<!-- bench:recorder_overhead:end -->"
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
        from Xlib import XK, X, display as xdisplay
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


def run(seconds: int, extra_args: list[str], cmd: list[str], use_wm: bool = True) -> dict[str, object]:
    load_avg = [round(os.getloadavg()[0], 2)]
    xvfb, display = start_xvfb()
    env = dict(os.environ, DISPLAY=display)
    env.pop("WAYLAND_DISPLAY", None)
    home = Path(tempfile.mkdtemp(prefix="dt-bench-"))
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
        subprocess.run([*cmd, "enroll", "--yes", "--home", str(home)], env=env, check=False,
                       stdout=subprocess.DEVNULL, timeout=60)  # `record` needs consent (issue 4)
        rec = subprocess.Popen([*cmd, "record", "--home", str(home), *extra_args],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(rec)
        deadline = time.monotonic() + 60
        while True:
            try:
                if control(home, "status").get("state") == "recording":
                    break
            except Exception:  # noqa: BLE001 - not up yet
                if rec.poll() is not None:
                    raise SystemExit(f"recorder exited: {rec.communicate()}")
            if time.monotonic() > deadline:
                raise SystemExit("recorder did not start")
            time.sleep(0.1)
        p = psutil.Process(rec.pid)
        drv = Driver(display)
        time.sleep(1.0)
        spool_dir = Paths(home).spool
        # -- steady phase ----------------------------------------------------------------------
        bytes0 = logical_bytes(spool_dir)
        c0 = p.cpu_times()
        kids0 = {c.pid: c.cpu_times() for c in p.children()}
        th0 = control(home, "status").get("threads_cpu_s", {})
        t0 = time.monotonic()
        driven = 0
        blocks = max(1, seconds // 4)
        for b in range(blocks):
            driven += steady_block(drv, t0 + 4.0 * b, b)
        _at(t0, 4.0 * blocks)
        wall = time.monotonic() - t0
        load_avg.append(round(os.getloadavg()[0], 2))
        c1 = p.cpu_times()
        th1 = control(home, "status").get("threads_cpu_s", {})
        cpu_pct = 100.0 * ((c1.user - c0.user) + (c1.system - c0.system)) / wall
        thread_pct = {k: round(100.0 * (v - th0.get(k, 0.0)) / wall, 2) for k, v in th1.items()}  # type: ignore[union-attr]
        kid_cpu = 0.0
        for c in p.children():
            if c.pid in kids0:
                ct = c.cpu_times()
                kid_cpu += (ct.user - kids0[c.pid].user) + (ct.system - kids0[c.pid].system)
        time.sleep(1.2)  # settle frames + one flush
        bytes1 = logical_bytes(spool_dir)
        st_steady = control(home, "status")
        expected_steady = Counter(drv.expected)
        # -- burst phase -----------------------------------------------------------------------
        tb = time.monotonic()
        for i in range(5):
            driven += burst(drv, tb + 2.0 * i)
        time.sleep(2.0)
        st_end = control(home, "status")
        hwm_kb = 0
        for line in Path(f"/proc/{rec.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm_kb = int(line.split()[1])
        rec.send_signal(signal.SIGINT)
        out, err = rec.communicate(timeout=120)
        kinds, reasons = stored_counts(home)
        # page / file-system overhead factor of the closed session (WAL checkpointed away)
        overhead = folder_bytes(spool_dir) / max(1, logical_bytes(spool_dir))
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
                pr.wait()
        xvfb.terminate()
        xvfb.wait()
    input_kinds = ("pointer_move", "pointer_down", "pointer_up", "wheel", "key_down", "key_up")
    lost_total = {k: drv.expected[k] - kinds.get(k, 0) for k in input_kinds}
    steady_stored = st_steady.get("by_kind", {})  # type: ignore[union-attr]
    lost_steady = {k: expected_steady[k] - steady_stored.get(k, 0) for k in input_kinds}  # type: ignore[union-attr]
    bursts_expected = {k: drv.expected[k] - expected_steady[k] for k in input_kinds}
    bursts_stored = {k: kinds.get(k, 0) - steady_stored.get(k, 0) for k in input_kinds}  # type: ignore[union-attr]
    return {
        "seconds": 4 * blocks,
        "events_per_s_steady": round(sum(expected_steady.values()) / wall, 1),
        "cpu_pct": round(cpu_pct, 2),
        "cpu_pct_by_thread": thread_pct,
        "window_manager": Path(wm).name if wm else "none",
        "indicator_cpu_pct": round(100.0 * kid_cpu / wall, 2),
        "rss_peak_mb": round(hwm_kb / 1024, 1),
        "mb_per_hour": round((bytes1 - bytes0) * overhead / 1e6 * 3600 / wall, 1),
        "disk_overhead_factor": round(overhead, 3),
        "lost_steady": sum(lost_steady.values()),
        "lost_burst": sum(bursts_expected[k] - bursts_stored[k] for k in input_kinds),
        "lost_total": sum(lost_total.values()),
        "lost_by_kind": lost_total,
        "driven_total": sum(drv.expected.values()),
        "delay_p50_ms": st_end.get("delay_p50_ms"),
        "delay_p99_ms": st_end.get("delay_p99_ms"),
        "delay_max_ms": st_end.get("delay_max_ms"),
        "frames_stored": kinds.get("frame", 0),
        "frame_reasons": dict(reasons),
        "frames_encoded": st_end.get("frames_encoded"),
        "frames_missed": st_end.get("frames_missed"),
        "grabs": st_end.get("grabs"),
        "grabs_unchanged": st_end.get("grabs_unchanged"),
        "load_avg": load_avg,
        "encoded_kb_per_frame": round((st_end.get("encoded_bytes") or 0) / max(1, st_end.get("frames_encoded") or 1) / 1000, 1),  # type: ignore[operator]
        "recorder_args": " ".join(extra_args),
        "cpu_s_by_stage": st_end.get("cpu_s"),
        "cpu_s_by_thread": st_end.get("threads_cpu_s"),
        "problems": st_end.get("problems"),
    }


#: The same benchmark before the grab/encode fast-path work (run 03:14 UTC 2026-11-30, same
#: machine, load 1.9 → 1.24, recorder at commit 7a42a97: DAMAGE skips unchanged grabs, every
#: kept frame fully downscaled; no privacy guard yet), per thread in % of one core. The run
#: before that (02:26 UTC, commit e4f1380) gave 6.53 %.
BEFORE = {"cpu_pct": 4.68, "demotrace-x11-input": 0.62, "demotrace-x11-release": 0.07,
          "demotrace-x11-windows": 0.17, "demotrace-frames": 1.23, "demotrace-encoder": 2.15,
          "demotrace-writer": 0.34}


def before_after(res: dict[str, object]) -> list[str]:
    """A before / after table (steady phase, % of one core) against :data:`BEFORE`."""
    th: dict[str, float] = res["cpu_pct_by_thread"]  # type: ignore[assignment]
    rows = ["Before / after the grab/encode fast-path work (steady phase, % of one core; before = the run of",
            "03:14 UTC at commit 7a42a97, same machine, same input; the privacy guard, commit e913ddf, came in between):", "",
            "| | before | after | what changed |", "|---|---|---|---|"]
    why = {
        "demotrace-x11-input": "",
        "demotrace-x11-release": "",
        "demotrace-x11-windows": "",
        "demotrace-frames": "DAMAGE rectangles read with every grab (DeltaRectangles); still full MIT-SHM grabs "
                            "(patching regions into a copy of the previous grab measured slower here, see below)",
        "demotrace-encoder": "downscale redone only inside the damaged rectangles (byte-identical); **plus** the "
                             "privacy guard's window snapshot per stored frame (new, commit e913ddf)",
        "demotrace-writer": "",
    }
    rows.append(f"| recorder process | {BEFORE['cpu_pct']} | {res['cpu_pct']} | |")
    for k, w in why.items():
        rows.append(f"| {k} | {BEFORE[k]} | {th.get(k, 0.0)} | {w} |")
    rows += ["", "Runs vary by about ±1 point with the machine's load (earlier runs: 3.88 % at load 6.7, 4.68 % at 1.9).",
             "Region grabs (`X11Backend(region_grabs=True)`: re-grab only the damaged rectangles and patch them into a",
             "copy of the previous frame) were built and tested (a patched frame equals a full grab byte for byte) but",
             "are off: after one typed key a patched grab cost this process 3.6 ms of CPU against 2.3 ms for a full",
             "MIT-SHM grab (Xvfb 1920x1080). The client's cost of either is one 8 MB copy into fresh pages; the",
             "X server's copy that patching saves is not this process's CPU. Measured per frame on this machine",
             "(960x540 xterm frame): WebP q60 m0 10.8 ms, 19.8 KB; WebP lossless q0 m0 6.6 ms, 20.8 KB; PNG level 1",
             "11.5 ms, 26.5 KB; keyed BLAKE2b of the 1.5 MB downscaled pixels 2.6 ms; full BGRX unpack + 2x2 reduce",
             "5.1 ms (now only the damaged part). Lossless WebP is cheaper and exact on UI content but was not made",
             "the default: on photographic content it is several times larger, which the 50 MB/h budget cannot",
             "absorb without a measurement on real desktops."]
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
    lines = [
        f"Where the CPU goes: the X11 capture backend's own threads (RECORD input, key release pairing,",
        f"focus / RandR) {backend} %; the screen grabs feeding the ring (1920x1080 via MIT-SHM, about 4 per",
        f"second while input is active) {grabs} %; hashing, downscaling and WebP-encoding the kept frames {enc} %;",
        f"the writer (seq, pause, frame triggers, batches, AES-GCM, SQLite) {writer} %.",
        f"The encoder thread's {enc_s} s of CPU over the whole run split into: downscale + content hash "
        f"{st.get('hash')} s, WebP encode {st.get('encode')} s, and {rest} s outside both — the privacy",
        "guard's window snapshot before each stored frame (python-xlib QueryTree + per-window attributes,",
        "WM_CLASS and title: about 40 % of the encoder thread's samples in a py-spy profile) and the blob writes.",
    ]
    lines += [
        f"Of {res['grabs']} grabs, {res['grabs_unchanged']} found the screen unchanged (X DAMAGE reported nothing",
        "since the previous grab): they reuse the previous grab's buffer, so there is no image copy, no hash and",
        "no encode; a frame kept for an action on an unchanged screen points at the blob already stored.",
    ]
    if res["cpu_pct"] > BUDGET["cpu_pct"]:  # type: ignore[operator]
        real = int(res["grabs"] or 0) - int(res["grabs_unchanged"] or 0)  # type: ignore[call-overload]
        lines += [
            "The 3 % budget is still missed in this run. In this scenario the screen changes with almost every",
            "action (typed text echoes, clicks select text, the wheel scrolls the xterm), so "
            f"{real} real grabs and {res['frames_encoded']}",
            "encodes remain: each real grab is an 8 MB copy out of the SHM segment (~2.3 ms), each kept frame a",
            "keyed BLAKE2b of its 1.5 MB downscaled pixels (~2.6 ms) and, when new, a WebP encode (~11 ms).",
            "Levers left: the guard's window snapshot (cache it per X event instead of per frame: its owner's",
            "module), lossless WebP m0 (−4 ms per encode, disk unmeasured on real content), fewer grabs while",
            "the screen changes (`--grab-hz 2`: pre-action frames up to 0.5 s old).",
        ]
    lines += [
        "Disk caveat: an xterm on an empty desktop compresses far better than a busy real desktop (browser,",
        f"images); at {res['encoded_kb_per_frame']} KB per kept frame here, expect several times the disk on real",
        "content, which is why frames are stored at half resolution by default.",
    ]
    return lines + [""]


def variant_lines(variants: list[dict[str, object]]) -> list[str]:
    """A comparison table of other recorder settings (``--compare``)."""
    if not variants:
        return []
    out = ["Other settings, same input (steady phase):", "",
           "| `demotrace record` args | CPU % | of which frame + encoder threads | peak RSS MB | MB / active hour | KB per encoded frame |",
           "|---|---|---|---|---|---|"]
    for v in variants:
        th = v["cpu_pct_by_thread"]  # type: ignore[index]
        fe = round(th.get("demotrace-frames", 0) + th.get("demotrace-encoder", 0), 2)  # type: ignore[union-attr]
        out.append(f"| `{v['recorder_args']}` | {v['cpu_pct']} | {fe} | {v['rss_peak_mb']} | {v['mb_per_hour']} | {v['encoded_kb_per_frame']} |")
    return out + [""]


def write_section(res: dict[str, object], mach: dict[str, str], variants: list[dict[str, object]]) -> None:
    ok = lambda good: "within budget" if good else "**over budget**"  # noqa: E731
    lines = [
        SECTION_START,
        "## Recorder overhead (`bench/recorder_overhead.py`)",
        "",
        f"Run {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}: "
        f"`.venv/bin/python bench/recorder_overhead.py --seconds {res['seconds']}`"
        + (f" (recorder args `{res['recorder_args']}`)" if res["recorder_args"] else " (default settings: frames at scale 0.5, WebP q60 m0, 4 Hz grabs while active)") + ".",
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
    block = "\n".join(lines)
    if SECTION_START in text and SECTION_END in text:
        a = text.index(SECTION_START)
        b = text.index(SECTION_END) + len(SECTION_END)
        text = text[:a] + block + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=60, help="length of the steady 35 events/s phase (multiple of 4)")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    ap.add_argument("--recorder-args", default="", help="extra arguments for `demotrace record`, e.g. '--frame-scale 0.5'")
    ap.add_argument("--compare", action="store_true", help="also run the settings in COMPARE and tabulate them")
    ap.add_argument("--no-wm", action="store_true", help="do not start openbox (focus is then polled by the backend)")
    ap.add_argument("--demotrace", default=str(Path(sys.executable).parent / "demotrace"),
                    help="the demotrace command to benchmark (default: this venv's)")
    ns = ap.parse_args()
    res = run(ns.seconds, ns.recorder_args.split(), ns.demotrace.split(), use_wm=not ns.no_wm)
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
