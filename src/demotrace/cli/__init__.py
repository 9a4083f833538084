"""The ``demotrace`` command line (Typer + rich).

Each group of sub-commands lives in its own module and adds itself with ``register(app)``:

- :mod:`.recording` — ``record``, ``status``, ``pause``, ``resume``, ``task start|end``
- :mod:`.sessions` — ``sessions list|show|delete``
- :mod:`.importing` — ``import`` (DuckTrack / AgentNetTool folders)
- :mod:`.dataset` — ``build``, ``export``, ``replay``
- :mod:`.privacy` — ``enroll``, ``policy show``, ``seal``, ``review …``, ``exclusions …``
"""

from __future__ import annotations

import sys

import typer

from .. import __version__
from ..errors import DemotraceError
from . import dataset, importing, recording, sessions
from . import privacy as privacy_cli
from . import server as server_cli
from . import browser as browser_cli
from ..demo import cli as demo_cli

app = typer.Typer(
    name="demotrace",
    help=(
        "Record how you use your computer — with your consent, on your device, encrypted — and "
        "turn recordings into training data for computer-use agents.\n\n"
        "New here? `demotrace demo` runs the whole loop on a virtual display (docs/quickstart.md).\n\n"
        "Typical loop: `demotrace enroll` (once) → `demotrace record` (Ctrl-C or `demotrace stop`; "
        "mark tasks with `demotrace task start \"…\"` / `task end --status success`) → "
        "`demotrace review list` → `demotrace seal` (redact) → `demotrace build --out DS` → "
        "`demotrace export --format agentnet --dataset DS --out OUT` → `demotrace replay`. "
        "To send bundles to a collector: `demotrace device enroll` → `demotrace upload`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"demotrace {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """Root options."""


recording.register(app)
sessions.register(app)
dataset.register(app)
importing.register(app)
privacy_cli.register(app)
server_cli.register(app)
browser_cli.register(app)
demo_cli.register(app)


def main() -> None:
    """Console entry point: runs the Typer app, printing demotrace errors without a traceback."""
    try:
        app()
    except DemotraceError as exc:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        sys.exit(1)
