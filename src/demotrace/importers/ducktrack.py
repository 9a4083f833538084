"""Importer for DuckTrack / AgentNetTool recording folders.

Layout (DuckTrack ``ducktrack/recorder.py``, AgentNetTool ``api/core/recorder.py``)::

    events.jsonl       one JSON object per line: time_stamp (s, time.perf_counter), action
                       move|click|scroll|press|release|pause|resume, x, y (logical points),
                       button, pressed, dx, dy, name (pynput key: "a", "enter"; AgentNetTool also
                       pynput_key: "'a'", "Key.enter", "<65>")
    metadata.json      system, screen_width / screen_height (logical points of the main
                       monitor), scroll_direction, start_time (local wall time, no zone),
                       obs_record_state_timings / video_start_timestamp (perf_counter seconds)
    *.mp4              optional OBS screen video
    top_window.jsonl   optional (AgentNetTool): {time_stamp, top_window_name}
    element.jsonl      optional (AgentNetTool): {time_stamp, a11y_tree: {AXRole, AXTitle,
                       AXDescription, AXFrame {x, y, w, h}, …}}

Mapping to schema v1:

- ``t_ns = round((time_stamp − t0) · 1e9)`` with ``t0`` the first line of events.jsonl; ``seq``
  is the merged order (file order within events.jsonl).
- Coordinates: DuckTrack's pynput reports **logical points** (macOS: fractions of a point).
  Physical pixels = points × ``scale``. metadata.json gives only the logical size, so the
  scale comes from (1) ``DuckTrackConfig.scale`` if given, else (2) the video width divided
  by ``screen_width`` when a video is present, else (3) **assumption**: 2.0 on macOS
  (``system == "Darwin"``; every Mac laptop since 2016 has a 2× Retina backing store) and 1.0
  elsewhere. The scale used is stored in the manifest (``extra["scale"]``).
- Keys: pynput names → W3C ``key`` / ``code`` (:data:`PYNPUT_KEYS`); characters get the
  US-position ``code`` of that character (the format records no scan code), ``text`` = the
  character if printable. Repeats on macOS come as presses without release: the reducer
  treats a press of a held key as auto-repeat.
- Scroll: ``dy`` / ``dx`` are pynput's values (``dy > 0`` = content up), unit "tick". pynput
  reports the content direction after the system's natural-scrolling inversion; DuckTrack's
  ``scroll_direction`` (−1 with natural scrolling) is the factor its *playback* applies when
  re-posting through pyautogui, so it is stored in the manifest, not applied. Set
  ``DuckTrackConfig.scroll_sign`` = −1 to flip recordings made otherwise.
- ``click`` pressed true/false → ``pointer_down`` / ``pointer_up``; ``pause`` / ``resume`` →
  markers; ``session_start`` / ``session_stop`` markers and a ``screen_config`` are added.
- Video: for each discrete action (button press, key press that is not a repeat, first wheel
  event after a pause of ``scroll_gap_s``) the newest video frame whose presentation time
  (``video_start + pts``) is strictly before the action is decoded with PyAV, encoded
  (WebP) and stored as an encrypted blob with a ``frame`` event (``captured_t_ns`` = its
  presentation time, reason ``"video"``). Video start: ``video_start_timestamp``
  (AgentNetTool), else OBS ``OBS_WEBSOCKET_OUTPUT_STARTED``, else the first event (assumed,
  ``extra["video_start_assumed"]``).

Malformed input (**decision**): by default one bad line aborts the import with
:class:`~demotrace.errors.MalformedInputError` naming the file and line; the partly written
new session is deleted, and the source folder and every other session are untouched (nothing
already imported is lost). With ``skip_bad_lines=True`` bad lines are skipped and counted
(``ImportResult.skipped``, manifest ``extra["skipped_lines"]``).
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MalformedInputError
from ..schema.events import (
    Element,
    Event,
    FocusChange,
    Frame,
    KeyDown,
    KeyUp,
    Marker,
    Monitor,
    PointerDown,
    PointerMove,
    PointerUp,
    Rect,
    ScreenConfig,
    Wheel,
)
from ..schema.manifest import SessionManifest

#: pynput ``Key`` names → (W3C key, W3C code, text).
PYNPUT_KEYS: dict[str, tuple[str, str, str | None]] = {
    "alt": ("Alt", "AltLeft", None), "alt_l": ("Alt", "AltLeft", None),
    "alt_r": ("Alt", "AltRight", None), "alt_gr": ("AltGraph", "AltRight", None),
    "backspace": ("Backspace", "Backspace", None), "caps_lock": ("CapsLock", "CapsLock", None),
    "cmd": ("Meta", "MetaLeft", None), "cmd_l": ("Meta", "MetaLeft", None),
    "cmd_r": ("Meta", "MetaRight", None), "ctrl": ("Control", "ControlLeft", None),
    "ctrl_l": ("Control", "ControlLeft", None), "ctrl_r": ("Control", "ControlRight", None),
    "delete": ("Delete", "Delete", None), "down": ("ArrowDown", "ArrowDown", None),
    "end": ("End", "End", None), "enter": ("Enter", "Enter", None),
    "esc": ("Escape", "Escape", None), "home": ("Home", "Home", None),
    "left": ("ArrowLeft", "ArrowLeft", None), "page_down": ("PageDown", "PageDown", None),
    "page_up": ("PageUp", "PageUp", None), "right": ("ArrowRight", "ArrowRight", None),
    "shift": ("Shift", "ShiftLeft", None), "shift_l": ("Shift", "ShiftLeft", None),
    "shift_r": ("Shift", "ShiftRight", None), "space": (" ", "Space", " "),
    "tab": ("Tab", "Tab", None), "up": ("ArrowUp", "ArrowUp", None),
    "insert": ("Insert", "Insert", None), "menu": ("ContextMenu", "ContextMenu", None),
    "num_lock": ("NumLock", "NumLock", None), "pause": ("Pause", "Pause", None),
    "print_screen": ("PrintScreen", "PrintScreen", None),
    "scroll_lock": ("ScrollLock", "ScrollLock", None),
    "media_play_pause": ("MediaPlayPause", "MediaPlayPause", None),
    "media_volume_mute": ("AudioVolumeMute", "AudioVolumeMute", None),
    "media_volume_down": ("AudioVolumeDown", "AudioVolumeDown", None),
    "media_volume_up": ("AudioVolumeUp", "AudioVolumeUp", None),
    "media_previous": ("MediaTrackPrevious", "MediaTrackPrevious", None),
    "media_next": ("MediaTrackNext", "MediaTrackNext", None),
}
PYNPUT_KEYS.update({f"f{i}": (f"F{i}", f"F{i}", None) for i in range(1, 25)})

_PUNCT_CODES = {
    "-": "Minus", "_": "Minus", "=": "Equal", "+": "Equal", "[": "BracketLeft", "{": "BracketLeft",
    "]": "BracketRight", "}": "BracketRight", "\\": "Backslash", "|": "Backslash",
    ";": "Semicolon", ":": "Semicolon", "'": "Quote", '"': "Quote", ",": "Comma", "<": "Comma",
    ".": "Period", ">": "Period", "/": "Slash", "?": "Slash", "`": "Backquote", "~": "Backquote",
    " ": "Space", "!": "Digit1", "@": "Digit2", "#": "Digit3", "$": "Digit4", "%": "Digit5",
    "^": "Digit6", "&": "Digit7", "*": "Digit8", "(": "Digit9", ")": "Digit0",
}
_BUTTONS = {"left": "left", "right": "right", "middle": "middle", "x1": "x1", "x2": "x2",
            "button8": "x1", "button9": "x2"}


def char_code(ch: str) -> str:
    """US-position W3C ``code`` of a typed character ("a"/"A" → "KeyA", "!" → "Digit1");
    a control character U+0001–U+001A maps to its letter's key; else "Unidentified"."""
    if len(ch) != 1:
        return "Unidentified"
    if ch.isascii() and ch.isalpha():
        return "Key" + ch.upper()
    if ch.isascii() and ch.isdigit():
        return "Digit" + ch
    if 1 <= ord(ch) <= 26:
        return "Key" + chr(ord(ch) + 64)
    return _PUNCT_CODES.get(ch, "Unidentified")


def map_key(name: str | None, pynput_key: str | None = None) -> tuple[str, str, str | None, int | None]:
    """pynput key description → ``(key, code, text, vk)`` (W3C values).

    ``name``: DuckTrack's ``key.char`` or ``key.name`` ("a", "enter", "shift_r");
    ``pynput_key``: AgentNetTool's ``str(key)`` ("'a'", "Key.enter", "<65>"), preferred when
    given; AgentNetTool's single-character ``name`` is then the physical key's base name and
    supplies ``code`` when the character does not ("'†'" with name "t" → code "KeyT").
    Raises ValueError for an empty description.
    """
    if pynput_key and name and len(name) == 1:
        # AgentNetTool: ``name`` is the physical key's base name ("t" for Option+T → "'†'")
        key, code, text, vk = map_key(None, pynput_key)
        if code == "Unidentified":
            code = char_code(name)
            if key == "Unidentified":
                key = name
        return key, code, text, vk
    desc = pynput_key if pynput_key else name
    if not desc:
        raise ValueError("key has no name")
    vk = None
    if desc.startswith("Key."):
        desc = desc[4:]
    elif len(desc) >= 3 and desc[0] == desc[-1] and desc[0] in "'\"":
        ch = desc[1:-1]
        ch = ch.encode("latin-1", "backslashreplace").decode("unicode_escape") if "\\" in ch else ch
        return ch, char_code(ch), ch if ch.isprintable() else None, None
    elif desc.startswith("<") and desc.endswith(">") and desc[1:-1].isdigit():
        return "Unidentified", "Unidentified", None, int(desc[1:-1])
    if desc in PYNPUT_KEYS:
        key, code, text = PYNPUT_KEYS[desc]
        return key, code, text, vk
    if len(desc) == 1:
        return desc, char_code(desc), desc if desc.isprintable() else None, None
    return "Unidentified", "Unidentified", None, vk


@dataclass(frozen=True)
class DuckTrackConfig:
    """Options of :func:`import_ducktrack`.

    ``scale``: physical pixels per logical point (``None``: from the video, else 2.0 on
    macOS, 1.0 elsewhere — see module docstring). ``scroll_sign``: factor applied to dx / dy
    (1 keeps pynput's values). ``video``: decode the .mp4 if present. ``skip_bad_lines``:
    skip and count malformed lines instead of aborting. ``scroll_gap_s``: a wheel event after
    this pause (seconds) is a new discrete action for frame extraction (0.5 s, as
    ``BuildSettings.scroll_merge_gap_ns``). ``frame_quality``: WebP quality 1–100.
    ``batch``: events per spool batch.
    """

    scale: float | None = None
    scroll_sign: int = 1
    video: bool = True
    skip_bad_lines: bool = False
    scroll_gap_s: float = 0.5
    frame_quality: int = 85
    batch: int = 2000


@dataclass
class ImportResult:
    """What :func:`import_ducktrack` wrote: ``session_id``, ``events`` (count),
    ``frames`` (frame events), ``skipped`` (bad lines skipped), ``skipped_lines``
    ("file:line" of the first 20), ``scale`` used, ``backward_timestamps`` (lines of
    events.jsonl whose time_stamp is earlier than the line before: kept, since the reducer
    orders by time and handles clock jumps, but counted so the summary can say so)."""

    session_id: str
    events: int = 0
    frames: int = 0
    skipped: int = 0
    skipped_lines: list[str] = field(default_factory=list)
    scale: float = 1.0
    backward_timestamps: int = 0


class _Lines:
    """Reads a JSONL file, yielding (line_number, object); malformed lines raise or are
    counted per the config."""

    def __init__(self, path: Path, result: ImportResult, skip: bool) -> None:
        self.path = path
        self.result = result
        self.skip = skip
        self.pos = 0

    def bad(self, lineno: int, reason: str) -> None:
        msg = f"{self.path.name} line {lineno}: {reason}"
        if not self.skip:
            raise MalformedInputError(f"{self.path}: line {lineno}: {reason}")
        self.result.skipped += 1
        if len(self.result.skipped_lines) < 20:
            self.result.skipped_lines.append(msg)

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with open(self.path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                self.pos += len(raw)
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    self.bad(lineno, f"not valid JSON text ({exc})")
                    continue
                if not isinstance(obj, dict):
                    self.bad(lineno, "not a JSON object")
                    continue
                ts = obj.get("time_stamp")
                if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
                    self.bad(lineno, f"missing or non-numeric time_stamp {ts!r}")
                    continue
                yield lineno, obj


def _num(obj: dict[str, Any], k: str) -> float:
    v = obj.get(k)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise ValueError(f"field {k!r} must be a number, got {v!r}")
    return float(v)


def _px(obj: dict[str, Any], k: str, scale: float) -> float:
    """Field ``k`` (logical points) × ``scale`` = physical pixels; ValueError when not a number
    or when the product is not finite (e.g. 1e308 × 2 overflows to inf)."""
    v = _num(obj, k) * scale
    if not math.isfinite(v):
        raise ValueError(f"field {k!r} = {obj.get(k)!r} is out of range (× scale {scale:g} is not finite)")
    return v


# Largest |t_ns| an event can hold: the schema's int64 nanoseconds (about 292 years).
_MAX_T_NS = 2**63 - 1


def read_metadata(folder: Path) -> dict[str, Any]:
    """Parse ``metadata.json``. Raises MalformedInputError if absent, not JSON, or without a
    numeric screen_width / screen_height."""
    path = folder / "metadata.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise MalformedInputError(f"{path}: missing (a DuckTrack folder has events.jsonl and metadata.json)") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedInputError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise MalformedInputError(f"{path}: not a JSON object")
    for k in ("screen_width", "screen_height"):
        if not isinstance(meta.get(k), (int, float)) or meta[k] <= 0:
            raise MalformedInputError(f"{path}: field {k!r} missing or not a positive number")
    return meta


class _Mapper:
    def __init__(self, t0: float, scale: float, sign: int, platform_source: str) -> None:
        self.t0 = t0
        self.scale = scale
        self.sign = sign
        self.source = platform_source

    def t(self, ts: float) -> int:
        """Seconds on the recording's clock → ns since the first event. ValueError when the
        result is not finite or does not fit int64 (the schema's ``t_ns``)."""
        v = (ts - self.t0) * 1e9
        if not math.isfinite(v) or abs(v) > _MAX_T_NS:
            raise ValueError(f"time_stamp {ts!r} is out of range ({ts - self.t0:.3g} s from the first event; "
                             f"at most ±{_MAX_T_NS / 1e9:.3g} s fit)")
        return round(v)

    def event(self, obj: dict[str, Any]) -> Event | None:
        """One events.jsonl object → an event with seq 0 (renumbered later). ValueError if
        malformed."""
        act = obj.get("action")
        t = self.t(obj["time_stamp"])
        s = self.scale
        if act == "move":
            return PointerMove(seq=0, t_ns=t, x=_px(obj, "x", s), y=_px(obj, "y", s))
        if act == "click":
            pressed = obj.get("pressed")
            if not isinstance(pressed, bool):
                raise ValueError(f"field 'pressed' must be true or false, got {pressed!r}")
            button = _BUTTONS.get(str(obj.get("button", "")).lower(), "unknown")
            cls = PointerDown if pressed else PointerUp
            return cls(seq=0, t_ns=t, x=_px(obj, "x", s), y=_px(obj, "y", s), button=button)  # type: ignore[arg-type]
        if act == "scroll":
            return Wheel(seq=0, t_ns=t, x=_px(obj, "x", s), y=_px(obj, "y", s),
                         dx=_num(obj, "dx") * self.sign, dy=_num(obj, "dy") * self.sign, unit="tick")
        if act in ("press", "release"):
            name = obj.get("name")
            pk = obj.get("pynput_key")
            if not isinstance(name, str) and not isinstance(pk, str):
                raise ValueError("key event without a 'name'")
            key, code, text, vk = map_key(name if isinstance(name, str) else None,
                                          pk if isinstance(pk, str) else None)
            cls2 = KeyDown if act == "press" else KeyUp
            return cls2(seq=0, t_ns=t, key=key, code=code, text=text, vk=vk)
        if act in ("pause", "resume"):
            return Marker(seq=0, t_ns=t, name=act)
        raise ValueError(f"unknown action {act!r}")

    def element(self, obj: dict[str, Any]) -> Event:
        tree = obj.get("a11y_tree")
        if not isinstance(tree, dict):
            raise ValueError("field 'a11y_tree' must be an object")
        frame = tree.get("AXFrame") or tree.get("frame")
        bounds = None
        if isinstance(frame, dict):
            s = self.scale
            bounds = Rect(_px(frame, "x", s), _px(frame, "y", s), _px(frame, "w", s), _px(frame, "h", s))
        name = tree.get("AXTitle") or tree.get("AXDescription") or tree.get("name")
        role = tree.get("AXRole") or tree.get("role")
        return Element(seq=0, t_ns=self.t(obj["time_stamp"]), role=str(role) if role else None,
                       name=str(name) if name else None, bounds=bounds, source=self.source)  # type: ignore[arg-type]

    def top_window(self, obj: dict[str, Any]) -> Event:
        name = obj.get("top_window_name")
        if not isinstance(name, str):
            raise ValueError("field 'top_window_name' must be a string")
        return FocusChange(seq=0, t_ns=self.t(obj["time_stamp"]), title=name)


def _first_timestamp(path: Path, lines: _Lines) -> float:
    """time_stamp of the first valid line. A bad line raises (names file and line) unless
    ``lines`` skips; MalformedInputError when there is no valid line (counting skipped ones)."""
    for _lineno, obj in lines:
        return float(obj["time_stamp"])
    res = lines.result
    if res.skipped:
        raise MalformedInputError(f"{path}: no valid events: all {res.skipped} non-empty line(s) are bad "
                                  f"(first: {res.skipped_lines[0]})")
    raise MalformedInputError(f"{path}: no events")


def _video_path(folder: Path) -> Path | None:
    vids = sorted(folder.glob("*.mp4"))
    return vids[0] if vids else None


def _triggers(path: Path, cfg: DuckTrackConfig) -> list[float]:
    """Times (seconds, event clock) of the discrete actions that need a frame before them."""
    out: list[float] = []
    held: set[str] = set()
    last_scroll = -math.inf
    res = ImportResult("")
    for _n, obj in _Lines(path, res, True):
        act = obj.get("action")
        ts = float(obj["time_stamp"])
        if act == "click" and obj.get("pressed") is True:
            out.append(ts)
        elif act == "press":
            k = str(obj.get("pynput_key") or obj.get("name"))
            if k not in held:
                out.append(ts)
            held.add(k)
        elif act == "release":
            held.discard(str(obj.get("pynput_key") or obj.get("name")))
        elif act == "scroll":
            if ts - last_scroll > cfg.scroll_gap_s:
                out.append(ts)
            last_scroll = ts
    out.sort()
    return out


def _video_frames(video: Path, start: float, triggers: list[float], t0: float, desk: Rect,
                  cfg: DuckTrackConfig, put_blob: Callable[[bytes], str]) -> list[Frame]:
    """Decode ``video`` once; for each trigger keep the newest frame presented strictly before
    it. Returns frame events (seq 0, renumbered later)."""
    import av

    frames: list[Frame] = []
    if not triggers:
        return frames
    try:
        container = av.open(str(video))
    except av.error.FFmpegError as exc:  # type: ignore[attr-defined]
        raise MalformedInputError(f"{video}: cannot be decoded: {exc}") from exc
    ti = 0
    prev: Any = None
    prev_t = 0.0

    def keep(frame: Any, ft: float) -> None:
        img = frame.to_image()
        buf = io.BytesIO()
        img.save(buf, format="WEBP", quality=cfg.frame_quality)
        blob = put_blob(buf.getvalue())
        cap = int(round((ft - t0) * 1e9))
        frames.append(Frame(seq=0, t_ns=cap, blob=blob, monitor=-1, bounds=desk, width=img.width,
                            height=img.height, scale=img.width / desk.width if desk.width else 1.0,
                            captured_t_ns=cap, reason="video", format="webp"))

    with container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.pts is None or frame.time is None:
                continue
            ft = start + float(frame.time)
            if ft >= triggers[ti]:
                if prev is not None:
                    keep(prev, prev_t)
                while ti < len(triggers) and triggers[ti] <= ft:
                    ti += 1
                if ti >= len(triggers):
                    break
            prev, prev_t = frame, ft
        else:
            if prev is not None and ti < len(triggers):
                keep(prev, prev_t)
    return frames


def import_ducktrack(
    folder: Path, spool: Any, *, name: str | None = None, config: DuckTrackConfig | None = None,
    progress: Callable[[int, int], None] | None = None, session_id: str | None = None,
) -> ImportResult:
    """Import one DuckTrack / AgentNetTool folder into ``spool`` (a
    :class:`demotrace.spool.Spool`) as a new encrypted session.

    ``name``: stored in the manifest (``extra["name"]``). ``progress(done, total)`` is called
    with bytes of events.jsonl read. Returns :class:`ImportResult`.

    Raises:
        ConfigError: ``config.scale`` is not a finite number > 0.
        MalformedInputError: missing events.jsonl / metadata.json, or a bad line (file and line
            number named: not JSON text, a field of the wrong type, a time_stamp or coordinate
            out of range) unless ``config.skip_bad_lines``; no valid line; an undecodable video.
    """
    from ..spool import new_session_id

    cfg = config or DuckTrackConfig()
    if cfg.scale is not None and not (math.isfinite(cfg.scale) and cfg.scale > 0):
        raise ConfigError(f"scale must be a finite number > 0, got {cfg.scale!r}")
    folder = Path(folder)
    events_path = folder / "events.jsonl"
    if not events_path.is_file():
        raise MalformedInputError(f"{events_path}: missing (not a DuckTrack / AgentNetTool folder?)")
    meta = read_metadata(folder)
    system = str(meta.get("system", "unknown"))
    video = _video_path(folder) if cfg.video else None
    vid_size: tuple[int, int] | None = None
    if video is not None:
        import av

        try:
            with av.open(str(video)) as c:
                st = c.streams.video[0]
                vid_size = (st.codec_context.width, st.codec_context.height)
        except (av.error.FFmpegError, IndexError) as exc:  # type: ignore[attr-defined]
            raise MalformedInputError(f"{video}: cannot be opened as a video: {exc}") from exc
    sw, sh = float(meta["screen_width"]), float(meta["screen_height"])
    if cfg.scale is not None:
        scale = float(cfg.scale)
    elif vid_size is not None:
        scale = vid_size[0] / sw
    else:
        scale = 2.0 if system == "Darwin" else 1.0
    sid = session_id or new_session_id()
    result = ImportResult(sid, scale=scale)
    lines = _Lines(events_path, result, cfg.skip_bad_lines)
    t0 = _first_timestamp(events_path, _Lines(events_path, ImportResult(""), cfg.skip_bad_lines))
    src = {"Darwin": "ax", "Windows": "uia"}.get(system, "unknown")
    mapper = _Mapper(t0, scale, cfg.scroll_sign, src)
    desk = Rect(0.0, 0.0, sw * scale, sh * scale)
    extra = {"imported_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "scale": repr(scale), "scroll_direction": str(meta.get("scroll_direction", "")),
             "source_folder": folder.name, "screen_points": f"{meta['screen_width']}x{meta['screen_height']}"}
    if name:
        extra["name"] = name
    if system == "Darwin":
        platform = "darwin"
    else:
        platform = system.lower()
    agentnet = (folder / "top_window.jsonl").exists() or (folder / "element.jsonl").exists()
    manifest = SessionManifest(
        session_id=sid, started_utc=str(meta.get("start_time", "")).replace(" ", "T"),
        timezone="unknown (DuckTrack start_time is local wall time)", clock_source="time.perf_counter",
        platform=platform, backend="import", source="agentnettool" if agentnet else "ducktrack",
        recorder_version="import", extra=extra)
    writer = spool.create(manifest)
    try:
        # side streams (small): focus and element records
        side: list[tuple[int, int, Event]] = []
        for fname, fn in (("top_window.jsonl", mapper.top_window), ("element.jsonl", mapper.element)):
            p = folder / fname
            if p.is_file():
                sl = _Lines(p, result, cfg.skip_bad_lines)
                for lineno, obj in sl:
                    try:
                        ev = fn(obj)
                    except (ValueError, TypeError, OverflowError) as exc:
                        sl.bad(lineno, str(exc))
                        continue
                    side.append((ev.t_ns, len(side), ev))
        if video is not None:
            vstart = meta.get("video_start_timestamp")
            if not isinstance(vstart, (int, float)):
                timings = meta.get("obs_record_state_timings") or {}
                started = timings.get("OBS_WEBSOCKET_OUTPUT_STARTED") if isinstance(timings, dict) else None
                if isinstance(started, list) and started and isinstance(started[0], (int, float)):
                    vstart = float(started[0])
                else:
                    vstart = t0
                    extra["video_start_assumed"] = "first event"
            trig = _triggers(events_path, cfg)

            def put(data: bytes) -> str:
                blob_id = spool.key.content_id(data)
                writer.put_blob(blob_id, data, "webp")
                return blob_id

            for fr in _video_frames(video, float(vstart), trig, t0, desk, cfg, put):
                side.append((fr.t_ns, len(side), fr))
                result.frames += 1
        side.sort(key=lambda x: (x[0], x[1]))

        total = events_path.stat().st_size

        def main_events() -> Iterator[tuple[int, int, Event]]:
            prev_ts = -math.inf
            for lineno, obj in lines:
                try:
                    ev = mapper.event(obj)
                except (ValueError, TypeError, OverflowError) as exc:
                    lines.bad(lineno, str(exc))
                    continue
                ts = float(obj["time_stamp"])
                if ts < prev_ts:
                    result.backward_timestamps += 1
                prev_ts = ts
                if ev is not None:
                    yield (ev.t_ns, -1, ev)
                if progress is not None and lineno % 2000 == 0:
                    progress(lines.pos, total)

        header: list[Event] = [
            Marker(seq=0, t_ns=0, name="session_start"),
            ScreenConfig(seq=0, t_ns=0, monitors=(Monitor(index=0, bounds=desk, scale=scale, primary=True),),
                         desktop=desk),
        ]
        seq = 0
        batch: list[Event] = []
        last_t = 0

        def add(ev: Event) -> None:
            nonlocal seq, last_t
            batch.append(msgspec_replace(ev, seq))
            seq += 1
            last_t = max(last_t, ev.t_ns)
            if len(batch) >= cfg.batch:
                writer.append(batch)
                batch.clear()

        for ev in header:
            add(ev)
        # merge: main stream keeps file order (arrival); side events are placed by time
        si = 0
        for t, _o, ev in main_events():
            while si < len(side) and side[si][0] <= t:
                add(side[si][2])
                si += 1
            add(ev)
        while si < len(side):
            add(side[si][2])
            si += 1
        add(Marker(seq=0, t_ns=last_t, name="session_stop"))
        if batch:
            writer.append(batch)
        result.events = seq
        if result.skipped:
            extra["skipped_lines"] = str(result.skipped)
        if result.backward_timestamps:
            extra["backward_timestamps"] = str(result.backward_timestamps)
        writer.manifest.extra = extra
        writer.close(duration_ns=last_t)
    except BaseException:
        try:
            writer.close()
        finally:
            spool.delete(sid)
        raise
    if progress is not None:
        progress(total, total)
    return result


def msgspec_replace(ev: Event, seq: int) -> Event:
    """``ev`` with a new ``seq``."""
    import msgspec

    return msgspec.structs.replace(ev, seq=seq)

