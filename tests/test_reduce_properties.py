"""Property tests of the reducer (hypothesis): no pointer_down lost or used twice, actions in
time order, every source seq exists in the input — for arbitrary, also malformed, streams
(unpaired presses / releases, out-of-order arrival, backwards clock jumps)."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from demotrace.build import BuildSettings, reduce_events
from demotrace.schema import (
    FocusChange, KeyDown, KeyUp, Marker, PointerDown, PointerMove, PointerUp, TextInput, Wheel,
)

MS = 1_000_000
KEYS = [("a", "KeyA", "a"), ("B", "KeyB", "B"), ("Shift", "ShiftLeft", None), ("Control", "ControlLeft", None),
        ("Alt", "AltLeft", None), ("Enter", "Enter", None), ("Backspace", "Backspace", None),
        ("ArrowLeft", "ArrowLeft", None), ("Dead", "Quote", None), ("Process", "KeyN", None),
        ("\x03", "KeyC", None), ("Meta", "MetaLeft", None)]

step = st.one_of(
    st.tuples(st.just("move"), st.floats(0, 60), st.floats(0, 60)),
    st.tuples(st.just("down"), st.sampled_from(["left", "right"]), st.floats(0, 60), st.floats(0, 60)),
    st.tuples(st.just("up"), st.sampled_from(["left", "right"]), st.floats(0, 60), st.floats(0, 60)),
    st.tuples(st.just("wheel"), st.floats(-3, 3), st.sampled_from(["tick", "pixel"])),
    st.tuples(st.just("kd"), st.sampled_from(KEYS), st.booleans()),
    st.tuples(st.just("ku"), st.sampled_from(KEYS)),
    st.tuples(st.just("text"), st.sampled_from(["é", "你好", "x"])),
    st.tuples(st.just("focus"), st.integers(1, 3)),
    st.tuples(st.just("marker"), st.sampled_from(["pause", "resume", "task_start", "task_end"])),
)
# time advance per event (ms): mostly small, sometimes long, sometimes backwards (out of order /
# clock jump)
dt = st.one_of(st.integers(0, 300), st.integers(300, 3000), st.integers(-8000, -1))


@st.composite
def streams(draw):
    items = draw(st.lists(st.tuples(step, dt), max_size=120))
    events = []
    t = 10_000 * MS
    for i, (s, d) in enumerate(items):
        t = max(0, t + d * MS)
        kind = s[0]
        c = dict(seq=i, t_ns=t)
        if kind == "move":
            events.append(PointerMove(x=s[1], y=s[2], **c))
        elif kind == "down":
            events.append(PointerDown(button=s[1], x=s[2], y=s[3], **c))
        elif kind == "up":
            events.append(PointerUp(button=s[1], x=s[2], y=s[3], **c))
        elif kind == "wheel":
            events.append(Wheel(x=1, y=1, dx=0, dy=s[1], unit=s[2], **c))
        elif kind == "kd":
            k, code, text = s[1]
            events.append(KeyDown(key=k, code=code, text=text, is_repeat=s[2], **c))
        elif kind == "ku":
            k, code, _ = s[1]
            events.append(KeyUp(key=k, code=code, **c))
        elif kind == "text":
            events.append(TextInput(text=s[1], **c))
        elif kind == "focus":
            events.append(FocusChange(window_id=s[1], **c))
        else:
            events.append(Marker(name=s[1], **c))
    return events


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.sampled_from([1, 2, 3]))
def test_reducer_invariants(events, max_count):
    acts = list(reduce_events(events, BuildSettings(max_click_count=max_count, clock_jump_ns=5000 * MS)))
    seqs = {e.seq for e in events}
    used = Counter(s for a in acts for s in a.source_seqs)
    # every action's source events exist, and no event is used twice
    assert set(used) <= seqs
    assert all(n == 1 for n in used.values())
    # no pointer_down lost: each one is in exactly one action
    downs = {e.seq for e in events if isinstance(e, PointerDown)}
    assert downs <= set(used)
    ups = {e.seq for e in events if isinstance(e, PointerUp)}
    assert all(used[s] <= 1 for s in ups)
    # actions in time order, each with t_start <= t_end
    starts = [a.t_start_ns for a in acts]
    assert starts == sorted(starts)
    assert all(a.t_start_ns <= a.t_end_ns for a in acts)
    for a in acts:
        if a.type == "click":
            assert 1 <= a.count <= max_count
