"""Capture scope: is this focused context allowed, or excluded (and why)?

Rules, in order (DESIGN.md §8.3; the first that matches decides):

1. The person's own exclusions (``<home>/exclusions.json``, edited with ``demotrace exclusions
   add|list|remove``; apps may be added before they were ever seen) → excluded.
2. The policy's deny-list categories (password managers, banking, health, HR, personal
   messaging, remote desktops, private / incognito browsing) by app, title regex or URL domain
   → excluded.
3. Outside every configured time window → excluded.
4. An allow-list is set and the context matches none of it → excluded.
5. Otherwise allowed.

Matching: app names compare case-insensitively against the WM_CLASS class (``app_id``) and the
executable's base name (``exe``), with ``fnmatch`` wildcards. URL domains match the host and its
sub-domains (``example.com`` matches ``mail.example.com``); ``*.bank`` matches any host ending in
``.bank``. Unknown fields (``None``) match nothing — except that an allow-list never admits an
unknown context (fail closed).

How the recorder uses it: on every ``FocusChange`` it calls :meth:`ScopeFilter.decide_focus`;
while the decision is ``excluded`` it stores no input and no frame, and when the excluded period
ends it writes one ``Marker(name="private_gap", reason=decision.reason, duration_ns=…)``. For
masking unfocused excluded windows in a frame, :meth:`ScopeFilter.excluded_rects` returns the
rectangles to paint before encoding.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..paths import Paths
from ..schema.events import FocusChange, Rect
from .policy import Policy

EXCLUSIONS_FILE = "exclusions.json"
ExclusionKind = Literal["app", "title", "domain"]
_KINDS = ("app", "title", "domain")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class ScopeDecision:
    """``allowed`` (bool) and, when excluded, ``reason``: a short machine-readable cause such as
    ``"deny:password_manager:app"``, ``"exclusion:domain"``, ``"time_window"`` or
    ``"not_in_allow_list"`` (it is what the ``private_gap`` marker stores; it never contains the
    title or URL itself)."""

    allowed: bool
    reason: str | None = None

    @classmethod
    def allow(cls) -> "ScopeDecision":
        """An allowed decision."""
        return cls(True, None)

    @classmethod
    def excluded(cls, reason: str) -> "ScopeDecision":
        """An excluded decision with ``reason``."""
        return cls(False, reason)


@dataclass(frozen=True)
class Exclusion:
    """One person-made exclusion: ``kind`` ("app" | "title" | "domain"), ``value`` (app name
    with optional wildcards; case-insensitive title substring; domain), ``added_utc``."""

    kind: str
    value: str
    added_utc: str


class Exclusions:
    """The person's exclusion list, stored as JSON in ``<home>/exclusions.json`` (mode 0600)."""

    def __init__(self, paths: Paths | None, items: Iterable[Exclusion] = ()) -> None:
        self.paths = paths
        self.items: list[Exclusion] = list(items)

    @classmethod
    def load(cls, paths: Paths) -> "Exclusions":
        """Read the file (absent = empty list).

        Raises:
            ConfigError: the file exists but is not a valid exclusion list (names the entry).
        """
        f = paths.home / EXCLUSIONS_FILE
        if not f.exists():
            return cls(paths)
        try:
            data = json.loads(f.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{f}: unreadable exclusion list: {exc}") from exc
        items = []
        for i, d in enumerate(data if isinstance(data, list) else [None]):
            if not isinstance(d, dict) or d.get("kind") not in _KINDS or not isinstance(d.get("value"), str):
                raise ConfigError(f"{f}: entry {i} must be {{kind: app|title|domain, value: str}}")
            items.append(Exclusion(d["kind"], d["value"], str(d.get("added_utc", ""))))
        return cls(paths, items)

    def save(self) -> None:
        """Write the list atomically with mode 0600."""
        if self.paths is None:
            raise ConfigError("this exclusion list has no home to be saved in")
        self.paths.ensure()
        f = self.paths.home / EXCLUSIONS_FILE
        tmp = f.with_name(f".{EXCLUSIONS_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps([e.__dict__ for e in self.items], indent=1).encode())
        finally:
            os.close(fd)
        os.replace(tmp, f)

    def add(self, kind: str, value: str, now: dt.datetime | None = None) -> Exclusion:
        """Add an exclusion (idempotent: an equal kind+value is not added twice) and return it.

        Raises:
            ConfigError: unknown ``kind`` or empty ``value``.
        """
        if kind not in _KINDS:
            raise ConfigError(f"exclusion kind must be one of {', '.join(_KINDS)}, got {kind!r}")
        value = value.strip()
        if not value:
            raise ConfigError("exclusion value must not be empty")
        if kind == "domain":
            value = _host_of(value) or value.lower()
        for e in self.items:
            if e.kind == kind and e.value.lower() == value.lower():
                return e
        now = now or dt.datetime.now(dt.timezone.utc)
        e = Exclusion(kind, value, now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.items.append(e)
        return e

    def remove(self, kind: str, value: str) -> bool:
        """Remove a matching exclusion (case-insensitive value); True if one was removed."""
        before = len(self.items)
        v = value.strip().lower()
        if kind == "domain":
            v = (_host_of(v) or v).lower()
        self.items = [e for e in self.items if not (e.kind == kind and e.value.lower() == v)]
        return len(self.items) != before


@lru_cache(maxsize=512)
def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _host_of(url_or_host: str | None) -> str | None:
    if not url_or_host:
        return None
    s = url_or_host.strip()
    if "://" not in s:
        s = "//" + s
    try:
        host = urlsplit(s).hostname
    except ValueError:
        return None
    return host.lower().rstrip(".") if host else None


def domain_matches(host: str | None, pattern: str) -> bool:
    """True if ``host`` is ``pattern`` or a sub-domain of it; ``*.tld`` matches any host under
    ``tld``. Case-insensitive. A bare label without a dot (``"bnpparibas"``) matches any host
    containing that label."""
    if not host:
        return False
    p = pattern.lower().strip().lstrip(".")
    if p.startswith("*."):
        return host.endswith(p[1:])
    if "." not in p:
        return p in host.split(".")
    return host == p or host.endswith("." + p)


def app_matches(app_id: str | None, exe: str | None, pattern: str) -> bool:
    """True if the WM_CLASS ``app_id`` or the executable base name ``exe`` matches ``pattern``
    (case-insensitive, fnmatch wildcards)."""
    p = pattern.lower()
    for cand in (app_id, os.path.basename(exe) if exe else None):
        if cand and fnmatch.fnmatchcase(cand.lower(), p):
            return True
    return False


def _in_windows(policy: Policy, now: dt.datetime) -> bool:
    wins = policy.scope.time_windows
    if not wins:
        return True
    minute = now.hour * 60 + now.minute
    day = _DAYS[now.weekday()]
    prev_day = _DAYS[(now.weekday() - 1) % 7]
    for w in wins:
        start, end = w.minutes()
        if start <= end:
            if day in w.days and start <= minute < end:
                return True
        else:  # wraps past midnight: [start, 24h) on day d, [0, end) on day d+1
            if (day in w.days and minute >= start) or (prev_day in w.days and minute < end):
                return True
    return False


class ScopeFilter:
    """Decides capture scope from a policy and the person's exclusions (see module doc)."""

    def __init__(self, policy: Policy, exclusions: Exclusions | None = None) -> None:
        self.policy = policy
        self.exclusions = exclusions or Exclusions(None)

    def decide(
        self,
        *,
        app_id: str | None = None,
        title: str | None = None,
        url: str | None = None,
        exe: str | None = None,
        now: dt.datetime | None = None,
    ) -> ScopeDecision:
        """Decide one context.

        ``app_id``: WM_CLASS class (or bundle id / exe name); ``title``: window title; ``url``:
        page URL of a browser window; ``exe``: executable path or name if known; ``now``: the
        device's local time as a timezone-aware datetime (time windows are in local time;
        ``None`` skips the time-window rule — the caller must pass it when capturing).
        """
        host = _host_of(url)
        for e in self.exclusions.items:
            if e.kind == "app" and app_matches(app_id, exe, e.value):
                return ScopeDecision.excluded("exclusion:app")
            if e.kind == "title" and title and e.value.lower() in title.lower():
                return ScopeDecision.excluded("exclusion:title")
            if e.kind == "domain" and domain_matches(host, e.value):
                return ScopeDecision.excluded("exclusion:domain")
        for cat in self.policy.scope.deny:
            if any(app_matches(app_id, exe, a) for a in cat.apps):
                return ScopeDecision.excluded(f"deny:{cat.name}:app")
            if title and any(_rx(p).search(title) for p in cat.title_patterns):
                return ScopeDecision.excluded(f"deny:{cat.name}:title")
            if any(domain_matches(host, d) for d in cat.domains):
                return ScopeDecision.excluded(f"deny:{cat.name}:domain")
        if now is not None and not _in_windows(self.policy, now):
            return ScopeDecision.excluded("time_window")
        s = self.policy.scope
        if s.has_allow_list:
            ok = (
                any(app_matches(app_id, exe, a) for a in s.allow_apps)
                or any(domain_matches(host, d) for d in s.allow_domains)
                or bool(title and any(_rx(p).search(title) for p in s.allow_title_patterns))
            )
            if not ok:
                return ScopeDecision.excluded("not_in_allow_list")
        return ScopeDecision.allow()

    def decide_focus(self, focus: FocusChange, now: dt.datetime | None = None, exe: str | None = None) -> ScopeDecision:
        """:meth:`decide` for a schema-v1 ``FocusChange`` (``exe`` e.g. from ``/proc/<pid>/exe``)."""
        return self.decide(app_id=focus.app_id, title=focus.title, url=focus.url, exe=exe, now=now)

    def excluded_rects(
        self, windows: Iterable[tuple[str | None, str | None, str | None, Rect]], now: dt.datetime | None = None
    ) -> list[Rect]:
        """Rectangles (physical desktop pixels) of visible windows that must be painted out of a
        frame before it is encoded. ``windows``: ``(app_id, title, url, bounds)`` for each
        visible top-level window. The whole window rectangle is painted, even where another
        window covers part of it (over-masking is the fail-closed choice)."""
        out = []
        for app_id, title, url, bounds in windows:
            if not self.decide(app_id=app_id, title=title, url=url, now=now).allowed:
                out.append(bounds)
        return out
