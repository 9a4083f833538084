"""Secret fields: which keystrokes must never be stored (DESIGN.md §8.4).

A :class:`SecretKeyFilter` follows the focus as the event stream goes by and answers, for each
key event, whether it must be dropped:

- The focused element is a secret field when an ``Element`` event says so: ``secret=True``
  (set by a capture backend that knows), an AT-SPI role in ``policy.secrets.roles`` (``"password
  text"``), a DOM ``type`` in ``dom_types`` (``password``), a DOM ``autocomplete`` token in
  ``dom_autocomplete`` (``one-time-code``, ``cc-number``, ``cc-csc``, ``current-password`` …,
  from the WHATWG autofill field names), or an element name matching ``name_patterns``.
- In a secret field every key event that could reveal content is dropped: keys that produce
  text, Backspace/Delete (they reveal the length), ``text_input``. Kept: Tab, Enter, Escape
  (navigation) and hotkeys with Control / Alt / Meta / Super (e.g. Ctrl+V reveals nothing).
- When the focused field is unknown (no ``Element`` since the last ``FocusChange``) and the
  policy is ``strict``, printable keystrokes (those with ``text``) are dropped as well.

Recorder use (per event, before it is queued for storage)::

    f = SecretKeyFilter(policy)
    f.observe(event)            # FocusChange / Element update the state
    if f.should_drop(event):    # KeyDown / KeyUp / TextInput
        ...                     # do not store; f.counts says how many and why

The same filter runs again at seal time over the stored events (defence in depth).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from ..schema.events import Element, FocusChange, KeyEvent, TextInput
from .policy import Policy

#: Keys kept even inside a secret field: they navigate and reveal nothing typed.
NAV_KEYS = frozenset({"Tab", "Enter", "Escape"})
#: Modifiers that make a key a hotkey rather than typing.
HOTKEY_MODIFIERS = frozenset({"Control", "Alt", "Meta", "Super"})


def element_is_secret(policy: Policy, element: Any) -> bool:
    """True if ``element`` (an :class:`~demotrace.schema.Element` or anything with ``secret``,
    ``role``, ``name`` and ``attributes``) is a password / one-time-code / card field by the
    rules above."""
    sp = policy.secrets
    if getattr(element, "secret", False):
        return True
    role = (getattr(element, "role", None) or "").lower()
    if role and role in sp.roles:
        return True
    attrs = {k.lower(): str(v).lower() for k, v in (getattr(element, "attributes", None) or {}).items()}
    if attrs.get("type") in sp.dom_types:
        return True
    ac = set(attrs.get("autocomplete", "").split())
    if ac & set(sp.dom_autocomplete):
        return True
    names = [getattr(element, "name", None) or "", attrs.get("name", ""), attrs.get("id", ""),
             attrs.get("aria-label", ""), attrs.get("placeholder", "")]
    return any(n and re.search(p, n) for p in sp.name_patterns for n in names)


class SecretKeyFilter:
    """Stateful filter over one session's event stream (see module doc).

    ``state`` is ``"unknown"`` (no element seen since the last focus change), ``"secret"`` or
    ``"plain"``. ``counts`` maps a reason (``"secret_field"``, ``"strict_unknown_field"``) to the
    number of key / text events dropped for it.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.strict = policy.secrets.strictness == "strict"
        self.state = "unknown"
        self.counts: Counter[str] = Counter()

    def observe(self, event: Any) -> None:
        """Update the focus state from a ``FocusChange`` (→ unknown) or an ``Element`` with focus
        (→ secret / plain). Other events are ignored."""
        if isinstance(event, FocusChange):
            self.state = "unknown"
        elif isinstance(event, Element):
            self.state = "secret" if element_is_secret(self.policy, event) else "plain"

    def drop_reason(self, event: Any) -> str | None:
        """The reason ``event`` must be dropped, or ``None`` to keep it. Only key and text events
        are ever dropped."""
        if isinstance(event, TextInput):
            if self.state == "secret":
                return "secret_field"
            if self.state == "unknown" and self.strict:
                return "strict_unknown_field"
            return None
        if not isinstance(event, KeyEvent):
            return None
        if set(event.modifiers) & HOTKEY_MODIFIERS and not event.text:
            return None
        if self.state == "secret":
            if event.key in NAV_KEYS:
                return None
            return "secret_field"
        if self.state == "unknown" and self.strict and event.text:
            return "strict_unknown_field"
        return None

    def should_drop(self, event: Any) -> bool:
        """``observe`` the event, then return True (and count it) if it must not be stored."""
        self.observe(event)
        reason = self.drop_reason(event)
        if reason is not None:
            self.counts[reason] += 1
            return True
        return False
