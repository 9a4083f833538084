"""``demotrace demo`` command (registered by :mod:`demotrace.cli`)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to ``app``."""

    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("demo-output"), "--out", help="Folder for everything the demo writes (replaced parts: dataset, export, collector, replay.html)."),
        home: Path | None = typer.Option(None, "--home", help="demotrace home to record into (default <out>/home, started afresh each run). A home you give is kept; only the demo's session is sealed, uploaded and built. Refused if it is enrolled with a collector."),
    ) -> None:
        """Run the whole loop on a virtual display: record a scripted task in real apps (editor,
        xterm, a sign-in form), seal, upload to a local collector, build the dataset, export
        AgentNet and SFT chat, write a replay page. Needs Xvfb, openbox, xdotool, xterm, python3-tk
        (bash scripts/bootstrap.sh installs them). Takes about a minute."""
        from rich.console import Console

        from . import Demo, DemoError, print_summary

        console = Console()
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".demotrace-write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise DemoError(f"cannot write the demo's output folder {out}: {exc.strerror or exc}; "
                            "choose another with --out DIR") from exc
        console.print(f"[bold]demotrace demo[/] → {out.resolve()}", highlight=False)
        t0 = time.monotonic()
        def _interrupt(signum: int, _frame: object) -> None:
            raise KeyboardInterrupt(signum)

        # SIGTERM / SIGHUP clean up like Ctrl-C: the demo's children run in their own sessions
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _interrupt)
        try:
            res = Demo(out, home, console).run()
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted[/]; what was done so far is in {out.resolve()} "
                          "(the virtual display, apps, recorder and collector were stopped)", highlight=False)
            raise typer.Exit(130) from None
        print_summary(console, res, time.monotonic() - t0)
