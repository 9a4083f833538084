"""The platform-neutral capture interface (modelled on pynput's ``_base`` + per-OS modules).

A backend implements input hooks, focused-window tracking, monitor layout and screen grabs for
one platform. Its hook callbacks must **only enqueue** (no I/O, no encoding, no locks held for
long): they call the ``sink`` given to :meth:`CaptureBackend.start`, which appends to a queue
that the recorder drains on its own threads.

Sink contract: ``sink(event_cls, t_ns, fields)`` where ``event_cls`` is a schema-v1 event class
(:class:`~demotrace.schema.PointerDown`, …), ``t_ns`` the monotonic time of the event in
nanoseconds (``time.monotonic_ns()``, absolute — the recorder subtracts the session start) and
``fields`` its payload without ``seq``/``t_ns``. The recorder assigns ``seq`` in arrival order.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..schema.events import Event, Monitor, Rect

#: ``sink(event_cls, t_ns_monotonic_absolute, fields)`` — must be cheap and non-blocking.
EventSink = Callable[[type[Event], int, dict[str, Any]], None]


@dataclass(frozen=True)
class RawFrame:
    """One screen grab, not yet encoded.

    ``pixels``: raw bytes, row-major, ``BGRA`` 8-bit per channel (mss layout), ``width`` ×
    ``height`` × 4 bytes; ``bounds``: desktop region (physical pixels); ``monitor``: index or
    -1 for the whole virtual desktop; ``captured_ns``: ``time.monotonic_ns()`` when the grab
    finished (absolute); ``damage``: what may differ from the previous grab of the same
    backend and thread, as rectangles in desktop (physical) pixels — ``()`` nothing (the same
    ``pixels`` object is returned), ``None`` unknown (treat everything as changed). Optional
    (added after schema v1's first backends; default ``None``).
    """

    pixels: bytes
    width: int
    height: int
    bounds: Rect
    monitor: int
    captured_ns: int
    damage: tuple[Rect, ...] | None = None


class CaptureBackend(abc.ABC):
    """Capture for one platform. Lifecycle: ``start(sink)`` → ``check_health()``* → ``stop()``.

    Subclasses set :attr:`name` (e.g. ``"x11"``) and :attr:`platform` (e.g. ``"linux-x11"``).
    """

    name: str = "abstract"
    platform: str = "unknown"

    @abc.abstractmethod
    def start(self, sink: EventSink) -> None:
        """Install input hooks and window / monitor watchers; events flow into ``sink``.

        Emits, at start, one ``ScreenConfig`` and one ``FocusChange`` for the current state.
        Raises :class:`~demotrace.errors.CaptureError` if hooks cannot be installed.
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Remove hooks and stop watcher threads; idempotent."""

    @abc.abstractmethod
    def check_health(self) -> list[str]:
        """Problems found now (empty list = healthy), e.g. a listener thread that died."""

    @abc.abstractmethod
    def screen_config(self) -> tuple[tuple[Monitor, ...], Rect]:
        """Current monitors and the virtual desktop bounds (physical pixels)."""

    @abc.abstractmethod
    def grab(self) -> RawFrame:
        """Grab the whole virtual desktop now (thread-safe; called from the frame thread)."""

    def pointer_position(self) -> tuple[float, float] | None:
        """Current pointer position in physical pixels, if the platform can tell."""
        return None
