"""Page-side cost of the demotrace extension per pointer press.

    .venv/bin/python bench/browser_capture.py [--elements 5000] [--presses 40]

Debian's Chromium in new headless mode (`--headless=new`, which loads extensions) opens a
synthetic page with N elements (nested divs, buttons, inputs, text), and Playwright presses the
mouse (CDP input: trusted events) on buttons spread over the page. A page listener registered on
`document` in the bubble phase — after the extension's capture-phase listener on `window` —
records `performance.now() - event.timeStamp` for each `pointerdown`. The same run without the
extension gives the baseline; the difference of medians is the synchronous work the content
script adds before the page sees the press (selector, accessible name, bounds, and in the top
frame the capped DOM snapshot). No native host is installed: reports go nowhere, which does not
change the page-side cost.

Prints one JSON line: machine, Chromium version, N, medians / p90 in ms with and without the
extension, and their difference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


def page_html(n: int) -> str:
    """A page with about ``n`` elements: rows of a div holding a label, an input, a button and
    text."""
    rows = []
    for i in range(n // 5):
        rows.append(f'<div class="row r{i % 7}"><label for="f{i}">Field {i}</label><input id="f{i}" name="f{i}">'
                    f'<button class="b" data-i="{i}">Button {i}</button><span>Some text {i}</span></div>')
    return ("<!doctype html><html><head><title>bench</title><style>.row{display:inline-block;width:240px}"
            "button{width:80px}</style></head><body>" + "".join(rows) + "</body></html>")


def run(n: int, presses: int, extension: bool) -> list[float]:
    from playwright.sync_api import sync_playwright

    from demotrace.capture.browser.install import EXTENSION_DIR

    args = list(ARGS)
    if extension:
        args += [f"--disable-extensions-except={EXTENSION_DIR}", f"--load-extension={EXTENSION_DIR}"]
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        page_file = Path(tmp) / "page.html"
        page_file.write_text(page_html(n))
        ctx = p.chromium.launch_persistent_context(str(Path(tmp) / "profile"), executable_path=CHROMIUM,
                                                   headless=True, args=args, viewport={"width": 1280, "height": 800})
        try:
            if extension:
                if not ctx.service_workers:
                    ctx.wait_for_event("serviceworker", timeout=60_000)
            page = ctx.new_page()
            page.goto(page_file.as_uri())
            page.evaluate("window.__lat = []; document.addEventListener('pointerdown', e => "
                          "window.__lat.push(performance.now() - e.timeStamp))")
            buttons = page.locator("button.b")
            count = buttons.count()
            for k in range(presses):
                b = buttons.nth((k * 7919) % min(count, 60))  # within the first screen
                box = b.bounding_box()
                assert box is not None
                page.mouse.move(box["x"] + 5, box["y"] + 5)
                page.mouse.down()
                page.mouse.up()
            lat = page.evaluate("window.__lat")
        finally:
            ctx.close()
    return [float(x) for x in lat]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--elements", type=int, default=5000)
    ap.add_argument("--presses", type=int, default=40)
    a = ap.parse_args()
    base = run(a.elements, a.presses, extension=False)
    ext = run(a.elements, a.presses, extension=True)

    def q(xs: list[float], p: float) -> float:
        xs = sorted(xs)
        return round(xs[min(len(xs) - 1, int(p * len(xs)))], 2)

    version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    print(json.dumps({
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}",
        "chromium": version, "elements": a.elements, "presses": len(ext),
        "baseline_median_ms": round(statistics.median(base), 2), "baseline_p90_ms": q(base, 0.9),
        "extension_median_ms": round(statistics.median(ext), 2), "extension_p90_ms": q(ext, 0.9),
        "added_median_ms": round(statistics.median(ext) - statistics.median(base), 2),
    }))


if __name__ == "__main__":
    main()
