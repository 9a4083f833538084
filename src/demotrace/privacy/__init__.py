"""On-device safeguards (DESIGN.md §2, §8): policy, consent, capture scope, secret fields,
layered redaction that fails closed, sealing, review.

Recorder-facing API (the recorder calls these; see docs/privacy.md "Wiring"):

- :func:`require_consent` before any hook is installed;
- :class:`ScopeFilter` ``.decide_focus(focus, now)`` on each ``FocusChange``;
- :class:`SecretKeyFilter` ``.should_drop(event)`` on each event before it is stored.

Everything that reads the raw spool lives here (``seal``, ``review``); the dataset builder
reads sealed bundles through :class:`BundleReader`.
"""

from __future__ import annotations

from .bundle import BundleReader, bundle_ids, open_bundle
from .consent import ConsentRecord, read_consent, record_consent, require_consent
from .errors import ConsentRequired, PolicyError, RedactionError, RedactionTimeout
from .policy import Policy, default_policy, load_policy
from .scope import Exclusions, ScopeDecision, ScopeFilter
from .secrets import SecretKeyFilter

__all__ = [
    "BundleReader",
    "ConsentRecord",
    "ConsentRequired",
    "Exclusions",
    "Policy",
    "PolicyError",
    "RedactionError",
    "RedactionTimeout",
    "ScopeDecision",
    "ScopeFilter",
    "SecretKeyFilter",
    "bundle_ids",
    "default_policy",
    "load_policy",
    "open_bundle",
    "read_consent",
    "record_consent",
    "require_consent",
]
