"""The ``demotrace`` command line (Typer + rich).

Each group of sub-commands lives in its own module and adds itself with ``register(app)``:

- :mod:`.recording` — ``record``, ``status``, ``pause``, ``resume``, ``task start|end``
- :mod:`.sessions` — ``sessions list|show|delete``
- :mod:`.importing` — ``import`` (DuckTrack / AgentNetTool folders)
- :mod:`.dataset` — ``build``, ``export``, ``replay``
- :mod:`.privacy` — ``enroll``, ``policy show``, ``seal``, ``review …``, ``exclusions …``
"""

from __future__ import annotations

import errno
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


# What the deepest pathlib / os / shutil frame was doing when an OSError was raised, for the
# ``error: <what> <path>: <strerror>`` line of :func:`main`.
_OS_VERBS = {
    "mkdir": "cannot create folder", "makedirs": "cannot create folder",
    "write_text": "cannot write", "write_bytes": "cannot write", "touch": "cannot create",
    "read_text": "cannot read", "read_bytes": "cannot read", "open": "cannot open",
    "unlink": "cannot remove", "rmdir": "cannot remove", "rmtree": "cannot remove",
    "rename": "cannot move", "replace": "cannot move", "move": "cannot move",
    "iterdir": "cannot list", "scandir": "cannot list", "listdir": "cannot list",
    "chmod": "cannot change permissions of", "copyfile": "cannot copy", "copy2": "cannot copy",
}

_OS_MODULES = frozenset({"pathlib", "os", "shutil", "tempfile"})

# A fix that can be named, by errno (strerror alone says what, not what to do).
_OS_HINTS = {
    errno.EISDIR: "give a file name, not a folder",
    errno.ENOTDIR: "a part of this path is a file, not a folder; choose another path",
    errno.EROFS: "choose a writable folder",
    errno.EACCES: "choose a folder you may write to",
    errno.EPERM: "choose a folder you may write to",
    errno.ENOSPC: "free some space or choose another disk",
    errno.EEXIST: "choose another path",
}


def os_error_message(exc: OSError) -> str:
    """One line for an OSError met at the CLI boundary: ``<what> <path>: <strerror>[; <fix>]``.

    ``<what>`` comes from the outermost frame of the traceback that is a file operation of
    :data:`_OS_MODULES` (``Path.mkdir`` → "cannot create folder", ``write_text`` → "cannot write", …; "cannot use"
    when none is); ``<path>`` is ``exc.filename`` (and ``-> filename2`` for a move); the fix
    comes from :data:`_OS_HINTS` by errno. Without a file name: ``<strerror>`` alone.
    """
    what = "cannot use"
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_globals.get("__name__") in _OS_MODULES and frame.f_code.co_name in _OS_VERBS:
            what = _OS_VERBS[frame.f_code.co_name]
            break
        tb = tb.tb_next
    strerror = exc.strerror or str(exc) or type(exc).__name__
    hint = _OS_HINTS.get(exc.errno or 0)
    if exc.errno == errno.EEXIST and what == "cannot create folder":
        hint = "a file of that name is in the way; choose another path"
    tail = f"; {hint}" if hint else ""
    if exc.filename is None:
        return f"{strerror}{tail}"
    where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{what} {where}: {strerror}{tail}"


def main() -> None:
    """Console entry point: runs the Typer app, printing demotrace errors without a traceback.

    The boundary where expected mistakes become one ``error: …`` line and exit code 1:
    :class:`DemotraceError` (raised on purpose, message names the fix) and :class:`OSError`
    (a path the user gave cannot be created, written or read: ``error: <what> <path>:
    <strerror>``, see :func:`os_error_message`). Typer's standalone mode re-raises OSError
    (click.Command.main handles only EPIPE), so it reaches this boundary. Any other exception
    is a bug and keeps its traceback.
    """
    from rich.console import Console
    from rich.markup import escape

    try:
        app()
    except DemotraceError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True,
                                   soft_wrap=True)
        sys.exit(1)
    except OSError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(os_error_message(exc))}",
                                   highlight=False, markup=True, soft_wrap=True)
        sys.exit(1)
