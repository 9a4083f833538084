"""``demotrace browser install|uninstall|status`` — the Chromium extension's native messaging
host (see docs/browser.md and :mod:`demotrace.capture.browser.install`).

``install`` writes the launcher script into ``<home>/browser/`` and the host manifest into the
browser's ``NativeMessagingHosts`` folder (``~/.config/chromium`` by default, or
``--user-data-dir`` for a browser started with one), then prints the extension folder to load
unpacked at ``chrome://extensions`` and the extension id the manifest admits.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..paths import Paths
from .common import console, err_console

browser_app = typer.Typer(help="Install the browser extension's native messaging host (Chromium).", no_args_is_help=True)
HomeOpt = typer.Option(None, "--home", help="demotrace home folder (default $DEMOTRACE_HOME or ~/.local/share/demotrace).")
BrowserOpt = typer.Option("chromium", "--browser", help="chromium (~/.config/chromium) | chrome (~/.config/google-chrome).")
UserDataOpt = typer.Option(None, "--user-data-dir", help="The browser's --user-data-dir, if it runs with one.")


def _launcher_dir(home: str | None) -> tuple[Paths, Path]:
    paths = Paths.from_env(home)
    return paths, paths.home / "browser"


@browser_app.command("install")
def install_cmd(home: str | None = HomeOpt, browser: str = BrowserOpt, user_data_dir: Path | None = UserDataOpt) -> None:
    """Write the native host launcher and manifest; print how to load the extension."""
    from ..capture.browser import install as inst

    paths, ldir = _launcher_dir(home)
    res = inst.install(ldir, browser=browser, user_data_dir=user_data_dir, home=paths.home)
    console.print(f"host manifest: {res.manifest}", highlight=False)
    console.print(f"launcher:      {res.launcher}", highlight=False)
    console.print(f"extension:     {res.extension_dir} (id {res.extension_id})", highlight=False)
    console.print("Load the extension folder unpacked at chrome://extensions (Developer mode → Load unpacked),"
                  " or start Chromium with --load-extension=<folder>.", highlight=False)


@browser_app.command("uninstall")
def uninstall_cmd(home: str | None = HomeOpt, browser: str = BrowserOpt, user_data_dir: Path | None = UserDataOpt) -> None:
    """Remove the native host manifest and launcher."""
    from ..capture.browser import install as inst

    _, ldir = _launcher_dir(home)
    removed = inst.uninstall(ldir, browser=browser, user_data_dir=user_data_dir)
    for p in removed:
        console.print(f"removed {p}", highlight=False)
    if not removed:
        console.print("nothing was installed", highlight=False)


@browser_app.command("status")
def status_cmd(home: str | None = HomeOpt, browser: str = BrowserOpt, user_data_dir: Path | None = UserDataOpt) -> None:
    """Show what is installed; exit code 1 if the host is not (correctly) installed."""
    from ..capture.browser import install as inst

    _, ldir = _launcher_dir(home)
    st = inst.status(ldir, browser=browser, user_data_dir=user_data_dir)
    for k in ("manifest", "manifest_ok", "launcher", "launcher_ok", "extension_dir", "extension_id"):
        console.print(f"{k}: {st[k]}", highlight=False)
    problems = st["problems"]
    assert isinstance(problems, list)
    for p in problems:
        err_console.print(f"[bold red]problem:[/] {p}", highlight=False)
    if problems:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``browser`` command group to ``app``."""
    app.add_typer(browser_app, name="browser")
