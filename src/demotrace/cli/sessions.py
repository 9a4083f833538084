"""``demotrace sessions list|show|delete`` — what is in the local spool.

Only the person's own spool is read (with their data key); nothing leaves the device.
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from dataclasses import dataclass, field

import typer

from ..errors import ControlError, SpoolError
from ..paths import Paths
from ..schema.events import FocusChange, Frame, Marker
from ..spool import Spool
from .common import console, open_spool

sessions_app = typer.Typer(help="List, describe and delete recorded sessions.", no_args_is_help=True)
HomeOpt = typer.Option(None, "--home", help="demotrace home folder (default $DEMOTRACE_HOME or ~/.local/share/demotrace).")


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


def _fmt_duration(ns: int | None) -> str:
    if ns is None:
        return "?"
    s = int(round(ns / 1e9))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _recording_session(paths: Paths) -> str | None:
    """Id of the session the running recorder writes, if one runs (stale run files of a killed
    recorder mean none runs: :func:`demotrace.recorder.control.check_run_dir`)."""
    from ..recorder.control import call, check_run_dir

    if not check_run_dir(paths.run_dir, paths.control_socket, clean=False).running:
        return None
    try:
        return call(paths.control_socket, "status", timeout=2.0).get("session_id")
    except ControlError:
        return None


@dataclass
class SessionSummary:
    """What ``sessions show`` reports about one session (computed by reading every event).

    ``by_kind``: event counts per kind; ``duration_ns``: last event ``t_ns``; ``apps``: distinct
    ``FocusChange.app_id`` in first-seen order; ``frames``: Frame events; ``images``: distinct
    blobs; ``tasks``: (instruction, status or None) in order; ``pauses``: pause markers.
    """

    session_id: str
    started_utc: str
    ended: bool
    events: int
    by_kind: dict[str, int]
    duration_ns: int
    apps: list[str]
    frames: int
    images: int
    bytes_on_disk: int
    tasks: list[tuple[str, str | None]] = field(default_factory=list)
    pauses: int = 0


def summarize(spool: Spool, session_id: str) -> SessionSummary:
    """Read a session completely and summarise it.

    Raises:
        SessionNotFound: no such session. SpoolCorrupt: it cannot be decrypted.
    """
    with spool.open(session_id) as r:
        kinds: Counter[str] = Counter()
        apps: list[str] = []
        tasks: list[tuple[str, str | None]] = []
        blobs: set[str] = set()
        last = 0
        pauses = 0
        for ev in r.iter_events():
            kinds[str(ev.__struct_config__.tag)] += 1
            last = max(last, ev.t_ns)
            if isinstance(ev, FocusChange) and ev.app_id and ev.app_id not in apps:
                apps.append(ev.app_id)
            elif isinstance(ev, Frame):
                blobs.add(ev.blob)
            elif isinstance(ev, Marker):
                if ev.name == "task_start":
                    tasks.append((ev.instruction or "", None))
                elif ev.name == "task_end" and tasks and tasks[-1][1] is None:
                    tasks[-1] = (tasks[-1][0], ev.status)
                elif ev.name == "pause":
                    pauses += 1
        manifest = r.manifest
    # size after closing: an open reader adds its own -wal/-shm files to the folder
    size = sum(p.stat().st_size for p in (spool.root / session_id).rglob("*") if p.is_file())
    return SessionSummary(
        session_id=session_id, started_utc=manifest.started_utc, ended=manifest.ended,
        events=sum(kinds.values()), by_kind=dict(kinds), duration_ns=last, apps=apps,
        frames=kinds.get("frame", 0), images=len(blobs), bytes_on_disk=size,
        tasks=tasks, pauses=pauses,
    )


@sessions_app.command("list")
def list_sessions(home: str | None = HomeOpt) -> None:
    """Table of sessions: id, start, duration, events, frames (distinct stored images), size,
    state (recording / ended / crashed)."""
    from rich import box
    from rich.table import Table

    from ..errors import KeyLost, KeyMissing

    try:
        paths, spool = open_spool(home, readonly=True)  # works on a read-only home (F18)
    except KeyLost:
        raise
    except KeyMissing:
        console.print("no sessions yet (no data key on this device); record one with `demotrace record`")
        return
    ids = spool.session_ids()
    if not ids:
        console.print(f"no sessions in {spool.root}; record one with `demotrace record`", highlight=False)
        return
    live = _recording_session(paths)
    rows: list[tuple[str, ...]] = []
    for sid in ids:
        try:
            with spool.open(sid) as r:
                st = r.stats()
                man = r.manifest
            state = "recording" if sid == live else ("ended" if man.ended else "crashed")
            dur = man.duration_ns if man.ended and man.duration_ns is not None else st.t_last_ns
            size = sum(p.stat().st_size for p in (spool.root / sid).rglob("*") if p.is_file())  # reader closed
            rows.append((sid, man.started_utc.replace("T", " ")[:19], _fmt_duration(dur), str(st.events),
                         str(st.blobs), _human_bytes(size), state))
        except SpoolError as exc:
            rows.append((sid, "?", "?", "?", "?", "?", f"unreadable: {exc}"))
    # id, start and duration are what a user copies or reads at a glance: never truncated nor
    # wrapped (no_wrap + min_width = their longest value); the other columns fold when the
    # terminal is narrow. Columns are one space apart (no borders) so that an 80-column
    # terminal fits id 23 + start 19 + duration 8 + events, frames, size, state with at most
    # the size wrapping at its space.
    table = Table(title=f"sessions in {spool.root}", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0))
    for i, col in enumerate(("id", "start (UTC)", "duration", "events", "frames", "size", "state")):
        keep = i < 3 or (col == "state" and max(len(r[i]) for r in rows) <= 9)  # a state word, not an error
        table.add_column(col, justify="right" if col in ("events", "frames", "size", "duration") else "left",
                         no_wrap=keep, overflow="fold",
                         min_width=max(len(r[i]) for r in rows) if keep else None)
    for row in rows:
        table.add_row(*row)
    console.print(table)


@sessions_app.command("show")
def show(session_id: str = typer.Argument(..., help="Session id (see `demotrace sessions list`)."), home: str | None = HomeOpt) -> None:
    """Describe one session: counts per kind, duration, apps seen, frames, size, tasks."""
    from rich.table import Table

    _paths, spool = open_spool(home, readonly=True)
    s = summarize(spool, session_id)
    console.print(f"[bold]session {s.session_id}[/]", highlight=False)
    console.print(f"started (UTC): {s.started_utc}", highlight=False)
    console.print(f"state: {'ended' if s.ended else 'crashed or recording (data up to the last flush is kept)'}", highlight=False)
    console.print(f"duration: {_fmt_duration(s.duration_ns)}", highlight=False)
    console.print(f"events: {s.events}", highlight=False)
    t = Table(show_header=True)
    t.add_column("kind")
    t.add_column("count", justify="right")
    for kind, n in sorted(s.by_kind.items()):
        t.add_row(kind, str(n))
    console.print(t)
    console.print(f"frames: {s.frames} ({s.images} distinct images)", highlight=False)
    console.print(f"size on disk: {_human_bytes(s.bytes_on_disk)} ({s.bytes_on_disk} bytes)", highlight=False)
    console.print(f"apps: {', '.join(s.apps) if s.apps else '(none seen)'}", highlight=False)
    console.print(f"pauses: {s.pauses}", highlight=False)
    if s.tasks:
        console.print("tasks:", highlight=False)
        for instr, status in s.tasks:
            console.print(f"  - {instr!r}: {status or 'not ended'}", highlight=False)
    else:
        console.print("tasks: (none)", highlight=False)


@sessions_app.command("delete")
def delete(
    session_id: str = typer.Argument(..., help="Session id to delete (events, frames, everything)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    home: str | None = HomeOpt,
) -> None:
    """Delete a session from this device for good."""
    paths, spool = open_spool(home)
    if _recording_session(paths) == session_id:
        raise ControlError(f"session {session_id} is being recorded; stop it first with `demotrace stop`")
    if session_id not in spool.session_ids():
        from ..errors import SessionNotFound

        raise SessionNotFound(f"no session {session_id!r} in {spool.root}; see `demotrace sessions list`")
    if not yes and not typer.confirm(f"Delete session {session_id} and all its frames?"):
        raise typer.Exit(1)
    spool.delete(session_id)
    console.print(f"deleted session {session_id}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(sessions_app, name="sessions")
