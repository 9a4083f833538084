"""Focused-element sources (AT-SPI on Linux) and the recorder's focus-ordering gate.

Why: keystrokes into password / one-time-code fields must never be stored (DESIGN.md §8.4,
issue 4 item 3). :class:`~demotrace.privacy.secrets.SecretKeyFilter` drops them when an
``Element`` event says the focused field is secret; for native desktop apps that event comes
from the accessibility tree, i.e. AT-SPI 2 on Linux (GTK, Qt, LibreOffice, Chromium/Firefox with
accessibility on). Role ``"password text"`` (``ATSPI_ROLE_PASSWORD_TEXT``) marks a password
entry; GTK also exposes PIN / one-time-code entries without visible text with that role.

Two parts:

- :class:`FocusedElementSource` — the platform-neutral interface (``start(sink)`` →
  ``check_health()``* → ``stop()``, like :class:`~demotrace.capture._base.CaptureBackend`);
  :class:`AtspiSource` implements it with a child process, ``_atspi_watcher.py``, run by the
  SYSTEM interpreter ``/usr/bin/python3`` (Debian's ``python3-pyatspi`` / ``python3-gi`` live
  there; the project venv cannot import ``gi``). The watcher writes one JSON line per focused
  accessible; a reader thread here turns each into an ``Element(source="atspi", ...)`` and
  hands it to the recorder's sink like any hook event. :func:`get_element_source` picks the
  source for this platform (``$DEMOTRACE_ATSPI=0`` turns it off).
- :class:`FocusOrderGate` — the recorder's writer thread holds every queued event for
  ``hold_ns`` before judging it, so a keystroke is judged with every AT-SPI report that
  arrived up to ``hold_ns`` after it. This closes the ordering race between the X input hook
  (which sees a key at once) and the accessibility bus (which reports the focus move a few ms
  later, after the app processed it): a key typed 5 ms after focus moved into a password field
  is dropped although its ``Element`` reaches the recorder after it.

Judging rule (fail closed), for a key / text event stamped ``t``:
  drop it (reason ``"secret_field"``) if the focused field, in queue order, is secret at the
  key, OR an AT-SPI element that is secret arrived after the key and is stamped at most
  ``t + hold_ns``; otherwise :class:`SecretKeyFilter` decides as usual (``unknown`` field +
  strict policy → printable keys dropped). Cost: up to ``hold_ns`` of keystrokes typed just
  before focus enters a secret field are dropped too; keystrokes typed just after focus leaves
  one are dropped until its ``Element`` arrives.

  An X ``FocusChange`` resets the field to unknown, but the X backend notices focus moves up to
  its poll interval late (0.15 s without an EWMH window manager), so the last AT-SPI element is
  re-applied after a ``FocusChange`` when it belongs to the same process (AT-SPI pid =
  ``_NET_WM_PID``), or, when either pid is unknown, when it arrived after the previous
  ``FocusChange`` and at most ``focus_race_ns`` before this one. An AT-SPI element of another
  process than the focused X window's is not applied when it arrives if it is plain (its
  window's ``FocusChange`` re-applies it): the accessibility bus is per login session, not per
  display, so a recorder on a second display (the demo's Xvfb) also hears the desktop's apps,
  and a plain field there must not make an unknown field here "plain". A secret one is applied
  at once (fail closed: over-dropping, never a leak).

Latency: AT-SPI focus reports arrive a few ms after the key that moved focus on an idle machine
(measured by ``tests/test_atspi.py`` / ``bench/atspi_latency.py``; see docs/benchmarks.md). The
default hold, :data:`HOLD_NS` = 0.25 s, leaves a margin for a busy app; a report later than that
can let the keys typed in between be stored (documented in docs/privacy.md).
"""

from __future__ import annotations

import abc
import collections
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..schema.events import Element, FocusChange, KeyEvent, Rect, TextInput
from ._base import EventSink

log = logging.getLogger("demotrace.atspi")

#: How long (ns) the recorder holds events before judging keystrokes: AT-SPI focus reports
#: arriving this long after a key still apply to it. 0.25 s: the measured report latency
#: (single-digit ms idle, docs/benchmarks.md) with a margin for an app busy for a frame or ten.
HOLD_NS = 250_000_000
#: An AT-SPI element that arrived this long (ns) before an X ``FocusChange`` may belong to the
#: newly focused window (the X backend polls focus every 0.15 s without an EWMH WM).
FOCUS_RACE_NS = 500_000_000
#: How long (s) :meth:`AtspiSource.start` waits for the watcher's first line.
START_TIMEOUT_S = 10.0
#: The interpreter that has Debian's python3-pyatspi.
SYSTEM_PYTHON = "/usr/bin/python3"
WATCHER = Path(__file__).with_name("_atspi_watcher.py")


class FocusedElementSource(abc.ABC):
    """Reports the UI element with keyboard focus as ``Element`` events (one per focus move).

    Lifecycle: :meth:`start` → (:meth:`check_health`, :meth:`status`)* → :meth:`stop`.
    ``live`` is true while reports can arrive (the recorder holds events only then).
    """

    name: str = "abstract"

    @property
    @abc.abstractmethod
    def live(self) -> bool:
        """True while the source is running and can report focus moves."""

    @abc.abstractmethod
    def start(self, sink: EventSink) -> None:
        """Start reporting into ``sink`` (``sink(Element, t_ns_abs, fields)``). Never raises for
        an unavailable platform service: it sets ``live`` false and says why in :meth:`status`."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop reporting; idempotent."""

    @abc.abstractmethod
    def check_health(self) -> list[str]:
        """Problems now (empty = healthy), e.g. the watcher died."""

    @abc.abstractmethod
    def status(self) -> dict[str, Any]:
        """JSON-able counters: ``available``, ``reason`` (why not), ``elements`` reported, …"""


class AtspiSource(FocusedElementSource):
    """AT-SPI 2 focus reports through the ``_atspi_watcher.py`` child process (module doc).

    ``is_secret``: ``fields -> bool`` deciding ``Element.secret`` (the recorder passes the
    policy's :func:`~demotrace.privacy.secrets.element_is_secret`); ``python``: the interpreter
    with ``pyatspi`` (default ``/usr/bin/python3``); ``env``: the watcher's environment (default
    ``os.environ``: it needs ``$DBUS_SESSION_BUS_ADDRESS`` or ``$AT_SPI_BUS_ADDRESS``, and
    ``$DISPLAY``).

    When AT-SPI is unavailable (no session bus, no accessibility bus, pyatspi missing) it logs
    one warning on ``demotrace.atspi``, sets ``status()["available"]`` false with the reason and
    counts it in ``status()["unavailable"]``; the recorder keeps recording.
    """

    name = "atspi"

    def __init__(self, is_secret: Callable[[dict[str, Any]], bool] | None = None, python: str = SYSTEM_PYTHON,
                 env: dict[str, str] | None = None, start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.is_secret = is_secret or (lambda f: f.get("role") == "password text")
        self.python = python
        self.env = env
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._sink: EventSink | None = None
        self._ready = threading.Event()
        self._stopping = False
        self._live = False
        self.available = False
        self.reason: str | None = None
        self.unavailable = 0
        self.elements = 0
        self.secret_elements = 0
        self.unreadable = 0
        self.bad_lines = 0
        self.first_report_ns: int | None = None
        self._exit: str | None = None

    @property
    def live(self) -> bool:
        return self._live

    def _unavailable(self, reason: str) -> None:
        self.available = False
        self._live = False
        if self.unavailable:  # said once per recording
            return
        self.reason = reason
        self.unavailable += 1
        log.warning("AT-SPI unavailable, secret native fields are not identified (%s); recording goes on", reason)

    def start(self, sink: EventSink) -> None:
        """Spawn the watcher and wait (up to ``start_timeout_s``) until it listens, so that
        every focus move after this returns is reported. See the class doc for unavailability."""
        self._sink = sink
        env = dict(os.environ if self.env is None else self.env)
        if not (env.get("DBUS_SESSION_BUS_ADDRESS") or env.get("AT_SPI_BUS_ADDRESS")):
            # checked here too: no child process when there is certainly no bus
            self._unavailable("no D-Bus session bus ($DBUS_SESSION_BUS_ADDRESS is not set)")
            return
        if not (os.path.isfile(self.python) or shutil.which(self.python)):
            self._unavailable(f"{self.python} not found (apt-get install python3-pyatspi at-spi2-core)")
            return
        try:
            self._proc = subprocess.Popen([self.python, "-I", str(WATCHER)], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                          start_new_session=True)
        except OSError as exc:
            self._unavailable(f"cannot start the AT-SPI watcher: {exc}")
            return
        self._thread = threading.Thread(target=self._read, name="demotrace-atspi", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.start_timeout_s):
            self._unavailable(f"the AT-SPI watcher did not answer within {self.start_timeout_s} s")
            self._kill()

    def _read(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for raw in proc.stdout:
            try:
                msg = json.loads(raw)
                typ = msg["type"]
            except (ValueError, KeyError, TypeError):
                self.bad_lines += 1
                continue
            if typ == "focus":
                self._on_focus(msg)
            elif typ == "ready":
                self.available = True
                self._live = True
                self._ready.set()
            elif typ == "unavailable":
                self._unavailable(str(msg.get("reason")))
                self._ready.set()
        # end of output: the watcher exited
        self._live = False
        rc = proc.wait()
        if not self._ready.is_set():
            err = (proc.stderr.read() if proc.stderr else b"").decode("utf-8", "replace").strip()
            last = err.splitlines()[-1] if err else ""
            self._unavailable(f"the AT-SPI watcher exited with status {rc} before listening ({last[:200]})")
            self._ready.set()
        elif self.available and not self._stopping:
            self._exit = f"the AT-SPI watcher exited with status {rc}: native secret fields are no longer identified"
            log.warning("%s", self._exit)

    def _on_focus(self, msg: dict[str, Any]) -> None:
        now = time.monotonic_ns()
        t = msg.get("t_ns")
        # the watcher's own stamp (same CLOCK_MONOTONIC); never in the future
        t_ns = t if isinstance(t, int) and not isinstance(t, bool) and t <= now else now
        fields = element_fields(msg)
        fields["secret"] = bool(msg.get("error")) or bool(self.is_secret(fields))
        self.elements += 1
        self.secret_elements += fields["secret"]
        self.unreadable += bool(msg.get("error"))
        if self.first_report_ns is None:
            self.first_report_ns = t_ns
        if self._sink is not None:
            self._sink(Element, t_ns, fields)

    def _kill(self) -> None:
        p = self._proc
        if p is None:
            return
        if p.stdin is not None:
            try:
                p.stdin.close()
            except OSError:
                pass
        try:
            p.wait(2)
        except subprocess.TimeoutExpired:
            p.terminate()
            try:
                p.wait(2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop(self) -> None:
        """Close the watcher's stdin (it exits), wait for it and the reader; idempotent."""
        self._stopping = True
        self._live = False
        self._kill()
        if self._thread is not None:
            self._thread.join(5)
        for f in (self._proc.stdout, self._proc.stderr) if self._proc is not None else ():
            if f is not None:
                f.close()

    def check_health(self) -> list[str]:
        return [self._exit] if self._exit else []

    def status(self) -> dict[str, Any]:
        return {"source": self.name, "available": self.available, "live": self._live, "reason": self.reason,
                "unavailable": self.unavailable, "elements": self.elements, "secret_elements": self.secret_elements,
                "unreadable": self.unreadable, "bad_lines": self.bad_lines}


def element_fields(msg: dict[str, Any]) -> dict[str, Any]:
    """``Element`` fields (without ``seq``/``t_ns``) for one watcher ``focus`` line.

    ``bounds`` become a :class:`Rect` (screen pixels as the toolkit reports them); ``states``,
    ``app`` (AT-SPI application name), ``pid`` and ``error`` go into ``attributes`` as strings
    (``states`` space-separated AT-SPI state names, e.g. ``"editable focused single line"``).
    """
    b = msg.get("bounds")
    bounds = None
    if isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b):
        bounds = Rect(float(b[0]), float(b[1]), float(b[2]), float(b[3]))
    attrs: dict[str, str] = {}
    states = msg.get("states")
    if isinstance(states, list):
        attrs["states"] = " ".join(str(s) for s in states)
    for k in ("app", "pid", "error", "event"):
        if msg.get(k) is not None:
            attrs[k] = str(msg[k])
    role, name = msg.get("role"), msg.get("name")
    return {"role": role if isinstance(role, str) else None, "name": name if isinstance(name, str) else None,
            "bounds": bounds, "source": "atspi", "attributes": attrs}


def get_element_source(is_secret: Callable[[dict[str, Any]], bool] | None = None) -> FocusedElementSource | None:
    """The focused-element source for this platform: :class:`AtspiSource` on Linux, ``None``
    elsewhere or when ``$DEMOTRACE_ATSPI`` is ``0`` / ``off`` / ``false``."""
    if os.environ.get("DEMOTRACE_ATSPI", "").strip().lower() in ("0", "off", "false", "no"):
        return None
    if sys.platform.startswith("linux"):
        return AtspiSource(is_secret=is_secret)
    return None


# -- the writer thread's gate ---------------------------------------------------------------------
_KEY_KINDS = frozenset({"key_down", "key_up", "text_input"})


def _tag(cls: Any) -> str | None:
    cfg = getattr(cls, "__struct_config__", None)
    return None if cfg is None else str(cfg.tag)


class FocusOrderGate:
    """Holds the recorder's queued items ``hold_ns`` and judges key / text events with AT-SPI
    reports that arrived after them (module doc). Writer thread only.

    Items are the recorder's queue tuples ``(cls_or_command, t_ns_abs, fields)``; anything that
    is not a schema event class (control commands) is held and released in order like the rest.
    ``filt``: the session's :class:`~demotrace.privacy.secrets.SecretKeyFilter` (its ``counts``
    are the drop counters); ``hold_ns``: set to 0 when no source is live (then nothing waits).
    """

    def __init__(self, filt: Any, hold_ns: int = 0, focus_race_ns: int = FOCUS_RACE_NS) -> None:
        self.filt = filt
        self.hold_ns = hold_ns
        self.focus_race_ns = focus_race_ns
        self._hold: collections.deque[tuple[Any, int, Any]] = collections.deque()
        self._atspi_held = 0
        self._last_el: tuple[int, Element] | None = None
        self._last_fc_ns: int | None = None
        self._fc_pid: int | None = None
        #: AT-SPI elements not applied because their pid is not the focused X window's
        self.deferred = 0
        #: keys dropped only because of an AT-SPI report that arrived after them (lookahead)
        self.dropped_by_lookahead = 0
        #: AT-SPI elements re-applied after an X focus change
        self.reapplied = 0

    @staticmethod
    def _is_atspi(item: tuple[Any, int, Any]) -> bool:
        return item[0] is Element and isinstance(item[2], dict) and item[2].get("source") == "atspi"

    def push(self, item: tuple[Any, int, Any]) -> None:
        """Append one queued item."""
        self._hold.append(item)
        if self._is_atspi(item):
            self._atspi_held += 1

    def __len__(self) -> int:
        return len(self._hold)

    def next_due_ns(self) -> int | None:
        """Absolute monotonic ns at which the oldest held item is due, or ``None`` if empty."""
        return self._hold[0][1] + self.hold_ns if self._hold else None

    def pop_due(self, now_ns: int, everything: bool = False) -> tuple[Any, int, Any] | None:
        """The oldest held item if it has waited ``hold_ns`` (or ``everything``), else ``None``.
        Items leave strictly in arrival order."""
        if not self._hold:
            return None
        item = self._hold[0]
        if not everything and self.hold_ns and item[1] + self.hold_ns > now_ns:
            return None
        self._hold.popleft()
        if self._is_atspi(item):
            self._atspi_held -= 1
        return item

    def observe(self, cls: Any, t_ns: int, fields: dict[str, Any]) -> None:
        """Follow focus / element events (also while paused): updates the filter's state."""
        self.should_drop(cls, t_ns, fields)

    def _secret_ahead(self, t_ns: int) -> bool:
        if not self._atspi_held:
            return False
        from ..privacy.secrets import element_is_secret

        limit = t_ns + self.hold_ns
        for it in self._hold:
            if self._is_atspi(it) and it[1] <= limit:
                ev = Element(seq=0, t_ns=0, **it[2])
                if element_is_secret(self.filt.policy, ev):
                    return True
        return False

    def should_drop(self, cls: Any, t_ns: int, fields: dict[str, Any]) -> bool:
        """True if this key / text event must not be stored (counted in ``filt.counts``).
        Focus changes and elements update the state and return False; other kinds False."""
        from ..privacy.secrets import element_is_secret

        kind = _tag(cls)
        f = self.filt
        if kind == "element":
            ev = Element(seq=0, t_ns=0, **fields)
            if ev.source == "atspi":
                self._last_el = (t_ns, ev)
                pid = ev.attributes.get("pid")
                if (self._fc_pid is not None and pid is not None and pid != str(self._fc_pid)
                        and not element_is_secret(f.policy, ev)):
                    # a plain field of another process than the focused X window's: a window
                    # switch whose FocusChange is still to come (re-applied then), or an app on
                    # another display sharing the accessibility bus; not applied now. (A secret
                    # one is applied at once: fail closed.)
                    self.deferred += 1
                    return False
            f.observe(ev)
            return False
        if kind == "focus_change":
            fc = FocusChange(seq=0, t_ns=0, **fields)
            f.observe(fc)
            prev_fc, self._last_fc_ns = self._last_fc_ns, t_ns
            self._fc_pid = fc.pid
            if self._last_el is not None:
                t_el, el = self._last_el
                pid = el.attributes.get("pid")
                both = fc.pid is not None and pid is not None
                raced = (prev_fc is None or t_el >= prev_fc) and 0 <= t_ns - t_el <= self.focus_race_ns
                if (both and pid == str(fc.pid)) or (not both and raced):
                    f.observe(el)
                    self.reapplied += 1
            return False
        if kind not in _KEY_KINDS:
            return False
        ev2: KeyEvent | TextInput = cls(seq=0, t_ns=0, **fields)
        if f.state != "secret" and self._secret_ahead(t_ns):
            saved = f.state
            f.state = "secret"
            try:
                reason = f.drop_reason(ev2)
            finally:
                f.state = saved
            if reason is not None:
                f.counts[reason] += 1
                self.dropped_by_lookahead += 1
                return True
            return False
        reason = f.drop_reason(ev2)
        if reason is not None:
            f.counts[reason] += 1
            return True
        return False
