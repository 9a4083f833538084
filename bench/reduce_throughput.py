"""Benchmark: raw events per second through reduction + observation alignment, and memory.

One command::

    .venv/bin/python bench/reduce_throughput.py [--events 5000000] [--data ../shared/data]

Input: the real DuckTrack example (../shared/data/ducktrack-example, 13,401 events; imported
with the DuckTrack importer into a temporary encrypted spool and read back), plus one synthetic
``frame`` record per discrete action (captured 30 ms before it, written 20 ms after it, so the
aligner has to wait for late frames; no image is encoded). The session is replicated by
time-shifted copies (each copy starts 1 s after the previous one ends; seqs renumbered) until
``--events`` is reached.

Measures (one run, one process, one core):

1. throughput: events/s of ``align(reduce(events))`` over a pre-built list of N events (building
   the list is not timed), for N = 1 M and N = ``--events``, median of ``--repeat`` passes;
2. memory: tracemalloc peak of the same pipeline fed by a *lazy* generator (so the input does
   not count) for 1 M and ``--events``, to show that it does not grow with session length;
3. the same throughput on the session without its pointer moves (98 % of the recorded events),
   i.e. the slow path of discrete events only;
4. the profile of the 1 M run's top functions (cProfile, internal time) if ``--profile``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import msgspec

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from demotrace.build import BuildSettings, align  # noqa: E402
from demotrace.build.reduce import ReduceStats, _pipeline  # noqa: E402
from demotrace.importers import DuckTrackConfig, import_ducktrack  # noqa: E402
from demotrace.schema import Event, Frame, KeyDown, PointerDown, PointerMove, Rect, Wheel  # noqa: E402
from demotrace.spool import DataKey, Spool  # noqa: E402
from _machine import cpu_model  # noqa: E402  (bench/ is on sys.path when run)


def base_events(data: Path) -> list[Event]:
    """The example session as schema-v1 events, with synthetic pre-action frame records."""
    with tempfile.TemporaryDirectory() as d:
        spool = Spool(Path(d) / "spool", DataKey.create(Path(d) / "key"))
        res = import_ducktrack(data / "ducktrack-example", spool, config=DuckTrackConfig(video=False))
        with spool.open(res.session_id) as r:
            events = list(r.iter_events())
    out: list[Event] = []
    last_wheel = -(1 << 62)
    bounds = Rect(0, 0, 3024, 1964)
    frames: list[Frame] = []
    for ev in events:
        trigger = isinstance(ev, (PointerDown, KeyDown)) or (
            isinstance(ev, Wheel) and ev.t_ns - last_wheel > 500_000_000)
        if isinstance(ev, Wheel):
            last_wheel = ev.t_ns
        if trigger:
            frames.append(Frame(seq=0, t_ns=ev.t_ns + 20_000_000, blob="%064x" % ev.seq, monitor=-1,
                                bounds=bounds, width=3024, height=1964, scale=1.0,
                                captured_t_ns=ev.t_ns - 30_000_000, reason="bench", format="webp"))
    # merge frames by their write time into the arrival order
    frames.sort(key=lambda f: f.t_ns)
    fi = 0
    for ev in events:
        while fi < len(frames) and frames[fi].t_ns <= ev.t_ns:
            out.append(frames[fi])
            fi += 1
        out.append(ev)
    out.extend(frames[fi:])
    return [msgspec.structs.replace(e, seq=i) for i, e in enumerate(out)]


def replicate(base: list[Event], n: int) -> Iterator[Event]:
    """Lazily yield ``n`` events: time-shifted copies of ``base``."""
    span = max(e.t_ns for e in base) + 1_000_000_000
    k = 0
    seq = 0
    replace = msgspec.structs.replace
    while True:
        shift = k * span
        for e in base:
            if seq >= n:
                return
            if type(e) is Frame:
                yield replace(e, seq=seq, t_ns=e.t_ns + shift, captured_t_ns=e.captured_t_ns + shift)
            else:
                yield replace(e, seq=seq, t_ns=e.t_ns + shift)
            seq += 1
        k += 1


def run(events, settings: BuildSettings) -> tuple[int, ReduceStats]:
    stats = ReduceStats()
    n = 0
    for _ in align(_pipeline(events, settings, stats), settings):
        n += 1
    return n, stats


def throughput(base: list[Event], n: int, settings: BuildSettings, repeat: int) -> dict[str, float]:
    """Median over ``repeat`` timed passes over the same pre-built list (gc paused while timed)."""
    events = list(replicate(base, n))
    times = []
    cpu = []
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        t0 = time.perf_counter()
        c0 = time.process_time()
        steps, stats = run(events, settings)
        cpu.append(time.process_time() - c0)
        times.append(time.perf_counter() - t0)
        gc.enable()
    del events
    gc.collect()
    dt = statistics.median(times)
    dc = statistics.median(cpu)
    return {"events": n, "seconds": dt, "events_per_s": n / dt, "cpu_events_per_s": n / dc,
            "steps": steps, "actions": stats.actions, "runs": " ".join(f"{t:.2f}" for t in times)}


def memory(base: list[Event], n: int, settings: BuildSettings) -> int:
    gc.collect()
    tracemalloc.start()
    run(replicate(base, n), settings)
    _cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def machine() -> str:
    cpu = cpu_model('unknown CPU')
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()} "
            f"({platform.python_implementation()}), {platform.system()} {platform.release()}, msgspec {msgspec.__version__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes per N (median reported)")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    settings = BuildSettings()
    base = base_events(args.data)
    print(f"machine: {machine()}")
    print("load average before: %.2f %.2f %.2f" % os.getloadavg())
    print(f"base session: {len(base)} events (13,401 recorded + synthetic frame records); "
          f"replicated to {args.events:,}")
    for n in (1_000_000, args.events):
        r = throughput(base, n, settings, args.repeat)
        print(f"throughput N={n:>9,}: median {r['seconds']:.2f} s of [{r['runs']}] → "
              f"{r['events_per_s']:,.0f} events/s wall, {r['cpu_events_per_s']:,.0f} events/s per CPU-second, "
              f"{r['actions']:,} actions, {r['steps']:,} aligned items")
    no_moves = [e for e in base if type(e) is not PointerMove]
    r = throughput(no_moves, 1_000_000, settings, args.repeat)
    print(f"throughput without pointer moves ({len(no_moves)} events per copy), N=1,000,000: median "
          f"{r['seconds']:.2f} s of [{r['runs']}] → {r['events_per_s']:,.0f} events/s wall, "
          f"{r['cpu_events_per_s']:,.0f} events/s per CPU-second, {r['actions']:,} actions")
    print("load average after throughput: %.2f %.2f %.2f" % os.getloadavg())
    for n in (1_000_000, args.events):
        peak = memory(base, n, settings)
        print(f"memory     N={n:>9,}: tracemalloc peak {peak / 2**20:.2f} MiB (input generated lazily)")
    if args.profile:
        import cProfile
        import pstats

        events = list(replicate(base, 1_000_000))
        prof = cProfile.Profile()
        prof.runcall(run, events, settings)
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
