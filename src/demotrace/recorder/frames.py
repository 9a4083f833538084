"""Which frames to keep, and the threads that grab, encode and deduplicate them.

- :class:`ActionDetector` (pure logic, owned by the writer thread) turns stored input events
  into :class:`FrameRequest` s: one pre-action frame per discrete action (``pointer_down``, the
  first wheel event of a burst, the first key of a typing run, a special key or hotkey, a
  focus change) and a *settle* frame after typing / scrolling / an app switch stops
  (screenpipe's delays: 500 ms after typing, 400 ms after scrolling, 300 ms after an app
  switch).
- :class:`FramePipeline` runs two threads: the *frame thread* grabs the screen into a
  :class:`~demotrace.recorder.ring.FrameRing` (4 Hz while input is active, slower when idle)
  and answers requests with the newest frame captured before the action (DESIGN.md §5); the
  *encoder thread* downscales (only the regions the backend's damage says changed since the
  previous downscaled frame), hashes the stored pixels (``DataKey.content_id``), skips the
  encode if the spool already has that blob, otherwise encodes (JPEG / WebP / PNG via Pillow) and
  stores it, then emits a schema ``Frame`` event. None of this runs on the input hooks' threads.

The privacy guard (recorder/guard.py) is consulted on both threads: the frame thread brings its
window cache up to date right after every grab (:meth:`CaptureGuard.observe`, one X round trip
when nothing changed) and hands the encoder, with each chosen frame, the windows that may have
been on screen at its capture time (:meth:`CaptureGuard.view_at`); the encoder drops or masks the
frame with them (:meth:`CaptureGuard.filter_frame`) before hashing or encoding it.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

from ..capture._base import CaptureBackend, RawFrame
from ..schema.events import MODIFIER_KEYS, Event, Frame, FrameWindow, Rect
from ..spool.store import SessionWriter
from .ring import FrameRing
from .settings import JPEG_SUBSAMPLING, RecorderSettings

#: Keys that continue a typing run (text editing inside ``type(text)``, DESIGN.md §5).
RUN_KEYS = frozenset({"Backspace", "Dead", "Process", "Unidentified", "Compose"})
#: Modifiers that make a key press a hotkey (Shift alone does not).
HOTKEY_MODIFIERS = frozenset({"Control", "Alt", "Meta", "Super", "OS"})


@dataclass(frozen=True)
class FrameRequest:
    """Ask the frame thread for one frame.

    ``reason``: stored in ``Frame.reason`` ("pointer_down", "wheel", "key", "hotkey",
    "focus_change", "settle", "session_start", "resume", "task_end", "session_stop").
    ``before_ns``: absolute monotonic ns
    of the action's first raw event — the newest ring frame captured strictly before it is
    used; ``None`` means grab a fresh frame now (settle / start frames).
    """

    reason: str
    before_ns: int | None = None


class ActionDetector:
    """Decides, from the stream of stored input events, which frames to keep.

    Feed every stored event with :meth:`on_event` (kind tag, absolute ``t_ns``, fields); it
    returns pre-action requests at once. Settle requests come from :meth:`due` once their time
    has passed; :meth:`next_deadline` tells the writer when to wake up for them. Times are
    absolute monotonic nanoseconds.
    """

    def __init__(self, settings: RecorderSettings) -> None:
        self.s = settings
        self._last_key_ns: int | None = None
        self._last_wheel_ns: int | None = None
        self._settle_at: int | None = None

    def reset(self) -> None:
        """Forget runs and pending settles (on pause)."""
        self._last_key_ns = None
        self._last_wheel_ns = None
        self._settle_at = None

    def _settle(self, at_ns: int) -> None:
        self._settle_at = at_ns if self._settle_at is None else max(self._settle_at, at_ns)

    def on_event(self, kind: str, t_ns: int, fields: dict[str, Any]) -> list[FrameRequest]:
        """Requests triggered by one input event (possibly none)."""
        s = self.s
        if kind == "pointer_down":
            self._last_key_ns = None
            return [FrameRequest("pointer_down", t_ns)]
        if kind == "wheel":
            first = self._last_wheel_ns is None or t_ns - self._last_wheel_ns >= s.scroll_gap_s * 1e9
            self._last_wheel_ns = t_ns
            self._last_key_ns = None
            self._settle(t_ns + int(s.settle_scroll_s * 1e9))
            return [FrameRequest("wheel", t_ns)] if first else []
        if kind == "key_down":
            key = fields.get("key", "")
            if fields.get("is_repeat") or key in MODIFIER_KEYS:
                return []
            mods = set(fields.get("modifiers", ()))
            self._settle(t_ns + int(s.typing_gap_s * 1e9))
            if mods & HOTKEY_MODIFIERS:
                self._last_key_ns = None
                return [FrameRequest("hotkey", t_ns)]
            named = len(key) > 1 and key not in RUN_KEYS
            if named:  # Enter, Tab, Escape, arrows, F-keys, Delete: key(name) actions
                self._last_key_ns = None
                return [FrameRequest("key", t_ns)]
            first = self._last_key_ns is None or t_ns - self._last_key_ns >= s.typing_gap_s * 1e9
            self._last_key_ns = t_ns
            return [FrameRequest("key", t_ns)] if first else []
        if kind == "focus_change":
            self._last_key_ns = None
            if s.settle_focus_s is not None:
                self._settle(t_ns + int(s.settle_focus_s * 1e9))
            return [FrameRequest("focus_change", t_ns)]
        return []

    def next_deadline(self) -> int | None:
        """Absolute ns of the next pending settle frame, or ``None``."""
        return self._settle_at

    def take_pending(self) -> list[FrameRequest]:
        """The pending settle request now, whatever its deadline (at the end of a session)."""
        if self._settle_at is None:
            return []
        self._settle_at = None
        return [FrameRequest("settle", None)]

    def due(self, now_ns: int) -> list[FrameRequest]:
        """The settle request if its time has come (at most one; later settles merge)."""
        if self._settle_at is not None and now_ns >= self._settle_at:
            self._settle_at = None
            return [FrameRequest("settle", None)]
        return []


def frame_image(frame: RawFrame, settings: RecorderSettings) -> "Image.Image":
    """The frame as an RGB Pillow image, box-downscaled by ``settings.downscale_factor``
    (Pillow's ``reduce``: each output pixel is the mean of an n×n block; sizes round up)."""
    from PIL import Image

    img = Image.frombuffer("RGB", (frame.width, frame.height), frame.pixels, "raw", "BGRX", 0, 1)
    n = settings.downscale_factor
    return img.reduce(n) if n > 1 else img


#: Largest share of the frame (summed area of the changed rectangles) redone by
#: :func:`downscale_patch`; above it the whole frame is downscaled.
PATCH_MAX_AREA = 0.5


def downscale_patch(base: "Image.Image", frame: RawFrame, changed: tuple["Rect", ...], n: int) -> "Image.Image | None":
    """``frame_image(frame)`` computed from ``base`` (``frame_image`` of an earlier frame of the
    same size whose pixels equal ``frame``'s outside the ``changed`` rectangles, desktop
    pixels): a copy of ``base`` with only the changed regions, widened to the n×n block grid,
    decoded from BGRX and box-reduced — byte-identical to the full computation (each output
    pixel depends on its own block only). ``None`` when the changed area exceeds
    :data:`PATCH_MAX_AREA` of the frame or ``base`` has another size (do the full one)."""
    from PIL import Image

    w, h = frame.width, frame.height
    if base.size != (-(-w // n), -(-h // n)) or sum(r.width * r.height for r in changed) > PATCH_MAX_AREA * w * h:
        return None
    img = base.copy()
    stride = w * 4
    view = memoryview(frame.pixels)
    bx, by = frame.bounds.x, frame.bounds.y
    for r in changed:
        x0 = max(0, int(r.x - bx) // n * n)
        y0 = max(0, int(r.y - by) // n * n)
        x1 = min(w, -(-int(r.x - bx + r.width) // n) * n)
        y1 = min(h, -(-int(r.y - by + r.height) // n) * n)
        if x0 >= x1 or y0 >= y1:
            continue
        start = y0 * stride + x0 * 4
        part = Image.frombuffer("RGB", (x1 - x0, y1 - y0), view[start:(y1 - 1) * stride + x1 * 4],
                                "raw", "BGRX", stride, 1)
        img.paste(part.reduce(n) if n > 1 else part, (x0 // n, y0 // n))
    return img


def encode_image(img: "Image.Image", settings: RecorderSettings) -> bytes:
    """Encode as ``settings.frame_format``: baseline JPEG (``jpeg_quality``, ``jpeg_subsampling``,
    optimised Huffman tables: 8-40 % smaller on screens, lossless, ~1 ms more; libjpeg-turbo via
    Pillow), lossy WebP (``webp_quality``, ``webp_method``) or PNG (zlib level 1). Deterministic:
    equal pixels give equal bytes (the content id depends on it)."""
    buf = io.BytesIO()
    if settings.frame_format == "jpeg":
        img.save(buf, format="JPEG", quality=settings.jpeg_quality,
                 subsampling=JPEG_SUBSAMPLING[settings.jpeg_subsampling], optimize=True)
    elif settings.frame_format == "webp":
        img.save(buf, format="WEBP", quality=settings.webp_quality, method=settings.webp_method)
    else:
        img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def encode_frame(frame: RawFrame, settings: RecorderSettings) -> tuple[bytes, int, int]:
    """Encode a BGRA frame per ``settings``. Returns (encoded bytes, width, height) in image
    pixels."""
    img = frame_image(frame, settings)
    return encode_image(img, settings), img.width, img.height


_STOP = object()
#: No window view taken for a frame (no guard, or the guard snapshots per frame).
_NO_VIEW = object()


@dataclass
class FrameStats:
    """Counters of the frame pipeline (read by status / health; written by its threads)."""

    grabs: int = 0
    #: grabs answered by the backend with the previous grab's pixels (screen unchanged, no
    #: new image: X11 DAMAGE), included in ``grabs``
    grabs_unchanged: int = 0
    grab_errors: int = 0
    requests: int = 0
    missed: int = 0  # no frame captured before the action was in the ring
    skipped_backlog: int = 0  # requests skipped because the encoder was too far behind
    emitted: int = 0
    encoded: int = 0
    deduplicated: int = 0
    encode_errors: int = 0
    encoded_bytes: int = 0
    #: frames encoded whose bytes were already stored (same pixels in another buffer), in
    #: ``deduplicated``: the encode was the price of the content id
    encoded_repeats: int = 0
    last_error: str | None = None
    #: CPU time spent per stage (ns of thread CPU time), for the benchmark's breakdown.
    grab_cpu_ns: int = 0
    #: frame thread: the privacy guard's window-cache observations after each grab
    guard_cpu_ns: int = 0
    #: encoder thread: downscale + content id (keyed hash of the encoded bytes)
    hash_cpu_ns: int = 0
    #: encoder thread: every encode, including ``encoded_repeats``
    encode_cpu_ns: int = 0


class FramePipeline:
    """Frame thread (grabs into the ring, answers requests) + encoder thread.

    ``emit(event_cls, t_ns_abs, fields)`` receives each finished ``Frame`` (the recorder's
    queue); ``start_ns`` is the session's absolute monotonic start, used for
    ``captured_t_ns``. Lifecycle: :meth:`start`, :meth:`request`* / :meth:`note_input`* /
    :meth:`set_paused`*, :meth:`stop` (answers pending requests, encodes them, then returns).
    """

    def __init__(
        self,
        backend: CaptureBackend,
        writer: SessionWriter,
        settings: RecorderSettings,
        emit: Callable[[type[Event], int, dict[str, Any]], None],
        start_ns: int,
    ) -> None:
        self.backend = backend
        self.writer = writer
        self.s = settings
        self.emit = emit
        self.start_ns = start_ns
        self.stats = FrameStats()
        self.ring = FrameRing(int(settings.ring_seconds * 1e9), settings.ring_max_frames)
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._encode: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._last_input_ns = 0
        self._paused = False
        self._idle = True
        self._frame_thread = threading.Thread(target=self._frame_loop, name="demotrace-frames", daemon=True)
        self._encoder_thread = threading.Thread(target=self._encode_loop, name="demotrace-encoder", daemon=True)
        #: content ids of recently stored pixel buffers, by buffer identity (the buffer is kept
        #: so its id stays unique): a frame re-using a buffer (unchanged screen) is not hashed
        self._cids: list[tuple[bytes, str]] = []
        #: frame thread: ring seq of the last frame handed to the encoder
        self._sent_seq: int | None = None
        #: encoder thread: downscaled image of an earlier unmasked frame (``_base_seq``) and the
        #: rectangles changed since it up to the last frame seen (``_chain_seq``), or ``None``
        self._base: Any = None
        self._base_seq: int | None = None
        self._chain_seq: int | None = None
        self._acc: list[Rect] | None = None
        #: capture-time privacy guard (recorder/guard.py), set by the Recorder: drops frames of
        #: excluded contexts and paints out visible excluded windows before hashing / encoding
        self.guard: Any = None

    # -- called from other threads -------------------------------------------------------------
    def start(self) -> None:
        """Start both threads."""
        self._frame_thread.start()
        self._encoder_thread.start()

    def request(self, req: FrameRequest) -> None:
        """Queue a request (non-blocking)."""
        self._requests.put(req)

    def note_input(self, t_ns: int) -> None:
        """Tell the frame thread input happened at ``t_ns`` (absolute): switches to the active
        grab rate, waking the thread if it was idle."""
        self._last_input_ns = t_ns
        if self._idle:
            self._idle = False
            self._requests.put(None)  # wake up

    def set_paused(self, paused: bool) -> None:
        """While paused nothing is grabbed and the ring is emptied."""
        self._requests.put(("pause", paused))

    def alive(self) -> bool:
        """Both threads running."""
        return self._frame_thread.is_alive() and self._encoder_thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Answer pending requests, encode and emit their frames, then end both threads."""
        if self._frame_thread.is_alive():
            self._requests.put(_STOP)
            self._frame_thread.join(timeout)
        if self._encoder_thread.is_alive():
            self._encode.put(_STOP)
            self._encoder_thread.join(timeout)

    # -- frame thread ----------------------------------------------------------------------------
    def _grab(self) -> RawFrame | None:
        c0 = time.thread_time_ns()
        try:
            frame = self.backend.grab()
        except Exception as exc:  # noqa: BLE001 - counted and reported by check_health
            self.stats.grab_errors += 1
            self.stats.last_error = f"grab failed: {exc!r}"
            return None
        finally:
            self.stats.grab_cpu_ns += time.thread_time_ns() - c0
        self.stats.grabs += 1
        self._observe()
        prev = self.ring.newest()
        if prev is not None and prev.pixels is frame.pixels:
            self.stats.grabs_unchanged += 1
        self.ring.push(frame)
        return frame

    def _observe(self) -> None:
        """Right after a grab (and once before the first): bring the privacy guard's window
        cache up to date, so every frame in the ring lies in an observed interval."""
        if self.guard is not None and getattr(self.guard, "window_cache", False):
            c0 = time.thread_time_ns()
            self.guard.observe()
            self.stats.guard_cpu_ns += time.thread_time_ns() - c0

    def _frame_loop(self) -> None:
        self._observe()
        next_grab = time.monotonic_ns()
        while True:
            now = time.monotonic_ns()
            active = now - self._last_input_ns < self.s.idle_after_s * 1e9
            self._idle = not active
            timeout = max(0, next_grab - now) / 1e9
            try:
                item = self._requests.get(timeout=timeout) if timeout > 0 else self._requests.get_nowait()
            except queue.Empty:
                item = None
                if not self._paused:
                    frame = self._grab()
                    done = frame.captured_ns if frame else time.monotonic_ns()
                else:
                    done = time.monotonic_ns()
                interval = self.s.grab_interval_active_s if active else self.s.grab_interval_idle_s
                next_grab = done + int(interval * 1e9)
                continue
            if item is _STOP:
                break
            if item is None:  # wake-up: input became active
                next_grab = min(next_grab, time.monotonic_ns())
                continue
            if isinstance(item, tuple):
                self._paused = bool(item[1])
                if self._paused:
                    self.ring.clear()
                continue
            self._answer(item)

    def _answer(self, req: FrameRequest) -> None:
        self.stats.requests += 1
        if self._paused:
            return
        if req.before_ns is None:
            frame = self._grab()
        else:
            frame = self.ring.newest_before(req.before_ns)
        if frame is None:
            self.stats.missed += 1
            return
        if self._encode.qsize() >= self.s.encode_backlog:
            self.stats.skipped_backlog += 1
            self.stats.last_error = f"encoder behind: {self._encode.qsize()} frames waiting"
            return
        seq = self.ring.seq_of(frame)
        changed = None
        if seq is not None and self._sent_seq is not None:
            changed = self.ring.changes_between(self._sent_seq, seq)
        view: Any = _NO_VIEW
        if self.guard is not None and getattr(self.guard, "window_cache", False):
            view = self.guard.view_at(frame.captured_ns)  # None = unknown: withheld
        self._encode.put((frame, req.reason, (self._sent_seq, seq, changed), view))
        self._sent_seq = seq

    # -- encoder thread --------------------------------------------------------------------------
    def _encode_loop(self) -> None:
        while True:
            item = self._encode.get()
            if item is _STOP:
                return
            frame, reason, delta, view = item
            try:
                self._store(frame, reason, delta, view)
            except Exception as exc:  # noqa: BLE001 - counted and reported by check_health
                self.stats.encode_errors += 1
                self.stats.last_error = f"frame encode/store failed: {exc!r}"

    def _follow(self, delta: tuple[int | None, int | None, tuple[Rect, ...] | None] | None) -> None:
        """Extend the changed rectangles since ``_base`` by one frame's ``delta`` (its previous
        frame's seq, its seq, the rectangles between them); lose track if the chain breaks."""
        prev, seq, changed = delta if delta is not None else (None, None, None)
        if self._acc is not None and prev is not None and prev == self._chain_seq and changed is not None \
                and len(self._acc) + len(changed) <= 256:
            self._acc.extend(changed)
        else:
            self._acc = None
        self._chain_seq = seq

    def _downscale(self, frame: RawFrame, seq: int | None) -> "Image.Image":
        """The stored image of an unmasked frame: patched from ``_base`` when the chain of
        changes is known, else the full downscale; it becomes the new base."""
        img = None
        if self._base is not None and self._acc is not None:
            img = downscale_patch(self._base, frame, tuple(self._acc), self.s.downscale_factor)
        if img is None:
            img = frame_image(frame, self.s)
        if seq is not None:
            self._base, self._base_seq, self._acc = img, seq, []
        return img

    def _store(self, frame: RawFrame, reason: str, delta: Any = None, view: Any = _NO_VIEW) -> None:
        """Dedup and store one frame, then emit its ``Frame`` event.

        The content id is the keyed hash of the *encoded* image (``DataKey.content_id``, as the
        importers and sealing name their blobs; docs/schema.md: content-addressed encoded frames).
        The encoders are deterministic, so equal pixels give equal bytes and the same id: a
        repeated screen is stored once. A frame whose pixel buffer is one of the last 2 stored
        (the backend returns the same buffer while the screen is unchanged) or byte-identical to
        the previous stored one (``memcmp``) reuses its id without encoding. Until 2026-11-30 the
        id was the keyed hash of the downscaled pixels (1.5 MB at 960x540: 3-4 ms with
        ``tobytes``), taken before encoding; a JPEG of the same frame takes about as long as
        that hash and its bytes hash in ~0.05 ms, so a new frame now costs one encode instead of
        hash + encode, a repeated one (different buffer, same pixels) one encode instead of one
        hash (bench/recorder_overhead.py). Ids are opaque; a session never mixes the schemes.

        The downscale itself is incremental when possible: ``delta`` (previous frame's ring seq,
        this frame's seq, the damage rectangles between them, from :meth:`FrameRing.changes_between`)
        extends the known changes since the last downscaled unmasked frame, and only those regions
        are decoded and reduced (:func:`downscale_patch`, byte-identical to the full downscale).
        """
        self._follow(delta)
        seq = delta[1] if delta is not None else None
        grabbed = frame
        if self.guard is not None:
            filtered = self.guard.filter_frame(frame) if view is _NO_VIEW else self.guard.filter_frame(frame, view)
            if filtered is None:
                return  # captured in an excluded context: never stored (counted by the guard)
            frame = filtered
        masked = frame is not grabbed  # a masked copy is never a base for patching
        c0 = time.thread_time_ns()
        n = self.s.downscale_factor
        width, height = -(-frame.width // n), -(-frame.height // n)  # Pillow's reduce rounds up
        cid = next((c for px, c in self._cids if px is frame.pixels), None)
        if cid is None and self._cids and frame.pixels == self._cids[-1][0]:
            cid = self._cids[-1][1]
        if cid is not None and not self.writer.has_blob(cid):
            cid = None  # its blob was never written (a failed put): encode it again
        data = None
        if cid is None:
            img = self._downscale(frame, seq) if n > 1 and seq is not None and not masked else frame_image(frame, self.s)
            c1 = time.thread_time_ns()
            data = encode_image(img, self.s)
            c2 = time.thread_time_ns()
            cid = self.writer.key.content_id(data)
            width, height = img.width, img.height
            self.stats.encode_cpu_ns += c2 - c1
            self.stats.hash_cpu_ns += (c1 - c0) + (time.thread_time_ns() - c2)
        if data is None or self.writer.has_blob(cid):
            self.stats.deduplicated += 1
            if data is not None:
                self.stats.encoded_repeats += 1
        else:
            self.writer.put_blob(cid, data, self.s.frame_format)
            self.stats.encoded += 1
            self.stats.encoded_bytes += len(data)
        self._cids = [e for e in self._cids if e[0] is not frame.pixels][-1:] + [(frame.pixels, cid)]
        fields = {
            "blob": cid,
            "monitor": frame.monitor,
            "bounds": frame.bounds,
            "width": width,
            "height": height,
            "scale": self.s.frame_scale,
            "captured_t_ns": frame.captured_ns - self.start_ns,
            "reason": reason,
            "format": self.s.frame_format,
        }
        if view is not _NO_VIEW and view is not None:  # the guard's window list at the grab
            fields["windows"] = tuple(dict.fromkeys(
                FrameWindow(d.client or d.window, d.bounds) for d in view.windows))
        self.stats.emitted += 1
        self.emit(Frame, time.monotonic_ns(), fields)
