"""The recorder's control channel: a Unix socket only its owner can use, and the
one-recorder-per-home lock.

Protocol: JSON lines. Each request is one JSON object on one line, ``{"cmd": NAME, ...}`` with
NAME one of :data:`COMMANDS`; each reply is one line, ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``. Malformed lines (not JSON, not an object, unknown command,
longer than :data:`MAX_LINE` bytes) get an error reply; they never stop the recorder.
A connection may carry many requests (the indicator keeps one open).

Access control, in depth (DESIGN.md §8.12: local interfaces use Unix sockets with
authentication): the socket's folder is mode 0700 and the socket 0600, and every connection's
peer uid is read with ``SO_PEERCRED`` — a peer that is not the recorder's own user is refused
with an error reply and disconnected.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ControlError

COMMANDS = ("status", "pause", "resume", "task_start", "task_end", "stop", "browser_event")
#: Longest accepted request line, in bytes.
MAX_LINE = 64 * 1024

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (Linux ``SO_PEERCRED``)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _reply(f: io.BufferedIOBase, obj: dict[str, Any]) -> None:
    f.write(json.dumps(obj, ensure_ascii=False).encode() + b"\n")
    f.flush()


def parse_request(line: bytes) -> dict[str, Any] | str:
    """Parse one request line: the request dict, or an error message naming what is wrong."""
    try:
        msg = json.loads(line)
    except (UnicodeDecodeError, ValueError) as exc:
        return f"malformed message: not JSON ({exc})"
    if not isinstance(msg, dict):
        return f"malformed message: expected a JSON object like {{\"cmd\": \"status\"}}, got {type(msg).__name__}"
    cmd = msg.get("cmd")
    if not isinstance(cmd, str):
        return "malformed message: missing string field 'cmd'"
    if cmd not in COMMANDS:
        return f"unknown command {cmd!r}; known: {', '.join(COMMANDS)}"
    return msg


class ControlServer:
    """Serves ``handler`` on a Unix socket at ``path`` (one thread per connection).

    ``handler(request) -> reply`` is called with a validated request; exceptions it raises are
    turned into ``{"ok": false}`` replies. :attr:`refused` counts refused peers.
    """

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self.refused = 0
        self._uid = os.getuid()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    def start(self) -> None:
        """Bind (replacing a stale socket file) with mode 0600 in a 0700 folder and serve."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise ControlError(f"{self.path} exists and is not a socket; remove it")
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(8)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="demotrace-control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._closing:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), name="demotrace-control-conn", daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            try:
                uid = peer_uid(conn)
                if uid != self._uid:
                    self.refused += 1
                    _reply(f, {"ok": False, "error": f"refused: uid {uid} is not the recorder's owner"})
                    return
                while True:
                    line = f.readline(MAX_LINE + 1)
                    if not line:
                        return
                    if len(line) > MAX_LINE:
                        _reply(f, {"ok": False, "error": f"malformed message: longer than {MAX_LINE} bytes"})
                        return
                    if not line.strip():
                        continue
                    req = parse_request(line)
                    if isinstance(req, str):
                        _reply(f, {"ok": False, "error": req})
                        continue
                    try:
                        rep = self.handler(req)
                    except Exception as exc:  # noqa: BLE001 - never crash the recorder
                        rep = {"ok": False, "error": f"{req['cmd']} failed: {exc}"}
                    _reply(f, rep)
            except (OSError, ValueError):
                return

    def close(self) -> None:
        """Stop accepting and remove the socket file."""
        self._closing = True
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class ControlClient:
    """A connection to a running recorder's control socket (usable for many requests).

    Raises:
        ControlError: no recorder listens there (the message names the fix), or it refused.
    """

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise ControlError("no recorder running; start one with `demotrace record`") from exc
        except PermissionError as exc:
            sock.close()
            raise ControlError(f"permission denied on {path}: the recorder belongs to another user") from exc
        except OSError as exc:
            sock.close()
            raise ControlError(f"cannot reach the recorder at {path}: {exc}") from exc
        self._sock = sock
        self._f = sock.makefile("rwb")

    def request(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send ``{"cmd": cmd, **args}`` and return the reply dict (``ok`` may be false)."""
        return self.send_raw(json.dumps({"cmd": cmd, **args}).encode() + b"\n")

    def send_raw(self, line: bytes) -> dict[str, Any]:
        """Send one raw line (tests use this for malformed input) and parse the reply."""
        try:
            self._f.write(line)
            self._f.flush()
            reply = self._f.readline()
        except OSError as exc:
            raise ControlError(f"the recorder did not answer: {exc}") from exc
        if not reply:
            raise ControlError("the recorder closed the connection without answering")
        try:
            obj = json.loads(reply)
        except ValueError as exc:
            raise ControlError(f"bad reply from the recorder: {reply[:200]!r}") from exc
        if not isinstance(obj, dict):
            raise ControlError(f"bad reply from the recorder: {reply[:200]!r}")
        return obj

    def close(self) -> None:
        """Close the connection."""
        try:
            self._f.close()
        finally:
            self._sock.close()

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def call(path: Path, cmd: str, timeout: float = 10.0, **args: Any) -> dict[str, Any]:
    """One request on a fresh connection; raises :class:`ControlError` if the reply is not ok
    (with the recorder's error message)."""
    with ControlClient(path, timeout) as c:
        rep = c.request(cmd, **args)
    if not rep.get("ok"):
        raise ControlError(str(rep.get("error", "the recorder refused")))
    return rep


class RecorderLock:
    """One recorder per home: an exclusive ``flock`` on ``<run_dir>/recorder.pid`` holding the
    pid. Released by :meth:`release` or when the process dies (also on ``kill -9``)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "recorder.pid"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            ControlError: another recorder holds it (names its pid and the fix).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = os.read(fd, 32).decode().strip() or "?"
            finally:
                os.close(fd)
            raise ControlError(
                f"a recorder is already running for this home (pid {pid}); stop it with `demotrace stop`"
                " or use another --home"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Release the lock and remove the pid file."""
        if self._fd is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def holder(run_dir: Path) -> int | None:
        """Pid of the running recorder of this home, or ``None`` if none holds the lock."""
        path = run_dir / "recorder.pid"
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                txt = os.read(fd, 32).decode().strip()
                return int(txt) if txt.isdigit() else -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


def _is_recorder_process(pid: int) -> bool:
    """Whether ``pid`` is a live, non-zombie process whose command line names demotrace's
    ``record`` command (read from ``/proc/<pid>``; Linux only, like the X11 backend)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[-1].split()[0]
        if state in (b"Z", b"X"):  # a killed recorder its parent has not reaped yet
            return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
        return False
    return any(b"demotrace" in a for a in argv) and b"record" in argv


def _socket_listens(path: Path, timeout: float = 1.0) -> bool:
    """Whether something accepts connections on the Unix socket ``path`` (a dead recorder's
    socket file refuses them: ``ECONNREFUSED``)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


class RunState:
    """What :func:`check_run_dir` found in a home's ``run/`` folder.

    ``pid``: the live recorder's pid (``-1`` while one is starting and has not written its pid
    yet), or ``None`` when no recorder runs. ``cleaned``: stale files removed (a pid file whose
    process is gone or is not a demotrace recorder, a control socket nothing listens on) — left
    behind by a recorder that was killed (``kill -9``, power loss), whose open session is then
    *crashed*: it will never be ended by its recorder.
    """

    def __init__(self, pid: int | None, cleaned: list[Path]) -> None:
        self.pid = pid
        self.cleaned = cleaned

    @property
    def running(self) -> bool:
        """A recorder runs (or is starting) for this home."""
        return self.pid is not None

    @property
    def crashed(self) -> bool:
        """Stale run files of a killed recorder were found (and removed)."""
        return bool(self.cleaned)


def check_run_dir(run_dir: Path, control_socket: Path, *, clean: bool = True) -> RunState:
    """Find out whether a recorder runs for this home and, if none does, remove the stale run
    files a killed one left (``clean=False``: only report them).

    Rules: the recorder is live when the ``recorder.pid`` lock (:class:`RecorderLock`) is held
    and the pid written in it is a live, non-zombie process running demotrace ``record``
    (``/proc/<pid>/cmdline``), or when the lock is held with no pid written yet (a recorder
    starting). A pid file whose lock is free, or whose pid is gone / reused by another program,
    is stale. With no live recorder, a ``control.sock`` that refuses connections is stale.

    Errors: none raised; files that cannot be removed are left and not listed in ``cleaned``.
    """
    pid_file = run_dir / "recorder.pid"
    holder = RecorderLock.holder(run_dir)
    if holder == -1 or (holder is not None and (holder == os.getpid() or _is_recorder_process(holder))):
        return RunState(holder, [])
    cleaned: list[Path] = []
    stale = [pid_file] if pid_file.exists() else []
    if (control_socket.exists() and stat.S_ISSOCK(control_socket.lstat().st_mode)
            and not _socket_listens(control_socket)):
        stale.append(control_socket)
    for p in stale:
        if not clean:
            cleaned.append(p)
            continue
        try:
            p.unlink()
            cleaned.append(p)
        except FileNotFoundError:
            pass
        except OSError:
            continue
    return RunState(None, cleaned)
