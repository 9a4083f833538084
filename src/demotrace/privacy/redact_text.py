"""Text redaction layers: Presidio pattern recognisers (layer 3) + secret detectors (layer 4).

Presidio (``presidio-analyzer``) is configured **fully offline**:

- the NLP engine is Presidio's :class:`NoOpNlpEngine` — no spaCy model is loaded or downloaded
  (context words in the text therefore do not raise scores; scores are the recognisers' own);
- only pattern / rule recognisers are registered: e-mail, phone (``phonenumbers``; only spans
  written like a phone number, :func:`phone_written_as_phone`), credit card
  (regex + Luhn checksum), IBAN (regex + ISO 13616 mod-97 check), US SSN, UK NINO, IP address,
  and a URL-credentials pattern (``scheme://user:password@`` — only the user-info is redacted);
- the recognisers are exactly those of the policy's ``redaction.entities``; an empty list means
  all of :data:`~.policy.OFFLINE_ENTITIES` — never Presidio's own fallback, which loads its
  whole predefined set when a registry is empty (bug bash 2: ``entities = []`` did that, and
  the stock e-mail recogniser then fetched the public-suffix list);
- Presidio's e-mail recogniser validates the domain with ``tldextract``, which by default
  fetches the public-suffix list over the network on first use and caches it under
  ``~/.cache/python-tldextract``; ours uses tldextract's bundled snapshot
  (``suffix_list_urls=()``, ``cache_dir=None``: no download, no cache written), and building the
  analyzer points tldextract's module-level extractor (what ``tldextract.extract`` calls) at the
  same offline instance, so no tldextract use in the process goes online. Analysis never opens a
  socket (``tests/test_redact_text.py::test_all_recognisers_stay_offline_with_an_empty_home``).

A finding is replaced by ``<ENTITY>`` (e.g. ``<CREDIT_CARD>``), the convention of
presidio-anonymizer's default ``replace`` operator. Overlapping findings are merged first.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .policy import OFFLINE_ENTITIES, Policy
from .secret_detect import Finding, detect_secrets

#: Signature of a text layer: text -> findings.
TextLayer = Callable[[str], list[Finding]]

_BUILD_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _offline_tldextract() -> Any:
    """tldextract's bundled public-suffix snapshot: no download (``suffix_list_urls=()``), no
    disk cache (``cache_dir=None``). Also installed as tldextract's module-level default
    extractor (``tldextract.tldextract.TLD_EXTRACTOR``, which ``tldextract.extract`` looks up
    at each call), so a stock Presidio recogniser or any other caller stays offline too."""
    import tldextract
    import tldextract.tldextract as tld_module

    ext = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)
    if hasattr(tld_module, "TLD_EXTRACTOR"):
        tld_module.TLD_EXTRACTOR = ext
    return ext


#: Digits a phone number written with no prefix cue needs (a NANP number without its country
#: code has 10; shorter bare numbers are how command arguments look — bug bash 4 F13).
PHONE_BARE_MIN_DIGITS = 10


def machine_local_ip(raw: str) -> bool:
    """Whether ``raw`` is a loopback (127.0.0.0/8, ::1) or unspecified (0.0.0.0, ::) address:
    one every machine has, never a person's. Anything that does not parse is not."""
    try:
        ip = ipaddress.ip_address(raw.strip())
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


#: Service accounts of source-code hosts' SSH remotes (``git@host:owner/repo.git``).
SSH_REMOTE_USERS = frozenset({"git", "hg", "svn"})


def ssh_remote(text: str, start: int, end: int) -> bool:
    """Whether the e-mail-like span ``text[start:end]`` is an SSH remote of a code host
    (``git@github.com:acme/tools.git``: a service account and a host, followed by ``:``), not
    an address (bug bash 6: `git clone` of one blacked out the terminal)."""
    user = text[start:end].split("@", 1)[0]
    return user.lower() in SSH_REMOTE_USERS and text[end:end + 1] == ":"


def phone_written_as_phone(raw: str, regions: Sequence[str]) -> bool:
    """Whether ``raw``, a span the ``phonenumbers`` matcher (Presidio's PhoneRecognizer, leniency
    VALID) took for a phone number, is *written* like one — the filter of our PHONE_NUMBER
    recogniser. The matcher accepts any digit string that is a valid number in one of
    ``regions`` however its digits are grouped, so typed command arguments were flagged:
    ``seq 3000 3300`` is a valid Brazilian shared-cost number (3000-3300), ``seq 1 330000`` a
    German one, ``250 2000000`` a Canadian one (bug bash 4 F13), and the typed-secret rule then
    blacked out that terminal for the rest of the session.

    Written like a phone number means one of: an international prefix (``+`` or ``00``); an area
    code in parentheses; a national trunk prefix ``0`` (how GB, DE, FR, IL, IN and BR numbers
    are written at home); or, with none of these cues, at least
    :data:`PHONE_BARE_MIN_DIGITS` digits in one group (``4155550132``), or with a phone's
    separators ``-`` / ``.`` (``415-555-0132``, also as OCR spaces it: ``415-555- 0132``), or
    grouped by spaces exactly as the number's own national format (``415 555 0132``;
    libphonenumber's EXACT_GROUPING leniency: ``250 2000000`` is no NANP grouping). Command
    arguments are separated by spaces only.
    """
    import phonenumbers

    s = raw.strip()
    if s.startswith(("+", "0")) or "(" in s:  # "+" / "00" international, "0" trunk prefix
        return True
    digits = sum(c.isdigit() for c in s)
    if digits < PHONE_BARE_MIN_DIGITS:
        return False
    if s.isdigit() or "-" in s or "." in s:  # one group, or a phone's separators (OCR may space them)
        return True
    for region in regions:
        for m in phonenumbers.PhoneNumberMatcher(s, region, leniency=phonenumbers.Leniency.EXACT_GROUPING):
            if m.start == 0 and m.end == len(s):
                return True
    return False


@lru_cache(maxsize=8)
def _analyzer(entities: tuple[str, ...]) -> Any:
    """Build (once per entity set) an offline AnalyzerEngine with pattern recognisers only:
    one recogniser per entry of ``entities`` (empty: all of :data:`OFFLINE_ENTITIES`).

    Raises:
        PolicyError: an entity without an offline recogniser.
        RuntimeError: the engine holds recognisers other than ours (it must never fall back
            to Presidio's predefined set).
    """
    entities = tuple(dict.fromkeys(entities or OFFLINE_ENTITIES))
    _offline_tldextract()  # before any recogniser runs: tldextract's default goes offline too
    from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
    from presidio_analyzer.nlp_engine.no_op_nlp_engine import NoOpNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UkNinoRecognizer,
        UsSsnRecognizer,
    )

    class OfflineEmailRecognizer(EmailRecognizer):  # type: ignore[misc]
        """Presidio's e-mail recogniser with tldextract's bundled public-suffix snapshot."""

        def validate_result(self, pattern_text: str) -> bool:
            return bool(_offline_tldextract()(pattern_text.split("@")[-1]).suffix)

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            found = super().analyze(text, entities, nlp_artifacts)
            return [r for r in found if not ssh_remote(text, r.start, r.end)]

    class PersonalIpRecognizer(IpRecognizer):  # type: ignore[misc]
        """Presidio's IP recogniser without loopback and unspecified addresses (bug bash 6:
        ``ping 127.0.0.1`` blacked out its terminal for the rest of the session); private-range
        addresses are kept (fail closed: they can name a person's machine on a network)."""

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            found = super().analyze(text, entities, nlp_artifacts)
            return [r for r in found if not machine_local_ip(text[r.start:r.end])]

    class WrittenPhoneRecognizer(PhoneRecognizer):  # type: ignore[misc]
        """Presidio's phone recogniser, keeping only spans written like a phone number
        (:func:`phone_written_as_phone`; bug bash 4 F13)."""

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            found = super().analyze(text, entities, nlp_artifacts)
            return [r for r in found if phone_written_as_phone(text[r.start:r.end], self.supported_regions)]

    url_creds = PatternRecognizer(
        supported_entity="URL_CREDENTIALS",
        name="UrlCredentialsRecognizer",
        patterns=[
            Pattern("url user:password@", r"(?i)(?<=://)[^\s/:@]{1,128}:[^\s/@]{1,128}(?=@)", 0.9),
        ],
    )
    available = {
        "EMAIL_ADDRESS": OfflineEmailRecognizer,
        "PHONE_NUMBER": WrittenPhoneRecognizer,
        "CREDIT_CARD": CreditCardRecognizer,
        "IBAN_CODE": IbanRecognizer,
        "US_SSN": UsSsnRecognizer,
        "UK_NINO": UkNinoRecognizer,
        "IP_ADDRESS": PersonalIpRecognizer,
    }
    nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    nlp.load()
    reg = RecognizerRegistry(supported_languages=["en"])
    for ent in entities:
        if ent == "URL_CREDENTIALS":
            reg.add_recognizer(url_creds)
        elif ent in available:
            reg.add_recognizer(available[ent]())
        else:
            from .errors import PolicyError

            raise PolicyError(
                f"redaction.entities: {ent!r} has no offline recogniser; choose from "
                f"{sorted([*available, 'URL_CREDENTIALS'])}"
            )
    engine = AnalyzerEngine(nlp_engine=nlp, registry=reg, supported_languages=["en"])
    if len(engine.registry.recognizers) != len(set(entities)):
        raise RuntimeError(f"offline analyzer for {entities} holds {len(engine.registry.recognizers)} recognisers")
    return engine


class PresidioPatternLayer:
    """Layer 3: Presidio pattern recognisers for ``policy.redaction.entities`` (empty: all of
    :data:`~.policy.OFFLINE_ENTITIES`) with findings at or above
    ``policy.redaction.score_threshold``. Thread-safe after construction.

    Raises:
        PolicyError: an entity without an offline recogniser."""

    name = "patterns"

    def __init__(self, policy: Policy) -> None:
        self.entities = tuple(policy.redaction.entities) or OFFLINE_ENTITIES
        self.threshold = policy.redaction.score_threshold
        with _BUILD_LOCK:
            self._engine = _analyzer(self.entities)

    def __call__(self, text: str) -> list[Finding]:
        """Findings in ``text`` (character offsets)."""
        if not text.strip():
            return []
        res = self._engine.analyze(text=text, language="en", entities=list(self.entities),
                                   score_threshold=self.threshold)
        return [Finding(r.start, r.end, r.entity_type, float(r.score), "patterns") for r in res]


class SecretLayer:
    """Layer 4: :func:`demotrace.privacy.secret_detect.detect_secrets`."""

    name = "secrets"

    def __init__(self, entropy: bool = True) -> None:
        self.entropy = entropy

    def __call__(self, text: str) -> list[Finding]:
        """Findings in ``text``."""
        return detect_secrets(text, entropy=self.entropy)


def merge_findings(findings: Sequence[Finding]) -> list[Finding]:
    """Merge overlapping or touching spans; the merged span keeps the entity of its
    highest-scoring (then longest) member. Sorted by ``start``."""
    out: list[Finding] = []
    for f in sorted(findings, key=lambda f: (f.start, -f.end)):
        if out and f.start <= out[-1].end:
            prev = out[-1]
            best = prev if (prev.score, prev.end - prev.start) >= (f.score, f.end - f.start) else f
            out[-1] = Finding(prev.start, max(prev.end, f.end), best.entity, max(prev.score, f.score), best.layer)
        else:
            out.append(f)
    return out


def apply_findings(text: str, findings: Sequence[Finding]) -> str:
    """Replace each merged finding span of ``text`` with ``<ENTITY>``."""
    parts, pos = [], 0
    for f in merge_findings(findings):
        parts.append(text[pos:f.start])
        parts.append(f"<{f.entity}>")
        pos = f.end
    parts.append(text[pos:])
    return "".join(parts)


@dataclass(frozen=True)
class RedactedText:
    """``text`` after redaction and the ``findings`` (offsets into the ORIGINAL text)."""

    text: str
    findings: tuple[Finding, ...]


class TextRedactor:
    """Layers 3 and 4 together: ``find`` and ``redact`` one text. ``layers`` defaults to
    ``[PresidioPatternLayer(policy), SecretLayer()]``; each layer is a callable ``text ->
    list[Finding]`` with a ``name``."""

    def __init__(self, policy: Policy, layers: Sequence[TextLayer] | None = None) -> None:
        self.layers: list[TextLayer] = list(layers) if layers is not None else [PresidioPatternLayer(policy), SecretLayer()]

    def find(self, text: str) -> list[Finding]:
        """All findings of every layer (not merged). Exceptions of a layer propagate — the
        pipeline turns them into a dropped item."""
        out: list[Finding] = []
        for layer in self.layers:
            out.extend(layer(text))
        return out

    def redact(self, text: str) -> RedactedText:
        """Redact ``text`` with every layer."""
        f = self.find(text)
        return RedactedText(apply_findings(text, f), tuple(f))
