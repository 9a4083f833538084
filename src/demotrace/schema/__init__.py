"""The event model (schema v1), session manifest, and canonical actions / steps / episodes."""

from .actions import Action, Context, Episode, Observation, Point, Step, Target
from .events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    AnyEvent,
    Element,
    Event,
    FocusChange,
    Frame,
    FrameWindow,
    KeyDown,
    KeyEvent,
    KeyUp,
    Marker,
    Monitor,
    PointerDown,
    PointerMove,
    PointerUp,
    Rect,
    ScreenConfig,
    TextInput,
    Wheel,
    decode_batch,
    encode_batch,
    event_from_json,
    event_to_json,
    sort_key,
)
from .manifest import SessionManifest

__all__ = [
    "Action", "AnyEvent", "Context", "EVENT_TYPES", "Element", "Episode", "Event",
    "FocusChange", "Frame", "FrameWindow", "KeyDown", "KeyEvent", "KeyUp", "Marker", "Monitor", "Observation",
    "Point", "PointerDown", "PointerMove", "PointerUp", "Rect", "SCHEMA_VERSION", "ScreenConfig",
    "SessionManifest", "Step", "Target", "TextInput", "Wheel", "decode_batch", "encode_batch",
    "event_from_json", "event_to_json", "sort_key",
]
