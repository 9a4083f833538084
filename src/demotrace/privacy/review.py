"""Review on the device (DESIGN.md §8.2, §8.7): list sessions and episodes, delete one, forget
the last N minutes, and destroy raw data older than the retention period.

Wall-clock mapping: an event's wall time is the session's ``started_utc`` plus its ``t_ns``
(the monotonic clock does not advance during suspend, so after a suspend the estimate is
*earlier* than the truth; ``forget`` therefore also removes everything recorded after the
computed cut, which errs on the side of forgetting more, never less).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..build.episodes import segments_from_events
from ..build.settings import BuildSettings
from ..errors import ConfigError, SpoolCorrupt, SpoolError
from ..paths import Paths
from ..schema.events import Event, Frame
from ..schema.manifest import SessionManifest
from ..spool import Spool
from ..spool.store import DB_NAME
from .bundle import clean_stale_sealing, delete_bundle, sealed_root
from .policy import Policy


def parse_duration(text: str) -> dt.timedelta:
    """``"10m"``, ``"90s"``, ``"1h"``, ``"1h30m"``, ``"2d"`` → timedelta.

    Raises:
        ConfigError: not a positive duration (names the text).
    """
    m = re.fullmatch(r"\s*(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?\s*", text or "")
    if not m or not any(m.groups()):
        raise ConfigError(f"duration {text!r} is not like 10m, 90s, 1h or 1h30m")
    d, h, mi, s = (int(g or 0) for g in m.groups())
    try:
        td = dt.timedelta(days=d, hours=h, minutes=mi, seconds=s)
    except OverflowError:
        td = dt.timedelta.max
    if td > MAX_FORGET:
        raise ConfigError(f"duration {text!r} is too long: at most {MAX_FORGET.days} days (100 years);"
                          " to delete whole sessions use `demotrace review delete ID`")
    if td.total_seconds() <= 0:
        raise ConfigError(f"duration {text!r} must be positive")
    return td


#: Longest ``forget --last`` window accepted (100 years: forgets everything any device holds,
#: while ``now - window`` stays inside datetime's range).
MAX_FORGET = dt.timedelta(days=36500)


def session_start(started_utc: str) -> dt.datetime:
    """The manifest's ``started_utc`` as an aware UTC datetime."""
    t = dt.datetime.fromisoformat(started_utc.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class Episode:
    """One episode of a session as review shows it: ``index``, ``t_start_ns`` / ``t_end_ns``
    (session monotonic ns), ``instruction`` (``None`` = unknown), ``status`` (the
    ``task_end`` status, ``"abandoned"``, or ``None`` = unknown; see :func:`episodes_of`)."""

    index: int
    t_start_ns: int
    t_end_ns: int
    instruction: str | None
    status: str | None


@dataclass(frozen=True)
class SessionSummary:
    """A raw session for ``review list``: id, start (UTC), duration (s), events, frames,
    episodes, whether a sealed bundle exists. ``error``: why it cannot be read, or ``None``;
    ``cannot_open``: the error came from opening it — its database or manifest is damaged (or
    the data key is not the one it was written with) — so nothing of it can be read and ``seal``
    cannot help; otherwise no batch decrypts. ``damaged``: ``(first_seq, last_seq)`` of batches
    that do not decrypt in a session whose other batches do — the counts are of the readable
    ones, and ``seal`` keeps those (bug bash 6 L1: one damaged batch listed the whole session as
    unreadable). ``ended``: its manifest says its recorder ended it (``False``: killed, or still
    recording)."""

    session_id: str
    started_utc: str
    duration_s: float
    events: int
    frames: int
    episodes: int
    sealed: bool
    error: str | None = None
    cannot_open: bool = False
    damaged: tuple[tuple[int, int], ...] = ()
    ended: bool = True


def episodes_of(events: Iterable[Event], settings: BuildSettings | None = None) -> list[Episode]:
    """The episodes ``demotrace build`` will make of these raw events, as review shows them:
    the builder's own segmentation (:func:`demotrace.build.episodes.segments_from_events`,
    rules in build/episodes.py), so review and the dataset split a session the same way.

    In short: a ``task_start`` … ``task_end`` task is one episode (pauses and private gaps
    inside it do not split it) starting at its ``task_start``; outside tasks, episodes are cut
    at pauses, private gaps, idle gaps longer than ``settings.idle_gap_ns`` and the session
    end, start at their first action, and a stretch without any action is no episode.
    ``status`` is the builder's (``task_end`` status, ``"abandoned"`` for a task left open by a
    new ``task_start``) or ``None`` where the builder says ``"unknown"``. ``events`` as the spool
    yields them (the builder reorders within its reorder window); times are session
    monotonic ns.
    """
    return [Episode(s.index, s.t_start_ns, s.t_end_ns, s.instruction, None if s.status == "unknown" else s.status)
            for s in segments_from_events(events, settings)]


def list_sessions(paths: Paths, spool: Spool) -> list[SessionSummary]:
    """Summaries of every raw session, oldest first. A session that cannot be read (SpoolError:
    corrupt database, undecryptable batch, …) is listed with zero counts and ``error`` set to
    the reason, so one broken session never hides the others."""
    out = []
    for sid in spool.session_ids():
        sealed = (sealed_root(paths) / sid).is_dir()
        try:
            r = spool.open(sid)
        except SpoolError as exc:  # database or manifest: nothing of it can be read
            out.append(SessionSummary(sid, "?", 0.0, 0, 0, 0, sealed, error=str(exc), cannot_open=True))
            continue
        try:
            with r:
                evs = list(r.iter_events(skip_corrupt=True))
                damaged = tuple((a, b) for a, b, _ in r.skipped)
                if damaged and not evs:  # no batch decrypts: a replaced key, not damage
                    raise SpoolCorrupt(f"session {sid}: no batch can be read ({r.skipped[0][2]})")
                frames = sum(isinstance(e, Frame) for e in evs)
                dur = max((e.t_ns for e in evs), default=0) / 1e9
                out.append(SessionSummary(sid, r.manifest.started_utc, dur, len(evs), frames, len(episodes_of(evs)),
                                          sealed, damaged=damaged, ended=r.manifest.ended))
        except SpoolError as exc:
            out.append(SessionSummary(sid, "?", 0.0, 0, 0, 0, sealed, error=str(exc)))
    return out


def delete_session(paths: Paths, spool: Spool, session_id: str, *, sealed_too: bool = True) -> None:
    """Delete a raw session (and by default its sealed bundle).

    Raises:
        SessionNotFound: no such raw session.
    """
    spool.delete(session_id)
    if sealed_too:
        delete_bundle(paths, session_id)
    clean_stale_sealing(paths)  # a killed seal's partial bundle of it (bug bash 4) goes too


@dataclass(frozen=True)
class ForgetResult:
    """What ``forget`` destroyed: per session id, ``(events, blobs)`` removed, and in
    ``frame_events`` per session id the number of ``frame`` events among those events.

    Frames and blobs differ: identical screenshots are stored once (content-addressed), so a
    forgotten frame whose image an earlier, kept frame also shows removes no blob (bug bash 5
    E: ``forget --last 4s`` said "0 frames" while one frame went — it printed blobs)."""

    removed: dict[str, tuple[int, int]]
    frame_events: dict[str, int] = field(default_factory=dict)

    @property
    def events(self) -> int:
        """Events removed in all sessions."""
        return sum(e for e, _ in self.removed.values())

    @property
    def blobs(self) -> int:
        """Stored images (blobs) deleted in all sessions."""
        return sum(b for _, b in self.removed.values())

    @property
    def frames(self) -> int:
        """``frame`` events removed in all sessions."""
        return sum(self.frame_events.values())


def forget_last(paths: Paths, spool: Spool, window: dt.timedelta, now: dt.datetime | None = None) -> ForgetResult:
    """Destroy every raw event and frame recorded in the last ``window`` before ``now`` (UTC,
    aware), in every session, plus the sealed bundles of the sessions touched (they contain
    redacted copies of the forgotten data; re-seal to get a bundle without it).

    The cut in each session is ``t_ns = (now - window - started_utc)``; events at or after it go.
    A session that started inside the window goes whole — its manifest too (bug bash 4: an empty
    shell kept its start time, and ``seal`` made an empty bundle of it that upload would send:
    *when* someone worked is itself personal data).
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    cut_wall = now - window
    removed: dict[str, tuple[int, int]] = {}
    frames: dict[str, int] = {}
    clean_stale_sealing(paths)  # partial bundles of killed seals (bug bash 5)
    for sid in spool.session_ids():
        with spool.open(sid) as r:
            start = session_start(r.manifest.started_utc)
            st = r.stats()
            t_last = st.t_last_ns
            cut_ns = 0 if start >= cut_wall else max(0, int((cut_wall - start) / dt.timedelta(microseconds=1)) * 1000)
            if t_last is not None and cut_ns <= t_last:  # the frames about to go, counted as events
                frames[sid] = sum(isinstance(e, Frame) and e.t_ns >= cut_ns for e in r.iter_events())
        if start >= cut_wall:
            spool.delete(sid)
            delete_bundle(paths, sid)
            removed[sid] = (st.events, st.blobs)
            continue
        if t_last is None or cut_ns > t_last:
            continue
        removed[sid] = spool.forget_after(sid, cut_ns)
        delete_bundle(paths, sid)
    return ForgetResult(removed, frames)


#: Manifest ``extra`` key the importers set: UTC time (ISO-8601, ``Z``) the data arrived here.
IMPORTED_KEY = "imported_utc"


def arrived_utc(spool: Spool, session_id: str, manifest: SessionManifest, t_last_ns: int) -> dt.datetime:
    """When a raw session's data arrived on this device (aware UTC): the later of the recording's
    end (``started_utc`` + last event) and, for imported sessions, the import time —
    ``extra["imported_utc"]`` (set by the importers), or, for sessions imported before that
    key existed, the modification time of the session's database file (errs towards keeping the
    session longer, never shorter: it is at or after the import)."""
    try:
        end = session_start(manifest.started_utc) + dt.timedelta(microseconds=t_last_ns / 1000)
    except (ValueError, OverflowError):
        end = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    arrived = end
    imp = manifest.extra.get(IMPORTED_KEY)
    if imp:
        try:
            arrived = max(arrived, session_start(imp))
        except ValueError:
            imp = None
    if not imp and (manifest.backend == "import" or manifest.recorder_version == "import"):
        try:
            mt = (spool.root / session_id / DB_NAME).stat().st_mtime
        except OSError:
            mt = max((p.stat().st_mtime for p in (spool.root / session_id).iterdir()), default=None)
        if mt is not None:
            arrived = max(arrived, dt.datetime.fromtimestamp(mt, dt.timezone.utc))
    return arrived


def purge_expired(paths: Paths, spool: Spool, policy: Policy, now: dt.datetime | None = None,
                  keep: frozenset[str] = frozenset()) -> list[str]:
    """Destroy raw sessions whose data arrived on this device (:func:`arrived_utc`) more than
    ``policy.raw_retention_days`` before ``now``; return their ids. Sessions in ``keep`` (e.g.
    the one being recorded) and unreadable ones are left alone. Sealed bundles are not touched
    (they are redacted; their own retention is the curated retention).

    Called by ``seal``, ``record`` (at start) and ``review purge`` only — never by listing
    commands (DESIGN.md §8.7: a person must see what is destroyed when it is destroyed)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    limit = now - dt.timedelta(days=policy.raw_retention_days)
    clean_stale_sealing(paths)  # partial bundles of killed seals (bug bash 4)
    gone = []
    for sid in spool.session_ids():
        if sid in keep:
            continue
        try:
            with spool.open(sid) as r:
                arrived = arrived_utc(spool, sid, r.manifest, r.stats().t_last_ns or 0)
        except SpoolError:
            continue
        if arrived < limit:
            spool.delete(sid)
            gone.append(sid)
    return gone
