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
unknown), ``ArrowUp`` / ``ArrowDown`` / ``PageUp`` / ``PageDown`` (history or another line:
unknown text), and any other shortcut (Control+C cancels a shell line, Control+V pastes
unknown text). Only lines in which the caret moved are handed over: without a caret move the
line is one typing run, already analysed alone.

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


def edited_lines(events: Sequence[Event], chars: dict[int, str] | None = None) -> Iterator[Line]:
    """Yield the text of every line in which the caret moved, as :data:`Line` lists: its text
    before and after each run of deletions, then its final text (consecutive equal states once).

    ``events``: a session's events in order. ``chars``: the text each typing event (index)
    inserts, if the caller has already decided it (the seal's ``Enter`` → ``"\\n"`` etc.);
    default: ``TextInput.text`` and ``KeyDown.text``. Pure; raises nothing.
    """
    buf: Line = []
    pos = 0
    moved = False
    deleting = False
    states: list[Line] = []  # snapshots of this line so far

    def snap() -> None:
        if buf and (not states or states[-1] != buf):
            states.append(list(buf))

    def end() -> Iterator[Line]:
        nonlocal buf, pos, moved, deleting
        snap()
        if moved:
            yield from states
        states.clear()
        buf, pos, moved, deleting = [], 0, False, False

    def edit(kind: str) -> None:
        """A deletion chain's first and last states are kept (a deletion can join two halves)."""
        nonlocal deleting
        if (kind == "delete") != deleting:
            snap()
        deleting = kind == "delete"

    def delete(lo: int, hi: int) -> None:
        nonlocal pos
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
        edit("insert")
        for ch in text:
            buf.insert(pos, (ch, i))
            pos += 1

    def move(to: int) -> None:
        nonlocal pos, moved
        edit("move")
        pos, moved = to, True

    for i, ev in enumerate(events):
        if isinstance(ev, (FocusChange, Element, PointerDown)):
            yield from end()
            continue
        if isinstance(ev, TextInput):
            insert(i, chars.get(i, ev.text) if chars is not None else ev.text)
            continue
        if not isinstance(ev, KeyDown):
            continue
        mods = set(ev.modifiers) & _SHORTCUT_MODS
        key = ev.key.lower() if len(ev.key) == 1 else ev.key
        ctrl, alt = mods == {"Control"}, mods == {"Alt"}
        if ev.key in LINE_BREAK_KEYS and not mods:
            yield from end()
        elif ev.key == "ArrowLeft" and not mods or ctrl and key == "b":
            move(max(0, pos - 1))
        elif ev.key == "ArrowRight" and not mods or ctrl and key == "f":
            move(min(len(buf), pos + 1))
        elif ev.key == "ArrowLeft" and (ctrl or alt) or alt and key == "b":
            move(_word_left(buf, pos))
        elif ev.key == "ArrowRight" and (ctrl or alt) or alt and key == "f":
            move(_word_right(buf, pos))
        elif ev.key == "Home" and not mods or ctrl and key == "a":
            move(0)
        elif ev.key == "End" and not mods or ctrl and key == "e":
            move(len(buf))
        elif ev.key == "Backspace" and not mods or ctrl and key == "h":
            delete(pos - 1, pos)
        elif ev.key == "Delete" and not mods or ctrl and key == "d":
            delete(pos, pos + 1)
        elif ctrl and key == "u":
            delete(0, pos)
        elif ctrl and key == "k":
            delete(pos, len(buf))
        elif ctrl and key == "w":
            delete(_space_left(buf, pos), pos)
        elif ctrl and ev.key == "Backspace":
            delete(_word_left(buf, pos), pos)
        elif mods:
            yield from end()
        else:
            insert(i, chars.get(i, ev.text) if chars is not None else ev.text)
    yield from end()
