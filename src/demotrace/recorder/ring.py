"""The in-memory ring of recent screen grabs and the observation rule.

DESIGN.md §5 observation rule: a step's observation is the newest frame whose capture
*finished* before the action's first raw event — never one captured after it. The ring holds
un-encoded :class:`~demotrace.capture.RawFrame` objects (BGRA, physical pixels); only the
frames chosen for an action are encoded and stored.

Besides the frames, the ring numbers every pushed grab (``seq``) and keeps a short log of each
grab's ``damage`` (what changed since the previous grab, from the backend), so the encoder can
redo only the changed regions of its downscaled image (:meth:`FrameRing.changes_between`).
"""

from __future__ import annotations

from collections import deque

from ..capture._base import RawFrame
from ..schema.events import Rect

#: Grabs whose damage is remembered (4 Hz active: about a minute; the log is a few KB).
DAMAGE_LOG = 256


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
        self._seqs: deque[int] = deque(maxlen=max_frames)
        self._seq = 0
        #: (seq, damage of that grab relative to the grab before it); ``None`` = unknown
        self._damage: deque[tuple[int, tuple[Rect, ...] | None]] = deque(maxlen=DAMAGE_LOG)

    def __len__(self) -> int:
        return len(self._frames)

    def push(self, frame: RawFrame) -> int | None:
        """Add a frame (its ``captured_ns`` must not be older than the newest one's; an
        out-of-order frame is ignored and ``None`` returned) and drop the expired ones.
        Returns the frame's sequence number (1, 2, … per ring)."""
        if self._frames and frame.captured_ns < self._frames[-1].captured_ns:
            return None
        self._seq += 1
        self._frames.append(frame)
        self._seqs.append(self._seq)
        self._damage.append((self._seq, frame.damage))
        limit = frame.captured_ns - self.max_age_ns
        while len(self._frames) > 1 and self._frames[0].captured_ns < limit:
            self._frames.popleft()
            self._seqs.popleft()
        return self._seq

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

    def seq_of(self, frame: RawFrame) -> int | None:
        """The sequence number of ``frame`` (by identity) if it is still in the ring."""
        for f, s in zip(reversed(self._frames), reversed(self._seqs)):
            if f is frame:
                return s
        return None

    def changes_between(self, a: int, b: int) -> tuple[Rect, ...] | None:
        """Rectangles (desktop pixels) outside of which grabs ``a`` and ``b`` (sequence numbers,
        either order) have identical pixels: the union of the damage of the grabs after the
        older up to the newer. ``None`` if unknown (a grab's damage was unknown, or the log no
        longer reaches back to it)."""
        lo, hi = min(a, b), max(a, b)
        if not self._damage or self._damage[0][0] > lo + 1 or hi > self._seq:
            return None
        out: list[Rect] = []
        for s, dmg in self._damage:
            if lo < s <= hi:
                if dmg is None:
                    return None
                out.extend(dmg)
        return tuple(out)

    def clear(self) -> None:
        """Forget every frame (on pause: nothing seen while paused is kept) and the damage log."""
        self._frames.clear()
        self._seqs.clear()
        self._damage.clear()
