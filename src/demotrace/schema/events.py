"""Raw event model, schema v1 (see docs/schema.md and DESIGN.md section 4).

Every event is a frozen :class:`msgspec.Struct` tagged by ``kind``. Common fields:

- ``seq`` — per-session sequence number, assigned by the recorder in arrival order (0, 1, 2, …).
- ``t_ns`` — monotonic nanoseconds since the session start (``CLOCK_MONOTONIC``; never wall
  clock). Order events by ``(t_ns, seq)``.

Units: coordinates are **physical pixels of the virtual desktop** (floats: imported logical
points times a fractional scale stay exact); they can be negative on multi-monitor layouts.
Durations are nanoseconds. ``None`` always means "unknown / not reported by the platform".

Wheel sign convention (as pynput and pyautogui): ``dy > 0`` scrolls up (away from the user),
``dx > 0`` scrolls right. Values are kept as reported, fractional allowed; ``unit`` says whether
they are wheel ticks (notches) or pixels.

Keys: ``key`` and ``code`` are W3C UI Events values (https://www.w3.org/TR/uievents-key/,
https://www.w3.org/TR/uievents-code/): ``key`` is what the key means with the current layout
and modifiers (``"a"``, ``"A"``, ``"é"``, ``"Enter"``, ``"Control"``, ``"Unidentified"`` if
unknown), ``code`` the physical key (``"KeyA"``, ``"Numpad5"``, ``"ShiftLeft"``, or
``"Unidentified"``). ``text`` is the character the key produced, if any.
"""

from __future__ import annotations

from typing import Literal, Union

import msgspec

SCHEMA_VERSION = 1

#: Mouse buttons, as pynput names them.
Button = Literal["left", "right", "middle", "x1", "x2", "unknown"]

#: W3C modifier key names that may appear in ``KeyEvent.modifiers``.
MODIFIER_KEYS = ("Alt", "AltGraph", "CapsLock", "Control", "Meta", "NumLock", "Shift", "Super")

MarkerName = Literal[
    "session_start",
    "session_stop",
    "pause",
    "resume",
    "task_start",
    "task_end",
    "private_gap",
]
TaskStatus = Literal["success", "failure", "abandoned"]


class Rect(msgspec.Struct, frozen=True, array_like=True):
    """An axis-aligned rectangle: ``x``, ``y`` of the top-left corner, ``width``, ``height``.

    Units are those of the owner (physical desktop pixels unless the owner says otherwise).
    Encoded as a 4-element array ``[x, y, width, height]``.
    """

    x: float
    y: float
    width: float
    height: float

    def contains(self, px: float, py: float) -> bool:
        """True if the point lies inside (left/top edges inclusive, right/bottom exclusive)."""
        return self.x <= px < self.x + self.width and self.y <= py < self.y + self.height


class Monitor(msgspec.Struct, frozen=True):
    """One monitor of the virtual desktop.

    ``bounds`` in physical pixels of the virtual desktop (may be negative), ``scale`` the
    ratio physical pixels / logical points (1.0, 1.25, 2.0 …), ``name`` as the platform reports it
    (e.g. RandR output ``"HDMI-1"``), ``primary`` as the platform says.
    """

    index: int
    bounds: Rect
    scale: float = 1.0
    primary: bool = False
    name: str | None = None


class Event(msgspec.Struct, frozen=True, tag_field="kind", kw_only=True):
    """Base of every raw event: ``seq`` (per-session number) and ``t_ns`` (monotonic ns since
    session start)."""

    seq: int
    t_ns: int


class PointerMove(Event, frozen=True, tag="pointer_move"):
    """Pointer moved to ``(x, y)`` (physical pixels)."""

    x: float
    y: float


class PointerDown(Event, frozen=True, tag="pointer_down"):
    """A mouse button went down at ``(x, y)`` (physical pixels)."""

    x: float
    y: float
    button: Button


class PointerUp(Event, frozen=True, tag="pointer_up"):
    """A mouse button went up at ``(x, y)`` (physical pixels)."""

    x: float
    y: float
    button: Button


class Wheel(Event, frozen=True, tag="wheel"):
    """Wheel / touchpad scroll at ``(x, y)``: ``dx`` right-positive, ``dy`` up-positive, in
    ``unit`` ("tick" = notches, "pixel" = pixels); fractional values kept as reported."""

    x: float
    y: float
    dx: float
    dy: float
    unit: Literal["tick", "pixel"] = "tick"


class KeyEvent(Event, frozen=True):
    """Fields shared by :class:`KeyDown` and :class:`KeyUp`.

    ``key``/``code``: W3C values. ``keysym``: X11 keysym if any; ``vk``: platform virtual-key /
    keycode if any. ``is_repeat``: produced by auto-repeat while held (flagged, never a new
    press). ``modifiers``: W3C names of the modifiers held *before* this event, sorted.
    ``text``: the character(s) the key produced, ``None`` for keys that produce none.
    """

    key: str
    code: str
    keysym: int | None = None
    vk: int | None = None
    is_repeat: bool = False
    modifiers: tuple[str, ...] = ()
    text: str | None = None


class KeyDown(KeyEvent, frozen=True, tag="key_down"):
    """A key was pressed (or auto-repeated, then ``is_repeat`` is true)."""


class KeyUp(KeyEvent, frozen=True, tag="key_up"):
    """A key was released."""


class TextInput(Event, frozen=True, tag="text_input"):
    """Text committed by an input method (IME, compose, dead keys); the authority over
    key-derived text for the keys it covers."""

    text: str


class FocusChange(Event, frozen=True, tag="focus_change"):
    """The focused (active) window changed, or its title / URL changed.

    ``window_id``: platform window id (X11 XID); ``app_id``: WM_CLASS class (X11), bundle id
    (macOS) or executable name (Windows); ``title``: decoded safely (invalid bytes replaced with
    U+FFFD); ``pid``: process id if known; ``bounds``: window frame in physical desktop pixels;
    ``url``: page URL for browsers if known. Any field may be ``None`` (unknown).
    """

    window_id: int | None = None
    app_id: str | None = None
    title: str | None = None
    pid: int | None = None
    bounds: Rect | None = None
    url: str | None = None


class ScreenConfig(Event, frozen=True, tag="screen_config"):
    """Monitor layout: emitted at session start and whenever it changes.

    ``desktop`` is the bounding box of the virtual desktop in physical pixels.
    """

    monitors: tuple[Monitor, ...]
    desktop: Rect


class FrameWindow(msgspec.Struct, frozen=True, array_like=True):
    """A top-level window that may have been on screen when a frame was grabbed: ``window``,
    the X id ``FocusChange.window_id`` names (the client window under a reparenting window
    manager), and its ``bounds`` (physical desktop pixels, window-manager decorations
    included). One window may appear several times (it moved between two window-list checks)."""

    window: int
    bounds: Rect


class Frame(Event, frozen=True, tag="frame"):
    """A stored screen image.

    ``blob``: content id of the encoded image in the spool's blob store; ``monitor``: index, or
    -1 for the whole virtual desktop; ``bounds``: the desktop region shown (physical pixels);
    ``width``/``height``: image size in pixels; ``scale``: image pixels per desktop pixel (1.0
    unless resized); ``captured_t_ns``: when the grab *finished* (monotonic ns since session
    start; ``t_ns`` is when the record was written); ``reason``: why it was kept
    ("pointer_down", "wheel", "key", "focus_change", "settle", "session_start", …);
    ``format``: the blob's encoding, "jpeg", "webp" or "png" (the recorder stores "jpeg" since
    2026-11-30, "webp" before; a missing field reads as "webp"). Consumers decode by this field
    (or by the bytes' signature), never by assuming one format.
    ``windows``: the top-level windows the recorder's capture guard saw as possibly visible at
    the grab (:class:`FrameWindow`; empty when unknown — older recordings, imports, or the
    guard's per-frame snapshot mode); the seal uses them to black out a window a secret was
    typed into wherever it has moved since (issue #4 bug bash 4).
    """

    blob: str
    monitor: int
    bounds: Rect
    width: int
    height: int
    scale: float
    captured_t_ns: int
    reason: str
    format: str = "webp"
    windows: tuple[FrameWindow, ...] = ()


class Element(Event, frozen=True, tag="element"):
    """A UI element under the pointer or with focus.

    ``bounds`` in physical desktop pixels; ``source`` is "atspi" | "uia" | "ax" | "dom"; for the
    DOM also ``selector``, ``tag`` and ``attributes``. ``secret`` is true for password,
    one-time-code and card fields.
    """

    role: str | None = None
    name: str | None = None
    bounds: Rect | None = None
    source: Literal["atspi", "uia", "ax", "dom", "unknown"] = "unknown"
    selector: str | None = None
    tag: str | None = None
    attributes: dict[str, str] = {}
    secret: bool = False


class Marker(Event, frozen=True, tag="marker"):
    """A lifecycle or annotation marker.

    ``name``: session_start, session_stop, pause, resume, task_start (with ``instruction``),
    task_end (with ``status``), private_gap (with ``reason`` and ``duration_ns``).
    """

    name: MarkerName
    instruction: str | None = None
    status: TaskStatus | None = None
    reason: str | None = None
    duration_ns: int | None = None


AnyEvent = Union[
    PointerMove,
    PointerDown,
    PointerUp,
    Wheel,
    KeyDown,
    KeyUp,
    TextInput,
    FocusChange,
    ScreenConfig,
    Frame,
    Element,
    Marker,
]

EVENT_TYPES: dict[str, type[Event]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in AnyEvent.__args__  # type: ignore[attr-defined]
}

_json_decoder = msgspec.json.Decoder(AnyEvent)
_msgpack_decoder = msgspec.msgpack.Decoder(list[AnyEvent])
_msgpack_encoder = msgspec.msgpack.Encoder()


def event_from_json(data: bytes | str) -> Event:
    """Decode one event from JSON.

    Raises:
        SchemaError: unknown ``kind``, missing or mistyped field (the message names it).
    """
    from ..errors import SchemaError

    try:
        return _json_decoder.decode(data)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise SchemaError(f"invalid event: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise SchemaError(f"event is not valid JSON: {exc}") from exc


def event_to_json(event: Event) -> bytes:
    """Encode one event as compact JSON (``kind`` first)."""
    return msgspec.json.encode(event)


def encode_batch(events: list[Event]) -> bytes:
    """Encode a batch of events as a MessagePack array (the spool's at-rest payload)."""
    return _msgpack_encoder.encode(events)


def decode_batch(data: bytes) -> list[Event]:
    """Decode a batch written by :func:`encode_batch`.

    Raises:
        SchemaError: the payload does not follow schema v1.
    """
    from ..errors import SchemaError

    try:
        return _msgpack_decoder.decode(data)  # type: ignore[no-any-return]
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise SchemaError(f"invalid event batch: {exc}") from exc


def sort_key(event: Event) -> tuple[int, int]:
    """The canonical order of events: ``(t_ns, seq)``."""
    return (event.t_ns, event.seq)
