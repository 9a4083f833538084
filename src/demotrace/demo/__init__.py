"""``demotrace demo``: the main job end to end on a virtual display, as a new user meets it.

What :func:`run_demo` does, in order (each step through the same ``demotrace`` commands a
person would type, run as subprocesses with ``DEMOTRACE_HOME=<out>/home``):

1. starts its own Xvfb (``+extension RECORD``, 1280x800x24) and openbox as window manager —
   it never drives the desktop you are sitting at;
2. ``demotrace enroll --yes`` (accepts the notice for the demo user);
3. opens three real applications: the Tk editor and sign-in form shipped in
   :mod:`demotrace.demo.apps`, and xterm;
4. ``demotrace record --no-indicator``; ``demotrace task start INSTRUCTION``; drives the
   :data:`SCRIPT` with real X input through xdotool (XTEST); ``demotrace task end --status
   success``; ``demotrace stop``;
5. ``demotrace review list``; ``demotrace seal`` (redaction);
6. starts ``demotrace server`` on SQLite on 127.0.0.1 (a free port), ``demotrace admin
   enroll-code``, ``demotrace device enroll``, ``demotrace upload --keep``, ``demotrace audit
   verify``;
7. ``demotrace build``, ``demotrace export --format agentnet`` and ``--format sft-chat``,
   ``demotrace replay``;
8. prints where everything is and what was redacted, and writes ``<out>/demo-summary.json``.

The password typed into the form is :data:`PASSWORD`, a synthetic high-entropy token. X11
applications expose no field roles to the recorder (Tk has no AT-SPI tree), so a Tk password
field is not known to be secret at record time; the keystrokes are stored encrypted in the raw
spool and dropped at seal time because the field's visible "Password" label marks it secret
(privacy/field_labels.py; the secret detector's ``HIGH_ENTROPY_TOKEN`` would catch this token
too). Nothing outside the encrypted spool holds it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DemotraceError
from .display import XvfbError, start_xvfb

#: The episode's instruction (the ``task start`` marker).
INSTRUCTION = "Write a meeting note, run echo in a terminal, and sign in to the form"
#: Text typed into the editor.
NOTE_TEXT = "Ship the demo on Monday."
#: Command typed into xterm (followed by Return).
TERM_COMMAND = "echo demo-ok"
#: Name typed into the form.
FORM_NAME = "Ada Example"
#: Synthetic password typed into the form's password field (never a real credential).
PASSWORD = "Tq7mRv2KxW9pLz4NcB8hJs3Fd6Yg"

#: The scripted task as (kind, target, argument) steps, in driving order. ``click`` targets a
#: window (at a point relative to its top-left, logical pixels == physical on Xvfb),
#: ``type`` types text with xdotool, ``key`` presses one key or chord (xdotool names: ``Return``, ``ctrl+s``).
SCRIPT: tuple[tuple[str, str, Any], ...] = (
    ("click", "editor", (200, 120)),
    ("type", "editor", NOTE_TEXT),
    ("key", "editor", "ctrl+s"),
    ("click", "xterm", (200, 150)),
    ("type", "xterm", TERM_COMMAND),
    ("key", "xterm", "Return"),
    ("click", "form", "name"),
    ("type", "form", FORM_NAME),
    ("key", "form", "Tab"),
    ("type", "form", PASSWORD),
    ("click", "form", "submit"),
)


WIDTH, HEIGHT = 1280, 800


class DemoError(DemotraceError):
    """A demo step failed; the message names the step, the command and the fix."""


@dataclass
class StepLog:
    """One finished step: name, seconds taken, a short detail line."""

    name: str
    seconds: float
    detail: str = ""


@dataclass
class DemoResult:
    """Where the demo put everything (all absolute paths) and what it measured."""

    out: Path
    home: Path
    session_id: str = ""
    episode_id: str = ""
    dataset: Path | None = None
    agentnet: Path | None = None
    sft: Path | None = None
    replay: Path | None = None
    collector: Path | None = None
    collector_url: str = ""
    seal_report: str = ""
    redaction: dict[str, Any] = field(default_factory=dict)
    steps: list[StepLog] = field(default_factory=list)
    upload: str = ""
    audit: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary (paths as strings)."""
        d: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if k == "steps":
                d[k] = [{"name": s.name, "seconds": round(s.seconds, 2), "detail": s.detail} for s in v]
            else:
                d[k] = str(v) if isinstance(v, Path) else v
        return d


def _cli_exe() -> list[str]:
    exe = Path(sys.executable).parent / "demotrace"
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from demotrace.cli import main; main()"]


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise DemoError(f"{tool} not found: install the Debian package {package} "
                        "(bash scripts/bootstrap.sh installs everything the demo needs)")
    return path


#: Collector settings a caller's environment may hold; the demo's collector is its own
#: (SQLite and blobs in <out>/collector), so they are removed from the commands' environment.
_SERVER_ENV = ("DEMOTRACE_DATABASE_URL", "DEMOTRACE_SERVER_DATA", "DEMOTRACE_BLOB_URL")


def _clean_env(base: Any) -> dict[str, str]:
    env = dict(base)
    for k in _SERVER_ENV:
        env.pop(k, None)
    return env


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WaitTimeout(DemoError, TimeoutError):
    """A condition polled by :func:`wait_for` did not come true in time (the message names it)."""


def wait_for(pred: Callable[[], Any], timeout: float = 5.0, what: str = "", interval: float = 0.05) -> Any:
    """Call ``pred`` every ``interval`` seconds until it returns a truthy value; return that value.

    ``timeout`` and ``interval`` are in seconds (monotonic clock); ``pred`` is called at least
    once; exceptions raised by ``pred`` propagate. The demo's steps and the test suite
    (tests/helpers_x11.py) both poll with it.

    Raises:
        WaitTimeout: (a :class:`DemoError` and a :class:`TimeoutError`) after ``timeout``
            seconds, naming ``what`` (or ``pred`` when ``what`` is empty).
    """
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what or pred}")
        time.sleep(interval)


def _stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def virtual_display(log_dir: Path) -> Iterator[dict[str, str]]:
    """Start Xvfb (RECORD on, display number picked by Xvfb via ``-displayfd``) and openbox;
    yield the environment for X clients. Both are stopped on exit."""
    _need("Xvfb", "xvfb")
    with open(log_dir / "xvfb.log", "wb") as log:  # the child keeps its own descriptor
        try:
            proc, display = start_xvfb(WIDTH, HEIGHT, stderr=log)
        except XvfbError as exc:
            raise DemoError(f"{exc} (see {log_dir / 'xvfb.log'})") from exc
    env = dict(os.environ)
    env["DISPLAY"] = display
    env.pop("WAYLAND_DISPLAY", None)
    # The accessibility bus belongs to the whole login session, not to this display: with a
    # session bus inherited from the person's desktop, the AT-SPI source would record focus
    # reports from their real apps. The demo's Tk apps expose no accessibility tree anyway.
    env["DEMOTRACE_ATSPI"] = "0"
    # Xvfb runs without -auth (local connections only); an empty authority file keeps
    # python-xlib from failing on a missing ~/.Xauthority.
    xauth = log_dir / "Xauthority"
    xauth.touch(mode=0o600)
    env["XAUTHORITY"] = str(xauth)
    wm: subprocess.Popen[bytes] | None = None
    try:
        ob = shutil.which("openbox")
        if ob:
            with open(log_dir / "openbox.log", "wb") as log:
                wm = subprocess.Popen([ob, "--sm-disable"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=log, start_new_session=True)
            wait_for(lambda: "window id" in subprocess.run(
                ["xprop", "-root", "_NET_SUPPORTING_WM_CHECK"], env=env, capture_output=True, text=True).stdout,
                15, "the openbox window manager")
        yield env
    finally:
        if wm is not None:
            _stop(wm)
        _stop(proc)


class Demo:
    """Runs the steps of the module docstring; ``console`` is a rich Console for progress."""

    def __init__(self, out: Path, home: Path | None, console: Any) -> None:
        self.out = out.resolve()
        self.own_home = home is None
        self.home = (home or self.out / "home").resolve()
        self.logs = self.out / "logs"
        self.console = console
        self.result = DemoResult(out=self.out, home=self.home)
        self.exe = _cli_exe()
        self.env: dict[str, str] = {}
        self.windows: dict[str, int] = {}
        self.form_points: dict[str, tuple[int, int]] = {}

    # -- helpers -------------------------------------------------------------------------
    @contextmanager
    def step(self, name: str) -> Iterator[StepLog]:
        """Time one step under a spinner; print ``✓ name (seconds) detail`` (``✗`` on failure).
        The body may set ``.detail`` on the yielded :class:`StepLog`."""
        log = StepLog(name, 0.0)
        t0 = time.monotonic()
        ok = False
        try:
            with self.console.status(f"{name} …"):
                yield log
            ok = True
        finally:
            log.seconds = time.monotonic() - t0
            if ok:
                self.result.steps.append(log)
                extra = f" [dim]{log.detail}[/]" if log.detail else ""
                self.console.print(f"[green]✓[/] {name} [dim]({log.seconds:.1f} s)[/]{extra}", highlight=False)
            else:
                self.console.print(f"[red]✗[/] {name} [dim]({log.seconds:.1f} s)[/]", highlight=False)

    def cli(self, *args: str, timeout: float = 180) -> str:
        """Run ``demotrace ARGS`` with the demo's home and display; return stdout; raise
        :class:`DemoError` with the command and its stderr on failure."""
        env = _clean_env(self.env or os.environ)
        env.update(DEMOTRACE_HOME=str(self.home), COLUMNS="200", HF_DATASETS_OFFLINE="1",
                   HF_HUB_OFFLINE="1", NO_COLOR="1")
        proc = subprocess.run([*self.exe, *args], env=env, capture_output=True, text=True, timeout=timeout)
        with open(self.logs / "commands.log", "a", encoding="utf-8") as log:
            log.write(f"$ demotrace {' '.join(args)}\n{proc.stdout}{proc.stderr}\n")
        if proc.returncode != 0:
            raise DemoError(f"`demotrace {' '.join(args)}` failed ({proc.returncode}):\n"
                            f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def xdo(self, *args: str) -> str:
        """Run xdotool on the demo display."""
        proc = subprocess.run(["xdotool", *args], env=self.env, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise DemoError(f"xdotool {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def find_window(self, title_re: str, timeout: float = 20) -> int:
        def find() -> int | None:
            out = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", title_re], env=self.env,
                                 capture_output=True, text=True).stdout.split()
            return int(out[0]) if out else None
        return int(wait_for(find, timeout, f"a window titled /{title_re}/"))

    def recorder_status(self) -> dict[str, Any]:
        from ..paths import Paths
        from ..recorder.control import call

        try:
            return dict(call(Paths.from_env(str(self.home)).control_socket, "status", timeout=5))
        except Exception:  # noqa: BLE001 - not up yet
            return {}

    # -- steps ---------------------------------------------------------------------------
    def run(self) -> DemoResult:
        """Run every step; return the result (also written to ``<out>/demo-summary.json``)."""
        _need("xdotool", "xdotool")
        _need("xterm", "xterm")
        _need("xprop", "x11-utils")
        try:
            import tkinter  # noqa: F401
        except ImportError as exc:
            raise DemoError("Python has no tkinter: install the Debian package python3-tk "
                            "(bash scripts/bootstrap.sh does)") from exc
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        if not self.own_home and (self.home / "collector.json").exists():
            raise DemoError(f"{self.home} is enrolled with a collector; the demo would replace that "
                            "enrollment with its own: leave out --home (the demo uses <out>/home) or give a fresh folder")
        if self.own_home and self.home.exists():
            shutil.rmtree(self.home)  # the demo's own home from an earlier run: start fresh
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in ("dataset", "export", "replay.html", "collector", "app-files", "demo-summary.json"):
            p = self.out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        (self.out / "app-files").mkdir()
        with ExitStack() as stack:
            with self.step("virtual display (Xvfb + openbox)") as st:
                self.env = stack.enter_context(virtual_display(self.logs))
                st.detail = f"DISPLAY={self.env['DISPLAY']}"
            with self.step("enroll (accept the notice for the demo user)") as st:
                self.cli("enroll", "--yes")
                st.detail = str(self.home)
            with self.step("open the editor, xterm and the sign-in form"):
                self._start_apps(stack)
            with self.step("record the scripted task") as st:
                self._record(stack)
                st.detail = f"session {self.result.session_id}"
        with self.step("review list") as st:
            listing = self.cli("review", "list")
            (self.logs / "review.txt").write_text(listing)
            if self.result.session_id not in listing:
                raise DemoError(f"`demotrace review list` does not show session {self.result.session_id}")
            st.detail = "the session is listed, not sealed yet"
        with self.step("seal (redact into a bundle)") as st:
            self.result.seal_report = self.cli("seal", self.result.session_id).strip()
            self.result.redaction = self._report()
            st.detail = self.result.seal_report.splitlines()[-1][:150] if self.result.seal_report else ""
        with ExitStack() as stack:
            with self.step("collector on SQLite + device enrollment") as st:
                self._collector(stack)
                st.detail = self.result.collector_url
            with self.step("upload the sealed bundle") as st:
                self.result.upload = self.cli("upload", "--keep", str(self.home / "sealed" / self.result.session_id)).strip()
                st.detail = self.result.upload.splitlines()[-1][:150] if self.result.upload else ""
            with self.step("verify the collector's audit log") as st:
                self.result.audit = self.cli("audit", "verify", "--data-dir", str(self.result.collector)).strip()
                st.detail = self.result.audit[:150]
        with self.step("build the dataset (from the sealed bundle)") as st:
            ds = self.out / "dataset"
            self.cli("build", self.result.session_id, "--out", str(ds))
            self.result.dataset = ds
            eps = [json.loads(ln) for ln in (ds / "episodes.jsonl").read_text().splitlines() if ln.strip()]
            if not eps:
                raise DemoError(f"the dataset in {ds} has no episode (see {self.logs / 'commands.log'})")
            self.result.episode_id = str(eps[0]["episode_id"])
            st.detail = f"{len(eps)} episode(s)"
        with self.step("export AgentNet and SFT chat"):
            self.result.agentnet = self.out / "export" / "agentnet"
            self.result.sft = self.out / "export" / "sft-chat"
            self.cli("export", "--format", "agentnet", "--dataset", str(ds), "--out", str(self.result.agentnet))
            self.cli("export", "--format", "sft-chat", "--dataset", str(ds), "--out", str(self.result.sft))
        with self.step("replay page"):
            self.result.replay = self.out / "replay.html"
            self.cli("replay", self.result.episode_id, "--dataset", str(ds), "--out", str(self.result.replay))
        (self.out / "demo-summary.json").write_text(json.dumps(self.result.to_json(), indent=2))
        return self.result

    def _app(self, stack: ExitStack, argv: list[str], title_re: str, name: str) -> None:
        log = open(self.logs / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        stack.callback(_stop, proc)
        stack.callback(log.close)
        try:
            self.windows[name] = self.find_window(title_re)
        except DemoError as exc:
            raise DemoError(f"{exc}; {name} did not open (see {self.logs / f'{name}.log'})") from exc

    def _start_apps(self, stack: ExitStack) -> None:
        work = self.out / "app-files"
        py = sys.executable
        self._app(stack, [py, "-m", "demotrace.demo.apps.editor", str(work / "notes.txt")], "^Notes - demotrace demo", "editor")
        self._app(stack, ["xterm", "-T", "Terminal - demotrace demo", "-geometry", "70x18+20+420",
                          "-fa", "DejaVu Sans Mono", "-fs", "12", "-e", "bash", "--norc", "--noprofile"],
                  "^Terminal - demotrace demo$", "xterm")
        self._app(stack, [py, "-m", "demotrace.demo.apps.form", str(work / "form.json")], "^Sign in - demotrace demo", "form")
        line = wait_for(lambda: next((ln for ln in (self.logs / "form.log").read_text().splitlines()
                                      if ln.startswith("READY {")), None), 10, "the form's widget layout")
        self.form_points = {k: (int(v[0]), int(v[1])) for k, v in json.loads(line[6:]).items()}

    def _record(self, stack: ExitStack) -> None:
        log = open(self.logs / "recorder.log", "wb")
        stack.callback(log.close)
        env = dict(_clean_env(self.env), DEMOTRACE_HOME=str(self.home), COLUMNS="200")
        rec = subprocess.Popen([*self.exe, "record", "--no-indicator"], env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
        stack.callback(_stop, rec, signal.SIGINT, 30)

        def recording() -> bool:
            if rec.poll() is not None:
                raise DemoError(f"the recorder exited ({rec.returncode}): "
                                f"{(self.logs / 'recorder.log').read_text()[-2000:]}")
            return self.recorder_status().get("state") == "recording"

        wait_for(recording, 30, "the recorder to start")
        self.result.session_id = str(self.recorder_status().get("session_id", ""))
        self.cli("task", "start", INSTRUCTION)
        self.drive()
        self.cli("task", "end", "--status", "success")
        self.cli("stop")
        try:
            rec.wait(60)
        except subprocess.TimeoutExpired as exc:
            raise DemoError("the recorder did not stop within 60 s after `demotrace stop`") from exc
        if rec.returncode != 0:
            raise DemoError(f"the recorder exited with {rec.returncode}: {(self.logs / 'recorder.log').read_text()[-2000:]}")
        if not self.result.session_id:
            m = re.findall(r"\d{8}T\d{6}Z-[0-9a-f]+", (self.logs / "recorder.log").read_text())
            self.result.session_id = m[-1] if m else ""

    def drive(self) -> None:
        """Drive :data:`SCRIPT` with xdotool: raise the target window, then click / type / key.
        Waits for visible effects where the apps show them (form saved, terminal output)."""
        for kind, target, arg in SCRIPT:
            wid = self.windows[target]
            self.xdo("windowactivate", "--sync", str(wid))
            if kind == "click":
                dx, dy = self.form_points[arg] if isinstance(arg, str) else arg
                # relative to the window (xdotool translates through the WM frame itself)
                self.xdo("mousemove", "--window", str(wid), "--sync", str(dx), str(dy))
                time.sleep(0.3)  # a still pointer before the press: the recorder grabs a frame
                self.xdo("click", "1")
            elif kind == "type":
                self.xdo("type", "--delay", "40", arg)
            elif kind == "key":
                self.xdo("key", arg)
            time.sleep(0.4)  # let the app repaint before the next action (observation of it)
        wait_for(lambda: (self.out / "app-files" / "form.json").exists(), 10, "the form to be submitted")
        wait_for(lambda: (self.out / "app-files" / "notes.txt").exists(), 10, "the editor to save the note")

    def _report(self) -> dict[str, Any]:
        from ..paths import Paths
        from ..privacy.bundle import open_bundle

        with open_bundle(Paths.from_env(str(self.home)), self.result.session_id) as b:
            return dict(b.report)

    def _collector(self, stack: ExitStack) -> None:
        data = self.out / "collector"
        data.mkdir()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(self.logs / "collector.log", "wb")
        stack.callback(log.close)
        env = _clean_env(os.environ)
        srv = subprocess.Popen([*self.exe, "server", "--data-dir", str(data), "--port", str(port)],
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        stack.callback(_stop, srv)

        def healthy() -> bool:
            import httpx

            if srv.poll() is not None:
                raise DemoError(f"the collector exited: {(self.logs / 'collector.log').read_text()[-2000:]}")
            try:
                return httpx.get(url + "/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, 60, f"the collector at {url}")
        code = self.cli("admin", "enroll-code", "--data-dir", str(data), "--person", "demo.user@example.org").strip()
        self.cli("device", "enroll", "--server", url, "--code", code.split()[-1], "--label", "demo-device")
        self.result.collector, self.result.collector_url = data, url


def print_summary(console: Any, res: DemoResult, seconds: float) -> None:
    """Rich summary: where everything is, what was redacted, what to run next."""
    from rich.table import Table

    t = Table(title=f"demotrace demo — done in {seconds:.0f} s", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    rows = [
        ("output folder", res.out),
        ("demotrace home", f"{res.home}  (encrypted spool, sealed bundle, keys)"),
        ("session", res.session_id),
        ("episode", res.episode_id),
        ("dataset (Parquet)", res.dataset),
        ("AgentNet export", res.agentnet),
        ("SFT chat export", res.sft),
        ("replay page", res.replay),
        ("collector (SQLite)", f"{res.collector}  (was {res.collector_url})"),
        ("what the apps saved", res.out / "app-files"),
        ("logs", f"{res.out / 'logs'}  (commands.log: every demotrace command and its output)"),
    ]
    for k, v in rows:
        t.add_row(k, str(v))
    console.print(t)
    counts = res.redaction.get("counts", {}) if isinstance(res.redaction, dict) else {}
    console.print("[bold]Redacted at seal time:[/]", highlight=False)
    console.print(res.seal_report or "(no report)", highlight=False, markup=False)
    if counts:
        console.print(f"[dim]report counts: {json.dumps(counts)}[/]", highlight=False)
    console.print(
        f"The password typed into the form ({len(PASSWORD)} characters) is in none of these files. "
        f"Open the replay page in a browser: [bold]{res.replay}[/]", highlight=False)
