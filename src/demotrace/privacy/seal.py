"""``demotrace seal``: raw spool session → sealed bundle (see :mod:`.bundle` for the layout).

For each event of the raw session, in ``(t_ns, seq)`` order:

1. **Scope** (policy + the person's exclusions, :mod:`.scope`): while the focused context is
   excluded (or outside the time windows) no input, frame or element is kept; one
   ``Marker(name="private_gap", reason=…, duration_ns=…)`` replaces the whole excluded stretch
   (its ``t_ns`` is where the stretch began). Lifecycle markers and screen layouts are kept.
   Every excluded window seen with focus (its ``FocusChange.bounds``) is painted black in every
   later frame of the session, from then on, whether or not it is still visible (the seal sees
   no window list; over-masking is the fail-closed choice). This repeats at seal time what the
   recorder should already do at capture time (defence in depth; see docs/privacy.md).
2. **Secret fields** (:mod:`.secrets`): keystrokes into password / one-time-code / card fields
   (and, in strict mode, printable keys into unidentified fields) are dropped.
3. **Typed text**: key presses are grouped into runs (a run ends at a focus change, an element
   change, a click, a hotkey or a cursor-moving key); each run's text, with Backspace applied,
   goes through the text layers. The key events that typed a finding are replaced by one
   ``TextInput`` event whose text is ``<ENTITY>`` (at the time of the first such key), so the
   trajectory still shows that something was typed. Deleted keystrokes inside a finding go too.
   The run is then re-scanned — both its edited text and the raw stream of kept keystrokes —
   and dropped whole if anything is still found or a layer failed.
4. **Text fields**: window titles, URLs, element names and attributes, task instructions go
   through the text layers; a field whose redaction fails is removed (set to ``None``) and
   counted.
5. **Frames**: decoded, redacted by OCR + boxes (:mod:`.redact_image`), re-encoded; a frame
   whose redaction fails is dropped with its ``Frame`` event.

Sequence numbers are renumbered 0, 1, 2 … in the bundle (the bundle stands alone).
The bundle is written to a hidden temporary folder and renamed into place when complete, so a
crash never leaves a half-sealed bundle that looks sealed.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
from PIL import Image

from ..errors import SessionNotFound, SpoolCorrupt, SpoolError
from ..paths import Paths
from ..schema.events import (
    Element,
    Event,
    FocusChange,
    Frame,
    KeyDown,
    KeyUp,
    Marker,
    PointerDown,
    Rect,
    ScreenConfig,
    TextInput,
    sort_key,
)
from ..schema.manifest import SessionManifest
from ..spool import Spool
from ..spool.store import SessionReader, SessionWriter
from .bundle import MARKER, MARKER_TEXT, REPORT, bundle_key, clean_stale_sealing, consent_extra, report_aad, sealed_root
from .consent import read_consent
from .errors import RedactionError
from .field_labels import infer_secret_fields, tesseract_ocr
from .line_edit import PROFILES, edited_lines
from .pipeline import RedactionCounts, RedactionPipeline, _cause
from .pipeline import _layer_of as _layer
from .policy import Policy
from .redact_image import TITLE_BAR_PX, fill_boxes, paint_title_bars, title_bar_boxes
from .redact_text import merge_findings
from .scope import Exclusions, ScopeDecision, ScopeFilter
from .uploads import refuse_if_uploaded, uploaded_ids
from .secrets import HOTKEY_MODIFIERS, SecretKeyFilter, element_is_secret

#: Keys that move the caret: they end a typing run (the buffer would no longer be linear).
CURSOR_KEYS = frozenset({"ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Home", "End", "PageUp", "PageDown"})
#: Keys that only change the case / level of what is typed (W3C key values).
_CASE_KEYS = frozenset({"Shift", "CapsLock", "AltGraph"})
#: Events kept inside an excluded context (no personal content).
_KEEP_IN_GAP = ("session_start", "session_stop", "pause", "resume", "private_gap")
BATCH = 512
#: Frames OCR'd together in one stacked tesseract run (memory: ~3 MB each at 1280x800).
FRAME_BATCH = 16


@dataclass
class SealReport:
    """Result of sealing one session: ``session_id``, ``bundle`` folder, ``policy_version``,
    ``sealed_utc``, ``events_in`` / ``events_out``, ``frames_in`` / ``frames_out``,
    ``private_gaps`` (``private_gap`` markers written at seal time: stretches the policy
    excludes that the recorder captured, e.g. under an exclusion added later), ``recorder_gaps``
    (``private_gap`` markers the recorder already stored — contexts excluded while recording —
    kept in the bundle; the two are counted apart, bug bash 5 E), ``windows_masked`` (frames in which excluded windows
    were painted), ``typed_secret_masked`` / ``typed_secret_dropped`` (frames in which the
    window that received flagged typed text was blacked out / frames dropped because that
    window's bounds were unknown — the fail-closed image rule), ``scope_dropped`` (reason → events dropped),
    ``secret_keys_dropped`` (reason → key events dropped), and the pipeline ``counts``
    (entities, items dropped and why) as a dict."""

    session_id: str
    bundle: str
    policy_version: int
    sealed_utc: str
    events_in: int = 0
    events_out: int = 0
    frames_in: int = 0
    frames_out: int = 0
    private_gaps: int = 0
    recorder_gaps: int = 0
    windows_masked: int = 0
    typed_secret_masked: int = 0
    typed_secret_dropped: int = 0
    scope_dropped: dict[str, int] = field(default_factory=dict)
    secret_keys_dropped: dict[str, int] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """The report as JSON bytes."""
        return json.dumps(self.__dict__, indent=1, sort_keys=True).encode()


def _session_clock(manifest: SessionManifest) -> tuple[dt.datetime, dt.tzinfo]:
    start = dt.datetime.fromisoformat(manifest.started_utc.replace("Z", "+00:00"))
    if start.tzinfo is None:
        start = start.replace(tzinfo=dt.timezone.utc)
    tz: dt.tzinfo = dt.timezone.utc
    name = manifest.timezone or "UTC"
    m = re.fullmatch(r"(?:UTC)?([+-])(\d{2}):?(\d{2})", name)
    if m:
        sign = 1 if m.group(1) == "+" else -1
        tz = dt.timezone(sign * dt.timedelta(hours=int(m.group(2)), minutes=int(m.group(3))))
    else:
        try:
            tz = ZoneInfo(name)
        except (ValueError, KeyError, OSError):  # unknown zone name: UTC (documented)
            tz = dt.timezone.utc
    return start, tz


class _Sealer:
    def __init__(self, policy: Policy, pipeline: RedactionPipeline, scope: ScopeFilter) -> None:
        self.policy = policy
        self.pipe = pipeline
        self.scope = scope
        self.secrets = SecretKeyFilter(policy)
        self.scope_dropped: Counter[str] = Counter()
        self.gaps = 0
        #: excluded windows seen so far (window id -> last known bounds, desktop pixels)
        self.excluded_windows: dict[int, Rect] = {}
        #: raw frame seq -> excluded window rectangles to paint before OCR
        self.frame_masks: dict[int, list[Rect]] = {}
        #: (t_ns of the first flagged key, window id or None) for every finding in typed text
        #: and every run dropped whole: from then on the value may be on screen in that window
        self.flagged_typing: list[tuple[int, int | None]] = []
        self._focus_win: int | None = None
        #: ``(first_seq, last_seq)`` of the raw batches that could not be read (SessionReader.skipped)
        self.unreadable: list[tuple[int, int]] = []

    # 1. scope -------------------------------------------------------------------------------
    def apply_scope(self, events: list[Event], start: dt.datetime, tz: dt.tzinfo) -> list[Event]:
        out: list[Event] = []
        ctx: FocusChange | None = None
        gap: tuple[int, str] | None = None
        last_t = 0
        windows = bool(self.policy.scope.time_windows)
        decision = ScopeDecision.allow()
        for ev in events:
            last_t = ev.t_ns
            local = (start + dt.timedelta(microseconds=ev.t_ns / 1000)).astimezone(tz)
            if isinstance(ev, FocusChange):
                ctx = ev
                decision = self.scope.decide_focus(ev, now=local)
                if ev.window_id is not None:
                    if not decision.allowed and decision.reason != "time_window" and ev.bounds is not None:
                        self.excluded_windows[ev.window_id] = ev.bounds
                    elif decision.allowed:
                        self.excluded_windows.pop(ev.window_id, None)
            if isinstance(ev, Frame) and self.excluded_windows:
                self.frame_masks[ev.seq] = list(self.excluded_windows.values())
            elif windows:
                decision = (self.scope.decide_focus(ctx, now=local) if ctx is not None
                            else self.scope.decide(now=local))
            if not decision.allowed:
                if gap is None:
                    gap = (ev.t_ns, decision.reason or "excluded")
                if isinstance(ev, ScreenConfig) or (isinstance(ev, Marker) and ev.name in _KEEP_IN_GAP):
                    out.append(ev)
                else:
                    self.scope_dropped[decision.reason or "excluded"] += 1
                continue
            if gap is not None:
                out.append(Marker(seq=0, t_ns=gap[0], name="private_gap", reason=gap[1], duration_ns=ev.t_ns - gap[0]))
                self.gaps += 1
                gap = None
            out.append(ev)
        if gap is not None:
            out.append(Marker(seq=0, t_ns=gap[0], name="private_gap", reason=gap[1], duration_ns=last_t - gap[0]))
            self.gaps += 1
        out.sort(key=lambda e: (e.t_ns, 0 if isinstance(e, Marker) and e.name == "private_gap" else 1))
        return out

    # 2. secret fields -----------------------------------------------------------------------
    def apply_secrets(self, events: list[Event], inferred: dict[int, str] | None = None,
                      shown: set[int] | None = None) -> list[Event]:
        """Drop secret-field keys: by the focus rules of :mod:`.secrets`, and the events at the
        indices of ``inferred`` (index -> reason, from :func:`.field_labels.infer_secret_fields`).
        A stretch whose first key index is in ``shown`` (a field found by its label, which may
        echo what was typed) also flags the focused window for the typed-secret image rule:
        blacked out from then on, as for a value found in typed text (bug bash 6 H6)."""
        out: list[Event] = []
        down_dropped: Counter[str] = Counter()
        win: int | None = None
        for i, ev in enumerate(events):
            if isinstance(ev, FocusChange):
                win = ev.window_id
            if shown and i in shown:
                self.flagged_typing.append((ev.t_ns, win))
            if isinstance(ev, KeyUp) and down_dropped[ev.code] > 0:
                down_dropped[ev.code] -= 1  # the release of a dropped press goes too
                self.secrets.counts["secret_field_release"] += 1
                continue
            if inferred and i in inferred:
                self.secrets.observe(ev)
                self.secrets.counts[inferred[i]] += 1
                if isinstance(ev, KeyDown):
                    down_dropped[ev.code] += 1
                continue
            if self.secrets.should_drop(ev):
                if isinstance(ev, KeyDown):
                    down_dropped[ev.code] += 1
                continue
            out.append(ev)
        return out

    # 3. typed text --------------------------------------------------------------------------
    def apply_typing(self, events: list[Event]) -> list[Event]:
        remove: set[int] = set()
        insert: dict[int, Event] = {}
        run: list[int] = []
        runs: list[tuple[list[int], int | None]] = []

        def flush() -> None:
            if run:
                self._redact_run(events, list(run), remove, insert)
                runs.append((list(run), self._focus_win))
                run.clear()

        for i, ev in enumerate(events):
            if isinstance(ev, (FocusChange, Element, PointerDown)):
                flush()
                if isinstance(ev, FocusChange):
                    self._focus_win = ev.window_id
            elif isinstance(ev, TextInput):
                run.append(i)
            elif isinstance(ev, KeyDown):
                if (set(ev.modifiers) & HOTKEY_MODIFIERS and not ev.text) or ev.key in CURSOR_KEYS:
                    flush()
                elif ev.text or ev.key in ("Backspace", "Enter", "Tab"):
                    run.append(i)
        flush()
        self._redact_beside_gaps(events, runs, remove)
        self._redact_joints(events, runs, remove, insert)
        self._redact_edits(events, runs, remove, insert)
        # the release of each removed press goes too
        removed_codes: Counter[str] = Counter()
        out: list[Event] = []
        for i, ev in enumerate(events):
            if i in insert:
                out.append(insert[i])
            if i in remove:
                if isinstance(ev, KeyDown):
                    removed_codes[ev.code] += 1
                continue
            if isinstance(ev, KeyUp) and removed_codes[ev.code] > 0:
                removed_codes[ev.code] -= 1
                continue
            out.append(ev)
        return out

    def _redact_beside_gaps(self, events: list[Event], runs: list[tuple[list[int], int | None]],
                            remove: set[int]) -> None:
        """Typing runs next to an unreadable batch (:attr:`unreadable`) are removed whole and
        their windows flagged (bug bash 5 D: a damaged batch in the middle of a typed card left
        its other parts, which no layer recognises alone). Per damaged batch (a ``seq`` range):
        the run with the last key before it and the run with the first key after it (one run
        when typing went on across it) — what the batch held may have joined them into a value.
        Counted ``typed_run:beside_unreadable_batch``."""
        keyed = [(events[i].seq, n) for n, (idx, _w) in enumerate(runs) for i in idx]
        for first, last in self.unreadable:
            before = [k for k in keyed if k[0] < first]
            after = [k for k in keyed if k[0] > last]
            picked = {max(before)[1]} if before else set()
            picked |= {min(after)[1]} if after else set()
            near = [runs[n] for n in sorted(picked)]
            for idx, w in near:
                if set(idx) <= remove:
                    continue
                remove.update(idx)
                self.pipe.counts.dropped["typed_run:beside_unreadable_batch"] += 1
                self.flagged_typing.append((events[idx[0]].t_ns, w))

    def _redact_joints(self, events: list[Event], runs: list[tuple[list[int], int | None]],
                       remove: set[int], insert: dict[int, Event]) -> None:
        """Findings that span two or more typing runs (bug bash 4: a focus change the recorder
        stamped a few keys late split a typed card into "pay 49" and "29 7314 5028 2736",
        neither a card; a cursor key pressed mid-address split an e-mail). The kept characters
        of all runs are laid end to end; around every boundary between two runs
        :data:`JOINT_CHARS` characters on each side are analysed, and a finding that crosses the
        boundary is removed from every run it touches (one placeholder at its first key; both
        windows flagged for the typed-secret image rule). A layer failure removes the
        characters around that boundary (fail closed)."""
        chars: list[tuple[str, int, int]] = []  # (char, event index, run number) still kept
        starts: list[int] = []
        for r, (idx, _win) in enumerate(runs):
            starts.append(len(chars))
            chars += [(c, i, r) for c, i in self._typed(events, idx)[0] if i not in remove]
        counts = self.pipe.counts
        done: set[frozenset[int]] = set()
        for p in starts[1:]:
            lo, hi = max(0, p - JOINT_CHARS), min(len(chars), p + JOINT_CHARS)
            if lo == p or hi == p:
                continue
            window = chars[lo:hi]
            text = "".join(c for c, _, _ in window)
            try:
                findings = merge_findings(self.pipe.find(text))
            except RedactionError as exc:
                counts.dropped[f"typed_joint:{_layer(exc)}:{_cause(exc)}"] += 1
                srcs = {i for _, i, _ in window}
                remove |= srcs
                for r in {r for _, _, r in window}:
                    self.flagged_typing.append((events[runs[r][0][0]].t_ns, runs[r][1]))
                continue
            for f in findings:
                if not (f.start < p - lo < f.end):
                    continue  # inside one run: that run's own pass decided it
                part = window[f.start:f.end]
                srcs = sorted({i for _, i, _ in part})
                if frozenset(srcs) in done:
                    continue
                done.add(frozenset(srcs))
                self._remove_finding(events, srcs, f.entity, "typed_joint",
                                     [runs[r][1] for r in sorted({r for _, _, r in part})], remove, insert)

    def _redact_edits(self, events: list[Event], runs: list[tuple[list[int], int | None]],
                      remove: set[int], insert: dict[int, Event]) -> None:
        """Findings in the text a line editor holds once cursor keys moved its caret, read
        with every editing model (:data:`.line_edit.PROFILES`: a shell's readline, with its
        history; a GUI text field, where Control+A selects all) (:func:`.line_edit.edited_lines`; bug bash 5: ``echo @example.net``, ArrowLeft ×12,
        ``jon.insert`` spells an address no typing run and no time-ordered joint holds). A
        finding with any key not removed yet has all its keys removed (one placeholder at the
        earliest, Shift presses with it) and every window they were typed into flagged for the
        typed-secret image rule. A layer failure removes the whole line (fail closed)."""
        win = {i: w for idx, w in runs for i in idx}
        chars = {i: c for idx, _w in runs for i in idx if (c := self._char(events[i])) is not None}
        counts = self.pipe.counts
        done: set[frozenset[int]] = set()
        seen: set[tuple[tuple[str, int], ...]] = set()
        for line in (ln for prof in PROFILES for ln in edited_lines(events, chars, prof)):
            if (key := tuple(line)) in seen:
                continue  # both editing models read the same text
            seen.add(key)
            text = "".join(c for c, _ in line)
            try:
                findings = merge_findings(self.pipe.find(text))
            except RedactionError as exc:
                counts.dropped[f"typed_edit:{_layer(exc)}:{_cause(exc)}"] += 1
                srcs = {i for _, i in line}
                remove |= srcs
                for w in {win.get(i) for i in srcs}:
                    self.flagged_typing.append((events[min(srcs)].t_ns, w))
                continue
            for f in findings:
                srcs = sorted({i for _, i in line[f.start:f.end]})
                if frozenset(srcs) in done or set(srcs) <= remove:
                    continue
                done.add(frozenset(srcs))
                self._remove_finding(events, srcs, f.entity, "typed_edit",
                                     list(dict.fromkeys(win.get(i) for i in srcs)), remove, insert)

    def _remove_finding(self, events: list[Event], srcs: list[int], entity: str, item: str,
                        windows: list[int | None], remove: set[int], insert: dict[int, Event]) -> None:
        """Remove the keys ``srcs`` (event indices, ascending) that typed a finding across typing
        runs, with the Shift presses held meanwhile; put one ``<ENTITY>`` placeholder at the
        first (unless one is there); count it under ``item``; flag ``windows`` for the
        typed-secret image rule from its first key on."""
        remove |= set(srcs) | self._case_keys(events, srcs[0], srcs[-1])
        first = events[srcs[0]]
        if srcs[0] not in insert:
            insert[srcs[0]] = TextInput(seq=0, t_ns=first.t_ns, text=f"<{entity}>")
        self.pipe.counts.entities[entity] += 1
        self.pipe.counts.items_out[item] += 1
        self.flagged_typing += [(first.t_ns, w) for w in windows]

    @staticmethod
    def _char(ev: Event) -> str | None:
        if isinstance(ev, TextInput):
            return ev.text
        assert isinstance(ev, KeyDown)
        if ev.key == "Enter":
            return "\n"
        if ev.key == "Tab":
            return "\t"
        return ev.text

    @staticmethod
    def _case_keys(events: list[Event], lo: int, hi: int) -> set[int]:
        """Indices of Shift / CapsLock / AltGraph presses held while a finding (event indices
        ``lo``..``hi``) was typed: pressed at or before ``hi`` and released after ``lo``. They
        go with the finding — left alone they become stray key steps and reveal which of its
        characters were upper-case."""
        found: set[int] = set()
        for j in range(hi, -1, -1):
            ev = events[j]
            if not (isinstance(ev, KeyDown) and ev.key in _CASE_KEYS):
                continue
            rel = next((k for k in range(j + 1, len(events))
                        if isinstance(events[k], KeyUp) and events[k].code == ev.code), len(events))
            if rel > lo:
                found.add(j)
            elif j < lo:
                break
        return found

    def _typed(self, events: list[Event], idx: list[int]) -> tuple[list[tuple[str, int]], list[int]]:
        """The text typing run ``idx`` (event indices) leaves, as ``(char, event index)`` pairs,
        Backspace applied; and the indices of the keys Backspace deleted."""
        buf: list[tuple[str, int]] = []
        deleted: list[int] = []
        for i in idx:
            ev = events[i]
            if isinstance(ev, KeyDown) and ev.key == "Backspace":
                if buf:
                    deleted.append(buf.pop()[1])
                continue
            for ch in self._char(ev) or "":
                buf.append((ch, i))
        return buf, deleted

    def _redact_run(self, events: list[Event], idx: list[int], remove: set[int], insert: dict[int, Event]) -> None:
        buf, deleted = self._typed(events, idx)
        text = "".join(c for c, _ in buf)
        counts = self.pipe.counts
        counts.items_in["typed_run"] += 1
        try:
            findings = merge_findings(self.pipe.find(text)) if text else []
        except RedactionError as exc:
            remove.update(idx)
            counts.dropped[f"typed_run:{_layer(exc)}:{_cause(exc)}"] += 1
            self.flagged_typing.append((events[idx[0]].t_ns, self._focus_win))
            return
        for f in findings:
            self.flagged_typing.append((events[buf[f.start][1]].t_ns, self._focus_win))
        local_remove: set[int] = set()
        local_insert: dict[int, Event] = {}
        for f in findings:
            srcs = sorted({buf[k][1] for k in range(f.start, f.end)})
            lo, hi = srcs[0], srcs[-1]
            srcs_all = set(srcs) | {d for d in deleted if lo <= d <= hi} | self._case_keys(events, lo, hi)
            local_remove |= srcs_all
            first = events[lo]
            local_insert[lo] = TextInput(seq=0, t_ns=first.t_ns, text=f"<{f.entity}>")
        # re-scan: the edited text and the raw stream of what is kept
        kept_edited = []
        for k, (c, src) in enumerate(buf):
            if src in local_insert and (k == 0 or buf[k - 1][1] != src):
                kept_edited.append(local_insert[src].text)  # type: ignore[attr-defined]
            if src not in local_remove:
                kept_edited.append(c)
        raw_parts = []
        for i in idx:
            if i in local_insert:
                raw_parts.append(local_insert[i].text)  # type: ignore[attr-defined]
            if i in local_remove or (isinstance(events[i], KeyDown) and events[i].key == "Backspace"):
                continue
            raw_parts.append(self._char(events[i]) or "")
        raw = "".join(raw_parts)
        try:
            again = self.pipe.find("".join(kept_edited)) + (self.pipe.find(raw) if raw else [])
        except RedactionError as exc:
            remove.update(idx)
            counts.dropped[f"typed_run:{_layer(exc)}:{_cause(exc)}"] += 1
            return
        if again:
            remove.update(idx)
            counts.dropped["typed_run:rescan:found"] += 1
            self.flagged_typing.append((events[idx[0]].t_ns, self._focus_win))
            return
        for f in findings:
            counts.entities[f.entity] += 1
        remove |= local_remove
        insert.update(local_insert)
        counts.items_out["typed_run"] += 1

    # 4. text fields --------------------------------------------------------------------------
    def apply_fields(self, ev: Event) -> Event:
        t = self.pipe.text
        if isinstance(ev, FocusChange):
            return msgspec.structs.replace(ev, title=t(ev.title, "title"), url=t(ev.url, "url"))
        if isinstance(ev, Element):
            attrs = {}
            for k, v in ev.attributes.items():
                r = t(v, "element_attribute")
                if r is not None:
                    attrs[k] = r
            return msgspec.structs.replace(ev, name=t(ev.name, "element_name"), attributes=attrs,
                                           secret=element_is_secret(self.policy, ev))
        if isinstance(ev, Marker) and ev.instruction:
            return msgspec.structs.replace(ev, instruction=t(ev.instruction, "instruction"))
        return ev


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "webp":
        img.save(buf, format="WEBP", lossless=True, method=0)
    else:
        img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def seal_session(
    paths: Paths,
    spool: Spool,
    session_id: str,
    policy: Policy,
    *,
    pipeline: RedactionPipeline | None = None,
    exclusions: Exclusions | None = None,
    replace: bool = False,
    now: dt.datetime | None = None,
) -> SealReport:
    """Seal one raw session into ``<home>/sealed/<session_id>/`` and return its report.

    ``pipeline``: a prepared :class:`RedactionPipeline` (tests inject failing layers; default:
    built from ``policy``); ``exclusions``: the person's exclusions (default: loaded from the
    home); ``replace``: overwrite an existing bundle.

    Raises:
        SessionNotFound: no such raw session. SpoolError: the bundle exists and ``replace`` is
        false. SpoolCorrupt: the raw session cannot be read (nothing is written then).
        AlreadyUploaded: the session was uploaded and acknowledged (:mod:`.uploads`; never
        sealed again, whatever ``replace`` says).
    """
    refuse_if_uploaded(paths, session_id)
    final = sealed_root(paths) / session_id
    if final.exists() and not replace:
        raise SpoolError(f"session {session_id} is already sealed ({final}); use --replace to seal it again")
    own_pipe = pipeline is None
    pipe = pipeline or RedactionPipeline(policy)
    scope = ScopeFilter(policy, exclusions if exclusions is not None else Exclusions.load(paths))
    key = bundle_key(paths)
    reader: SessionReader = spool.open(session_id)
    shape_before = _shape(spool, session_id, reader)
    tmp = sealed_root(paths) / f".{session_id}.sealing-{os.getpid()}"
    try:
        events = sorted(reader.iter_events(skip_corrupt=True), key=sort_key)
        start, tz = _session_clock(reader.manifest)
        s = _Sealer(policy, pipe, scope)
        if reader.skipped and not events:  # nothing decrypts: a wrong key, not damage to keep going past
            first, last, err = reader.skipped[0]
            raise SpoolCorrupt(f"session {session_id}: no batch can be read (batch seq {first}..{last}: {err});"
                               " was the data key replaced?")
        for first, last, _err in reader.skipped:  # damaged batches: the rest is sealed (bug bash 4)
            pipe.counts.dropped["events:batch_unreadable"] += last - first + 1
            s.unreadable.append((first, last))
        n_in = len(events) + sum(last - first + 1 for first, last, _ in reader.skipped)
        frames_in = sum(isinstance(e, Frame) for e in events)
        recorder_gaps = sum(isinstance(e, Marker) and e.name == "private_gap" for e in events)  # kept by apply_scope
        events = s.apply_scope(events, start, tz)

        def load_frame(f: Frame) -> Image.Image | None:
            try:
                im = Image.open(io.BytesIO(reader.read_blob(f.blob)))
                im.load()
                return im
            except (SpoolError, OSError):
                return None

        # secret fields of apps without accessibility, inferred from the stored frames (issue #4)
        ocr, ocr_close = tesseract_ocr(policy.redaction.layer_timeout_s)
        try:
            shown: set[int] = set()
            inferred = infer_secret_fields(events, policy, load_frame, ocr, shown)
        finally:
            ocr_close()
        events = s.apply_secrets(events, inferred, shown)
        events = s.apply_typing(events)
        if tmp.exists():
            shutil.rmtree(tmp)
        sealed_root(paths).mkdir(parents=True, exist_ok=True)
        os.chmod(sealed_root(paths), 0o700)
        manifest = msgspec.structs.replace(
            reader.manifest,
            extra={**reader.manifest.extra, "sealed": "1", "policy_version": str(policy.version),
                   **consent_extra(read_consent(paths))},
        )
        writer = SessionWriter(tmp, key, manifest)
        fmt = policy.redaction.frame_format
        done: dict[int, Frame | None] = {}  # event index -> rewritten Frame, or None if dropped
        windows_masked = 0
        pending: list[tuple[int, Image.Image]] = []
        pending_stream: object = None

        def flush() -> None:
            if not pending:
                return
            outs = pipe.frames_batch([im for _, im in pending], stream=pending_stream,
                                     scale=pending_stream[3])  # type: ignore[index]
            for (i, _), red in zip(pending, outs):
                if red is None:
                    done[i] = None
                    continue
                f = events[i]
                assert isinstance(f, Frame)
                red = _typed_secret_rule(red, f, flagged, bounds_at[i], pipe.counts, typed)
                if red is None:
                    done[i] = None
                    continue
                bars = bars_at.get(i)
                if bars:  # windows whose title needed redaction: their title bars (issue #4 bug bash)
                    fb = f.bounds
                    red = paint_title_bars(red, title_bar_boxes(bars, (fb.x, fb.y, fb.width, fb.height), f.scale))
                data = _encode(red, fmt)
                bid = key.content_id(data)
                writer.put_blob(bid, data, fmt)
                done[i] = msgspec.structs.replace(f, blob=bid, format=fmt, width=red.width, height=red.height)
            pending.clear()

        # Fail closed for typed secrets: the image layer cannot be trusted to find them (at the
        # recorder's default 0.5 scale an xterm's 6x13 bitmap font is 3 px wide and tesseract
        # reads "4111" as "ALLL"), nor to find every copy of one it did read (a terminal shows a
        # typed line twice under `cat`). Every frame grabbed after (or just before, see
        # TYPED_LAG_NS) a flagged value was typed has the window it was typed into blacked out
        # (latest known bounds) or, bounds unknown, is dropped. See _typed_secret_rule.
        flagged = _late_focus(s.flagged_typing, events)
        win_bounds: dict[int, Rect] = {}
        bounds_at: dict[int, dict[int, Rect]] = {}
        typed = {"masked": 0, "dropped": 0}
        for i, ev in enumerate(events):
            if isinstance(ev, FocusChange) and ev.window_id is not None and ev.bounds is not None:
                win_bounds[ev.window_id] = ev.bounds
            if isinstance(ev, Frame):
                bounds_at[i] = dict(win_bounds)
        fields_done, bars_at = _title_bars(events, s)
        for i, ev in enumerate(events):
            if not isinstance(ev, Frame):
                continue
            try:
                img = Image.open(io.BytesIO(reader.read_blob(ev.blob)))
                img.load()
            except (SpoolError, OSError) as exc:
                pipe.counts.items_in["frame"] += 1
                pipe.counts.dropped[f"frame:decode:{type(exc).__name__}"] += 1
                done[i] = None
                continue
            masks = s.frame_masks.get(ev.seq)
            if masks:  # excluded windows seen earlier in the session, visible or not: paint them
                img = fill_boxes(img, [(int((m.x - ev.bounds.x) * ev.scale), int((m.y - ev.bounds.y) * ev.scale),
                                        math.ceil((m.x + m.width - ev.bounds.x) * ev.scale),
                                        math.ceil((m.y + m.height - ev.bounds.y) * ev.scale)) for m in masks])
                windows_masked += 1
            stream = (ev.monitor, img.width, img.height, ev.scale)
            if pending and (stream != pending_stream or len(pending) >= FRAME_BATCH):
                flush()
            pending_stream = stream
            pending.append((i, img))
        flush()
        out: list[Event] = []
        seq = 0
        frames_out = 0
        for i, ev in enumerate(events):
            if isinstance(ev, Frame):
                new_ev = done.get(i)
                if new_ev is None:
                    continue
                ev = new_ev
                frames_out += 1
            else:
                ev = fields_done[i] if i in fields_done else s.apply_fields(ev)
            out.append(msgspec.structs.replace(ev, seq=seq))
            seq += 1
            if len(out) >= BATCH:
                writer.append(out)
                out = []
        writer.append(out)
        writer.close(duration_ns=reader.manifest.duration_ns)
        sealed_utc = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        rep = SealReport(
            session_id=session_id, bundle=str(final), policy_version=policy.version, sealed_utc=sealed_utc,
            events_in=n_in, events_out=seq, frames_in=frames_in, frames_out=frames_out,
            private_gaps=s.gaps, recorder_gaps=recorder_gaps, windows_masked=windows_masked, typed_secret_masked=typed["masked"],
            typed_secret_dropped=typed["dropped"], scope_dropped=dict(s.scope_dropped),
            secret_keys_dropped=dict(s.secrets.counts), counts=pipe.counts.to_dict(),
        )
        fd = os.open(tmp / REPORT, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, key.encrypt(rep.to_json(), report_aad(session_id)))
        finally:
            os.close(fd)
        fd = os.open(tmp / MARKER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, MARKER_TEXT.encode())
        finally:
            os.close(fd)
        _private_tree(tmp)
        if _shape(spool, session_id) != shape_before:  # (-1, -1, -1) once it is gone
            # deleted or forgotten while this seal ran (bug bash 5: the finished seal put back a
            # bundle the person had just removed, unlisted but built and uploaded)
            raise SessionNotFound(f"session {session_id} was deleted or changed (review delete / forget) while"
                                  " it was being sealed; this bundle is not kept — seal it again if it still exists")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return rep
    finally:
        reader.close()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if own_pipe:
            pipe.close()


def _title_bars(events: list[Event], s: _Sealer) -> tuple[dict[int, Event], dict[int, list[tuple[float, float, float, float]]]]:
    """Window titles the text layers change, and the title bars to paint because of them.

    Returns ``(fields_done, bars_at)``: every :class:`FocusChange` (by event index) with its
    fields already redacted (:meth:`_Sealer.apply_fields`, each redacted once), and for each
    frame index the WM frames ``(x, y, width, height)`` (desktop pixels) of the windows whose
    title was changed (or dropped) there. A window's title bar shows its title in frames too,
    where OCR of small bold text leaves parts readable between its boxes (bug bash, issue #4:
    an xterm titled with a token at scale 0.5), so the whole strip is painted
    (:func:`~.redact_image.title_bar_boxes`): from the window's focus change with such a title
    until one with a clean title or until another window gets focus (is raised) over its whole
    title bar (:func:`_covers`; no event says when it is uncovered again without getting focus
    — closing the covering window usually focuses it), at its latest known bounds; a window
    whose FIRST known title
    needed redaction is painted from the session's start at its first bounds (its title bar
    was on screen before it got focus, and no event names an unfocused window's title)."""
    Rect4 = tuple[float, float, float, float]
    fields_done: dict[int, Event] = {}
    flagged: dict[int, bool] = {}  # event index -> the title needed redaction
    cur: dict[int, Rect4 | None] = {}  # window id -> frame bounds to paint now, or None
    for i, ev in enumerate(events):
        if isinstance(ev, FocusChange):
            red = s.apply_fields(ev)
            assert isinstance(red, FocusChange)
            fields_done[i] = red
            flagged[i] = ev.title is not None and red.title != ev.title
            if ev.window_id is not None and ev.window_id not in cur:
                b = ev.bounds
                cur[ev.window_id] = (b.x, b.y, b.width, b.height) if flagged[i] and b is not None else None
    bars_at: dict[int, list[Rect4]] = {}
    last: dict[int, Rect4] = {wid: r for wid, r in cur.items() if r is not None}
    for i, ev in enumerate(events):
        if isinstance(ev, FocusChange) and ev.window_id is not None:
            b = ev.bounds
            rect = (b.x, b.y, b.width, b.height) if b is not None else last.get(ev.window_id)
            if rect is not None:
                last[ev.window_id] = rect
                for wid, r in list(cur.items()):  # raised over another window's whole title bar: hidden
                    if wid != ev.window_id and r is not None and _covers(rect, r):
                        cur[wid] = None
            cur[ev.window_id] = rect if flagged[i] else None
        elif isinstance(ev, Frame):
            bars = [r for r in cur.values() if r is not None]
            if bars:
                bars_at[i] = bars
    return fields_done, bars_at


def _covers(top: tuple[float, float, float, float], other: tuple[float, float, float, float]) -> bool:
    """True when the window frame ``top`` (``(x, y, width, height)``, desktop pixels) covers the
    whole title-bar strip of ``other`` (its top :data:`~.redact_image.TITLE_BAR_PX` pixels)."""
    x, y, w, h = top
    ox, oy, ow, oh = other
    return x <= ox and y <= oy and ox + ow <= x + w and oy + min(oh, TITLE_BAR_PX) <= y + h


#: Characters on each side of a boundary between two typing runs that
#: :meth:`_Sealer._redact_joints` analyses together: longer than any structured value the text
#: layers find in one piece (an IBAN has at most 34 characters plus spaces, a JWT is matched
#: as one token and a 64-character window holds its header).
JOINT_CHARS = 64
#: How long before a frame's grab a flagged value's first key may carry its ``t_ns`` and still
#: count as possibly shown in it, in nanoseconds (2 s). A key's ``t_ns`` is when the recorder's
#: input thread read it from the X RECORD connection (capture/x11.py), not when the X server
#: delivered it to the application, which may already have painted it into a frame grabbed in
#: between: under load that lag reaches hundreds of milliseconds. A frame grabbed up to this much
#: earlier than the key is treated as showing the value (fail closed; the cost is a few frames
#: of the window blacked out before typing began).
TYPED_LAG_NS = 2_000_000_000
#: How long after the first key of a flagged value a focus change may come and still count as
#: the window that value went to (:func:`_late_focus`), when the keys carry a known window:
#: 0.5 s — the recorder stamped a focus change 130 ms after keys the X server had already sent
#: to the new window (bug bash 4); longer would black out windows a person switches to just
#: after typing a secret elsewhere.
FOCUS_LAG_NS = 500_000_000


def _shape(spool: Spool, session_id: str, reader: SessionReader | None = None) -> tuple[int, int, int]:
    """``(events, batches, blobs)`` of a raw session: changes when ``forget`` cuts it."""
    if reader is not None:
        st = reader.stats()
        return st.events, st.batches, st.blobs
    try:
        with spool.open(session_id) as r:
            st = r.stats()
    except SpoolError:
        return -1, -1, -1
    return st.events, st.batches, st.blobs


def _late_focus(flagged: list[tuple[int, int | None]], events: list[Event]) -> list[tuple[int, int | None]]:
    """``flagged`` (see :func:`_typed_secret_rule`) sorted by time, each entry also standing for
    every window a ``FocusChange`` names up to :data:`FOCUS_LAG_NS` after its first key (up to
    :data:`TYPED_LAG_NS` for an entry with no window): the recorder stamps a focus change when
    its thread learns of it, so keys typed right after a focus switch can carry the previous
    (or no) window (bug bash 4: "pay 49" carried no window, the rest of the card the xterm,
    whose focus change came 130 ms after the first key). An entry with no window keeps that
    only if no focus change follows in time (then :func:`_typed_secret_rule` drops the
    frames: position unknown)."""
    focus = [(ev.t_ns, ev.window_id) for ev in events if isinstance(ev, FocusChange) and ev.window_id is not None]
    out: list[tuple[int, int | None]] = []
    for t, w in flagged:
        lag = TYPED_LAG_NS if w is None else FOCUS_LAG_NS
        later = list(dict.fromkeys(wid for ft, wid in focus if t < ft <= t + lag))
        wins: list[int | None] = ([w] if w is not None or not later else []) + [x for x in later if x != w]
        out += [(t, x) for x in wins]
    return sorted(out, key=lambda x: x[0])


def _typed_secret_rule(img: Image.Image, f: Frame, flagged: list[tuple[int, int | None]],
                       bounds: dict[int, Rect], counts: RedactionCounts, tally: dict[str, int]) -> Image.Image | None:
    """Fail-closed image rule for typed secrets (tester issue: at ``--frame-scale 0.5`` OCR read
    nothing in an xterm and every typed value stayed readable).

    ``flagged``: ``(t_ns, window_id)`` of every finding in typed text and every run dropped
    whole; every one typed before ``f.captured_t_ns + TYPED_LAG_NS`` may be on
    screen, and the window it was typed into is painted black wherever it may be: its latest
    ``FocusChange.bounds`` (``bounds``, per window id) and every position ``f.windows`` (the
    recorder's window list at the grab) gives for it, desktop pixels mapped to image pixels
    with ``Frame.bounds`` / ``Frame.scale``. OCR finding and painting the value does not lift this:
    the value may be on screen more than once (a terminal under ``cat`` shows each typed line
    twice) and OCR boxing one copy says nothing about a copy it could not read (issue #4: a full
    suite run read the second copy of a typed card in two sealed frames after OCR had located
    the first). When such a window's position is unknown the frame is dropped (counted
    ``frame:typed_secret:window_unknown``). The rule never expires: a value typed once may stay
    on screen (terminal scroll-back). Returns the image (painted when needed) or ``None`` to
    drop; ``tally`` counts ``masked`` / ``dropped`` frames."""
    wins = {w for t, w in flagged if t - TYPED_LAG_NS <= f.captured_t_ns}
    if not wins:
        return img
    # where each window may be in this frame: every position the recorder's window list gave
    # for it at the grab (Frame.windows: it may have moved since its last focus change — bug
    # bash 4 moved a terminal after typing and the black box stayed behind), and its last
    # focus bounds as well (fail closed if the two name it differently)
    seen: dict[int, list[Rect]] = {}
    for fw in f.windows:
        seen.setdefault(fw.window, []).append(fw.bounds)
    rects: list[Rect] = []
    for w in wins:
        at = (([bounds[w]] if w in bounds else []) + seen.get(w, [])) if w is not None else []
        if not at:
            counts.dropped["frame:typed_secret:window_unknown"] += 1
            counts.items_out["frame"] -= 1
            tally["dropped"] += 1
            return None
        rects += at
    boxes = []
    for b in dict.fromkeys(rects):
        boxes.append((int((b.x - f.bounds.x) * f.scale), int((b.y - f.bounds.y) * f.scale),
                      math.ceil((b.x + b.width - f.bounds.x) * f.scale), math.ceil((b.y + b.height - f.bounds.y) * f.scale)))
    tally["masked"] += 1
    return fill_boxes(img, boxes)


def _private_tree(root: Path) -> None:
    """Make every folder under ``root`` (and itself) 0700 and every file 0600: a bundle holds
    redacted personal data, readable by its owner only (the spool's blob shard folders are
    created with the process umask)."""
    os.chmod(root, 0o700)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o700)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o600)


def sessions_to_seal(paths: Paths, spool: Spool, ids: Sequence[str] = ()) -> list[str]:
    """``ids`` if given; else every raw session that ended cleanly, has no bundle yet and was
    not uploaded (no tombstone, :mod:`.uploads`)."""
    if ids:
        return list(ids)
    out = []
    uploaded = uploaded_ids(paths)
    for sid in spool.session_ids():
        if (sealed_root(paths) / sid / MARKER).exists() or sid in uploaded:
            continue
        with spool.open(sid) as r:
            if r.manifest.ended:
                out.append(sid)
    return out


def seal_many(paths: Paths, spool: Spool, ids: Iterable[str], policy: Policy, *, replace: bool = False) -> list[SealReport]:
    """Seal several sessions with one shared pipeline (Presidio is built once). Pipeline counts
    are reset per session. Stale temporary folders of killed seals are removed first
    (:func:`clean_stale_sealing`)."""
    clean_stale_sealing(paths)
    pipe = RedactionPipeline(policy)
    try:
        reports = []
        for sid in ids:
            pipe.counts = type(pipe.counts)()
            if pipe.frames is not None:
                pipe.frames._prev.clear()
            reports.append(seal_session(paths, spool, sid, policy, pipeline=pipe, replace=replace))
        return reports
    finally:
        pipe.close()
