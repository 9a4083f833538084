"""Settings of the recorder process, passed explicitly (never read from globals at import time).

Every threshold is named here with its unit and its source (DESIGN.md sections 5 and 9, or the
screenpipe / AgentNetTool anchors). Benchmarked defaults: see ``docs/benchmarks.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


#: Stored frame encodings (``Frame.format``).
FRAME_FORMATS = ("jpeg", "webp", "png")
#: JPEG chroma subsampling names → Pillow's ``subsampling`` argument.
JPEG_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


@dataclass(frozen=True)
class RecorderSettings:
    """Tunable behaviour of :class:`~demotrace.recorder.Recorder`.

    Times are in **seconds** (floats) unless the name ends in ``_ns``.

    - ``flush_interval_s``: maximum age of an unflushed event; the writer appends one batch
      (one transaction) at least this often (DESIGN.md §9: ≤ 0.5 s lost on ``kill -9``).
    - ``grab_interval_active_s`` / ``grab_interval_idle_s``: period of the screen grabs that
      feed the in-memory ring while input is active (default 4 Hz) / idle (default every 2 s).
      Input counts as active for ``idle_after_s`` after the last input event.
    - ``ring_seconds``, ``ring_max_frames``: the ring keeps frames at most this old (the newest
      one is always kept) and at most this many (1920×1080 BGRA = 8.3 MB each).
    - ``typing_gap_s``: a key press at least this long after the previous one starts a new
      typing run (its first key gets a pre-action frame); also the settle delay after typing
      stops (screenpipe: 500 ms after typing stops).
    - ``scroll_gap_s``: a wheel event at least this long after the previous one starts a new
      scroll burst (DESIGN.md §5: scroll events within ~0.5 s merge).
    - ``settle_scroll_s``: settle frame this long after the last wheel event (screenpipe: 400 ms).
    - ``settle_focus_s``: settle frame after an app / window switch (screenpipe: 300 ms);
      ``None`` disables it.
    - ``frame_format``: ``"jpeg"`` (default: libjpeg-turbo via Pillow, ``jpeg_quality`` 1–100,
      ``jpeg_subsampling`` ``"4:2:0"`` | ``"4:2:2"`` | ``"4:4:4"``), ``"webp"`` (lossy,
      ``webp_quality`` 0–100, ``webp_method`` 0–6) or ``"png"`` (lossless). JPEG q87 4:2:0 is the
      default since 2026-11-30 (WebP q60 m0 before): 2-4 ms per 960x540 frame instead of 7-12 ms,
      a PSNR and SSIM at least those of that WebP on a terminal, a Tk form, a web page and a nearly
      empty desktop, for 1.75-2.4x the bytes (bench/frame_codecs.py, docs/benchmarks.md; 2.4x on
      the nearly empty desktop, where JPEG's per-block floor shows). 4:2:0 halves the chroma
      resolution as WebP always does; 4:4:4 keeps coloured text sharper (terminal colours: +7 dB)
      for 15-35 % more bytes, which takes the overhead benchmark over its 50 MB / hour disk budget.
    - ``frame_scale``: stored image pixels per desktop pixel: 1.0, or 1/n (0.5, 0.25) for an
      integer box downscale; the ``Frame`` event records it so coordinates stay mappable
      (image x = (desktop x − bounds.x) × scale). Default 0.5: at 1920×1080 full-resolution
      frames cost about twice the encoder CPU and three times the disk (bench/recorder_overhead.py,
      docs/benchmarks.md); pass 1.0 where small text must stay legible.
    - ``pause_hotkey``: global pause / resume toggle, ``"+"``-joined W3C modifier names and a
      key (case-insensitive), default ``"Control+Alt+Shift+P"``; ``None`` disables it.
    - ``queue_warn_backlog``: unprocessed events above which health reports the writer as
      falling behind; ``queue_limit``: hard cap (≈ 70 MB of queued events; 500 s of a stalled
      writer at 400 events/s) — events beyond it are dropped **and counted** (reported by
      ``check_health`` and ``demotrace status``), never silently.
    - ``encode_backlog``: frames waiting for the encoder (8.3 MB each at 1920×1080) above which
      new frame requests are skipped and counted (reported by ``check_health``).
    """

    flush_interval_s: float = 0.5
    grab_interval_active_s: float = 0.25
    grab_interval_idle_s: float = 2.0
    idle_after_s: float = 2.0
    ring_seconds: float = 1.0
    ring_max_frames: int = 5
    typing_gap_s: float = 0.5
    scroll_gap_s: float = 0.5
    settle_scroll_s: float = 0.4
    settle_focus_s: float | None = 0.3
    frame_format: str = "jpeg"
    jpeg_quality: int = 87
    jpeg_subsampling: str = "4:2:0"
    webp_quality: int = 60
    webp_method: int = 0
    frame_scale: float = 0.5
    pause_hotkey: str | None = "Control+Alt+Shift+P"
    queue_warn_backlog: int = 10_000
    queue_limit: int = 200_000
    encode_backlog: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.flush_interval_s <= 5:
            raise ConfigError(f"flush_interval_s must be in (0, 5] seconds, got {self.flush_interval_s}")
        if self.grab_interval_active_s <= 0 or self.grab_interval_idle_s < self.grab_interval_active_s:
            raise ConfigError(
                "grab intervals must be > 0 with idle >= active, got"
                f" active={self.grab_interval_active_s} idle={self.grab_interval_idle_s}"
            )
        if self.ring_max_frames < 1:
            raise ConfigError(f"ring_max_frames must be >= 1, got {self.ring_max_frames}")
        if self.frame_format not in FRAME_FORMATS:
            raise ConfigError(f"frame_format must be one of {', '.join(FRAME_FORMATS)}, got {self.frame_format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be 1..100, got {self.jpeg_quality}")
        if self.jpeg_subsampling not in JPEG_SUBSAMPLING:
            raise ConfigError(f"jpeg_subsampling must be one of {', '.join(JPEG_SUBSAMPLING)}, got {self.jpeg_subsampling!r}")
        if not 0 <= self.webp_quality <= 100 or not 0 <= self.webp_method <= 6:
            raise ConfigError(
                f"webp_quality must be 0..100 and webp_method 0..6, got {self.webp_quality}, {self.webp_method}"
            )
        inv = 1.0 / self.frame_scale if self.frame_scale > 0 else 0
        if self.frame_scale <= 0 or self.frame_scale > 1 or abs(inv - round(inv)) > 1e-9:
            raise ConfigError(f"frame_scale must be 1/n for an integer n >= 1 (1.0, 0.5, 0.25), got {self.frame_scale}")
        if self.pause_hotkey is not None:
            parse_hotkey(self.pause_hotkey)

    @property
    def downscale_factor(self) -> int:
        """The integer n of ``frame_scale = 1/n``."""
        return int(round(1.0 / self.frame_scale))


_MODIFIER_ALIASES = {
    "ctrl": "Control", "control": "Control", "alt": "Alt", "shift": "Shift", "meta": "Meta",
    "super": "Super", "win": "Super", "altgr": "AltGraph", "altgraph": "AltGraph",
}


def parse_hotkey(spec: str) -> tuple[frozenset[str], str]:
    """Parse ``"Control+Alt+Shift+P"`` into (W3C modifier names, lower-case key).

    Raises:
        ConfigError: empty, no non-modifier key, or an unknown modifier name.
    """
    parts = [p.strip() for p in spec.split("+") if p.strip()]
    if not parts:
        raise ConfigError(f"hotkey {spec!r} is empty; write it like 'Control+Alt+Shift+P'")
    *mods, key = parts
    names = set()
    for m in mods:
        name = _MODIFIER_ALIASES.get(m.lower())
        if name is None:
            raise ConfigError(
                f"hotkey {spec!r}: unknown modifier {m!r} (use Control, Alt, Shift, Meta, Super, AltGraph)"
            )
        names.add(name)
    if key.lower() in _MODIFIER_ALIASES:
        raise ConfigError(f"hotkey {spec!r} needs a non-modifier key last, e.g. 'Control+Alt+Shift+P'")
    return frozenset(names), key.lower()
