"""The demotrace native messaging host: Chromium starts it for the extension and talks to it on
stdin / stdout; it forwards each report to the local recorder's control socket.

Wire format (Chrome native messaging,
https://developer.chrome.com/docs/extensions/develop/concepts/native-messaging#native-messaging-host-protocol):
each message is a 32-bit length in native byte order followed by that many bytes of UTF-8 JSON;
messages from the host are at most 1 MB, to the host at most 64 MiB. Chromium passes the
caller's origin (``chrome-extension://<id>/``) as the first argument; stdout is the protocol,
so nothing else may be printed there (diagnostics go to stderr, which Chromium passes on to its
own stderr, and never contain report contents).

Each report becomes one schema v1 event sent as ``{"cmd": "browser_event", "event": {"kind",
"t_ns_abs", ...fields}}`` (see :mod:`demotrace.recorder.control`): ``action`` reports →
``element`` (see :func:`~.merge.element_fields`), ``navigation`` reports → ``focus_change``.
Time: an event is stamped when the host receives it (``CLOCK_MONOTONIC``, like the X11
backend, which stamps input when its thread receives it), so it sorts after the desktop input
that caused it; the DOM event's own time is kept as ``attributes["dom_lead_ns"]`` = how many ns
earlier it happened (browser clock mapped with :func:`~.merge.epoch_ms_to_monotonic_ns`;
typically 2–20 ms). Reason: the builder gives an action the *latest* ``element`` before it is
closed, and a DOM ``pointerdown`` stamped with the browser's earlier event time would sort
before the X11 ``pointer_down`` and become the target of the typing run that click ends.

When no recorder runs, reports are dropped (nothing is recorded outside a recording) and the
host retries connecting at most once per :data:`RECONNECT_S`.

The extension opens with ``{"type": "hello"}`` (the host then connects to the recorder); the
host answers only with ``{"type": "status", "recording": bool}`` after a change of the
recorder's availability (the service worker keeps it in ``recording``).
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

from ...errors import ControlError, SchemaError
from . import merge

#: Largest message accepted from the browser, bytes (Chrome's limit towards a host is 64 MiB;
#: a report is a few KB, a report with a DOM snapshot ~ 25 KB).
MAX_MESSAGE = 1 << 20
#: Seconds between attempts to reach a recorder that is not running.
RECONNECT_S = 1.0


def read_message(stream: BinaryIO) -> dict[str, Any] | None:
    """Read one length-prefixed JSON message; ``None`` at end of input (the browser closed the
    port).

    Raises:
        SchemaError: truncated message, over :data:`MAX_MESSAGE`, not JSON or not an object.
    """
    head = stream.read(4)
    if not head:
        return None
    if len(head) < 4:
        raise SchemaError("native message truncated in its 4-byte length prefix")
    (n,) = struct.unpack("=I", head)
    if n > MAX_MESSAGE:
        raise SchemaError(f"native message of {n} bytes is over the {MAX_MESSAGE}-byte limit")
    body = stream.read(n)
    if len(body) < n:
        raise SchemaError(f"native message truncated: {len(body)} of {n} bytes")
    try:
        msg = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SchemaError(f"native message is not JSON: {exc}") from exc
    if not isinstance(msg, dict):
        raise SchemaError(f"native message must be a JSON object, got {type(msg).__name__}")
    return msg


def write_message(stream: BinaryIO, msg: dict[str, Any]) -> None:
    """Write one length-prefixed JSON message and flush."""
    body = json.dumps(msg, separators=(",", ":")).encode()
    stream.write(struct.pack("=I", len(body)) + body)
    stream.flush()


def to_event(report: dict[str, Any], browser_pid: int | None = None, policy: Any = None) -> dict[str, Any] | None:
    """The ``browser_event`` payload for one report, or ``None`` for reports that carry no event.

    Raises:
        SchemaError: a malformed report (names the field).
    """
    typ = report.get("type")
    now = time.monotonic_ns()
    if typ == "action":
        fields = merge.element_fields(report, policy)
        t_dom = merge.epoch_ms_to_monotonic_ns(report.get("t_epoch_ms"), now_mono_ns=now)
        fields["attributes"]["dom_lead_ns"] = str(now - t_dom)
        return {"kind": "element", "t_ns_abs": now, **fields}
    if typ == "navigation":
        return {"kind": "focus_change", "t_ns_abs": now, **merge.focus_fields(report, browser_pid)}
    if typ in ("hello", "status"):
        return None
    raise SchemaError(f"browser report has unknown type {typ!r}; expected action or navigation")


class Forwarder:
    """Sends events to the recorder at ``socket_path``; counts ``sent``, ``dropped`` (no
    recorder) and ``rejected`` (the recorder said no)."""

    def __init__(self, socket_path: Path) -> None:
        from ...recorder.control import ControlClient

        self._client_cls = ControlClient
        self.socket_path = socket_path
        self._client: Any = None
        self._next_try = 0.0
        self.sent = self.dropped = self.rejected = 0
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        """True while a connection to the recorder is open."""
        return self._client is not None

    def connect(self) -> bool:
        """Open the connection if none is open (at most one attempt per :data:`RECONNECT_S`);
        True if connected."""
        if self._client is None and time.monotonic() >= self._next_try:
            try:
                self._client = self._client_cls(self.socket_path, timeout=5.0)
            except ControlError as exc:
                self.last_error = str(exc)
                self._next_try = time.monotonic() + RECONNECT_S
        return self._client is not None

    def send(self, event: dict[str, Any]) -> bool:
        """Forward one event; False if it was dropped or rejected."""
        if not self.connect():
            self.dropped += 1
            return False
        try:
            rep = self._client.request("browser_event", event=event)
        except ControlError as exc:
            self.last_error = str(exc)
            self.close()
            self._next_try = time.monotonic() + RECONNECT_S
            self.dropped += 1
            return False
        if not rep.get("ok"):
            self.rejected += 1
            self.last_error = str(rep.get("error"))
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        """Close the connection (reopened on the next send)."""
        if self._client is not None:
            try:
                self._client.close()
            except OSError:
                pass
            self._client = None


def _log(msg: str) -> None:
    sys.stderr.write(f"demotrace-native-host: {msg}\n")
    sys.stderr.flush()


def policy_message(policy: Any) -> dict[str, Any]:
    """The secret-field rules of ``policy`` for the extension: ``{"type": "policy",
    "name_patterns": [[source, flags], ...], "autocomplete": [...], "types": [...]}``. Python's
    leading ``(?i)`` becomes the JavaScript flag ``i``; the page skips a pattern its RegExp
    cannot compile (and keeps its built-in ones)."""
    pats = []
    for p in policy.secrets.name_patterns:
        flags = ""
        while p.startswith("(?i)"):
            p, flags = p[4:], "i"
        pats.append([p, flags])
    return {"type": "policy", "name_patterns": pats, "autocomplete": list(policy.secrets.dom_autocomplete),
            "types": list(policy.secrets.dom_types)}


def serve(stdin: BinaryIO, stdout: BinaryIO, socket_path: Path, browser_pid: int | None = None,
          policy: Any = None) -> Forwarder:
    """Relay reports from ``stdin`` to the recorder until the browser closes the port. A
    malformed report is skipped and logged (by its error, never its content). With a
    ``policy``, the hello is answered with :func:`policy_message` and elements the policy calls
    secret are marked so (see :func:`~.merge.element_fields`)."""
    fwd = Forwarder(socket_path)
    was = None
    last_dsf: dict[Any, float] = {}
    try:
        while True:
            try:
                report = read_message(stdin)
            except SchemaError as exc:
                _log(f"skipped a message: {exc}")
                if "truncated" in str(exc):
                    return fwd
                continue
            if report is None:
                return fwd
            try:
                if report.get("type") == "action" and isinstance(report.get("view"), dict):
                    dpr, zoom = report["view"].get("dpr"), report.get("zoom") or 1
                    if isinstance(dpr, (int, float)) and isinstance(zoom, (int, float)) and zoom > 0:
                        last_dsf[report.get("window_id")] = float(dpr) / float(zoom)
                if report.get("type") == "navigation" and "dsf" not in report:
                    report["dsf"] = last_dsf.get(report.get("window_id"), 1.0)
                event = to_event(report, browser_pid, policy)
            except SchemaError as exc:
                _log(f"skipped a report: {exc}")
                continue
            if event is not None:
                fwd.send(event)
            elif report.get("type") == "hello":
                if policy is not None:
                    write_message(stdout, policy_message(policy))
                fwd.connect()
            if fwd.connected != was:
                was = fwd.connected
                write_message(stdout, {"type": "status", "recording": was})
    finally:
        fwd.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the launcher script that ``demotrace browser install`` writes. The
    recorder's home comes from ``DEMOTRACE_HOME`` (set by the launcher) or the default."""
    from ...paths import Paths

    args = sys.argv[1:] if argv is None else argv
    origin = args[0] if args else "?"
    if not origin.startswith("chrome-extension://"):
        _log(f"unexpected caller {origin!r}; this program is started by Chromium")
    from ...errors import DemotraceError
    from ...privacy.policy import default_policy, load_policy

    paths = Paths.from_env()
    try:
        policy = load_policy(paths)
    except DemotraceError as exc:
        _log(f"policy unreadable ({exc}); using the built-in policy")
        policy = default_policy()
    fwd = serve(sys.stdin.buffer, sys.stdout.buffer, paths.control_socket, browser_pid=os.getppid(), policy=policy)
    _log(f"port closed: {fwd.sent} events sent, {fwd.dropped} dropped (no recorder), {fwd.rejected} rejected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
