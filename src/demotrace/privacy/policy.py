"""The versioned capture policy (TOML).

A policy holds the consent notice, the capture scope (allow / deny by app, window title and
URL domain; time windows), the secret-field rules, the redaction settings and the raw
retention. The built-in default is ``default_policy.toml`` beside this module (documented
field by field there and in docs/privacy.md). A file ``<home>/policy.toml`` (a person's, or an
organisation's fetched with ``demotrace device policy --save``) or ``--policy FILE`` replaces its
version, notice, allow-lists, time windows, redaction and retention settings, but is **merged
over a floor it cannot lower** (:func:`with_builtin_floor`, issue #4):

- every built-in ``[scope.deny.*]`` category and every entry in it stays in force; the file can
  add categories and entries (the deny-list is extended, never replaced);
- the built-in secret-field markers (``[secrets]`` roles, DOM types / autocomplete values, name
  patterns) stay in force likewise, and ``strictness`` can only be raised;
- the built-in ``redaction.entities`` stay detected (the file can add entities, never remove
  them; ``entities = []`` therefore means the built-in set) and ``redaction.score_threshold``
  can only go down (a lower threshold redacts more; bug bash 2: a file with ``entities = []``
  and ``score_threshold = 1.0`` had turned 12 phone-number findings into 0 without a word).

A file that names a built-in category or secret-field list but leaves out some of its built-in
entries is not an error (a copy of an older default would otherwise break recording after an
update): the missing entries are kept and :attr:`Policy.notes` says so; the CLI prints each note
as a warning. Any change of the effective scope, secret-field or redaction settings changes
:attr:`Policy.scope_sha256`, which the consent record holds, so it asks for consent again.

Loading never reads global state: :func:`load_policy` takes the home explicitly.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..paths import Paths
from .errors import PolicyError

#: File name of a person's / organisation's policy inside the demotrace home.
POLICY_FILE = "policy.toml"

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: Day names a time window accepts: the three-letter form and the full English name.
_DAY_NAMES = {**{d: d for d in _DAYS},
              **dict(zip(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"), _DAYS))}
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
STRICTNESS = ("standard", "strict")
#: Every entity the offline pattern layer can detect (``redact_text.PresidioPatternLayer``:
#: Presidio's pattern recognisers plus the URL-credentials pattern). ``redaction.entities``
#: must name a subset; an EMPTY list on a policy not merged over the built-in floor means all
#: of them (never Presidio's full predefined set, which includes recognisers that go online).
OFFLINE_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "UK_NINO",
                    "IP_ADDRESS", "URL_CREDENTIALS")
#: Largest accepted ``retention.raw_days`` (100 years; far below timedelta's 999 999 999 days).
MAX_RETENTION_DAYS = 36500

#: Allowed keys per table (the schema of ``default_policy.toml``). Anything else is rejected so a
#: typo (``raw_dayz``) never silently falls back to a default.
_ALLOWED: dict[str, frozenset[str]] = {
    "": frozenset({"version", "notice", "scope", "secrets", "redaction", "retention"}),
    "scope": frozenset({"allow_apps", "allow_title_patterns", "allow_domains", "time_windows", "deny"}),
    "scope.time_windows[]": frozenset({"days", "start", "end"}),
    "scope.deny.*": frozenset({"apps", "title_patterns", "domains"}),
    "secrets": frozenset({"strictness", "roles", "dom_types", "dom_autocomplete", "name_patterns"}),
    "redaction": frozenset({"entities", "score_threshold", "layer_timeout_s", "ocr_upscale", "ocr_rescan_upscale",
                            "ocr_region_pad_px", "frame_format"}),
    "retention": frozenset({"raw_days"}),
}


def _check_keys(data: dict[str, Any], source: str) -> None:
    """Raise :class:`PolicyError` naming the first field not in :data:`_ALLOWED`."""

    def check(d: Any, schema: str, where: str) -> None:
        if not isinstance(d, dict):
            return  # type errors are reported by the field validation
        for k in d:
            if k not in _ALLOWED[schema]:
                name = f"{where}.{k}" if where else k
                raise PolicyError(f"unknown field {name!r} in {source} (allowed here: "
                                  f"{', '.join(sorted(_ALLOWED[schema]))})")

    check(data, "", "")
    for t in ("scope", "secrets", "redaction", "retention"):
        check(data.get(t), t, t)
    sc = data.get("scope")
    if isinstance(sc, dict):
        if isinstance(sc.get("time_windows"), list):
            for i, w in enumerate(sc["time_windows"]):
                check(w, "scope.time_windows[]", f"scope.time_windows[{i}]")
        if isinstance(sc.get("deny"), dict):
            for name, cat in sc["deny"].items():
                check(cat, "scope.deny.*", f"scope.deny.{name}")


@dataclass(frozen=True)
class DenyCategory:
    """One built-in deny-list category (e.g. ``"banking"``): app names (WM_CLASS or executable,
    case-insensitive, ``*``/``?`` wildcards), window-title regexes, URL domains (a domain also
    matches its sub-domains; ``*.bank`` matches any host under the ``bank`` TLD)."""

    name: str
    apps: tuple[str, ...] = ()
    title_patterns: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class TimeWindow:
    """Capture is allowed on ``days`` (``"mon"`` … ``"sun"``) from ``start`` to ``end``
    (``"HH:MM"``, device local time, end exclusive; ``end`` < ``start`` wraps past midnight)."""

    days: tuple[str, ...]
    start: str
    end: str

    def minutes(self) -> tuple[int, int]:
        """``(start, end)`` as minutes since local midnight."""
        h1, m1 = self.start.split(":")
        h2, m2 = self.end.split(":")
        return int(h1) * 60 + int(m1), int(h2) * 60 + int(m2)


@dataclass(frozen=True)
class ScopePolicy:
    """What may be captured. See ``default_policy.toml`` ``[scope]``."""

    allow_apps: tuple[str, ...] = ()
    allow_title_patterns: tuple[str, ...] = ()
    allow_domains: tuple[str, ...] = ()
    time_windows: tuple[TimeWindow, ...] = ()
    deny: tuple[DenyCategory, ...] = ()

    @property
    def has_allow_list(self) -> bool:
        """True when an allow-list is set (then only matching contexts are captured)."""
        return bool(self.allow_apps or self.allow_title_patterns or self.allow_domains)


@dataclass(frozen=True)
class SecretsPolicy:
    """Secret-field rules: ``strictness`` ("standard" | "strict"), AT-SPI ``roles``, DOM
    ``dom_types`` / ``dom_autocomplete`` values and field-name regexes that mark a secret field."""

    strictness: str = "standard"
    roles: tuple[str, ...] = ("password text",)
    dom_types: tuple[str, ...] = ("password",)
    dom_autocomplete: tuple[str, ...] = ()
    name_patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class RedactionPolicy:
    """Redaction settings (see ``default_policy.toml`` ``[redaction]`` for each rule's source).

    ``entities``: Presidio entity names of the pattern layer, a subset of
    :data:`OFFLINE_ENTITIES` (empty = all of them); ``score_threshold``: minimum Presidio score
    (0..1); ``layer_timeout_s``: seconds per layer
    per item; ``ocr_upscale`` / ``ocr_rescan_upscale``: image scale factors for tesseract (0
    disables the re-scan pass); ``ocr_region_pad_px``: image pixels added around a changed
    region; ``frame_format``: "png" | "webp" for sealed frames.
    """

    entities: tuple[str, ...] = ()
    score_threshold: float = 0.35
    layer_timeout_s: float = 20.0
    ocr_upscale: int = 3
    ocr_rescan_upscale: int = 2
    ocr_region_pad_px: int = 16
    frame_format: str = "png"


@dataclass(frozen=True)
class Policy:
    """A complete, validated policy. ``version`` (int ≥ 1) changes force re-consent;
    ``notice`` is the text shown at enrolment; ``raw_retention_days`` bounds the raw spool;
    ``source`` names where it was loaded from (a path or ``"built-in"``)."""

    version: int
    notice: str
    scope: ScopePolicy
    secrets: SecretsPolicy
    redaction: RedactionPolicy
    raw_retention_days: float = 7.0
    source: str = "built-in"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: Warnings from merging a policy file over the built-in floor (:func:`with_builtin_floor`):
    #: built-in entries the file left out and that stay in force. Empty for the built-in policy.
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def notice_sha256(self) -> str:
        """SHA-256 (hex) of the notice text as UTF-8: what a consent record refers to."""
        return notice_digest(self.notice)

    @property
    def scope_sha256(self) -> str:
        """SHA-256 (hex) of the *effective* capture rules: ``scope`` (allow-lists, time
        windows, every deny category), ``secrets``, ``redaction`` and the raw retention, as
        canonical JSON (sorted keys; deny categories sorted by name and their entries sorted,
        since their order does not change what is captured). The consent record holds it
        (:mod:`demotrace.privacy.consent`), so any change to what is captured or how it is
        redacted asks for consent again, even under the same version and notice (issue #4).
        The person's own exclusions are not part of it: they only narrow capture."""
        return hashlib.sha256(canonical_rules(self).encode("utf-8")).hexdigest()

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def from_toml(cls, text: str, source: str = "<string>") -> "Policy":
        """Parse and validate a policy.

        Raises:
            PolicyError: invalid TOML, missing or mistyped field, bad regex, unknown day, bad
                time or strictness; the message names ``source`` and the field.
        """
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{source}: not valid TOML: {exc}") from exc
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> "Policy":
        """Validate a parsed TOML document (see :meth:`from_toml`)."""
        v = _Validator(source)
        _check_keys(data, source)
        version = v.get(data, "version", int)
        if version < 1:
            raise PolicyError(f"{source}: version must be >= 1, got {version}")
        notice = v.get(data, "notice", str).strip()
        if not notice:
            raise PolicyError(f"{source}: notice must not be empty")
        sc = v.get(data, "scope", dict, {})
        windows = []
        for i, w in enumerate(v.get(sc, "time_windows", list, [], "scope")):
            where = f"scope.time_windows[{i}]"
            if not isinstance(w, dict):
                raise PolicyError(f"{source}: {where} must be a table")
            days = []
            for d in v.get(w, "days", list, list(_DAYS), where):
                key = str(d).strip().lower()
                if key not in _DAY_NAMES:  # bug bash 4: "funday" was reported as 'fun'
                    raise PolicyError(f"{source}: {where}.days: unknown day {d!r} (use mon..sun or monday..sunday)")
                days.append(_DAY_NAMES[key])
            start, end = v.get(w, "start", str, where=where), v.get(w, "end", str, where=where)
            for name, t in (("start", start), ("end", end)):
                if not _TIME_RE.match(t):
                    raise PolicyError(f"{source}: {where}.{name}: {t!r} is not HH:MM")
            if start == end:
                raise PolicyError(f"{source}: {where}: start and end are both {start}: the window would be empty")
            days = tuple(days)
            windows.append(TimeWindow(days, start, end))
        deny = []
        for name, cat in v.get(sc, "deny", dict, {}, "scope").items():
            where = f"scope.deny.{name}"
            if not isinstance(cat, dict):
                raise PolicyError(f"{source}: {where} must be a table")
            deny.append(
                DenyCategory(
                    name=name,
                    apps=v.strs(cat, "apps", where),
                    title_patterns=v.regexes(cat, "title_patterns", where),
                    domains=v.strs(cat, "domains", where),
                )
            )
        scope = ScopePolicy(
            allow_apps=v.strs(sc, "allow_apps", "scope"),
            allow_title_patterns=v.regexes(sc, "allow_title_patterns", "scope"),
            allow_domains=v.strs(sc, "allow_domains", "scope"),
            time_windows=tuple(windows),
            deny=tuple(deny),
        )
        se = v.get(data, "secrets", dict, {})
        strictness = v.get(se, "strictness", str, "standard", "secrets")
        if strictness not in STRICTNESS:
            raise PolicyError(f"{source}: secrets.strictness must be one of {STRICTNESS}, got {strictness!r}")
        secrets = SecretsPolicy(
            strictness=strictness,
            roles=tuple(r.lower() for r in v.strs(se, "roles", "secrets", ("password text",))),
            dom_types=tuple(t.lower() for t in v.strs(se, "dom_types", "secrets", ("password",))),
            dom_autocomplete=tuple(t.lower() for t in v.strs(se, "dom_autocomplete", "secrets")),
            name_patterns=v.regexes(se, "name_patterns", "secrets"),
        )
        rd = v.get(data, "redaction", dict, {})
        red = RedactionPolicy(
            entities=v.strs(rd, "entities", "redaction"),
            score_threshold=float(v.get(rd, "score_threshold", (int, float), 0.35, "redaction")),
            layer_timeout_s=float(v.get(rd, "layer_timeout_s", (int, float), 20.0, "redaction")),
            ocr_upscale=v.get(rd, "ocr_upscale", int, 3, "redaction"),
            ocr_rescan_upscale=v.get(rd, "ocr_rescan_upscale", int, 2, "redaction"),
            ocr_region_pad_px=v.get(rd, "ocr_region_pad_px", int, 16, "redaction"),
            frame_format=v.get(rd, "frame_format", str, "png", "redaction"),
        )
        for i, ent in enumerate(red.entities):
            if ent not in OFFLINE_ENTITIES:
                raise PolicyError(f"{source}: redaction.entities[{i}]: {ent!r} has no offline recogniser; choose"
                                  f" from {', '.join(OFFLINE_ENTITIES)}")
        if not 0.0 <= red.score_threshold <= 1.0:
            raise PolicyError(f"{source}: redaction.score_threshold must be in 0..1")
        if red.layer_timeout_s <= 0:
            raise PolicyError(f"{source}: redaction.layer_timeout_s must be > 0")
        if not 1 <= red.ocr_upscale <= 16 or not 0 <= red.ocr_rescan_upscale <= 16:
            raise PolicyError(f"{source}: redaction.ocr_upscale must be in 1..16 and ocr_rescan_upscale in 0..16")
        if not 0 <= red.ocr_region_pad_px <= 1024:
            raise PolicyError(f"{source}: redaction.ocr_region_pad_px must be in 0..1024")
        if not math.isfinite(red.layer_timeout_s) or not math.isfinite(red.score_threshold):
            raise PolicyError(f"{source}: redaction.layer_timeout_s and score_threshold must be finite")
        if red.frame_format not in ("png", "webp"):
            raise PolicyError(f"{source}: redaction.frame_format must be 'png' or 'webp'")
        ret = v.get(data, "retention", dict, {})
        raw_days = v.get(ret, "raw_days", (int, float), 7, "retention")
        # Upper bound: datetime.timedelta holds at most 999 999 999 days; 36 500 (100 years) keeps
        # every `now - raw_days` computation representable.
        if not (isinstance(raw_days, int) or math.isfinite(raw_days)) or not 0 < raw_days <= MAX_RETENTION_DAYS:
            raise PolicyError(f"{source}: retention.raw_days must be > 0 and at most {MAX_RETENTION_DAYS} days"
                              f" (100 years), got {raw_days!r}")
        days = float(raw_days)
        return cls(version=version, notice=notice, scope=scope, secrets=secrets, redaction=red,
                   raw_retention_days=days, source=source)

    def describe(self) -> list[str]:
        """Plain-language lines saying what is and is not captured (``demotrace policy show``)."""
        s = self.scope
        out = [f"Policy version {self.version} (from {self.source})."]
        if s.has_allow_list:
            parts = []
            if s.allow_apps:
                parts.append("apps " + ", ".join(s.allow_apps))
            if s.allow_domains:
                parts.append("web sites " + ", ".join(s.allow_domains))
            if s.allow_title_patterns:
                parts.append("windows whose title matches " + ", ".join(s.allow_title_patterns))
            out.append("Captured: ONLY " + "; ".join(parts) + " (everything else is not recorded).")
        else:
            out.append("Captured: every app and web site except those listed below.")
        for cat in s.deny:
            what = []
            if cat.apps:
                what.append("apps " + ", ".join(cat.apps))
            if cat.domains:
                what.append("sites " + ", ".join(cat.domains))
            if cat.title_patterns:
                what.append("windows titled like " + ", ".join(p.replace("(?i)", "").replace("\\b", "") for p in cat.title_patterns))
            out.append(f"Never captured ({cat.name.replace('_', ' ')}): " + "; ".join(what) + ".")
        builtin = sorted(builtin_category_names() & {c.name for c in s.deny})
        if builtin:
            out.append("The built-in categories (" + ", ".join(n.replace("_", " ") for n in builtin) + ") always"
                       " apply: a policy file can add to them, never remove from them.")
        out.append("Never captured: anything you add with `demotrace exclusions add`.")
        if s.time_windows:
            for w in s.time_windows:
                out.append(f"Captured only on {', '.join(w.days)} between {w.start} and {w.end} (local time).")
        else:
            out.append("Time: recording runs only when you start it; no time window is set.")
        out.append("Keystrokes into password, one-time-code and card fields are never stored (dropped by the"
                   " recorder, and again when a recording is sealed).")
        if self.secrets.strictness == "strict":
            out.append("Strict mode: when the focused field cannot be identified, typed characters are not stored.")
        ents = ", ".join(e.replace("_", " ").lower() for e in self.redaction.entities or OFFLINE_ENTITIES)
        out.append(f"Removed before anything leaves this device: {ents} (pattern findings scoring at least"
                   f" {self.redaction.score_threshold:g} of 1); labelled passwords (password: …,"
                   " PASSWORD=…), access keys, tokens and private keys; the same painted black on screenshots"
                   " where OCR can read them, and a window that received such typed text is blacked out on"
                   " every later screenshot.")
        floor = _builtin().redaction
        if (set(floor.entities) <= set(self.redaction.entities or OFFLINE_ENTITIES)
                and self.redaction.score_threshold <= floor.score_threshold):
            out.append("The built-in redaction (the entities above, a score threshold of at most"
                       f" {_builtin().redaction.score_threshold:g}) always applies: a policy file can add entities and"
                       " lower the threshold, never remove or raise them.")
        out.append("NOT recognised: a password typed without a label into an ordinary text box or terminal"
                   " (e.g. hunter2Pass!word) — pause recording before typing one.")
        out.append(f"Raw recordings are destroyed after {self.raw_retention_days:g} days.")
        return out


def canonical_rules(policy: Policy) -> str:
    """The canonical JSON text that :attr:`Policy.scope_sha256` hashes (see there)."""
    sc = asdict(policy.scope)
    sc["deny"] = sorted(({"name": c.name, "apps": sorted(c.apps), "title_patterns": sorted(c.title_patterns),
                          "domains": sorted(c.domains)} for c in policy.scope.deny), key=lambda d: d["name"])
    doc = {"scope": sc, "secrets": asdict(policy.secrets), "redaction": asdict(policy.redaction),
           "retention": {"raw_days": policy.raw_retention_days}}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _union(base: tuple[str, ...], extra: tuple[str, ...]) -> tuple[str, ...]:
    """``base`` then the entries of ``extra`` not already in it (order kept, no duplicates)."""
    return tuple(dict.fromkeys((*base, *extra)))


def with_builtin_floor(policy: Policy, builtin: Policy | None = None,
                       declared: dict[str, Any] | None = None) -> Policy:
    """``policy`` (loaded from a file) merged over the built-in floor (module docstring).

    Returns a policy whose deny-list is every built-in category with all its built-in entries
    plus whatever ``policy`` adds (its own categories after the built-in ones), whose secret
    markers are the built-in ones plus ``policy``'s, and whose ``strictness`` is the stricter
    of the two, whose ``redaction.entities`` are the built-in ones plus ``policy``'s and whose
    ``redaction.score_threshold`` is the lower (stricter) of the two, and whose OCR settings
    (``ocr_upscale``, ``ocr_rescan_upscale``, ``ocr_region_pad_px``) are the higher of the two. ``builtin``: the floor (default :func:`default_policy`). ``declared``: the
    parsed TOML document of ``policy``, used to word the notes in :attr:`Policy.notes`: a
    note for each built-in list that the document gives with some but not all of its built-in
    entries, for built-in categories left out of a ``[scope.deny]`` that names other built-in
    ones (both: a copy of the default with parts deleted), for a built-in deny field the document
    sets to ``[]``, for an emptied secret-field list,
    a lowered strictness, a ``redaction.entities`` list without some built-in entity (``[]``
    included), a ``score_threshold`` above the built-in one and an OCR setting below it. The left-out entries are kept in every case (the attempt to remove
    them is ignored); a document that only adds names nothing.

    Decision (issue #4): ignoring with a warning, not an error, so that a policy copied from
    an older default keeps working when a newer default adds entries.
    """
    base = builtin if builtin is not None else _builtin()
    notes: list[str] = []
    doc_deny = ((declared or {}).get("scope") or {}).get("deny") or {}
    mine = {c.name: c for c in policy.scope.deny}
    # built-in categories the file gives with at least one built-in entry: it is a copy of the
    # default, so a built-in category missing from it was deleted on purpose
    copied = [b.name for b in base.scope.deny
              if isinstance(doc_deny, dict) and b.name in doc_deny and b.name in mine
              and any(set(getattr(b, f)) & set(getattr(mine[b.name], f)) for f in ("apps", "title_patterns", "domains"))]
    if copied and len(copied) < len(base.scope.deny):
        left = [b.name for b in base.scope.deny if b.name not in copied]
        notes.append(f"{policy.source}: [scope.deny] leaves out the built-in categories {', '.join(left)}; they"
                     " stay in force (the built-in deny-list can be extended, never reduced)")
    deny: list[DenyCategory] = []
    for b in base.scope.deny:
        own = mine.pop(b.name, None)
        if own is None:
            deny.append(b)
            continue
        for fld in ("apps", "title_patterns", "domains"):
            # a field that lists some built-in entries but not all: a copy with entries deleted
            # (a field listing only new entries is an extension and needs no note)
            missing = [x for x in getattr(b, fld) if x not in getattr(own, fld)]
            doc_cat = doc_deny.get(b.name) if isinstance(doc_deny, dict) else None
            if missing and isinstance(doc_cat, dict) and doc_cat.get(fld) == []:
                # an explicitly emptied built-in field (bug bash: `apps = []` printed nothing)
                notes.append(f"{policy.source}: scope.deny.{b.name}.{fld} = [] would empty the built-in category;"
                             f" its {len(getattr(b, fld))} built-in entries stay excluded ({', '.join(missing)})"
                             " (the built-in deny-list can be extended, never reduced)")
            elif missing and len(missing) < len(getattr(b, fld)):
                notes.append(f"{policy.source}: scope.deny.{b.name}.{fld} leaves out built-in entries"
                             f" {', '.join(missing)}; they stay excluded (the built-in deny-list can be"
                             " extended, never reduced)")
        deny.append(DenyCategory(b.name, _union(b.apps, own.apps), _union(b.title_patterns, own.title_patterns),
                                 _union(b.domains, own.domains)))
    deny.extend(mine.values())
    doc_sec = (declared or {}).get("secrets") or {}
    bs, ps = base.secrets, policy.secrets
    if isinstance(doc_sec, dict):
        for fld in ("roles", "dom_types", "dom_autocomplete", "name_patterns"):
            missing = [x for x in getattr(bs, fld) if x not in getattr(ps, fld)]
            if missing and fld in doc_sec and (len(missing) < len(getattr(bs, fld)) or not getattr(ps, fld)):
                notes.append(f"{policy.source}: secrets.{fld} leaves out built-in entries {', '.join(missing)};"
                             " they stay in force (secret-field rules can be extended, never reduced)")
        if STRICTNESS.index(ps.strictness) < STRICTNESS.index(bs.strictness) and "strictness" in doc_sec:
            notes.append(f"{policy.source}: secrets.strictness {ps.strictness!r} is below the built-in"
                         f" {bs.strictness!r}; {bs.strictness!r} stays in force")
    doc_red = (declared or {}).get("redaction") or {}
    br, pr = base.redaction, policy.redaction
    if isinstance(doc_red, dict):
        missing = [e for e in br.entities if e not in pr.entities]
        if missing and "entities" in doc_red:
            notes.append(f"{policy.source}: redaction.entities leaves out built-in entities {', '.join(missing)};"
                         " they stay detected (the built-in redaction can be extended, never reduced)")
        if pr.score_threshold > br.score_threshold and "score_threshold" in doc_red:
            notes.append(f"{policy.source}: redaction.score_threshold {pr.score_threshold:g} is above the built-in"
                         f" {br.score_threshold:g}; {br.score_threshold:g} stays in force (a higher threshold"
                         " would redact less)")
        for fld, what in (("ocr_upscale", "would make small text unreadable to OCR"),
                          ("ocr_rescan_upscale", "would weaken or skip the re-scan of painted frames"),
                          ("ocr_region_pad_px", "would OCR less around changed regions")):
            if getattr(pr, fld) < getattr(br, fld) and fld in doc_red:
                notes.append(f"{policy.source}: redaction.{fld} {getattr(pr, fld)} is below the built-in"
                             f" {getattr(br, fld)}; {getattr(br, fld)} stays in force (a lower value {what})")
    redaction = replace(pr, entities=_union(br.entities, pr.entities),
                        score_threshold=min(pr.score_threshold, br.score_threshold),
                        # bug bash 4: ocr_upscale = 1 / rescan 0 / pad 0 let an IBAN and an SSN through
                        ocr_upscale=max(pr.ocr_upscale, br.ocr_upscale),
                        ocr_rescan_upscale=max(pr.ocr_rescan_upscale, br.ocr_rescan_upscale),
                        ocr_region_pad_px=max(pr.ocr_region_pad_px, br.ocr_region_pad_px))
    secrets = SecretsPolicy(
        strictness=max(ps.strictness, bs.strictness, key=STRICTNESS.index),
        roles=_union(bs.roles, ps.roles), dom_types=_union(bs.dom_types, ps.dom_types),
        dom_autocomplete=_union(bs.dom_autocomplete, ps.dom_autocomplete),
        name_patterns=_union(bs.name_patterns, ps.name_patterns),
    )
    return replace(policy, scope=replace(policy.scope, deny=tuple(deny)), secrets=secrets, redaction=redaction,
                   notes=(*policy.notes, *notes))


def builtin_category_names() -> frozenset[str]:
    """Names of the built-in deny categories (they can never be removed)."""
    return frozenset(c.name for c in _builtin().scope.deny)


@lru_cache(maxsize=1)
def _builtin() -> Policy:
    """The built-in policy parsed once, for read-only use inside this module (the floor)."""
    return default_policy()


def notice_digest(notice: str) -> str:
    """SHA-256 (hex) of ``notice`` encoded as UTF-8, after stripping surrounding whitespace."""
    return hashlib.sha256(notice.strip().encode("utf-8")).hexdigest()


def default_policy() -> Policy:
    """The built-in policy (``default_policy.toml`` shipped in this package)."""
    text = resources.files(__package__).joinpath("default_policy.toml").read_text("utf-8")
    return Policy.from_toml(text, "built-in")


def load_policy(paths: Paths | None = None, path: Path | None = None) -> Policy:
    """Load the policy in force: ``path`` if given, else ``<home>/policy.toml`` if present,
    else the built-in default. A file is merged over the built-in floor
    (:func:`with_builtin_floor`: its deny-list and secret-field markers can only add to the
    built-in ones; what it tried to leave out is listed in :attr:`Policy.notes`).

    Raises:
        PolicyError: the file is invalid (message names the file and field).
    """
    if path is None and paths is not None and (paths.home / POLICY_FILE).is_file():
        path = paths.home / POLICY_FILE
    if path is None:
        return default_policy()
    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: not UTF-8 text (invalid byte at offset {exc.start}); TOML files must be"
                          " UTF-8") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML: {exc}") from exc
    return with_builtin_floor(Policy.from_dict(data, str(path)), declared=data)


class _Validator:
    def __init__(self, source: str) -> None:
        self.source = source

    _MISSING = object()

    def get(self, d: dict[str, Any], key: str, typ: Any, default: Any = _MISSING, where: str = "") -> Any:
        name = f"{where}.{key}" if where else key
        if key not in d:
            if default is self._MISSING:
                raise PolicyError(f"{self.source}: missing field {name!r}")
            return default
        val = d[key]
        if isinstance(val, bool) and typ in (int, (int, float)):
            raise PolicyError(f"{self.source}: field {name!r} must be a number, got a boolean")
        if not isinstance(val, typ):
            tn = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
            raise PolicyError(f"{self.source}: field {name!r} must be {tn}, got {type(val).__name__}")
        return val

    def strs(self, d: dict[str, Any], key: str, where: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        vals = self.get(d, key, list, list(default), where)
        for i, x in enumerate(vals):
            if not isinstance(x, str) or not x:
                raise PolicyError(f"{self.source}: {where}.{key}[{i}] must be a non-empty string")
        return tuple(vals)

    def regexes(self, d: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
        vals = self.strs(d, key, where)
        for i, x in enumerate(vals):
            try:
                re.compile(x)
            except re.error as exc:
                raise PolicyError(f"{self.source}: {where}.{key}[{i}]: bad regex {x!r}: {exc}") from exc
        return vals
