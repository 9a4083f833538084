"""The :class:`Recorder`: capture backend → queue → writer thread → encrypted spool.

Threads (none of them is an input hook's thread)::

    backend hooks ──sink──► SimpleQueue ──► writer thread ──► BatchWriter ──► SessionWriter
                              ▲   │            │ (seq, t_ns, pause, hotkey,
                              │   │            │  action detection)
                  Frame events│   │            └─► FramePipeline.request
                              │   ▼
                       encoder thread ◄── frame thread (grabs into the ring)

- Hooks only enqueue ``(event_cls, t_ns_abs, fields)`` (the :data:`~demotrace.capture.EventSink`
  contract). The queue is unbounded up to ``settings.queue_limit``; beyond it events are
  dropped **and counted** — ``check_health`` and ``status`` report it loudly.
- The writer thread assigns ``seq`` in arrival order, converts ``t_ns`` to ns since the
  session start, applies pause (while paused only markers are stored), detects the pause
  hotkey, asks the frame pipeline for pre-action / settle frames, and flushes a batch at least
  every ``flush_interval_s`` and on stop.
- Control commands (pause, resume, task markers) travel through the same queue, so their
  markers get ``seq`` in order with the input around them.
- Final screens: ``task_end`` stores a frame (reason ``"task_end"``) and :meth:`Recorder.stop`
  one (reason ``"session_stop"``): the newest ring frame captured before the marker / the stop
  call (DESIGN.md §5 rule), so an episode's terminal done / fail step has the final screen as
  its observation. Not while paused (nothing seen while paused is kept).
- Pause: nothing but markers is stored while paused (the frame thread stops grabbing and
  empties its ring). The last ``focus_change`` / ``screen_config`` seen while paused is stored
  at ``resume`` (stamped with the resume time) so the stream knows the state it resumes in.
- Pause hotkey (``settings.pause_hotkey``, default Ctrl+Alt+Shift+P) is recognised here, from
  the key events, never in the hook: the hotkey's own key press and release are not stored;
  the modifier presses before it are (they happened while recording).
"""

from __future__ import annotations

import datetime as _dt
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from ..capture._base import CaptureBackend
from ..errors import ControlError, SpoolError
from ..schema.events import EVENT_TYPES, MODIFIER_KEYS, Event, Marker
from ..schema.manifest import SessionManifest
from ..spool.store import SessionWriter
from .frames import ActionDetector, FramePipeline, FrameRequest
from .settings import RecorderSettings, parse_hotkey
from .writer import BatchWriter

#: Event kinds stored only while recording (not paused).
_INPUT_KINDS = frozenset(
    {"pointer_move", "pointer_down", "pointer_up", "wheel", "key_down", "key_up", "text_input",
     "focus_change", "screen_config", "element"}
)
_TASK_STATUSES = ("success", "failure", "abandoned")
#: Kinds the secret-field filter (privacy/secrets.py) sees: focus and element updates set its
#: state, key / text events into a secret field are not stored (DESIGN.md §8.4).
_SECRET_KINDS = frozenset({"key_down", "key_up", "text_input", "focus_change", "element"})
#: Kinds the browser extension's native host may send with ``browser_event``.
_BROWSER_KINDS = ("element", "focus_change")
#: Oldest accepted browser event time, ns before now (older ones are stamped "now").
_BROWSER_MAX_AGE_NS = 10_000_000_000


class _Fields:
    """Attribute view of an event-fields dict (for privacy.secrets.element_is_secret)."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.__dict__.update(fields)


class _Ctrl:
    """A control command travelling through the queue; the writer thread fills ``result``."""

    def __init__(self, cmd: str, args: dict[str, Any]) -> None:
        self.cmd = cmd
        self.args = args
        self.done = threading.Event()
        self.result: dict[str, Any] = {}


_STOP = object()


def _threads_cpu() -> dict[str, float]:
    """CPU seconds used so far by each live Python thread of this process (by thread name)."""
    out: dict[str, float] = {}
    for th in threading.enumerate():
        if th.ident is None:
            continue
        try:
            cpu = time.clock_gettime(time.pthread_getcpuclockid(th.ident))
        except (OSError, ValueError):
            continue
        out[th.name] = round(out.get(th.name, 0.0) + cpu, 3)
    return out


def new_manifest(session_id: str, backend: CaptureBackend) -> SessionManifest:
    """A manifest for a session starting now: UTC start, local timezone, CLOCK_MONOTONIC."""
    now = _dt.datetime.now(_dt.timezone.utc)
    local = now.astimezone()
    tz = local.tzname() or "UTC"
    offset = local.strftime("%z")
    return SessionManifest(
        session_id=session_id,
        started_utc=now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        timezone=f"{tz} ({offset[:3]}:{offset[3:]})" if offset else tz,
        clock_source="CLOCK_MONOTONIC",
        platform=backend.platform,
        backend=backend.name,
        recorder_version=__version__,
    )


@dataclass
class RecorderSummary:
    """What a finished recording stored: ``events`` (all kinds), ``by_kind``, ``frames``
    (Frame events), ``blobs_written`` (new encoded images), ``dropped`` (input events lost
    because the queue limit was hit — 0 unless reported loudly), ``duration_ns``."""

    session_id: str
    events: int
    by_kind: dict[str, int]
    frames: int
    blobs_written: int
    dropped: int
    duration_ns: int
    problems: list[str] = field(default_factory=list)


class Recorder:
    """Records one session from ``backend`` into ``spool`` (a fresh :class:`SessionWriter`).

    Lifecycle: :meth:`start` → (:meth:`check_health`, :meth:`status`, :meth:`pause`,
    :meth:`resume`, :meth:`task_start`, :meth:`task_end`)* → :meth:`stop` (flushes, writes
    ``session_stop``, closes the session). Thread-safe for the control methods.
    """

    def __init__(self, backend: CaptureBackend, spool: SessionWriter, settings: RecorderSettings | None = None,
                 policy: Any = None, guard: Any = None, elements: Any = "auto") -> None:
        self.backend = backend
        self.spool = spool
        self.settings = settings or RecorderSettings()
        self.session_id = spool.session_id
        self._q: queue.SimpleQueue[tuple[Any, int, Any]] = queue.SimpleQueue()
        self._dropped = 0
        self._drop_lock = threading.Lock()
        self._paused = False
        self._task: str | None = None
        self._started = False
        self._stopped = False
        self._writer_error: str | None = None
        self._suppressed = 0
        self._writer_cpu_ns = 0
        self._malformed = 0
        from ..privacy.secrets import SecretKeyFilter
        from .guard import CaptureGuard, home_of

        #: capture-time scope guard (recorder/guard.py): consent, excluded contexts, frame masks;
        #: ``policy`` default: ``<home>/policy.toml`` or the built-in policy
        self.guard = guard if guard is not None else CaptureGuard(home_of(spool), policy=policy)
        policy = self.guard.policy

        #: secret-field filter (DESIGN.md §8.4): ``policy`` (default: the built-in policy)
        self.secrets = SecretKeyFilter(policy)
        from ..capture.atspi import FocusOrderGate, get_element_source
        from ..privacy.secrets import element_is_secret

        #: focused-element source (capture/atspi.py: AT-SPI on Linux); ``elements``: "auto" (the
        #: platform's, unless $DEMOTRACE_ATSPI=0), None (none) or a FocusedElementSource
        self.elements = (get_element_source(lambda f: element_is_secret(policy, _Fields(f)))
                         if elements == "auto" else elements)
        #: holds queued items while the element source is live so that keys are judged with the
        #: focus reports that arrive just after them (capture/atspi.py FocusOrderGate)
        self._gate = FocusOrderGate(self.secrets)
        self._urgent = threading.Event()
        self._held_mods: set[str] = set()
        self._swallow_key_up: str | None = None
        self._last_hidden: dict[str, tuple[type[Event], dict[str, Any]]] = {}
        self._hotkey = parse_hotkey(self.settings.pause_hotkey) if self.settings.pause_hotkey else None
        self.start_ns = 0
        self._thread = threading.Thread(target=self._writer_loop, name="demotrace-writer", daemon=True)
        self.batch: BatchWriter | None = None
        self.frames: FramePipeline | None = None
        self.detector = ActionDetector(self.settings)
        self.on_state_change: Callable[[str], None] | None = None

    # -- the sink (runs on backend hook threads: enqueue only) -----------------------------------
    def _sink(self, event_cls: type[Event], t_ns: int, fields: dict[str, Any]) -> None:
        if self._q.qsize() >= self.settings.queue_limit:
            with self._drop_lock:
                self._dropped += 1
            return
        self._q.put((event_cls, t_ns, fields))

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer and frame threads, write ``session_start``, install the hooks.

        Raises:
            CaptureError: the backend cannot start (the session is closed, nothing lost).
        """
        if self._started:
            raise ControlError("recorder already started")
        self.guard.require_consent()  # ConsentRequired before anything is captured
        self._started = True
        self.start_ns = time.monotonic_ns()
        self.batch = BatchWriter(self.spool, self.start_ns, int(self.settings.flush_interval_s * 1e9))
        self.frames = FramePipeline(self.backend, self.spool, self.settings, self._sink_frame, self.start_ns)
        self.frames.guard = self.guard
        self._q.put((Marker, self.start_ns, {"name": "session_start"}))
        self._thread.start()
        self.frames.start()
        self.frames.request(FrameRequest("session_start", None))
        try:
            if self.elements is not None:  # listening before the first key can be captured
                self.elements.start(self._sink)
                if self.elements.live:
                    from ..capture.atspi import HOLD_NS

                    self._gate.hold_ns = HOLD_NS
            self.backend.start(self._sink)
        except BaseException:
            self.stop()
            raise

    def _sink_frame(self, event_cls: type[Event], t_ns: int, fields: dict[str, Any]) -> None:
        self._q.put((event_cls, t_ns, fields))

    def stop(self, timeout: float = 30.0) -> RecorderSummary:
        """Stop capture, store what is queued (and the frames requested for it), write
        ``session_stop``, flush and close the session (manifest ``ended`` = true). Idempotent."""
        if not self._stopped:
            self._stopped = True
            stop_ns = time.monotonic_ns()
            try:
                self.backend.stop()
            except Exception as exc:  # noqa: BLE001 - still store what was captured
                self._writer_error = f"capture backend failed to stop cleanly: {exc!r}"
            finally:
                if self.elements is not None:
                    self.elements.stop()
                if self._thread.is_alive():
                    barrier = _Ctrl("barrier", {"t_ns": stop_ns})
                    self._q.put((barrier, time.monotonic_ns(), None))
                    self._urgent.set()
                    barrier.done.wait(timeout)
                if self.frames is not None:
                    self.frames.stop(timeout)
                self.guard.close()
                self._q.put((_STOP, time.monotonic_ns(), None))
                self._urgent.set()
                self._thread.join(timeout)
                if self.batch is not None and self.batch.pending:  # writer died: last attempt
                    try:
                        self.batch.flush()
                    except Exception as exc:  # noqa: BLE001
                        self._writer_error = (f"{self.batch.pending} events could not be stored and are lost"
                                              f" (final write failed: {exc}; disk full?)")
                duration = self.batch.last_t_ns if self.batch else 0
                try:
                    self.spool.close(duration_ns=duration)
                except SpoolError as exc:  # what was stored stays; seal recovers it
                    self._writer_error = (self._writer_error + "; " if self._writer_error else "") + str(exc)
        return self.summary()

    def summary(self) -> RecorderSummary:
        """Counts so far (final after :meth:`stop`)."""
        b = self.batch
        fs = self.frames.stats if self.frames else None
        return RecorderSummary(
            session_id=self.session_id,
            events=b.stored if b else 0,
            by_kind=dict(b.stored_by_kind) if b else {},
            frames=(b.stored_by_kind.get("frame", 0) if b else 0),
            blobs_written=fs.encoded if fs else 0,
            dropped=self._dropped,
            duration_ns=b.last_t_ns if b else 0,
            problems=self.check_health(),
        )

    # -- writer thread --------------------------------------------------------------------------
    def _writer_loop(self) -> None:
        """Wake every ``flush_interval_s / 2`` (or at once for a control command, or at a
        settle deadline), drain the queue, and commit what is pending as one batch. The hooks
        never wake this thread (they only enqueue), so a burst costs no context switches; an
        event is durable at most ~``flush_interval_s / 2`` + one commit after it was queued."""
        assert self.batch is not None and self.frames is not None
        batch = self.batch
        tick_ns = int(self.settings.flush_interval_s * 1e9 / 2)
        next_tick = time.monotonic_ns() + tick_ns
        stop = False
        while not stop:
            now = time.monotonic_ns()
            wake = next_tick
            settle = self.detector.next_deadline()
            if settle is not None and settle < wake:
                wake = settle
            if wake > now:
                self._urgent.wait((wake - now) / 1e9)
            self._urgent.clear()
            now = time.monotonic_ns()
            if now >= next_tick:
                next_tick = now + tick_ns
            while True:
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                if item[0] is _STOP:
                    stop = True
                    break
                self._gate.push(item)
            # in arrival order, each item once it has waited the gate's hold (0 unless the
            # focused-element source is live); everything at stop. No extra wake-ups for held
            # items: they leave at the first tick after their hold (one commit per tick, as before)
            while (item := self._gate.pop_due(time.monotonic_ns(), everything=stop)) is not None:
                try:
                    self._process(item)
                except Exception as exc:  # noqa: BLE001 - one bad event never stops the writer
                    self._writer_error = f"event dropped by the writer: {exc!r}"
                    self._malformed += 1
                if batch.pending >= 5000:
                    self._flush()
            now = time.monotonic_ns()
            if not self._paused:
                for req in self.detector.due(now):
                    self.frames.request(req)
            if stop:
                self.guard.finish(batch, time.monotonic_ns())
                batch.add(Marker, time.monotonic_ns(), {"name": "session_stop"})
            if batch.pending:
                self._flush()
            self._writer_cpu_ns = time.thread_time_ns()

    def _flush(self) -> None:
        assert self.batch is not None
        try:
            self.batch.flush()
            self._writer_error = None
        except Exception as exc:  # noqa: BLE001 - kept pending, retried at the next tick, reported
            self._writer_error = f"spool append failed (will retry): {exc!r}"

    def _process(self, item: tuple[Any, int, Any]) -> None:
        cls, t_ns, fields = item
        if isinstance(cls, _Ctrl):
            try:
                cls.result = self._control(cls, t_ns)
            except Exception as exc:  # noqa: BLE001 - a bad command never kills the writer
                cls.result = {"ok": False, "error": f"{cls.cmd} failed: {exc}"}
            cls.done.set()
            return
        assert self.batch is not None and self.frames is not None
        kind = cls.__struct_config__.tag
        if kind in ("key_down", "key_up") and self._hotkey_check(kind, t_ns, fields):
            return
        if not self.guard.admit(self.batch, cls, t_ns, fields):
            return  # excluded context (privacy scope): never stored
        if kind in _INPUT_KINDS:
            if self._paused:
                self._suppressed += 1
                if kind in ("focus_change", "element"):  # the secret-field state follows focus
                    self._gate.observe(cls, t_ns, fields)
                if kind in ("focus_change", "screen_config"):
                    self._last_hidden[kind] = (cls, fields)
                return
            if kind in _SECRET_KINDS and self._gate.should_drop(cls, t_ns, fields):
                return  # a keystroke into a secret field: never stored (counted in status)
            if self.batch.add(cls, t_ns, fields) is None:
                return
            if kind not in ("focus_change", "screen_config", "element"):
                self.frames.note_input(t_ns)
            for req in self.detector.on_event(kind, t_ns, fields):
                self.frames.request(req)
            return
        self.batch.add(cls, t_ns, fields)

    def _hotkey_check(self, kind: str, t_ns: int, fields: dict[str, Any]) -> bool:
        """Track held modifiers; on the pause hotkey toggle pause. True = swallow the event."""
        key = str(fields.get("key", ""))
        code = str(fields.get("code", ""))
        if kind == "key_up":
            if key in MODIFIER_KEYS:
                self._held_mods.discard(key)
            if self._swallow_key_up is not None and code == self._swallow_key_up:
                self._swallow_key_up = None
                return True
            return False
        if key in MODIFIER_KEYS:
            self._held_mods.add(key)
            return False
        if self._hotkey is None or fields.get("is_repeat"):
            return False
        mods, hk = self._hotkey
        held = self._held_mods | set(fields.get("modifiers", ()))
        if key.lower() == hk and mods <= held:
            self._swallow_key_up = code
            self._set_paused(not self._paused, t_ns, via="hotkey")
            return True
        return False

    def _set_paused(self, paused: bool, t_ns: int, via: str) -> None:
        assert self.batch is not None and self.frames is not None
        if paused == self._paused:
            return
        if paused:
            self.batch.add(Marker, t_ns, {"name": "pause", "reason": via})
            self._paused = True
            self.frames.set_paused(True)
            self.detector.reset()
        else:
            self.batch.add(Marker, t_ns, {"name": "resume", "reason": via})
            self._paused = False
            self.frames.set_paused(False)
            for kind in ("screen_config", "focus_change"):
                hidden = self._last_hidden.pop(kind, None)
                if hidden is not None:
                    self.batch.add(hidden[0], t_ns, hidden[1])
            self.frames.request(FrameRequest("resume", None))
        self._flush()
        if self.on_state_change is not None:
            self.on_state_change("paused" if paused else "recording")

    def _control(self, c: _Ctrl, t_ns: int) -> dict[str, Any]:
        assert self.batch is not None
        if c.cmd == "barrier":  # stop(): capture ended; a pending settle frame is taken now
            if not self._paused and self.frames is not None:
                for req in self.detector.take_pending():
                    self.frames.request(req)
                # the final screen: the newest ring frame captured before stop() was called
                self.frames.request(FrameRequest("session_stop", c.args["t_ns"]))
            return {"ok": True}
        if c.cmd == "pause":
            if self._paused:
                return {"ok": False, "error": "already paused; resume with `demotrace resume`"}
            self._set_paused(True, t_ns, via="control")
            return {"ok": True, "state": "paused"}
        if c.cmd == "resume":
            if not self._paused:
                return {"ok": False, "error": "not paused; pause with `demotrace pause`"}
            self._set_paused(False, t_ns, via="control")
            return {"ok": True, "state": "recording"}
        if c.cmd == "task_start":
            instruction = c.args.get("instruction")
            if not isinstance(instruction, str) or not instruction.strip():
                return {"ok": False, "error": "task_start needs a non-empty 'instruction' string"}
            if self._task is not None:
                return {"ok": False, "error": f"a task is already open ({self._task!r}); end it first with `demotrace task end --status ...`"}
            self._task = instruction
            self.batch.add(Marker, t_ns, {"name": "task_start", "instruction": instruction})
            self._flush()
            return {"ok": True, "task": instruction}
        if c.cmd == "task_end":
            status = c.args.get("status")
            if status not in _TASK_STATUSES:
                return {"ok": False, "error": f"task_end needs 'status' one of {', '.join(_TASK_STATUSES)}, got {status!r}"}
            if self._task is None:
                return {"ok": False, "error": "no task is open; start one with `demotrace task start \"instruction\"`"}
            self._task = None
            self.batch.add(Marker, t_ns, {"name": "task_end", "status": status})
            if not self._paused and self.frames is not None:
                # the episode's final screen (observation of its terminal done / fail step)
                self.frames.request(FrameRequest("task_end", t_ns))
            self._flush()
            return {"ok": True, "status": status}
        return {"ok": False, "error": f"unknown command {c.cmd!r}"}

    # -- control API (any thread) ----------------------------------------------------------------
    def _command(self, cmd: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
        if not self._started or self._stopped or not self._thread.is_alive():
            return {"ok": False, "error": "the recorder is not running"}
        c = _Ctrl(cmd, args)
        self._q.put((c, time.monotonic_ns(), None))
        self._urgent.set()
        if not c.done.wait(timeout):
            return {"ok": False, "error": f"{cmd}: the writer did not answer within {timeout} s (backlog {self._q.qsize()})"}
        return c.result

    def pause(self) -> dict[str, Any]:
        """Store a ``pause`` marker; until :meth:`resume` no input or frames are stored.
        Returns ``{"ok": bool, ...}``."""
        return self._command("pause")

    def resume(self) -> dict[str, Any]:
        """Store a ``resume`` marker and restart storing input and frames."""
        return self._command("resume")

    def task_start(self, instruction: object) -> dict[str, Any]:
        """Store ``task_start {instruction}`` (one open task at a time). ``instruction`` must
        be a non-empty string (control input is checked here, an error reply otherwise)."""
        return self._command("task_start", instruction=instruction)

    def browser_event(self, event: object) -> dict[str, Any]:
        """Enqueue one event from the browser extension's native host, like a capture hook
        would (see :mod:`demotrace.capture.browser.nativehost`).

        ``event`` is ``{"kind": "element" | "focus_change", "t_ns_abs": int, ...fields}`` with
        ``t_ns_abs`` in absolute ``CLOCK_MONOTONIC`` ns (clamped to now, and to now if older
        than 10 s) and the schema v1 fields of that kind. Returns ``{"ok": bool, ...}``; a
        malformed event gets an error reply naming the field and is not stored."""
        import msgspec

        if not self._started or self._stopped:
            return {"ok": False, "error": "the recorder is not running"}
        if not isinstance(event, dict):
            return {"ok": False, "error": "browser_event needs an 'event' object"}
        kind = event.get("kind")
        if kind not in _BROWSER_KINDS:
            return {"ok": False, "error": f"browser_event kind must be one of {', '.join(_BROWSER_KINDS)}, got {kind!r}"}
        now = time.monotonic_ns()
        t = event.get("t_ns_abs")
        if not isinstance(t, int) or isinstance(t, bool) or t > now or t < now - _BROWSER_MAX_AGE_NS:
            t = now
        body = {k: v for k, v in event.items() if k not in ("kind", "t_ns_abs", "seq", "t_ns")}
        cls = EVENT_TYPES[kind]
        try:
            ev = msgspec.convert({"seq": 0, "t_ns": 0, **body}, cls)
        except msgspec.ValidationError as exc:
            return {"ok": False, "error": f"browser_event: invalid {kind}: {exc}"}
        self._sink(cls, t, {f: getattr(ev, f) for f in ev.__struct_fields__ if f not in ("seq", "t_ns")})
        return {"ok": True}

    def task_end(self, status: object) -> dict[str, Any]:
        """Store ``task_end {status}``; ``status`` is success | failure | abandoned."""
        return self._command("task_end", status=status)

    @property
    def paused(self) -> bool:
        """True while paused."""
        return self._paused

    def check_health(self) -> list[str]:
        """Problems now (empty = healthy): backend problems, dead threads, dropped or delayed
        events, storage and frame errors."""
        problems: list[str] = []
        if self._started and not self._stopped:
            try:
                problems += [f"capture: {p}" for p in self.backend.check_health()]
                if self.elements is not None:
                    problems += [f"focused element: {p}" for p in self.elements.check_health()]
            except Exception as exc:  # noqa: BLE001
                problems.append(f"capture: health check failed: {exc!r}")
            if not self._thread.is_alive():
                problems.append("writer thread died: events are no longer stored; restart `demotrace record`")
            if self.frames is not None and not self.frames.alive():
                problems.append("frame thread died: no screenshots are stored")
        if self._dropped:
            problems.append(f"LOST {self._dropped} input events: the writer fell behind beyond the queue limit ({self.settings.queue_limit})")
        backlog = self._q.qsize()
        if backlog > self.settings.queue_warn_backlog:
            problems.append(f"writer falling behind: {backlog} events waiting")
        if self._writer_error:
            problems.append(self._writer_error)
        if self.batch is not None and (self.batch.malformed or self._malformed):
            problems.append(
                f"{self.batch.malformed + self._malformed} malformed events from the backend ({self.batch.last_error})"
            )
        if self.frames is not None:
            fs = self.frames.stats
            if fs.grab_errors or fs.encode_errors or fs.skipped_backlog:
                problems.append(
                    f"frames: {fs.grab_errors} grab errors, {fs.encode_errors} encode errors,"
                    f" {fs.skipped_backlog} skipped because the encoder fell behind ({fs.last_error})"
                )
        return problems

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot: session id, state, elapsed seconds, stored / pending / dropped
        counts, frames, open task, delay quantiles (ms from event to durable batch), problems."""
        b = self.batch
        fs = self.frames.stats if self.frames else None
        return {
            "session_id": self.session_id,
            "state": "paused" if self._paused else ("stopped" if self._stopped else "recording"),
            "elapsed_s": round((time.monotonic_ns() - self.start_ns) / 1e9, 3) if self.start_ns else 0.0,
            "events_stored": b.stored if b else 0,
            "events_pending": (b.pending if b else 0) + self._q.qsize(),
            "events_dropped": self._dropped,
            "events_suppressed_while_paused": self._suppressed,
            "keys_dropped_secret_field": dict(self.secrets.counts),
            "focused_element": {**(self.elements.status() if self.elements is not None else {"source": None}),
                                "hold_ms": self._gate.hold_ns / 1e6,
                                "dropped_by_lookahead": self._gate.dropped_by_lookahead,
                                "reapplied_after_focus_change": self._gate.reapplied},
            "privacy_scope": {"excluded_now": self.guard.excluded, **self.guard.stats.__dict__},
            "by_kind": dict(b.stored_by_kind) if b else {},
            "frames_stored": b.stored_by_kind.get("frame", 0) if b else 0,
            "frames_encoded": fs.encoded if fs else 0,
            "frames_deduplicated": fs.deduplicated if fs else 0,
            "frames_missed": fs.missed if fs else 0,
            "frames_skipped_backlog": fs.skipped_backlog if fs else 0,
            "grabs": fs.grabs if fs else 0,
            "grabs_unchanged": fs.grabs_unchanged if fs else 0,
            "encoded_bytes": fs.encoded_bytes if fs else 0,
            "cpu_s": {
                "grab": round(fs.grab_cpu_ns / 1e9, 3) if fs else 0.0,
                "hash": round(fs.hash_cpu_ns / 1e9, 3) if fs else 0.0,
                "encode": round(fs.encode_cpu_ns / 1e9, 3) if fs else 0.0,
                "writer": round(self._writer_cpu_ns / 1e9, 3),
            },
            "threads_cpu_s": _threads_cpu(),
            "task": self._task,
            "delay_p50_ms": b.delays.quantile_ms(0.5) if b else None,
            "delay_p99_ms": b.delays.quantile_ms(0.99) if b else None,
            "delay_max_ms": round(b.delays.max_ns / 1e6, 3) if b else None,
            "problems": self.check_health(),
        }
