"""The text a one-line editor holds while keys move its caret: what a person's typing spelled
once cursor keys put later keys *between* earlier ones.

Why: the seal analyses typing runs (keys between two caret moves) one by one and laid end to end
in time order. A value typed in pieces with the caret moved between them is in neither: bug bash
5 typed ``echo @example.net``, ArrowLeft ×12, ``jon.insert`` — the screen shows
``echo jon.insert@example.net``, the runs in time order spell ``echo @example.netjon.insert``
and the address stayed in the sealed keystrokes; so did a card typed as its last group, then
Control+A and the first three groups.

Model (GNU readline's default Emacs bindings, which a GUI one-line entry shares for the plain
keys): printable keys and committed ``TextInput`` insert at the caret; ``Backspace`` /
``Delete`` delete before / at it; ``ArrowLeft`` / ``ArrowRight`` (also Control+B / Control+F)
move it one character, with Control or Alt (also Alt+B / Alt+F) one word; ``Home`` / ``End``
(also Control+A / Control+E) to either end; Control+U / Control+K delete before / after it;
Control+W deletes back to the previous space, Control+Backspace the word before it. Control+A is taken as readline's
"start of line", not a GUI entry's "select all": joining more text finds more (fail closed).
Shift held while moving (a selection) is ignored — the caret moves as without it, so typing over
a selection is read as an insertion: again more text joined, not less.

A line ends — its text is handed over and a new, empty line starts — at ``Enter``, ``Tab``, a focus
change, an accessibility ``Element`` event, a pointer press (the caret moves somewhere
unknown), ``PageUp`` / ``PageDown``, ``ArrowUp`` / ``ArrowDown`` when no earlier line of the
window can be recalled, and any other shortcut (Control+C cancels a shell line, Control+V pastes
unknown text). Only lines in which the caret moved (or that were recalled from the history) are
handed over: otherwise the line is one typing run, already analysed alone. A second model,
``"gui"`` (:data:`PROFILES`), reads the same keys as a GUI text field does: Control+A selects
all, Control / Alt letters other than that do not edit; the seal analyses both readings.

Deleted text was typed too: besides the final text of each line, its text just before and just
after each run of deletions is handed over, so a value assembled in pieces and deleted again, or
one that a deletion joined (a stray character removed from its middle) and a later one cut, is
found in the keys that spelled it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ..schema import Element, Event, FocusChange, KeyDown, PointerDown, TextInput

#: Line ends without a caret position to carry over (W3C key values).
#: ``Tab`` completes in a shell and moves to the next field in a form: unknown either way.
LINE_BREAK_KEYS = frozenset({"Enter", "Tab", "ArrowUp", "ArrowDown", "PageUp", "PageDown"})
#: Modifiers that make a key a shortcut (W3C names; Shift and AltGraph only change the level).
_SHORTCUT_MODS = frozenset({"Control", "Alt", "Meta", "Super", "OS", "Hyper"})

Line = list[tuple[str, int]]
"""``(character, index of the event that typed it)`` in on-screen order."""


def _word_left(buf: Line, pos: int) -> int:
    """Readline's backward-word: skip non-word characters, then word characters."""
    while pos > 0 and not buf[pos - 1][0].isalnum():
        pos -= 1
    while pos > 0 and buf[pos - 1][0].isalnum():
        pos -= 1
    return pos


def _space_left(buf: Line, pos: int) -> int:
    """Readline's unix-word-rubout (Control+W) start: skip spaces, then non-spaces."""
    while pos > 0 and buf[pos - 1][0].isspace():
        pos -= 1
    while pos > 0 and not buf[pos - 1][0].isspace():
        pos -= 1
    return pos


def _word_right(buf: Line, pos: int) -> int:
    """Readline's forward-word: skip non-word characters, then word characters."""
    while pos < len(buf) and not buf[pos][0].isalnum():
        pos += 1
    while pos < len(buf) and buf[pos][0].isalnum():
        pos += 1
    return pos


#: Editing models :func:`edited_lines` knows: ``"readline"`` (GNU readline's Emacs bindings, also
#: Tk's entry, where Control+A is "start of line") and ``"gui"`` (a GTK / Chromium / Qt text field:
#: Control+A selects all, so the next key replaces the text; other Control / Alt letters do not
#: edit; no history). Bug bash 6: Chromium's ``qq``, Control+A, ``@example.net``, Home,
#: ``jon.insert`` and Tk's ``@example.net``, Control+W (unbound there), Home, ``jon.insert`` each
#: hold an address no readline reading finds.
PROFILES = ("readline", "gui")


def edited_lines(events: Sequence[Event], chars: dict[int, str] | None = None,
                 profile: str = "readline") -> Iterator[Line]:
    """Yield the text of every line in which the caret moved, as :data:`Line` lists: its text
    before and after each run of deletions, then its final text (consecutive equal states once).

    ``events``: a session's events in order. ``chars``: the text each typing event (index)
    inserts, if the caller has already decided it (the seal's ``Enter`` → ``"\\n"`` etc.);
    default: ``TextInput.text`` and ``KeyDown.text``. ``profile``: one of :data:`PROFILES`. With
    ``"readline"``, ``ArrowUp`` / ``ArrowDown`` (Control+P / Control+N) recall the lines submitted
    with ``Enter`` earlier in the same window, as a shell does (bug bash 6: ``echo 4929 7314 x``,
    Enter, ArrowUp, Backspace, ``5028 2736`` spells a card across two lines), and Control+T
    transposes the characters around the caret. Pure.

    Raises:
        ValueError: an unknown ``profile``.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown line-editing profile {profile!r}; known: {', '.join(PROFILES)}")
    gui = profile == "gui"
    given = chars or {}
    buf: Line = []
    pos = 0
    moved = False
    deleting = False
    selected = False  # gui: everything selected (Control+A): the next edit replaces it
    states: list[Line] = []  # snapshots of this line so far
    window: int | None = None
    history: dict[int | None, list[Line]] = {}  # readline: submitted lines per window
    recalled: int | None = None  # index into this window's history while browsing it

    def snap() -> None:
        if buf and (not states or states[-1] != buf):
            states.append(list(buf))

    def end(submit: bool = False) -> Iterator[Line]:
        nonlocal buf, pos, moved, deleting, selected, recalled
        snap()
        if moved:
            yield from states
        if submit and buf and not gui:
            history.setdefault(window, []).append(list(buf))
        states.clear()
        buf, pos, moved, deleting, selected, recalled = [], 0, False, False, False, None

    def edit(kind: str) -> None:
        """A deletion chain's first and last states are kept (a deletion can join two halves)."""
        nonlocal deleting
        if (kind == "delete") != deleting:
            snap()
        deleting = kind == "delete"

    def unselect(replace: bool) -> None:
        """gui: an edit while all is selected first removes all of it."""
        nonlocal selected
        if selected:
            selected = False
            if replace and buf:
                edit("delete")
                buf.clear()

    def delete(lo: int, hi: int) -> None:
        nonlocal pos
        if selected:
            unselect(True)
            pos = 0
            return
        lo, hi = max(0, lo), min(len(buf), hi)
        if lo >= hi:
            return
        edit("delete")
        del buf[lo:hi]
        pos = lo

    def insert(i: int, text: str | None) -> None:
        nonlocal pos
        if not text:
            return
        if selected:
            unselect(True)
            pos = 0
        edit("insert")
        for ch in text:
            buf.insert(pos, (ch, i))
            pos += 1

    def move(to: int) -> None:
        nonlocal pos, moved
        unselect(False)
        edit("move")
        pos, moved = max(0, min(len(buf), to)), True

    def recall(step: int) -> bool:
        """readline: replace the line with an earlier (-1) / later (+1) submitted one."""
        nonlocal buf, pos, moved, recalled
        past = history.get(window, [])
        if not past:
            return False
        at = (len(past) if recalled is None else recalled) + step
        if at < 0:
            at = 0
        snap()
        if at >= len(past):
            buf, recalled = [], None
        else:
            buf, recalled = list(past[at]), at
        pos, moved = len(buf), True
        return True

    for i, ev in enumerate(events):
        if isinstance(ev, (FocusChange, Element, PointerDown)):
            yield from end()
            if isinstance(ev, FocusChange):
                window = ev.window_id
            continue
        if isinstance(ev, TextInput):
            insert(i, given.get(i, ev.text))
            continue
        if not isinstance(ev, KeyDown):
            continue
        mods = set(ev.modifiers) & _SHORTCUT_MODS
        key = ev.key.lower() if len(ev.key) == 1 else ev.key
        ctrl, alt = mods == {"Control"}, mods == {"Alt"}
        emacs = not gui  # Control / Alt letters edit (readline, Tk)
        if not gui and (ev.key == "ArrowUp" and not mods or ctrl and key == "p") and recall(-1):
            continue
        if not gui and (ev.key == "ArrowDown" and not mods or ctrl and key == "n") and recall(+1):
            continue
        if ev.key in LINE_BREAK_KEYS and not mods:
            yield from end(submit=ev.key == "Enter")
        elif ev.key == "ArrowLeft" and not mods or emacs and ctrl and key == "b":
            move(0 if selected else pos - 1)
        elif ev.key == "ArrowRight" and not mods or emacs and ctrl and key == "f":
            move(len(buf) if selected else pos + 1)
        elif ev.key == "ArrowLeft" and (ctrl or alt) or emacs and alt and key == "b":
            move(_word_left(buf, pos))
        elif ev.key == "ArrowRight" and (ctrl or alt) or emacs and alt and key == "f":
            move(_word_right(buf, pos))
        elif ev.key == "Home" and not mods or emacs and ctrl and key == "a":
            move(0)
        elif ev.key == "End" and not mods or emacs and ctrl and key == "e":
            move(len(buf))
        elif gui and ctrl and key == "a":
            selected, moved = bool(buf), True
        elif ev.key == "Backspace" and not mods or emacs and ctrl and key == "h":
            delete(pos - 1, pos)
        elif ev.key == "Delete" and not mods or emacs and ctrl and key == "d":
            delete(pos, pos + 1)
        elif emacs and ctrl and key == "u":
            delete(0, pos)
        elif emacs and ctrl and key == "k":
            delete(pos, len(buf))
        elif emacs and ctrl and key == "w":
            delete(_space_left(buf, pos), pos)
        elif ctrl and ev.key == "Backspace":
            delete(_word_left(buf, pos), pos)
        elif emacs and ctrl and key == "t":
            if pos > 0 and len(buf) >= 2:
                at = pos if pos < len(buf) else pos - 1
                edit("insert")
                buf[at - 1], buf[at] = buf[at], buf[at - 1]
                pos, moved = at + 1, True
        elif mods and not gui:
            yield from end()
        elif mods:
            continue  # gui: other shortcuts do not edit the field's text
        else:
            insert(i, given.get(i, ev.text))
    yield from end()
