"""Errors of the collector service and its clients (all under :class:`~demotrace.errors.DemotraceError`)::

    DemotraceError
    └── ServerError
        ├── AuthError (PermissionError)        bad, revoked or missing credential / code
        ├── NotFound (LookupError)             no such bundle, blob, device, dataset
        ├── ConflictError                      state forbids it (commit with blobs missing, …)
        ├── IntegrityError (ValueError)        uploaded bytes do not match their sha256 / size
        ├── KeyDestroyed (LookupError)         the person's data key is gone (erased)
        ├── BlobStoreError                     the blob store backend failed
        ├── AuditVerifyError                   the access log fails verification (lists why)
        └── UploadError                        the client gave up (message says at which step)

``status`` on each class is the HTTP status the API answers with.
"""

from __future__ import annotations

from ..errors import DemotraceError


class ServerError(DemotraceError):
    """Base class of collector errors."""

    status = 500


class AuthError(ServerError, PermissionError):
    """A credential or enrollment code is missing, unknown, expired, used or revoked."""

    status = 401


class NotFound(ServerError, LookupError):
    """The requested bundle, blob, device or dataset does not exist (for this caller)."""

    status = 404


class ConflictError(ServerError):
    """The request conflicts with the current state (e.g. commit while blobs are missing)."""

    status = 409


class IntegrityError(ServerError, ValueError):
    """Uploaded bytes do not match the sha256 or size announced in the manifest."""

    status = 422


class KeyDestroyed(ServerError, LookupError):
    """The person's data key was destroyed (erasure): their data can no longer be decrypted."""

    status = 410


class BlobStoreError(ServerError):
    """The blob store backend failed (message names backend and object)."""


class AuditVerifyError(ServerError):
    """The access log failed verification; ``problems`` lists every finding."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        head = "; ".join(problems[:5])
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"audit log verification failed: {head}{more}")


class UploadError(ServerError):
    """The upload client gave up; the local bundle is kept (message names the step)."""
