"""Synthetic planted-secret and benign corpora for the privacy tests and bench/privacy_leaks.py.

Every value is synthetic: published test card numbers (4111 1111 1111 1111 is Visa's test
number), the IBAN example of the ISO 13616 / ECBS documentation (DE89 3704 0044 0532 0130 00),
AWS's documented example key id, made-up e-mails under example.com / example.org (RFC 2606),
phone numbers in the 555-01xx fiction range, documentation IP ranges (RFC 5737).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from demotrace.schema import Element, FocusChange, Frame, KeyDown, KeyUp, Marker, SessionManifest
from demotrace.schema.events import Event, Rect
from demotrace.spool import DataKey, Spool

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
FONT_SIZES = (8, 10, 12, 16)


def _jwt() -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return enc({"alg": "HS256", "typ": "JWT"}) + "." + enc({"sub": "user-7731", "name": "Test Person"}) + ".Qm9ndXNTaWduYXR1cmVGb3JUZXN0czEyMzQ1Njc4OTA"


#: kind -> (planted value, probes): a leak is any probe found in the output. Probes are the
#: value itself and its distinctive fragments (a card's last 8 digits with and without spaces).
PLANTED: dict[str, tuple[str, tuple[str, ...]]] = {
    "card": ("4111 1111 1111 1111", ("4111 1111 1111 1111", "4111111111111111")),
    "card2": ("5555 5555 5555 4444", ("5555 5555 5555 4444", "5555555555554444", "5555 4444")),
    "email": ("jane.roe@example.com", ("jane.roe@example.com", "jane.roe")),
    "phone": ("+1 415-555-0132", ("415-555-0132", "4155550132")),
    "iban": ("DE89 3704 0044 0532 0130 00", ("DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "0532 0130")),
    "ssn": ("536-22-8145", ("536-22-8145", "536228145")),
    "nino": ("AB 12 34 56 C", ("AB 12 34 56 C", "AB123456C")),
    "ip": ("198.51.100.23", ("198.51.100.23",)),
    "aws_key": ("AKIAIOSFODNN7EXAMPLE", ("AKIAIOSFODNN7EXAMPLE", "IOSFODNN7")),
    "github_token": ("ghp_R2d2C3poX9k7L1m0N8b6V4c2Z0a9S7d5F3g1", ("ghp_R2d2C3poX9k7L1m0N8b6V4c2Z0a9S7d5F3g1", "R2d2C3po", "V4c2Z0a9")),
    "slack_token": ("xoxb-2048-4096-Zq9Lm2Xp7Rt4Vb8N", ("xoxb-2048-4096-Zq9Lm2Xp7Rt4Vb8N", "Zq9Lm2Xp")),
    "stripe_key": ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "4eC39HqLyj")),
    "jwt": (_jwt(), (_jwt(), _jwt().split(".")[1][:20])),
    "password_label": ("password: Blue7Otter!Sky", ("Blue7Otter!Sky", "Blue7Otter")),
}
#: typed into a password field (AT-SPI role "password text"): must never appear.
PASSWORD_FIELD_VALUE = "Tr0ub4dor&3xyz"
#: typed / shown while a denied app (KeePassXC) has focus.
DENIED_VALUE = "VaultEntryMarmot42"

#: Benign lines (no personal data): numbers, dates, versions, prices, code, prose.
BENIGN: tuple[str, ...] = (
    "Meeting moved to 10:30 in room 4B, bring the Q3 slides.",
    "Budget 2027: 1,250,000 EUR, forecast up 3.5 percent.",
    "Release v2.14.1 fixes issue 4821 and closes PR 977.",
    "for i in range(10): total += i * 2",
    "Order 88231 shipped on 2026-11-28, tracking soon.",
    "The quick brown fox jumps over the lazy dog.",
    "See section 8.3 of the design brief for the deny-list.",
    "git checkout -b feature/export-osworld",
    "Temperature 21.5 C, humidity 40 percent, wind 12 km/h.",
    "Total: 3 items, 47.90 USD including tax.",
    "SELECT id, name FROM projects WHERE active = 1;",
    "Invoice due within 30 days of receipt.",
    "Chapter 12 ends on page 341.",
    "Use the token bucket algorithm for rate limits.",
    "Flight LH 456 departs gate B22 at 14:05.",
    "Resolution 1280x800, scale 1.0, 60 Hz.",
    "The password policy requires 12 characters.",
    "Build 20261130.3 passed 412 tests in 95 s.",
    "Call the support line during office hours.",
    "Version 3.11.7 of Python is installed.",
)

#: Benign shell commands typed into a terminal (bug bash 4 F13): their numbers are valid phone
#: numbers somewhere (``3000 3300`` a Brazilian shared-cost number, ``330000`` a German one,
#: ``250 2000000`` a Canadian one) but are not written like one; none may be flagged, or the
#: typed-secret rule blacks out the terminal for the rest of the session.
BENIGN_COMMANDS: tuple[str, ...] = (
    "seq 3000 3300",
    "seq 1 100",
    "sleep 3600",
    "head -n 2000 access.log",
    "seq 1 330000 | tail -1",
    "seq 250 2000000 | wc -l",
    "seq 5432 100000",
    "kill -9 12345",
    "ulimit -n 65536",
    "dd if=/dev/zero of=blob bs=4096 count=100000",
    # bug bash 6 M3: machine-local addresses and a code host's SSH remote are no one's data
    "ping -c1 127.0.0.1",
    "curl http://0.0.0.0:8000/health",
    "ssh -6 ::1 uptime",
    "git clone git@github.com:acme/tools.git",
)


def manifest(sid: str, started_utc: str = "2026-11-30T01:00:00Z", ended: bool = True) -> SessionManifest:
    """A test manifest."""
    return SessionManifest(session_id=sid, started_utc=started_utc, timezone="UTC", platform="test",
                           backend="synthetic", recorder_version="0", ended=ended)


class Builder:
    """Builds one synthetic session's events with increasing seq and t_ns (1 ms apart)."""

    def __init__(self, key: DataKey) -> None:
        self.key = key
        self.events: list[Event] = []
        self.blobs: dict[str, bytes] = {}
        self.t = 0
        self.seq = 0

    def add(self, cls: type, **fields: object) -> Event:
        ev = cls(seq=self.seq, t_ns=self.t, **fields)
        self.events.append(ev)
        self.seq += 1
        self.t += 1_000_000
        return ev

    def type_text(self, text: str) -> None:
        """KeyDown/KeyUp pairs producing ``text`` (US layout naming)."""
        for ch in text:
            if ch == "\n":
                key, code, txt = "Enter", "Enter", None
            elif ch == " ":
                key, code, txt = " ", "Space", " "
            elif ch.isalpha():
                key, code, txt = ch, f"Key{ch.upper()}", ch
            elif ch.isdigit():
                key, code, txt = ch, f"Digit{ch}", ch
            else:
                key, code, txt = ch, "Unidentified", ch
            self.add(KeyDown, key=key, code=code, text=txt)
            self.add(KeyUp, key=key, code=code, text=None)

    def focus(self, app: str, title: str, url: str | None = None, bounds: Rect = Rect(0, 0, 1280, 800)) -> None:
        self.add(FocusChange, window_id=100 + self.seq, app_id=app, title=title, url=url, pid=4242, bounds=bounds)

    def field(self, role: str, name: str) -> None:
        self.add(Element, role=role, name=name, source="atspi", bounds=Rect(10, 10, 200, 20))

    def frame(self, img: Image.Image, fmt: str = "png") -> None:
        buf = io.BytesIO()
        img.save(buf, format=fmt.upper())
        data = buf.getvalue()
        bid = self.key.content_id(data)
        self.blobs[bid] = data
        self.add(Frame, blob=bid, monitor=0, bounds=Rect(0, 0, img.width, img.height), width=img.width,
                 height=img.height, scale=1.0, captured_t_ns=self.t, reason="pointer_down", format=fmt)

    def write(self, spool: Spool, sid: str, started_utc: str = "2026-11-30T01:00:00Z") -> None:
        w = spool.create(manifest(sid, started_utc))
        for bid, data in self.blobs.items():
            w.put_blob(bid, data, "png")
        for i in range(0, len(self.events), 100):
            w.append(self.events[i:i + 100])
        w.close(duration_ns=self.events[-1].t_ns if self.events else 0)


def render(lines: list[tuple[str, int]], size: tuple[int, int] = (1280, 800)) -> Image.Image:
    """White 1280x800 frame with black DejaVu Sans text lines ``(text, px)``, 8 px line gap."""
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    y = 8
    for text, px in lines:
        d.text((16, y), text, fill="black", font=ImageFont.truetype(FONT, px))
        y += px + 10
    return img


#: xterm's default bitmap font (misc-fixed 6x13, Debian package xfonts-base).
BITMAP_FONT = "/usr/share/fonts/X11/misc/6x13-ISO8859-1.pcf.gz"


def render_bitmap(lines: list[str], size: tuple[int, int] = (1280, 800)) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """White frame with ``lines`` in xterm's 6x13 bitmap font, one per 13 px cell row from
    (2, 2) as in an xterm at the top-left; returns the frame and each line's cell box
    (desktop pixels, right / bottom exclusive)."""
    import gzip
    import tempfile

    from PIL import PcfFontFile

    with gzip.open(BITMAP_FONT) as fh, tempfile.TemporaryDirectory() as tmp:
        PcfFontFile.PcfFontFile(fh).save(f"{tmp}/fixed")
        font = ImageFont.load(f"{tmp}/fixed.pil")
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    boxes = []
    for i, text in enumerate(lines):
        d.text((2, 2 + 13 * i), text, fill="black", font=font)
        boxes.append((2, 2 + 13 * i, 2 + 6 * len(text), 2 + 13 * (i + 1)))
    return img, boxes


#: Desktop rectangle of the windows :func:`planted_session` types into (bottom of a 1280x800
#: screen; :func:`render` draws no text there at the corpus font sizes).
TYPED_STRIP = Rect(0, 720, 1280, 80)


def planted_session(key: DataKey) -> Builder:
    """A session typing every planted value, showing them on frames at 8/10/12/16 px, with a
    password field, a denied app and planted values in titles and URLs."""
    b = Builder(key)
    b.add(Marker, name="session_start")
    # the windows typed into sit in the bottom strip, below the frames' text: the seal blacks
    # out a window that received a flagged value in every later frame (typed-secret rule), and
    # the frames here test the OCR layer on the text above
    b.focus("XTerm", f"xterm — mail {PLANTED['email'][0]}", None, TYPED_STRIP)
    b.field("terminal", "terminal")
    for kind, (value, _) in PLANTED.items():
        b.type_text(f"note {value} ok\n" if kind != "password_label" else f"{value}\n")
    b.focus("Chromium", "Account settings", "https://bob:Blue7Otter!Sky@intranet.example.org/account?ip=198.51.100.23",
            TYPED_STRIP)
    b.field("password text", "Password")
    b.type_text(PASSWORD_FIELD_VALUE)
    b.field("entry", "Comment")
    b.type_text("fine thanks")
    b.focus("KeePassXC", f"Database — {DENIED_VALUE}", None, Rect(700, 450, 560, 330))  # bottom right
    b.type_text(DENIED_VALUE)
    b.t += 3_000_000_000  # a person's pause: this focus change is not one the keys above went to
    b.focus("XTerm", "xterm", None)
    for px in FONT_SIZES:
        b.frame(render([(f"{k}: {v}", px) for k, (v, _) in PLANTED.items() if k != "jwt"]
                       + [(PLANTED["jwt"][0][:60], px), (PLANTED["jwt"][0][60:], px)]))
    b.add(Marker, name="session_stop")
    return b


def all_probes() -> dict[str, tuple[str, ...]]:
    """kind -> probes, including the password-field and denied-app values."""
    out = {k: p for k, (_, p) in PLANTED.items()}
    out["password_field"] = (PASSWORD_FIELD_VALUE,)
    out["denied_app"] = (DENIED_VALUE,)
    return out


def save_png(img: Image.Image, path: Path) -> None:
    img.save(path)
