"""Installing the native messaging host for Chromium: a host manifest plus a launcher script.

Chromium on Linux looks for a user-level host manifest at
``<user data dir>/NativeMessagingHosts/<name>.json``, i.e. ``~/.config/chromium/NativeMessagingHosts``
for Debian's Chromium and ``~/.config/google-chrome/NativeMessagingHosts`` for Google Chrome
(https://developer.chrome.com/docs/extensions/develop/concepts/native-messaging#native-messaging-host-location).
The manifest names the host (:data:`HOST_NAME`), the absolute ``path`` of the program Chromium
starts (our launcher script), ``"type": "stdio"`` and ``allowed_origins``: only our extension,
``chrome-extension://<id>/``.

The extension id is stable because ``manifest.json`` carries a fixed public ``key``: Chromium
derives the id from it as the first 128 bits of SHA-256 of the DER key, written as 32 letters
``a``–``p`` (one per hex digit 0–f) — see :func:`extension_id`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from ...errors import ConfigError

#: Native messaging host name (lower-case letters, digits, "_" and "." only, per Chrome's rules).
HOST_NAME = "org.demotrace.browser"
#: Folder of the unpacked extension shipped with the package.
EXTENSION_DIR = Path(__file__).resolve().parent / "extension"
#: User data folders of the browsers we know, relative to ``$XDG_CONFIG_HOME`` (``~/.config``).
BROWSERS = {"chromium": "chromium", "chrome": "google-chrome"}


def extension_key(extension_dir: Path = EXTENSION_DIR) -> bytes:
    """The DER public key in the extension's ``manifest.json`` ``key`` field.

    Raises:
        ConfigError: the manifest is missing, not JSON, or has no valid base64 ``key``.
    """
    path = extension_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        return base64.b64decode(manifest["key"], validate=True)
    except FileNotFoundError as exc:
        raise ConfigError(f"extension manifest not found at {path}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: no valid base64 'key' field ({exc})") from exc


def extension_id(key_der: bytes | None = None) -> str:
    """The 32-letter Chromium extension id of a DER public key (default: our manifest's key)."""
    der = extension_key() if key_der is None else key_der
    digest = hashlib.sha256(der).hexdigest()[:32]
    return "".join(chr(ord("a") + int(c, 16)) for c in digest)


def hosts_dir(browser: str = "chromium", user_data_dir: Path | None = None) -> Path:
    """``<user data dir>/NativeMessagingHosts`` for ``browser`` ("chromium" | "chrome"), or for
    an explicit ``user_data_dir`` (a browser started with ``--user-data-dir``).

    Raises:
        ConfigError: unknown browser name.
    """
    if user_data_dir is not None:
        return Path(user_data_dir) / "NativeMessagingHosts"
    if browser not in BROWSERS:
        raise ConfigError(f"unknown browser {browser!r}; choose one of {', '.join(BROWSERS)}")
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / BROWSERS[browser] / "NativeMessagingHosts"


@dataclass(frozen=True)
class Installation:
    """Where the host is installed: ``manifest`` (host manifest JSON), ``launcher`` (the
    script Chromium starts), ``extension_id`` and ``extension_dir`` (load it unpacked)."""

    manifest: Path
    launcher: Path
    extension_id: str
    extension_dir: Path


def launcher_text(home: Path | None, python: str = sys.executable) -> str:
    """The launcher script: runs the host with this Python (and ``DEMOTRACE_HOME`` if given)."""
    lines = ["#!/bin/sh", "# demotrace native messaging host launcher (written by `demotrace browser install`)"]
    if home is not None:
        lines.append(f"DEMOTRACE_HOME={shlex.quote(str(home))}; export DEMOTRACE_HOME")
    lines.append(f"exec {shlex.quote(python)} -m demotrace.capture.browser.nativehost \"$@\"")
    return "\n".join(lines) + "\n"


def install(launcher_dir: Path, *, browser: str = "chromium", user_data_dir: Path | None = None,
            home: Path | None = None, python: str = sys.executable) -> Installation:
    """Write the launcher into ``launcher_dir`` (mode 0700) and the host manifest into the
    browser's ``NativeMessagingHosts`` folder (mode 0600); returns where they are. Re-running
    replaces both (idempotent).

    Raises:
        ConfigError: unknown browser, or the extension key is unreadable.
    """
    eid = extension_id()
    launcher_dir = Path(launcher_dir)
    launcher_dir.mkdir(parents=True, exist_ok=True)
    launcher = launcher_dir / "demotrace-native-host"
    launcher.write_text(launcher_text(home, python), encoding="utf-8")
    launcher.chmod(stat.S_IRWXU)
    target = hosts_dir(browser, user_data_dir)
    target.mkdir(parents=True, exist_ok=True)
    manifest = target / f"{HOST_NAME}.json"
    manifest.write_text(json.dumps({
        "name": HOST_NAME,
        "description": "demotrace: receives DOM element reports from the demotrace extension for the local recorder",
        "path": str(launcher.resolve()),
        "type": "stdio",
        "allowed_origins": [f"chrome-extension://{eid}/"],
    }, indent=2) + "\n", encoding="utf-8")
    manifest.chmod(0o600)
    return Installation(manifest, launcher, eid, EXTENSION_DIR)


def uninstall(launcher_dir: Path, *, browser: str = "chromium", user_data_dir: Path | None = None) -> list[Path]:
    """Remove the host manifest and the launcher; returns the files removed."""
    removed = []
    for p in (hosts_dir(browser, user_data_dir) / f"{HOST_NAME}.json", Path(launcher_dir) / "demotrace-native-host"):
        if p.exists():
            p.unlink()
            removed.append(p)
    return removed


def status(launcher_dir: Path, *, browser: str = "chromium", user_data_dir: Path | None = None) -> dict[str, object]:
    """What is installed: manifest path and whether it exists and names our launcher and
    extension; launcher path and whether it is executable; the extension folder and id."""
    manifest = hosts_dir(browser, user_data_dir) / f"{HOST_NAME}.json"
    launcher = Path(launcher_dir) / "demotrace-native-host"
    eid = extension_id()
    ok_manifest = False
    problems: list[str] = []
    if manifest.exists():
        try:
            m = json.loads(manifest.read_text(encoding="utf-8"))
            ok_manifest = (m.get("path") == str(launcher.resolve())
                           and m.get("allowed_origins") == [f"chrome-extension://{eid}/"])
            if not ok_manifest:
                problems.append(f"{manifest} names another launcher or extension; run `demotrace browser install`")
        except ValueError as exc:
            problems.append(f"{manifest} is not JSON ({exc}); run `demotrace browser install`")
    else:
        problems.append(f"no host manifest at {manifest}; run `demotrace browser install`")
    ok_launcher = launcher.exists() and os.access(launcher, os.X_OK)
    if not ok_launcher:
        problems.append(f"launcher {launcher} missing or not executable; run `demotrace browser install`")
    return {"manifest": str(manifest), "manifest_ok": ok_manifest, "launcher": str(launcher),
            "launcher_ok": ok_launcher, "extension_dir": str(EXTENSION_DIR), "extension_id": eid,
            "problems": problems}
