"""Stored-frame codecs: encode time, bytes and visual quality per frame (recorder CPU lever).

One command: ``.venv/bin/python bench/frame_codecs.py [--repeat 7]``.

Three real 1920x1080 screens, each downscaled exactly as the recorder stores it (Pillow
``reduce(2)`` of the BGRX grab: 960x540 RGB, ``recorder.frames.frame_image``):

- **terminal**: an xterm (DejaVu Sans Mono 11) full of a directory listing, on Xvfb, grabbed with mss;
- **Tk form**: a Tk window with labels, entries, check buttons, a list box and buttons, on Xvfb;
- **web page**: Debian's Chromium (Playwright, ``executable_path``) rendering a synthetic page with
  headings, paragraphs, a table, coloured buttons and a gradient, 1920x1080 viewport;
- **bench desktop**: the screen of bench/recorder_overhead.py — openbox, a 150x45 xterm with a few
  words, the rest black: nearly empty, where JPEG's per-block floor costs the most against WebP.

For each codec setting: encode time (thread CPU, median of ``--repeat``), bytes, and quality of
the decoded image against the lossless 960x540 reference (the PNG frame): PSNR over RGB (dB)
and SSIM of the luma (Wang et al. 2004: Gaussian window σ = 1.5, K1 0.01, K2 0.03, computed
with OpenCV). Results go to the terminal (JSON) and, unless ``--no-write``, into the recorder
section of docs/benchmarks.md between ``<!-- bench:frame_codecs:start/end -->`` markers.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

WIDTH, HEIGHT = 1920, 1080
START = "<!-- bench:frame_codecs:start -->"
END = "<!-- bench:frame_codecs:end -->"

#: (label, Pillow save arguments). Pillow's JPEG ``subsampling``: 0 = 4:4:4, 2 = 4:2:0.
#: "opt" = optimised Huffman tables (``optimize=True``: lossless, smaller, ~1 ms more).
CODECS: list[tuple[str, dict[str, object]]] = [
    ("WebP lossy q60 m0 (before)", {"format": "WEBP", "quality": 60, "method": 0}),
    ("JPEG q85 4:2:0", {"format": "JPEG", "quality": 85, "subsampling": 2}),
    ("JPEG q85 4:2:0 opt", {"format": "JPEG", "quality": 85, "subsampling": 2, "optimize": True}),
    ("**JPEG q87 4:2:0 opt (now)**", {"format": "JPEG", "quality": 87, "subsampling": 2, "optimize": True}),
    ("JPEG q90 4:2:0 opt", {"format": "JPEG", "quality": 90, "subsampling": 2, "optimize": True}),
    ("JPEG q85 4:4:4", {"format": "JPEG", "quality": 85, "subsampling": 0}),
    ("JPEG q85 4:4:4 opt", {"format": "JPEG", "quality": 85, "subsampling": 0, "optimize": True}),
    ("JPEG q90 4:4:4 opt", {"format": "JPEG", "quality": 90, "subsampling": 0, "optimize": True}),
    ("PNG zlib 1 (lossless)", {"format": "PNG", "compress_level": 1}),
]

TK_FORM = r"""
import tkinter as tk
root = tk.Tk(); root.title("Expense claim"); root.geometry("1900x1040+0+0")
f = tk.Frame(root, padx=20, pady=20); f.pack(fill="both", expand=True)
fields = ["Employee name", "Cost centre", "Project code", "Amount (EUR)", "Date of expense", "Approver", "Notes"]
vals = ["Alex Example", "CC-4410 Operations", "PRJ-2026-031", "1,284.50", "2026-11-27", "Sam Sample", "Travel to the Q4 planning workshop"]
for i, (n, v) in enumerate(zip(fields, vals)):
    tk.Label(f, text=n + ":", anchor="w", width=18).grid(row=i, column=0, sticky="w", pady=4)
    e = tk.Entry(f, width=60); e.insert(0, v); e.grid(row=i, column=1, sticky="w", pady=4)
for j, t in enumerate(["Receipt attached", "Billable to client", "Requires VAT refund"]):
    c = tk.Checkbutton(f, text=t); c.grid(row=len(fields) + j, column=1, sticky="w"); (c.select() if j != 1 else None)
lb = tk.Listbox(f, width=50, height=14)
for k in range(40): lb.insert("end", f"Line item {k + 1:02d}  taxi / hotel / meal   {12.5 * (k + 1):8.2f} EUR")
lb.grid(row=0, column=2, rowspan=12, padx=30, sticky="n"); lb.selection_set(3)
bar = tk.Frame(f); bar.grid(row=20, column=0, columnspan=3, sticky="w", pady=20)
for t in ["Save draft", "Submit for approval", "Cancel"]: tk.Button(bar, text=t).pack(side="left", padx=6)
root.mainloop()
"""

WEB_PAGE = """<!doctype html><html><head><meta charset="utf-8"><style>
body{font-family:sans-serif;margin:0;color:#222}
header{background:linear-gradient(90deg,#1f4e8c,#3fa7d6);color:#fff;padding:18px 32px;font-size:26px}
main{display:flex;gap:32px;padding:24px 32px}
nav{width:260px;background:#f3f5f8;padding:16px;border-radius:8px;font-size:15px;line-height:2}
article{flex:1;font-size:16px;line-height:1.5}
table{border-collapse:collapse;margin:16px 0;width:100%}
td,th{border:1px solid #ccd;padding:6px 10px;text-align:left}
th{background:#e8eef7}
.btn{display:inline-block;padding:10px 18px;margin:6px;border-radius:6px;color:#fff;font-weight:bold}
.hero{height:180px;border-radius:12px;background:radial-gradient(circle at 30% 40%,#ffd27a,#e8673c 45%,#5b2a86)}
small{color:#666}
</style></head><body>
<header>Quarterly planning &mdash; team workspace</header>
<main><nav>Overview<br>Budgets<br>Invoices<br>Meetings<br>Reports<br>Settings<br>Help centre<br>Archive</nav>
<article><div class="hero"></div>
<h1>Budget review for Q4</h1>
<p>This page summarises the planned and actual spending of each cost centre. Figures are in euros and
were exported from the finance system on 27 November. <small>Last edited by a synthetic user.</small></p>
<table><tr><th>Cost centre</th><th>Planned</th><th>Actual</th><th>Variance</th><th>Owner</th></tr>
ROWS</table>
<span class="btn" style="background:#2e7d32">Approve</span><span class="btn" style="background:#c62828">Reject</span>
<span class="btn" style="background:#1565c0">Export CSV</span>
<p>PARA</p><p>PARA</p></article></main></body></html>"""


def xvfb() -> tuple[subprocess.Popen[bytes], str]:
    r, w = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", f"{WIDTH}x{HEIGHT}x24", "-nolisten", "tcp", "-noreset"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        num = f.readline().decode().strip()
    if not num:
        sys.exit("Xvfb did not start")
    return proc, ":" + num


def grab_x(display: str) -> object:
    import mss
    from PIL import Image

    with mss.MSS(display=display) as m:
        shot = m.grab(m.monitors[0])
        return Image.frombuffer("RGB", shot.size, bytes(shot.raw), "raw", "BGRX", 0, 1)


def x_screen(display: str, cmd: list[str], wait_class: str) -> object:
    env = dict(os.environ, DISPLAY=display)
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        subprocess.run(["xdotool", "search", "--sync", "--onlyvisible", "--class", wait_class], env=env,
                       timeout=30, check=True, stdout=subprocess.DEVNULL)
        time.sleep(1.5)  # let it paint
        return grab_x(display)
    finally:
        p.kill()
        p.wait()


def web_screen() -> object:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    rows = "".join(f"<tr><td>CC-{4400 + i} Operations {i}</td><td>{12000 + 731 * i:,}</td><td>{11800 + 690 * i:,}</td>"
                   f"<td>{200 + 41 * i:+,}</td><td>Owner {chr(65 + i)}</td></tr>" for i in range(9))
    para = ("Each line shows the planned amount, the amount spent so far and the difference. Variances above "
            "five percent are highlighted for the owner, who adds a short explanation before the review meeting. ") * 3
    html = WEB_PAGE.replace("ROWS", rows).replace("PARA", para)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = b.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            page.set_content(html)
            png = page.screenshot(type="png")
        finally:
            b.close()
    return Image.open(io.BytesIO(png)).convert("RGB")


def ssim_luma(a: object, b: object) -> float:
    import cv2
    import numpy as np

    x = np.asarray(a.convert("L"), dtype=np.float64)  # type: ignore[attr-defined]
    y = np.asarray(b.convert("L"), dtype=np.float64)  # type: ignore[attr-defined]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda z: cv2.GaussianBlur(z, (11, 11), 1.5)
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(m[5:-5, 5:-5].mean())


def psnr(a: object, b: object) -> float:
    import numpy as np

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)  # type: ignore[call-overload]
    mse = float((d * d).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255 * 255 / mse)


def measure(img: object, repeat: int) -> list[dict[str, object]]:
    from PIL import Image

    out = []
    for label, kw in CODECS:
        times = []
        data = b""
        for _ in range(repeat):
            buf = io.BytesIO()
            c0 = time.thread_time_ns()
            img.save(buf, **kw)  # type: ignore[attr-defined]
            times.append((time.thread_time_ns() - c0) / 1e6)
            data = buf.getvalue()
        dec = Image.open(io.BytesIO(data)).convert("RGB")
        out.append({"codec": label, "ms": round(statistics.median(times), 2), "kb": round(len(data) / 1000, 1),
                    "psnr_db": round(psnr(img, dec), 2), "ssim": round(ssim_luma(img, dec), 4)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--save-dir", default=None, help="also save the reference PNGs here")
    ns = ap.parse_args()
    for exe in ("Xvfb", "xterm", "xdotool", "openbox"):
        if shutil.which(exe) is None:
            sys.exit(f"{exe} not found; run scripts/bootstrap.sh")
    proc, display = xvfb()
    try:
        term = x_screen(display, ["xterm", "-fa", "DejaVu Sans Mono", "-fs", "11", "-geometry", "230x62+0+0", "-e",
                                  "sh", "-c", "ls -l --color=always /usr/bin | head -200; sleep 600"], "xterm")
        tkf = x_screen(display, [sys.executable, "-c", TK_FORM], "Tk")
        # the overhead benchmark's screen: openbox, a 150x45 xterm with a few typed words, black root
        wm = subprocess.Popen(["openbox", "--sm-disable"], env=dict(os.environ, DISPLAY=display),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1.0)
            words = "\\n".join(["report meeting", "quarter invoice", "meeting planning", "summary review"] * 3)
            bare = x_screen(display, ["xterm", "-geometry", "150x45+0+0", "-e", "sh", "-c", f"printf '{words}\\n'; sleep 600"],
                            "xterm")
        finally:
            wm.kill()
            wm.wait()
    finally:
        proc.terminate()
        proc.wait()
    web = web_screen()
    la = round(os.getloadavg()[0], 2)
    results = {}
    for name, full in [("terminal", term), ("Tk form", tkf), ("web page", web), ("bench desktop", bare)]:
        small = full.reduce(2)  # type: ignore[attr-defined]  # = frame_image at frame_scale 0.5
        if ns.save_dir:
            Path(ns.save_dir).mkdir(parents=True, exist_ok=True)
            small.save(Path(ns.save_dir) / f"{name.replace(' ', '_')}.png")
        results[name] = measure(small, ns.repeat)
    res = {"load_avg": [la, round(os.getloadavg()[0], 2)], "results": results,
           "started_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(json.dumps(res, indent=1))
    if not ns.no_write:
        write(res)


def write(res: dict[str, object]) -> None:
    from PIL import features

    results: dict[str, list[dict[str, object]]] = res["results"]  # type: ignore[assignment]
    names = list(results)
    lines = [START,
             (f"Stored-frame codecs (`bench/frame_codecs.py`, {res['started_utc']}, load {res['load_avg'][0]} → "  # type: ignore[index]
              f"{res['load_avg'][1]}, Pillow with libjpeg-turbo {features.version_feature('libjpeg_turbo')} / libwebp {features.version('webp')}): "  # type: ignore[index]
              "one 960x540 frame (a 1920x1080 screen at scale 0.5) per content; encode ms = thread CPU, median;"),
             "PSNR (RGB) and SSIM (luma) of the decoded frame against the lossless one.", "",
             "| codec | " + " | ".join(f"{n} ms / KB / PSNR dB / SSIM" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for i, (label, _) in enumerate(CODECS):
        cells = []
        for n in names:
            r = results[n][i]
            cells.append(f"{r['ms']} / {r['kb']} / {r['psnr_db']} / {r['ssim']}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", END]
    doc = REPO / "docs" / "benchmarks.md"
    text = doc.read_text()
    block = "\n".join(lines)
    if START in text and END in text:
        text = text[:text.index(START)] + block + text[text.index(END) + len(END):]
    else:  # inside the recorder section, before its end marker
        anchor = "<!-- bench:recorder_overhead:end -->"
        text = text.replace(anchor, block + "\n\n" + anchor) if anchor in text else text + "\n" + block + "\n"
    doc.write_text(text)
    print(f"updated {doc}")


if __name__ == "__main__":
    main()
