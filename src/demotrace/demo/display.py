"""Starting a private virtual X display (Xvfb) for the demo and the test harness."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import IO


class XvfbError(RuntimeError):
    """Xvfb is not installed or did not start; the message names the fix."""


def start_xvfb(
    width: int, height: int, *, stderr: IO[bytes] | int = subprocess.DEVNULL, timeout_s: float = 20.0
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``Xvfb`` with the RECORD extension on a display number it picks itself.

    ``width`` × ``height`` in pixels, 24-bit depth; no TCP listener, no authorisation (local
    connections only), ``-noreset``. Returns the process (in its own session) and the display
    name (e.g. ``":7"``) once the server accepts clients (``-displayfd``).

    Raises:
        XvfbError: Xvfb is missing (fix: ``bash scripts/bootstrap.sh`` installs Debian's
            ``xvfb``) or reported no display within ``timeout_s`` seconds.
    """
    exe = shutil.which("Xvfb")
    if exe is None:
        raise XvfbError("Xvfb not found; run `bash scripts/bootstrap.sh` (installs Debian's xvfb)")
    r, w = os.pipe()
    proc = subprocess.Popen(
        [exe, "-displayfd", str(w), "-screen", "0", f"{width}x{height}x24", "+extension", "RECORD",
         "-nolisten", "tcp", "-noreset"],
        pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
    )
    os.close(w)
    buf = b""
    deadline = time.monotonic() + timeout_s
    with os.fdopen(r, "rb") as f:
        while not buf.endswith(b"\n") and time.monotonic() < deadline:
            ch = f.read(1)
            if not ch:
                break
            buf += ch
    if not buf.strip():
        proc.kill()
        proc.wait(5)
        raise XvfbError("Xvfb did not report a display number")
    return proc, ":" + buf.decode().strip()
