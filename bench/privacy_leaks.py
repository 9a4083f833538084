"""Privacy benchmark (issue 4): leaks, recall, false positives and sealing speed.

One command::

    .venv/bin/pip install -e ".[bench]"   # presidio-image-redactor, for the baseline
    .venv/bin/python bench/privacy_leaks.py [--out out/privacy_leaks.json] [--quick]
    .venv/bin/python bench/privacy_leaks.py --part half   # frames stored at scale 0.5 only (~5 min)

What it does, in one run on this machine:

1. Typed text: generates a planted corpus of structured PII (Luhn-valid card numbers, e-mails,
   phone numbers, IBANs with valid mod-97 check digits, US SSNs, UK NINOs, IPs, URL credentials)
   and secrets (cloud keys, tokens, JWTs, "password: …"), each typed key by key in its own run,
   plus a password typed into a password field; and a benign corpus. Both are written to a real
   encrypted spool session and sealed through ``seal_session`` (text layers only: frames are
   measured separately). Recall = share of planted values absent from the sealed bundle; false
   positives = share of benign runs in which anything was redacted.
2. Frames: for each font size (8, 10, 12, 16 px, DejaVu Sans) a sequence of 1280x800 frames
   like a session's: a screen of benign text, then one planted line added per frame. Sealed by
   our frame layer (changed-region OCR, boxes, re-scan) and, on the same frames, by Presidio's
   own ``ImageRedactorEngine`` (presidio-image-redactor) given the same offline pattern-only
   AnalyzerEngine (it then needs no spaCy model). Leaks: an independent tesseract pass at 4x
   over each redacted frame; a kind leaks at a size if any of its probes is read in any frame.
   Benign frames measure boxes painted over text that holds nothing personal.
3. Frames stored at the recorder's default scale 0.5 (``--part half`` runs this alone): the
   planted lines in DejaVu Sans 16/20/24 px and xterm's bitmap font; then real xterms in DejaVu
   Sans Mono 11-14 pt (bug bash 4, F1) with the fix options of :data:`HALF_OPTIONS` compared on
   the same frames: kinds leaked, benign words painted (proportional, terminal, prompts), CPU.
4. Throughput: frames per CPU-second (this process + its tesseract children; each tesseract
   limited to one thread with OMP_THREAD_LIMIT=1) = frames/s per core; wall time too.
"""

from __future__ import annotations

import argparse
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

os.environ["OMP_THREAD_LIMIT"] = "1"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from PIL import Image  # noqa: E402

from demotrace.paths import Paths  # noqa: E402
from demotrace.privacy.bundle import open_bundle  # noqa: E402
from demotrace.privacy.pipeline import RedactionPipeline  # noqa: E402
from demotrace.privacy.policy import default_policy  # noqa: E402
from demotrace.privacy.redact_image import FrameRedactor, ocr_words  # noqa: E402
from demotrace.privacy.redact_text import _analyzer  # noqa: E402
from demotrace.privacy.seal import FRAME_BATCH, seal_session  # noqa: E402
from demotrace.schema import KeyDown, Marker, PointerDown, TextInput  # noqa: E402
from demotrace.spool import DataKey, Spool  # noqa: E402
from privacy_corpus import BENIGN, FONT_SIZES, PASSWORD_FIELD_VALUE, PLANTED, Builder, render, render_bitmap  # noqa: E402
from _machine import cpu_model  # noqa: E402  (bench/ is on sys.path when run)

RNG = random.Random(20261130)


# -- synthetic generators ---------------------------------------------------------------------
def luhn_complete(prefix: str, length: int) -> str:
    body = prefix + "".join(RNG.choice("0123456789") for _ in range(length - len(prefix) - 1))
    total = 0
    for i, d in enumerate(reversed(body)):
        n = int(d)
        if i % 2 == 0:
            n = n * 2 - 9 if n * 2 > 9 else n * 2
        total += n
    return body + str((10 - total % 10) % 10)


def iban_de() -> str:
    bban = "".join(RNG.choice("0123456789") for _ in range(18))
    check = 98 - int(bban + "131400") % 97
    s = f"DE{check:02d}{bban}"
    return " ".join(s[i:i + 4] for i in range(0, len(s), 4))


def gen_pii() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for _ in range(25):
        c = luhn_complete(RNG.choice(["4", "51", "55", "4000"]), 16)
        out.append(("card", " ".join(c[i:i + 4] for i in range(0, 16, 4)) if RNG.random() < 0.6 else c))
    for i in range(25):
        out.append(("email", f"{RNG.choice(['ana', 'li', 'omar', 'kim', 'sam'])}.{RNG.choice(['roe', 'doe', 'ng', 'ito'])}{i}@example.{RNG.choice(['com', 'org', 'net'])}"))
    for _ in range(15):
        out.append(("phone", f"+1 {RNG.choice(['415', '212', '312'])}-555-01{RNG.randint(0, 99):02d}"))
    for _ in range(10):
        out.append(("phone", f"+44 20 7946 0{RNG.randint(0, 999):03d}"))
    for _ in range(20):
        out.append(("iban", iban_de()))
    for _ in range(15):
        area = RNG.choice([n for n in range(100, 666)])
        out.append(("ssn", f"{area:03d}-{RNG.randint(1, 99):02d}-{RNG.randint(1, 9999):04d}"))
    for _ in range(15):
        out.append(("nino", f"{RNG.choice(['AB', 'CE', 'JG', 'KM', 'TH', 'WL'])} {RNG.randint(10, 99)} {RNG.randint(10, 99)} {RNG.randint(10, 99)} {RNG.choice('ABCD')}"))
    for _ in range(15):
        out.append(("ip", f"{RNG.choice(['192.0.2', '198.51.100', '203.0.113'])}.{RNG.randint(1, 254)}"))
    for _ in range(10):
        out.append(("url_credentials", f"https://svc{RNG.randint(1, 99)}:Pw{RNG.randint(1000, 9999)}x@files.example.org/share"))
    return out


def gen_secrets() -> list[tuple[str, str]]:
    al = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    up = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    r = lambda a, n: "".join(RNG.choice(a) for _ in range(n))  # noqa: E731
    out = []
    for _ in range(10):
        out.append(("aws_key", "AKIA" + r(up, 16)))
        out.append(("github_token", "ghp_" + r(al, 36)))
        out.append(("slack_token", f"xoxb-{RNG.randint(1000, 9999)}-{RNG.randint(1000, 9999)}-" + r(al, 20)))
        out.append(("stripe_key", "sk_live_" + r(al, 24)))
        out.append(("gcp_key", "AIza" + r(al + "_-", 35)))
        out.append(("jwt", PLANTED["jwt"][0][:37] + r(al, 30) + "." + r(al + "_-", 43)))
        out.append(("password_label", "password: " + r(al, 12) + "!"))
    return out


TEMPLATES = ["{v}", "please send it to {v} thanks", "ref: {v};", "my details {v}\n", "use {v} for this"]
BENIGN_EXTRA = [
    "Sprint {n} review moved to {h}:{m:02d}, room {r}.",
    "Ticket {n} closed after {r} comments.",
    "The build took {r} minutes and {n} seconds.",
    "Quarterly revenue grew {r}.{h} percent to {n} thousand.",
    "Order {n} ships in {r} days.",
    "Page {r} of {n}",
    "ssh deploy@build-{r} 'systemctl restart app'",
    "version {r}.{h}.{m} released on 2026-{h:02d}-{r:02d}",
]


def gen_benign(n: int) -> list[str]:
    out = list(BENIGN)
    while len(out) < n:
        t = RNG.choice(BENIGN_EXTRA)
        out.append(t.format(n=RNG.randint(100, 99999), h=RNG.randint(1, 12), m=RNG.randint(0, 59), r=RNG.randint(1, 28)))
    return out


def probes_of(value: str) -> list[str]:
    v = value.split("password: ")[-1]
    out = [v]
    if " " in v:
        out.append(v.replace(" ", ""))
    return out


# -- typed text -------------------------------------------------------------------------------
def typed_bench(tmp: Path) -> dict:
    paths = Paths(tmp / "typed").ensure()
    key = DataKey.create(paths.key_file)
    spool = Spool(paths.spool, key)
    b = Builder(key)
    b.add(Marker, name="session_start")
    b.focus("XTerm", "xterm")
    b.field("terminal", "terminal")
    planted = gen_pii() + gen_secrets()
    for kind, v in planted:
        b.add(PointerDown, x=1.0, y=1.0, button="left")
        b.type_text(RNG.choice(TEMPLATES).format(v=v))
    benign = gen_benign(200)
    b.add(PointerDown, x=2.0, y=2.0, button="left")
    benign_start = b.t
    for line in benign:
        b.add(PointerDown, x=1.0, y=1.0, button="left")
        b.type_text(line)
    b.field("password text", "Password")
    b.type_text(PASSWORD_FIELD_VALUE)
    b.write(spool, "typed")
    pipe = RedactionPipeline(default_policy(), ocr=False)
    t0 = time.perf_counter()
    rep = seal_session(paths, spool, "typed", default_policy(), pipeline=pipe)
    secs = time.perf_counter() - t0
    pipe.close()
    with open_bundle(paths, "typed") as bd:
        evs = list(bd.iter_events())
    # reconstruct the sealed typed stream per run (runs are separated by clicks)
    runs: list[tuple[int, str]] = []
    cur: list[str] = []
    cur_t = 0
    for e in evs:
        if isinstance(e, PointerDown):
            runs.append((cur_t, "".join(cur)))
            cur, cur_t = [], e.t_ns
        elif isinstance(e, KeyDown) and e.text:
            cur.append(e.text)
        elif isinstance(e, KeyDown) and e.key == "Enter":
            cur.append("\n")
        elif isinstance(e, TextInput):
            cur.append(e.text)
    runs.append((cur_t, "".join(cur)))
    all_text = "\n".join(t for _, t in runs)
    per_kind: dict[str, list[int]] = {}
    for kind, v in planted:
        leaked = any(p in all_text for p in probes_of(v))
        per_kind.setdefault(kind, [0, 0])
        per_kind[kind][0] += 1
        per_kind[kind][1] += int(leaked)
    benign_runs = [t for t_ns, t in runs if t_ns >= benign_start and t]
    fp = sum(1 for t in benign_runs if "<" in t and ">" in t)
    structured = {"card", "email", "phone", "iban", "ssn", "nino", "ip", "url_credentials"}
    n_s = sum(per_kind[k][0] for k in per_kind if k in structured)
    l_s = sum(per_kind[k][1] for k in per_kind if k in structured)
    return {
        "planted_values": len(planted),
        "per_kind": {k: {"n": n, "leaked": lk} for k, (n, lk) in sorted(per_kind.items())},
        "structured_pii_recall": round(1 - l_s / n_s, 4),
        "secrets_recall": round(1 - sum(per_kind[k][1] for k in per_kind if k not in structured)
                                / sum(per_kind[k][0] for k in per_kind if k not in structured), 4),
        "benign_runs": len(benign_runs),
        "benign_runs_with_redaction": fp,
        "false_positive_rate": round(fp / max(1, len(benign_runs)), 4),
        "password_field_leaks": int(PASSWORD_FIELD_VALUE in all_text),
        "dropped": rep.counts["dropped"],
        "seal_seconds": round(secs, 2),
    }


# -- frames -----------------------------------------------------------------------------------
FRAME_KINDS = ["card", "card2", "email", "phone", "iban", "ssn", "nino", "ip", "aws_key", "github_token",
               "slack_token", "stripe_key", "password_label"]


def frame_sequence(px: int, n_benign: int = 8) -> tuple[list[Image.Image], tuple[int, int, int, int]]:
    """Frames: benign screen, then one planted line added per frame. Returns frames and the
    box holding the planted lines (for the leak check)."""
    benign = [(b, px) for b in BENIGN[:n_benign]]
    frames = []
    for k in range(len(FRAME_KINDS) + 1):
        lines = benign + [(f"{kind} {PLANTED[kind][0]}", px) for kind in FRAME_KINDS[:k]]
        frames.append(render(lines))
    top = 8 + n_benign * (px + 10) - 4
    return frames, (0, top, 1280, min(800, top + len(FRAME_KINDS) * (px + 10) + 8))


def cpu_now() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def leaks_in(img: Image.Image, box: tuple[int, int, int, int]) -> set[str]:
    text = " ".join(w.text for w in ocr_words(img.crop(box), upscale=4))
    sq = text.replace(" ", "")
    return {k for k in FRAME_KINDS for p in PLANTED[k][1] if p in text or p.replace(" ", "") in sq}


def run_ours(frames: list[Image.Image]) -> tuple[list[Image.Image], float, float]:
    pol = default_policy()
    pipe = RedactionPipeline(pol)
    pipe.find(" ")  # build Presidio outside the timing
    c0, w0 = cpu_now(), time.perf_counter()
    out: list = []
    for i in range(0, len(frames), FRAME_BATCH):  # as `seal` does
        out += pipe.frames_batch(frames[i:i + FRAME_BATCH])
    c1, w1 = cpu_now(), time.perf_counter()
    pipe.close()
    assert all(o is not None for o in out), pipe.counts.dropped
    return out, c1 - c0, w1 - w0  # type: ignore[return-value]


def run_presidio(frames: list[Image.Image]) -> tuple[list[Image.Image], float, float]:
    from presidio_image_redactor import ImageAnalyzerEngine, ImageRedactorEngine, TesseractOCR

    pol = default_policy()
    eng = ImageRedactorEngine(image_analyzer_engine=ImageAnalyzerEngine(
        analyzer_engine=_analyzer(tuple(pol.redaction.entities)), ocr=TesseractOCR()))
    c0, w0 = cpu_now(), time.perf_counter()
    out = [eng.redact(f, fill=(0, 0, 0), entities=list(pol.redaction.entities),
                      score_threshold=pol.redaction.score_threshold) for f in frames]
    c1, w1 = cpu_now(), time.perf_counter()
    return out, c1 - c0, w1 - w0


def frames_bench(sizes: tuple[int, ...]) -> dict:
    res: dict = {"ours": {}, "presidio_image_redactor": {}}
    totals = {name: [0, 0.0, 0.0] for name in res}
    for px in sizes:
        frames, box = frame_sequence(px)
        for name, fn in (("ours", run_ours), ("presidio_image_redactor", run_presidio)):
            out, cpu, wall = fn(frames)
            leaked: set[str] = set()
            for img in out:
                leaked |= leaks_in(img, box)
            res[name][px] = {"frames": len(frames), "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
                             "frames_per_cpu_s": round(len(frames) / cpu, 3), "leaked_kinds": sorted(leaked)}
            totals[name][0] += len(frames)
            totals[name][1] += cpu
            totals[name][2] += wall
            print(f"[frames] {name} {px}px: {len(frames)} frames, cpu {cpu:.1f}s, leaked {sorted(leaked)}", file=sys.stderr)
    for name, (n, cpu, wall) in totals.items():
        res[name]["total"] = {"frames": n, "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
                              "frames_per_cpu_s": round(n / cpu, 3)}
    # worst case: every frame entirely new (a full screen of different text each time)
    pool = gen_benign(240)
    full = [render([(pool[(k * 30 + j) % len(pool)], 12) for j in range(30)]) for k in range(6)]
    # repeated 5 times, alternating, median reported: on this shared machine one 6-frame run
    # of either moves by +-20 % (two single runs disagreed on which one was faster)
    res["full_change_12px"] = {}
    reps: dict[str, list[tuple[float, float]]] = {"ours": [], "presidio_image_redactor": []}
    for _ in range(5):
        for name, fn in (("ours", run_ours), ("presidio_image_redactor", run_presidio)):
            _, cpu, wall = fn(full)
            reps[name].append((cpu, wall))
    for name, rs in reps.items():
        cpu = sorted(c for c, _ in rs)[len(rs) // 2]
        wall = sorted(w for _, w in rs)[len(rs) // 2]
        res["full_change_12px"][name] = {"frames": len(full), "repeats": len(rs), "median_cpu_s": round(cpu, 2),
                                         "median_wall_s": round(wall, 2), "frames_per_cpu_s": round(len(full) / cpu, 3),
                                         "all_frames_per_cpu_s": [round(len(full) / c, 3) for c, _ in rs]}
    return res


def oracle_x2(img: Image.Image) -> str:
    """Independent OCR of a half-scale frame: the tesseract command on a LANCZOS x2 upscale,
    block mode (psm 6); spaces removed (as tests/test_redact_image_scale.py)."""
    g = img.convert("L")
    g = g.resize((g.width * 2, g.height * 2), Image.Resampling.LANCZOS)
    with tempfile.NamedTemporaryFile(suffix=".png") as f:
        g.save(f.name)
        out = subprocess.run(["tesseract", f.name, "-", "--psm", "6"], capture_output=True, text=True, check=False).stdout
    return "".join(out.split())


def half_scale_bench() -> dict:
    """Frames stored at the recorder's default scale 0.5 (box-reduced 1280x800 screens, as
    the recorder's ``reduce(2)``): (a) the planted lines in DejaVu Sans at 16, 20 and 24 px
    desktop, sealed with ``scale=0.5``; a kind leaks when :func:`oracle_x2` reads a probe of it
    in the sealed frame, and counts as readable when it reads one in the raw frame; (b) the
    planted lines in xterm's 6x13 bitmap font (which no OCR setting reads at this scale): a
    line leaks unless its cell row is solid dark after sealing (every pixel grey <= 60)."""
    pol = default_policy()
    pipe = RedactionPipeline(pol)
    pipe.find(" ")
    res: dict = {}
    for px in (16, 20, 24):
        full = render([(f"{k} {PLANTED[k][0]}", px) for k in FRAME_KINDS])
        half = full.reduce(2)
        fr = FrameRedactor(pipe.find_unguarded, upscale=pol.redaction.ocr_upscale,
                           rescan_upscale=pol.redaction.ocr_rescan_upscale)
        c0 = cpu_now()
        out = fr.redact_batch([half], scale=0.5)[0]
        cpu = cpu_now() - c0
        raw_t, sealed_t = oracle_x2(half), oracle_x2(out.image)
        def kinds(t: str) -> list[str]:
            return sorted({k for k in FRAME_KINDS for p in PLANTED[k][1] if p.replace(" ", "") in t})
        res[f"dejavu_{px}px"] = {"readable_raw": kinds(raw_t), "leaked": kinds(sealed_t), "cpu_s": round(cpu, 2),
                                 "small_text_boxes": out.entities.get("SMALL_TEXT", 0)}
        print(f"[half] {px}px readable {kinds(raw_t)} leaked {kinds(sealed_t)}", file=sys.stderr)
    lines = [f"{k} {PLANTED[k][0]}" for k in FRAME_KINDS]
    full, cells = render_bitmap(lines)
    half = full.reduce(2)
    fr = FrameRedactor(pipe.find_unguarded, upscale=pol.redaction.ocr_upscale,
                       rescan_upscale=pol.redaction.ocr_rescan_upscale)
    c0 = cpu_now()
    out = fr.redact_batch([half], scale=0.5)[0]
    cpu = cpu_now() - c0
    import numpy as np

    g = np.asarray(out.image.convert("L"))
    leaked = [k for k, (x0, y0, x1, y1) in zip(FRAME_KINDS, cells)
              if g[y0 // 2 + 1:y1 // 2 - 1, x0 // 2 + 1:x1 // 2 - 1].max() > 60]
    res["xterm_bitmap_6x13"] = {"lines": len(lines), "leaked": leaked, "cpu_s": round(cpu, 2),
                                "readable_raw_by_ocr": sorted({k for k in FRAME_KINDS for p in PLANTED[k][1]
                                                               if p.replace(" ", "") in oracle_x2(half)})}
    print(f"[half] bitmap leaked rows {leaked}", file=sys.stderr)
    pipe.close()
    return res


#: A benign terminal screen: shell commands, code, paths, URLs without credentials. Shell
#: prompts ``user@host:~$`` are benign too (a login name and a host name, not an address; no
#: domain) but look like one, so they are counted apart (:data:`PROMPTS`).
MONO_BENIGN = (
    "$ ls -la /usr/share/doc/python3",
    "drwxr-xr-x 2 root root 4096 Nov 28 10:12 examples",
    "$ git log --oneline -3",
    "c4cdc3f tidy: delete_bundle drops a bundle's rows",
    "$ pip install -e '.[test]'",
    "Successfully installed demotrace-0.4.1",
    "def total(items): return sum(i.price for i in items)",
    "see https://docs.python.org/3/library/re.html",
    "$ grep -rn TODO src/ | wc -l",
    "$ cat config.yaml logging.conf",
    "image: registry.example.org/app:2.14.1",
    "curl -sS https://api.example.com/v1/status",
    "$ make test && make bench",
    "ping -c 3 mirror.example.net",
    "import numpy as np; a = np.zeros((8, 8))",
    "tail -f /var/log/syslog | grep kernel",
)
PROMPTS = ("anna@build-07:~$ make test", "dev@ci-runner-3:/srv/app$ ls", "root@web-02:/etc/nginx# nginx -t",
           "kim@laptop:~/src/demotrace$ git status")


#: xterm -fs point sizes of the monospaced screens: 11 / 12 / 13 / 14 pt are 15.3 / 16.7 / 18.1 /
#: 19.4 px glyphs at Xvfb's 100 dpi (19 / 20 / 22 / 24 px rows; 9.5-12 px at scale 0.5).
MONO_PT = (11, 12, 13, 14)


def xterm_screens(screens: list[list[str]], pt: int) -> list[Image.Image]:
    """Each of ``screens`` as a real xterm draws it (``xterm -fa 'DejaVu Sans Mono' -fs PT``, 80
    columns, at the top-left of a fresh 1280x800 Xvfb with no window manager, as the bug bash
    recorded it; the lines ``cat``'d from a file), box-reduced 2x as the recorder stores frames
    at its default scale 0.5. Synthetic renders of the same font (Pillow's FreeType, no hinting)
    were read better by OCR than xterm's and leaked less, so the bench uses the real terminal."""
    import mss
    import numpy as np
    from conftest import start_xvfb

    srv = start_xvfb()
    env = dict(os.environ, DISPLAY=srv.display)
    out: list[Image.Image] = []
    try:
        with tempfile.TemporaryDirectory() as tmp, mss.MSS(display=srv.display) as grab:
            for n, lines in enumerate(screens):
                f = Path(tmp) / f"screen{n}.txt"
                f.write_text("\n".join(lines) + "\n")
                term = subprocess.Popen(["xterm", "-fa", "DejaVu Sans Mono", "-fs", str(pt), "-geometry",
                                         f"80x{len(lines) + 1}+0+0", "-e", "sh", "-c", f"cat {f}; exec sleep 600"],
                                        env=env)
                try:
                    prev = None
                    deadline = time.monotonic() + 20
                    while True:  # until two grabs 0.3 s apart agree and show dark glyphs on white
                        time.sleep(0.3)
                        shot = grab.grab({"left": 0, "top": 0, "width": 1280, "height": 800})
                        img = Image.frombytes("RGB", shot.size, shot.bgra, "raw", "BGRX")
                        a = np.asarray(img.convert("L"))
                        if prev is not None and np.array_equal(a, prev) and (a > 200).sum() > 10000 and \
                                ((a < 100) & (np.arange(a.shape[0])[:, None] < 40)).sum() > 50:
                            break
                        assert time.monotonic() < deadline, f"xterm at {pt} pt did not draw screen {n}"
                        prev = a
                finally:
                    term.kill()
                    term.wait()
                out.append(img.reduce(2))
    finally:
        srv.proc.terminate()
        srv.proc.wait(5)
    return out


def oracle(img: Image.Image, up: int) -> str:
    """:func:`oracle_x2` at another upscale (the tests' check OCR at x2 and x4)."""
    g = img.convert("L")
    g = g.resize((g.width * up, g.height * up), Image.Resampling.LANCZOS)
    with tempfile.NamedTemporaryFile(suffix=".png") as f:
        g.save(f.name)
        out = subprocess.run(["tesseract", f.name, "-", "--psm", "6"], capture_output=True, text=True, check=False).stdout
    return "".join(out.split())


def _kinds_in(text: str) -> set[str]:
    t = text.lower()
    return {k for k in FRAME_KINDS for p in PLANTED[k][1] if p.replace(" ", "").lower() in t}


def mono_planted_screens() -> list[list[str]]:
    """Terminal screens of the planted lines: each between two benign terminal lines (a screen
    of planted lines alone gets painted by its neighbours' boxes), 7 planted lines a screen."""
    out = []
    for g in range(0, len(FRAME_KINDS), 7):
        lines: list[str] = []
        for j, k in enumerate(FRAME_KINDS[g:g + 7]):
            lines += [MONO_BENIGN[(2 * j) % len(MONO_BENIGN)], f"{k} {PLANTED[k][0]}",
                      MONO_BENIGN[(2 * j + 1) % len(MONO_BENIGN)]]
        out.append(lines)
    return out


#: A terminal screen with e-mail addresses as the bug bash saw them (``cat`` of notes, ``git
#: log --format=%ae``), and the probes of a leak: each address's local part (the check OCR reads
#: the "@" as ``g``, so the whole address is never a probe).
EMAIL_SCREEN = ("$ cat notes.txt", "Contact: jane.roe@example.net", "reply to omar.ng42@example.com before Friday",
                "                                   kim.ito@example.org", "$ git log -1 --format=%ae",
                "sam.doe7@example.org", "$ ls -la /usr/share/doc/python3")
EMAIL_SCREEN_PROBES = ("jane.roe", "omar.ng42", "kim.ito", "sam.doe7")


def painted_share(raw: Image.Image, sealed: Image.Image, words: list) -> int:
    """How many of ``words`` (OCR'd on ``raw``) the seal painted: at least half of the word's
    box turned solid black (0, 0, 0) where the raw frame was not."""
    import numpy as np

    a, b = np.asarray(raw.convert("RGB")), np.asarray(sealed.convert("RGB"))
    painted = (b.max(axis=2) == 0) & (a.max(axis=2) != 0)
    n = 0
    for w in words:
        x0, y0, x1, y1 = w.box
        cut = painted[max(0, y0):y1, max(0, x0):x1]
        n += int(cut.size > 0 and cut.mean() >= 0.5)
    return n


#: The fixes compared for bug bash 4's monospaced e-mail leak (docs/benchmarks.md): FrameRedactor
#: settings. "main" = the code before the fix.
HALF_OPTIONS: dict[str, dict] = {
    "main": {"lenient_email": False, "block_read": False},
    "a_lenient_email": {"lenient_email": True, "block_read": False},
    "b_block_read": {"lenient_email": False, "block_read": True},
    "a+b": {"lenient_email": True, "block_read": True},
    "c_small_8": {"lenient_email": False, "block_read": False, "small_text_px": 8},
    "c_small_9": {"lenient_email": False, "block_read": False, "small_text_px": 9},
    "c_small_10": {"lenient_email": False, "block_read": False, "small_text_px": 10},
}


def half_scale_options_bench(options: list[str]) -> dict:
    """Each option of :data:`HALF_OPTIONS` on frames stored at scale 0.5: kinds leaked in
    real-xterm monospaced screens at :data:`MONO_PT` (:func:`mono_planted_screens`, plus
    :data:`EMAIL_SCREEN` counted as ``email_screen:<local part>``) and in the proportional
    planted lines (DejaVu Sans 16/20/24 px); a leak = the check OCR (tesseract command, LANCZOS
    x2 or x4, block mode) reads a probe in the sealed frame. Benign cost: words painted on
    proportional benign screens (16/20/24 px, 20 lines each), on the monospaced
    :data:`MONO_BENIGN` screen and, apart, on :data:`PROMPTS`; the words are those a reference
    OCR (tesseract at x4, block mode) reads on the raw half-scale frame; and the words (boxes)
    the seal flagged per entity on those benign screens. CPU: the seal's, this process plus
    children, over all the option's frames."""
    pol = default_policy()
    pipe = RedactionPipeline(pol)
    pipe.find(" ")
    screens = mono_planted_screens()
    mono: dict[str, list[Image.Image]] = {}
    email_screen: dict[str, Image.Image] = {}
    benign_mono: dict[str, Image.Image] = {}
    prompts: dict[str, Image.Image] = {}
    for pt in MONO_PT:
        frames = xterm_screens([*screens, list(EMAIL_SCREEN), list(MONO_BENIGN), list(PROMPTS)], pt)
        key = f"xterm_{pt}pt"
        mono[key], email_screen[key], benign_mono[key], prompts[key] = frames[:-3], frames[-3], frames[-2], frames[-1]
        print(f"[half options] {key}: email screen raw readable "
              f"{[p for p in EMAIL_SCREEN_PROBES if p in (oracle(frames[-3], 2) + oracle(frames[-3], 4)).lower()]}",
              file=sys.stderr)
    prop = {f"dejavu_{px}px": [render([(f"{k} {PLANTED[k][0]}", px) for k in FRAME_KINDS]).reduce(2)]
            for px in (16, 20, 24)}
    pool = gen_benign(80)
    benign_prop = [render([(t, px) for t in pool[i * 20:(i + 1) * 20]]).reduce(2) for i, px in enumerate((16, 20, 24))]
    ref_words = {id(im): ocr_words(im, upscale=4, psm=6)
                 for im in [*benign_prop, *benign_mono.values(), *prompts.values()]}
    res: dict = {}
    for name in options:
        kw = HALF_OPTIONS[name]
        cpu = 0.0

        ents: dict[str, int] = {}

        def seal(im: Image.Image, kw: dict = kw, ents: dict[str, int] = ents) -> Image.Image:
            nonlocal cpu
            fr = FrameRedactor(pipe.find_unguarded, upscale=pol.redaction.ocr_upscale,
                               rescan_upscale=pol.redaction.ocr_rescan_upscale, **kw)
            c0 = cpu_now()
            r = fr.redact_batch([im], scale=0.5)[0]
            cpu += cpu_now() - c0
            fr.close()
            for e, n in r.entities.items():
                ents[e] = ents.get(e, 0) + n
            return r.image

        row: dict = {"mono_leaked": {}, "prop_leaked": {}}
        for key, frames in mono.items():
            leaked: set[str] = set()
            for im in frames:
                out = seal(im)
                leaked |= _kinds_in(oracle(out, 2)) | _kinds_in(oracle(out, 4))
            out = seal(email_screen[key])
            t = (oracle(out, 2) + "|" + oracle(out, 4)).lower()
            leaked |= {f"email_screen:{p}" for p in EMAIL_SCREEN_PROBES if p in t}
            row["mono_leaked"][key] = sorted(leaked)
        for key, frames in prop.items():
            out = seal(frames[0])
            row["prop_leaked"][key] = sorted(_kinds_in(oracle(out, 2)) | _kinds_in(oracle(out, 4)))
        ents.clear()  # from here on: benign screens only
        for label, ims in (("benign_prop", benign_prop), ("benign_mono", list(benign_mono.values())),
                           ("prompts", list(prompts.values()))):
            words = painted = 0
            for im in ims:
                ws = ref_words[id(im)]
                words += len(ws)
                painted += painted_share(im, seal(im), ws)
            row[label] = {"words": words, "painted": painted, "share": round(painted / max(1, words), 4)}
        row["benign_entities"] = dict(sorted(ents.items()))  # words flagged per entity on the benign screens
        row["cpu_s"] = round(cpu, 1)
        res[name] = row
        print(f"[half options] {name}: {json.dumps(row)}", file=sys.stderr)
    pipe.close()
    return res


def benign_frames_bench() -> dict:
    """Boxes painted on benign frames: words boxed / words OCR'd (12 px)."""
    pol = default_policy()
    pipe = RedactionPipeline(pol)
    fr = FrameRedactor(pipe.find_unguarded, rescan_upscale=pol.redaction.ocr_rescan_upscale)
    lines = gen_benign(60)
    words = boxed = 0
    for i in range(0, 60, 20):
        img = render([(t, 12) for t in lines[i:i + 20]])
        r = fr.redact(img, stream=i)
        words += len(ocr_words(img, upscale=3))
        boxed += len(r.boxes)
    pipe.close()
    return {"frames": 3, "words": words, "words_boxed": boxed, "false_positive_rate": round(boxed / max(1, words), 4)}


def machine() -> dict:
    cpu = cpu_model('unknown')
    tv = subprocess.run(["tesseract", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    from importlib.metadata import version

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "tesseract": tv,
            "presidio_analyzer": version("presidio-analyzer"),
            "presidio_image_redactor": version("presidio-image-redactor")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "privacy_leaks.json")
    ap.add_argument("--quick", action="store_true", help="only 10 and 16 px frames")
    ap.add_argument("--part", choices=["all", "half"], default="all",
                    help="half: only the frames stored at scale 0.5 (the half-scale cases and the fix options "
                         "for monospaced rows, about a third of the run); its JSON goes to --out with -half")
    ap.add_argument("--options", default=",".join(HALF_OPTIONS),
                    help="comma-separated HALF_OPTIONS to compare in the half-scale part")
    args = ap.parse_args()
    if args.part == "half":
        result = {"machine": machine(), "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "half_scale": half_scale_bench(),
                  "half_scale_options": half_scale_options_bench(args.options.split(","))}
        out = args.out.with_name(args.out.stem + "-half" + args.out.suffix)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1))
        return
    try:
        import presidio_image_redactor  # noqa: F401
    except ImportError:
        sys.exit("bench/privacy_leaks.py needs the baseline package: .venv/bin/pip install -e '.[bench]'")
    result: dict = {"machine": machine(), "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with tempfile.TemporaryDirectory() as tmp:
        result["typed"] = typed_bench(Path(tmp))
        print(json.dumps(result["typed"], indent=1), file=sys.stderr)
    result["benign_frames"] = benign_frames_bench()
    print(json.dumps(result["benign_frames"]), file=sys.stderr)
    result["half_scale"] = half_scale_bench()
    result["half_scale_options"] = half_scale_options_bench(args.options.split(","))
    result["frames"] = frames_bench((10, 16) if args.quick else FONT_SIZES)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
