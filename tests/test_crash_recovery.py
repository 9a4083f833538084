"""A recorder killed with SIGKILL (bug-bash finding: `seal` said "nothing to seal" and `review
list` showed "sealed no" with no hint): the stale run files are detected and removed, the
crashed session is sealed and listed as "crashed (recovered)"."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
from pathlib import Path

from helpers_x11 import DEMOTRACE, recorder_status, start_recorder, wait_for

from demotrace.paths import Paths
from demotrace.recorder.control import check_run_dir
from demotrace.spool import DataKey, Spool


def _cli(env: dict[str, str], home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEMOTRACE, *args, "--home", str(home)], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_sigkilled_recorder_session_is_sealed_and_listed_as_recovered(xvfb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    xauth = tmp_path / "Xauthority"
    xauth.touch()
    env = dict(xvfb.env, COLUMNS="200", XAUTHORITY=str(xauth), DEMOTRACE_ATSPI="0")
    rec = start_recorder(env, home, "--no-indicator", enroll=True)
    try:
        sid = recorder_status(home)["session_id"]
        term = subprocess.Popen(["xterm", "-T", "crashterm", "-geometry", "60x8+40+40", "-e", "cat"], env=env)
        try:
            wid = subprocess.run(["xdotool", "search", "--onlyvisible", "--sync", "--name", "^crashterm$"], env=env,
                                 capture_output=True, text=True, timeout=15, check=True).stdout.split()[0]
            subprocess.run(["xdotool", "windowfocus", "--sync", wid], env=env, timeout=10, check=True)
            subprocess.run(["xdotool", "type", "--delay", "30", "hello"], env=env, timeout=10, check=True)
            # the 5 typed letters are 10 key events; wait until they are durable in the spool
            wait_for(lambda: recorder_status(home)["events_stored"] >= 10, 20, what="typed keys stored")
        finally:
            term.kill()
            term.wait()
    finally:
        rec.kill()  # SIGKILL: no clean shutdown, the manifest stays "not ended"
        rec.communicate(timeout=10)  # reaps it and closes its pipes
    run = Paths(home).run_dir
    assert (run / "recorder.pid").exists() and (run / "control.sock").exists()  # what kill -9 leaves

    before = _cli(env, home, "review", "list")
    row = next(line for line in before.stdout.splitlines() if sid in line)
    assert "crashed" in row and "seal" in row, before.stdout

    res = _cli(env, home, "seal")
    assert res.returncode == 0, res.stdout + res.stderr
    err = " ".join(res.stderr.split())
    assert "run/recorder.pid and run/control.sock behind (killed or crashed): removed them" in err, err
    assert f"session {sid} was not ended by its recorder" in err, err
    assert f"{sid} (crashed, recovered):" in res.stdout, res.stdout
    assert "nothing to seal" not in err
    assert not (run / "recorder.pid").exists() and not (run / "control.sock").exists()
    assert (home / "sealed" / sid / "SEALED").exists()

    after = _cli(env, home, "review", "list")
    row = next(line for line in after.stdout.splitlines() if sid in line)
    assert "crashed (recovered)" in row, after.stdout
    # the raw session still holds what was recorded: at least the 10 key events seen stored above
    paths = Paths(home)
    with Spool(paths.spool, DataKey.load_or_create(paths.key_file)).open(sid) as r:
        assert not r.manifest.ended and r.stats().events >= 10
    # sealing again finds nothing new (the recovered session has its bundle now)
    again = _cli(env, home, "seal")
    assert again.returncode == 0 and "nothing to seal" in again.stderr, again.stderr


def test_pid_file_of_foreign_process_and_dead_socket_are_stale(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    sock_path = run / "control.sock"
    # a socket file nothing listens on (its server closed without unlinking, as after kill -9)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(sock_path))
    s.listen(1)
    s.close()
    # the pid file is locked by a live process that is not a demotrace recorder (pid reused)
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600);"
            " fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'%d\\n' % os.getpid()); print('ok', flush=True);"
            " time.sleep(60)")
    other = subprocess.Popen([sys.executable, "-c", code, str(run / "recorder.pid")], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "ok"
        seen = check_run_dir(run, sock_path, clean=False)
        assert seen.pid is None and sorted(p.name for p in seen.cleaned) == ["control.sock", "recorder.pid"]
        assert (run / "recorder.pid").exists()  # clean=False only reports
        done = check_run_dir(run, sock_path)
        assert done.crashed and not done.running
        assert not (run / "recorder.pid").exists() and not sock_path.exists()
    finally:
        other.kill()
        other.communicate(timeout=10)


def test_live_lock_holder_in_this_process_is_not_stale(tmp_path: Path) -> None:
    """A recorder started in this very process (CliRunner) holds the lock with our pid: live."""
    run = tmp_path / "run"
    run.mkdir()
    fd = os.open(run / "recorder.pid", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())
        st = check_run_dir(run, run / "control.sock")
        assert st.pid == os.getpid() and st.cleaned == [] and (run / "recorder.pid").exists()
    finally:
        os.close(fd)
    # lock released (process "died"): the file left behind is stale
    st = check_run_dir(run, run / "control.sock")
    assert st.pid is None and [p.name for p in st.cleaned] == ["recorder.pid"]
