"""The in-memory ring of recent screen grabs and the observation rule.

DESIGN.md §5 observation rule: a step's observation is the newest frame whose capture
*finished* before the action's first raw event — never one captured after it. The ring holds
un-encoded :class:`~demotrace.capture.RawFrame` objects (BGRA, physical pixels); only the
frames chosen for an action are encoded and stored.
"""

from __future__ import annotations

from collections import deque

from ..capture._base import RawFrame


class FrameRing:
    """Recent frames, oldest first, bounded by age and count. Not thread-safe: owned by the
    frame thread.

    ``max_age_ns``: frames older than this (relative to the newest frame's ``captured_ns``)
    are dropped, but the newest frame is always kept; ``max_frames``: hard cap on the count.
    """

    def __init__(self, max_age_ns: int, max_frames: int) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.max_age_ns = max_age_ns
        self._frames: deque[RawFrame] = deque(maxlen=max_frames)

    def __len__(self) -> int:
        return len(self._frames)

    def push(self, frame: RawFrame) -> None:
        """Add a frame (its ``captured_ns`` must not be older than the newest one's; an
        out-of-order frame is ignored) and drop the expired ones."""
        if self._frames and frame.captured_ns < self._frames[-1].captured_ns:
            return
        self._frames.append(frame)
        limit = frame.captured_ns - self.max_age_ns
        while len(self._frames) > 1 and self._frames[0].captured_ns < limit:
            self._frames.popleft()

    def newest(self) -> RawFrame | None:
        """The most recent frame, or ``None`` if the ring is empty."""
        return self._frames[-1] if self._frames else None

    def newest_before(self, t_ns: int) -> RawFrame | None:
        """The newest frame with ``captured_ns < t_ns`` (strictly: a grab that finished at the
        same nanosecond as the event may already show its effect), or ``None``.

        ``t_ns`` is absolute monotonic nanoseconds, the same clock as ``captured_ns``.
        """
        for frame in reversed(self._frames):
            if frame.captured_ns < t_ns:
                return frame
        return None

    def clear(self) -> None:
        """Forget every frame (on pause: nothing seen while paused is kept)."""
        self._frames.clear()
