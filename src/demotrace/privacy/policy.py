"""The versioned capture policy (TOML).

A policy holds the consent notice, the capture scope (allow / deny by app, window title and
URL domain; time windows), the secret-field rules, the redaction settings and the raw
retention. The built-in default is ``default_policy.toml`` beside this module (documented
field by field there and in docs/privacy.md); a file ``<home>/policy.toml`` replaces it
wholesale when present (no merging: what the file says is the whole policy).

Loading never reads global state: :func:`load_policy` takes the home explicitly.
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..paths import Paths
from .errors import PolicyError

#: File name of a person's / organisation's policy inside the demotrace home.
POLICY_FILE = "policy.toml"

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
STRICTNESS = ("standard", "strict")
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

    ``score_threshold``: minimum Presidio score (0..1); ``layer_timeout_s``: seconds per layer
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

    @property
    def notice_sha256(self) -> str:
        """SHA-256 (hex) of the notice text as UTF-8: what a consent record refers to."""
        return notice_digest(self.notice)

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
            days = tuple(str(d).lower()[:3] for d in v.get(w, "days", list, list(_DAYS), where))
            for d in days:
                if d not in _DAYS:
                    raise PolicyError(f"{source}: {where}.days: unknown day {d!r} (use mon..sun)")
            start, end = v.get(w, "start", str, where=where), v.get(w, "end", str, where=where)
            for name, t in (("start", start), ("end", end)):
                if not _TIME_RE.match(t):
                    raise PolicyError(f"{source}: {where}.{name}: {t!r} is not HH:MM")
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
        ents = ", ".join(e.replace("_", " ").lower() for e in self.redaction.entities)
        out.append(f"Removed before anything leaves this device: {ents}; labelled passwords (password: …,"
                   " PASSWORD=…), access keys, tokens and private keys; the same painted black on screenshots"
                   " where OCR can read them, and a window that received such typed text is blacked out on"
                   " every later screenshot.")
        out.append("NOT recognised: a password typed without a label into an ordinary text box or terminal"
                   " (e.g. hunter2Pass!word) — pause recording before typing one.")
        out.append(f"Raw recordings are destroyed after {self.raw_retention_days:g} days.")
        return out


def notice_digest(notice: str) -> str:
    """SHA-256 (hex) of ``notice`` encoded as UTF-8, after stripping surrounding whitespace."""
    return hashlib.sha256(notice.strip().encode("utf-8")).hexdigest()


def default_policy() -> Policy:
    """The built-in policy (``default_policy.toml`` shipped in this package)."""
    text = resources.files(__package__).joinpath("default_policy.toml").read_text("utf-8")
    return Policy.from_toml(text, "built-in")


def load_policy(paths: Paths | None = None, path: Path | None = None) -> Policy:
    """Load the policy in force: ``path`` if given, else ``<home>/policy.toml`` if present,
    else the built-in default.

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
    return Policy.from_toml(text, str(path))


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
