"""``demotrace record``, ``status``, ``pause``, ``resume``, ``stop``, ``task start|end``.

``record`` runs the recorder in the foreground: it takes the one-recorder-per-home lock, opens
the owner-only control socket, shows the indicator (before any capture starts), records until
Ctrl-C / SIGTERM / ``--duration`` / ``demotrace stop``, then flushes, closes the session and
prints a summary. The other commands talk to it over the control socket.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import typer

from ..errors import CaptureError, ControlError
from ..paths import Paths
from .common import console, err_console, open_spool

HomeOpt = typer.Option(None, "--home", help="demotrace home folder (default $DEMOTRACE_HOME or ~/.local/share/demotrace).")


def _fmt_duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _finite(value: float | None) -> float | None:
    """Refuse ``nan`` and ``inf`` for a float option (range checks let ``nan`` through or name the
    wrong bound: every comparison with it is false). Raises ``typer.BadParameter`` (the option is
    named by Click)."""
    import math

    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value


def _finite_in(lo: float, hi: float | None = None):  # type: ignore[no-untyped-def]
    """A callback like :func:`_finite` that also requires ``lo <= value`` (and ``<= hi``)."""

    def check(value: float | None) -> float | None:
        _finite(value)
        if value is not None and (value < lo or (hi is not None and value > hi)):
            raise typer.BadParameter(f"must be in [{lo:g}, {hi:g}], got {value:g}" if hi is not None
                                     else f"must be >= {lo:g}, got {value:g}")
        return value

    return check


def record(
    duration: float | None = typer.Option(None, "--duration", callback=_finite_in(0.1), help="Stop after this many seconds, at least 0.1 (default: until Ctrl-C)."),
    no_indicator: bool = typer.Option(False, "--no-indicator", help="Do not show the on-screen REC indicator."),
    home: str | None = HomeOpt,
    frame_format: str = typer.Option("jpeg", "--frame-format", help="Stored frame encoding: jpeg (default), webp or png."),
    jpeg_quality: int = typer.Option(87, "--jpeg-quality", min=1, max=100, help="JPEG quality of stored frames (1-100; chroma 4:2:0)."),
    webp_quality: int = typer.Option(60, "--webp-quality", min=0, max=100, help="Lossy WebP quality of stored frames (0-100)."),
    frame_scale: float = typer.Option(0.5, "--frame-scale", callback=_finite, help="Stored frame pixels per desktop pixel: 1 (full resolution), 0.5 or 0.25."),
    grab_hz: float = typer.Option(4.0, "--grab-hz", callback=_finite_in(0.1, 30), help="Screen grabs per second into the in-memory ring while input is active (0.1-30)."),
) -> None:
    """Record this desktop until Ctrl-C (or --duration), then print the session id and a summary."""
    from ..capture import get_backend
    from ..recorder import ControlServer, Recorder, RecorderLock, RecorderSettings, new_manifest
    from ..recorder.indicator import IndicatorProcess
    from ..spool import new_session_id

    settings = RecorderSettings(
        frame_format=frame_format, jpeg_quality=jpeg_quality, webp_quality=webp_quality, frame_scale=frame_scale,
        grab_interval_active_s=1.0 / grab_hz, grab_interval_idle_s=max(2.0, 1.0 / grab_hz),
    )
    paths, spool = open_spool(home, create_key=True)
    from ..recorder.guard import CaptureGuard

    # privacy first (issue 4): policy → consent (ConsentRequired names `demotrace enroll`) →
    # raw-retention purge, before the control socket or any capture hook
    guard = CaptureGuard(paths)
    for note in getattr(guard.policy, "notes", ()):  # built-in deny entries a policy file tried to drop
        err_console.print(f"warning: {note}", highlight=False, markup=False)
    guard.require_consent()
    lock = RecorderLock(paths.run_dir)
    lock.acquire()
    try:
        guard.before_start(spool)  # consent again + purge, under the one-recorder lock
    except BaseException:
        lock.release()
        raise
    stop_event = threading.Event()
    running: list[Recorder] = []  # the recorder, once started

    def handle(req: dict[str, Any]) -> dict[str, Any]:
        rec = running[0] if running else None
        cmd = req["cmd"]
        if cmd == "stop":
            stop_event.set()
            return {"ok": True, "session_id": rec.session_id if rec else None}
        if rec is None:
            return {"ok": True, "state": "starting"} if cmd == "status" else {"ok": False, "error": "the recorder is still starting; retry"}
        if cmd == "status":
            return {"ok": True, **rec.status()}
        if cmd == "pause":
            return rec.pause()
        if cmd == "resume":
            return rec.resume()
        if cmd == "task_start":
            return rec.task_start(req.get("instruction"))  # validated by the recorder
        if cmd == "task_end":
            return rec.task_end(req.get("status"))
        if cmd == "browser_event":
            return rec.browser_event(req.get("event"))
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def on_signal(signum: int, _frame: object) -> None:
        stop_event.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    server = ControlServer(paths.control_socket, handle)
    indicator = None if no_indicator else IndicatorProcess(paths.control_socket)
    rec = None
    try:
        server.start()
        backend = get_backend()
        _preflight(backend)  # display and RECORD before any session exists
        if indicator is not None:
            indicator.start()  # visible before anything is captured (fails closed)
        sid = new_session_id()
        writer = spool.create(new_manifest(sid, backend))
        try:
            rec = Recorder(backend, writer, settings, guard=guard)
            rec.start()
        except BaseException:
            rec = None  # Recorder.start stopped itself; nothing the user did was recorded
            _discard_failed_session(spool, writer, sid)
            raise
        running.append(rec)
        console.print(f"recording session [bold]{sid}[/] — stop with Ctrl-C or `demotrace stop`", highlight=False)
        t_end = None if duration is None else time.monotonic() + duration
        next_health = time.monotonic() + 5.0
        reported: set[str] = set()
        while not stop_event.is_set():
            wait = 0.5 if t_end is None else max(0.0, min(0.5, t_end - time.monotonic()))
            if stop_event.wait(wait) or (t_end is not None and time.monotonic() >= t_end):
                break
            if time.monotonic() >= next_health:
                next_health = time.monotonic() + 5.0
                for p in rec.check_health():
                    if p not in reported:
                        reported.add(p)
                        err_console.print(f"[bold red]recorder problem:[/] {p}", highlight=False)
            if indicator is not None and not indicator.alive():
                err_console.print("[bold red]the REC indicator window closed; restarting it[/]")
                try:
                    indicator.stop()
                    indicator.start()
                except ControlError as exc:
                    err_console.print(f"[bold red]error:[/] {exc}; stopping the recording", highlight=False)
                    break
    finally:
        summary = rec.stop() if rec is not None else None
        server.close()
        if indicator is not None:
            indicator.stop()
        lock.release()
    if summary is not None:
        _print_summary(summary)


def _preflight(backend: Any) -> None:
    """Check that ``backend`` can capture before a spool session is created, so that a bad
    ``$DISPLAY`` (empty, garbage, a display nobody serves) or a display without the X RECORD
    extension fails without leaving an empty session (or a stored screenshot) behind.

    X11 only (the one backend): opens ``backend.display_name`` with python-xlib, asks for
    RECORD, closes the connection.

    Raises:
        CaptureError: the display cannot be opened, or has no RECORD extension (the fix named).
    """
    if getattr(backend, "name", None) != "x11":
        return
    from Xlib import error as xerror

    from ..capture._xorg_window import open_display

    name = backend.display_name
    try:
        d = open_display(name)  # a failed attempt's socket is closed, not left to the collector
    except (xerror.DisplayError, xerror.ConnectionClosedError, OSError) as exc:
        raise CaptureError(f"cannot open X display {name!r}: {exc} (is the X server running and "
                           "$DISPLAY right?); nothing was recorded") from exc
    try:
        if not d.has_extension("RECORD"):
            raise CaptureError(f"X display {name!r} has no RECORD extension (start Xvfb/Xorg with "
                               "'+extension RECORD'); nothing was recorded")
    finally:
        d.close()


def _discard_failed_session(spool: Any, writer: Any, sid: str) -> None:
    """Delete the session a failed start left behind: it holds at most the ``session_start``
    marker and first frame, nothing the user did (the capture hooks never ran)."""
    import contextlib
    import sqlite3

    from ..errors import SessionNotFound

    with contextlib.suppress(sqlite3.Error):  # already closed by Recorder.stop
        writer.close()
    with contextlib.suppress(SessionNotFound):
        spool.delete(sid)


def _print_summary(summary: Any) -> None:
    from rich.table import Table

    t = Table(title=f"session {summary.session_id}", show_header=False)
    t.add_row("duration", _fmt_duration(summary.duration_ns / 1e9))
    t.add_row("events stored", str(summary.events))
    for kind, n in sorted(summary.by_kind.items()):
        t.add_row(f"  {kind}", str(n))
    t.add_row("frames", f"{summary.frames} ({summary.blobs_written} distinct images)")
    t.add_row("events lost", str(summary.dropped))
    console.print(t)
    for p in summary.problems:
        err_console.print(f"[bold red]problem:[/] {p}", highlight=False)
    console.print(f"session id: {summary.session_id}", highlight=False)


def _call(home: str | None, cmd: str, **args: Any) -> dict[str, Any]:
    from ..recorder.control import call

    paths = Paths.from_env(home)
    return call(paths.control_socket, cmd, **args)


def status(
    home: str | None = HomeOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the raw status as JSON."),
) -> None:
    """Show whether a recorder runs, its session, state and counts."""
    rep = _call(home, "status")
    if as_json:
        import json

        typer.echo(json.dumps(rep, indent=2, ensure_ascii=False))
        return
    if rep.get("state") == "starting":
        console.print("recorder starting")
        return
    state = rep.get("state", "?")
    colour = "red" if state == "recording" else "yellow"
    console.print(f"[bold {colour}]{state}[/] session {rep.get('session_id')} for {_fmt_duration(rep.get('elapsed_s', 0))}", highlight=False)
    console.print(
        f"events stored {rep.get('events_stored')}, pending {rep.get('events_pending')},"
        f" lost {rep.get('events_dropped')}; frames {rep.get('frames_stored')}", highlight=False,
    )
    if rep.get("task"):
        console.print(f"task: {rep['task']}", highlight=False)
    for p in rep.get("problems", []):
        err_console.print(f"[bold red]problem:[/] {p}", highlight=False)


def pause(home: str | None = HomeOpt) -> None:
    """Pause recording (nothing but a pause marker is stored until `demotrace resume`)."""
    _call(home, "pause")
    console.print("paused")


def resume(home: str | None = HomeOpt) -> None:
    """Resume a paused recording."""
    _call(home, "resume")
    console.print("recording")


def stop(home: str | None = HomeOpt) -> None:
    """Stop the running recorder (it flushes and closes the session)."""
    rep = _call(home, "stop")
    console.print(f"stopping session {rep.get('session_id')}", highlight=False)


task_app = typer.Typer(help="Mark the start and end of a task (an episode with an instruction).", no_args_is_help=True)


@task_app.command("start")
def task_start(
    instruction: str = typer.Argument(..., help="What the task is, in words (the episode's instruction)."),
    home: str | None = HomeOpt,
) -> None:
    """Store a task_start marker with the instruction."""
    _call(home, "task_start", instruction=instruction)
    console.print("task started")


@task_app.command("end")
def task_end(
    status_: str = typer.Option(..., "--status", help="success, failure or abandoned."),
    home: str | None = HomeOpt,
) -> None:
    """Store a task_end marker with its status."""
    if status_ not in ("success", "failure", "abandoned"):
        from ..errors import ConfigError

        raise ConfigError(f"--status must be success, failure or abandoned, got {status_!r}")
    _call(home, "task_end", status=status_)
    console.print(f"task ended: {status_}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("record")(record)
    app.command("status")(status)
    app.command("pause")(pause)
    app.command("resume")(resume)
    app.command("stop")(stop)
    app.add_typer(task_app, name="task")
