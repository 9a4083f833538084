"""Episodes: segmentation of a session's steps (DESIGN.md section 5, "Episodes").

- An explicit task (``task_start`` marker with ``instruction`` … ``task_end`` with
  ``status``) is one episode, ``segmented_by="task_marker"``; pauses, private gaps and idle
  gaps inside it do not split it.
- Outside tasks, steps are segmented at idle gaps longer than ``idle_gap_ns``
  (``"idle_gap"``), ``pause`` markers (``"pause"``), ``private_gap`` markers
  (``"private_gap"``), a ``task_start`` (``"task_marker"``) and the session's end / ``session_stop``
  (``"session_end"``); ``instruction`` is ``None`` (unknown). Segments without any action
  produce no episode.
- Every episode ends with a terminal step: ``done`` for status "success", ``fail`` for
  "failure" / "abandoned". **Decision:** an episode whose status is not known (segmented
  without markers, or a task never ended) has status ``"unknown"`` and ends with ``done``
  flagged ``status_unknown`` — the person stopped there, and DESIGN.md requires a terminal
  done-or-fail; exporters that need a verified outcome filter on ``status``.
- The terminal step's time is the boundary: the marker's ``t_ns``, the next action's start for
  an idle gap, or the last event of the session; its observation is the newest frame before
  that time (the screen the episode ended on).
- ``episode_id`` is ``"<session_id>-<index>"`` with ``index`` counting from 0 in session
  order (deterministic: rebuilding the same session gives the same ids).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..schema.actions import Action, Episode, Observation, Step
from ..schema.events import Event, Marker, Rect, ScreenConfig
from ..schema.manifest import SessionManifest
from .align import align
from .reduce import ReduceStats, _pipeline
from .settings import BuildSettings


class SessionSource(Protocol):
    """What :func:`episodes_from_session` reads: a :class:`demotrace.spool.SessionReader` or
    anything with the same ``manifest`` and ``iter_events()``."""

    manifest: SessionManifest

    def iter_events(self) -> Iterator[Event]: ...


@dataclass
class _Close:
    """Boundary: the episode whose last action precedes this object ends here."""

    t_ns: int
    status: str
    segmented_by: str
    instruction: str | None
    explicit: bool
    t_open_ns: int | None
    seq: int | None

    def start_ns(self, first_action_ns: int | None) -> int:
        """The episode's start: its first step's action start (``first_action_ns``; ``None``
        when it has no step), or the ``task_start`` marker's time if that is earlier; the
        boundary time when neither is known."""
        t_start = first_action_ns if first_action_ns is not None else self.t_ns
        return t_start if self.t_open_ns is None else min(t_start, self.t_open_ns)


_TERMINAL = {"success": "done", "failure": "fail", "abandoned": "fail", "unknown": "done"}


def _segment(items: Iterable[Any], settings: BuildSettings) -> Iterator[Any]:
    """Insert terminal actions and :class:`_Close` boundaries into the aligned-to-be stream."""
    idle = settings.idle_gap_ns
    in_task = False
    instruction: str | None = None
    t_open: int | None = None
    n_actions = 0
    last_end: int | None = None
    last_t = 0

    def close(t: int, status: str, by: str, seq: int | None) -> Iterator[Any]:
        nonlocal in_task, instruction, t_open, n_actions
        if n_actions or in_task:
            flags = ("status_unknown",) if status == "unknown" else ()
            yield Action(type=_TERMINAL.get(status, "done"), t_start_ns=t, t_end_ns=t,
                         source_seqs=(seq,) if seq is not None else (), flags=flags)
            yield _Close(t, status, by, instruction, in_task, t_open, seq)
        in_task = False
        instruction = None
        t_open = None
        n_actions = 0

    for it in items:
        tp = type(it)
        if tp is Action:
            if not in_task and n_actions and last_end is not None and it.t_start_ns - last_end > idle:
                yield from close(it.t_start_ns, "unknown", "idle_gap", None)
            n_actions += 1
            last_end = it.t_end_ns if last_end is None else max(last_end, it.t_end_ns)
            last_t = max(last_t, it.t_end_ns)
            yield it
        elif tp is Marker:
            m: Marker = it
            last_t = max(last_t, m.t_ns)
            if m.name == "task_start":
                yield from close(m.t_ns, "abandoned" if in_task else "unknown", "task_marker", m.seq)
                in_task = True
                instruction = m.instruction
                t_open = m.t_ns
            elif m.name == "task_end":
                yield from close(m.t_ns, m.status or "unknown", "task_marker", m.seq)
            elif m.name in ("pause", "private_gap") and not in_task:
                yield from close(m.t_ns, "unknown", m.name, m.seq)
            elif m.name == "session_stop":
                yield from close(m.t_ns, "unknown", "session_end", m.seq)
            last_end = None if not in_task else last_end
        else:
            t = getattr(it, "t_ns", None)
            if t is not None:
                last_t = max(last_t, t)
            yield it
    yield from close(last_t, "unknown", "session_end", None)


def _assemble(items: Iterable[Any], session_id: str) -> Iterator[Episode]:
    steps: list[Step] = []
    screen: Rect | None = None
    index = 0
    for it in items:
        if type(it) is tuple:
            action, obs = it
            obs_: Observation | None = obs
            flags = () if obs_ is not None else ("no_observation",)
            steps.append(Step(index=len(steps), action=action, observation=obs_, flags=flags))
        elif type(it) is ScreenConfig:
            screen = it.desktop
        elif type(it) is _Close:
            c: _Close = it
            t_start = c.start_ns(steps[0].action.t_start_ns if steps else None)
            yield Episode(episode_id=f"{session_id}-{index}", session_id=session_id, index=index,
                          instruction=c.instruction, status=c.status,
                          segmented_by=c.segmented_by, t_start_ns=t_start, t_end_ns=c.t_ns,
                          steps=steps, screen=screen)
            index += 1
            steps = []


def episodes_from_events(
    events: Iterable[Event], session_id: str, settings: BuildSettings | None = None,
    stats: ReduceStats | None = None,
) -> Iterator[Episode]:
    """Reduce, align and segment raw ``events`` of one session into episodes (streaming:
    one episode's steps in memory at a time). See the module docstring for the rules."""
    settings = settings or BuildSettings()
    stats = stats if stats is not None else ReduceStats()
    items = _segment(_pipeline(events, settings, stats), settings)
    yield from _assemble(align(items, settings), session_id)


@dataclass(frozen=True)
class Segment:
    """Where one episode lies in its session, without its steps: the fields of the
    :class:`~demotrace.schema.Episode` that :func:`episodes_from_events` yields for the same
    events and settings (same ``index``, times, ``instruction``, ``status``,
    ``segmented_by``). Times are session monotonic nanoseconds; ``steps`` counts the
    episode's steps, its terminal ``done``/``fail`` step included (so always >= 1)."""

    index: int
    t_start_ns: int
    t_end_ns: int
    instruction: str | None
    status: str
    segmented_by: str
    steps: int


def segments_from_events(
    events: Iterable[Event], settings: BuildSettings | None = None, stats: ReduceStats | None = None,
) -> Iterator[Segment]:
    """The episode boundaries of one session's raw ``events``, by the same reduction and
    segmentation as :func:`episodes_from_events` (module docstring) but without pairing
    actions with observations: cheaper, and reads no frame. For callers that show or count
    episodes (``demotrace review``) and must agree with what ``demotrace build`` produces.

    Streams; raises what :func:`episodes_from_events` raises for the same input.
    """
    settings = settings or BuildSettings()
    stats = stats if stats is not None else ReduceStats()
    first: int | None = None
    steps = 0
    index = 0
    for it in _segment(_pipeline(events, settings, stats), settings):
        tp = type(it)
        if tp is Action:
            if first is None:
                first = it.t_start_ns
            steps += 1
        elif tp is _Close:
            c: _Close = it
            yield Segment(index, c.start_ns(first), c.t_ns, c.instruction, c.status, c.segmented_by, steps)
            index += 1
            first = None
            steps = 0


def episodes_from_session(reader: SessionSource, settings: BuildSettings | None = None,
                          stats: ReduceStats | None = None) -> Iterator[Episode]:
    """Episodes of one recorded or imported session.

    ``reader``: a :class:`demotrace.spool.SessionReader` (``.manifest``, ``.iter_events()``;
    observations reference blobs readable with ``reader.read_blob(obs.blob)``). On macOS
    sessions (``manifest.platform`` starting with "darwin") the Meta key is named "command".
    Yields :class:`~demotrace.schema.Episode` in session order with ids
    ``"<session_id>-<index>"``. Raises :class:`~demotrace.errors.SpoolCorrupt` if a batch
    cannot be read.
    """
    settings = settings or BuildSettings()
    platform = (reader.manifest.platform or "").lower()
    if platform.startswith(("darwin", "macos")) and settings.meta_key_name == "win":
        settings = dataclasses.replace(settings, meta_key_name="command")
    yield from episodes_from_events(reader.iter_events(), reader.manifest.session_id, settings, stats)
