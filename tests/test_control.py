"""The control socket: owner-only access (file modes and SO_PEERCRED), malformed messages get
an error reply and never stop the server, one recorder per home."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest

from demotrace.errors import ControlError
from demotrace.recorder import COMMANDS, ControlClient, ControlServer, RecorderLock

NOBODY = 65534


@pytest.fixture
def server(tmp_path: Path):
    calls: list[dict[str, Any]] = []

    def handler(req: dict[str, Any]) -> dict[str, Any]:
        calls.append(req)
        if req["cmd"] == "task_start":
            raise RuntimeError("boom")
        return {"ok": True, "echo": req["cmd"]}

    run = tmp_path / "run"
    srv = ControlServer(run / "control.sock", handler)
    srv.start()
    srv.calls = calls  # type: ignore[attr-defined]
    yield srv
    srv.close()


def test_socket_modes(server: ControlServer) -> None:
    assert stat.S_IMODE(server.path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(server.path.stat().st_mode) == 0o600
    assert stat.S_ISSOCK(server.path.stat().st_mode)


def test_malformed_messages_get_errors_and_server_survives(server: ControlServer) -> None:
    with ControlClient(server.path) as c:
        cases = [
            (b"this is not json\n", "not JSON"),
            (b"[1, 2]\n", "expected a JSON object"),
            (b'{"nocmd": 1}\n', "missing string field 'cmd'"),
            (b'{"cmd": 5}\n', "missing string field 'cmd'"),
            (b'{"cmd": "format_disk"}\n', "unknown command 'format_disk'"),
            (b"\xff\xfe\x00garbage\n", "not JSON"),
        ]
        for line, expected in cases:
            rep = c.send_raw(line)
            assert rep["ok"] is False and expected in rep["error"], (line, rep)
        # the handler raising does not kill the connection either
        rep = c.request("task_start", instruction="x")
        assert rep == {"ok": False, "error": "task_start failed: boom"}
        assert c.request("status") == {"ok": True, "echo": "status"}
    # an over-long line gets an error and the connection is closed; a new one works
    with ControlClient(server.path) as c:
        rep = c.send_raw(b"x" * (70 * 1024) + b"\n")
        assert rep["ok"] is False and "longer than" in rep["error"]
    with ControlClient(server.path) as c:
        assert c.request("pause") == {"ok": True, "echo": "pause"}
    assert [r["cmd"] for r in server.calls] == ["task_start", "status", "pause"]  # type: ignore[attr-defined]
    assert set(COMMANDS) == {"status", "pause", "resume", "task_start", "task_end", "stop", "browser_event"}


_CLIENT = textwrap.dedent(
    """
    import json, os, socket, sys
    out = {"uid": os.getuid()}
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(sys.argv[1])
    except OSError as exc:
        out["connect_error"] = type(exc).__name__
    else:
        try:
            s.sendall(b'{"cmd": "pause"}\\n')
        except OSError:  # the server may refuse and hang up before our request is sent
            pass
        out["reply"] = json.loads(s.makefile("rb").readline())
    print(json.dumps(out))
    """
)


def _as_nobody(sock: Path) -> dict[str, Any]:
    assert os.geteuid() == 0, "this test runs a client as another user and needs root (CI runs as root)"
    proc = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "/usr/bin/python3", "-c", _CLIENT, str(sock)],
        capture_output=True, text=True, timeout=30, cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_other_user_refused() -> None:
    calls: list[dict[str, Any]] = []
    top = Path(tempfile.mkdtemp(prefix="dt-ctl-"))  # directly under /tmp (1777), mode 0700
    srv = ControlServer(top / "run" / "control.sock", lambda req: calls.append(req) or {"ok": True})
    srv.start()
    try:
        # 1) the file modes alone keep another user out (0700 folders, 0600 socket)
        out = _as_nobody(srv.path)
        assert out == {"uid": NOBODY, "connect_error": "PermissionError"}
        # 2) even if the modes were loosened, SO_PEERCRED refuses the peer
        os.chmod(top, 0o711)
        os.chmod(srv.path.parent, 0o711)
        os.chmod(srv.path, 0o666)
        out = _as_nobody(srv.path)
        assert out["reply"] == {"ok": False, "error": f"refused: uid {NOBODY} is not the recorder's owner"}
        assert srv.refused == 1
        assert calls == []
        # the owner still gets through
        with ControlClient(srv.path) as c:
            assert c.request("status") == {"ok": True}
        assert calls == [{"cmd": "status"}]
    finally:
        srv.close()
        shutil.rmtree(top)


def test_no_server_error_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match=r"no recorder running; start one with `demotrace record`"):
        ControlClient(tmp_path / "nothing.sock")


def test_stale_socket_replaced_and_non_socket_refused(tmp_path: Path) -> None:
    path = tmp_path / "run" / "control.sock"
    path.parent.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on (recorder killed with -9)
    srv = ControlServer(path, lambda req: {"ok": True})
    srv.start()
    with ControlClient(path) as c:
        assert c.request("status") == {"ok": True}
    srv.close()
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(ControlError, match="is not a socket"):
        ControlServer(path, lambda req: {"ok": True}).start()


def test_one_recorder_per_home(tmp_path: Path) -> None:
    run = tmp_path / "run"
    a = RecorderLock(run)
    a.acquire()
    assert RecorderLock.holder(run) == os.getpid()
    assert stat.S_IMODE((run / "recorder.pid").stat().st_mode) == 0o600
    # a second recorder (another process) is refused, naming the pid and the fix
    proc = subprocess.run(
        [os.sys.executable, "-c",
         "import sys; from pathlib import Path; from demotrace.recorder import RecorderLock\n"
         "try:\n RecorderLock(Path(sys.argv[1])).acquire()\nexcept Exception as e: print(e)",
         str(run)],
        capture_output=True, text=True, timeout=60,
    )
    assert f"already running for this home (pid {os.getpid()})" in proc.stdout
    assert "demotrace stop" in proc.stdout
    a.release()
    assert RecorderLock.holder(run) is None
    b = RecorderLock(run)
    b.acquire()
    b.release()
