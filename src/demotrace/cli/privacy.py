"""Privacy commands: ``enroll``, ``policy show``, ``seal``, ``review list|show|delete|forget``,
``exclusions add|list|remove`` (see :mod:`demotrace.privacy` and docs/privacy.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from .common import console, err_console, open_spool, raise_if_not_writable, writable_paths

_HOME = typer.Option(None, "--home", help="demotrace home folder (default $DEMOTRACE_HOME).")
_POLICY = typer.Option(None, "--policy", help="Policy TOML file (default <home>/policy.toml, else built-in).")


def _check_id(session_id: str) -> None:
    """Reject a session id that is not a plain folder name (``../x``, ``a/b``, ``.hidden``, empty).

    Raises:
        SessionNotFound: names the id and how to list valid ones.
    """
    from ..errors import SessionNotFound

    if not session_id or "/" in session_id or "\\" in session_id or session_id.startswith(".") or "\0" in session_id:
        raise SessionNotFound(f"invalid session id {session_id!r}: ids are folder names like"
                              " 20261130T032708Z-00ebea; see `demotrace review list`")


def _purge(paths, spool, policy) -> list[str]:  # type: ignore[no-untyped-def]
    """Run retention (:func:`demotrace.privacy.review.purge_expired`), sparing the session a
    running recorder writes, and print each destroyed session. Returns their ids."""
    from ..privacy.review import purge_expired

    rec = _recording_session(paths)
    gone = purge_expired(paths, spool, policy, keep=frozenset({rec} if rec else ()))
    for sid in gone:
        err_console.print(f"retention: destroyed raw session {sid} (arrived on this device more than"
                          f" {policy.raw_retention_days:g} days ago)", highlight=False)
    return gone


def _recording_session(paths) -> str | None:  # type: ignore[no-untyped-def]
    """Id of the session the running recorder writes for this home, if one runs. Stale run
    files of a killed recorder (:func:`demotrace.recorder.control.check_run_dir`) mean none runs."""
    from ..errors import ControlError
    from ..recorder.control import call, check_run_dir

    if not check_run_dir(paths.run_dir, paths.control_socket, clean=False).running:
        return None
    try:
        return call(paths.control_socket, "status", timeout=2.0).get("session_id")
    except (ControlError, OSError):
        return None


def _crashed_sessions(paths, spool) -> tuple[str | None, list[str]]:  # type: ignore[no-untyped-def]
    """(session a live recorder writes or ``None``, ids of *crashed* sessions): raw sessions
    whose manifest is not ended, with no sealed bundle, not uploaded and not being recorded.

    Stale run files of a killed recorder (``run/recorder.pid`` of a gone or foreign process, a
    ``run/control.sock`` nothing listens on) are removed first and reported on stderr
    (:func:`demotrace.recorder.control.check_run_dir`). When a recorder runs but does not say
    which session it writes, no unended session counts as crashed (it may be the live one).
    """
    from ..errors import ControlError, SpoolError
    from ..privacy.bundle import sealed_root
    from ..privacy.uploads import uploaded_ids
    from ..recorder.control import call, check_run_dir

    state = check_run_dir(paths.run_dir, paths.control_socket)
    if state.cleaned:
        err_console.print("the recorder of this home is not running but left "
                          + " and ".join(f"run/{p.name}" for p in state.cleaned)
                          + " behind (killed or crashed): removed them", highlight=False, markup=False)
    live = None
    if state.running:
        try:
            live = call(paths.control_socket, "status", timeout=2.0).get("session_id")
        except (ControlError, OSError):
            live = None
        if live is None:  # starting, or not answering: any unended session may be the live one
            return None, []
    uploaded = uploaded_ids(paths)
    out = []
    for sid in spool.session_ids():
        if sid == live or sid in uploaded or (sealed_root(paths) / sid).is_dir():
            continue
        try:
            with spool.open(sid) as r:
                if not r.manifest.ended:
                    out.append(sid)
        except SpoolError:
            continue  # unreadable: `review list` names it
    return live, out


def floor_warnings(policy, declared: dict | None) -> list[str]:  # type: ignore[no-untyped-def,type-arg]
    """Warnings about what a policy document tried to remove from the built-in floor: the merge
    notes of ``policy`` (:attr:`demotrace.privacy.policy.Policy.notes`, written by
    :func:`~demotrace.privacy.policy.with_builtin_floor`, which also names explicitly emptied
    built-in deny fields). ``declared`` is kept for callers; the notes already cover it."""
    return list(policy.notes)


def _declared(policy) -> dict | None:  # type: ignore[no-untyped-def,type-arg]
    """The TOML document ``policy`` was loaded from (``policy.source`` is its path), or ``None``."""
    import tomllib

    try:
        return tomllib.loads(Path(policy.source).read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _print_notes(policy) -> None:  # type: ignore[no-untyped-def]
    """Print each of :func:`floor_warnings` for ``policy`` (its source file re-read) as a
    warning on stderr."""
    for note in floor_warnings(policy, _declared(policy)):
        err_console.print(f"[bold yellow]warning:[/] {escape(note)}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the privacy commands to ``app``."""
    from ..paths import Paths

    @app.command("enroll")
    def enroll(
        yes: bool = typer.Option(False, "--yes", help="Accept without the interactive question (after reading the notice)."),
        home: Optional[str] = _HOME,
        policy_file: Optional[Path] = _POLICY,
    ) -> None:
        """Show the notice and record your consent (policy version, UTC time, notice SHA-256)."""
        from ..privacy.consent import record_consent
        from ..privacy.policy import load_policy

        # nothing is created before the person accepts: declining leaves no folder behind
        paths = Paths.from_env(home)
        _refuse_read_only(paths)  # before the notice: accepting could not be recorded (bug bash 6 L4)
        policy = load_policy(paths, policy_file)
        # as written: the notice is hard-wrapped by its author, re-wrapping it made ragged lines
        console.print(policy.notice, highlight=False, markup=False, soft_wrap=True)
        console.print("\nWhat this policy captures (`demotrace policy show`):", highlight=False)
        for line in policy.describe():
            console.print("• " + line, highlight=False, markup=False)
        _print_notes(policy)
        console.print(f"\n(policy version {policy.version}, notice SHA-256 {policy.notice_sha256[:16]}…,"
                      f" capture rules SHA-256 {policy.scope_sha256[:16]}…)", highlight=False)
        if not yes and not typer.confirm("Do you accept recording under this notice?", default=False):
            err_console.print("Not enrolled. Nothing was recorded and nothing about this choice is kept.")
            raise typer.Exit(1)
        try:
            rec = record_consent(paths, policy)  # creates the home (0700) now
        except OSError as exc:
            raise_if_not_writable(exc, paths)
            raise
        console.print(f"Consent recorded for policy version {rec.policy_version} at {rec.accepted_utc}.", highlight=False)

    def _refuse_read_only(paths: Paths) -> None:
        """HomeNotWritable if the home (or, not created yet, its nearest existing parent) cannot
        be written: checked with ``os.access``, which reports a read-only mount even to root."""
        import errno
        import os

        p = paths.home
        while not p.exists() and p != p.parent:
            p = p.parent
        if not os.access(p, os.W_OK):
            raise_if_not_writable(OSError(errno.EROFS if _read_only_mount(p) else errno.EACCES,
                                          os.strerror(errno.EROFS if _read_only_mount(p) else errno.EACCES), str(p)),
                                  paths)

    def _read_only_mount(p: Path) -> bool:
        import os

        return bool(os.statvfs(p).f_flag & os.ST_RDONLY)

    policy_app = typer.Typer(help="The capture policy.", no_args_is_help=True)
    app.add_typer(policy_app, name="policy")

    @policy_app.command("show")
    def policy_show(home: Optional[str] = _HOME, policy_file: Optional[Path] = _POLICY) -> None:
        """Say in plain words what is and is not captured."""
        from ..privacy.consent import consent_problem
        from ..privacy.policy import load_policy
        from ..privacy.scope import Exclusions

        paths = Paths.from_env(home)
        policy = load_policy(paths, policy_file)
        for line in policy.describe():
            console.print("• " + line, highlight=False, markup=False)
        ex = Exclusions.load(paths)
        for e in ex.items:
            console.print(f"• Never captured (your exclusion): {e.kind} {e.value}", highlight=False, markup=False)
        _print_notes(policy)
        rec, problem = consent_problem(paths, policy)
        if problem is None and rec is not None:
            console.print(f"• You accepted this notice and these capture rules on {rec.accepted_utc}.", highlight=False)
        else:
            console.print(f"• Recording will not start: {problem}", highlight=False, markup=False)

    @app.command("seal")
    def seal(
        session_ids: Optional[list[str]] = typer.Argument(None, help="Sessions to seal (default: every ended, unsealed one)."),
        replace: bool = typer.Option(False, "--replace", help="Seal again over an existing bundle."),
        home: Optional[str] = _HOME,
        policy_file: Optional[Path] = _POLICY,
    ) -> None:
        """Redact raw sessions into sealed bundles (<home>/sealed/<id>) and print each redaction report."""
        from ..privacy.policy import load_policy
        from ..privacy.seal import seal_many, sessions_to_seal
        from ..privacy.uploads import AlreadyUploaded, refuse_if_uploaded

        paths, spool = open_spool(home)
        policy = load_policy(paths, policy_file)
        _print_notes(policy)
        if replace and not session_ids:
            raise typer.BadParameter("--replace seals named sessions again and needs their ids, e.g. `demotrace"
                                     " seal --replace 20261130T032708Z-00ebea` (ids: `demotrace review list`)",
                                     param_hint="'--replace'")
        for sid in session_ids or ():
            _check_id(sid)
        refused = 0
        try:
            _purge(paths, spool, policy)
            live, crashed = _crashed_sessions(paths, spool)
            for sid in session_ids or ():
                if live is not None and sid == live:
                    from ..errors import ControlError

                    raise ControlError(f"session {sid} is being recorded; stop it first with `demotrace stop`,"
                                       " then seal it")
            ids = []
            chosen = list(sessions_to_seal(paths, spool, session_ids or ()))
            if not session_ids:  # crashed sessions never get ended by their recorder: seal them too
                chosen += [sid for sid in crashed if sid not in chosen]
            for sid in chosen:
                try:  # uploaded sessions are never sealed again (no --force: privacy/uploads.py)
                    refuse_if_uploaded(paths, sid)
                except AlreadyUploaded as exc:
                    refused += 1
                    err_console.print(f"skipped: {exc}", highlight=False, markup=False)
                    continue
                ids.append(sid)
                if sid in crashed:
                    err_console.print(f"session {sid} was not ended by its recorder (it crashed or was killed):"
                                      " treating it as ended and sealing what it recorded up to its last flush",
                                      highlight=False, markup=False)
            if not session_ids:  # the default selection leaves uploaded sessions out: say so
                from ..privacy.uploads import uploaded_ids

                n_up = len(uploaded_ids(paths) & set(spool.session_ids()))
                if n_up:
                    err_console.print(f"{n_up} uploaded session(s) are not sealed again (`demotrace review"
                                      " list` shows them as uploaded)", highlight=False)
            if not ids:
                err_console.print("nothing to seal")
                if refused:
                    raise typer.Exit(1)
                return
            reports = seal_many(paths, spool, ids, policy, replace=replace)
        except KeyboardInterrupt:
            err_console.print("interrupted; nothing changed (sessions sealed before this one keep their new"
                              " bundle; the interrupted one keeps its old bundle, if any)")
            raise typer.Exit(130) from None
        for rep in reports:
            c = rep.counts
            ents = ", ".join(f"{k} {v}" for k, v in c["entities"].items()) or "none"
            drops = ", ".join(f"{k} {v}" for k, v in c["dropped"].items()) or "none"
            console.print(
                f"{rep.session_id}{' (crashed, recovered)' if rep.session_id in crashed else ''}: {rep.events_out}/{rep.events_in} events, {rep.frames_out}/{rep.frames_in} frames kept;"
                f" redacted: {ents}; dropped: {drops}; private gaps {rep.recorder_gaps + rep.private_gaps}"
                f" ({rep.recorder_gaps} marked while recording, {rep.private_gaps} at seal);"
                f" frames with a typed-secret window blacked out {rep.typed_secret_masked},"
                f" dropped (window unknown) {rep.typed_secret_dropped};"
                f" secret-field keys dropped {sum(rep.secret_keys_dropped.values())}", highlight=False, markup=False)
        if refused:
            raise typer.Exit(1)

    review_app = typer.Typer(help="Review, delete and forget recordings on this device.", no_args_is_help=True)
    app.add_typer(review_app, name="review")

    @review_app.command("list")
    def review_list(home: Optional[str] = _HOME) -> None:
        """List raw sessions (never deletes anything; retention runs in seal, record and review purge)."""
        from rich import box
        from rich.table import Table

        from ..privacy.review import list_sessions
        from ..privacy.uploads import uploaded_ids

        paths, spool = open_spool(home, readonly=True)  # works on a read-only home (F18)
        uploaded = uploaded_ids(paths)
        rows: list[tuple[str, ...]] = []
        bad = []
        live = _recording_session(paths)
        summaries = list_sessions(paths, spool)
        for s in summaries:
            state = "uploaded" if s.session_id in uploaded else ("yes" if s.sealed else "no")
            if s.error is None and s.session_id not in uploaded:
                if s.session_id == live:
                    state = "no (recording)"
                elif not s.ended:  # its recorder was killed: never ended, `seal` recovers it
                    state = "crashed (recovered)" if s.sealed else "no (crashed; run `demotrace seal`)"
            if s.error is not None:
                bad.append(s)
                rows.append((s.session_id, "UNREADABLE", "-", "-", "-", "-", state))
                continue
            rows.append((s.session_id, s.started_utc.replace("T", " ")[:16], f"{s.duration_s:.1f}", str(s.events),
                         str(s.frames), str(s.episodes), state))
        # The session id is what a person copies into `review show/delete` or `seal`: it and the
        # start are never truncated nor wrapped (no_wrap, min_width = the longest value); the other
        # columns fold when the terminal is narrow. No borders, one space apart, so 80 columns fit
        # the id (23), the start to the minute (16), the counts and "uploaded".
        t = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0))
        for i, col in enumerate(("session", "started (UTC)", "secs", "events", "frames", "episodes", "sealed")):
            keep = i < 2  # id and start: whole on the row's first line
            t.add_column(col, justify="right" if col in ("secs", "events", "frames", "episodes") else "left",
                         no_wrap=keep, overflow="fold", min_width=max((len(r[i]) for r in rows), default=0) if keep else None)
        for r in rows:
            t.add_row(*r)
        console.print(t)
        for s in summaries:
            if s.damaged:
                n = sum(b - a + 1 for a, b in s.damaged)
                err_console.print(f"session {s.session_id}: {len(s.damaged)} damaged batch(es) ({n} events,"
                                  f" seq {', '.join(f'{a}..{b}' for a, b in s.damaged)}) cannot be read; the counts"
                                  " above are of the rest, and `demotrace seal` seals the rest (counted as"
                                  " events:batch_unreadable)", highlight=False, markup=False)
        for s in bad:
            if s.cannot_open:  # database or manifest damaged: seal needs both (bug bash 5 E)
                err_console.print(f"session {s.session_id} cannot be opened ({s.error}): its database or manifest"
                                  " is damaged, so none of its data can be read or sealed."
                                  " If the data key file was replaced, restore the original"
                                  " (then it reads again). Otherwise the data is unreadable: delete it with"
                                  f" `demotrace review delete {s.session_id}`", highlight=False, markup=False)
                continue
            err_console.print(f"session {s.session_id} is unreadable ({s.error}); check it with `demotrace sessions"
                              f" show {s.session_id}`. If the data key file was replaced, restore the original:"
                              " nothing can be read without it."
                              f" To destroy it: `demotrace review delete {s.session_id}`",
                              highlight=False, markup=False)

    @review_app.command("purge")
    def review_purge(home: Optional[str] = _HOME, policy_file: Optional[Path] = _POLICY) -> None:
        """Destroy raw sessions past the retention period now (``seal`` and ``record`` do it too)."""
        from ..privacy.policy import load_policy

        paths, spool = open_spool(home)
        policy = load_policy(paths, policy_file)
        if not _purge(paths, spool, policy):
            console.print(f"nothing past the retention period ({policy.raw_retention_days:g} days)", highlight=False)

    @review_app.command("show")
    def review_show(session_id: str, home: Optional[str] = _HOME) -> None:
        """List the episodes of one raw session."""
        from ..privacy.review import episodes_of

        _paths, spool = open_spool(home, readonly=True)
        with spool.open(session_id) as r:
            eps = episodes_of(list(r.iter_events()))
        for e in eps:
            console.print(f"episode {e.index}: {e.t_start_ns / 1e9:.1f}–{e.t_end_ns / 1e9:.1f} s"
                          f"  instruction: {e.instruction or '(unknown)'}  status: {e.status or '-'}",
                          highlight=False, markup=False)

    @review_app.command("delete")
    def review_delete(session_id: str, home: Optional[str] = _HOME) -> None:
        """Delete a raw session and its sealed bundle."""
        from ..errors import ControlError
        from ..privacy.review import delete_session

        _check_id(session_id)
        paths, spool = open_spool(home)
        if _recording_session(paths) == session_id:
            raise ControlError(f"session {session_id} is being recorded; stop it first with `demotrace stop`")
        delete_session(paths, spool, session_id)
        console.print(f"deleted {session_id}", highlight=False)

    @review_app.command("forget")
    def review_forget(
        last: str = typer.Option(..., "--last", help="How much to forget, e.g. 10m, 90s, 1h."),
        home: Optional[str] = _HOME,
    ) -> None:
        """Destroy everything recorded in the last N minutes (events and frames), in every session."""
        from ..errors import ControlError
        from ..privacy.review import forget_last, parse_duration
        from ..recorder.control import call

        paths, spool = open_spool(home)
        try:  # a running recorder is still writing the newest batch: never cut under it
            st = call(paths.control_socket, "status", timeout=2)
        except (ControlError, OSError):
            st = None
        if st is not None:
            raise ControlError(
                f"a recorder is running for this home (session {st.get('session_id')}): stop it first with"
                " `demotrace stop`, then run `demotrace review forget` again (nothing was deleted)")
        res = forget_last(paths, spool, parse_duration(last))
        # frames = frame events; an image an earlier, kept frame also shows is stored once and stays
        kept_images = "" if res.blobs == res.frames else (
            f"; {res.blobs} stored image(s) deleted (a forgotten frame whose screenshot is identical to an"
            " earlier, kept frame's shares that one stored image, which stays)")
        console.print(f"forgot {res.events} events and {res.frames} frames in {len(res.removed)} session(s)"
                      f"{kept_images}", highlight=False)

    ex_app = typer.Typer(help="Your own exclusions: apps, window titles, web sites never captured.", no_args_is_help=True)
    app.add_typer(ex_app, name="exclusions")

    @ex_app.command("add")
    def ex_add(kind: str = typer.Argument(..., help="app | title | domain"),
               value: str = typer.Argument(..., help="App name (WM_CLASS or executable; * wildcards), title text, or domain."),
               home: Optional[str] = _HOME) -> None:
        """Exclude an app (also one never seen yet), a window title or a web site."""
        from ..privacy.scope import Exclusions

        paths = writable_paths(home)
        ex = Exclusions.load(paths)
        e = ex.add(kind, value)
        ex.save()
        console.print(f"excluded {e.kind} {e.value}", highlight=False, markup=False)

    @ex_app.command("list")
    def ex_list(home: Optional[str] = _HOME) -> None:
        """List your exclusions."""
        from ..privacy.scope import Exclusions

        for e in Exclusions.load(Paths.from_env(home)).items:
            typer.echo(f"{e.kind}\t{e.value}\t{e.added_utc}")

    @ex_app.command("remove")
    def ex_remove(kind: str, value: str, home: Optional[str] = _HOME) -> None:
        """Remove one of your exclusions."""
        from ..errors import ConfigError
        from ..privacy.scope import Exclusions

        paths = writable_paths(home)
        ex = Exclusions.load(paths)
        if not ex.remove(kind, value):
            raise ConfigError(f"no exclusion {kind} {value!r}; see `demotrace exclusions list`")
        ex.save()
        console.print(f"removed {kind} {value}", highlight=False, markup=False)
