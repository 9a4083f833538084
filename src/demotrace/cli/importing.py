"""``demotrace import PATH``: bring a foreign recording into the encrypted spool."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from .common import console, err_console, open_spool


def register(app: typer.Typer) -> None:
    """Add ``import`` to ``app``."""

    @app.command("import")
    def import_(
        path: Path = typer.Argument(..., help="Recording folder (DuckTrack / AgentNetTool: events.jsonl + metadata.json)."),
        name: Optional[str] = typer.Option(None, "--name", help="A label stored with the session."),
        fmt: str = typer.Option("ducktrack", "--format", help="Importer: ducktrack (also AgentNetTool folders)."),
        scale: Optional[float] = typer.Option(
            None, "--scale", help="Physical pixels per logical point (default: from the video, else 2 on macOS, 1 elsewhere)."),
        scroll_sign: int = typer.Option(1, "--scroll-sign", help="Factor on recorded scroll deltas (1 keeps them)."),
        skip_bad_lines: bool = typer.Option(
            False, "--skip-bad-lines", help="Skip and count malformed lines instead of aborting."),
        no_video: bool = typer.Option(False, "--no-video", help="Ignore a screen video in the folder."),
        home: Optional[str] = typer.Option(None, "--home", help="demotrace home folder (default $DEMOTRACE_HOME)."),
    ) -> None:
        """Import a recording folder as a new encrypted spool session; prints its id."""
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        from ..errors import ConfigError
        from ..importers import DuckTrackConfig, import_ducktrack

        if fmt != "ducktrack":
            raise ConfigError(f"unknown import format {fmt!r}; known: ducktrack")
        if scroll_sign not in (1, -1):
            raise ConfigError("--scroll-sign must be 1 or -1")
        if scale is not None and not (math.isfinite(scale) and scale > 0):
            raise ConfigError(f"--scale must be a finite number > 0, got {scale:g}")
        _paths, spool = open_spool(home, create_key=True)
        cfg = DuckTrackConfig(scale=scale, scroll_sign=scroll_sign, skip_bad_lines=skip_bad_lines,
                              video=not no_video)
        with Progress(TextColumn("importing"), BarColumn(), DownloadColumn(), console=err_console,
                      transient=True) as bar:
            task = bar.add_task("import", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = import_ducktrack(path, spool, name=name, config=cfg, progress=progress)
        err_console.print(
            f"imported {result.events} events, {result.frames} frames (scale {result.scale:g})"
            + (f", skipped {result.skipped} bad lines" if result.skipped else "")
            + (f", {result.backward_timestamps} time_stamp(s) earlier than the line before (kept as recorded)" if result.backward_timestamps else ""), highlight=False)
        for line in result.skipped_lines:
            err_console.print(f"  skipped {line}", highlight=False, markup=False)
        console.print(result.session_id, highlight=False)
