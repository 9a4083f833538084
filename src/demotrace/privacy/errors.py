"""Errors of the privacy package (all under :class:`demotrace.errors.DemotraceError`)::

    DemotraceError
    ├── ConfigError (ValueError)
    │   └── PolicyError                 the policy file is invalid (names field and file)
    ├── ConsentRequired (PermissionError)  no consent, or consent to an older notice
    └── RedactionError                  a redaction layer failed (the item is dropped)
        └── RedactionTimeout (TimeoutError)
"""

from __future__ import annotations

from ..errors import ConfigError, DemotraceError


class PolicyError(ConfigError):
    """A policy file or value is invalid; the message names the file and the field."""


class ConsentRequired(DemotraceError, PermissionError):
    """Recording is refused: the person has not accepted the current notice
    (fix: ``demotrace enroll``)."""


class RedactionError(DemotraceError):
    """A redaction layer raised; the pipeline drops the item and counts it."""


class RedactionTimeout(RedactionError, TimeoutError):
    """A redaction layer exceeded its time limit; the pipeline drops the item and counts it."""
