"""Exception tree of demotrace.

Every error raised on purpose by demotrace derives from :class:`DemotraceError`, and where a
builtin fits it is inherited too, so callers can catch either::

    DemotraceError
    ├── ConfigError (ValueError)            bad setting, file or argument
    ├── SchemaError (ValueError)            an event / record that violates schema v1
    │   └── MalformedInputError             a foreign file (import) that cannot be parsed
    ├── SpoolError                          the local spool
    │   ├── SessionNotFound (FileNotFoundError)
    │   ├── SpoolCorrupt                    a database / blob that fails its integrity check
    │   ├── DecryptionError                 wrong key or tampered ciphertext
    │   └── HomeNotWritable (PermissionError) a command that writes met a read-only home
    ├── KeyMissing (FileNotFoundError)      no data key where one is required
    │   └── KeyLost                         …while data encrypted with it exists (never replaced)
    ├── CaptureError                        a capture backend cannot start or died
    │   └── BackendUnavailable              no backend loads; the message lists every reason
    ├── ControlError                        the control socket (not running, refused, bad reply)
    ├── BuildError                          reduction / alignment / episodes
    └── ExportError                         an exporter
"""

from __future__ import annotations


class DemotraceError(Exception):
    """Base class of every error demotrace raises on purpose."""


class ConfigError(DemotraceError, ValueError):
    """A setting, configuration file or command-line argument is invalid."""


class SchemaError(DemotraceError, ValueError):
    """A record does not follow event schema v1 (field, type or value named in the message)."""


class MalformedInputError(SchemaError):
    """A foreign recording cannot be parsed; the message names the file and line."""


class SpoolError(DemotraceError):
    """The local spool cannot be read or written."""


class SessionNotFound(SpoolError, FileNotFoundError):
    """No session with that id exists in the spool."""


class SpoolCorrupt(SpoolError):
    """A spool database or blob fails its integrity check."""


class DecryptionError(SpoolError):
    """Ciphertext could not be authenticated: wrong key, or the data was altered."""


class HomeNotWritable(SpoolError, PermissionError):
    """The demotrace home (or a folder in it) cannot be written — a read-only mount, or a folder
    the user may not write — and the command needs to write there. The message names the path,
    the command, and what still works (the reading commands). Nothing was changed."""


class KeyMissing(DemotraceError, FileNotFoundError):
    """The data key file is missing where one is required (it is never re-created silently
    for existing data, since a new key could not decrypt it)."""


class KeyLost(KeyMissing):
    """The data key file is missing although sessions or bundles encrypted with it exist: only
    that key can read them, so no new key is made (fix: restore the key file from a backup)."""


class CaptureError(DemotraceError):
    """A capture backend failed to start or stopped working."""


class BackendUnavailable(CaptureError):
    """No capture backend could be loaded; the message lists each backend's reason and fix."""


class ControlError(DemotraceError):
    """The recorder's control socket refused, is absent, or answered with an error."""


class BuildError(DemotraceError):
    """Raw events could not be turned into actions, steps or episodes."""


class ExportError(DemotraceError):
    """A dataset could not be written in the requested format."""
