"""Observation alignment (DESIGN.md section 5, "Observation rule"), streaming.

A step's observation is the newest ``frame`` whose capture finished **strictly before** the
action's first raw event (``captured_t_ns < action.t_start_ns``), never one captured after
it; ``gap_ns = t_start_ns − captured_t_ns`` is stored. No such frame → ``None`` (the step gets
flag ``no_observation``).

Frame records are written after their capture (``t_ns ≥ captured_t_ns``), so in the event
stream a frame may come after actions that started after its capture. The aligner therefore
holds each action until the stream has advanced ``frame_lateness_ns`` past its start, keeps
frames sorted by ``captured_t_ns`` (insertion into a list that is nearly always an append),
and forgets frames older than ``frame_history_ns`` and those older than the last frame
chosen. Memory is bounded by those two windows, not by the session length.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from ..schema.actions import Action, Observation
from ..schema.events import Frame
from .settings import BuildSettings


def observation_of(frame: Frame, t_start_ns: int) -> Observation:
    """The :class:`Observation` of ``frame`` for an action starting at ``t_start_ns``."""
    return Observation(blob=frame.blob, format=frame.format, bounds=frame.bounds,
                       width=frame.width, height=frame.height,
                       captured_t_ns=frame.captured_t_ns,
                       gap_ns=t_start_ns - frame.captured_t_ns)


def align(items: Iterable[Any], settings: BuildSettings) -> Iterator[Any]:
    """Pair each :class:`Action` in ``items`` with its observation.

    ``items``: actions in non-decreasing ``t_start_ns``, interleaved with :class:`Frame`
    events (any order) and other objects (markers, boundaries) that have a ``t_ns`` or
    ``t_end_ns``. Yields ``(action, observation_or_None)`` tuples and the other objects, in
    input order; frames are consumed.
    """
    lateness = settings.frame_lateness_ns
    history = settings.frame_history_ns
    caps: list[int] = []
    frames: list[Frame] = []
    pending: deque[Any] = deque()
    now = -(1 << 62)

    def resolve(a: Action) -> tuple[Action, Observation | None]:
        i = bisect_left(caps, a.t_start_ns) - 1
        if i < 0:
            return a, None
        f = frames[i]
        if i > 0:
            del caps[:i]
            del frames[:i]
        return a, observation_of(f, a.t_start_ns)

    for it in items:
        tp = type(it)
        if tp is Frame:
            c = it.captured_t_ns
            if not caps or c >= caps[-1]:
                caps.append(c)
                frames.append(it)
            else:
                j = bisect_right(caps, c)
                caps.insert(j, c)
                frames.insert(j, it)
            t = it.t_ns
            if caps[0] < t - history and len(caps) > 1:
                j = bisect_left(caps, t - history)
                del caps[:j]
                del frames[:j]
        elif tp is Action:
            pending.append(it)
            t = it.t_end_ns
        else:
            pending.append(it)
            t = getattr(it, "t_ns", None)
            if t is None:
                t = getattr(it, "t_end_ns", now)
        if t > now:
            now = t
        while pending:
            head = pending[0]
            if type(head) is Action:
                if head.t_start_ns + lateness > now:
                    break
                pending.popleft()
                yield resolve(head)
            else:
                pending.popleft()
                yield head
    while pending:
        head = pending.popleft()
        yield resolve(head) if type(head) is Action else head
