"""Benchmark: collector ingest over loopback into PostgreSQL.

One command::

    .venv/bin/python bench/ingest.py [--devices 8] [--bundles 6] [--events 2000] \
        [--frames 24] [--frame-kb 96] [--database-url URL] [--workers 1 2 3] [--repeats 3]

What runs:

- a throw-away PostgreSQL (``initdb`` + ``pg_ctl`` as in the test harness, DEFAULT durability:
  ``fsync=on``, ``synchronous_commit=on``) unless ``--database-url`` names one;
- ``demotrace server --workers W`` as a subprocess on 127.0.0.1 (local blob folder, rate limit
  lifted), a fresh database and data folder per run;
- ``--devices`` simulated devices, each a separate process (so the client does not share the
  server's interpreter), enrolled with a one-time code, each uploading ``--bundles`` bundles
  through :class:`demotrace.upload.UploadClient` (the real protocol: manifest → missing → PUT
  every blob → commit). A bundle holds ``--events`` schema-v1 events (MessagePack batches of
  500, as the spool writes them) and ``--frames`` incompressible frames of ``--frame-kb`` KiB
  (random bytes: the size of a WebP screenshot, and nothing compresses them).

Reports (one run): events/s and MB/s of frames ingested over the wall time from the first
request to the last commit, p50/p99 latency of the committing request (``POST …/commit``, or
the last blob batch sent with ``?commit=true``; ms), errors, the CPU (user+sys seconds / wall,
in cores) of the server (supervisor plus its worker processes), of PostgreSQL (postmaster and children) and of the devices, the
server's peak RSS (MiB, sum over its processes, sampled every 0.1 s) and the 1-minute load average before and after
(the machine is shared: quote it with the figures). ``--profile FILE`` records the server
with py-spy (``pip install -e ".[bench]"``) during the upload phase.
Targets (issue 5): >= 20,000 events/s and >= 50 MB/s of frames with no errors.

``--warmup 1`` (default) runs once, unmeasured, before the measured runs.
``--perf FILE`` records the server processes with Linux ``perf`` (kernel included).

``--workers 1 2 3 --repeats 3`` runs every worker count ``--repeats`` times in ONE invocation,
interleaved (round r runs the counts in order, reversed on odd rounds, so a drift in the shared
machine's load hits every count alike), on the same prepared bundles, and reports each run plus
the per-count medians and the median MB/s ratio against the first count.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

from demotrace.schema.events import KeyDown, KeyUp, PointerMove, encode_batch
from demotrace.server.wire import write_local_bundle
from demotrace.upload import RetryPolicy, UploadClient


def make_bundle(root: Path, n_events: int, n_frames: int, frame_bytes: int, seed: int) -> Path:
    """Write one generic bundle; return its folder."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    events: list[Any] = []
    for i in range(n_events):
        t = i * 10_000_000
        k = i % 3
        if k == 0:
            events.append(PointerMove(seq=i, t_ns=t, x=rng.randrange(1920), y=rng.randrange(1080)))
        elif k == 1:
            events.append(KeyDown(seq=i, t_ns=t, key="a", code="KeyA", text="a"))
        else:
            events.append(KeyUp(seq=i, t_ns=t, key="a", code="KeyA"))
    for b in range(0, n_events, 500):
        files[f"events/{b}.msgpack"] = encode_batch(events[b:b + 500])
    for f in range(n_frames):
        files[f"frames/{f:05d}.webp"] = rng.randbytes(frame_bytes)
    return write_local_bundle(root, files, session_id=f"bench-{seed}", platform="linux-x11").root


def device(url: str, code: str, bundles: list[str], out: Any) -> None:
    """One simulated device: enroll, upload every bundle; report commit latencies."""
    lat: list[float] = []
    begin_lat: list[float] = []
    in_requests = [0.0]  # seconds this device spent waiting for answers (the rest: its own work)
    errors = 0
    with UploadClient(url) as c:
        token = c.enroll(code, "bench")
    t0 = time.perf_counter()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)

    class Timing(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            s = time.perf_counter()
            r = super().handle_request(request)
            r.read()
            in_requests[0] += time.perf_counter() - s
            if request.url.path.endswith("/commit") or request.url.params.get("commit"):
                r.read()
                lat.append(time.perf_counter() - s)
            elif request.url.path == "/v1/bundles":
                r.read()
                begin_lat.append(time.perf_counter() - s)
            return r

    with UploadClient(url, token, transport=Timing(), retry=RetryPolicy(attempts=5)) as c:
        for b in bundles:
            try:
                c.upload_path(b, delete_local=False)
            except Exception as exc:  # counted, reported
                errors += 1
                print(f"device error: {exc}", file=sys.stderr)
        retries = c.retries
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out.put({"lat": lat, "begin_lat": begin_lat, "in_requests": in_requests[0], "errors": errors, "retries": retries, "t0": t0,
             "t1": time.perf_counter(), "cpu": ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime})


def _pg_cpu(pg: Any) -> float | None:
    """CPU seconds (user+sys) of the throw-away PostgreSQL: postmaster and its live children
    (backends, WAL writer, checkpointer); ``None`` for an external database."""
    if pg is None:
        return None
    try:
        pid = int((pg.root / "data" / "postmaster.pid").read_text().split()[0])
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except (OSError, ValueError, psutil.Error):
        return None
    return _cpu_of(procs)


def _cpu_of(procs: list[psutil.Process], fields: tuple[str, ...] = ("user", "system")) -> float:
    """CPU seconds (``fields`` of ``cpu_times``: user+sys by default) summed over ``procs``
    (processes gone meanwhile count 0)."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += sum(getattr(t, f) for f in fields)
        except psutil.Error:
            pass
    return total


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    """``proc`` and its live descendants (the uvicorn workers)."""
    return [proc, *proc.children(recursive=True)]


def _tree_cpu(proc: psutil.Process) -> float:
    """User+sys CPU seconds of ``proc`` and its live descendants."""
    return _cpu_of(_tree(proc))


def _sys_cpu(proc: psutil.Process) -> float:
    """Kernel (sys) CPU seconds of ``proc`` and its live descendants: file writes, fsyncs and
    socket reads are spent here, outside the interpreter."""
    return _cpu_of(_tree(proc), ("system",))


def _per_process_cpu(proc: psutil.Process) -> dict[int, float]:
    """User+sys CPU seconds of ``proc`` and each live descendant, by pid (how the load spreads
    over the uvicorn workers)."""
    return {p.pid: _cpu_of([p]) for p in _tree(proc)}


def _tree_rss(proc: psutil.Process) -> int:
    """Resident bytes of ``proc`` and its live descendants."""
    total = 0
    for p in _tree(proc):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_once(a: argparse.Namespace, url_db: str, pg: Any, data: Path, plan: list[list[str]],
             workers: int) -> dict[str, Any]:
    """One measured run: start the server with ``workers`` processes on ``url_db`` (empty),
    enroll the devices, upload ``plan``, stop the server; return the figures."""
    from conftest_pg import free_port

    port = free_port()
    exe = str(Path(sys.executable).parent / "demotrace")
    srv = subprocess.Popen([exe, "server", "--data-dir", str(data), "--database-url", url_db,
                            "--port", str(port), "--rate", "1000000", "--workers", str(workers),
                            "--max-body-bytes", str(16 * 1024 * 1024)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or srv.poll() is not None:
                srv.kill()
                raise SystemExit("server did not start: "
                                 f"{srv.stderr.read().decode() if srv.stderr else ''}")
            time.sleep(0.1)
        codes = []
        for d in range(a.devices):
            r = subprocess.run([exe, "admin", "enroll-code", "--person", f"bench{d}@example.org",
                                "--data-dir", str(data), "--database-url", url_db],
                               capture_output=True, text=True, check=True)
            codes.append(r.stdout.strip())
        proc = psutil.Process(srv.pid)
        peak_rss = [_tree_rss(proc)]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak_rss[0] = max(peak_rss[0], _tree_rss(proc))
                time.sleep(0.1)

        threading.Thread(target=sample, daemon=True).start()
        cpu0 = _tree_cpu(proc)
        per0 = _per_process_cpu(proc)
        sys0 = _sys_cpu(proc)
        pg_cpu0 = _pg_cpu(pg)
        q: Any = mp.get_context("spawn").Queue()
        procs = [mp.get_context("spawn").Process(target=device, args=(url, codes[d], plan[d], q))
                 for d in range(a.devices)]
        load0 = round(os.getloadavg()[0], 2)
        w0 = time.perf_counter()
        for p in procs:
            p.start()
        spy = None
        if a.profile:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p",
                                    str(srv.pid), "-o", str(a.profile), "--format", "raw",
                                    "--threads", "-r", "250", "--nonblocking", "--subprocesses"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        perf = None
        if a.perf:
            perf = subprocess.Popen(["perf", "record", "-g", "-o", str(a.perf), "-p",
                                     ",".join(str(p.pid) for p in _tree(proc))],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results = [q.get(timeout=3600) for _ in procs]
        if perf is not None:
            perf.send_signal(2)
            perf.wait(60)
        for p in procs:
            p.join()
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        cpu1 = _tree_cpu(proc)
        per1 = _per_process_cpu(proc)
        sys1 = _sys_cpu(proc)
        pg_cpu1 = _pg_cpu(pg)
        stop.set()
        wall = max(r["t1"] for r in results) - min(r["t0"] for r in results)
        total_wall = time.perf_counter() - w0
    finally:
        srv.terminate()
        srv.wait(30)
        if srv.stderr:
            srv.stderr.close()
    lat = sorted(x for r in results for x in r["lat"])
    blat = sorted(x for r in results for x in r["begin_lat"])
    n_bundles = a.devices * a.bundles
    events = n_bundles * a.events
    frame_mb = n_bundles * a.frames * a.frame_kb * 1024 / 1e6
    return {
        "workers": workers,
        "devices": a.devices, "bundles": n_bundles, "events": events,
        "frames": n_bundles * a.frames, "frame_MB": round(frame_mb, 1),
        "wall_s": round(wall, 2), "wall_incl_process_start_s": round(total_wall, 2),
        "events_per_s": round(events / wall), "frame_MB_per_s": round(frame_mb / wall, 1),
        "commit_p50_ms": round(statistics.median(lat) * 1000, 1),
        "commit_p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000, 1),
        "manifest_p50_ms": round(statistics.median(blat) * 1000, 1) if blat else None,
        "devices_waiting_share": round(sum(r["in_requests"] for r in results)
                                       / sum(r["t1"] - r["t0"] for r in results), 3),
        "errors": sum(r["errors"] for r in results),
        "retries": sum(r["retries"] for r in results),
        "server_cpu_cores": round((cpu1 - cpu0) / wall, 2),
        "server_sys_cpu_cores": round((sys1 - sys0) / wall, 2),
        "server_cpu_cores_per_process": sorted((round((per1[k] - per0.get(k, 0.0)) / wall, 2)
                                                for k in per1), reverse=True),
        "clients_cpu_cores": round(sum(r["cpu"] for r in results) / wall, 2),
        "postgres_cpu_cores": (round((pg_cpu1 - pg_cpu0) / wall, 2)
                               if pg_cpu0 is not None and pg_cpu1 is not None else None),
        "load_average_1min_before_after": [load0, round(os.getloadavg()[0], 2)],
        "server_peak_rss_MiB": round(peak_rss[0] / 2**20, 1),
        "database": "postgresql" if "postgresql" in url_db else "sqlite",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--bundles", type=int, default=6, help="bundles per device")
    ap.add_argument("--events", type=int, default=2000, help="events per bundle")
    ap.add_argument("--frames", type=int, default=24, help="frames per bundle")
    ap.add_argument("--frame-kb", type=int, default=96, help="KiB per frame")
    ap.add_argument("--database-url", default=None,
                    help="an EMPTY database (only one run: one worker count, --repeats 1)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1],
                    help="server worker processes; several values are compared in one run")
    ap.add_argument("--repeats", type=int, default=1, help="runs per worker count")
    ap.add_argument("--warmup", type=int, default=1,
                    help="unmeasured runs first (with the first worker count); 0 for none")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    ap.add_argument("--profile", type=Path, default=None,
                    help="record the server (and its workers) with py-spy during the upload "
                         "phase (raw collapsed stacks per thread, idle samples left out) into "
                         "this file (overwritten by each run)")
    ap.add_argument("--perf", type=Path, default=None,
                    help="record the server processes with Linux perf (call graphs, kernel "
                         "included) during the upload phase into this file")
    a = ap.parse_args()
    if a.database_url and (len(a.workers) > 1 or a.repeats > 1 or a.warmup):
        ap.error("--database-url allows one run (with --warmup 0); leave it out to compare "
                 "worker counts")
    if min(a.workers) < 1 or a.repeats < 1:
        ap.error("--workers and --repeats must be >= 1")

    tmp = Path(tempfile.mkdtemp(prefix="dt-ingest-"))
    pg = None
    try:
        if a.database_url is None:
            from conftest_pg import start_postgres

            pg = start_postgres(durable=True)
        print("preparing bundles …", file=sys.stderr)
        plan: list[list[str]] = []
        for d in range(a.devices):
            plan.append([str(make_bundle(tmp / "dev" / f"{d}-{b}", a.events, a.frames,
                                         a.frame_kb * 1024, seed=d * 1000 + b))
                         for b in range(a.bundles)])
        runs: list[dict[str, Any]] = []
        for i in range(a.warmup):
            # not counted: the first run of an invocation was the slowest in every invocation
            # of 2026-11-30 (cold PostgreSQL caches, first sub-folders of the disk's groups)
            data = tmp / f"warmup-{i}"
            data.mkdir()
            r = run_once(a, a.database_url or pg.new_database(), pg, data, plan, a.workers[0])
            print(f"warm-up {i} (not counted): {r['frame_MB_per_s']} MB/s", file=sys.stderr)
        for rep in range(a.repeats):
            order = a.workers if rep % 2 == 0 else list(reversed(a.workers))
            for w in order:
                url_db = a.database_url or pg.new_database()
                data = tmp / f"srv-{rep}-{w}"
                data.mkdir()
                r = run_once(a, url_db, pg, data, plan, w)
                r["round"] = rep
                runs.append(r)
                print(f"round {rep} workers {w}: {r['frame_MB_per_s']} MB/s, "
                      f"{r['events_per_s']} events/s, server {r['server_cpu_cores']} cores, "
                      f"errors {r['errors']}, load {r['load_average_1min_before_after']}",
                      file=sys.stderr)
                # the run's data stays until the end: deleting ~1,200 files right before the
                # next run's creates sends ext4's inode allocator through its recently-deleted
                # scan for a while (perf: ext4_create → find_inode_bit → recently_deleted, ~9 %
                # of the server's CPU); a collector in steady ingest deletes nothing between
                # commits
        summary: dict[str, Any] = {}
        for w in a.workers:
            mine = [r for r in runs if r["workers"] == w]
            summary[str(w)] = {
                k: statistics.median(r[k] for r in mine)
                for k in ("frame_MB_per_s", "events_per_s", "commit_p50_ms", "commit_p99_ms",
                          "server_cpu_cores", "postgres_cpu_cores", "server_peak_rss_MiB")
                if all(r[k] is not None for r in mine)}
            summary[str(w)]["errors"] = sum(r["errors"] for r in mine)
            summary[str(w)]["runs"] = len(mine)
        # ratio of the medians against the first worker count: of frames MB/s, or of events/s
        # in an events-only run (--frames 0)
        metric = "frame_MB_per_s" if a.frames else "events_per_s"
        base = summary[str(a.workers[0])][metric]
        for w in a.workers:
            summary[str(w)][f"{metric}_ratio_vs_first"] = (
                round(summary[str(w)][metric] / base, 2) if base else None)
        res = {
            "runs": runs, "median_by_workers": summary,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                       f"{round(psutil.virtual_memory().total / 2**30)} GiB, Python "
                       f"{platform.python_version()}",
        }
        print(json.dumps(res, indent=1))
        if a.json:
            a.json.write_text(json.dumps(res, indent=1))
    finally:
        if pg is not None:
            from conftest_pg import stop_postgres

            stop_postgres(pg)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
